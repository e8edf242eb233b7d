//! The whole remote pipeline for real: `cargo xtask deploy --env staging` over a real `sshd` on a
//! loopback port whose "server" is this machine's Docker engine (the harness is
//! `common/remote_docker.rs`). The test override gives backend/frontend a busybox `httpd` image tagged
//! with the release SHA (`pull_policy: never`: `docker compose pull` skips them) and free ports.
//!
//! Before the deploy, the "previous release" runs (postgres + redis, `up -d --wait`) with some data.
//! Then, with the server's rclone config pointing at a dead S3 endpoint, the deploy must stop at the
//! backup: exit non-zero, no migration (its table absent), no rollout, lock released, the failure in
//! both audit logs. With the config fixed (an rclone alias of a directory: the server's bucket), the
//! same deploy must go through every step: preflight → lock → sync → backup (backup-db.sh in
//! compose mode on the server) → verify-backup → migrate (the configured command, on the server) →
//! rollout (`docker compose pull` + `up -d`) → health (the health_url polled from the server) →
//! verify-redis (exec over SSH). No password on any argv (every process is watched), none in output.

#[path = "common/remote_docker.rs"]
mod remote_docker;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use remote_docker::{Server, Spec};
use xtask::e2e::images;
use xtask::services::procscan::ArgvWatch;

const SHA: &str = "c0ffee1234567890abcdef0123456789abcdef01";
const MIGRATED_TABLE: &str = "remote_migration";

/// The test override: backend/frontend from a locally tagged image (busybox httpd), on free ports.
fn app_override(app_image: &str, backend_port: u16, frontend_port: u16) -> String {
    format!(
        r#"# Test-only (deploy_remote_docker.rs): backend/frontend are busybox httpd in a locally built
# image tagged with the release SHA; never pulled.
services:
  backend:
    image: {app_image}:${{STATION_TAG:?set STATION_TAG}}
    pull_policy: never
    # busybox httpd as PID 1 ignores SIGTERM: stop it at once (`down` would wait the grace period).
    stop_signal: SIGKILL
    command: ["sh", "-c", "mkdir -p /srv/api && printf '%s' \"$$STATION_RELEASE\" > /srv/api/health && exec httpd -f -p 3000 -h /srv"]
    environment:
      STATION_RELEASE: ${{STATION_TAG}}
    ports: !override
      - "127.0.0.1:{backend_port}:3000"
    healthcheck:
      interval: 1s
      timeout: 5s
      retries: 30
  frontend:
    image: {app_image}:${{STATION_TAG:?set STATION_TAG}}
    pull_policy: never
    stop_signal: SIGKILL
    command: ["sh", "-c", "mkdir -p /srv && echo station > /srv/index.html && exec httpd -f -p 80 -h /srv"]
    ports: !override
      - "127.0.0.1:{frontend_port}:80"
    healthcheck:
      interval: 1s
      timeout: 5s
      retries: 30
"#
    )
}

/// The server with the previous release (postgres + redis, two accounts) running, its rclone config
/// empty (each part of the test writes its own).
fn start() -> Server {
    Server::start(Spec {
        name: "remote",
        app_override,
        migration_command: format!(
            r#"docker compose exec -T postgres psql -X -q -v ON_ERROR_STOP=1 -U station -d station -c "CREATE TABLE {MIGRATED_TABLE} (id integer PRIMARY KEY, note text NOT NULL); INSERT INTO {MIGRATED_TABLE} VALUES (1, 'applied over ssh')""#
        ),
        // The redis test image: busybox has httpd.
        app_from: images::REDIS_IMAGE,
        releases: &[SHA],
        previous_release_files: true,
        seed_sql: "CREATE TABLE accounts (id integer PRIMARY KEY, email text NOT NULL); \
                   INSERT INTO accounts VALUES (1, 'ada@example.org'), (2, 'grace@example.org');",
        health_tries: "15",
    })
}

