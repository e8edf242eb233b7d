//! Rollback end to end, over a real `sshd` whose "server" is this machine's Docker engine (the
//! harness of `deploy_remote_docker.rs`: staging compose file + the e2e images + a test override).
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

mod deploy_support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use deploy_support::{repo, Run};
use xtask::e2e::images;
use xtask::services::procscan::ArgvWatch;
use xtask::services::sshd::{Sshd, SshdOptions};

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

/// The migration: v2 renames `accounts` (breaking the app); other releases change nothing.
fn environment_toml(project: &str, remote_dir: &Path, health_url: &str, user: &str) -> String {
    format!(
        r#"[environments.staging]
transport = "ssh"
description = "staging on a test sshd, the server being this machine's Docker engine"
compose_file = "docker-compose.staging.yml"
compose_overrides = ["infra/e2e/docker-compose.e2e.yml", "infra/test/docker-compose.rollback-test.yml"]
compose_project = "{project}"
env_file = ".env.staging"
remote_dir = "{remote_dir}"
database = "station"
db_user = "station"
migration_command = '''sh -c 'if [ "$STATION_TAG" = {V2} ]; then docker compose exec -T postgres psql -X -q -v ON_ERROR_STOP=1 -U station -d station -c "ALTER TABLE accounts RENAME TO accounts_v2"; fi' '''
health_url = "{health_url}"

[environments.staging.services]
redis = "redis"
postgres = "postgres"
backend = "backend"
frontend = "frontend"

[environments.staging.backup]
remote = "b2"
bucket = "station-backups-staging"
prefix = "postgres"

[environments.staging.ssh]
host_env = "STAGING_SSH_HOST"
user = "{user}"
port_env = "STAGING_SSH_PORT"
known_hosts_env = "STAGING_SSH_KNOWN_HOSTS"
key_env = "STAGING_SSH_KEY"
"#,
        remote_dir = remote_dir.display()
    )
}

