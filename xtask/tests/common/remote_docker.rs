//! Shared by the Docker tests of the remote pipeline (`deploy_remote_docker.rs`,
//! `rollback_remote_docker.rs`; included with `#[path = "common/remote_docker.rs"] mod remote_docker;`):
//! a "server" that is a real `sshd` on a loopback port (pinned host key, throwaway user key) in front of
//! this machine's Docker engine. The server side is a temp directory (`remote_dir`) and a Compose
//! project with a unique name, built from the staging compose file plus two overrides in
//! subdirectories of the repository copy, as the e2e one does: `infra/e2e/docker-compose.e2e.yml`
//! (the locally built PostgreSQL and Redis images) and the test's own override
//! (`infra/test/docker-compose.<name>-test.yml`: backend/frontend from a locally tagged image, one tag
//! per release, `pull_policy: never`, free ports). Before the test, postgres + redis run
//! (`up -d --wait`) with the test's data.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use xtask::e2e::images;
use xtask::services::sshd::{Sshd, SshdOptions};

#[path = "mod.rs"]
mod common;
pub use common::{repo, Run};

/// What differs between the tests that use a [`Server`].
pub struct Spec {
    /// `remote`: project and app image `xtask-remote-<pid>`, override
    /// `infra/test/docker-compose.remote-test.yml`.
    pub name: &'static str,
    /// The override's text from the app image (without tag), the backend's and the frontend's port.
    pub app_override: fn(&str, u16, u16) -> String,
    /// The environment's `migration_command` (TOML literal string, `'''`-quoted).
    pub migration_command: String,
    /// The image tagged as the app image of each release.
    pub app_from: &'static str,
    /// The releases' SHAs; the first is the `STATION_TAG` of [`Server::compose`].
    pub releases: &'static [&'static str],
    /// Put the compose files on the server as a previous release left them (one line different, so
    /// the deploy's sync step must replace them), not as they are.
    pub previous_release_files: bool,
    /// What to run in the database once it is up.
    pub seed_sql: &'static str,
    /// `deploy --health-tries`.
    pub health_tries: &'static str,
}

