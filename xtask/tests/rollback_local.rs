//! `cargo xtask rollback` on the `local` environment, for real (PostgreSQL, redis-server, the rclone
//! remote): deploy v1, deploy v2 with a migration, rollback → the database is as it was before v2
//! (schema text and per-table counts), the replaced one kept. Refused when the pre-deploy backup
//! has no manifest. A deploy failing at migrate names the rollback command, and with
//! `--rollback-on-failure` runs it.

mod deploy_support;

use std::process::{Command, Stdio};

use deploy_support::{steps, TestEnv};

const V1: &str = "1111111aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const V2: &str = "2222222bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const V3: &str = "3333333ccccccccccccccccccccccccccccccccc";
const V4: &str = "4444444ddddddddddddddddddddddddddddddddd";

fn pg(t: &TestEnv, tool: &str, db: &str) -> Command {
    let s = t.state();
    let mut c = Command::new(tool);
    c.env("PGHOST", "127.0.0.1")
        .env("PGPORT", s["pg_port"].as_u64().unwrap().to_string())
        .env("PGUSER", "station")
        .env("PGDATABASE", db)
        .env("PGPASSWORD", s["pg_password"].as_str().unwrap())
        .stdin(Stdio::null());
    c
}

fn sql(t: &TestEnv, db: &str, q: &str) -> String {
    let o = pg(t, "psql", db)
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", q])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{q}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn snapshot(t: &TestEnv, db: &str) -> (String, String) {
    let o = pg(t, "pg_dump", db).arg("--schema-only").output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let schema = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n");
    (schema, sql(t, db, xtask::backup::drill::COUNT_SQL))
}

fn manifest_of(t: &TestEnv, label: &str) -> std::path::PathBuf {
    let base = t.state_dir.join("objects/station-backups/postgres");
    for month in std::fs::read_dir(&base).unwrap().flatten() {
        for f in std::fs::read_dir(month.path()).unwrap().flatten() {
            let n = f.file_name().to_string_lossy().into_owned();
            if n.contains(label) && n.ends_with(".sql.gz.json") {
                return f.path();
            }
        }
    }
    panic!("no manifest for {label}");
}

