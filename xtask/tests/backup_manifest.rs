//! The backup manifest written by `backup-db.sh` and proven by `cargo xtask backup`, against a real
//! PostgreSQL cluster and rclone's local backend: its fields are exact, its counts come from the
//! dump's own snapshot (a writer inserting during the dump does not make them disagree with what
//! the dump restores), it is absent when the dump fails, and no password is on any argv.

#[path = "backup_support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use support::*;
use xtask::backup::{self, manifest, Label};

const GIT_SHA: &str = "0123456789abcdef0123456789abcdef01234567";

fn executable(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn sha256_of(p: &Path) -> String {
    let o = Command::new("sha256sum").arg(p).output().unwrap();
    text(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Object path → file in the local remote's directory.
fn local_file(f: &Fixture, object: &str) -> PathBuf {
    f.objects().join(object.strip_prefix("b2:").unwrap())
}

fn ok_field<'a>(stdout: &'a str, key: &str) -> &'a str {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("BACKUP_OK "))
        .unwrap_or_else(|| panic!("no BACKUP_OK in {stdout}"));
    line.split(' ')
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} missing in {line}"))
}

fn counts(f: &Fixture, db: &str) -> BTreeMap<String, u64> {
    xtask::backup::drill::parse_counts(&f.psql(db, xtask::backup::drill::COUNT_SQL)).unwrap()
}

