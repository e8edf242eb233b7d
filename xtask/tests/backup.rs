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
    let e = drill::drill_with(
        &env,
        Some(name),
        drill::Options {
            strict: true,
            ..Default::default()
        },
    )
    .unwrap_err();
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

fn sha256_of(p: &std::path::Path) -> String {
    let o = std::process::Command::new("sha256sum")
        .arg(p)
        .output()
        .unwrap();
    text(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Plant `sql` in the bucket beside the backup `good` (an object path), with a manifest that
/// matches it: whoever may write the bucket may write both, so the sha256 check passes and only the
/// replay's own confinement stands in the way. Returns the planted object's file name.
fn plant(f: &Fixture, good: &str, label: &str, sql: &str) -> String {
    let file = f.objects().join(good.strip_prefix("b2:").unwrap());
    let name = file
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .replace("_good.sql.gz", &format!("_{label}.sql.gz"));
    let planted = file.with_file_name(&name);
    std::fs::write(&planted, gz(&["-c"], sql.as_bytes())).unwrap();
    let mtext = std::fs::read_to_string(format!("{}.json", file.display())).unwrap();
    let mut m = backup::manifest::parse(&mtext, "good").unwrap();
    m.file = name.clone();
    m.label = label.to_string();
    m.sha256 = sha256_of(&planted);
    m.size = std::fs::metadata(&planted).unwrap().len();
    std::fs::write(format!("{}.json", planted.display()), m.to_json()).unwrap();
    name
}

/// Everything of the cluster a dump running as the database user could change outside the
/// scratch database: roles and their attributes, per-database and per-role settings, the
/// databases and their properties, and the live database's tables, extensions and counts.
fn cluster_state(f: &Fixture) -> Vec<String> {
    vec![
        f.psql(
            "postgres",
            "SELECT string_agg(concat_ws(':', rolname, rolsuper, rolcreaterole, rolcreatedb, \
             rolcanlogin, rolconnlimit, rolvaliduntil), ',' ORDER BY rolname) FROM pg_roles \
             WHERE rolname NOT LIKE 'pg\\_%'",
        ),
        f.psql(
            "postgres",
            "SELECT string_agg(concat_ws(':', d.datname, r.rolname, array_to_string(s.setconfig, \
             ',')), ';' ORDER BY d.datname, r.rolname) FROM pg_db_role_setting s LEFT JOIN \
             pg_database d ON d.oid = s.setdatabase LEFT JOIN pg_roles r ON r.oid = s.setrole",
        ),
        f.psql(
            "postgres",
            "SELECT string_agg(concat_ws(':', datname, datallowconn, datconnlimit, \
             pg_get_userbyid(datdba), datacl, datistemplate), ',' ORDER BY datname) FROM pg_database",
        ),
        f.psql(
            "station",
            "SELECT string_agg(format('%I.%I', schemaname, tablename), ',' ORDER BY schemaname, \
             tablename) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
        ),
        f.psql(
            "station",
            "SELECT string_agg(extname, ',' ORDER BY extname) FROM pg_extension",
        ),
        f.psql("station", drill::COUNT_SQL),
    ]
}

/// Waits (60 s at most) until a drill's replay runs the `pg_sleep` a planted dump holds.
fn wait_for_planted_sleep(f: &Fixture) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while f
        .psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE datname LIKE 'xtask\\_drill\\_%' \
             AND query LIKE '%pg_sleep%'",
        )
        .trim()
        == "0"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the planted sleep never ran"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Scratch databases and replay roles a drill left behind.
fn drill_leftovers(f: &Fixture) -> String {
    f.psql(
        "postgres",
        "SELECT (SELECT count(*) FROM pg_database WHERE datname LIKE 'xtask\\_drill\\_%') || ' \
         databases, ' || (SELECT count(*) FROM pg_roles WHERE rolname LIKE 'xtask\\_drill\\_%') \
         || ' roles'",
    )
    .trim()
    .to_string()
}

/// A dump planted in the bucket (with a manifest that matches it) is drilled as a role that owns
/// only the scratch database: what it tries against the live database, other roles or the server
/// (as the database user, a superuser here, it could) is refused, the drill fails saying how to go
/// on, and no scratch database or role is left. A dump with owners needs --trust-dump, as restore
/// does; a drill stopped by SIGTERM mid-replay drops both too.
#[test]
fn a_planted_dump_drilled_cannot_touch_the_live_database() {
    let f = Fixture::new();
    let env = f.env("t");
    let good = backup::create(&env, &Label::parse("good").unwrap()).unwrap();
    let file = f.objects().join(good.path.strip_prefix("b2:").unwrap());
    let dump = String::from_utf8(gz(&["-dc"], &std::fs::read(&file).unwrap())).unwrap();
    assert!(
        dump.contains("\\unrestrict"),
        "pg_dump 15.14+ writes \\restrict"
    );
    // A drill of a backup of xtask's own passes, as the replay role, and leaves nothing behind.
    let before = cluster_state(&f);
    drill_passes(&f, &["--strict"], "which owns only that database", &before);

    // Where the server's own user (postgres) could write: a superuser's `TO PROGRAM` would.
    let mark = std::env::temp_dir().join(format!("xtask-drill-pwned-{}", std::process::id()));
    let _ = std::fs::remove_file(&mark);
    let append = |extra: &str| dump.replacen("\\unrestrict", &format!("{extra}\n\\unrestrict"), 1);
    let dblink = format!(
        "CREATE EXTENSION dblink SCHEMA public; SELECT public.dblink_exec('host={} port={} dbname=station user=station', \
         'CREATE TABLE public.pwned (x int)');",
        f.cluster.socket_dir.display(),
        f.cluster.port
    );
    let cases = [
        (
            "a setting on the live database",
            append("ALTER DATABASE station SET search_path = evil, public;"),
        ),
        (
            "the live database closed",
            append("ALTER DATABASE station ALLOW_CONNECTIONS false;"),
        ),
        (
            "a setting on db_user",
            append("ALTER ROLE station SET work_mem = '77kB';"),
        ),
        (
            "a superuser created",
            append("CREATE ROLE evil SUPERUSER LOGIN PASSWORD 'evil';"),
        ),
        (
            "a table created in the live database (dblink)",
            append(&dblink),
        ),
        (
            "a program run by the server",
            append(&format!(
                "COPY (SELECT 1) TO PROGRAM 'touch {}';",
                mark.display()
            )),
        ),
        (
            "the drill's transaction ended first",
            append("COMMIT;\nALTER DATABASE station CONNECTION LIMIT 0;\nCREATE ROLE evil;"),
        ),
    ];
    for (i, (what, sql)) in cases.iter().enumerate() {
        let name = plant(&f, &good.path, &format!("planted-{i}"), sql);
        let out = f
            .xtask(&["backup", "drill", "--env", "t", "--strict", &name])
            .output()
            .unwrap();
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(1), "{what}: {stdout}{stderr}");
        assert!(
            stderr.contains("drill FAILED") && stderr.contains("--trust-dump"),
            "{what}: {stderr}"
        );
        assert!(!mark.exists(), "{what}: the dump ran a program");
        assert_eq!(
            cluster_state(&f),
            before,
            "{what}: the live database or the roles changed"
        );
        assert_eq!(drill_leftovers(&f), "0 databases, 0 roles", "{what}");
    }

    // What a restore refuses (the dump changed its own database, which a swap would carry into
    // the live one) fails the drill too.
    let name = plant(
        &f,
        &good.path,
        "own-db",
        &append("DO $$BEGIN EXECUTE format('ALTER DATABASE %I SET search_path = evil', current_database()); END$$;"),
    );
    let out = f
        .xtask(&["backup", "drill", "--env", "t", &name])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the dump changed the database it was restored into"),
        "{stderr}"
    );
    assert_eq!(drill_leftovers(&f), "0 databases, 0 roles");

    // A dump with its objects' owners (pg_dump without --no-owner, as backups from before it
    // are): refused, saying why and how to go on; --trust-dump drills it as db_user.
    let o = std::process::Command::new("pg_dump")
        .env("PGHOST", &f.cluster.socket_dir)
        .env("PGPORT", f.cluster.port.to_string())
        .env("PGUSER", "station")
        .arg("station")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let owned = text(&o.stdout);
    assert!(owned.contains("OWNER TO station"), "{owned}");
    let name = plant(&f, &good.path, "owned", &owned);
    let out = f
        .xtask(&["backup", "drill", "--env", "t", &name])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("OWNER TO")
            && stderr.contains(&format!(
                "cargo xtask backup drill --env t {name} --trust-dump"
            )),
        "{stderr}"
    );
    assert_eq!(drill_leftovers(&f), "0 databases, 0 roles");
    drill_passes(&f, &[&name, "--trust-dump"], "(--trust-dump)", &before);

    // SIGTERM while the dump replays (a cancelled CI job): the replay's session is ended, the
    // scratch database and its role are dropped.
    let name = plant(&f, &good.path, "slow", &append("SELECT pg_sleep(60);"));
    let child = f
        .xtask(&["backup", "drill", "--env", "t", &name])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_planted_sleep(&f);
    let t0 = std::time::Instant::now();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(30),
        "the drill waited for the dump's sleep"
    );
    assert!(
        stderr.contains("interrupted (Ctrl-C, SIGTERM or SIGHUP): the drill stopped"),
        "{stderr}"
    );
    assert_eq!(drill_leftovers(&f), "0 databases, 0 roles");
    assert_eq!(cluster_state(&f), before);
}

