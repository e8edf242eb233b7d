//! `cargo xtask restore` on the `local` environment, for real: a PostgreSQL cluster, the rclone remote
//! `b2` (a local directory), backups with manifests made by `cargo xtask backup`. The restore
//! replaces a changed database exactly (schema text and per-table counts equal the backup's) and
//! keeps the replaced one; every fault before the swap leaves the live database as it was (schema
//! and counts) with no scratch database left behind.

mod deploy_support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use deploy_support::{
    counts, databases, gz, hold_deploy_lock, kept_dbs, lock_file_text, pg, poll_sql, schema,
    scratch_dbs, snapshot, sql, steps, stuck_session, TestEnv,
};

/// `cargo xtask backup --label LABEL --json` → the object path.
fn backup(t: &TestEnv, label: &str) -> String {
    let r = t.run(&["backup", "--env", "local", "--label", label, "--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    v["path"].as_str().unwrap().to_string()
}

/// The file behind an object of the local remote.
fn object_file(t: &TestEnv, object: &str) -> PathBuf {
    t.state_dir
        .join("objects")
        .join(object.strip_prefix("b2:").unwrap())
}

/// A `local` environment with the tables (see `up_with_tables`) and a backup `label`: its object.
fn backed_up(label: &str) -> (TestEnv, String) {
    let t = TestEnv::local(0o711);
    up_with_tables(&t);
    let object = backup(&t, label);
    (t, object)
}

/// `datallowconn datconnlimit` of database `db`.
fn conn(t: &TestEnv, db: &str) -> String {
    sql(
        t,
        "postgres",
        &format!(
            "SELECT datallowconn || ' ' || datconnlimit FROM pg_database WHERE datname = '{db}'"
        ),
    )
}

fn up_with_tables(t: &TestEnv) {
    let r = t.run(&["local", "up"]);
    assert_eq!(r.code, 0, "{}", r.all());
    sql(
        t,
        "station",
        "CREATE TABLE accounts (id int PRIMARY KEY, email text NOT NULL); \
         INSERT INTO accounts SELECT g, 'user' || g || '@example.org' FROM generate_series(1, 3000) g; \
         CREATE TABLE \"Audit Log\" (at timestamptz DEFAULT now(), what text); \
         INSERT INTO \"Audit Log\" (what) SELECT 'event ' || g FROM generate_series(1, 321) g; \
         CREATE TABLE schema_migrations (version int PRIMARY KEY, name text NOT NULL); \
         INSERT INTO schema_migrations VALUES (1, '0001_init'), (2, '0002_accounts');",
    );
}

/// A planted object beside the backup `file` (a `_good` one): a name of the backup shape (a later
/// label each), `sql` gzipped, no manifest. Returns its file name.
fn plant_beside(file: &std::path::Path, n: u32, sql: &str) -> String {
    let name = file
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .replace("_good.sql.gz", &format!("_planted-{n}.sql.gz"));
    std::fs::write(file.with_file_name(&name), gzip(sql)).unwrap();
    name
}

/// A `local` environment with the tables and a backup `good`: the file behind that object (the
/// planted ones go beside it) and its dump text.
fn with_good_dump() -> (TestEnv, PathBuf, String) {
    let (t, object) = backed_up("good");
    let file = object_file(&t, &object);
    let text = gunzip(&std::fs::read(&file).unwrap());
    (t, file, text)
}

/// The dump `text` with `extra` run at its end (before pg_dump's closing `\unrestrict`).
fn with_statements(text: &str, extra: &str) -> String {
    text.replacen("\\unrestrict", &format!("{extra}\n\\unrestrict"), 1)
}

/// Plant `dump` beside `file` (see `plant_beside`) and restore it: refused (exit 1). The planted
/// object's name and the run.
fn restore_planted(
    t: &TestEnv,
    file: &std::path::Path,
    n: u32,
    dump: &str,
    what: &str,
) -> (String, deploy_support::Run) {
    let o = plant_beside(file, n, dump);
    let r = t.run(&["restore", "--env", "local", &o, "--yes"]);
    assert_eq!(r.code, 1, "{what}: {}", r.all());
    (o, r)
}

fn gunzip(b: &[u8]) -> String {
    String::from_utf8(gz(&["-dc"], b)).unwrap()
}

fn gzip(s: &str) -> Vec<u8> {
    gz(&["-c"], s.as_bytes())
}

#[test]
fn restore_replaces_a_changed_database_exactly_and_keeps_the_replaced_one() {
    let (t, object) = backed_up("before-change");
    let (schema_b, counts_b) = snapshot(&t);

    // Later writes: rows, a new table, a changed column, a migration.
    sql(
        &t,
        "station",
        "INSERT INTO accounts SELECT g, 'late' || g FROM generate_series(3001, 3500) g; \
         DELETE FROM \"Audit Log\" WHERE what = 'event 7'; \
         CREATE TABLE orders (id int, account int REFERENCES accounts(id)); \
         INSERT INTO orders VALUES (1, 3001); \
         ALTER TABLE accounts ADD COLUMN note text; \
         INSERT INTO schema_migrations VALUES (3, '0003_orders');",
    );
    let (schema_late, counts_late) = snapshot(&t);
    assert_ne!(counts_late, counts_b);

    // The dry run prints the plan and the commands, and changes nothing.
    let r = t.run(&[
        "restore",
        "--env",
        "local",
        "--label",
        "before-change",
        "--dry-run",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("restore plan for `local`"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains(&object), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("writes made to station since then are NOT in it"),
        "{}",
        r.stdout
    );
    // Streamed from the bucket into one transaction committed by the script.
    assert!(r.stdout.contains("rclone cat"), "{}", r.stdout);
    assert!(r.stdout.contains("COMMIT;"), "{}", r.stdout);
    assert_eq!(snapshot(&t), (schema_late.clone(), counts_late.clone()));

    let r = t.run(&[
        "restore",
        "--env",
        "local",
        "--label",
        "before-change",
        "--yes",
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["outcome"], "ok");
    assert_eq!(report["object"], object.as_str());
    let kept = report["kept_database"].as_str().unwrap().to_string();
    assert!(kept.starts_with("station_before_restore_"), "{kept}");

    // The live database is the backup's, exactly; the kept one holds the later writes.
    assert_eq!(schema(&t, "station"), schema_b);
    assert_eq!(counts(&t, "station"), counts_b);
    assert_eq!(schema(&t, &kept), schema_late);
    assert_eq!(counts(&t, &kept), counts_late);
    assert!(scratch_dbs(&t).is_empty());
    assert_eq!(conn(&t, "station"), "true -1");

    // Each step is in the audit log (with a manifest the object streams into the replay: one
    // step, its sha256 and size checked before the commit).
    let s: Vec<String> = steps(&t.audit())
        .into_iter()
        .filter(|s| s.starts_with("restore:"))
        .collect();
    assert_eq!(
        s,
        [
            "restore:plan ok",
            "restore:lock ok",
            "restore:download+restore ok",
            "restore:verify ok",
            "restore:swap ok",
            "restore:start ok",
            "restore:health ok",
            "restore:pipeline ok"
        ]
    );
    assert!(!t.state_dir.join("deploy.lock").exists());

    // --kept lists it; --drop-kept takes only names of that shape.
    let r = t.run(&["restore", "--env", "local", "--kept", "--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let list: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(list[0]["database"], kept.as_str());
    assert!(list[0]["size_bytes"].as_u64().unwrap() > 0);
    for bad in ["station", "postgres", "station_restore_2026120_090000"] {
        let r = t.run(&["restore", "--env", "local", "--drop-kept", bad]);
        assert_eq!(r.code, 2, "{bad}: {}", r.all());
    }
    // The right shape but no such database: the step fails and says where to look.
    let r = t.run(&[
        "restore",
        "--env",
        "local",
        "--drop-kept",
        "station_restore_20261201_090000",
    ]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("--kept"), "{}", r.stderr);
    assert_eq!(schema(&t, "station"), schema_b);
    // --dry-run says what it would drop and drops nothing; off a TTY without --yes: exit 2.
    let r = t.run(&[
        "restore",
        "--env",
        "local",
        "--drop-kept",
        &kept,
        "--dry-run",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains(&format!("would drop {kept}")),
        "{}",
        r.stdout
    );
    assert_eq!(kept_dbs(&t), vec![kept.clone()]);
    let r = t.run(&["restore", "--env", "local", "--drop-kept", &kept]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("pass --yes"), "{}", r.stderr);
    assert_eq!(kept_dbs(&t), vec![kept.clone()]);
    assert!(!steps(&t.audit())
        .iter()
        .any(|s| s.starts_with("restore:drop-kept")));
    // While a deploy holds the lock: refused, nothing dropped.
    // (a live deploy's lock file: this test process is its "deploy", alive, on this host).
    let lock = lock_file_text(std::process::id(), "abc1234", "test-token");
    std::fs::write(t.state_dir.join("deploy.lock"), lock).unwrap();
    let r = t.run(&["restore", "--env", "local", "--drop-kept", &kept, "--yes"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert_eq!(kept_dbs(&t), vec![kept.clone()]);
    std::fs::remove_file(t.state_dir.join("deploy.lock")).unwrap();
    let r = t.run(&["restore", "--env", "local", "--drop-kept", &kept, "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(kept_dbs(&t).is_empty());
    assert!(!t.state_dir.join("deploy.lock").exists());
    assert_eq!(
        steps(&t.audit()).last().map(String::as_str),
        Some("restore:drop-kept ok")
    );
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// What a database has of its own, beyond its objects: encoding and locale, connection limit, ACL
/// item by item, comment, settings of the database and of roles in it.
fn db_props(t: &TestEnv, db: &str) -> String {
    sql(
        t,
        "postgres",
        &format!(
            "SELECT pg_encoding_to_char(encoding) || ' ' || datcollate || ' ' || datctype || \
             ' ts=' || (SELECT spcname FROM pg_tablespace WHERE oid = dattablespace) || \
             ' limit=' || datconnlimit || ' acl=' || coalesce((SELECT string_agg(\
             coalesce(nullif(a.grantee, 0)::regrole::text, 'PUBLIC') || ':' || a.privilege_type || \
             ':' || a.grantor::regrole::text || ':' || a.is_grantable, ',' ORDER BY 1) \
             FROM aclexplode(d.datacl) a), 'default') || ' comment=' || \
             coalesce(shobj_description(d.oid, 'pg_database'), '-') || ' settings=' || \
             coalesce((SELECT string_agg(coalesce(nullif(s.setrole, 0)::regrole::text, '*') || \
             ':' || array_to_string(s.setconfig, ';'), ' ' ORDER BY 1) FROM pg_db_role_setting s \
             WHERE s.setdatabase = d.oid), '-') FROM pg_database d WHERE datname = '{db}'"
        ),
    )
}

#[test]
fn the_live_databases_own_properties_survive_the_restore_and_the_kept_one_keeps_its_own() {
    // Regression: the scratch database was made from template0 with the cluster's defaults and
    // swapped in, so the live database's ACL (PUBLIC could connect again), settings, role
    // settings in it, comment, encoding and locale were lost; only the kept one had them.
    let t = TestEnv::local(0o711);
    let r = t.run(&["local", "up"]);
    assert_eq!(r.code, 0, "{}", r.all());
    // A tablespace of its own (a directory the server's user owns: `postgres` when we are root).
    let ts = t.state_dir.join("fast");
    std::fs::create_dir(&ts).unwrap();
    if nix_is_root() {
        let o = Command::new("chown")
            .args(["postgres:postgres", ts.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    sql(
        &t,
        "postgres",
        &format!("CREATE TABLESPACE fast LOCATION '{}'", ts.display()),
    );
    sql(&t, "postgres", "DROP DATABASE station");
    sql(
        &t,
        "postgres",
        "CREATE DATABASE station OWNER station ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' \
         TEMPLATE template0 TABLESPACE fast",
    );
    for q in [
        "CREATE ROLE readonly LOGIN",
        "CREATE ROLE outsider LOGIN",
        "REVOKE CONNECT, TEMPORARY ON DATABASE station FROM PUBLIC",
        "GRANT CONNECT ON DATABASE station TO readonly",
        "ALTER DATABASE station SET statement_timeout = '5s'",
        "ALTER DATABASE station SET search_path = \"$user\", public, 'We ird'",
        "ALTER ROLE readonly IN DATABASE station SET work_mem = '8MB'",
        "COMMENT ON DATABASE station IS 'the station''s data, a \\ backslash | and a bar'",
        "ALTER DATABASE station CONNECTION LIMIT 50",
    ] {
        sql(&t, "postgres", q);
    }
    sql(
        &t,
        "station",
        "CREATE TABLE accounts (id int PRIMARY KEY, email text NOT NULL); \
         INSERT INTO accounts SELECT g, 'caf\u{e9}' || g FROM generate_series(1, 300) g; \
         CREATE TABLE schema_migrations (version int PRIMARY KEY, name text NOT NULL); \
         INSERT INTO schema_migrations VALUES (1, '0001_init');",
    );
    let before = db_props(&t, "station");
    assert!(
        before.starts_with("LATIN1 C C ts=fast limit=50 acl=")
            && before.contains("readonly:CONNECT")
            && !before.contains("PUBLIC")
            && before.contains("statement_timeout=5s")
            && before.contains("readonly:work_mem=8MB"),
        "{before}"
    );
    let object = backup(&t, "props");
    let counts_b = counts(&t, "station");
    sql(&t, "station", "INSERT INTO accounts VALUES (301, 'late')");

    // The dry run lists what the scratch database gets.
    let r = t.run(&["restore", "--env", "local", "--label", "props", "--dry-run"]);
    assert_eq!(r.code, 0, "{}", r.all());
    for want in [
        "ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' LOCALE_PROVIDER libc TABLESPACE",
        "tablespace fast",
        "REVOKE ALL ON DATABASE",
        "GRANT CONNECT ON DATABASE",
        "statement_timeout",
        "IN DATABASE",
        "COMMENT ON DATABASE",
        "CONNECTION LIMIT 50",
        "  space     ",
        "needed for the scratch database and the replay's WAL",
    ] {
        assert!(r.stdout.contains(want), "{want}: {}", r.stdout);
    }
    assert_eq!(db_props(&t, "station"), before);

    let r = t.run(&[
        "restore", "--env", "local", "--label", "props", "--yes", "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["object"], object.as_str());
    let kept = report["kept_database"].as_str().unwrap().to_string();
    // The restored database is live with the live database's properties; the kept one has its own.
    assert_eq!(counts(&t, "station"), counts_b);
    assert_eq!(db_props(&t, "station"), before);
    assert_eq!(db_props(&t, &kept), before);
    assert_eq!(
        sql(
            &t,
            "postgres",
            "SELECT has_database_privilege('outsider', 'station', 'CONNECT') || ' ' || \
             has_database_privilege('readonly', 'station', 'CONNECT')"
        ),
        "false true"
    );
    assert_eq!(sql(&t, "station", "SHOW statement_timeout"), "5s");
    assert!(steps(&t.audit()).contains(&"restore:properties ok".to_string()));
    assert!(scratch_dbs(&t).is_empty());
}

/// `restore ... --json` as `r` ran: stdout is one JSON document (nothing before or after it) with
/// `outcome` failed at `step`, the exit code `code` (also the process's) and a message saying
/// `says`.
fn one_failure_document(
    r: &deploy_support::Run,
    code: i32,
    step: &str,
    says: &str,
) -> serde_json::Value {
    assert_eq!(r.code, code, "{step}: {}", r.all());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| {
        panic!(
            "{step}: stdout is not one JSON document ({e}): {:?}",
            r.stdout
        )
    });
    assert_eq!(v["outcome"], "failed", "{v}");
    assert_eq!(v["failed_step"], step, "{v}");
    assert_eq!(v["exit_code"], code, "{v}");
    assert_eq!(v["env"], "local", "{v}");
    assert!(
        v["message"].as_str().is_some_and(|m| m.contains(says)),
        "{step}: {v}"
    );
    v
}

#[test]
fn with_json_every_refusal_prints_one_json_document_saying_why() {
    // Regression: a restore refused before its report existed (no TTY without --yes, the lock, the
    // plan, the audit log) printed nothing on stdout with --json.
    let (t, object) = backed_up("json");
    let before = snapshot(&t);
    let restore = |extra: &[&str]| {
        let mut a = vec!["restore", "--env", "local", "--json"];
        a.extend_from_slice(extra);
        t.run(&a)
    };
    // No TTY and no --yes: exit 2; the report of the plan, refused at `confirm`.
    let v = one_failure_document(&restore(&["--label", "json"]), 2, "confirm", "--yes");
    assert_eq!(v["object"], object.as_str(), "{v}");
    assert_eq!(v["steps"][0]["step"], "confirm", "{v}");
    assert_eq!(v["steps"][0]["status"], "failed", "{v}");
    // A deploy holding the lock: exit 1, refused at `lock`.
    {
        let _guard = hold_deploy_lock(&t);
        let r = restore(&["--label", "json", "--yes"]);
        one_failure_document(&r, 1, "lock", "another deploy holds the lock");
    }
    // The audit log cannot be written (a directory in its place; none was written yet): exit 1,
    // refused at `audit`.
    let audit = t.state_dir.join("deploy-audit.jsonl");
    assert!(!audit.exists());
    std::fs::create_dir(&audit).unwrap();
    let r = restore(&["--label", "json", "--yes"]);
    one_failure_document(&r, 1, "audit", "the audit log cannot be written");
    std::fs::remove_dir(&audit).unwrap();
    // No plan: a label with no backup (exit 2), or a bad one: the short document.
    let v = one_failure_document(
        &restore(&["--label", "nope", "--yes"]),
        2,
        "plan",
        "no backup with label nope",
    );
    assert!(v.get("steps").is_none(), "{v}");
    one_failure_document(
        &restore(&["--label", "no/such", "--yes"]),
        2,
        "input",
        "invalid backup label",
    );
    let v = one_failure_document(
        &restore(&["--drop-kept", "station", "--yes"]),
        2,
        "drop-kept",
        "--drop-kept",
    );
    assert!(v.get("dropped").is_none(), "{v}");
    assert_eq!(snapshot(&t), before);
    assert!(scratch_dbs(&t).is_empty());
    assert!(kept_dbs(&t).is_empty());
    assert!(!t.state_dir.join("deploy.lock").exists());
}

#[test]
fn a_restore_that_does_not_fit_beside_the_live_database_is_refused_before_anything_is_made() {
    // Regression: nothing compared the free space with what the restore writes beside the live
    // database; a full disk during the replay fills the WAL too and PostgreSQL stops every session.
    let t = TestEnv::local(0o711);
    up_with_tables(&t);
    backup(&t, "space");
    let before = snapshot(&t);
    // A `df` that reports a nearly full filesystem (1 MiB free), first on the PATH of the
    // restore (which runs df where the cluster runs: this machine).
    let bin = t.state_dir.join("fake-bin");
    std::fs::create_dir(&bin).unwrap();
    let with_df = |body: &str| {
        let df = bin.join("df");
        std::fs::write(&df, format!("#!/bin/sh\n{body}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&df, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let restore = |extra: &[&str]| {
        let mut a = vec!["restore", "--env", "local", "--label", "space", "--yes"];
        a.extend(extra);
        let mut c = t.command(&a);
        c.env("PATH", &path);
        run_cmd(c)
    };
    with_df("echo 'Filesystem 1024-blocks Used Available Capacity Mounted on'; echo '/dev/full 1000000 998976 1024 100% /full'");
    for extra in [&[][..], &["--dry-run"][..]] {
        let r = restore(extra);
        assert_eq!(r.code, 1, "{extra:?}: {}", r.all());
        assert!(
            r.stderr.contains("not enough free space")
                && r.stderr.contains("1.0 MiB free on /dev/full /full")
                && r.stderr.contains("--ignore-space")
                && r.stderr.contains("nothing was changed"),
            "{}",
            r.stderr
        );
        assert!(r.stdout.contains("space     NOT ENOUGH"), "{}", r.stdout);
    }
    // With --json: one document, refused at `space`.
    let r = restore(&["--json"]);
    assert_eq!(r.code, 1, "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("one JSON document");
    assert_eq!(
        (v["outcome"].as_str(), v["failed_step"].as_str()),
        (Some("failed"), Some("space")),
        "{v}"
    );
    assert_eq!(v["exit_code"], 1, "{v}");
    assert_eq!(snapshot(&t), before);
    assert!(scratch_dbs(&t).is_empty());
    assert!(kept_dbs(&t).is_empty());
    assert!(!steps(&t.audit()).iter().any(|s| s.starts_with("restore:")));
    // df that cannot tell: a warning, and the restore goes on; the dry run's report has it too.
    with_df("exit 1");
    let r = restore(&["--dry-run", "--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("one JSON document");
    assert!(
        v["warnings"].to_string().contains("could not be checked"),
        "{v}"
    );
    // df that can measure the data directory but not its pg_wal (a 0700 data directory): named.
    with_df("case \"$3\" in */pg_wal) exit 1;; esac; echo 'Filesystem 1024-blocks Used Available Capacity Mounted on'; echo '/dev/big 100000000 1000 99999000 1% /big'");
    let r = restore(&["--dry-run", "--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("one JSON document");
    assert!(
        v["warnings"]
            .to_string()
            .contains("could not measure the WAL directory"),
        "{v}"
    );
    assert!(v["warnings"].to_string().contains("/pg_wal"), "{v}");
    // GNU df's negative "Available" (usage beyond the reserve): short, refused.
    with_df("echo 'Filesystem 1024-blocks Used Available Capacity Mounted on'; echo '/dev/over 1000000 1010000 -10000 101% /over'");
    let r = restore(&[]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("not enough free space") && r.stderr.contains("/dev/over /over"),
        "{}",
        r.stderr
    );
    with_df("exit 1");
    let r = restore(&["--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stderr
            .contains("free space beside the live database could not be checked"),
        "{}",
        r.stderr
    );
    // --ignore-space: the warning says so, and the restore goes on.
    with_df("echo 'Filesystem 1024-blocks Used Available Capacity Mounted on'; echo '/dev/full 1000000 998976 1024 100% /full'");
    let r = restore(&["--ignore-space", "--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(
        report["warnings"]
            .to_string()
            .contains("going on (--ignore-space)"),
        "{report}"
    );
    assert_eq!(kept_dbs(&t).len(), 2);
}

#[test]
fn a_live_database_found_blocked_is_opened_by_the_restore() {
    // Regression: the swap re-applied the live database's limit of 0 (and ignored
    // datallowconn), so a database left blocked stayed blocked after the next restore.
    let (t, _) = backed_up("blocked");
    sql(&t, "postgres", "ALTER DATABASE station CONNECTION LIMIT 0");
    let conn = |db: &str| {
        sql(
            &t,
            "postgres",
            &format!("SELECT datallowconn || '|' || datconnlimit FROM pg_database WHERE datname = '{db}'"),
        )
    };
    assert_eq!(conn("station"), "true|0");
    let r = t.run(&[
        "restore", "--env", "local", "--label", "blocked", "--yes", "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stderr
            .contains("found blocked (datallowconn=true, datconnlimit=0)"),
        "{}",
        r.stderr
    );
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let kept = report["kept_database"].as_str().unwrap().to_string();
    assert_eq!(conn("station"), "true|-1");
    assert_eq!(conn(&kept), "true|-1");
    // The station user (no superuser) connects to the new live database.
    assert_eq!(sql(&t, "station", "SELECT 1"), "1");
    // The swap's audit record keeps the original values.
    let audit = t.audit();
    let swap = audit.iter().rfind(|r| r["step"] == "restore:swap").unwrap();
    assert_eq!(swap["status"], "ok");
    assert!(
        swap["message"]
            .as_str()
            .unwrap()
            .contains("datallowconn=true, datconnlimit=0"),
        "{swap}"
    );
}

#[test]
fn faults_before_the_swap_leave_the_live_database_as_it_was() {
    let (t, object) = backed_up("good");
    sql(
        &t,
        "station",
        "CREATE ROLE ghost; CREATE TABLE ghost_notes (x int); GRANT SELECT ON ghost_notes TO ghost; \
         INSERT INTO ghost_notes VALUES (1);",
    );
    let ghost = backup(&t, "ghost");
    sql(
        &t,
        "station",
        "REASSIGN OWNED BY ghost TO station; DROP OWNED BY ghost; DROP ROLE ghost; \
         INSERT INTO accounts VALUES (99999, 'after the backups');",
    );
    let before = snapshot(&t);
    let unchanged = |what: &str| {
        assert_eq!(snapshot(&t), before, "{what}: the live database changed");
        assert!(
            scratch_dbs(&t).is_empty(),
            "{what}: scratch left: {:?}",
            scratch_dbs(&t)
        );
        assert!(kept_dbs(&t).is_empty(), "{what}: a swap happened");
    };
    let restore = |extra: &[&str]| {
        let mut a = vec!["restore", "--env", "local"];
        a.extend_from_slice(extra);
        t.run(&a)
    };

    // No TTY and no --yes: exit 2, nothing changed (the plan was printed first).
    let r = restore(&["--label", "good"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stdout.contains("restore plan"), "{}", r.stdout);
    assert!(r.stderr.contains("--yes"), "{}", r.stderr);
    unchanged("no tty");

    // A deploy holding the lock: refused.
    {
        let _guard = hold_deploy_lock(&t);
        let logged = t.audit();
        let r = restore(&["--label", "good", "--yes"]);
        assert_eq!(r.code, 1, "{}", r.all());
        assert!(
            r.stderr.contains("another deploy holds the lock"),
            "{}",
            r.stderr
        );
        unchanged("lock held");
        // Nothing is written in the middle of the deploy holding it (rollback reads a deploy's
        // records as one run).
        assert_eq!(
            t.audit(),
            logged,
            "a restore the lock refused wrote records"
        );
    }

    // A corrupted object (same size, one byte changed): the hash check stops it before anything
    // is restored.
    let file = object_file(&t, &object);
    let original = std::fs::read(&file).unwrap();
    let mut bad = original.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x55;
    std::fs::write(&file, &bad).unwrap();
    let r = restore(&["--label", "good", "--yes"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("sha256") && r.stderr.contains("corrupt"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("nothing was restored"), "{}", r.stderr);
    unchanged("corrupted object");
    std::fs::write(&file, &original).unwrap();

    // The manifest missing, with --strict: refused.
    let manifest = PathBuf::from(format!("{}.json", file.display()));
    let aside = manifest.with_extension("aside");
    std::fs::rename(&manifest, &aside).unwrap();
    let r = restore(&["--label", "good", "--yes", "--strict"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("has no manifest"), "{}", r.stderr);
    unchanged("missing manifest, --strict");
    std::fs::rename(&aside, &manifest).unwrap();

    // An SQL error during the restore (the dump grants to a role that no longer exists).
    let r = restore(&[ghost.as_str(), "--yes"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("role \"ghost\" does not exist"),
        "{}",
        r.stderr
    );
    unchanged("sql error");

    // A session that cannot be ended (its backend is stopped with SIGSTOP: it cannot act on
    // pg_terminate_backend): the swap is refused after --swap-wait, connections are allowed again.
    let (mut stuck, pid) = stuck_session(&t, "xtask-test-stuck", 120);
    // A stopped backend also holds up DROP DATABASE (it waits for every backend to absorb a
    // barrier): the backend is continued once the swap has been refused, so that the guard's drop
    // of the scratch database can finish.
    let mut child = t
        .command(&[
            "restore",
            "--env",
            "local",
            "--label",
            "good",
            "--yes",
            "--swap-wait",
            "2",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut seen = String::new();
    for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("swap failed") {
            break;
        }
    }
    let _ = Command::new("kill").args(["-CONT", &pid]).status();
    let out = child.wait_with_output().unwrap();
    let _ = stuck.kill();
    let _ = stuck.wait();
    let r = deploy_support::Run {
        code: out.status.code().unwrap_or(-1),
        stdout: seen + &String::from_utf8_lossy(&out.stdout),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("swap refused"), "{}", r.stderr);
    assert!(r.stderr.contains("did not end within 2s"), "{}", r.stderr);
    assert!(r.stderr.contains(&pid), "{}", r.stderr);
    assert_eq!(conn(&t, "station"), "true -1");
    unchanged("session cannot be ended");
    assert!(!t.state_dir.join("deploy.lock").exists());

    // Without --strict, a backup without a manifest restores, with a warning.
    std::fs::rename(&manifest, &aside).unwrap();
    let r = restore(&[object.as_str(), "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stderr.contains("has no manifest"), "{}", r.stderr);
    assert_ne!(snapshot(&t), before);
    assert!(scratch_dbs(&t).is_empty());
}

#[test]
fn ctrl_c_during_the_restore_leaves_the_live_database_and_no_scratch_database() {
    let mut t = TestEnv::local(0o711);
    let tmp = t.dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    t.extra_env
        .push(("TMPDIR".into(), tmp.display().to_string()));
    up_with_tables(&t);
    // Big enough that the replay takes a while.
    sql(
        &t,
        "station",
        "CREATE TABLE big (id int PRIMARY KEY, v text); \
         INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 1500000) g;",
    );
    backup(&t, "big");
    sql(&t, "station", "DELETE FROM big WHERE id % 2 = 0");
    let before = snapshot(&t);

    // SIGINT (a terminal's Ctrl-C) and SIGTERM (a cancelled CI job) alike: the handler cannot
    // tell them apart, so the message names both and does not call a SIGTERM "Ctrl-C".
    for signal in ["-INT", "-TERM"] {
        let mut child = t
            .command(&["restore", "--env", "local", "--label", "big", "--yes"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until the dump is being replayed into the scratch database, then signal xtask alone.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let n = sql(
                &t,
                "postgres",
                "SELECT count(*) FROM pg_stat_activity WHERE datname LIKE 'station\\_restore\\_%' \
                 AND state = 'active' AND query LIKE 'COPY%'",
            );
            if n != "0" {
                break;
            }
            assert!(
                child.try_wait().unwrap().is_none(),
                "restore ended before the replay was seen"
            );
            assert!(Instant::now() < deadline, "the replay never started");
            std::thread::sleep(Duration::from_millis(30));
        }
        assert!(Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap()
            .success());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("interrupted (Ctrl-C, SIGTERM or SIGHUP) before the swap"),
            "{signal}: {err}"
        );
        assert_eq!(snapshot(&t), before);
        assert!(scratch_dbs(&t).is_empty(), "{:?}", scratch_dbs(&t));
        assert!(kept_dbs(&t).is_empty());
        // The downloaded dump is gone too, and the lock released.
        let left: Vec<_> = std::fs::read_dir(&tmp)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "{left:?}");
        assert!(!t.state_dir.join("deploy.lock").exists());
        let audit = steps(&t.audit());
        assert_eq!(
            audit.last().unwrap(),
            "restore:pipeline interrupted",
            "{audit:?}"
        );
    }
}

/// The replay builds the dump's indexes with a maintenance_work_mem of at least 256 MB (the
/// server's default, 64 MB, sorts a few million rows' keys on disk): a dump that records the
/// setting it replays under says so; the session's setting, not the server's, which stays.
#[test]
fn the_replay_sorts_its_index_builds_in_memory() {
    let (t, file, text) = with_good_dump();
    let dump = with_statements(
        &text,
        "CREATE TABLE public.replayed_under AS SELECT \
         pg_catalog.pg_size_bytes(pg_catalog.current_setting('maintenance_work_mem')) AS bytes;",
    );
    let o = plant_beside(&file, 1, &dump);
    let r = t.run(&["restore", "--env", "local", &o, "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let bytes: u64 = sql(&t, "station", "SELECT bytes FROM replayed_under")
        .parse()
        .unwrap();
    assert!(
        bytes >= 256 << 20,
        "replayed with maintenance_work_mem {bytes} bytes"
    );
    assert_eq!(
        sql(&t, "station", "SHOW maintenance_work_mem"),
        "64MB",
        "the server's own setting changed"
    );
}

/// A dump planted in the bucket (here without a manifest, so nothing but the replay's own guard
/// stands in the way) cannot run psql meta-commands: not with `\!`, not after `\unrestrict` with
/// the dump's own key, not with `\connect`. A dump without pg_dump's `\restrict` lines (an older
/// pg_dump) still restores.
#[test]
fn a_dump_cannot_run_psql_meta_commands() {
    let (t, file, text) = with_good_dump();
    let key_line = text
        .lines()
        .find(|l| l.starts_with("\\restrict "))
        .expect("pg_dump 15.14+ writes \\restrict")
        .to_string();
    let key = key_line.trim_start_matches("\\restrict ").to_string();
    let before = snapshot(&t);
    let mark = t.dir.path().join("pwned");
    let shell = format!("\\! touch {}\n", mark.display());
    let before_first_set = |lines: &str| {
        text.replacen(
            "SET statement_timeout",
            &format!("{lines}SET statement_timeout"),
            1,
        )
    };
    // Each planted object gets a name of the backup shape (a later second each) and no manifest.
    let cases = [
        ("a shell escape", before_first_set(&shell)),
        (
            "a shell escape after \\unrestrict with the dump's own key",
            before_first_set(&format!("\\unrestrict {key}\n{shell}")),
        ),
        (
            "a meta-command in the middle of a line",
            text.replacen(
                "SET statement_timeout = 0;",
                &format!("SET statement_timeout = 0; \\! touch {}", mark.display()),
                1,
            ),
        ),
        ("\\connect", before_first_set("\\connect postgres\n")),
    ];
    for (i, (what, sql)) in cases.iter().enumerate() {
        let (o, r) = restore_planted(&t, &file, i as u32 + 1, sql, what);
        assert!(!mark.exists(), "{what}: the dump ran a shell command");
        assert!(
            r.stderr.contains("nothing was restored"),
            "{what}: {}",
            r.stderr
        );
        assert_eq!(snapshot(&t), before, "{what}: the live database changed");
        assert!(scratch_dbs(&t).is_empty(), "{what}: {:?}", scratch_dbs(&t));
        // `backup drill` replays the same way.
        let r = t.run(&["backup", "drill", "--env", "local", &o]);
        assert_eq!(r.code, 1, "drill, {what}: {}", r.all());
        assert!(
            !mark.exists(),
            "drill, {what}: the dump ran a shell command"
        );
        assert!(
            databases(&t, "xtask\\_drill\\_%").is_empty(),
            "drill, {what}: scratch left"
        );
    }
    // Without pg_dump's \\restrict and \\unrestrict lines: restored (with the no-manifest warning).
    let old_style: String = text
        .lines()
        .filter(|l| !l.starts_with("\\restrict ") && !l.starts_with("\\unrestrict "))
        .map(|l| format!("{l}\n"))
        .collect();
    let o = plant_beside(&file, 9, &old_style);
    let r = t.run(&["restore", "--env", "local", &o, "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(!mark.exists());
}

/// The dump replays (and is counted) as a role that owns only the scratch database: a planted
/// dump cannot run programs, alter the live database or create roles, even when it ends the
/// restore's transaction itself. A dump with owners (`pg_dump` without `--no-owner`) is refused
/// with the way on (`--trust-dump`), which restores it.
#[test]
fn a_dump_runs_as_a_role_that_owns_only_the_scratch_database() {
    let (t, file, text) = with_good_dump();
    assert!(
        !text.contains("OWNER TO"),
        "backups are taken with --no-owner"
    );
    let cluster = |t: &TestEnv| {
        let roles = sql(
            t,
            "postgres",
            "SELECT string_agg(rolname || ':' || rolsuper, ',' ORDER BY rolname) FROM pg_roles \
             WHERE rolname NOT LIKE 'pg\\_%'",
        );
        let live = sql(
            t,
            "postgres",
            "SELECT datallowconn || ':' || datconnlimit || ':' || pg_get_userbyid(datdba) FROM \
             pg_database WHERE datname = 'station'",
        );
        (roles, live)
    };
    let before = (snapshot(&t), cluster(&t));
    // Where the server's own user (postgres) could write: a superuser's `TO PROGRAM` would.
    let mark = std::env::temp_dir().join(format!("xtask-pwned-{}", std::process::id()));
    let _ = std::fs::remove_file(&mark);
    let append = |extra: &str| with_statements(&text, extra);
    let cases = [
        (
            "a program run by the server",
            append(&format!(
                "COPY (SELECT 1) TO PROGRAM 'touch {}';",
                mark.display()
            )),
        ),
        (
            "the live database altered",
            append("ALTER DATABASE station ALLOW_CONNECTIONS false;"),
        ),
        (
            "a superuser created",
            append("CREATE ROLE evil SUPERUSER LOGIN;"),
        ),
        (
            "the restore's transaction ended first",
            append("COMMIT;\nALTER DATABASE station CONNECTION LIMIT 0;\nCREATE ROLE evil;"),
        ),
    ];
    for (i, (what, dump)) in cases.iter().enumerate() {
        let (_, r) = restore_planted(&t, &file, i as u32 + 1, dump, what);
        assert!(!mark.exists(), "{what}: the dump ran a program");
        assert!(r.stderr.contains("--trust-dump"), "{what}: {}", r.stderr);
        assert_eq!(
            (snapshot(&t), cluster(&t)),
            before,
            "{what}: the live database or the roles changed"
        );
        assert!(scratch_dbs(&t).is_empty(), "{what}: {:?}", scratch_dbs(&t));
        assert_eq!(
            sql(
                &t,
                "postgres",
                "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'station\\_restore\\_%'"
            )
            .trim(),
            "0",
            "{what}: the replay role was left"
        );
    }

    // A dump with its objects' owners (as backups taken before --no-owner are): refused, saying
    // why and how to go on; with --trust-dump it is restored, owners and all.
    let o = pg(&t, "pg_dump", "station").output().unwrap();
    assert!(o.status.success());
    let owned = String::from_utf8(o.stdout).unwrap();
    assert!(owned.contains("OWNER TO station"), "{owned}");
    let o = plant_beside(&file, 9, &owned);
    let r = t.run(&["restore", "--env", "local", &o, "--yes"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("OWNER TO") && r.stderr.contains("--trust-dump"),
        "{}",
        r.stderr
    );
    assert_eq!((snapshot(&t), cluster(&t)), before);
    let r = t.run(&["restore", "--env", "local", &o, "--yes", "--trust-dump"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("--trust-dump"), "{}", r.stdout);
    assert_eq!(snapshot(&t), before.0);

    // A restore of a backup of xtask's own: the restored objects and the database belong to the
    // owner again, and the replay role is gone.
    sql(
        &t,
        "station",
        "INSERT INTO accounts VALUES (77777, 'later')",
    );
    let r = t.run(&["restore", "--env", "local", "--label", "good", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("which owns only that database"),
        "{}",
        r.stdout
    );
    assert_eq!(snapshot(&t), before.0);
    assert_eq!(cluster(&t), before.1);
    assert_eq!(
        sql(
            &t,
            "station",
            "SELECT string_agg(DISTINCT pg_get_userbyid(relowner), ',') FROM pg_class c JOIN \
             pg_namespace n ON n.oid = c.relnamespace WHERE nspname = 'public'"
        )
        .trim(),
        "station"
    );
}

/// What a planted dump sets on the database it is restored into (which the swap would carry into
/// the live one) refuses the restore; a password it gives its role is expired; a table with FORCE
/// ROW LEVEL SECURITY restores (the role bypasses RLS); default privileges need --trust-dump, said
/// so; a replay role left without its database is named in the plan and dropped by --drop-kept.
#[test]
fn what_a_dump_sets_on_its_own_database_is_refused_and_its_role_cannot_log_in() {
    let (t, file, text) = with_good_dump();
    let settings = |t: &TestEnv| {
        sql(
            t,
            "postgres",
            "SELECT coalesce(string_agg(array_to_string(setconfig, ','), ';'), '') || '|' || \
             coalesce((SELECT datacl::text || datistemplate FROM pg_database WHERE datname = \
             'station'), '') FROM pg_db_role_setting WHERE setdatabase = (SELECT oid FROM \
             pg_database WHERE datname = 'station')",
        )
    };
    let before = (snapshot(&t), settings(&t));
    let append = |extra: &str| with_statements(&text, extra);
    let on_db = |stmt: &str| {
        append(&format!(
            "DO $$BEGIN EXECUTE format('{stmt}', current_database()); END$$;"
        ))
    };
    let cases = [
        (
            "a database setting",
            on_db("ALTER DATABASE %I SET search_path = evil, public"),
        ),
        (
            "a grant on the database",
            on_db("GRANT CREATE, TEMP ON DATABASE %I TO PUBLIC"),
        ),
        ("a template", on_db("ALTER DATABASE %I IS_TEMPLATE true")),
        ("a comment", on_db("COMMENT ON DATABASE %I IS ''x''")),
    ];
    for (i, (what, dump)) in cases.iter().enumerate() {
        let (_, r) = restore_planted(&t, &file, i as u32 + 1, dump, what);
        assert!(
            r.stderr
                .contains("the dump changed the database it was restored into"),
            "{what}: {}",
            r.stderr
        );
        assert_eq!((snapshot(&t), settings(&t)), before, "{what}");
        assert!(scratch_dbs(&t).is_empty(), "{what}: {:?}", scratch_dbs(&t));
    }

    // A function the dump defines where xtask's own superuser statements in that database would
    // resolve it (an exact-type `count(boolean)` beats pg_catalog's `count("any")`): never run.
    let mark = std::env::temp_dir().join(format!("xtask-pwned-agg-{}", std::process::id()));
    let _ = std::fs::remove_file(&mark);
    let o = plant_beside(
        &file,
        6,
        &append(&format!(
            "CREATE FUNCTION public.evil_s(int, boolean) RETURNS int LANGUAGE sql AS 'SELECT $1';\n\
             CREATE FUNCTION public.evil_f(int) RETURNS bigint LANGUAGE plpgsql AS $f$BEGIN \
             COPY (SELECT 1) TO PROGRAM 'touch {}'; RETURN 0; END$f$;\n\
             CREATE AGGREGATE public.count(boolean) (SFUNC = public.evil_s, STYPE = int, \
             INITCOND = '0', FINALFUNC = public.evil_f);",
            mark.display()
        )),
    );
    let r = t.run(&["restore", "--env", "local", &o, "--yes"]);
    assert!(
        !mark.exists(),
        "the dump's aggregate ran as the superuser: {}",
        r.all()
    );
    assert_eq!(r.code, 0, "{}", r.all());

    // A password the dump gives its role (committed: the dump ends the restore's transaction
    // first) does not let anyone log in over TCP meanwhile.
    let o = plant_beside(
        &file,
        7,
        &append("COMMIT; ALTER ROLE CURRENT_USER PASSWORD 'pw-of-the-dump'; SELECT pg_sleep(4);"),
    );
    let mut c = t.command(&["restore", "--env", "local", &o, "--yes"]);
    let child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let role = poll_sql(
        &t,
        "SELECT usename FROM pg_stat_activity WHERE usename LIKE 'station\\_restore\\_%' \
         AND query LIKE '%pg_sleep%'",
        Duration::from_secs(30),
        "the planted sleep never ran",
    );
    let login = pg(&t, "psql", "postgres")
        .env("PGUSER", &role)
        .env("PGPASSWORD", "pw-of-the-dump")
        .args(["-X", "-c", "SELECT 1"])
        .output()
        .unwrap();
    assert!(
        !login.status.success(),
        "the dump's role logged in over TCP"
    );
    let r = deploy_support::Run::from(child.wait_with_output().unwrap());
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(
        sql(
            &t,
            "postgres",
            &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{role}'")
        ),
        "0"
    );

    // FORCE ROW LEVEL SECURITY with a policy that hides every row: restored with all its rows.
    sql(
        &t,
        "station",
        "CREATE TABLE hidden (x int); INSERT INTO hidden SELECT generate_series(1, 30); \
         ALTER TABLE hidden ENABLE ROW LEVEL SECURITY; ALTER TABLE hidden FORCE ROW LEVEL SECURITY; \
         CREATE POLICY none ON hidden USING (false)",
    );
    backup(&t, "rls");
    let r = t.run(&["restore", "--env", "local", "--label", "rls", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(
        sql(
            &t,
            "station",
            "SET row_security = off; SELECT count(*) FROM hidden"
        ),
        "30"
    );

    // Default privileges for the owner (pg_dump --no-owner still writes FOR ROLE): refused, saying
    // so and how to go on; --trust-dump restores them.
    sql(
        &t,
        "station",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO PUBLIC",
    );
    backup(&t, "defaults");
    let r = t.run(&["restore", "--env", "local", "--label", "defaults", "--yes"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("ALTER DEFAULT PRIVILEGES") && r.stderr.contains("--trust-dump"),
        "{}",
        r.stderr
    );
    let r = t.run(&[
        "restore",
        "--env",
        "local",
        "--label",
        "defaults",
        "--yes",
        "--trust-dump",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());

    // A replay role left without its database: named in the plan, dropped by --drop-kept.
    let left = "station_restore_20200101_000000";
    sql(&t, "postgres", &format!("CREATE ROLE {left} LOGIN"));
    let r = t.run(&["restore", "--env", "local", "--label", "good", "--dry-run"]);
    assert!(
        r.stdout.contains(&format!("WARNING   {left}")),
        "{}",
        r.stdout
    );
    let r = t.run(&["restore", "--env", "local", "--drop-kept", left, "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(
        sql(
            &t,
            "postgres",
            &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{left}'")
        ),
        "0"
    );
}

#[test]
fn the_restore_scripts_are_shellcheck_clean() {
    let dir = deploy_support::repo().join("xtask/src/restore");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sh"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 4, "{files:?}");
    let out = Command::new("shellcheck").args(&files).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A directory with stand-ins for `psql` and `rclone`, first on the PATH that xtask gets; each
/// runs the real tool unless the `XTASK_TEST_*` variables of the run say otherwise (see the
/// scripts). Returns that PATH.
fn standins(t: &TestEnv) -> String {
    let dir = t.dir.path().join("standins");
    std::fs::create_dir_all(&dir).unwrap();
    let psql = xtask::process::which("psql").unwrap();
    let rclone = xtask::process::which("rclone").unwrap();
    // psql: for the command whose arguments hold $XTASK_TEST_MATCH, $XTASK_TEST_MODE:
    //   after       the real psql runs, then exit 255 (it did its work, the reply was lost)
    //   before      exit 255, nothing run (the link dropped before the command got through)
    //   after-dead  like after, and from then on every psql finds the server unreachable
    //   slow        a marker file, 3 s of sleep, then the real psql
    //   detached    a session locks station's pg_database row (FOR UPDATE) for 4 s, the real psql starts in the
    //               background (so it waits for that lock), and the client "drops" after 1 s
    //   scratch-session  a session (application_name xtask-test-scratch) opens on the scratch
    //               database and sleeps there for 60 s, then the real psql runs
    let script = format!(
        r#"#!/bin/sh
dead="$XTASK_TEST_DIR/dead"
if [ -e "$dead" ]; then
  echo 'psql: error: connection to server at "127.0.0.1", port 5432 failed: Connection refused' >&2
  exit 2
fi
case "$*" in
  *"${{XTASK_TEST_MATCH:-no match set}}"*)
    case "$XTASK_TEST_MODE" in
      after) '{psql}' "$@"; exit 255 ;;
      before) echo 'Connection to the server closed' >&2; exit 255 ;;
      after-dead) '{psql}' "$@"; : > "$dead"; exit 255 ;;
      slow) : > "$XTASK_TEST_DIR/in-swap"; sleep 3; exec '{psql}' "$@" ;;
      detached)
        '{psql}' -X -q -d postgres -c "BEGIN; SELECT 1 FROM pg_database WHERE datname = 'station' FOR UPDATE; SELECT pg_sleep(4); COMMIT;" >/dev/null 2>&1 &
        sleep 0.5
        '{psql}' "$@" >/dev/null 2>&1 &
        sleep 1
        echo 'Connection to the server closed' >&2; exit 255 ;;
      scratch-session)
        db=$('{psql}' -X -q -A -t -d postgres -c "SELECT datname FROM pg_database WHERE datname LIKE 'station_restore_%'")
        PGAPPNAME=xtask-test-scratch '{psql}' -X -q -d "$db" -c 'SELECT pg_sleep(60)' >/dev/null 2>&1 &
        for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
          n=$('{psql}' -X -q -A -t -d postgres -c "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'xtask-test-scratch'")
          [ "$n" = 0 ] || break
          sleep 0.2
        done
        exec '{psql}' "$@" ;;
    esac ;;
esac
exec '{psql}' "$@"
"#,
        psql = psql.display()
    );
    std::fs::write(dir.join("psql"), script).unwrap();
    // rclone: for a command whose first word is $XTASK_TEST_RCLONE_OP, $XTASK_TEST_RCLONE_MODE:
    //   dead  the remote becomes an S3 endpoint on a closed port ($XTASK_TEST_DEAD_PORT)
    //   gone  the file $XTASK_TEST_GONE (the object) is deleted first, as a prune would
    //   slow  the file $XTASK_TEST_SLOW_FILE instead, its first MiB at once, then 64 KiB every
    //         half second (a large object over a slow link); `slow-started` in $XTASK_TEST_DIR
    //         when it begins, `slow-done` when it ran to its end
    // (the op `cat-object` is a `cat` of the object, streamed into the replay; `cat` alone, of
    // anything else, e.g. the manifest).
    let script = format!(
        r#"#!/bin/sh
op=$1
if [ "$1" = cat ]; then
  for a; do last=$a; done
  case $last in *.json) ;; *) op=cat-object ;; esac
fi
if [ "$op" = "${{XTASK_TEST_RCLONE_OP:-no op set}}" ]; then
  case "$XTASK_TEST_RCLONE_MODE" in
    dead)
      unset RCLONE_CONFIG_B2_REMOTE
      export RCLONE_CONFIG_B2_TYPE=s3 RCLONE_CONFIG_B2_PROVIDER=Other \
        RCLONE_CONFIG_B2_ENDPOINT="http://127.0.0.1:$XTASK_TEST_DEAD_PORT" \
        RCLONE_CONFIG_B2_ACCESS_KEY_ID=test RCLONE_CONFIG_B2_SECRET_ACCESS_KEY=test ;;
    gone) rm -f -- "$XTASK_TEST_GONE" ;;
    slow)
      f=$XTASK_TEST_SLOW_FILE
      size=$(wc -c <"$f")
      : > "$XTASK_TEST_DIR/slow-started"
      head -c 1048576 "$f" || exit 1
      off=1048576
      while [ "$off" -lt "$size" ]; do
        tail -c +"$((off + 1))" "$f" | head -c 65536 || exit 1
        off=$((off + 65536))
        sleep 0.5
      done
      : > "$XTASK_TEST_DIR/slow-done"
      exit 0 ;;
  esac
fi
exec '{rclone}' "$@"
"#,
        rclone = rclone.display()
    );
    std::fs::write(dir.join("rclone"), script).unwrap();
    for f in ["psql", "rclone"] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    format!("{}:{}", dir.display(), std::env::var("PATH").unwrap())
}

/// `restore --env local --label LABEL --yes --json` with the stand-ins and `vars`.
fn restore_with(t: &TestEnv, path: &str, label: &str, vars: &[(&str, &str)]) -> Command {
    let mut c = t.command(&[
        "restore", "--env", "local", "--label", label, "--yes", "--json",
    ]);
    c.env("PATH", path)
        .env("XTASK_TEST_DIR", t.dir.path())
        .stdin(Stdio::null());
    for (k, v) in vars {
        c.env(k, v);
    }
    c
}

fn run_cmd(mut c: Command) -> deploy_support::Run {
    deploy_support::Run::from(c.output().unwrap())
}

/// A `local` environment with a backup `swap`, the stand-ins, and the backup's per-table counts.
struct SwapEnv {
    t: TestEnv,
    path: String,
    counts_b: String,
}

impl SwapEnv {
    fn new() -> SwapEnv {
        let (t, _) = backed_up("swap");
        let counts_b = counts(&t, "station");
        let path = standins(&t);
        SwapEnv { t, path, counts_b }
    }
    /// A row the backup does not have, in the live database: where it is tells which is live.
    fn marker(&self, n: u32) {
        sql(
            &self.t,
            "station",
            &format!("INSERT INTO accounts VALUES ({}, 'marker')", 900_000 + n),
        );
    }
    fn has_marker(&self, db: &str, n: u32) -> bool {
        sql(
            &self.t,
            db,
            &format!("SELECT count(*) FROM accounts WHERE id = {}", 900_000 + n),
        ) == "1"
    }
    fn restore(&self, matching: &str, mode: &str) -> Command {
        restore_with(
            &self.t,
            &self.path,
            "swap",
            &[("XTASK_TEST_MATCH", matching), ("XTASK_TEST_MODE", mode)],
        )
    }
    /// A marker `n` in the live database, then the restore with the renames' psql in `mode`.
    fn restore_marked(&self, n: u32, mode: &str) -> deploy_support::Run {
        self.marker(n);
        run_cmd(self.restore("RENAME TO", mode))
    }
    /// The live database is still the one with marker `n`, open, with no database kept or
    /// scratch one left.
    fn assert_nothing_renamed(&self, n: u32) {
        let t = &self.t;
        assert!(
            self.has_marker("station", n),
            "the live database was replaced after all"
        );
        assert!(kept_dbs(t).is_empty(), "{:?}", kept_dbs(t));
        assert!(scratch_dbs(t).is_empty(), "{:?}", scratch_dbs(t));
        assert_eq!(conn(t, "station"), "true -1");
    }
}

#[test]
fn the_link_dropping_before_the_renames_is_read_back_as_not_renamed() {
    let e = SwapEnv::new();
    let r = e.restore_marked(1, "before");
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr
            .contains("station is unchanged (read back from pg_database: nothing was renamed)"),
        "{}",
        r.stderr
    );
    e.assert_nothing_renamed(1);
}

#[test]
fn a_create_database_whose_reply_is_lost_is_still_dropped() {
    // Regression: the guard was armed only after a CREATE DATABASE that answered.
    let e = SwapEnv::new();
    let t = &e.t;
    let r = run_cmd(e.restore("CREATE DATABASE", "after"));
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(scratch_dbs(t).is_empty(), "{:?}", scratch_dbs(t));
    assert_eq!(counts(t, "station"), e.counts_b);
}

#[test]
fn renames_that_committed_though_their_reply_was_lost_are_reported_live() {
    // Regression: psql/ssh killed after the COMMIT was reported as "station is unchanged".
    let e = SwapEnv::new();
    let t = &e.t;
    let r = e.restore_marked(1, "after");
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(!r.all().contains("unchanged"), "{}", r.all());
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["outcome"], "ok");
    let w = report["warnings"][0].as_str().unwrap_or_default();
    assert!(
        w.contains("pg_database shows they committed: station is the restored database"),
        "{report}"
    );
    let kept = report["kept_database"].as_str().unwrap().to_string();
    assert_eq!(kept_dbs(t), vec![kept.clone()]);
    assert_eq!(counts(t, "station"), e.counts_b);
    assert!(!e.has_marker("station", 1));
    assert!(e.has_marker(&kept, 1));
    assert!(scratch_dbs(t).is_empty());
    assert_eq!(conn(t, "station"), "true -1");
    assert_eq!(conn(t, &kept), "true -1");
}

#[test]
fn renames_still_running_on_the_server_when_the_client_dropped_are_ended_before_judging() {
    // The renames wait for a row lock on the server when their client drops: the read-back ends
    // that session and waits for it before judging, so "unchanged" is true and stays true. With
    // the ending taken out (`end_swap_session_sql` answering 'gone' at once) this fails 3 of 3:
    // the waiting renames commit once the lock goes, and the live database is replaced after
    // "nothing was renamed" was reported.
    let e = SwapEnv::new();
    let r = e.restore_marked(4, "detached");
    // Let the lock holder and anything it held up finish.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr
            .contains("(read back from pg_database: nothing was renamed)"),
        "{}",
        r.stderr
    );
    e.assert_nothing_renamed(4);
}

#[test]
fn renames_that_committed_before_the_server_went_away_are_unknown_exit_3() {
    let e = SwapEnv::new();
    let t = &e.t;
    let r = e.restore_marked(2, "after-dead");
    std::fs::remove_file(t.dir.path().join("dead")).unwrap();
    assert_eq!(r.code, 3, "{}", r.all());
    let err = &r.stderr;
    assert!(err.contains("the swap's outcome is UNKNOWN"), "{err}");
    assert!(!err.contains("swap refused"), "{err}");
    assert!(
        err.contains("SELECT datname || '|' || oid") && err.contains("FROM pg_database"),
        "{err}"
    );
    assert!(
        err.contains("the renames committed") && err.contains("nothing was renamed"),
        "{err}"
    );
    assert!(err.contains("DROP DATABASE IF EXISTS"), "{err}");
    assert!(!err.contains(t.state()["pg_password"].as_str().unwrap()));
    // It did commit: the restored database is live, the replaced one kept, both still blocked
    // (the restored one was blocked for the renames, as the live one was).
    let kept = kept_dbs(t);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(err.contains(&kept[0]), "{err}");
    assert_eq!(conn(t, &kept[0]), "false 0");
    assert_eq!(conn(t, "station"), "false 0");
    // Finishing by hand as it says (the renames committed) opens both.
    let finish = format!(
        "ALTER DATABASE \"station\" ALLOW_CONNECTIONS true; ALTER DATABASE \"station\" CONNECTION LIMIT -1; \
         ALTER DATABASE \"{0}\" ALLOW_CONNECTIONS true; ALTER DATABASE \"{0}\" CONNECTION LIMIT -1",
        kept[0]
    );
    assert!(
        err.contains(&finish.replace('"', "\\\"")) || err.contains(&finish),
        "the finish command is said: {err}"
    );
    sql(t, "postgres", &finish);
    assert_eq!(counts(t, "station"), e.counts_b);
    assert!(e.has_marker(&kept[0], 2));
}

#[test]
fn ctrl_c_to_the_process_group_during_the_swap_finishes_the_swap() {
    // Regression: the terminal's SIGINT reached psql too, which died mid-swap.
    let e = SwapEnv::new();
    let t = &e.t;
    e.marker(3);
    let mut c = e.restore("RENAME TO", "slow");
    {
        use std::os::unix::process::CommandExt;
        c.process_group(0);
    }
    let child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let in_swap = t.dir.path().join("in-swap");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !in_swap.exists() {
        assert!(Instant::now() < deadline, "the swap never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let group = format!("-{}", child.id());
    assert!(Command::new("kill")
        .args(["-INT", "--", &group])
        .status()
        .unwrap()
        .success());
    let r = deploy_support::Run::from(child.wait_with_output().unwrap());
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stderr
            .contains("the swap has begun and is finished first"),
        "{}",
        r.stderr
    );
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let kept = report["kept_database"].as_str().unwrap().to_string();
    assert!(e.has_marker(&kept, 3));
    assert!(!e.has_marker("station", 3));
    assert_eq!(counts(t, "station"), e.counts_b);
    assert!(scratch_dbs(t).is_empty());
    assert_eq!(conn(t, "station"), "true -1");
}

struct CodesEnv {
    t: TestEnv,
    object: String,
    path: String,
    dead_port: String,
}

impl CodesEnv {
    fn new() -> CodesEnv {
        let (t, object) = backed_up("codes");
        let path = standins(&t);
        let dead_port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port().to_string()
        };
        CodesEnv {
            t,
            object,
            path,
            dead_port,
        }
    }
    fn restore(&self, args: &[&str], vars: &[(&str, &str)]) -> deploy_support::Run {
        let mut a = vec!["restore", "--env", "local", "--yes"];
        a.extend_from_slice(args);
        let mut c = self.t.command(&a);
        c.env("PATH", &self.path).stdin(Stdio::null());
        for (k, v) in vars {
            c.env(k, v);
        }
        run_cmd(c)
    }
    /// The remote out of reach for the rclone command `op` (`lsjson`, `cat` of the manifest,
    /// `cat-object`: the object streamed into the replay).
    fn dead_at(&self, op: &str) -> deploy_support::Run {
        self.restore(
            &["--label", "codes"],
            &[
                ("XTASK_TEST_RCLONE_OP", op),
                ("XTASK_TEST_RCLONE_MODE", "dead"),
                ("XTASK_TEST_DEAD_PORT", &self.dead_port),
            ],
        )
    }
}

#[test]
fn a_backup_named_but_not_there_is_usage_with_what_is_there() {
    // Regression: an unknown label was exit 1; an unknown object pointed at `backup drill`.
    let e = CodesEnv::new();
    for args in [
        &["station_backup_20200101_000000_nope.sql.gz"][..],
        &["--label", "no-such-label"][..],
    ] {
        let r = e.restore(args, &[]);
        assert_eq!(r.code, 2, "{args:?}: {}", r.all());
        assert!(
            r.stderr.contains("the newest are")
                && r.stderr.contains(e.object.rsplit('/').next().unwrap()),
            "{}",
            r.stderr
        );
        assert!(
            r.stderr.contains("cargo xtask backup status --env local"),
            "{}",
            r.stderr
        );
    }
}

#[test]
fn an_object_deleted_before_the_download_is_usage_not_unreachable() {
    // Regression: every failed download was exit 3.
    let e = CodesEnv::new();
    let before = snapshot(&e.t);
    let file = object_file(&e.t, &e.object);
    let r = e.restore(
        &[e.object.as_str()],
        &[
            ("XTASK_TEST_RCLONE_OP", "cat-object"),
            ("XTASK_TEST_RCLONE_MODE", "gone"),
            ("XTASK_TEST_GONE", file.to_str().unwrap()),
        ],
    );
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("is not in the bucket"), "{}", r.stderr);
    assert!(!file.exists());
    assert_eq!(snapshot(&e.t), before);
    assert!(scratch_dbs(&e.t).is_empty());
}

#[test]
fn a_remote_out_of_reach_is_exit_3_at_the_listing_the_manifest_and_the_download() {
    let e = CodesEnv::new();
    let before = snapshot(&e.t);
    for op in ["lsjson", "cat", "cat-object"] {
        let r = e.dead_at(op);
        assert_eq!(r.code, 3, "{op}: {}", r.all());
        assert!(
            r.stderr.contains("connection refused"),
            "{op}: {}",
            r.stderr
        );
    }
    assert_eq!(snapshot(&e.t), before);
    assert!(scratch_dbs(&e.t).is_empty());
}

/// Restores in the same second: the names carry a stamp of one second, so a restore whose second's
/// names an earlier one took (its kept database) gets a suffix instead of being refused. Here the
/// kept names of the next seconds are taken beforehand: the restore, whenever in them it plans,
/// gets `<stamp>_2`, and `--drop-kept` takes that shape.
#[test]
fn a_restore_in_a_second_whose_names_are_taken_gets_a_suffix() {
    let (t, _) = backed_up("sec");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let stamps: Vec<String> = (now..now + 40)
        .map(|s| xtask::restore::plan::Stamp::at_unix(s).as_str().to_string())
        .collect();
    let mut create = pg(&t, "psql", "postgres");
    create.args(["-X", "-q", "-v", "ON_ERROR_STOP=1"]);
    for s in &stamps {
        // Each -c its own transaction (CREATE DATABASE cannot run in one).
        create.args(["-c", &format!("CREATE DATABASE station_before_restore_{s}")]);
    }
    let o = create.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = t.run(&[
        "restore", "--env", "local", "--label", "sec", "--yes", "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let kept = report["kept_database"].as_str().unwrap().to_string();
    let stamp = kept
        .strip_prefix("station_before_restore_")
        .and_then(|k| k.strip_suffix("_2"))
        .unwrap_or_else(|| panic!("{kept}"));
    assert!(stamps.iter().any(|s| s == stamp), "{kept}");
    assert_eq!(
        report["scratch_database"],
        format!("station_restore_{stamp}_2").as_str()
    );
    assert!(kept_dbs(&t).contains(&kept));
    assert!(scratch_dbs(&t).is_empty());
    // --kept lists it and --drop-kept takes it.
    let r = t.run(&["restore", "--env", "local", "--kept"]);
    assert!(r.stdout.contains(&kept), "{}", r.all());
    let r = t.run(&["restore", "--env", "local", "--drop-kept", &kept, "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(!kept_dbs(&t).contains(&kept));
}

/// What a careless or unlucky user runs into (found by trying it): a TMPDIR with a space or not
/// writable, a scratch database left by a killed restore, an audit log that cannot be written, a
/// reader that closes the pipe.
#[test]
fn odd_surroundings_get_clear_answers_and_change_nothing() {
    let (t, _) = backed_up("odd");
    let before = snapshot(&t);
    let restore = |vars: &[(&str, &str)], extra: &[&str]| {
        let mut a = vec!["restore", "--env", "local", "--label", "odd", "--yes"];
        a.extend_from_slice(extra);
        let mut c = t.command(&a);
        c.stdin(Stdio::null());
        for (k, v) in vars {
            c.env(k, v);
        }
        run_cmd(c)
    };
    // TMPDIR not a directory: exit 1 saying what to set, nothing changed.
    let r = restore(&[("TMPDIR", "/etc/passwd")], &[]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("set TMPDIR"), "{}", r.stderr);
    assert_eq!(snapshot(&t), before);
    assert!(scratch_dbs(&t).is_empty());

    // A scratch database left by a killed restore: named in the plan, droppable by name.
    let left = "station_restore_20200101_000000";
    sql(&t, "postgres", &format!("CREATE DATABASE {left}"));
    let r = t.run(&["restore", "--env", "local", "--label", "odd", "--dry-run"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout
            .contains(&format!("{left} was left by an interrupted restore")),
        "{}",
        r.stdout
    );
    let r = t.run(&["restore", "--env", "local", "--drop-kept", left, "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(scratch_dbs(&t).is_empty());

    // The audit log cannot be written: refused before anything changed.
    let audit = t.state_dir.join("deploy-audit.jsonl");
    let aside = t.state_dir.join("deploy-audit.jsonl.aside");
    std::fs::rename(&audit, &aside).unwrap();
    std::fs::create_dir(&audit).unwrap();
    let r = restore(&[], &[]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("the audit log cannot be written"),
        "{}",
        r.stderr
    );
    assert_eq!(snapshot(&t), before);
    assert!(kept_dbs(&t).is_empty());
    assert!(!t.state_dir.join("deploy.lock").exists());
    std::fs::remove_dir(&audit).unwrap();
    std::fs::rename(&aside, &audit).unwrap();

    // A TMPDIR with a space in it: restores.
    let spaced = t.dir.path().join("with space");
    std::fs::create_dir(&spaced).unwrap();
    let r = restore(&[("TMPDIR", spaced.to_str().unwrap())], &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(
        std::fs::read_dir(&spaced).unwrap().count(),
        0,
        "the download was left"
    );

    // A reader that closes the pipe at once: no panic, no backtrace.
    let mut c = t.command(&["restore", "--env", "local", "--kept"]);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_ne!(out.status.code(), Some(101), "{err}");
}

/// A restore pinned to a sha256 (what `--rollback-on-failure` does with the backup its deploy
/// took, to replay it as the database user) refuses a backup whose manifest says another one,
/// before anything runs.
#[test]
fn a_pinned_backup_whose_manifest_says_another_sha256_is_refused() {
    let (t, _) = backed_up("good");
    let before = snapshot(&t);
    let root = deploy_support::repo();
    let toml = std::fs::read_to_string(&t.envs_file).unwrap();
    let envs = xtask::environments::Environments::parse(&toml, &t.envs_file, &root).unwrap();
    let env = envs.get("local").unwrap();
    let opts = xtask::restore::Options {
        selector: xtask::restore::Selector::Label(xtask::backup::Label::parse("good").unwrap()),
        yes: true,
        strict: true,
        dry_run: false,
        json: true,
        swap_wait: Duration::from_secs(10),
        audit_prefix: "rollback".into(),
        force_unlock: false,
        trust_dump: true,
        audit_sha: None,
        audit_previous: None,
        expect_sha256: Some("0".repeat(64)),
        ignore_space: false,
    };
    // Refused once planned: the report (its one step `plan`) and the error.
    let e = match xtask::restore::restore(env, &root, &opts, &mut |_| Ok(String::new())) {
        Ok(xtask::restore::Outcome::Failed(r, e)) => {
            assert_eq!(r.failed_step.as_deref(), Some("plan"), "{r:?}");
            assert!(r.steps.iter().all(|s| s.step == "plan"), "{r:?}");
            e
        }
        Err(e) => panic!("refused without a report: {e}"),
        Ok(_) => panic!("a backup with another sha256 was restored"),
    };
    assert_eq!(e.exit_code(), xtask::ExitCode::Failed, "{e}");
    assert!(
        e.to_string().contains("is not the backup the deploy took"),
        "{e}"
    );
    assert_eq!(snapshot(&t), before);
    assert!(scratch_dbs(&t).is_empty());
}

/// The counts are taken in the replay's own transaction, before its COMMIT: a backup whose
/// manifest gives other counts (its sha256 and size still its dump's) is never committed, streamed
/// or (`--trust-dump`) downloaded first; and a dump whose end takes in the check and the COMMIT
/// (an unterminated COPY: they become its rows) is refused (the check did not run), not reported
/// restored.
#[test]
fn counts_that_are_not_the_manifests_are_never_committed() {
    let (t, file, text) = with_good_dump();
    let before = snapshot(&t);
    let manifest = file.with_file_name(format!(
        "{}.json",
        file.file_name().unwrap().to_str().unwrap()
    ));
    let m = std::fs::read_to_string(&manifest).unwrap();
    assert!(m.contains("\"public.accounts\" : 3000"), "{m}");
    std::fs::write(
        &manifest,
        m.replace("\"public.accounts\" : 3000", "\"public.accounts\" : 2999"),
    )
    .unwrap();
    let roles = "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'station\\_restore\\_%'";
    for extra in [&[][..], &["--trust-dump"][..]] {
        let mut args = vec!["restore", "--env", "local", "--label", "good", "--yes"];
        args.extend(extra);
        let r = t.run(&args);
        assert_eq!(r.code, 1, "{extra:?}: {}", r.all());
        assert!(
            r.all().contains(
                "differs from the manifest (counted before the commit, which did not happen): \
                 table public.accounts manifest 2999 restored 3000"
            ),
            "{extra:?}: {}",
            r.all()
        );
        assert_eq!(snapshot(&t), before, "{extra:?}");
        assert!(scratch_dbs(&t).is_empty(), "{extra:?}");
        assert!(kept_dbs(&t).is_empty(), "{extra:?}");
        assert_eq!(sql(&t, "postgres", roles), "0", "{extra:?}");
    }
    // No manifest: nothing to compare the counts with, but the check must have run.
    let swallowed = with_statements(
        &text,
        "CREATE TABLE public.sink (line text);\nCOPY public.sink FROM stdin;",
    );
    let (_, r) = restore_planted(&t, &file, 1, &swallowed, "an unterminated COPY at the end");
    assert!(
        r.all().contains("the replay's check printed nothing"),
        "{}",
        r.all()
    );
    assert_eq!(snapshot(&t), before);
    assert!(scratch_dbs(&t).is_empty());
    assert!(kept_dbs(&t).is_empty());
    assert_eq!(sql(&t, "postgres", roles), "0");
}

/// A signal while the swap waits for the live database's sessions to end calls the swap off at
/// once (nothing is renamed yet: connections allowed again, the writers started), not after
/// `--swap-wait` seconds. Regression: the wait ignored it ("the swap ... is finished first"), and a
/// SIGKILL then left the live database blocked, the lock and a scratch database behind.
#[test]
fn a_signal_during_the_swaps_wait_for_sessions_calls_the_swap_off_at_once() {
    let t = TestEnv::local(0o711);
    up_with_tables(&t);
    backup(&t, "good");
    sql(
        &t,
        "station",
        "INSERT INTO accounts VALUES (99999, 'after the backup')",
    );
    let before = snapshot(&t);
    let (mut stuck, pid) = stuck_session(&t, "xtask-test-stuck-wait", 120);
    let mut child = t
        .command(&[
            "restore",
            "--env",
            "local",
            "--label",
            "good",
            "--yes",
            "--swap-wait",
            "30",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(|l| l.ok()) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    let mut wait_for = |what: &str, within: Duration| -> bool {
        let deadline = Instant::now() + within;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(line) => {
                    seen.push_str(&line);
                    seen.push('\n');
                    if line.contains(what) {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
        false
    };
    let in_swap = wait_for("==> swap", Duration::from_secs(120));
    // The swap blocks the live database, then waits for the stopped session.
    let deadline = Instant::now() + Duration::from_secs(20);
    while in_swap
        && sql(
            &t,
            "postgres",
            "SELECT datallowconn FROM pg_database WHERE datname = 'station'",
        ) != "f"
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let signalled = Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let ended = wait_for("    swap ", Duration::from_secs(25));
    let took = signalled.elapsed();
    // The stopped backend also holds up the guard's DROP DATABASE: continued once the swap ended.
    let _ = Command::new("kill").args(["-CONT", &pid]).status();
    let out = child.wait_with_output().unwrap();
    let _ = stuck.kill();
    let _ = stuck.wait();
    let r = deploy_support::Run {
        code: out.status.code().unwrap_or(-1),
        stdout: seen + &String::from_utf8_lossy(&out.stdout),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(in_swap, "the swap never started: {}", r.all());
    assert!(
        ended && took < Duration::from_secs(10),
        "the swap did not end promptly after SIGTERM ({took:?}): {}",
        r.all()
    );
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stdout.contains("swap interrupted"), "{}", r.all());
    assert!(
        r.stderr
            .contains("swap refused: interrupted (Ctrl-C, SIGTERM or SIGHUP)"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("the swap is called off"), "{}", r.stderr);
    assert!(!r.stderr.contains("finished first"), "{}", r.stderr);
    assert_eq!(
        sql(
            &t,
            "postgres",
            "SELECT datallowconn || ' ' || datconnlimit FROM pg_database WHERE datname = 'station'"
        ),
        "true -1"
    );
    assert_eq!(snapshot(&t), before);
    assert!(scratch_dbs(&t).is_empty(), "{:?}", scratch_dbs(&t));
    assert!(kept_dbs(&t).is_empty(), "{:?}", kept_dbs(&t));
    assert!(!t.state_dir.join("deploy.lock").exists());
    let audit = steps(&t.audit());
    assert_eq!(
        audit.last().unwrap(),
        "restore:pipeline interrupted",
        "{audit:?}"
    );
}

/// A signal after the swap says what is true: the restored database is live, the replaced one
/// kept (regression: "stopping before the swap (the live database stays as it is)").
#[test]
fn a_signal_after_the_swap_says_the_restored_database_is_live() {
    let e = SwapEnv::new();
    let t = &e.t;
    e.marker(5);
    // The health step's `SELECT 1` is slow: the signal arrives while it runs.
    let child = e
        .restore("SELECT 1", "slow")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let marker = t.dir.path().join("in-swap");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "the health step never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let r = deploy_support::Run::from(child.wait_with_output().unwrap());
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let kept = report["kept_database"].as_str().unwrap().to_string();
    assert!(
        r.stderr.contains(&format!(
            "interrupted after the swap: the restored database is already live as station (the \
             replaced one is kept as {kept})"
        )),
        "{}",
        r.stderr
    );
    assert!(
        !r.stderr.contains("interrupted: stopping before the swap"),
        "{}",
        r.stderr
    );
    assert!(!e.has_marker("station", 5));
    assert!(e.has_marker(&kept, 5));
    assert_eq!(counts(t, "station"), e.counts_b);
}

/// A session on the scratch database (a monitoring agent's, a psql left open) is ended with the
/// live database's before the renames (regression: the renames failed, "being accessed by other
/// users", and the swap was refused).
#[test]
fn a_session_on_the_scratch_database_does_not_refuse_the_swap() {
    let e = SwapEnv::new();
    let t = &e.t;
    e.marker(6);
    let r = run_cmd(e.restore("ALLOW_CONNECTIONS false", "scratch-session"));
    assert_eq!(r.code, 0, "{}", r.all());
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let kept = report["kept_database"].as_str().unwrap().to_string();
    assert!(e.has_marker(&kept, 6));
    assert_eq!(counts(t, "station"), e.counts_b);
    // Opened again as the live database, with the live one's limit.
    assert_eq!(conn(&e.t, "station"), "true -1");
    assert_eq!(conn(&e.t, &kept), "true -1");
    assert_eq!(
        sql(
            t,
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'xtask-test-scratch'"
        ),
        "0"
    );
    assert!(scratch_dbs(t).is_empty());
}

/// Ctrl-C during the download (here to the whole process group, as a terminal sends it; a slow
/// transfer) leaves no partial backup in $TMPDIR (regression: `xtask-restore.*/backup.sql.gz`
/// stayed: xtask learns the directory only from the script's last line).
#[test]
fn a_signal_during_the_download_leaves_no_partial_backup_behind() {
    let mut t = TestEnv::local(0o711);
    let tmp = t.dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    t.extra_env
        .push(("TMPDIR".into(), tmp.display().to_string()));
    up_with_tables(&t);
    let object = backup(&t, "good");
    let file = object_file(&t, &object);
    // 6 MB without a manifest: downloaded (at 1 MB/s) before anything of it runs.
    let big = file
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .replace("_good.sql.gz", "_big.sql.gz");
    let mut bytes = vec![0u8; 6 << 20];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").unwrap(),
        &mut bytes,
    )
    .unwrap();
    std::fs::write(file.with_file_name(&big), gzip_bytes(&bytes)).unwrap();
    let before = snapshot(&t);
    for signal in ["-INT", "-HUP"] {
        let mut c = t.command(&["restore", "--env", "local", &big, "--yes"]);
        c.env("RCLONE_BWLIMIT", "1M").stdin(Stdio::null());
        {
            use std::os::unix::process::CommandExt;
            c.process_group(0);
        }
        let child = c
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let downloading = || {
            std::fs::read_dir(&tmp).unwrap().flatten().any(|d| {
                std::fs::read_dir(d.path())
                    .map(|fs| {
                        fs.flatten()
                            .any(|f| f.metadata().map(|m| m.len() > 0).unwrap_or(false))
                    })
                    .unwrap_or(false)
            })
        };
        while !downloading() {
            assert!(
                Instant::now() < deadline,
                "{signal}: the download never started"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let group = format!("-{}", child.id());
        assert!(Command::new("kill")
            .args([signal, "--", &group])
            .status()
            .unwrap()
            .success());
        let r = deploy_support::Run::from(child.wait_with_output().unwrap());
        assert_eq!(r.code, 1, "{signal}: {}", r.all());
        let left: Vec<_> = std::fs::read_dir(&tmp)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "{signal}: left behind: {left:?}");
        assert_eq!(snapshot(&t), before, "{signal}");
        assert!(
            scratch_dbs(&t).is_empty(),
            "{signal}: {:?}",
            scratch_dbs(&t)
        );
        assert!(!t.state_dir.join("deploy.lock").exists(), "{signal}");
    }
}

fn gzip_bytes(b: &[u8]) -> Vec<u8> {
    gz(&["-c", "-1"], b)
}

/// A dump whose rows fail a constraint: the failing row's values (psql's `DETAIL:` and `CONTEXT:`
/// lines) are in neither the output, the `--json` report nor the audit log, of restore and of
/// backup drill (regression: `DETAIL: Failing row contains (1, 123-45-6789, null)` was in all).
#[test]
fn a_failing_row_is_not_quoted_in_output_json_or_the_audit_log() {
    let t = TestEnv::local(0o711);
    up_with_tables(&t);
    let object = backup(&t, "good");
    let file = object_file(&t, &object);
    let cases = [
        (
            "123-45-6789",
            "violates not-null constraint",
            "CREATE TABLE people (id int, ssn text, note text NOT NULL);\n\
             COPY people (id, ssn, note) FROM stdin;\n1\t123-45-6789\t\\N\n\\.\n",
        ),
        (
            "987-65-4321",
            "violates unique constraint",
            "CREATE TABLE keys (ssn text PRIMARY KEY);\n\
             INSERT INTO keys VALUES ('987-65-4321');\nINSERT INTO keys VALUES ('987-65-4321');\n",
        ),
        (
            "555-12-3456",
            "invalid input syntax for type integer",
            "CREATE TABLE numbers (id int);\nCOPY numbers (id) FROM stdin;\n555-12-3456\n\\.\n",
        ),
    ];
    for (i, (value, said, dump)) in cases.iter().enumerate() {
        let o = plant_beside(&file, 20 + i as u32, dump);
        let r = t.run(&["restore", "--env", "local", &o, "--yes", "--json"]);
        assert_eq!(r.code, 1, "{}", r.all());
        assert!(
            r.stderr.contains(said),
            "the error itself is still said: {}",
            r.stderr
        );
        assert!(!r.all().contains(value), "{value}: {}", r.all());
        let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        assert_eq!(report["outcome"], "failed");
        let audit = std::fs::read_to_string(t.state_dir.join("deploy-audit.jsonl")).unwrap();
        assert!(audit.contains(said), "{audit}");
        assert!(!audit.contains(value), "{value} in the audit log: {audit}");
        let r = t.run(&["backup", "drill", "--env", "local", &o]);
        assert_eq!(r.code, 1, "{}", r.all());
        assert!(!r.all().contains(value), "drill: {value}: {}", r.all());
        assert!(scratch_dbs(&t).is_empty());
    }
}

/// `restore --dry-run --json`: the plan and the commands as one JSON document on stdout, nothing
/// changed (regression: nothing on stdout, exit 0).
#[test]
fn a_dry_run_with_json_prints_the_plan_and_the_commands() {
    let t = TestEnv::local(0o711);
    up_with_tables(&t);
    let object = backup(&t, "good");
    let before = snapshot(&t);
    let r = t.run(&[
        "restore",
        "--env",
        "local",
        "--label",
        "good",
        "--dry-run",
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("one JSON document");
    assert_eq!(v["dry_run"], true, "{v}");
    assert_eq!(v["env"], "local");
    assert_eq!(v["object"], object.as_str());
    assert_eq!(v["manifest"], true);
    assert_eq!(v["database"], "station");
    let scratch = v["scratch_database"].as_str().unwrap();
    assert!(scratch.starts_with("station_restore_"), "{v}");
    assert!(v["kept_database"]
        .as_str()
        .unwrap()
        .starts_with("station_before_restore_"));
    assert!(v["plan"].as_str().unwrap().contains("restore plan"), "{v}");
    let commands: Vec<&str> = v["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(
        commands.iter().any(|c| c.contains("RENAME TO")),
        "{commands:?}"
    );
    assert!(
        commands.iter().any(|c| c.contains(&format!(
            "ALTER DATABASE \\\"{scratch}\\\" ALLOW_CONNECTIONS false"
        )) || c.contains(&format!(
            "ALTER DATABASE \"{scratch}\" ALLOW_CONNECTIONS false"
        ))),
        "the scratch database is blocked too: {commands:?}"
    );
    // The text goes to stderr.
    assert!(r.stderr.contains("commands (dry run"), "{}", r.stderr);
    assert!(!r
        .stdout
        .contains(t.state()["pg_password"].as_str().unwrap()));
    assert_eq!(snapshot(&t), before);
    assert!(scratch_dbs(&t).is_empty());
}

/// A `local` environment (TMPDIR in its directory) whose `good` backup is rewritten as a large
/// object: its dump with `early` put before its first statement and 6 MB of comments (random, so
/// they do not compress) before its end, with a manifest that matches it (sha256, size). With the
/// stand-ins and the `slow` stream of that object (some 45 s to stream). The env, its PATH, the
/// object's file, and the TMPDIR.
fn with_large_object(early: &str) -> (TestEnv, String, PathBuf, PathBuf) {
    let mut t = TestEnv::local(0o711);
    let tmp = t.dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    t.extra_env
        .push(("TMPDIR".into(), tmp.display().to_string()));
    up_with_tables(&t);
    let object = backup(&t, "good");
    let file = object_file(&t, &object);
    let text = gunzip(&std::fs::read(&file).unwrap());
    let mut noise = vec![0u8; 4_500_000];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut noise)
        .unwrap();
    let mut pad = String::new();
    for chunk in noise.chunks(48) {
        pad.push_str("-- ");
        for b in chunk {
            pad.push_str(&format!("{b:02x}"));
        }
        pad.push('\n');
    }
    let first = text.find("\nCREATE ").expect("the dump creates something");
    let dump = format!("{}\n{early}{}", &text[..first], &text[first..]);
    let dump = with_statements(&dump, &pad);
    let gz = gzip(&dump);
    std::fs::write(&file, &gz).unwrap();
    let sum = Command::new("sha256sum").arg(&file).output().unwrap();
    let sum = String::from_utf8_lossy(&sum.stdout)[..64].to_string();
    let manifest = PathBuf::from(format!("{}.json", file.display()));
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    m["sha256"] = sum.into();
    m["size"] = (gz.len() as u64).into();
    std::fs::write(&manifest, serde_json::to_string_pretty(&m).unwrap()).unwrap();
    let path = standins(&t);
    (t, path, file, tmp)
}

/// `restore --label good` of [`with_large_object`]'s object, streamed slowly.
fn slow_restore(t: &TestEnv, path: &str, file: &std::path::Path) -> std::process::Child {
    restore_with(
        t,
        path,
        "good",
        &[
            ("XTASK_TEST_RCLONE_OP", "cat-object"),
            ("XTASK_TEST_RCLONE_MODE", "slow"),
            ("XTASK_TEST_SLOW_FILE", file.to_str().unwrap()),
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap()
}

/// The processes of a run of `t` (their environment has its XTASK_TEST_DIR): "pid comm" each.
fn run_processes(t: &TestEnv) -> Vec<String> {
    let mark = format!("XTASK_TEST_DIR={}", t.dir.path().display());
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        if env.split(|&b| b == 0).any(|v| v == mark.as_bytes()) {
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            found.push(format!("{pid} {}", comm.trim()));
        }
    }
    found
}

/// Every process of the run gone within `within` (else the ones left, which are killed).
fn assert_no_run_processes(t: &TestEnv, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    loop {
        let left = run_processes(t);
        if left.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            for p in &left {
                let pid = p.split(' ').next().unwrap();
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
            panic!("{what}: processes of the run left after {within:?}: {left:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The replay has begun streaming: the stand-in started and psql is in the scratch database.
fn wait_for_the_stream(t: &TestEnv, child: &mut std::process::Child) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !t.dir.path().join("slow-started").exists() {
        assert!(child.try_wait().unwrap().is_none(), "restore ended first");
        assert!(Instant::now() < deadline, "the stream never started");
        std::thread::sleep(Duration::from_millis(30));
    }
    poll_sql(
        t,
        "SELECT 1 FROM pg_stat_activity WHERE datname LIKE 'station\\_restore\\_%'",
        Duration::from_secs(60),
        "the replay never connected",
    );
    // Its first statements run.
    std::thread::sleep(Duration::from_millis(1500));
}

fn files_in(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// A SIGTERM to xtask alone (not its process group) while a large object streams slowly into the
/// replay stops the whole pipeline at once: xtask exits within seconds, not when the download
/// would have ended; nothing restored, no scratch database or role, no temp dir, no process left.
#[test]
fn sigterm_during_a_slow_stream_stops_the_whole_replay_at_once() {
    let (t, path, file, tmp) = with_large_object("");
    let before = snapshot(&t);
    let mut child = slow_restore(&t, &path, &file);
    wait_for_the_stream(&t, &mut child);
    let sent = Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    let took = sent.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        took < Duration::from_secs(8),
        "xtask took {took:?} to stop: {err}"
    );
    assert!(
        err.contains("interrupted (Ctrl-C, SIGTERM or SIGHUP) before the swap"),
        "{err}"
    );
    assert!(
        !t.dir.path().join("slow-done").exists(),
        "the stream ran to its end"
    );
    assert_no_run_processes(&t, Duration::from_secs(2), "SIGTERM");
    assert_eq!(snapshot(&t), before);
    assert!(scratch_dbs(&t).is_empty(), "{:?}", scratch_dbs(&t));
    assert_eq!(
        sql(
            &t,
            "postgres",
            "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'station\\_restore\\_%'"
        ),
        "0"
    );
    assert!(files_in(&tmp).is_empty(), "{:?}", files_in(&tmp));
    assert!(!t.state_dir.join("deploy.lock").exists());
}

/// `kill -9` of xtask while a large object streams slowly into the replay: within seconds no
/// process of the run is left (the script sees its lifeline close and kills the pipeline) and its
/// temp dir is gone; the scratch database it left has nothing committed, stays so, and the next
/// restore names it and `--drop-kept` drops it.
#[test]
fn kill_9_during_a_slow_stream_leaves_no_process_and_nothing_committed() {
    let (t, path, file, tmp) = with_large_object("");
    let before = snapshot(&t);
    let mut child = slow_restore(&t, &path, &file);
    wait_for_the_stream(&t, &mut child);
    child.kill().unwrap(); // SIGKILL: no handler, no guard runs
    child.wait().unwrap();
    assert_no_run_processes(&t, Duration::from_secs(5), "kill -9");
    assert!(
        !t.dir.path().join("slow-done").exists(),
        "the stream ran to its end"
    );
    assert!(files_in(&tmp).is_empty(), "{:?}", files_in(&tmp));
    let left = scratch_dbs(&t);
    assert_eq!(left.len(), 1, "{left:?}");
    let tables = "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'";
    assert_eq!(sql(&t, &left[0], tables), "0", "the orphan committed");
    // Longer than the rest of the stream would have taken: still nothing.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(sql(&t, &left[0], tables), "0", "the orphan committed");
    assert_eq!(snapshot(&t), before);
    let r = t.run(&["restore", "--env", "local", "--label", "good", "--dry-run"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout
            .contains(&format!("{} was left by an interrupted restore", left[0])),
        "{}",
        r.stdout
    );
    let r = t.run(&[
        "restore",
        "--env",
        "local",
        "--drop-kept",
        &left[0],
        "--yes",
        "--force-unlock",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(scratch_dbs(&t).is_empty(), "{:?}", scratch_dbs(&t));
}

/// An SQL error at the start of a large object streaming slowly fails within seconds (the hash
/// gets a bounded grace, not the rest of the download), saying that psql failed and that the
/// object's sha256 was not checked to its end (not calling it corrupt, nor intact).
#[test]
fn an_sql_error_early_in_a_slow_stream_fails_promptly_and_says_the_hash_was_not_checked() {
    let (t, path, file, tmp) = with_large_object("SELECT xtask_no_such_function();\n");
    let before = snapshot(&t);
    let started = Instant::now();
    let child = slow_restore(&t, &path, &file);
    let out = child.wait_with_output().unwrap();
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        took < Duration::from_secs(15),
        "the failure took {took:?}: {err}"
    );
    assert!(err.contains("psql exit 3"), "{err}");
    assert!(err.contains("xtask_no_such_function"), "{err}");
    assert!(
        err.contains("the object's sha256 was not checked to its end"),
        "{err}"
    );
    assert!(!err.contains("corrupt or was replaced"), "{err}");
    assert!(
        !t.dir.path().join("slow-done").exists(),
        "the stream ran to its end"
    );
    assert_no_run_processes(&t, Duration::from_secs(2), "SQL error");
    assert_eq!(snapshot(&t), before);
    assert!(scratch_dbs(&t).is_empty(), "{:?}", scratch_dbs(&t));
    assert!(files_in(&tmp).is_empty(), "{:?}", files_in(&tmp));
}

/// A database of many tables (schema-per-tenant, daily partitions): its manifest is more than an
/// argument may hold (128 KiB), and so is the check that carries it into the replay, which reads
/// it from its stdin (regression: "Argument list too long", exit 3, and no restore at all). Its
/// names are odd too: non-ASCII, a quote, a space, under a client encoding that is not UTF8.
#[test]
fn a_manifest_longer_than_an_argument_may_be_still_restores() {
    let mut t = TestEnv::local(0o711);
    up_with_tables(&t);
    sql(
        &t,
        "station",
        "CREATE TABLE \"café's tenant\" (id int); INSERT INTO \"café's tenant\" VALUES (1), (2); \
         DO $$ BEGIN FOR i IN 1..3200 LOOP \
         EXECUTE format('CREATE TABLE %I (id int)', 'events_partition_for_tenant_number_' || lpad(i::text, 6, '0')); \
         END LOOP; END $$; \
         INSERT INTO events_partition_for_tenant_number_000007 VALUES (7);",
    );
    let object = backup(&t, "wide");
    let m =
        std::fs::read_to_string(format!("{}.json", object_file(&t, &object).display())).unwrap();
    assert!(m.len() > 160 * 1024, "{}", m.len());
    let before = snapshot(&t);
    sql(&t, "station", "DROP TABLE \"café's tenant\"");
    // A client encoding other than the manifest's (psql's startup one, which the check's RESET ALL
    // would fall back to): the names still compare equal (regression: "caf\u{e9}" was missing and
    // "caf\u{fffd}" extra).
    t.extra_env
        .push(("PGCLIENTENCODING".into(), "LATIN1".into()));
    let r = t.run(&[
        "restore", "--env", "local", "--label", "wide", "--yes", "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(snapshot(&t), before);
    assert!(scratch_dbs(&t).is_empty());
}

/// What a dump defines in `public` cannot stand in for the built-ins the check counts with: a
/// dump (its manifest rewritten to match it, as whoever can write the bucket can) without the
/// accounts rows and with a `public.format(text, name, name)` that makes their count read 3000,
/// the manifest's, is refused, not restored short (regression: the count was faked and the gate
/// passed).
#[test]
fn a_function_the_dump_defines_cannot_fake_the_counts() {
    let (t, file, text) = with_good_dump();
    let before = snapshot(&t);
    let copy = text
        .find("COPY public.accounts ")
        .expect("the accounts rows");
    let rows = copy + text[copy..].find('\n').unwrap() + 1;
    let end = rows + text[rows..].find("\\.\n").unwrap();
    let fake = "CREATE FUNCTION public.format(text, name, name) RETURNS text LANGUAGE sql AS \
                $f$ SELECT CASE WHEN $1 LIKE 'SELECT %count(*) AS c FROM %' AND $3 = 'accounts' \
                THEN 'SELECT 3000 AS c' ELSE pg_catalog.format($1, $2, $3) END $f$;\n\
                CREATE FUNCTION public.format(text, text, text) RETURNS text LANGUAGE sql AS \
                $f$ SELECT CASE WHEN $1 LIKE 'SELECT %count(*) AS c FROM %' AND $3 = 'accounts' \
                THEN 'SELECT 3000 AS c' ELSE pg_catalog.format($1, $2, $3) END $f$;";
    let dump = with_statements(&format!("{}{}", &text[..rows], &text[end..]), fake);
    let gz = gzip(&dump);
    std::fs::write(&file, &gz).unwrap();
    let sum = Command::new("sha256sum").arg(&file).output().unwrap();
    let manifest = PathBuf::from(format!("{}.json", file.display()));
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    assert_eq!(m["tables"]["public.accounts"], 3000);
    m["sha256"] = String::from_utf8_lossy(&sum.stdout)[..64]
        .to_string()
        .into();
    m["size"] = (gz.len() as u64).into();
    std::fs::write(&manifest, serde_json::to_string_pretty(&m).unwrap()).unwrap();
    let r = t.run(&["restore", "--env", "local", "--label", "good", "--yes"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.all()
            .contains("table public.accounts manifest 3000 restored 0"),
        "{}",
        r.all()
    );
    assert_eq!(snapshot(&t), before);
    assert!(scratch_dbs(&t).is_empty());
}