#[test]
fn the_manifest_fields_are_exact() {
    let f = Fixture::new();
    let tmp = f.dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let before = std::time::SystemTime::now();
    let (out, hits, _) = run_watching_argv(
        {
            let mut c = f.script(&tmp);
            c.env("LABEL", "pre-deploy-0123456")
                .env("BACKUP_TIMESTAMP", "20261201_090000")
                .env("BACKUP_GIT_SHA", GIT_SHA);
            c
        },
        PASSWORD,
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(hits.is_empty(), "password in argv: {hits:?}");
    assert!(!stdout.contains(PASSWORD) && !stderr.contains(PASSWORD));
    let object =
        "b2:station-backups/postgres/202612/station_backup_20261201_090000_pre-deploy-0123456.sql.gz";
    assert_eq!(ok_field(&stdout, "path"), object);
    assert_eq!(ok_field(&stdout, "manifest"), format!("{object}.json"));
    let dump = local_file(&f, object);
    let json_file = local_file(&f, &manifest::manifest_path(object));
    let text_json = std::fs::read_to_string(&json_file).unwrap();
    let m = manifest::parse(&text_json, "test").unwrap();
    assert_eq!(m.schema, "backup-manifest/1");
    assert_eq!(
        m.file,
        "station_backup_20261201_090000_pre-deploy-0123456.sql.gz"
    );
    assert_eq!(m.sha256, sha256_of(&dump));
    assert_eq!(ok_field(&stdout, "sha256"), m.sha256);
    assert_eq!(m.size, std::fs::metadata(&dump).unwrap().len());
    assert_eq!(m.database, "station");
    let version = f.psql("station", "SHOW server_version");
    assert_eq!(m.server_version, version.split_whitespace().next().unwrap());
    assert_eq!(m.label, "pre-deploy-0123456");
    assert_eq!(m.git_sha.as_deref(), Some(GIT_SHA));
    assert_eq!(m.newest_migration, None, "no migration table yet");
    // created_at is the moment of the snapshot, in UTC, between the start and the end of the run.
    let date = |args: &[&str]| {
        let o = Command::new("date").args(args).output().unwrap();
        text(&o.stdout).trim().to_string()
    };
    let t0 = before
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let lo = date(&["-u", "-d", &format!("@{t0}"), "+%Y-%m-%dT%H:%M:%SZ"]);
    let hi = date(&["-u", "+%Y-%m-%dT%H:%M:%SZ"]);
    assert!(
        lo <= m.created_at && m.created_at <= hi,
        "{lo} {} {hi}",
        m.created_at
    );
    // Exact counts of every table, quoted as PostgreSQL quotes them, and equal to the drill's query.
    let expected: BTreeMap<String, u64> = [
        ("public.\"Audit Log\"".to_string(), 321),
        ("public.accounts".to_string(), 5000),
    ]
    .into();
    assert_eq!(m.tables, expected);
    assert_eq!(m.tables, counts(&f, "station"));
    // Keys are sorted in the object as written (byte order: `"` < `a`).
    let at = |k: &str| {
        text_json
            .find(k)
            .unwrap_or_else(|| panic!("{k} in {text_json}"))
    };
    assert!(at("Audit Log") < at("public.accounts"), "{text_json}");

    // The builtin migrations table gives the newest migration; TypeORM's is the fallback.
    f.psql(
        "station",
        &format!("{}; INSERT INTO schema_migrations (version, name) VALUES (2, '0002_add_orders'), (1, '0001_init'); \
         CREATE TABLE migrations (id serial PRIMARY KEY, \"timestamp\" bigint NOT NULL, name varchar NOT NULL); \
         INSERT INTO migrations (\"timestamp\", name) VALUES (1700000000002, 'AddOrders1700000000002'), (1700000000001, 'Init1700000000001');",
         xtask::migrate::SCHEMA_TABLE_SQL),
    );
    let run = |label: &str| {
        let out = f.script(&tmp).env("LABEL", label).output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        let p = ok_field(&stdout, "manifest").to_string();
        manifest::parse(&std::fs::read_to_string(local_file(&f, &p)).unwrap(), &p).unwrap()
    };
    let m = run("with-migrations");
    assert_eq!(m.newest_migration.as_deref(), Some("0002_add_orders"));
    assert_eq!(m.git_sha, None, "no BACKUP_GIT_SHA: null");
    assert_eq!(m.tables.len(), 4);
    assert_eq!(m.tables["public.schema_migrations"], 2);
    f.psql("station", "DROP TABLE schema_migrations");
    let m = run("typeorm");
    assert_eq!(
        m.newest_migration.as_deref(),
        Some("AddOrders1700000000002")
    );

    // A malformed BACKUP_GIT_SHA is bad input, before anything runs.
    let out = f
        .script(&tmp)
        .env("LABEL", "badsha")
        .env("BACKUP_GIT_SHA", "abc1234")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(!files(&f.objects()).iter().any(|p| p.contains("badsha")));
    assert!(
        files(&tmp).is_empty(),
        "temp left behind: {:?}",
        files(&tmp)
    );
}

#[test]
fn counts_come_from_the_dumps_snapshot_while_a_writer_keeps_inserting() {
    let f = Fixture::new();
    let tmp = f.dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    f.psql(
        "station",
        "CREATE TABLE writes (id bigserial PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())",
    );
    // A writer committing small inserts all the time, from before the backup until after it.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let cmd = move || {
            f_client_psql(
                "INSERT INTO writes DEFAULT VALUES; INSERT INTO writes DEFAULT VALUES; \
                 UPDATE accounts SET email = email || '.' WHERE id = 1; \
                 INSERT INTO accounts SELECT max(id) + 1, 'w@example.org' FROM accounts;",
            )
        };
        let port = f.cluster.port;
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let o = cmd().env("PGPORT", port.to_string()).output().unwrap();
                assert!(o.status.success(), "{}", text(&o.stderr));
                n += 1;
            }
            n
        })
    };
    // Let it write a while before the backup starts.
    while f
        .psql("station", "SELECT count(*) FROM writes")
        .trim()
        .parse::<u64>()
        .unwrap()
        < 10
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // pg_dump starts a second after the snapshot was exported (and its counts were taken), so the
    // writer commits many rows in between: only the snapshot makes dump and counts agree.
    let slow = f.dir.path().join("pg_dump_late");
    executable(&slow, "#!/bin/bash\nsleep 1\nexec pg_dump \"$@\"\n");
    let out = f
        .script(&tmp)
        .env("LABEL", "concurrent")
        .env("BACKUP_PG_DUMP", &slow)
        .output()
        .unwrap();
    let during = f
        .psql("station", "SELECT count(*) FROM writes")
        .trim()
        .parse::<u64>()
        .unwrap();
    stop.store(true, Ordering::SeqCst);
    let batches = writer.join().unwrap();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = text(&out.stdout);
    let object = ok_field(&stdout, "path");
    let mpath = ok_field(&stdout, "manifest");
    let m = manifest::parse(
        &std::fs::read_to_string(local_file(&f, mpath)).unwrap(),
        mpath,
    )
    .unwrap();

    // The writer really wrote during the backup: the manifest is strictly between "before" (10)
    // and the count when the backup ended.
    let in_manifest = m.tables["public.writes"];
    assert!(
        10 <= in_manifest && in_manifest < during,
        "writes: manifest {in_manifest}, at the end of the backup {during} ({batches} batches)"
    );
    // Restore the dump into a scratch database: its counts are the manifest's, exactly.
    f.psql("postgres", "CREATE DATABASE scratch TEMPLATE template0");
    let dump = local_file(&f, object);
    let restore = format!(
        "gzip -dc '{}' | psql -X -q -v ON_ERROR_STOP=1 --single-transaction -d scratch >/dev/null",
        dump.display()
    );
    let o = f_client_psql_shell(&restore, f.cluster.port)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(counts(&f, "scratch"), m.tables);
    assert_ne!(
        counts(&f, "station"),
        m.tables,
        "the live database moved on"
    );
    assert!(
        files(&tmp).is_empty(),
        "temp left behind: {:?}",
        files(&tmp)
    );
}

