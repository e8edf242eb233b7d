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
    /// Written by `local up` into a directory it set up; `local down --purge` deletes nothing without it.
    pub marker: PathBuf,
    /// Where the cluster lives when the `postgres` user cannot reach `pg_base` (see `local::pg_base_for`).
    pub location_file: PathBuf,
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
            marker: root.join(MARKER),
            location_file: root.join("postgres.location"),
            root,
        })
    }

    /// Everything `local up` (and a local deploy) creates under the state dir, the marker last: the
    /// only paths `local down --purge` deletes.
    pub fn owned(&self) -> [&Path; 8] {
        [
            &self.pg_base,
            &self.redis_dir,
            &self.objects,
            &self.audit_log,
            &self.lock_file,
            &self.state_file,
            &self.location_file,
            &self.marker,
        ]
    }
}

/// The marker file's name, and what it says.
pub const MARKER: &str = ".xtask-local";
pub const MARKER_TEXT: &str = "Created by `cargo xtask local up`. `cargo xtask local down --purge` deletes only what it \
created here: postgres/ redis/ objects/ state.json postgres.location deploy-audit.jsonl deploy.lock and this file.\n";

impl LocalState {
    pub fn load(env: &Environment) -> Result<Self> {
        let paths = LocalPaths::of(env)?;
        Self::load_from(&paths.state_file)
    }

    pub fn load_from(file: &Path) -> Result<Self> {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::unavailable(format!(
                    "the local environment is not set up ({} is missing): run `cargo xtask local up`",
                    file.display()
                )))
            }
            Err(e) => return Err(Error::read(file, e)),
        };
        serde_json::from_str(&text).map_err(|e| {
            Error::input(
                file,
                e.line().max(1),
                e.column().max(1),
                format!(
                    "the local environment's state file is corrupt ({e}): repair it, or stop its \
                     servers by hand and remove it, then `cargo xtask local up`"
                ),
            )
        })
    }

    pub fn save(&self, file: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("serializable");
        crate::services::postgres::write_private(file, text.as_bytes())
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