impl Server {
    /// `step status` of every record of an audit log (JSON lines).
    fn audit(file: &Path) -> Vec<String> {
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                assert_eq!(v["sha"], SHA, "{l}");
                format!(
                    "{} {}",
                    v["step"].as_str().unwrap(),
                    v["status"].as_str().unwrap()
                )
            })
            .collect()
    }

    fn local_audit(&self) -> Vec<String> {
        Self::audit(&self.root.join("target/deploy/staging/audit.jsonl"))
    }

    fn remote_audit(&self) -> Vec<String> {
        Self::audit(&self.remote_dir.join("deploy-audit.jsonl"))
    }

    fn table_exists(&self) -> bool {
        self.psql(
            "station",
            &format!("SELECT to_regclass('public.{MIGRATED_TABLE}') IS NOT NULL"),
        ) == "t"
    }

    fn running_services(&self) -> Vec<String> {
        let o = self
            .compose(&["ps", "--status", "running", "--services"])
            .output()
            .unwrap();
        let mut v: Vec<String> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        v.sort();
        v
    }

    /// Backup objects in the server's bucket (paths under `<bucket>/postgres/`).
    /// The dumps in the bucket (`.sql.gz`; each one's `.json` manifest is checked where it is used).
    fn backups(&self) -> Vec<PathBuf> {
        let base = self.bucket.join("station-backups-staging/postgres");
        let mut v = Vec::new();
        for month in std::fs::read_dir(&base).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(month.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                if f.path().to_string_lossy().ends_with(".sql.gz") {
                    v.push(f.path().strip_prefix(&base).unwrap().to_path_buf());
                }
            }
        }
        v
    }
}