/// psql against the fixture's cluster (port set by the caller), password in the environment.
fn f_client_psql(sql: &str) -> Command {
    let mut c = Command::new("psql");
    c.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .env_remove("PGSERVICE")
        .env("PGHOST", "127.0.0.1")
        .env("PGUSER", "station")
        .env("PGDATABASE", "station")
        .env("PGPASSWORD", PASSWORD);
    c
}

fn f_client_psql_shell(script: &str, port: u16) -> Command {
    let mut c = Command::new("bash");
    c.args(["-c", &format!("set -o pipefail; {script}")])
        .env_remove("PGSERVICE")
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", port.to_string())
        .env("PGUSER", "station")
        .env("PGPASSWORD", PASSWORD);
    c
}

#[test]
fn no_manifest_when_the_dump_fails_and_a_failed_manifest_upload_fails_the_backup() {
    let f = Fixture::new();
    let tmp = f.dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    // pg_dump fails part way: no dump, no manifest.
    let failing = f.dir.path().join("pg_dump_fails");
    executable(
        &failing,
        "#!/bin/bash\npg_dump \"$@\" | head -c 5000\nexit 1\n",
    );
    let out = f
        .script(&tmp)
        .env("LABEL", "dumpfail")
        .env("BACKUP_PG_DUMP", &failing)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("FAILED stage=dump"), "{stderr}");
    assert!(files(&f.objects()).is_empty(), "{:?}", files(&f.objects()));
    assert!(files(&tmp).is_empty());

    // The manifest upload fails (an rclone that refuses to copy .json objects): exit 1 at stage
    // `manifest`, no BACKUP_OK line, the verified dump stays without a manifest.
    let picky = f.dir.path().join("rclone_no_json");
    executable(
        &picky,
        "#!/bin/bash\nif [ \"$1\" = copyto ] && [[ \"${*: -1}\" == *.json ]]; then echo 'upload refused' >&2; exit 5; fi\nexec rclone \"$@\"\n",
    );
    let out = f
        .script(&tmp)
        .env("LABEL", "nomanifest")
        .env("RCLONE", &picky)
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("FAILED stage=manifest"), "{stderr}");
    assert!(!stdout.contains("BACKUP_OK"), "{stdout}");
    let objs = files(&f.objects());
    assert_eq!(objs.len(), 1, "{objs:?}");
    assert!(objs[0].ends_with("_nomanifest.sql.gz"));

    // A manifest already in place (with no dump) is never overwritten either: refused up front.
    let ts = "20260101_000000";
    let m = f.objects().join(format!(
        "station-backups/postgres/202601/station_backup_{ts}_taken.sql.gz.json"
    ));
    std::fs::create_dir_all(m.parent().unwrap()).unwrap();
    std::fs::write(&m, "{}").unwrap();
    let out = f
        .script(&tmp)
        .env("LABEL", "taken")
        .env("BACKUP_TIMESTAMP", ts)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("FAILED stage=remote") && stderr.contains("already exists"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&m).unwrap(), "{}");
    assert!(!stderr.contains("dump ok"), "dumped anyway: {stderr}");
    assert!(files(&tmp).is_empty());
}

