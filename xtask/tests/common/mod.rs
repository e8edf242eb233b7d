//! Shared by the integration tests (included with `mod common;`, or through `deploy_support` and
//! `backup_support`): the repository root, the result of running the built binary, the tables
//! every test environments file repeats, a deploy lock file's text, and `verify-redis` runs against
//! a `local` environment of their own.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The repository root (the workspace this test was built from).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A finished run of a program: exit code (-1 when killed by a signal) and its output as text.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout then stderr.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
    /// stdout as JSON (a test failure showing both outputs when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("{e}\nstdout: {}\nstderr: {}", self.stdout, self.stderr))
    }
}

impl From<Output> for Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// The `services` and `backup` tables of environment `name` (the four standard service names,
/// rclone remote `b2`), for test environments files.
pub fn services_and_backup(name: &str, bucket: &str, prefix: &str) -> String {
    format!(
        r#"
[environments.{name}.services]
redis = "redis"
postgres = "postgres"
backend = "backend"
frontend = "frontend"

[environments.{name}.backup]
remote = "b2"
bucket = "{bucket}"
prefix = "{prefix}"
"#
    )
}

/// The text of a deploy lock file taken on this host by process `pid` for `sha` (owner `ci`, taken
/// long ago, expiring long after the test): a running deploy's while `pid` runs, a killed one's
/// (stale) once it is gone.
pub fn lock_file_text(pid: u32, sha: &str, token: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    serde_json::json!({
        "owner": "ci", "host": host.trim(), "pid": pid, "sha": sha,
        "started_unix": 1_796_000_000u64, "expires_unix": 4_000_000_000u64, "run_url": null,
        "token": token
    })
    .to_string()
}

/// The built binary with `args` in `dir`, without the environments file or root of the caller's
/// environment.
pub fn xtask_in(dir: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .current_dir(dir)
        .env_remove("XTASK_ENVIRONMENTS")
        .env_remove("XTASK_ROOT")
        .output()
        .expect("run xtask");
    Run::from(out)
}

/// `xtask verify-redis ARGS` with `envs`, stdin closed, without the Redis passwords and the GitHub
/// Actions marker of the test's own environment.
pub fn verify_redis_command<K: AsRef<OsStr>, V: AsRef<OsStr>>(
    args: &[&str],
    envs: &[(K, V)],
) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.arg("verify-redis")
        .args(args)
        .env_remove("REDISCLI_AUTH")
        .env_remove("REDIS_PASSWORD")
        .env_remove("REDIS_SENTINEL_PASSWORD")
        .env_remove("GITHUB_ACTIONS")
        .stdin(Stdio::null());
    for (k, v) in envs {
        c.env(k, v);
    }
    c
}

/// A `local` environment for verify-redis whose Redis listens on `port` with `password` (state
/// in `root/state`, a directory of its own inside the repository `root`), `extra` appended to its
/// environments file: writes that file and state.json. Returns the env vars that make `--env
/// local` use it.
pub fn redis_local_env(
    root: &Path,
    port: u16,
    password: &str,
    extra: &str,
) -> Vec<(String, String)> {
    let envs = root.join("environments.toml");
    let text = format!(
        r#"[environments.local]
transport = "local"
description = "test"
compose_file = "docker-compose.prod.yml"
compose_project = "station-local"
state_dir = "{}"
database = "station"
db_user = "station"
migrations_dir = "infra/migrations"
migration_command = "builtin:sql-migrations"
health_url = ""
{tables}{extra}"#,
        root.join("state").display(),
        tables = services_and_backup("local", "station-backups", "postgres"),
    );
    std::fs::write(&envs, text).unwrap();
    std::fs::create_dir_all(root.join("state")).unwrap();
    xtask::local::state::LocalState {
        pg_port: 1,
        pg_password: "unused".into(),
        redis_port: port,
        redis_password: password.into(),
    }
    .save(&root.join("state/state.json"))
    .unwrap();
    vec![
        ("XTASK_ENVIRONMENTS".into(), envs.display().to_string()),
        ("XTASK_ROOT".into(), root.display().to_string()),
    ]
}

/// `gzip ARGS` over `input` through the system gzip (the tests need no compression crate).
pub fn gz(args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut c = Command::new("gzip")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = c.stdin.take().unwrap();
    let input = input.to_vec();
    let w = std::thread::spawn(move || stdin.write_all(&input));
    let out = c.wait_with_output().unwrap();
    w.join().unwrap().unwrap();
    assert!(out.status.success());
    out.stdout
}