/// `backup drill --env t ARGS` passes, saying `says` on stderr, and leaves the cluster as
/// `before` with no scratch database or role behind.
fn drill_passes(f: &Fixture, args: &[&str], says: &str, before: &[String]) {
    let mut all = vec!["backup", "drill", "--env", "t"];
    all.extend(args);
    let out = f.xtask(&all).output().unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("drill passed"), "{stdout}");
    assert!(stderr.contains(says), "{stderr}");
    assert_eq!(drill_leftovers(f), "0 databases, 0 roles");
    assert_eq!(cluster_state(f), before);
}

/// A `df` first on the PATH of `c` (the drill runs df where the cluster runs: this machine)
/// printing `body`'s output.
fn with_fake_df(f: &Fixture, c: &mut std::process::Command, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    let bin = f.state_dir.join("fake-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let df = bin.join("df");
    std::fs::write(&df, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&df, std::fs::Permissions::from_mode(0o755)).unwrap();
    c.env(
        "PATH",
        format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
    );
}

#[test]
fn a_drill_that_does_not_fit_beside_the_live_database_is_refused_before_anything_is_made() {
    // Regression: the drill replays a full copy beside the live database with no free-space
    // check (restore has one); a full disk there fills the WAL too and stops the whole cluster.
    let f = Fixture::new();
    let out = f
        .xtask(&["backup", "--env", "t", "--label", "space"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let before = cluster_state(&f);
    let full = "echo 'Filesystem 1024-blocks Used Available Capacity Mounted on'; \
                echo '/dev/full 1000000 998976 1024 100% /full'";
    let drill = |extra: &[&str], df: &str| {
        let mut a = vec!["backup", "drill", "--env", "t"];
        a.extend_from_slice(extra);
        let mut c = f.xtask(&a);
        with_fake_df(&f, &mut c, df);
        let out = c.output().unwrap();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let (code, stdout, stderr) = drill(&[], full);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("refusing the drill: not enough free space")
            && stderr.contains("1.0 MiB free on /dev/full /full")
            && stderr.contains("--ignore-space")
            && stderr.contains("nothing was changed"),
        "{stderr}"
    );
    // Refused before the scratch database (or its role) was made.
    assert!(!stderr.contains("into scratch database"), "{stderr}");
    assert_eq!(drill_leftovers(&f), "0 databases, 0 roles");
    assert_eq!(cluster_state(&f), before);
    // --ignore-space: a warning, and the drill runs.
    let (code, stdout, stderr) = drill(&["--ignore-space", "--json"], full);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["passed"], true, "{report}");
    assert!(
        report["warnings"]
            .to_string()
            .contains("going on (--ignore-space)"),
        "{report}"
    );
    // GNU df's negative "Available" (usage beyond the reserve): short too.
    let over = "echo 'Filesystem 1024-blocks Used Available Capacity Mounted on'; \
                echo '/dev/over 1000000 1010000 -10000 101% /over'";
    let (code, stdout, stderr) = drill(&[], over);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("not enough free space"), "{stderr}");
    assert_eq!(drill_leftovers(&f), "0 databases, 0 roles");
    assert_eq!(cluster_state(&f), before);
}

#[test]
fn the_drill_makes_its_scratch_database_like_the_live_one() {
    // Regression: the drill made its scratch database with the cluster's defaults (LC_CTYPE
    // C.UTF-8 here), not like the live database as a restore does: a database whose LC_CTYPE is C
    // (upper() leaves 'é' as it is) with a CHECK that relies on it failed the drill (the COPY of
    // its rows breaks the CHECK under C.UTF-8) although a restore would replay it.
    let f = Fixture::new();
    f.psql("postgres", "DROP DATABASE station");
    f.psql(
        "postgres",
        "CREATE DATABASE station ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0",
    );
    f.psql(
        "station",
        "CREATE TABLE words (w text CHECK (upper(w) = w)); INSERT INTO words VALUES ('É'), ('é');",
    );
    let out = f
        .xtask(&["backup", "--env", "t", "--label", "ctype"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let before = cluster_state(&f);
    drill_passes(&f, &[], "drill: space", &before);
}

/// Points `c`'s remote `b2` at an S3 endpoint on a free loopback port nobody listens on, with one
/// try (rclone's retries off): the remote out of reach, exit 3.
fn unreachable_remote(c: &mut std::process::Command) {
    let port = xtask::services::free_port().unwrap();
    c.env("RCLONE_CONFIG_B2_TYPE", "s3")
        .env("RCLONE_CONFIG_B2_PROVIDER", "Other")
        .env(
            "RCLONE_CONFIG_B2_ENDPOINT",
            format!("http://127.0.0.1:{port}"),
        )
        .env("RCLONE_CONFIG_B2_ACCESS_KEY_ID", "someaccesskey")
        .env("RCLONE_CONFIG_B2_SECRET_ACCESS_KEY", "somesecretkey0000")
        .env("RCLONE_CONFIG_B2_REGION", "us-east-1")
        .env("RCLONE_RETRIES", "1")
        .env("RCLONE_LOW_LEVEL_RETRIES", "1");
}

/// `cmd`'s exit code and its stdout parsed as exactly one JSON document (a test failure showing
/// both outputs otherwise); the password never in either.
fn one_json_document(mut cmd: std::process::Command) -> (Option<i32>, serde_json::Value, String) {
    let out = cmd.output().unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        !stdout.contains(PASSWORD) && !stderr.contains(PASSWORD),
        "{stdout}{stderr}"
    );
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("not one JSON document: {e}\nstdout: {stdout}\nstderr: {stderr}")
    });
    (out.status.code(), doc, stderr)
}

