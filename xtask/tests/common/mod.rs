//! Shared by the integration tests (included with `mod common;`, or through `deploy_support` and
//! `backup_support`): the repository root, the result of running the built binary, and the tables
//! every test environments file repeats.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

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
