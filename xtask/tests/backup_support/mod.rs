//! Shared fixture of the backup tests: a real PostgreSQL cluster (run as `postgres`), a `local`
//! test environment in a temp dir whose state file points at it, and helpers to run the xtask
//! binary and the script. Everything is stopped and removed on drop.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use xtask::environments::{Environment, Environments};
use xtask::local::state::{LocalPaths, LocalState};
use xtask::services::free_port;
use xtask::services::postgres::{temp_base, Cluster};
use xtask::services::procscan::ArgvWatch;
use xtask::services::sshd::Sshd;

pub const PASSWORD: &str = "Pg-s3cret-7f1c2e9a";

#[path = "../common/mod.rs"]
mod common;
#[allow(unused_imports)] // for the test files that write a deploy lock file
pub use common::{gz, lock_file_text};
pub use common::{repo as repo_root, services_and_backup};

pub fn script() -> PathBuf {
    repo_root().join("infra/scripts/backup-db.sh")
}

pub struct Fixture {
    pub cluster: Cluster,
    pub dir: tempfile::TempDir,
    pub envs_file: PathBuf,
    pub state_dir: PathBuf,
}

impl Fixture {
    /// A cluster with database `station` holding two small tables (one with an awkward name).
    /// The cluster lives where `local up` puts a `local` environment's, `<state_dir>/postgres`,
    /// so its Unix socket is where xtask looks for it (`local::socket_dir`: restore's and the
    /// drill's replay role log in there).
    pub fn new() -> Fixture {
        // The free port can be taken by another test's server between the pick and the start:
        // then a new cluster on another port (a few tries).
        let mut tries = 0;
        let (dir, state_dir, port, cluster) = loop {
            let dir = temp_base().unwrap(); // 0711: the `postgres` user reaches the cluster
            let state_dir = dir.path().join("state");
            let port = free_port().unwrap();
            let cluster = Cluster::at(&state_dir.join("postgres"), port, "station").unwrap();
            cluster.init(PASSWORD).unwrap();
            match cluster.start() {
                Ok(()) => break (dir, state_dir, port, cluster),
                Err(e) if tries < 3 && e.to_string().contains("Address already in use") => {
                    tries += 1;
                }
                Err(e) => panic!("{e}"),
            }
        };
        LocalState {
            pg_port: port,
            pg_password: PASSWORD.into(),
            redis_port: 0,
            redis_password: String::new(),
        }
        .save(&state_dir.join("state.json"))
        .unwrap();
        let envs_file = dir.path().join("environments.toml");
        let mut toml = String::new();
        for (name, db) in [("t", "station"), ("wrongdb", "no_such_db")] {
            toml.push_str(&format!(
                r#"
[environments.{name}]
transport = "local"
description = "backup test"
compose_file = "docker-compose.prod.yml"
compose_project = "station-test"
state_dir = "{state}"
database = "{db}"
db_user = "station"
migrations_dir = "infra/migrations"
migration_command = "builtin:sql-migrations"
{tables}"#,
                state = state_dir.display(),
                tables = services_and_backup(name, "station-backups", "postgres"),
            ));
        }
        std::fs::write(&envs_file, toml).unwrap();
        let f = Fixture {
            cluster,
            dir,
            envs_file,
            state_dir,
        };
        let paths = LocalPaths::of(&f.env("t")).unwrap();
        assert_eq!(f.cluster.socket_dir, xtask::local::socket_dir(&paths));
        f.psql("postgres", "CREATE DATABASE station");
        f.psql(
            "station",
            "CREATE TABLE accounts (id int PRIMARY KEY, email text NOT NULL); \
             INSERT INTO accounts SELECT g, 'user' || g || '@example.org' FROM generate_series(1, 5000) g; \
             CREATE TABLE \"Audit Log\" (at timestamptz DEFAULT now(), what text); \
             INSERT INTO \"Audit Log\" (what) SELECT 'event ' || g FROM generate_series(1, 321) g;",
        );
        f
    }

    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.cluster.psql(db, PASSWORD, sql).unwrap()
    }

    pub fn env(&self, name: &str) -> Environment {
        let text = std::fs::read_to_string(&self.envs_file).unwrap();
        Environments::parse(&text, &self.envs_file, &repo_root())
            .unwrap()
            .get(name)
            .unwrap()
            .clone()
    }

    /// Root of the local rclone remote `b2` (alias of this directory).
    pub fn objects(&self) -> PathBuf {
        self.state_dir.join("objects")
    }

    /// The xtask binary with this fixture's environments file.
    pub fn xtask(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
        c.args(args)
            .env("XTASK_ENVIRONMENTS", &self.envs_file)
            .env("XTASK_ROOT", repo_root())
            .stdin(Stdio::null());
        for (k, _) in std::env::vars() {
            if k.starts_with("RCLONE_CONFIG_") {
                c.env_remove(k);
            }
        }
        c
    }

    /// `backup-db.sh` in direct mode against this cluster, remote `b2` = the objects directory.
    pub fn script(&self, tmp: &Path) -> Command {
        let mut c = Command::new("bash");
        c.arg(script())
            .env_remove("AWS_CA_BUNDLE")
            .env("BACKUP_MODE", "direct")
            .env("BACKUP_BUCKET", "station-backups")
            .env("BACKUP_TMPDIR", tmp)
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.cluster.port.to_string())
            .env("PGUSER", "station")
            .env("PGDATABASE", "station")
            .env("PGPASSWORD", PASSWORD)
            .env("RCLONE_CONFIG_B2_TYPE", "alias")
            .env("RCLONE_CONFIG_B2_REMOTE", self.objects())
            .stdin(Stdio::null());
        c
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.cluster.stop();
    }
}