/// The document's `outcome`, `failed_step` and `exit_code` (which must be the process's) and
/// that its message is the error printed on stderr.
fn assert_failure(code: Option<i32>, doc: &serde_json::Value, stderr: &str, step: &str, exit: i32) {
    assert_eq!(code, Some(exit), "{doc}\n{stderr}");
    assert_eq!(doc["outcome"], "failed", "{doc}");
    assert_eq!(doc["failed_step"], step, "{doc}");
    assert_eq!(doc["exit_code"], exit, "{doc}");
    assert_eq!(doc["env"], "t", "{doc}");
    let message = doc["message"].as_str().unwrap_or_else(|| panic!("{doc}"));
    assert!(
        stderr.contains(message),
        "{message:?} not on stderr: {stderr}"
    );
}

#[test]
fn backup_and_drill_with_json_print_one_failure_document_on_every_failure() {
    // Regression: `backup --json` and `backup drill --json` printed nothing on stdout when they
    // failed (restore and rollback print one document on every path).
    let f = Fixture::new();
    // Bad input (exit 2): the label.
    let (code, doc, stderr) =
        one_json_document(f.xtask(&["backup", "--env", "t", "--label", "a/b", "--json"]));
    assert_failure(code, &doc, &stderr, "input", 2);
    assert_eq!(doc["label"], serde_json::Value::Null, "{doc}");
    // A step of the script failing (exit 1): the stage it names.
    f.psql(
        "station",
        "CREATE TYPE mood AS ENUM ('ok', 'gone'); CREATE TABLE zz_broken (m mood); \
         INSERT INTO zz_broken VALUES ('gone'); DELETE FROM pg_enum WHERE enumlabel = 'gone';",
    );
    let (code, doc, stderr) =
        one_json_document(f.xtask(&["backup", "--env", "t", "--label", "partway", "--json"]));
    assert_failure(code, &doc, &stderr, "dump", 1);
    assert_eq!(doc["label"], "partway", "{doc}");
    f.psql("station", "DROP TABLE zz_broken; DROP TYPE mood;");
    // The remote out of reach (exit 3), for the backup and for the drill.
    let unreachable = |args: &[&str]| {
        let mut c = f.xtask(args);
        unreachable_remote(&mut c);
        c
    };
    let (code, doc, stderr) = one_json_document(unreachable(&[
        "backup", "--env", "t", "--label", "noremote", "--json",
    ]));
    assert_failure(code, &doc, &stderr, "remote", 3);
    assert!(!doc.to_string().contains("somesecretkey0000"), "{doc}");
    let (code, doc, stderr) =
        one_json_document(unreachable(&["backup", "drill", "--env", "t", "--json"]));
    assert_failure(code, &doc, &stderr, "plan", 3);
    assert_eq!(doc["passed"], false, "{doc}");

    // The drill: a backup that is not there (exit 2) ...
    let good = backup::create(&f.env("t"), &Label::parse("good").unwrap()).unwrap();
    let (code, doc, stderr) = one_json_document(f.xtask(&[
        "backup",
        "drill",
        "--env",
        "t",
        "station_backup_19990101_000000_x.sql.gz",
        "--json",
    ]));
    assert_failure(code, &doc, &stderr, "plan", 2);
    assert_eq!(doc["object"], serde_json::Value::Null, "{doc}");
    // ... a dump whose replay fails (exit 1): the object and the scratch database are named, the
    // failing row's data is not.
    let file = f.objects().join(good.path.strip_prefix("b2:").unwrap());
    let dump = String::from_utf8(gz(&["-dc"], &std::fs::read(&file).unwrap())).unwrap();
    let bad = dump.replacen(
        "\\unrestrict",
        "SELECT 'secret-row-value'::int;\n\\unrestrict",
        1,
    );
    let name = plant(&f, &good.path, "broken", &bad);
    let (code, doc, stderr) =
        one_json_document(f.xtask(&["backup", "drill", "--env", "t", &name, "--json"]));
    assert_failure(code, &doc, &stderr, "replay", 1);
    assert!(
        doc["object"].as_str().unwrap_or("").ends_with(&name),
        "{doc}"
    );
    assert!(
        doc["scratch_database"]
            .as_str()
            .unwrap_or("")
            .starts_with("xtask_drill_"),
        "{doc}"
    );
    assert!(
        doc["message"]
            .as_str()
            .unwrap_or("")
            .contains("invalid input syntax for type integer: \"(value withheld)\""),
        "{doc}"
    );
    assert_eq!(drill_leftovers(&f), "0 databases, 0 roles");
    // ... and one whose counts differ from its manifest (exit 1): the report itself, with the
    // error.
    let more = dump.replacen(
        "\\unrestrict",
        "INSERT INTO public.accounts VALUES (999999, 'x@example.org');\n\\unrestrict",
        1,
    );
    let name = plant(&f, &good.path, "differs", &more);
    let (code, doc, stderr) =
        one_json_document(f.xtask(&["backup", "drill", "--env", "t", &name, "--json"]));
    assert_failure(code, &doc, &stderr, "compare", 1);
    assert_eq!(doc["passed"], false, "{doc}");
    assert!(
        doc["tables"].as_array().is_some_and(|t| !t.is_empty()),
        "{doc}"
    );
}