/// Every file below `dir` (none when it does not exist).
fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_remote_deploy_over_ssh_stops_closed_at_a_broken_backup_then_runs_every_step() {
    let t0 = Instant::now();
    let s = start();
    let setup = t0.elapsed();
    let secrets = [s.pg_password.clone(), s.redis_password.clone()];
    let watch = ArgvWatch::start(&secrets);

    // 1. The server's backup remote is a dead S3 endpoint: the deploy stops at the backup.
    let dead = xtask::services::free_port().unwrap();
    std::fs::write(
        &s.rclone_conf,
        format!(
            "[b2]\ntype = s3\nprovider = Other\nendpoint = http://127.0.0.1:{dead}\n\
             access_key_id = test\nsecret_access_key = test-secret\n"
        ),
    )
    .unwrap();
    let t1 = Instant::now();
    let failed = s.deploy(SHA);
    let failed_took = t1.elapsed();
    // Exit 3: a dependency (the backup remote) could not be reached.
    assert_eq!(failed.code, 3, "{}", failed.all());
    assert!(
        failed.stderr.contains("deploy stopped at step `backup`"),
        "{}",
        failed.all()
    );
    assert!(
        failed.stderr.contains("No migration was run"),
        "{}",
        failed.all()
    );
    assert!(!s.table_exists(), "the migration ran without a backup");
    assert!(s.backups().is_empty(), "{:?}", s.backups());
    // Nor a manifest without its dump.
    let leftovers: Vec<_> = walk_files(&s.bucket.join("station-backups-staging"));
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(
        s.running_services(),
        ["postgres", "redis"],
        "something was rolled out"
    );
    assert!(
        !s.remote_dir.join(".deploy.lock").exists(),
        "lock not released"
    );
    let expected_failed = [
        "preflight ok",
        "lock ok",
        "sync ok",
        "backup failed",
        "pipeline failed",
    ];
    assert_eq!(s.local_audit(), expected_failed);
    assert_eq!(s.remote_audit(), expected_failed);

    // 2. The backup remote works (an rclone alias of the server's bucket directory): every step.
    s.use_bucket_alias();
    let t2 = Instant::now();
    let ok = s.deploy(SHA);
    let ok_took = t2.elapsed();
    assert!(
        watch.scans() > 10 && watch.argvs_read() > 100,
        "the argv watch did not run"
    );
    let leaks = watch.stop();
    assert_eq!(ok.code, 0, "{}", ok.all());
    let steps = [
        "preflight",
        "lock",
        "sync",
        "backup",
        "verify-backup",
        "migrate",
        "rollout",
        "health",
        "verify-redis",
    ];
    let mut expected_ok: Vec<String> = expected_failed.iter().map(|s| s.to_string()).collect();
    expected_ok.extend(steps.iter().map(|s| format!("{s} ok")));
    expected_ok.push("pipeline ok".into());
    assert_eq!(s.local_audit(), expected_ok);
    assert_eq!(s.remote_audit(), expected_ok);
    assert!(
        !s.remote_dir.join(".deploy.lock").exists(),
        "lock not released"
    );
    // The sync step replaced the previous release's files at their repository paths.
    for rel in [
        "docker-compose.staging.yml",
        "infra/e2e/docker-compose.e2e.yml",
        "infra/test/docker-compose.remote-test.yml",
        "infra/scripts/backup-db.sh",
    ] {
        assert_eq!(
            std::fs::read_to_string(s.root.join(rel)).unwrap(),
            std::fs::read_to_string(s.remote_dir.join(rel)).unwrap_or_default(),
            "{rel} on the server"
        );
    }

    // The backup: postgres/YYYYMM/..._pre-deploy-<sha7>.sql.gz, a complete dump of the data.
    let backups = s.backups();
    assert_eq!(backups.len(), 1, "{backups:?}");
    let object = backups[0].display().to_string();
    // Its manifest beside it, describing this dump.
    let manifest_file = s
        .bucket
        .join("station-backups-staging/postgres")
        .join(format!("{object}.json"));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_file).unwrap()).unwrap();
    assert_eq!(manifest["schema"], "backup-manifest/1", "{manifest}");
    assert_eq!(
        manifest["file"].as_str(),
        backups[0].file_name().and_then(|n| n.to_str()),
        "{manifest}"
    );
    let month = object.split('/').next().unwrap();
    assert!(
        month.len() == 6 && month.bytes().all(|b| b.is_ascii_digit()),
        "{object}"
    );
    assert!(
        object.ends_with(&format!("_pre-deploy-{}.sql.gz", &SHA[..7])),
        "{object}"
    );
    let dump = Command::new("gzip")
        .arg("-dc")
        .arg(
            s.bucket
                .join("station-backups-staging/postgres")
                .join(&object),
        )
        .output()
        .unwrap();
    assert!(dump.status.success());
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(dump.contains("ada@example.org"), "the dump lacks the data");
    assert!(dump.contains("PostgreSQL database dump complete"));
    assert!(
        !dump.contains(MIGRATED_TABLE),
        "the backup was taken after the migration"
    );
    assert!(ok.stdout.contains(&object), "{}", ok.stdout);

    // The migration ran on the server, against the stack's database.
    assert!(s.table_exists());
    assert_eq!(
        s.psql("station", &format!("SELECT note FROM {MIGRATED_TABLE}")),
        "applied over ssh"
    );
    assert_eq!(s.psql("station", "SELECT count(*) FROM accounts"), "2");

    // Rolled out: the release's image tag runs and answers the health URL with its SHA.
    assert_eq!(
        s.running_services(),
        ["backend", "frontend", "postgres", "redis"]
    );
    assert_eq!(s.backend_image(), format!("{}:{SHA}", s.app_image));
    assert!(
        ok.stdout.contains("healthy: http://127.0.0.1:"),
        "{}",
        ok.stdout
    );
    assert!(
        ok.all().contains("Redis data survives a crash"),
        "{}",
        ok.all()
    );

    // No password on any process's argv while both deploys ran, none in what they printed.
    assert!(leaks.is_empty(), "password on an argv: {leaks:?}");
    let logs = [
        std::fs::read_to_string(s.root.join("target/deploy/staging/audit.jsonl")).unwrap(),
        std::fs::read_to_string(s.remote_dir.join("deploy-audit.jsonl")).unwrap(),
    ];
    // Both audit logs are readable by their owner only.
    for log in [
        s.root.join("target/deploy/staging/audit.jsonl"),
        s.remote_dir.join("deploy-audit.jsonl"),
    ] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}: {mode:o}", log.display());
    }
    for text in [failed.all(), ok.all()].iter().chain(&logs) {
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "password in the output or an audit log"
            );
        }
    }
    eprintln!(
        "timings: setup {:.1}s, failing deploy {:.1}s, full deploy {:.1}s",
        setup.as_secs_f64(),
        failed_took.as_secs_f64(),
        ok_took.as_secs_f64()
    );
}
