//! `cargo xtask rollback` on the `local` environment, for real (PostgreSQL, redis-server, the rclone
//! remote): deploy v1, deploy v2 with a migration, rollback → the database is as it was before v2
//! (schema text and per-table counts), the replaced one kept. Refused when the pre-deploy backup
//! has no manifest. A deploy failing at migrate names the rollback command, and with
//! `--rollback-on-failure` runs it.

mod deploy_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use deploy_support::{
    backup_files, hold_deploy_lock, kept_dbs, lock_file_text, scratch_dbs, snapshot, snapshot_of,
    sql, steps, TestEnv,
};

const V1: &str = "1111111aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const V2: &str = "2222222bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const V3: &str = "3333333ccccccccccccccccccccccccccccccccc";
const V4: &str = "4444444ddddddddddddddddddddddddddddddddd";

/// A `local` environment with v1 deployed and `rows` written after it: and the live database's
/// snapshot then.
fn v1_deployed_with(rows: &str) -> (TestEnv, (String, String)) {
    let t = v1_deployed();
    sql(&t, "station", rows);
    let before = snapshot(&t);
    (t, before)
}

fn v1_deployed() -> TestEnv {
    let t = TestEnv::local(0o711);
    let r = t.run(&["deploy", "--sha", V1]);
    assert_eq!(r.code, 0, "{}", r.all());
    t
}

/// A user and `n` stations of it.
fn user_and_stations(n: u32) -> String {
    format!(
        "INSERT INTO users (email, display_name) VALUES ('a@example.org', 'A'); \
         INSERT INTO stations (owner_id, name) SELECT 1, 'station ' || g FROM generate_series(1, {n}) g"
    )
}

/// A migration of the next deploy.
fn migration(t: &TestEnv, file: &str, sql: &str) {
    std::fs::write(t.migrations.join(file), sql).unwrap();
}

/// A migration that fails.
const BROKEN: &str = "SELECT * FROM no_such_table;\n";

/// Deploy `sha` (with `extra`) whose migration `broken` fails: exit 1.
fn deploy_breaking_at(t: &TestEnv, broken: &str, sha: &str, extra: &[&str]) -> deploy_support::Run {
    migration(t, broken, BROKEN);
    let mut args = vec!["deploy", "--sha", sha];
    args.extend_from_slice(extra);
    let r = t.run(&args);
    assert_eq!(r.code, 1, "{}", r.all());
    r
}

fn manifest_of(t: &TestEnv, label: &str) -> std::path::PathBuf {
    backup_files(t, |n| n.contains(label) && n.ends_with(".sql.gz.json"))
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no manifest for {label}"))
}

