//! `cargo xtask deploy` on the local environment: dry run, SHA validation, the lock (held, stale,
//! `--force-unlock`), fail-closed when the backup remote is unreachable, GitHub Actions output, Ctrl-C.
//! Everything runs for real (PostgreSQL, redis-server, rclone) in a temp directory.

mod deploy_support;

use deploy_support::TestEnv;

const SHA: &str = "0123abc4567def89";

fn lock_json(token: &str, pid: u32, expires_in: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    serde_json::json!({
        "owner": "someone-else",
        "host": std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim(),
        "pid": pid,
        "sha": "feedfacecafe",
        "started_unix": now - 3600,
        "expires_unix": now + expires_in,
        "run_url": "https://github.com/o/r/actions/runs/1",
        "token": token,
    })
    .to_string()
}

fn steps_of(audit: &[serde_json::Value]) -> Vec<(String, String)> {
    audit
        .iter()
        .map(|r| {
            (
                r["step"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn table_exists(t: &TestEnv, name: &str) -> bool {
    t.psql_ok(&format!("SELECT to_regclass('public.{name}') IS NOT NULL")) == "t"
}

#[test]
fn dry_run_prints_every_step_redacted_and_changes_nothing() {
    let t = TestEnv::local(0o711);
    let r = t.run(&["deploy", "--dry-run", "--sha", SHA]);
    assert_eq!(r.code, 0, "{}", r.all());
    for (i, step) in [
        "preflight",
        "lock",
        "backup",
        "verify-backup",
        "migrate",
        "rollout",
        "health",
        "verify-redis",
    ]
    .iter()
    .enumerate()
    {
        assert!(
            r.stdout.contains(&format!("{}. {step}: ", i + 1)),
            "{step}: {}",
            r.stdout
        );
    }
    assert!(r.stdout.contains("LABEL=pre-deploy-0123abc"));
    assert!(
        !t.state_dir.exists(),
        "a dry run created {}",
        t.state_dir.display()
    );

    // With the environment up, the plan shows the exact psql commands, password redacted.
    assert_eq!(t.run(&["local", "up"]).code, 0);
    let pw = t.state()["pg_password"].as_str().unwrap().to_string();
    let r = t.run(&["deploy", "--dry-run", "--sha", SHA]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout
            .contains("PGPASSWORD='***' psql -X -q -v ON_ERROR_STOP=1 -A -t -f -  < one session: pg_try_advisory_lock"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("0002_station_status_and_indexes.sql"));
    assert!(!r.all().contains(&pw), "password in the plan");
    assert!(!t.state_dir.join("deploy.lock").exists());
    assert!(!t.state_dir.join("deploy-audit.jsonl").exists());
    assert!(!table_exists(&t, "schema_migrations"));

    let r = t.run(&["deploy", "--dry-run", "--json", "--sha", SHA]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["steps"].as_array().unwrap().len(), 8);
    assert_eq!(v["steps"][4]["step"], "migrate");
}

#[test]
fn bad_input_is_exit_2() {
    let t = TestEnv::local(0o711);
    for sha in ["abc", "xyz1234", "abc1234;touch /tmp/x", "-abcdef0"] {
        let r = t.run(&["deploy", "--sha", sha]);
        assert_eq!(r.code, 2, "{sha}: {}", r.all());
    }
    assert_eq!(t.run(&["deploy", "--env", "nope", "--sha", SHA]).code, 2);
    assert_eq!(
        t.run(&["deploy", "--step", "migrate", "--sha", SHA]).code,
        2
    );
    assert!(!t.state_dir.exists());
}

#[test]
fn a_held_lock_refuses_a_second_deploy_before_anything_changes() {
    let t = TestEnv::local(0o711);
    std::fs::create_dir_all(&t.state_dir).unwrap();
    let lock = t.state_dir.join("deploy.lock");
    // Held by a live process on this host (this test) with an hour to go.
    std::fs::write(&lock, lock_json("theirs", std::process::id(), 3600)).unwrap();
    let r = t.run(&["deploy", "--sha", SHA]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("another deploy holds the lock"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("held by someone-else"), "{}", r.stderr);
    assert!(r.stderr.contains("No migration was run"), "{}", r.stderr);
    // Their lock is untouched; --force-unlock does not break a live lock.
    assert!(std::fs::read_to_string(&lock).unwrap().contains("theirs"));
    let r = t.run(&["deploy", "--sha", SHA, "--force-unlock"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(std::fs::read_to_string(&lock).unwrap().contains("theirs"));
    let steps = steps_of(&t.audit());
    assert_eq!(
        &steps[..3],
        [
            ("preflight".into(), "ok".into()),
            ("lock".into(), "failed".into()),
            ("pipeline".into(), "failed".into())
        ]
    );
    assert!(!table_exists(&t, "schema_migrations"));
}

#[test]
fn a_stale_lock_is_reported_and_broken_only_with_force_unlock() {
    let t = TestEnv::local(0o711);
    std::fs::create_dir_all(&t.state_dir).unwrap();
    let lock = t.state_dir.join("deploy.lock");
    std::fs::write(&lock, lock_json("stale", std::process::id(), -60)).unwrap();
    let r = t.run(&["deploy", "--sha", SHA]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("stale deploy lock"), "{}", r.stderr);
    assert!(r.stderr.contains("--force-unlock"), "{}", r.stderr);
    assert!(std::fs::read_to_string(&lock).unwrap().contains("stale"));

    let r = t.run(&["deploy", "--sha", SHA, "--force-unlock"]);
    let audit = t.audit();
    let lock_rec = audit
        .iter()
        .rev()
        .find(|a| a["step"] == "lock")
        .expect("lock step recorded");
    assert_eq!(lock_rec["status"], "ok", "{}", r.all());
    assert!(lock_rec["message"]
        .as_str()
        .unwrap()
        .contains("broke a stale lock"));
    // Whatever happened after, our lock is released.
    assert!(!lock.exists(), "lock left behind: {}", r.all());
}

#[test]
fn fail_closed_when_the_backup_remote_is_unreachable() {
    let mut t = TestEnv::local(0o711);
    let closed = xtask::services::free_port().unwrap();
    let secret = "unreachable-secret-5f1d9c";
    t.extra_env = vec![
        ("RCLONE_CONFIG_B2_TYPE".into(), "s3".into()),
        ("RCLONE_CONFIG_B2_PROVIDER".into(), "Other".into()),
        (
            "RCLONE_CONFIG_B2_ENDPOINT".into(),
            format!("http://127.0.0.1:{closed}"),
        ),
        ("RCLONE_CONFIG_B2_ACCESS_KEY_ID".into(), "test-key".into()),
        ("RCLONE_CONFIG_B2_SECRET_ACCESS_KEY".into(), secret.into()),
        // backup-db.sh's own retry knobs: fail in seconds, not tens of seconds.
        ("BACKUP_RCLONE_RETRIES".into(), "1".into()),
        ("BACKUP_RCLONE_LOW_LEVEL_RETRIES".into(), "1".into()),
        ("GITHUB_ACTIONS".into(), "true".into()),
    ];
    let summary = t.dir.path().join("summary.md");
    t.extra_env
        .push(("GITHUB_STEP_SUMMARY".into(), summary.display().to_string()));
    let r = t.run(&["deploy", "--sha", SHA]);
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(
        r.stderr.contains("deploy stopped at step `backup`"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("No migration was run"), "{}", r.stderr);
    // Nothing was migrated.
    assert!(!table_exists(&t, "schema_migrations"));
    assert!(!table_exists(&t, "users"));
    // The lock is released, the audit log has the failure and no step after it.
    assert!(!t.state_dir.join("deploy.lock").exists());
    let steps = steps_of(&t.audit());
    assert_eq!(
        steps,
        [
            ("preflight".to_string(), "ok".to_string()),
            ("lock".into(), "ok".into()),
            ("backup".into(), "failed".into()),
            ("pipeline".into(), "failed".into()),
        ]
    );
    // GitHub Actions: a group per step, an error with the fix, a summary table.
    assert!(r.stdout.contains("::group::deploy: backup"), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("::error title=deploy step `backup` failed::"),
        "{}",
        r.stdout
    );
    let md = std::fs::read_to_string(&summary).unwrap();
    assert!(md.contains("| backup | failed |"), "{md}");
    assert!(md.contains("| migrate | skipped |"), "{md}");
    // The secret never shows.
    let audit_text = std::fs::read_to_string(t.state_dir.join("deploy-audit.jsonl")).unwrap();
    assert!(!r.all().contains(secret) && !audit_text.contains(secret) && !md.contains(secret));
}

/// Start a deploy of a fresh environment, send `signal` to xtask (only) while preflight brings the
/// environment up, and check that the pipeline stopped after the running step.
fn deploy_stops_closed_on(signal: &str) {
    let t = TestEnv::local(0o711);
    // A fresh environment: preflight runs initdb (seconds), so the signal lands during a step.
    let child = t
        .command(&["deploy", "--sha", SHA])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until preflight is bringing the environment up (the state dir appears; initdb follows).
    let t0 = std::time::Instant::now();
    while !t.state_dir.join("state.json").exists() {
        assert!(t0.elapsed().as_secs() < 30, "preflight never started");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // The signal to xtask only (a terminal would signal its children too; this is the harder case).
    let st = std::process::Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // Killed by the signal would be no exit code at all: the handler ran and the pipeline stopped.
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert!(err.contains("No migration was run"), "{err}");
    let audit = t.audit();
    let last = audit.last().unwrap();
    assert_eq!(last["step"], "pipeline");
    assert_eq!(last["status"], "interrupted");
    assert!(!t.state_dir.join("deploy.lock").exists());
}

#[test]
fn ctrl_c_stops_after_the_running_step_and_records_interrupted() {
    deploy_stops_closed_on("-INT");
}

/// A CI runner cancels a job with SIGTERM (ctrlc's `termination` feature): same as Ctrl-C.
#[test]
fn sigterm_stops_after_the_running_step_and_releases_the_lock() {
    deploy_stops_closed_on("-TERM");
}

#[test]
fn json_stdout_stays_pure_json_in_github_actions() {
    let mut t = TestEnv::local(0o711);
    t.extra_env = vec![("GITHUB_ACTIONS".into(), "true".into())];
    // Health of an environment that was never brought up: fails at once, with groups and an
    // error annotation on the way.
    let r = t.run(&[
        "deploy",
        "--json",
        "--sha",
        SHA,
        "--step",
        "health",
        "--health-tries",
        "1",
    ]);
    assert_eq!(r.code, 3, "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{}", r.stdout));
    assert_eq!(v["outcome"], "failed");
    // The workflow commands still reach the runner, on stderr.
    assert!(r.stderr.contains("::group::deploy: health"), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("::error title=deploy step `health` failed::"),
        "{}",
        r.stderr
    );
}