fn whoami() -> String {
    let o = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn copy_into(root: &Path, rel: &str) {
    let dst = root.join(rel);
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    std::fs::copy(repo().join(rel), &dst).unwrap_or_else(|e| panic!("{rel}: {e}"));
}

/// The server and its Compose project; `down -v` and untag on drop (also when the test fails).
struct Server {
    project: String,
    app_image: String,
    root: PathBuf,
    remote_dir: PathBuf,
    envs_file: PathBuf,
    backend_port: u16,
    pg_password: String,
    redis_password: String,
    sshd: Sshd,
    _dir: tempfile::TempDir,
}

const FILES: [&str; 3] = [
    "docker-compose.staging.yml",
    "infra/e2e/docker-compose.e2e.yml",
    "infra/test/docker-compose.rollback-test.yml",
];

impl Server {
    fn start() -> Server {
        assert!(
            xtask::docker::engine_available(),
            "this test needs the Docker engine (`docker info` must answer)"
        );
        for spec in &images::IMAGES {
            images::ensure(&repo(), spec).unwrap_or_else(|e| panic!("building {}: {e}", spec.tag));
        }
        let pid = std::process::id();
        let project = format!("xtask-rollback-{pid}");
        let app_image = format!("xtask-rollback-{pid}/app");
        let dir = tempfile::Builder::new()
            .prefix("xtask-rollback-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        let rclone_conf = d.join("rclone.conf");
        let bucket = d.join("bucket");
        std::fs::write(
            &rclone_conf,
            format!("[b2]\ntype = alias\nremote = {}\n", bucket.display()),
        )
        .unwrap();
        let sshd = Sshd::start(SshdOptions {
            set_env: vec![
                ("RCLONE_CONFIG".into(), rclone_conf.display().to_string()),
                ("PATH".into(), std::env::var("PATH").unwrap()),
            ],
        })
        .expect("sshd (apt-get install openssh-server)");
        let root = d.join("repo");
        for rel in [
            "docker-compose.staging.yml",
            "infra/e2e/docker-compose.e2e.yml",
            "infra/scripts/backup-db.sh",
        ] {
            copy_into(&root, rel);
        }
        let backend_port = xtask::services::free_port().unwrap();
        let frontend_port = loop {
            let p = xtask::services::free_port().unwrap();
            if p != backend_port {
                break p;
            }
        };
        let over = root.join(FILES[2]);
        std::fs::create_dir_all(over.parent().unwrap()).unwrap();
        std::fs::write(&over, app_override(&app_image, backend_port, frontend_port)).unwrap();
        let remote_dir = d.join("server/opt/station-staging");
        std::fs::create_dir_all(&remote_dir).unwrap();
        let pg_password = format!("pg-{}", xtask::services::s3::random_hex(12));
        let redis_password = format!("redis-{}", xtask::services::s3::random_hex(12));
        let env_file = remote_dir.join(".env.staging");
        std::fs::write(
            &env_file,
            format!("POSTGRES_PASSWORD={pg_password}\nREDIS_PASSWORD={redis_password}\n"),
        )
        .unwrap();
        std::fs::set_permissions(&env_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let envs_file = d.join("environments.toml");
        std::fs::write(
            &envs_file,
            environment_toml(
                &project,
                &remote_dir,
                &format!("http://127.0.0.1:{backend_port}/api/health"),
                &whoami(),
            ),
        )
        .unwrap();
        let server = Server {
            project,
            app_image,
            root,
            remote_dir,
            envs_file,
            backend_port,
            pg_password,
            redis_password,
            sshd,
            _dir: dir,
        };
        // From here on, drop cleans up. Both releases' app images: the e2e postgres image (psql,
        // busybox httpd).
        for sha in [V1, V2] {
            let tag = Command::new("docker")
                .args([
                    "tag",
                    images::POSTGRES_IMAGE,
                    &format!("{}:{sha}", server.app_image),
                ])
                .status()
                .unwrap();
            assert!(tag.success());
        }
        for f in FILES {
            let dst = server.remote_dir.join(f);
            std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
            std::fs::copy(server.root.join(f), dst).unwrap();
        }
        let up = server
            .compose(&[
                "up",
                "-d",
                "--wait",
                "--wait-timeout",
                "120",
                "postgres",
                "redis",
            ])
            .output()
            .unwrap();
        assert!(
            up.status.success(),
            "starting the database: {}",
            String::from_utf8_lossy(&up.stderr)
        );
        server.psql(
            "station",
            "CREATE TABLE accounts (id integer PRIMARY KEY, email text NOT NULL); \
             INSERT INTO accounts SELECT g, 'user' || g || '@example.org' FROM generate_series(1, 500) g;",
        );
        server
    }

    fn compose(&self, args: &[&str]) -> Command {
        let mut c = Command::new("docker");
        c.arg("compose")
            .args(args)
            .current_dir(&self.remote_dir)
            .env("COMPOSE_FILE", FILES.join(":"))
            .env("COMPOSE_PROJECT_NAME", &self.project)
            .env("COMPOSE_ENV_FILES", ".env.staging")
            .env("STATION_TAG", V1)
            .env_remove("COMPOSE_PROFILES");
        c
    }

    fn exec(&self, words: &[&str]) -> String {
        let mut a = vec!["exec", "-T", "postgres"];
        a.extend_from_slice(words);
        let o = self.compose(&a).output().unwrap();
        assert!(
            o.status.success(),
            "{words:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn psql(&self, db: &str, sql: &str) -> String {
        self.exec(&[
            "psql",
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-U",
            "station",
            "-d",
            db,
            "-c",
            sql,
        ])
        .trim()
        .to_string()
    }

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

    fn xtask(&self, args: &[&str]) -> Run {
        let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(args)
            .current_dir(&self.root)
            .env("XTASK_ENVIRONMENTS", &self.envs_file)
            .env("XTASK_ROOT", &self.root)
            .env("STAGING_SSH_HOST", "127.0.0.1")
            .env("STAGING_SSH_PORT", self.sshd.port.to_string())
            .env("STAGING_SSH_KNOWN_HOSTS", self.sshd.known_hosts())
            .env("STAGING_SSH_KEY", self.sshd.user_key())
            .env_remove("GITHUB_ACTIONS")
            .env_remove("GITHUB_STEP_SUMMARY")
            .env_remove("AWS_CA_BUNDLE")
            .output()
            .unwrap();
        Run::from(out)
    }

    fn deploy(&self, sha: &str) -> Run {
        self.xtask(&[
            "deploy",
            "--env",
            "staging",
            "--sha",
            sha,
            "--health-tries",
            "8",
        ])
    }

    fn backend_image(&self) -> String {
        let o = self
            .compose(&["ps", "--format", "{{.Image}}", "backend"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// `GET /api/health` of the backend (its published port), `None` unless it answers 200.
    fn health(&self) -> Option<String> {
        let o = Command::new("curl")
            .args(["-fsS", "--max-time", "5"])
            .arg(format!("http://127.0.0.1:{}/api/health", self.backend_port))
            .output()
            .unwrap();
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self
            .compose(&["down", "-v", "--remove-orphans", "--timeout", "5"])
            .output();
        for sha in [V1, V2] {
            let _ = Command::new("docker")
                .args(["image", "rm", &format!("{}:{sha}", self.app_image)])
                .output();
        }
    }
}

#[test]
fn a_deploy_whose_migration_breaks_the_app_is_rolled_back_to_the_previous_release() {
    let t0 = Instant::now();
    let s = Server::start();
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
