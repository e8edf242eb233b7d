//! `cargo xtask backup` and `backup drill` against a real PostgreSQL cluster and rclone's local
//! backend: the upload is proven, failing dumps are never uploaded, the password never leaks.

#[path = "backup_support/mod.rs"]
mod support;

use support::*;
use xtask::backup::{self, drill, Label};
use xtask::ExitCode;

#[test]
fn local_backup_is_verified_listed_and_restored_by_the_drill() {
    let f = Fixture::new();
    let env = f.env("t");
    let obj = backup::create(&env, &Label::parse("pre-deploy-abc1234").unwrap()).unwrap();
    let month = this_month();
    let prefix = format!("b2:station-backups/postgres/{month}/station_backup_{month}");
    assert!(obj.path.starts_with(&prefix), "{}", obj.path);
    assert!(
        obj.path.ends_with("_pre-deploy-abc1234.sql.gz"),
        "{}",
        obj.path
    );
    // The object is really there, under postgres/YYYYMM/, with the reported size and hash.
    let rel = obj.path.strip_prefix("b2:").unwrap();
    let file = f.objects().join(rel);
    assert_eq!(std::fs::metadata(&file).unwrap().len(), obj.size);
    assert_eq!(obj.hash_type, "md5");
    assert_eq!(md5_of(&file), obj.hash);
    // stat and list see it; a missing object is None.
    assert_eq!(backup::stat(&env, &obj.path).unwrap(), Some(obj.clone()));
    let missing = obj.path.replace("abc1234", "0000000");
    assert_eq!(backup::stat(&env, &missing).unwrap(), None);
    assert_eq!(backup::list(&env).unwrap(), vec![obj.clone()]);
    // A path outside the remote is bad input.
    assert_eq!(
        backup::stat(&env, "other:x; rm -rf /")
            .unwrap_err()
            .exit_code(),
        ExitCode::Usage
    );

    // The drill restores it into a scratch database and the counts match the source.
    let report = drill::drill(&env, None).unwrap();
    assert!(report.passed, "{report:?}");
    let count = |t: &str| {
        report
            .tables
            .iter()
            .find(|c| c.table == t)
            .unwrap_or_else(|| panic!("{t} missing: {report:?}"))
            .restored
    };
    assert_eq!(count("public.accounts"), Some(5000));
    assert_eq!(count("public.\"Audit Log\""), Some(321));
    let scratch = f.psql(
        "postgres",
        "SELECT count(*) FROM pg_database WHERE datname LIKE 'xtask_drill_%'",
    );
    assert_eq!(scratch.trim(), "0", "scratch database left behind");

    // The source moves on: the drill compares with the backup's manifest, not the live database,
    // so the same backup still passes.
    assert_eq!(report.reference, drill::Reference::Manifest);
    f.psql("station", "DELETE FROM accounts WHERE id <= 10");
    let name = obj.path.rsplit('/').next().unwrap();
    let report = drill::drill(&env, Some(name)).unwrap();
    assert!(report.passed, "{report:?}");
    assert!(report.warnings.is_empty());
    // Without its manifest (a backup from before manifests) the drill warns and compares with the
    // live database: the deleted rows show up; --strict refuses it.
    let mfile = f.objects().join(format!("{rel}.json"));
    std::fs::remove_file(&mfile).unwrap();
    let report = drill::drill(&env, Some(name)).unwrap();
    assert_eq!(report.reference, drill::Reference::LiveDatabase);
    assert!(!report.passed);
    assert!(report.warnings[0].contains("has no manifest"), "{report:?}");
    let bad: Vec<_> = report.tables.iter().filter(|t| !t.ok()).collect();
    assert_eq!(bad.len(), 1);
    assert_eq!((bad[0].source, bad[0].restored), (Some(4990), Some(5000)));
    let e = drill::drill_with(&env, Some(name), true).unwrap_err();
    assert_eq!(e.exit_code(), ExitCode::Failed);
    assert!(e.to_string().contains("--strict"), "{e}");
    let scratch = f.psql(
        "postgres",
        "SELECT count(*) FROM pg_database WHERE datname LIKE 'xtask_drill_%'",
    );
    assert_eq!(scratch.trim(), "0");
    // Naming a backup that does not exist is bad input.
    assert_eq!(
        drill::drill(&env, Some("station_backup_19990101_000000_x.sql.gz"))
            .unwrap_err()
            .exit_code(),
        ExitCode::Usage
    );
}

#[test]
fn cli_backup_and_drill_never_show_the_password_in_argv_or_output() {
    let f = Fixture::new();
    let (out, hits, _) = run_watching_argv(
        f.xtask(&["backup", "--env", "t", "--label", "pwcheck", "--json"]),
        PASSWORD,
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(hits.is_empty(), "password in argv: {hits:?}");
    assert!(!stdout.contains(PASSWORD) && !stderr.contains(PASSWORD));
    // --json: stdout is exactly the verified object; the script's lines went to stderr.
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let path = v["path"].as_str().unwrap();
    assert!(path.ends_with("_pwcheck.sql.gz"));
    assert_eq!(v["hash_type"], "md5");
    assert!(stderr.contains("backup-db: verified"), "{stderr}");
    let file = f.objects().join(path.strip_prefix("b2:").unwrap());
    assert_eq!(v["hash"].as_str().unwrap(), md5_of(&file));

    let (out, hits, _) = run_watching_argv(f.xtask(&["backup", "drill", "--env", "t"]), PASSWORD);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("drill passed"), "{stdout}");
    assert!(hits.is_empty(), "password in argv: {hits:?}");
    assert!(!stdout.contains(PASSWORD) && !stderr.contains(PASSWORD));

    // --dry-run shows the command with the password redacted and runs nothing.
    let before = files(&f.objects());
    let out = f
        .xtask(&["backup", "--env", "t", "--label", "dry", "--dry-run"])
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success());
    assert!(stdout.contains("PGPASSWORD='***'"), "{stdout}");
    assert!(
        stdout.contains("backup-db.sh") && stdout.contains("LABEL=dry"),
        "{stdout}"
    );
    assert!(!stdout.contains(PASSWORD));
    assert_eq!(files(&f.objects()), before);
}

