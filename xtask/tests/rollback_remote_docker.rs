//! Rollback end to end, over a real `sshd` whose "server" is this machine's Docker engine (the
//! harness is `common/remote_docker.rs`: staging compose file + the e2e images + a test override).
//! The app (`backend`) is the e2e PostgreSQL image running busybox `httpd`: its `/api/health`
//! answers with the release SHA only while `SELECT 1 FROM accounts` works, so a migration that
//! renames `accounts` breaks it.
//!
//! deploy v1 (ok) → deploy v2, whose migration renames `accounts`: health fails, and the message
//! names the rollback → `cargo xtask rollback --env staging --yes`: the database is as it was before
//! v2 (schema text and counts), the app runs the v1 image and is healthy, verify-redis ok, the
//! replaced database kept with v2's migration. No password on any argv meanwhile.
//!
//! Needs the Docker engine; run under `flock /tmp/xtask-docker.lock`.

#[path = "common/remote_docker.rs"]
mod remote_docker;

use std::time::Instant;

use remote_docker::{Server, Spec};
use xtask::e2e::images;
use xtask::services::procscan::ArgvWatch;

const V1: &str = "a1a1a1a1111111111111111111111111111111a1";
const V2: &str = "b2b2b2b2222222222222222222222222222222b2";

/// backend: the e2e postgres image as an app that needs the `accounts` table; frontend: httpd.
fn app_override(app_image: &str, backend_port: u16, frontend_port: u16) -> String {
    format!(
        r#"# Test-only (rollback_remote_docker.rs): the app is healthy only while `accounts` exists.
services:
  backend:
    image: {app_image}:${{STATION_TAG:?set STATION_TAG}}
    pull_policy: never
    user: "0:0"
    stop_signal: SIGKILL
    entrypoint: ["sh", "-c"]
    command: ["mkdir -p /srv/api && export PGPASSWORD=\"$$POSTGRES_PASSWORD\" && while :; do if psql -X -h postgres -U station -d station -Atc 'SELECT 1 FROM accounts LIMIT 1' >/dev/null 2>&1; then printf '%s' \"$$STATION_RELEASE\" > /srv/api/health; else rm -f /srv/api/health; fi; sleep 1; done & exec httpd -f -p 3000 -h /srv"]
    environment:
      STATION_RELEASE: ${{STATION_TAG}}
    ports: !override
      - "127.0.0.1:{backend_port}:3000"
    healthcheck:
      test: ["CMD", "true"]
      interval: 1s
      timeout: 5s
      retries: 30
  frontend:
    image: {app_image}:${{STATION_TAG:?set STATION_TAG}}
    pull_policy: never
    user: "0:0"
    stop_signal: SIGKILL
    entrypoint: ["sh", "-c"]
    command: ["mkdir -p /srv && echo station > /srv/index.html && exec httpd -f -p 80 -h /srv"]
    ports: !override
      - "127.0.0.1:{frontend_port}:80"
    healthcheck:
      test: ["CMD", "true"]
      interval: 1s
      timeout: 5s
      retries: 30
"#
    )
}

/// The server with the database (500 accounts) and Redis up, its rclone remote a bucket directory.
/// The migration: v2 renames `accounts` (breaking the app); other releases change nothing. Both
/// releases' app images are the e2e postgres image (psql, busybox httpd).
fn start() -> Server {
    let s = Server::start(Spec {
        name: "rollback",
        app_override,
        migration_command: format!(
            r#"sh -c 'if [ "$STATION_TAG" = {V2} ]; then docker compose exec -T postgres psql -X -q -v ON_ERROR_STOP=1 -U station -d station -c "ALTER TABLE accounts RENAME TO accounts_v2"; fi' "#
        ),
        app_from: images::POSTGRES_IMAGE,
        releases: &[V1, V2],
        previous_release_files: false,
        seed_sql: "CREATE TABLE accounts (id integer PRIMARY KEY, email text NOT NULL); \
             INSERT INTO accounts SELECT g, 'user' || g || '@example.org' FROM generate_series(1, 500) g;",
        health_tries: "8",
    });
    s.use_bucket_alias();
    s
}