/// All files under `dir`, relative, sorted.
pub fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(root: &Path, d: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

pub fn md5_of(p: &Path) -> String {
    let o = Command::new("md5sum").arg(p).output().unwrap();
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// `YYYYMM` now, UTC (from `date`, as the script computes it).
pub fn this_month() -> String {
    let o = Command::new("date").args(["-u", "+%Y%m"]).output().unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Run a command to completion while scanning every process's argv for `secret` every few ms.
/// Returns the output and the argv lines that contained the secret.
pub fn run_watching_argv(mut cmd: Command, secret: &str) -> (Output, Vec<String>, Duration) {
    let start = Instant::now();
    let watch = ArgvWatch::start(&[secret.to_string()]);
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(watch.scans() > 0, "no scan ran while the command did");
    let hits = watch.stop().into_iter().map(|l| l.argv).collect();
    (out, hits, start.elapsed())
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `date -u -d "<when>" +%Y%m%d_%H%M%S`.
pub fn stamp(when: &str) -> String {
    let o = Command::new("date")
        .args(["-u", "-d", when, "+%Y%m%d_%H%M%S"])
        .output()
        .unwrap();
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

/// The environments file of an `ssh` environment `remote` on this machine as this user, in
/// `remote_dir` there; its SSH host, port, known_hosts and key from the variables `<vars>_SSH_HOST`,
/// `_PORT`, `_KNOWN_HOSTS` and `_KEY` (see [`ssh_vars`]).
pub fn ssh_remote_toml(remote_dir: &Path, vars: &str) -> String {
    let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string();
    format!(
        r#"
[environments.remote]
transport = "ssh"
description = "ssh test"
compose_file = "docker-compose.prod.yml"
compose_project = "station"
env_file = ".env.production"
remote_dir = "{}"
database = "station"
db_user = "station"
migration_command = "true"
{tables}
[environments.remote.ssh]
host_env = "{vars}_SSH_HOST"
user = "{user}"
port_env = "{vars}_SSH_PORT"
known_hosts_env = "{vars}_SSH_KNOWN_HOSTS"
key_env = "{vars}_SSH_KEY"
"#,
        remote_dir.display(),
        tables = services_and_backup("remote", "station-backups", "postgres"),
    )
}

/// The variables of [`ssh_remote_toml`] for `sshd` (on loopback, its known_hosts and user key).
pub fn ssh_vars(vars: &str, sshd: &Sshd) -> Vec<(String, PathBuf)> {
    vec![
        (format!("{vars}_SSH_HOST"), "127.0.0.1".into()),
        (format!("{vars}_SSH_PORT"), sshd.port.to_string().into()),
        (format!("{vars}_SSH_KNOWN_HOSTS"), sshd.known_hosts()),
        (format!("{vars}_SSH_KEY"), sshd.user_key()),
    ]
}