/// The environments file: `staging` over ssh, the server being this machine's Docker engine.
fn environment_toml(
    spec: &Spec,
    project: &str,
    remote_dir: &Path,
    health_url: &str,
    user: &str,
) -> String {
    format!(
        r#"[environments.staging]
transport = "ssh"
description = "staging on a test sshd, the server being this machine's Docker engine"
compose_file = "docker-compose.staging.yml"
compose_overrides = ["infra/e2e/docker-compose.e2e.yml", "infra/test/docker-compose.{name}-test.yml"]
compose_project = "{project}"
env_file = ".env.staging"
remote_dir = "{remote_dir}"
database = "station"
db_user = "station"
migration_command = '''{migration_command}'''
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
        name = spec.name,
        migration_command = spec.migration_command,
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

/// The server, its repository checkout and the Compose project; `down -v` and untag on drop (also
/// when the test fails). Fields drop after `drop()`: the files `down` needs are still there.
pub struct Server {
    pub spec: Spec,
    pub project: String,
    pub app_image: String,
    pub root: PathBuf,
    pub remote_dir: PathBuf,
    /// The directory the server's rclone alias `b2` points at (see [`Server::use_bucket_alias`]).
    pub bucket: PathBuf,
    /// The server's rclone config (`RCLONE_CONFIG` of its ssh sessions); empty at start.
    pub rclone_conf: PathBuf,
    pub envs_file: PathBuf,
    pub backend_port: u16,
    pub pg_password: String,
    pub redis_password: String,
    pub sshd: Sshd,
    _dir: tempfile::TempDir,
}

impl Server {
    pub fn start(spec: Spec) -> Server {
        assert!(
            xtask::docker::engine_available(),
            "this test needs the Docker engine (`docker info` must answer)"
        );
        for image in &images::IMAGES {
            images::ensure(&repo(), image)
                .unwrap_or_else(|e| panic!("building {}: {e}", image.tag));
        }
        let pid = std::process::id();
        let project = format!("xtask-{}-{pid}", spec.name);
        let app_image = format!("xtask-{}-{pid}/app", spec.name);

        let dir = tempfile::Builder::new()
            .prefix(&format!("xtask-{}-", spec.name))
            .tempdir()
            .unwrap();
        let d = dir.path();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        let rclone_conf = d.join("rclone.conf");
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
        let over = root.join(format!("infra/test/docker-compose.{}-test.yml", spec.name));
        std::fs::create_dir_all(over.parent().unwrap()).unwrap();
        std::fs::write(
            &over,
            (spec.app_override)(&app_image, backend_port, frontend_port),
        )
        .unwrap();

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
                &spec,
                &project,
                &remote_dir,
                &format!("http://127.0.0.1:{backend_port}/api/health"),
                &whoami(),
            ),
        )
        .unwrap();
        let server = Server {
            spec,
            project,
            app_image,
            root,
            remote_dir,
            bucket: d.join("bucket"),
            rclone_conf,
            envs_file,
            backend_port,
            pg_password,
            redis_password,
            sshd,
            _dir: dir,
        };
        // From here on, drop cleans up. Each release's app image.
        for sha in server.spec.releases {
            let tag = Command::new("docker")
                .args([
                    "tag",
                    server.spec.app_from,
                    &format!("{}:{sha}", server.app_image),
                ])
                .status()
                .unwrap();
            assert!(tag.success());
        }
        for rel in server.compose_files() {
            let dst = server.remote_dir.join(&rel);
            std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
            let text = std::fs::read_to_string(server.root.join(&rel)).unwrap();
            let text = if server.spec.previous_release_files {
                format!("# previous release\n{text}")
            } else {
                text
            };
            std::fs::write(dst, text).unwrap();
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
            "starting the database and Redis: {}",
            String::from_utf8_lossy(&up.stderr)
        );
        server.psql("station", server.spec.seed_sql);
        server
    }

    /// The compose file and its two overrides, repository-relative.
    pub fn compose_files(&self) -> [String; 3] {
        [
            "docker-compose.staging.yml".into(),
            "infra/e2e/docker-compose.e2e.yml".into(),
            format!("infra/test/docker-compose.{}-test.yml", self.spec.name),
        ]
    }

    /// Point the server's rclone remote `b2` at [`Server::bucket`] (an alias of a directory).
    pub fn use_bucket_alias(&self) {
        std::fs::write(
            &self.rclone_conf,
            format!("[b2]\ntype = alias\nremote = {}\n", self.bucket.display()),
        )
        .unwrap();
    }

    /// `docker compose` for the project, run in the server's directory like the deploy runs it,
    /// with the first release's `STATION_TAG`.
    pub fn compose(&self, args: &[&str]) -> Command {
        let mut c = Command::new("docker");
        c.arg("compose")
            .args(args)
            .current_dir(&self.remote_dir)
            .env("COMPOSE_FILE", self.compose_files().join(":"))
            .env("COMPOSE_PROJECT_NAME", &self.project)
            .env("COMPOSE_ENV_FILES", ".env.staging")
            .env("STATION_TAG", self.spec.releases[0])
            .env_remove("COMPOSE_PROFILES");
        c
    }

    /// A command in the postgres container; its stdout (it must succeed).
    pub fn exec(&self, words: &[&str]) -> String {
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

    /// psql in the postgres container (as `station`, over the container's trusted local socket).
    pub fn psql(&self, db: &str, sql: &str) -> String {
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

    /// The built `xtask` run in the repository copy with the staging SSH variables.
    pub fn xtask(&self, args: &[&str]) -> Run {
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

    /// `deploy --env staging --sha <sha>`.
    pub fn deploy(&self, sha: &str) -> Run {
        self.xtask(&[
            "deploy",
            "--env",
            "staging",
            "--sha",
            sha,
            "--health-tries",
            self.spec.health_tries,
        ])
    }

    /// The image the backend container runs.
    pub fn backend_image(&self) -> String {
        let o = self
            .compose(&["ps", "--format", "{{.Image}}", "backend"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// `GET /api/health` of the backend (its published port), `None` unless it answers 200.
    pub fn health(&self) -> Option<String> {
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
        let t = Instant::now();
        let _ = self
            .compose(&["down", "-v", "--remove-orphans", "--timeout", "5"])
            .output();
        for sha in self.spec.releases {
            let _ = Command::new("docker")
                .args(["image", "rm", &format!("{}:{sha}", self.app_image)])
                .output();
        }
        eprintln!(
            "teardown (compose down -v) {:.1}s",
            t.elapsed().as_secs_f64()
        );
    }
}