impl Server {
    /// Schema text (without pg_dump's random `\restrict` lines) and per-table counts of `db`.
    fn snapshot(&self, db: &str) -> (String, String) {
        let schema = self
            .exec(&["pg_dump", "--schema-only", "-U", "station", "-d", db])
            .lines()
            .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
            .collect::<Vec<_>>()
            .join("\n");
        (schema, self.psql(db, xtask::backup::drill::COUNT_SQL))
    }
}

#[test]
fn a_deploy_whose_migration_breaks_the_app_is_rolled_back_to_the_previous_release() {
    let t0 = Instant::now();
    let s = start();
    let secrets = [s.pg_password.clone(), s.redis_password.clone()];
    let watch = ArgvWatch::start(&secrets);

    let r = s.deploy(V1);
    assert_eq!(r.code, 0, "deploy v1: {}", r.all());
    assert_eq!(s.backend_image(), format!("{}:{V1}", s.app_image));
    assert_eq!(s.health().as_deref(), Some(V1));
    s.psql("station", "INSERT INTO accounts VALUES (1001, 'after v1')");
    let before_v2 = s.snapshot("station");

    // v2: its migration renames `accounts`, the app cannot answer its health check.
    let r = s.deploy(V2);
    assert_eq!(r.code, 1, "deploy v2: {}", r.all());
    assert!(
        r.stderr.contains("deploy stopped at step `health`"),
        "{}",
        r.stderr
    );
    let hint = "to undo this deploy: `cargo xtask rollback --env staging --yes` restores \
                b2:station-backups-staging/postgres/";
    assert!(r.stderr.contains(hint), "{}", r.stderr);
    assert!(
        r.stderr
            .contains(&format!("pre-deploy-{}.sql.gz", &V2[..7])),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(&format!("puts release {V1} back")),
        "{}",
        r.stderr
    );
    assert_eq!(s.backend_image(), format!("{}:{V2}", s.app_image));
    assert_eq!(s.health(), None);
    let after_v2 = s.snapshot("station");
    assert_ne!(after_v2, before_v2);

    let t1 = Instant::now();
    let r = s.xtask(&["rollback", "--env", "staging", "--yes", "--json"]);
    let rollback_took = t1.elapsed();
    assert_eq!(r.code, 0, "rollback: {}", r.all());
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["undone_sha"], V2);
    assert_eq!(report["previous"], V1);
    // The database is as before v2; the app runs the v1 image and is healthy; Redis is durable.
    assert_eq!(s.snapshot("station"), before_v2);
    assert_eq!(s.backend_image(), format!("{}:{V1}", s.app_image));
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    while s.health().is_none() && Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert_eq!(s.health().as_deref(), Some(V1));
    assert!(r.stderr.contains("verify-redis ok"), "{}", r.stderr);
    // The replaced database is kept, with v2's migration.
    let kept = report["restore"]["kept_database"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(s.snapshot(&kept), after_v2);
    // The rollback is in the server's audit log.
    let audit = std::fs::read_to_string(s.remote_dir.join("deploy-audit.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(audit.lines().last().unwrap()).unwrap();
    assert_eq!(
        (last["step"].as_str(), last["status"].as_str()),
        (Some("rollback"), Some("ok"))
    );
    assert_eq!(last["sha"], V2);

    let leaks = watch.stop();
    assert!(leaks.is_empty(), "password on an argv: {leaks:?}");
    for secret in &secrets {
        assert!(!r.all().contains(secret.as_str()) && !audit.contains(secret.as_str()));
    }
    eprintln!(
        "timings: total {:.1}s, rollback {:.1}s, downtime {} ms",
        t0.elapsed().as_secs_f64(),
        rollback_took.as_secs_f64(),
        report["restore"]["downtime_ms"]
    );
}
