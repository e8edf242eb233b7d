//! Runtime state of the `local` environment: ports and generated passwords, kept in
//! `<state_dir>/state.json` (mode 0600). Written by `cargo xtask local up`, read by every command
//! that talks to the local environment (backup, verify-redis, migrate, deploy).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::environments::Environment;
use crate::error::{Error, Result};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LocalState {
    pub pg_port: u16,
    pub pg_password: String,
    pub redis_port: u16,
    pub redis_password: String,
}

/// Paths of the local environment, all under its `state_dir`.
#[derive(Clone, Debug)]
pub struct LocalPaths {
    pub root: PathBuf,
    pub state_file: PathBuf,
    /// PostgreSQL cluster base (see `services::postgres::Cluster::at`).
    pub pg_base: PathBuf,
    pub redis_dir: PathBuf,
    /// Root of the rclone remote `b2` (a local directory): objects are `<objects>/<bucket>/<prefix>/...`.
    pub objects: PathBuf,
    /// Deploy audit log and lock live here too.
    pub audit_log: PathBuf,
    pub lock_file: PathBuf,
}

impl LocalPaths {
    pub fn of(env: &Environment) -> Result<Self> {
        let root = env
            .state_dir
            .clone()
            .ok_or_else(|| Error::usage(format!("environment `{}` has no state_dir", env.name)))?;
        Ok(LocalPaths {
            state_file: root.join("state.json"),
            pg_base: root.join("postgres"),
            redis_dir: root.join("redis"),
            objects: root.join("objects"),
            audit_log: root.join("deploy-audit.jsonl"),
            lock_file: root.join("deploy.lock"),
            root,
        })
    }
}

impl LocalState {
    pub fn load(env: &Environment) -> Result<Self> {
        let paths = LocalPaths::of(env)?;
        Self::load_from(&paths.state_file)
    }

    pub fn load_from(file: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(file).map_err(|_| {
            Error::unavailable(format!(
                "the local environment is not set up ({} is missing): run `cargo xtask local up`",
                file.display()
            ))
        })?;
        serde_json::from_str(&text)
            .map_err(|e| Error::input(file, e.line(), e.column(), e.to_string()))
    }

    pub fn save(&self, file: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("serializable");
        crate::files::write_atomic(file, text.as_bytes(), crate::files::Mode::Private)
    }

    /// `redis://127.0.0.1:<port>` (no password: pass it as `REDISCLI_AUTH` / `REDIS_PASSWORD`).
    pub fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.redis_port)
    }

    /// rclone settings for the remote `b2` as a local directory, unless the user already points
    /// `b2` elsewhere with rclone's own `RCLONE_CONFIG_B2_*` variables (then we set nothing).
    pub fn rclone_env(env: &Environment, paths: &LocalPaths) -> Vec<(String, String)> {
        let prefix = format!(
            "RCLONE_CONFIG_{}_",
            env.backup.remote.to_uppercase().replace('-', "_")
        );
        if std::env::vars_os().any(|(k, _)| k.to_string_lossy().starts_with(&prefix)) {
            return Vec::new();
        }
        // An `alias` of a local directory: rclone's local backend, rooted at `objects/`.
        vec![
            (format!("{prefix}TYPE"), "alias".to_string()),
            (
                format!("{prefix}REMOTE"),
                paths.objects.display().to_string(),
            ),
        ]
    }
}
