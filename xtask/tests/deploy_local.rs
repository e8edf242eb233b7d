//! The whole pipeline on the local environment, for real: `cargo xtask deploy` with no arguments
//! brings a fresh environment up, backs up into the rclone remote, verifies the object, migrates,
//! checks health and Redis durability, and writes the audit log. Then: a new migration is applied by
//! the next deploy, a failing one is rolled back and stops the pipeline, and `cargo xtask migrate` on
//! its own refuses without a verified pre-deploy backup for the SHA.

mod deploy_support;

use deploy_support::{backup_files, repo, steps, Run, TestEnv};
use xtask::services::procscan::ArgvWatch;

fn head() -> String {
    let o = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(repo())
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// The dumps (`*_<label>.sql.gz`, not their `.json` manifests) in the remote's directory.
fn backup_objects(t: &TestEnv, label: &str) -> Vec<std::path::PathBuf> {
    let suffix = format!("_{label}.sql.gz");
    backup_files(t, |n| n.ends_with(&suffix))
}

#[test]
fn deploy_from_scratch_then_new_and_failing_migrations() {
    let t = TestEnv::local(0o711);
    let sha = head();
    let r = t.run(&["deploy"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains(&format!("deployed {sha} to `local`")),
        "{}",
        r.stdout
    );

    // The backup object exists in the rclone remote's directory and is a gzip.
    let label = format!("pre-deploy-{}", &sha[..7]);
    let objs = backup_objects(&t, &label);
    assert_eq!(objs.len(), 1, "{objs:?}");
    let bytes = std::fs::read(&objs[0]).unwrap();
    assert!(bytes.len() > 20 && bytes[..2] == [0x1f, 0x8b]);
    // Beside it, its manifest, recording the deployed commit (deploy passes BACKUP_GIT_SHA).
    let mpath = format!("{}.json", objs[0].display());
    let m =
        xtask::backup::manifest::parse(&std::fs::read_to_string(&mpath).unwrap(), &mpath).unwrap();
    assert_eq!(m.git_sha.as_deref(), Some(sha.as_str()));
    assert_eq!(m.size, bytes.len() as u64);

    // Migrations applied, in order, recorded.
    assert_eq!(
        t.psql_ok("SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_migrations"),
        "1,2"
    );
    assert_eq!(
        t.psql_ok("SELECT column_default FROM information_schema.columns WHERE table_name = 'stations' AND column_name = 'status'"),
        "'active'::text"
    );

    // Audit log: every step ok, with the SHA and the backup object; the lock released.
    let audit = t.audit();
    let steps = steps(&audit);
    assert_eq!(
        steps,
        [
            "preflight ok",
            "lock ok",
            "backup ok",
            "verify-backup ok",
            "migrate ok",
            "rollout ok",
            "health ok",
            "verify-redis ok",
            "pipeline ok"
        ]
    );
    assert!(audit.iter().all(|a| a["sha"] == sha.as_str()));
    let obj = audit[8]["backup_object"].as_str().unwrap();
    assert!(
        obj.starts_with("b2:station-backups/postgres/") && obj.contains(&label),
        "{obj}"
    );
    assert!(!t.state_dir.join("deploy.lock").exists());

    // A new migration is applied by the next deploy (JSON report this time).
    std::fs::write(
        t.migrations.join("0003_add_station_notes.sql"),
        "ALTER TABLE stations ADD COLUMN notes text;\n",
    )
    .unwrap();
    // The dry run lists exactly the commands the real run then executes (XTASK_DEPLOY_TRACE
    // records each one as the runner runs it, redacted like the plan).
    let plan = t.run(&["deploy", "--sha", "1111111aaaa", "--dry-run", "--json"]);
    assert_eq!(plan.code, 0, "{}", plan.all());
    let plan: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    let planned: Vec<String> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["commands"].as_array().unwrap().clone())
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert!(
        planned
            .iter()
            .any(|c| c.contains("psql") && c.contains("SELECT 1")),
        "{planned:?}"
    );
    let trace = t.state_dir.join("../deploy-trace.txt");
    let _ = std::fs::remove_file(&trace);
    let r = Run::from(
        t.command(&["deploy", "--sha", "1111111aaaa", "--json"])
            .env("XTASK_DEPLOY_TRACE", &trace)
            .output()
            .unwrap(),
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let executed: Vec<String> = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    // Locally the only commands are the health poll's; a poll that needs another round runs the
    // same commands again.
    assert!(
        !executed.is_empty() && executed.len().is_multiple_of(planned.len()),
        "{executed:?}"
    );
    for round in executed.chunks(planned.len()) {
        assert_eq!(round, planned);
    }
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["outcome"], "ok");
    assert_eq!(report["steps"][4]["step"], "migrate");
    assert_eq!(
        report["steps"][4]["message"],
        "applied 1: 0003_add_station_notes"
    );
    assert_eq!(t.psql_ok("SELECT max(version) FROM schema_migrations"), "3");

    // A failing migration is rolled back entirely, stops the pipeline, and is not recorded.
    std::fs::write(
        t.migrations.join("0004_broken.sql"),
        "CREATE TABLE half_done (x int);\nSELECT * FROM no_such_table;\n",
    )
    .unwrap();
    let r = t.run(&["deploy", "--sha", "2222222bbbb"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("deploy stopped at step `migrate`"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("0004_broken.sql failed and was rolled back"),
        "{}",
        r.stderr
    );
    assert_eq!(t.psql_ok("SELECT max(version) FROM schema_migrations"), "3");
    assert_eq!(
        t.psql_ok("SELECT to_regclass('public.half_done') IS NULL"),
        "t"
    );
    assert!(!t.state_dir.join("deploy.lock").exists());
    // It had a verified backup of its own before migrating.
    assert_eq!(backup_objects(&t, "pre-deploy-2222222").len(), 1);
}

#[test]
fn migrate_alone_needs_a_verified_backup_for_the_sha() {
    let t = TestEnv::local(0o711);
    assert_eq!(t.run(&["local", "up"]).code, 0);
    let r = t.run(&["migrate", "--env", "local", "--sha", "abcdef0123"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("refusing to migrate"), "{}", r.stderr);
    assert!(r.stderr.contains("pre-deploy-abcdef0"), "{}", r.stderr);
    assert_eq!(
        t.psql_ok("SELECT to_regclass('public.schema_migrations') IS NULL"),
        "t"
    );

    // With the pre-deploy backup of that SHA in the bucket (made by a deploy), it migrates.
    assert_eq!(t.run(&["deploy", "--sha", "abcdef0123"]).code, 0);
    std::fs::write(
        t.migrations.join("0003_add_station_notes.sql"),
        "ALTER TABLE stations ADD COLUMN notes text;\n",
    )
    .unwrap();
    let r = t.run(&["migrate", "--env", "local", "--sha", "abcdef0123"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout
            .contains("verified pre-deploy backup: b2:station-backups/postgres/"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("applied 1: 0003_add_station_notes"),
        "{}",
        r.stdout
    );
    // Another SHA's backup does not count.
    let r = t.run(&["migrate", "--env", "local", "--sha", "9999999"]);
    assert_eq!(r.code, 1, "{}", r.all());
}

/// While a deploy runs, no process on the machine has a password of the environment on its command
/// line; and neither password is in the deploy's output or its audit log.
#[test]
fn no_password_on_any_command_line_output_or_log_during_a_deploy() {
    let t = TestEnv::local(0o711);
    assert_eq!(t.run(&["local", "up"]).code, 0);
    let s = t.state();
    let secrets = [
        s["pg_password"].as_str().unwrap().to_string(),
        s["redis_password"].as_str().unwrap().to_string(),
    ];
    // Scanning continuously (no pause between scans), as this test always has.
    let watch = ArgvWatch::start_every(&secrets, std::time::Duration::ZERO);
    let child = t
        .command(&["deploy", "--sha", "5555555eeee"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let seen = watch.argvs_read();
    let leaks = watch.stop();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(seen > 100, "the scan did not run");
    assert!(leaks.is_empty(), "password on a command line: {leaks:?}");
    let audit = std::fs::read_to_string(t.state_dir.join("deploy-audit.jsonl")).unwrap();
    for p in &secrets {
        assert!(!text.contains(p.as_str()) && !audit.contains(p.as_str()));
    }
}

/// A migration whose UPDATE fails a constraint on a row already in the database: the failing
/// row's values (psql's `DETAIL: Failing row contains (...)`) are in neither the output nor the
/// audit log; the error itself is.
#[test]
fn a_failing_migration_does_not_quote_the_row_it_failed_on() {
    let t = TestEnv::local(0o711);
    let r = t.run(&["deploy"]);
    assert_eq!(r.code, 0, "{}", r.all());
    t.psql_ok(
        "CREATE TABLE people (id int PRIMARY KEY, ssn text NOT NULL, note text NOT NULL); \
         INSERT INTO people VALUES (1, '123-45-6789', 'kept')",
    );
    std::fs::write(
        t.migrations.join("0003_clear_notes.sql"),
        "UPDATE people SET note = NULL;\n",
    )
    .unwrap();
    let r = t.run(&["deploy", "--sha", "3333333cccc", "--json"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("violates not-null constraint"),
        "{}",
        r.stderr
    );
    assert!(!r.all().contains("123-45-6789"), "{}", r.all());
    let audit = std::fs::read_to_string(t.state_dir.join("deploy-audit.jsonl")).unwrap();
    assert!(audit.contains("violates not-null constraint"), "{audit}");
    assert!(!audit.contains("123-45-6789"), "{audit}");
}