/// The scratch database and replay role a killed drill left (its name, the pid of a process that
/// is gone).
#[test]
fn the_next_drill_drops_what_a_killed_drill_left_and_nothing_else() {
    // Regression: a drill killed with SIGKILL left its scratch database and replay role behind
    // for ever.
    let f = Fixture::new();
    let env = f.env("t");
    let good = backup::create(&env, &Label::parse("good").unwrap()).unwrap();
    let file = f.objects().join(good.path.strip_prefix("b2:").unwrap());
    let dump = String::from_utf8(gz(&["-dc"], &std::fs::read(&file).unwrap())).unwrap();
    let slow = dump.replacen("\\unrestrict", "SELECT pg_sleep(15);\n\\unrestrict", 1);
    let name = plant(&f, &good.path, "slow", &slow);
    // A drill killed with SIGKILL mid-replay.
    let mut child = f
        .xtask(&["backup", "drill", "--env", "t", &name])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_planted_sleep(&f);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let left = f.psql(
        "postgres",
        "SELECT datname FROM pg_database WHERE datname LIKE 'xtask\\_drill\\_%'",
    );
    let left = left.trim().to_string();
    assert!(
        left.starts_with("xtask_drill_"),
        "the killed drill left nothing: {left:?}"
    );
    assert_eq!(drill_leftovers(&f), "1 databases, 1 roles");
    // Its replay's session ends once the backend notices its client is gone (after the sleep):
    // until then the next drill keeps the database (a session uses it).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while f
        .psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{left}'"),
        )
        .trim()
        != "0"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the killed replay's session stayed"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Kept: names of a similar but different shape, and one a running drill holds (its lock).
    let similar = [
        "xtask_drill_1_2_x",
        "xtask_drill_x_1",
        "xtask_drill_1",
        "my_xtask_drill_1_2",
    ];
    for d in similar {
        f.psql("postgres", &format!("CREATE DATABASE {d}"));
    }
    let running = "xtask_drill_1000_4242";
    f.psql("postgres", &format!("CREATE ROLE {running} LOGIN"));
    f.psql(
        "postgres",
        &format!("CREATE DATABASE {running} OWNER {running}"),
    );
    let mut holder = std::process::Command::new("psql")
        .args(["-X", "-q", "-d", "postgres"])
        .env("PGHOST", &f.cluster.socket_dir)
        .env("PGPORT", f.cluster.port.to_string())
        .env("PGUSER", "station")
        .env("PGPASSWORD", PASSWORD)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let sql = format!(
            "SELECT pg_advisory_lock({}, hashtext('{running}'));\n",
            drill::DRILL_LOCK_KEY
        );
        holder
            .stdin
            .as_mut()
            .unwrap()
            .write_all(sql.as_bytes())
            .unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while f
        .psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = {}::oid \
                 AND objid = hashtext('{running}')::oid AND granted",
                drill::DRILL_LOCK_KEY
            ),
        )
        .trim()
        != "1"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the test's lock was never granted"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The next drill drops the killed one's database and role, and says so.
    let out = f
        .xtask(&["backup", "drill", "--env", "t", "--json"])
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!("dropped {left}")) && stderr.contains("killed"),
        "{stderr}"
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        report["dropped_leftovers"],
        serde_json::json!([left]),
        "{report}"
    );
    let dbs = f.psql(
        "postgres",
        "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database WHERE datname LIKE '%xtask\\_drill%'",
    );
    let mut want: Vec<&str> = similar.into_iter().chain([running]).collect();
    want.sort();
    assert_eq!(dbs.trim(), want.join(","));
    let roles = f.psql(
        "postgres",
        "SELECT string_agg(rolname, ',') FROM pg_roles WHERE rolname LIKE 'xtask\\_drill\\_%'",
    );
    assert_eq!(
        roles.trim(),
        running,
        "the killed drill's role stayed, or the running one went"
    );
    // Once the running drill is gone (its lock released), the next one drops its leftovers too.
    drop(holder.stdin.take());
    holder.wait().unwrap();
    let out = f
        .xtask(&["backup", "drill", "--env", "t"])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains(&format!("dropped {running}")), "{stderr}");
    for d in similar {
        f.psql("postgres", &format!("DROP DATABASE {d}"));
    }
    assert_eq!(drill_leftovers(&f), "0 databases, 0 roles");
}