#[test]
fn rollback_after_a_deploy_with_a_migration_puts_the_database_back() {
    let (t, before_v2) = v1_deployed_with(&user_and_stations(200));

    // v2 brings a migration that changes the schema and the data.
    migration(
        &t,
        "0003_notes.sql",
        "ALTER TABLE stations ADD COLUMN notes text; DELETE FROM stations WHERE id % 2 = 0;\n\
         CREATE TABLE station_notes (id int);\n",
    );
    let r = t.run(&["deploy", "--sha", V2]);
    assert_eq!(r.code, 0, "{}", r.all());
    sql(&t, "station", "INSERT INTO station_notes VALUES (1), (2)");
    let after_v2 = snapshot(&t);
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
    assert_eq!(snapshot(&t), after_v2);

    // Without a TTY and without --yes: exit 2.
    let r = t.run(&["rollback", "--env", "local"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert_eq!(snapshot(&t), after_v2);

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
    assert_eq!(snapshot(&t), after_v2);
    std::fs::rename(&aside, &m).unwrap();

    let r = t.run(&["rollback", "--env", "local", "--yes", "--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["undone_sha"], V2);
    assert_eq!(report["outcome"], "ok");
    assert!(r.stderr.contains("verify-redis ok"), "{}", r.stderr);
    // The database is as it was before v2; the replaced one (with v2's migration and the writes
    // after it) is kept.
    assert_eq!(snapshot(&t), before_v2);
    let kept = report["restore"]["kept_database"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(snapshot_of(&t, &kept), after_v2);
    let audit = t.audit();
    let last = audit.last().unwrap();
    assert_eq!(
        (last["step"].as_str(), last["status"].as_str()),
        (Some("rollback"), Some("ok"))
    );
    assert_eq!(last["sha"], V2);
    assert!(steps(&audit).contains(&"rollback:swap ok".to_string()));
    // A deploy's records share one run id (its pipeline record's), another deploy has another.
    let pipelines: Vec<&serde_json::Value> =
        audit.iter().filter(|r| r["step"] == "pipeline").collect();
    let id = |r: &serde_json::Value| r["run"].as_str().unwrap().to_string();
    let last_pipeline = pipelines.last().unwrap();
    assert!(audit
        .iter()
        .filter(|r| r["step"] == "migrate" && r["sha"] == last_pipeline["sha"])
        .any(|r| id(r) == id(last_pipeline)));
    assert_ne!(id(pipelines[0]), id(last_pipeline));
    // The swap's record names what it undid and the release it put back as the final record
    // does: a rollback killed after it is still read as one.
    let swap = audit
        .iter()
        .rfind(|r| r["step"] == "rollback:swap")
        .unwrap();
    assert_eq!(
        (&swap["sha"], &swap["previous"]),
        (&last["sha"], &last["previous"])
    );

    // A deploy failing at migrate (0003 applies again, then 0004 fails) names the rollback.
    let r = deploy_breaking_at(&t, "0004_broken.sql", V3, &[]);
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
    assert_ne!(snapshot(&t), before_v2, "0003 was applied by v3");

    // With --rollback-on-failure it runs: v3 failed after applying 0003, so v4's own backup holds
    // v3's migration; the rollback undoes v3 and v4 and restores v3's backup: the state before v3,
    // which is the state the rollback of v2 left.
    let before_v4 = snapshot(&t);
    assert_ne!(before_v4, before_v2);
    migration(&t, "0004_broken.sql", "CREATE TABLE half (x int);\n");
    let r = deploy_breaking_at(&t, "0005_broken.sql", V4, &["--rollback-on-failure"]);
    assert!(
        r.stderr.contains("rolled back (--rollback-on-failure)"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("pre-deploy-3333333.sql.gz") && r.stderr.contains("FIRST of the 2 runs"),
        "{}",
        r.stderr
    );
    assert_eq!(snapshot(&t), before_v2);
    let last = t.audit().last().unwrap().clone();
    assert_eq!(
        (last["step"].as_str(), last["sha"].as_str()),
        (Some("rollback"), Some(V4))
    );
    assert!(
        last["backup_object"]
            .as_str()
            .unwrap()
            .ends_with("pre-deploy-3333333.sql.gz"),
        "{last}"
    );
}

#[test]
fn a_failed_health_only_deploy_names_no_rollback_of_an_older_deploy() {
    // Regression: `deploy --step health` runs no migrations; when it failed, the rollback of the
    // last deploy that did (v1, yesterday's) was offered, and with --rollback-on-failure run.
    let t = v1_deployed();
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

/// The `pre-deploy-<sha7>` backups of the bucket, oldest first (the names sort by time).
fn pre_deploy_objects(t: &TestEnv, sha: &str) -> Vec<String> {
    let label = format!("pre-deploy-{}", &sha[..7]);
    backup_files(t, |n| n.contains(&label) && n.ends_with(".sql.gz"))
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn a_retried_failed_deploy_rolls_back_to_the_first_pre_deploy_backup() {
    // Regression: the retry's pre-deploy backup was taken AFTER the failed run's migration, and
    // rollback restored that one (the database kept the bad migration).
    let (t, before_v2) = v1_deployed_with(&user_and_stations(50));
    // v2: 0003 applies (schema and data change), then 0004 fails; the deploy fails after migrating.
    migration(
        &t,
        "0003_notes.sql",
        "ALTER TABLE stations ADD COLUMN notes text; DELETE FROM stations WHERE id % 2 = 0;\n",
    );
    migration(&t, "0004_broken.sql", BROKEN);
    for attempt in ["first", "retry"] {
        let r = t.run(&["deploy", "--sha", V2]);
        assert_eq!(r.code, 1, "{attempt}: {}", r.all());
        assert_ne!(snapshot(&t), before_v2, "{attempt}: 0003 applied");
        std::thread::sleep(std::time::Duration::from_millis(1100)); // distinct backup names
    }
    let objects = pre_deploy_objects(&t, V2);
    assert_eq!(objects.len(), 2, "{objects:?}");

    let r = t.run(&["rollback", "--env", "local", "--dry-run", "--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let plan: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(plan["outcome"], "dry-run");
    assert_eq!(plan["planned_under_lock"], false);
    assert_eq!(plan["undone_runs"].as_array().unwrap().len(), 2, "{plan}");
    assert!(
        plan["backup_object"]
            .as_str()
            .unwrap()
            .ends_with(&objects[0]),
        "{plan}"
    );
    assert!(
        plan["backup_reason"]
            .as_str()
            .unwrap()
            .contains("FIRST of the 2 runs"),
        "{plan}"
    );
    assert!(
        r.stderr.contains("WITHOUT taking the deploy lock"),
        "{}",
        r.stderr
    );

    let r = t.run(&["rollback", "--env", "local", "--yes", "--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(report["backup_object"]
        .as_str()
        .unwrap()
        .ends_with(&objects[0]));
    assert_eq!(report["planned_under_lock"], true);
    // The database equals the FIRST pre-deploy backup: as it was before v2's migration.
    assert_eq!(snapshot(&t), before_v2);
    assert!(steps(&t.audit()).contains(&"rollback:lock ok".to_string()));
    assert!(!t.state_dir.join("deploy.lock").exists(), "lock released");

    // Twice in a row: refused, nothing changed, saying how to go further on purpose.
    let r = t.run(&["rollback", "--env", "local", "--yes"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr
            .contains(&format!("deploy {V2} was already rolled back at"))
            && r.stderr.contains("--again"),
        "{}",
        r.stderr
    );
    assert_eq!(snapshot(&t), before_v2);
    assert_eq!(
        t.audit().last().unwrap()["step"],
        "rollback",
        "the refused one wrote nothing"
    );
}

#[test]
fn a_rollback_without_an_audit_log_says_how_to_restore_by_hand() {
    let t = TestEnv::local(0o711);
    let log = t.state_dir.join("deploy-audit.jsonl");
    assert!(!log.exists());
    for extra in [&["--yes"][..], &["--dry-run"]] {
        let mut a = vec!["rollback", "--env", "local"];
        a.extend_from_slice(extra);
        let r = t.run(&a);
        assert_eq!(r.code, 1, "{}", r.all());
        assert!(
            r.stderr.contains("nothing to roll back")
                && r.stderr
                    .contains("`cargo xtask restore --env local --label pre-deploy-<sha7>`")
                && r.stderr.contains("`cargo xtask backup status --env local`"),
            "{}",
            r.stderr
        );
    }
    assert!(!log.exists());
}

/// `rollback --env local --json EXTRA` refused before its report: stdout is one JSON document
/// (nothing before or after it) with `outcome` failed at `step`, the exit code `code` (also the
/// process's) and a message saying `says`.
fn refused_with_one_document(t: &TestEnv, extra: &[&str], code: i32, step: &str, says: &str) {
    let mut a = vec!["rollback", "--env", "local", "--json"];
    a.extend_from_slice(extra);
    let r = t.run(&a);
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
}

#[test]
fn with_json_a_rollback_refused_before_its_plan_prints_one_json_document() {
    // Regression: `rollback --json` printed nothing on stdout when it was refused before a report
    // existed (nothing to roll back, no TTY without --yes, the lock held, the backup missing).
    let t = TestEnv::local(0o711);
    refused_with_one_document(&t, &["--yes"], 1, "plan", "nothing to roll back");
    refused_with_one_document(&t, &["--dry-run"], 1, "plan", "nothing to roll back");
    refused_with_one_document(&t, &["--to", "xyz", "--yes"], 2, "input", "--to");
    drop(t);
    let t = v1_deployed();
    migration(
        &t,
        "0003_notes.sql",
        "CREATE TABLE station_notes (id int);\n",
    );
    let r = t.run(&["deploy", "--sha", V2]);
    assert_eq!(r.code, 0, "{}", r.all());
    let after_v2 = snapshot(&t);
    refused_with_one_document(&t, &[], 2, "confirm", "--yes");
    {
        let _guard = hold_deploy_lock(&t);
        refused_with_one_document(&t, &["--yes"], 1, "lock", "another deploy holds the lock");
    }
    // The pre-deploy backup gone from the bucket.
    let dump = backup_files(&t, |n| {
        n.contains("pre-deploy-2222222") && n.ends_with(".sql.gz")
    })
    .into_iter()
    .next()
    .expect("v2's pre-deploy backup");
    let aside = dump.with_extension("aside");
    std::fs::rename(&dump, &aside).unwrap();
    refused_with_one_document(&t, &["--yes"], 1, "plan", "is not in");
    std::fs::rename(&aside, &dump).unwrap();
    assert_eq!(snapshot(&t), after_v2);
    assert!(kept_dbs(&t).is_empty());
    assert!(!t.state_dir.join("deploy.lock").exists());
}

#[test]
fn a_held_deploy_lock_refuses_the_rollback_before_it_reads_the_audit_log() {
    let t = v1_deployed();
    // An audit log that cannot be parsed: reading it would be exit 2 (input error).
    let log = t.state_dir.join("deploy-audit.jsonl");
    let before = std::fs::read_to_string(&log).unwrap();
    std::fs::write(&log, format!("{before}not json\n")).unwrap();
    let r = t.run(&["rollback", "--env", "local", "--yes"]);
    assert_eq!(r.code, 2, "the log is read without the lock: {}", r.all());
    // A deploy holding the lock: exit 1 naming it, before the log is read.
    let _guard = hold_deploy_lock(&t);
    let r = t.run(&["rollback", "--env", "local", "--yes"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("refusing to roll back")
            && r.stderr.contains("another deploy holds the lock"),
        "{}",
        r.stderr
    );
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        format!("{before}not json\n")
    );
    drop(_guard);
    // A stale lock (a killed deploy's: its process is gone) refuses too, naming --force-unlock,
    // which breaks it; then the log is read.
    let stale = lock_file_text(999_999_999, V2, "killed-deploy");
    std::fs::write(t.state_dir.join("deploy.lock"), stale).unwrap();
    let r = t.run(&["rollback", "--env", "local", "--yes"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("--force-unlock"), "{}", r.stderr);
    let r = t.run(&["rollback", "--env", "local", "--yes", "--force-unlock"]);
    assert_eq!(r.code, 2, "past the lock, the bad log line: {}", r.all());
    assert!(r.stderr.contains("broke a stale lock"), "{}", r.stderr);
    assert!(!t.state_dir.join("deploy.lock").exists(), "released again");
}

/// SIGTERM while the rollback holds the lock (here: while it lists the bucket, before the
/// restore; on a server the `compose pull` comes next): the handler is installed before the lock,
/// so the rollback stops and releases it instead of dying with it held (the next run needed
/// --force-unlock).
#[test]
fn a_sigterm_while_the_rollback_holds_the_lock_releases_it() {
    let t = TestEnv::local(0o711);
    let r = t.run(&["deploy", "--sha", V1]);
    assert_eq!(r.code, 0, "{}", r.all());
    let audit = t.audit();
    // A slow rclone for the rollback alone: it says when it started, then waits.
    let bin = t.dir.path().join("slow-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let mark = t.dir.path().join("rclone-started");
    let real = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v rclone"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let shim = bin.join("rclone");
    std::fs::write(
        &shim,
        format!(
            "#!/bin/sh\n: > '{}'\nsleep 2\nexec '{}' \"$@\"\n",
            mark.display(),
            real.trim()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&shim, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let child = t
        .command(&["rollback", "--env", "local", "--yes"])
        .env("PATH", path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lock = t.state_dir.join("deploy.lock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !(mark.exists() && lock.exists()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the rollback never listed the bucket"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(!lock.exists(), "the lock was left behind: {stderr}");
    assert_eq!(t.audit(), audit, "nothing recorded: {stderr}");
}

/// Stop the local redis-server (its pidfile) and wait until it is gone.
fn stop_redis(t: &TestEnv) {
    let pidfile = t.state_dir.join("redis/redis.pid");
    let pid = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .to_string();
    let ok = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(ok.success());
    for _ in 0..100 {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("redis-server {pid} did not stop");
}

#[test]
fn a_rollback_failing_after_its_swap_is_resumed_never_restored_twice() {
    // Regression: a rollback failing after its swap (here at verify-redis) was a failed
    // `rollback` that marked nothing undone, so a re-run restored the same backup again and moved
    // every write since the first swap into a second kept database.
    let (t, before_v2) =
        v1_deployed_with("INSERT INTO users (email, display_name) VALUES ('a@example.org', 'A')");
    migration(
        &t,
        "0003_notes.sql",
        "CREATE TABLE station_notes (id int);\n",
    );
    let r = t.run(&["deploy", "--sha", V2]);
    assert_eq!(r.code, 0, "{}", r.all());
    let after_v2 = snapshot(&t);

    // Expecting to undo another deploy than the plan under the lock: refused, nothing changed.
    let audit_len = t.audit().len();
    let r = t.run(&[
        "rollback",
        "--env",
        "local",
        "--yes",
        "--expect-undo",
        V1,
        "--json",
    ]);
    assert_eq!(r.code, 1, "{}", r.all());
    // --json prints the report on a failure too, naming the step.
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        (report["outcome"].as_str(), report["failed_step"].as_str()),
        (Some("failed"), Some("expect-undo")),
        "{report}"
    );
    assert!(
        r.stderr
            .contains(&format!("undoes {V2}, not {V1} as expected"))
            && r.stderr.contains("nothing was changed"),
        "{}",
        r.stderr
    );
    assert_eq!(snapshot(&t), after_v2);
    assert_eq!(t.audit().len(), audit_len, "nothing recorded");
    assert!(!t.state_dir.join("deploy.lock").exists(), "lock released");

    stop_redis(&t);
    let r = t.run(&[
        "rollback",
        "--env",
        "local",
        "--yes",
        "--expect-undo",
        V2,
        "--json",
    ]);
    assert_ne!(r.code, 0, "verify-redis fails: {}", r.all());
    assert!(
        r.stderr.contains("the database WAS rolled back") && r.stderr.contains("--resume"),
        "{}",
        r.stderr
    );
    // The report after a committed swap: failed at verify-redis, the restore's own report in it.
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        (report["outcome"].as_str(), report["failed_step"].as_str()),
        (Some("failed"), Some("verify-redis")),
        "{report}"
    );
    assert_eq!(report["undone_sha"], V2);
    assert_eq!(report["restore"]["outcome"], "ok", "{report}");
    assert!(
        report["message"]
            .as_str()
            .unwrap()
            .contains("the database WAS rolled back"),
        "{report}"
    );
    assert_eq!(snapshot(&t), before_v2);
    assert_eq!(kept_dbs(&t).len(), 1);
    let last = t.audit().last().unwrap().clone();
    assert_eq!(
        (last["step"].as_str(), last["status"].as_str()),
        (Some("rollback"), Some("failed"))
    );
    assert!(steps(&t.audit()).contains(&"rollback:swap ok".to_string()));
    // A write after the rollback's swap: a second restore would move it into a kept database.
    sql(
        &t,
        "station",
        "INSERT INTO users (email, display_name) VALUES ('b@example.org', 'B')",
    );
    let after_swap = snapshot(&t);

    // A plain re-run: refused, no second restore, saying what is left and how.
    let r = t.run(&["rollback", "--env", "local", "--yes"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("the database was already rolled back at")
            && r.stderr.contains(
                "health and verify-redis; `cargo xtask rollback --env local --resume --yes`"
            ),
        "{}",
        r.stderr
    );
    assert_eq!(kept_dbs(&t).len(), 1, "restored a second time");
    assert_eq!(snapshot(&t), after_swap);

    // Resumed while Redis is still down: fails at verify-redis again, restores nothing.
    let r = t.run(&["rollback", "--env", "local", "--yes", "--resume", "--json"]);
    assert_ne!(r.code, 0, "{}", r.all());
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        (report["outcome"].as_str(), report["failed_step"].as_str()),
        (Some("failed"), Some("verify-redis")),
        "{report}"
    );
    assert!(r.stderr.contains("--resume --yes` again"), "{}", r.stderr);
    assert_eq!(kept_dbs(&t).len(), 1);

    // Redis back: the resume runs just the steps left and finishes the rollback.
    let r = t.run(&["local", "up"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let r = t.run(&["rollback", "--env", "local", "--yes", "--resume", "--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["outcome"], "ok");
    assert_eq!(report["undone_sha"], V2);
    assert!(
        r.stderr.contains("nothing is restored again"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("==> swap"), "{}", r.stderr);
    assert_eq!(kept_dbs(&t).len(), 1);
    assert_eq!(snapshot(&t), after_swap);
    let audit = t.audit();
    let last = audit.last().unwrap();
    assert_eq!(
        (last["step"].as_str(), last["status"].as_str()),
        (Some("rollback:resume"), Some("ok"))
    );
    assert_eq!(
        steps(&audit)
            .iter()
            .filter(|s| *s == "rollback:swap ok")
            .count(),
        1
    );
    // Finished: a further rollback is the ordinary cascade refusal; --resume has nothing left.
    let r = t.run(&["rollback", "--env", "local", "--yes"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("--again"), "{}", r.stderr);
    let r = t.run(&["rollback", "--env", "local", "--yes", "--resume"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("nothing to resume"), "{}", r.stderr);
    assert_eq!(kept_dbs(&t).len(), 1);
}

/// `--rollback-on-failure` restoring the failed run's own backup replays it as the database user
/// (the backup is pinned by the sha256 the deploy verified): a database with default privileges,
/// which the restore's own role cannot replay, is rolled back too.
#[test]
fn rollback_on_failure_restores_the_runs_own_backup_with_default_privileges() {
    let (t, before) = v1_deployed_with(
        "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO PUBLIC; \
         INSERT INTO users (email, display_name) VALUES ('d@example.org', 'D')",
    );
    let r = deploy_breaking_at(&t, "0003_broken.sql", V2, &["--rollback-on-failure"]);
    assert!(
        r.stderr.contains("rolled back (--rollback-on-failure)"),
        "{}",
        r.stderr
    );
    assert_eq!(snapshot(&t), before);
    // Not pinned (a plain restore of that backup), it replays as the restore's role: refused,
    // naming --trust-dump.
    let r = t.run(&[
        "restore",
        "--env",
        "local",
        "--label",
        "pre-deploy-2222222",
        "--yes",
    ]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("--trust-dump"), "{}", r.stderr);
    assert_eq!(snapshot(&t), before);
}

/// A running xtask whose stdout and stderr are read as they come (a pipe left unread would stop
/// it once full).
struct Watched {
    child: std::process::Child,
    stdout: std::sync::Arc<std::sync::Mutex<String>>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Watched {
    fn spawn(mut c: Command) -> Watched {
        let mut child = c
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        fn read(
            from: impl std::io::Read + Send + 'static,
        ) -> (
            std::sync::Arc<std::sync::Mutex<String>>,
            std::thread::JoinHandle<()>,
        ) {
            let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
            let into = text.clone();
            let h = std::thread::spawn(move || {
                for line in
                    std::io::BufRead::lines(std::io::BufReader::new(from)).map_while(|l| l.ok())
                {
                    let mut t = into.lock().unwrap();
                    t.push_str(&line);
                    t.push('\n');
                }
            });
            (text, h)
        }
        let (stdout, a) = read(child.stdout.take().unwrap());
        let (stderr, b) = read(child.stderr.take().unwrap());
        Watched {
            child,
            stdout,
            stderr,
            readers: vec![a, b],
        }
    }

    fn stderr_has(&self, what: &str) -> bool {
        self.stderr.lock().unwrap().contains(what)
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGTERM to xtask alone (not its process group), as a cancelled CI job's runner sends it.
    fn sigterm(&self) {
        assert!(Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success());
    }

    fn finish(mut self) -> deploy_support::Run {
        let status = self.child.wait().unwrap();
        for h in self.readers.drain(..) {
            h.join().unwrap();
        }
        let text = |s: &std::sync::Arc<std::sync::Mutex<String>>| s.lock().unwrap().clone();
        deploy_support::Run {
            code: status.code().unwrap_or(-1),
            stdout: text(&self.stdout),
            stderr: text(&self.stderr),
        }
    }
}

/// v1 deployed with `rows`; v2 brings 0003 (it applies: a new column) and a broken 0004, and
/// runs with `--rollback-on-failure` (spawned): the live database's snapshot before v2.
fn rollback_on_failure_running(t: &TestEnv, rows: &str) -> ((String, String), Watched) {
    let r = t.run(&["deploy", "--sha", V1]);
    assert_eq!(r.code, 0, "{}", r.all());
    sql(t, "station", rows);
    let before_v2 = snapshot(t);
    migration(
        t,
        "0003_notes.sql",
        "ALTER TABLE stations ADD COLUMN notes text;\n",
    );
    migration(t, "0004_broken.sql", BROKEN);
    let w = Watched::spawn(t.command(&["deploy", "--sha", V2, "--rollback-on-failure"]));
    (before_v2, w)
}

/// What a rollback stopped before its swap leaves: the live database as the failed deploy left it
/// (0003 applied, not rolled back), no scratch database or role, nothing kept, no swap, the lock
/// released; and what it said is true (restore's words, not the deploy's).
fn assert_stopped_before_the_swap(
    t: &TestEnv,
    before_v2: &(String, String),
    r: &deploy_support::Run,
) {
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr
            .contains("--rollback-on-failure: running `cargo xtask rollback"),
        "{}",
        r.stderr
    );
    // The deploy's last words: the rollback FAILED, interrupted.
    let failed = r
        .stderr
        .lines()
        .find(|l| {
            l.starts_with(
                "--rollback-on-failure: `cargo xtask rollback --env local --yes` FAILED: \
                 rollback of 2222222bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb failed: ",
            )
        })
        .unwrap_or_else(|| panic!("no FAILED line: {}", r.stderr));
    assert!(
        failed.contains("interrupted (Ctrl-C, SIGTERM or SIGHUP)"),
        "{failed}"
    );
    assert!(
        !r.stderr.contains("rolled back (--rollback-on-failure)"),
        "{}",
        r.stderr
    );
    // The deploy's steps had ended: its "stopping after the running step" would be false.
    assert!(
        !r.stderr.contains("stopping after the running step"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("finished first"), "{}", r.stderr);
    assert_ne!(&snapshot(t), before_v2, "the live database was rolled back");
    assert_eq!(
        sql(
            t,
            "station",
            "SELECT count(*) FROM information_schema.columns \
             WHERE table_name = 'stations' AND column_name = 'notes'"
        ),
        "1"
    );
    assert_eq!(
        sql(
            t,
            "postgres",
            "SELECT datallowconn || ' ' || datconnlimit FROM pg_database WHERE datname = 'station'"
        ),
        "true -1"
    );
    assert!(scratch_dbs(t).is_empty(), "{:?}", scratch_dbs(t));
    assert!(kept_dbs(t).is_empty(), "{:?}", kept_dbs(t));
    assert_eq!(
        sql(
            t,
            "postgres",
            "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'station\\_restore\\_%'"
        ),
        "0"
    );
    assert!(
        !t.state_dir.join("deploy.lock").exists(),
        "the lock was left behind"
    );
    let audit = steps(&t.audit());
    assert!(
        !audit.contains(&"rollback:swap ok".to_string()),
        "{audit:?}"
    );
    assert!(
        audit.contains(&"rollback:pipeline interrupted".to_string()),
        "{audit:?}"
    );
}

/// `deploy --rollback-on-failure` runs its rollback in the deploy's process, whose signal handler
/// was the deploy's: SIGTERM while the rollback's restore replays the backup stops the replay as a
/// restore's would (regression: restore's handler was never installed, ctrlc refusing a second
/// one, so the replay went on and the rollback swapped the database after the signal).
#[test]
fn a_sigterm_while_rollback_on_failure_replays_stops_it_before_the_swap() {
    let t = TestEnv::local(0o711);
    // Big enough that the replay takes a while.
    let (before_v2, mut w) = rollback_on_failure_running(
        &t,
        "CREATE TABLE big (id int PRIMARY KEY, v text); \
         INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 1500000) g;",
    );
    let deadline = Instant::now() + Duration::from_secs(180);
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
        assert!(w.running(), "the deploy ended before the replay was seen");
        assert!(
            Instant::now() < deadline,
            "the rollback's replay never started"
        );
        std::thread::sleep(Duration::from_millis(30));
    }
    assert!(w.stderr_has("--rollback-on-failure: running"));
    let signalled = Instant::now();
    w.sigterm();
    let r = w.finish();
    let took = signalled.elapsed();
    assert!(
        r.stderr
            .contains("interrupted: stopping before the swap (the live database stays as it is)"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("before the swap: the live database is untouched"),
        "{}",
        r.stderr
    );
    assert_stopped_before_the_swap(&t, &before_v2, &r);
    assert!(took < Duration::from_secs(15), "{took:?}: {}", r.all());
}

/// The same while the rollback's swap waits for a session that does not end (a stopped backend):
/// the swap is called off at once, not after the rollback's 10 s of `--swap-wait`.
#[test]
fn a_sigterm_while_rollback_on_failure_waits_in_the_swap_calls_it_off() {
    let t = TestEnv::local(0o711);
    let r = t.run(&["local", "up"]);
    assert_eq!(r.code, 0, "{}", r.all());
    // A session on the live database that cannot be ended: its backend stopped.
    let (mut stuck, pid) = deploy_support::stuck_session(&t, "xtask-test-stuck-rollback", 300);
    let (before_v2, mut w) = rollback_on_failure_running(&t, &user_and_stations(20));
    let deadline = Instant::now() + Duration::from_secs(180);
    // The swap blocks the live database, then waits for the stopped session.
    while !(w.stderr_has("==> swap")
        && sql(
            &t,
            "postgres",
            "SELECT datallowconn FROM pg_database WHERE datname = 'station'",
        ) == "f")
    {
        assert!(w.running(), "the deploy ended before the swap was seen");
        assert!(
            Instant::now() < deadline,
            "the rollback's swap never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let signalled = Instant::now();
    w.sigterm();
    let deadline = Instant::now() + Duration::from_secs(25);
    while !w.stderr_has("    swap ") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = signalled.elapsed();
    // The stopped backend also holds up the guard's DROP DATABASE: continued once the swap ended.
    let _ = Command::new("kill").args(["-CONT", &pid]).status();
    let r = w.finish();
    let _ = stuck.kill();
    let _ = stuck.wait();
    assert!(
        took < Duration::from_secs(5),
        "the swap did not end promptly after SIGTERM ({took:?}): {}",
        r.all()
    );
    assert!(r.stderr.contains("swap interrupted"), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("swap refused: interrupted (Ctrl-C, SIGTERM or SIGHUP)"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("the swap is called off"), "{}", r.stderr);
    assert_stopped_before_the_swap(&t, &before_v2, &r);
}