#[test]
fn a_wrong_database_name_fails_the_dump_and_uploads_nothing() {
    let f = Fixture::new();
    let out = f
        .xtask(&["backup", "--env", "wrongdb", "--label", "x"])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // The first connection (the snapshot session) is refused: the database does not exist.
    assert!(stderr.contains("stage=snapshot"), "{stderr}");
    assert!(stderr.contains("failed at stage `snapshot`"), "{stderr}");
    assert!(stderr.contains("does not exist"), "{stderr}");
    assert!(files(&f.objects()).is_empty(), "{:?}", files(&f.objects()));
}

#[test]
fn pg_dump_failing_part_way_is_caught_by_pipefail() {
    let f = Fixture::new();
    // A value whose output function fails: pg_dump has written the tables before it, then its COPY of
    // `zz_broken` errors out on the last row (an enum label removed from the catalog).
    f.psql(
        "station",
        "CREATE TYPE mood AS ENUM ('ok', 'gone'); \
         CREATE TABLE zz_broken (id int, m mood); \
         INSERT INTO zz_broken SELECT g, 'ok' FROM generate_series(1, 20000) g; \
         INSERT INTO zz_broken VALUES (20001, 'gone'); \
         DELETE FROM pg_enum WHERE enumlabel = 'gone';",
    );
    let out = f
        .xtask(&["backup", "--env", "t", "--label", "partway"])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("Dumping the contents of table \"zz_broken\" failed"),
        "{stderr}"
    );
    assert!(stderr.contains("stage=dump"), "{stderr}");
    assert!(files(&f.objects()).is_empty());
}

#[test]
fn labels_are_validated_before_anything_runs() {
    let f = Fixture::new();
    let long = "a".repeat(300);
    for bad in [
        "a/b",
        "two words",
        "x;reboot",
        "$(touch /tmp/pwned)",
        "it's",
        "a\"b",
        &long,
    ] {
        let out = f
            .xtask(&["backup", "--env", "t", "--label", bad])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains("invalid backup label"));
    }
    assert!(files(&f.objects()).is_empty());
    // Unknown environment: usage error too.
    let out = f.xtask(&["backup", "--env", "nope"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn an_unreachable_remote_is_exit_3_before_dumping() {
    let f = Fixture::new();
    let port = xtask::services::free_port().unwrap();
    let start = std::time::Instant::now();
    let out = f
        .xtask(&["backup", "--env", "t", "--label", "noremote"])
        .env("RCLONE_CONFIG_B2_TYPE", "s3")
        .env("RCLONE_CONFIG_B2_PROVIDER", "Other")
        .env(
            "RCLONE_CONFIG_B2_ENDPOINT",
            format!("http://127.0.0.1:{port}"),
        )
        .env("RCLONE_CONFIG_B2_ACCESS_KEY_ID", "someaccesskey")
        .env("RCLONE_CONFIG_B2_SECRET_ACCESS_KEY", "somesecretkey0000")
        .env("RCLONE_CONFIG_B2_REGION", "us-east-1")
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("stage=remote"), "{stderr}");
    assert!(
        !stderr.contains("dump ok"),
        "dumped before checking the remote"
    );
    assert!(start.elapsed().as_secs() < 25, "{:?}", start.elapsed());
}

#[test]
fn over_ssh_the_script_runs_in_the_remote_dir_with_every_word_quoted() {
    let kh = tempfile::NamedTempFile::new().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args([
            "backup",
            "--env",
            "production",
            "--label",
            "pre-deploy-abc1234",
            "--dry-run",
            "--json",
        ])
        .env("XTASK_ROOT", repo_root())
        .env_remove("XTASK_ENVIRONMENTS")
        .env("PRODUCTION_SSH_HOST", "vps.example.org")
        .env("PRODUCTION_SSH_KNOWN_HOSTS", kh.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let cmd = v["command"].as_str().unwrap();
    // The remote command line is one quoted argument of ssh; split it back as sshd's shell would.
    let words = shlex::split(cmd).unwrap();
    assert_eq!(words[0], "ssh");
    assert!(words.contains(&"BatchMode=yes".to_string()), "{cmd}");
    assert!(
        words.contains(&"deploy@vps.example.org".to_string()),
        "{cmd}"
    );
    let remote = words.last().unwrap();
    let remote_words = shlex::split(remote).unwrap();
    assert_eq!(&remote_words[..3], ["cd", "/opt/station", "&&"], "{remote}");
    for w in [
        "env",
        "LABEL=pre-deploy-abc1234",
        "BACKUP_BUCKET=station-backups",
        "BACKUP_MODE=compose",
        "BACKUP_COMPOSE_PROJECT=station",
        "BACKUP_COMPOSE_FILES=docker-compose.prod.yml",
        "BACKUP_COMPOSE_ENV_FILE=.env.production",
        "BACKUP_DB_NAME=station",
        "bash",
        "infra/scripts/backup-db.sh",
    ] {
        assert!(
            remote_words.iter().any(|x| x == w),
            "{w} missing in {remote}"
        );
    }
    assert_eq!(
        v["object"],
        "b2:station-backups/postgres/YYYYMM/station_backup_YYYYmmdd_HHMMSS_pre-deploy-abc1234.sql.gz"
    );
}