#[test]
fn the_other_json_commands_print_one_failure_document_too() {
    // Regression: `backup status`, `backup prune`, `deploy` and `compose check` with `--json`
    // printed nothing on stdout when they failed before their own report.
    let f = Fixture::new();
    let cases: [(&[&str], &str, serde_json::Value, i32); 5] = [
        (
            &["backup", "status", "--env", "nope", "--json"],
            "status",
            "nope".into(),
            2,
        ),
        (
            &["backup", "prune", "--env", "t", "--label", "a/b", "--json"],
            "prune",
            "t".into(),
            2,
        ),
        (
            &["deploy", "--env", "nope", "--json"],
            "input",
            "nope".into(),
            2,
        ),
        (
            &[
                "compose",
                "check",
                "--file",
                "/nonexistent/compose.yml",
                "--json",
            ],
            "check",
            serde_json::Value::Null,
            2,
        ),
        (
            &["backup", "status", "--env", "t", "--json"],
            "status",
            "t".into(),
            3,
        ),
    ];
    for (args, step, env, exit) in cases {
        let mut c = f.xtask(args);
        if exit == 3 {
            unreachable_remote(&mut c);
        }
        let (code, doc, stderr) = one_json_document(c);
        assert_eq!(code, Some(exit), "{args:?}: {doc}\n{stderr}");
        assert_eq!(doc["outcome"], "failed", "{args:?}: {doc}");
        assert_eq!(doc["failed_step"], step, "{args:?}: {doc}");
        assert_eq!(doc["exit_code"], exit, "{args:?}: {doc}");
        assert_eq!(doc["env"], env, "{args:?}: {doc}");
        let message = doc["message"].as_str().unwrap_or_default();
        assert!(
            !message.is_empty() && stderr.contains(message),
            "{args:?}: {doc}\n{stderr}"
        );
    }
}

#[test]
fn a_usage_error_with_json_in_argv_prints_one_failure_document() {
    // Regression: clap's usage errors printed nothing on stdout, `--json` or not.
    let f = Fixture::new();
    for args in [
        &["backup", "--env", "t", "--json", "--no-such-flag"][..],
        &["backup", "drill", "--json", "--strict=maybe"],
        &["restore", "--json", "--env", "t", "a\tb"],
    ] {
        let (code, doc, stderr) = one_json_document(f.xtask(args));
        assert_eq!(code, Some(2), "{args:?}: {doc}\n{stderr}");
        assert_eq!(doc["failed_step"], "usage", "{args:?}: {doc}");
        assert_eq!(doc["exit_code"], 2, "{args:?}: {doc}");
        assert_eq!(doc["outcome"], "failed", "{args:?}: {doc}");
        assert!(
            doc["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{doc}"
        );
    }
    // Without --json stdout stays empty.
    let out = f.xtask(&["backup", "--no-such-flag"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
}