#[test]
fn rollback_after_a_deploy_with_a_migration_puts_the_database_back() {
    let t = TestEnv::local(0o711);
    let r = t.run(&["deploy", "--sha", V1]);
    assert_eq!(r.code, 0, "{}", r.all());
    sql(
        &t,
        "station",
        "INSERT INTO users (email, display_name) VALUES ('a@example.org', 'A'); \
         INSERT INTO stations (owner_id, name) SELECT 1, 'station ' || g FROM generate_series(1, 200) g",
    );
    let before_v2 = snapshot(&t, "station");

    // v2 brings a migration that changes the schema and the data.
    std::fs::write(
        t.migrations.join("0003_notes.sql"),
        "ALTER TABLE stations ADD COLUMN notes text; DELETE FROM stations WHERE id % 2 = 0;\n\
         CREATE TABLE station_notes (id int);\n",
    )
    .unwrap();
    let r = t.run(&["deploy", "--sha", V2]);
    assert_eq!(r.code, 0, "{}", r.all());
    sql(&t, "station", "INSERT INTO station_notes VALUES (1), (2)");
    let after_v2 = snapshot(&t, "station");
    assert_ne!(after_v2, before_v2);

    // The dry run names the deploy, the backup and what is put back, and changes nothing.
    let r = t.run(&["rollback", "--env", "local", "--dry-run"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains(&format!("undo      deploy {V2}")),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("pre-deploy-2222222.sql.gz"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("nothing to roll out"), "{}", r.stdout);
    assert_eq!(snapshot(&t, "station"), after_v2);

    // Without a TTY and without --yes: exit 2.
    let r = t.run(&["rollback", "--env", "local"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert_eq!(snapshot(&t, "station"), after_v2);

    // The pre-deploy backup without its manifest: refused, with the reason.
    let m = manifest_of(&t, "pre-deploy-2222222");
    let aside = m.with_extension("aside");
    std::fs::rename(&m, &aside).unwrap();
    let r = t.run(&["rollback", "--env", "local", "--yes"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("refusing to roll back") && r.stderr.contains("no manifest"),
        "{}",
        r.stderr
    );
    assert_eq!(snapshot(&t, "station"), after_v2);
    std::fs::rename(&aside, &m).unwrap();

    let r = t.run(&["rollback", "--env", "local", "--yes", "--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["undone_sha"], V2);
    assert_eq!(report["outcome"], "ok");
    assert!(r.stderr.contains("verify-redis ok"), "{}", r.stderr);
    // The database is as it was before v2; the replaced one (with v2's migration and the writes
    // after it) is kept.
    assert_eq!(snapshot(&t, "station"), before_v2);
    let kept = report["restore"]["kept_database"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(snapshot(&t, &kept), after_v2);
    let audit = t.audit();
    let last = audit.last().unwrap();
    assert_eq!(
        (last["step"].as_str(), last["status"].as_str()),
        (Some("rollback"), Some("ok"))
    );
    assert_eq!(last["sha"], V2);
    assert!(steps(&audit).contains(&"rollback:swap ok".to_string()));

    // A deploy failing at migrate (0003 applies again, then 0004 fails) names the rollback.
    std::fs::write(
        t.migrations.join("0004_broken.sql"),
        "SELECT * FROM no_such_table;\n",
    )
    .unwrap();
    let r = t.run(&["deploy", "--sha", V3]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("to undo this deploy: `cargo xtask rollback --env local --yes` restores b2:station-backups/postgres/"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("pre-deploy-3333333.sql.gz"),
        "{}",
        r.stderr
    );
    assert_ne!(snapshot(&t, "station"), before_v2, "0003 was applied by v3");

    // With --rollback-on-failure it runs: back to the state before v4 (0003 applied by v3 stays,
    // since v4's own backup was taken after v3).
    let before_v4 = snapshot(&t, "station");
    std::fs::write(
        t.migrations.join("0004_broken.sql"),
        "CREATE TABLE half (x int);\n",
    )
    .unwrap();
    std::fs::write(
        t.migrations.join("0005_broken.sql"),
        "SELECT * FROM no_such_table;\n",
    )
    .unwrap();
    let r = t.run(&["deploy", "--sha", V4, "--rollback-on-failure"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("rolled back (--rollback-on-failure)"),
        "{}",
        r.stderr
    );
    assert_eq!(snapshot(&t, "station"), before_v4);
    let last = t.audit().last().unwrap().clone();
    assert_eq!(
        (last["step"].as_str(), last["sha"].as_str()),
        (Some("rollback"), Some(V4))
    );
}

#[test]
fn a_failed_health_only_deploy_names_no_rollback_of_an_older_deploy() {
    // Regression: `deploy --step health` runs no migrations; when it failed, the rollback of the
    // last deploy that did (v1, yesterday's) was offered, and with --rollback-on-failure run.
    let t = TestEnv::local(0o711);
    let r = t.run(&["deploy", "--sha", V1]);
    assert_eq!(r.code, 0, "{}", r.all());
    // Health fails: PostgreSQL and Redis are stopped.
    let r = t.run(&["local", "down"]);
    assert_eq!(r.code, 0, "{}", r.all());
    for extra in [&[][..], &["--rollback-on-failure"][..]] {
        let mut args = vec![
            "deploy",
            "--sha",
            V2,
            "--step",
            "health",
            "--health-tries",
            "1",
        ];
        args.extend_from_slice(extra);
        let r = t.run(&args);
        assert_ne!(r.code, 0, "{}", r.all());
        assert!(
            r.stderr.contains("no rollback offered")
                && r.stderr.contains("did not run its migrations"),
            "{}",
            r.stderr
        );
        assert!(!r.stderr.contains("to undo this deploy"), "{}", r.stderr);
        assert!(!r.stderr.contains("rolled back"), "{}", r.stderr);
        assert!(!r.stderr.contains("pre-deploy-1111111"), "{}", r.stderr);
        assert!(
            !steps(&t.audit()).iter().any(|s| s.starts_with("rollback")),
            "{:?}",
            steps(&t.audit())
        );
    }
}