#[test]
fn postgres_down_is_exit_3_at_the_snapshot_stage() {
    let f = Fixture::new();
    let tmp = f.dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    f.cluster.stop().unwrap();
    let out = f.script(&tmp).env("LABEL", "pgdown").output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("FAILED stage=snapshot"), "{stderr}");
    assert!(files(&f.objects()).is_empty());
    assert!(files(&tmp).is_empty());
}

#[test]
fn cargo_xtask_backup_proves_the_manifest() {
    let f = Fixture::new();
    let env = f.env("t");
    let c = backup::create_for(
        &env,
        &Label::parse("pre-deploy-0123456").unwrap(),
        Some(GIT_SHA),
    )
    .unwrap();
    assert_eq!(c.manifest_path, manifest::manifest_path(&c.object.path));
    assert_eq!(c.manifest.git_sha.as_deref(), Some(GIT_SHA));
    assert_eq!(c.manifest.size, c.object.size);
    assert_eq!(
        c.manifest.sha256,
        sha256_of(&local_file(&f, &c.object.path))
    );
    assert_eq!(c.manifest.tables, counts(&f, "station"));
    assert_eq!(
        backup::read_manifest(&env, &c.object.path).unwrap(),
        Some(c.manifest.clone())
    );
    // A listing shows dumps only, never their manifests.
    assert_eq!(backup::list(&env).unwrap(), vec![c.object.clone()]);
    // A short SHA is refused before anything runs (the manifest holds full SHAs only).
    let e = backup::create_for(&env, &Label::parse("x").unwrap(), Some("abc1234")).unwrap_err();
    assert_eq!(e.exit_code(), xtask::ExitCode::Usage);

    // The CLI's --json names the manifest; a manifest replaced on the remote is caught on reading.
    let (out, hits, _) = run_watching_argv(
        f.xtask(&["backup", "--env", "t", "--label", "cli", "--json"]),
        PASSWORD,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(hits.is_empty(), "password in argv: {hits:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let path = v["path"].as_str().unwrap();
    assert_eq!(v["manifest"], format!("{path}.json"));
    let mfile = local_file(&f, &format!("{path}.json"));
    let m = manifest::parse(&std::fs::read_to_string(&mfile).unwrap(), "x").unwrap();
    assert_eq!(v["sha256"], m.sha256);
    std::fs::write(&mfile, "{\"schema\": \"backup-manifest/1\"}").unwrap();
    let e = backup::read_manifest(&env, path).unwrap_err();
    assert_eq!(e.exit_code(), xtask::ExitCode::Failed);
    assert!(e.to_string().contains("field `file` is missing"), "{e}");
    std::fs::remove_file(&mfile).unwrap();
    assert_eq!(backup::read_manifest(&env, path).unwrap(), None);
}

fn scratch_dbs(f: &Fixture) -> String {
    f.psql(
        "postgres",
        "SELECT count(*) FROM pg_database WHERE datname LIKE 'xtask_drill_%'",
    )
    .trim()
    .to_string()
}

#[test]
fn the_drill_checks_the_restore_against_the_manifest() {
    let f = Fixture::new();
    let env = f.env("t");
    f.psql(
        "station",
        &format!(
            "{}; INSERT INTO schema_migrations (version, name) VALUES (1, '0001_init'), (2, '0002_add_orders')",
            xtask::migrate::SCHEMA_TABLE_SQL
        ),
    );
    let c = backup::create(&env, &Label::parse("drill").unwrap()).unwrap();
    let name = c.path.rsplit('/').next().unwrap().to_string();
    // A bad migration after the backup changes the live database: the drill still passes, because
    // it compares with the manifest (and reports the newest migration it restored).
    f.psql(
        "station",
        "DROP TABLE \"Audit Log\"; INSERT INTO schema_migrations VALUES (3, '0003_bad'); DELETE FROM accounts",
    );
    let out = f
        .xtask(&["backup", "drill", "--env", "t", "--strict", "--json", &name])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["reference"], "manifest");
    assert_eq!(r["manifest"], format!("{}.json", c.path));
    assert_eq!(r["newest_migration"]["restored"], "0002_add_orders");
    assert_eq!(r["newest_migration"]["manifest"], "0002_add_orders");
    assert_eq!(r["tables"].as_array().unwrap().len(), 3);

    // A manifest that disagrees with the dump fails the drill, naming what differs.
    let mfile = local_file(&f, &manifest::manifest_path(&c.path));
    let original = std::fs::read_to_string(&mfile).unwrap();
    let mut m = manifest::parse(&original, "x").unwrap();
    *m.tables.get_mut("public.accounts").unwrap() += 1;
    std::fs::write(&mfile, m.to_json()).unwrap();
    let out = f
        .xtask(&["backup", "drill", "--env", "t", &name])
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains("FAIL public.accounts: manifest 5001, restored 5000"),
        "{stdout}"
    );
    assert!(
        stderr.contains("differs from the manifest in public.accounts"),
        "{stderr}"
    );

    let mut m = manifest::parse(&original, "x").unwrap();
    m.newest_migration = Some("0003_bad".into());
    std::fs::write(&mfile, m.to_json()).unwrap();
    let r = xtask::backup::drill::drill(&env, Some(&name)).unwrap();
    assert!(!r.passed);
    assert!(r.tables.iter().all(|t| t.ok()));
    assert!(!r.newest_migration.as_ref().unwrap().ok());

    // The downloaded dump is checked against the manifest's sha256 before it is restored.
    std::fs::write(&mfile, &original).unwrap();
    let dump = local_file(&f, &c.path);
    let mut bytes = std::fs::read(&dump).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&dump, &bytes).unwrap();
    let e = xtask::backup::drill::drill(&env, Some(&name)).unwrap_err();
    assert_eq!(e.exit_code(), xtask::ExitCode::Failed);
    assert!(e.to_string().contains("sha256"), "{e}");
    assert_eq!(scratch_dbs(&f), "0", "scratch database left behind");

    // No manifest: a warning and the live comparison; --strict: exit 1, nothing restored.
    std::fs::remove_file(&mfile).unwrap();
    bytes[mid] ^= 0xff;
    std::fs::write(&dump, &bytes).unwrap();
    let out = f
        .xtask(&["backup", "drill", "--env", "t", &name])
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("warning:") && stderr.contains("has no manifest"),
        "{stderr}"
    );
    assert!(
        stdout.contains("live database 0, restored 5000"),
        "{stdout}"
    );
    let out = f
        .xtask(&["backup", "drill", "--env", "t", "--strict", &name])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--strict refuses"), "{stderr}");
    assert!(!stderr.contains("restoring"), "{stderr}");
    assert_eq!(scratch_dbs(&f), "0");
}
