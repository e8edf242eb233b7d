//! The Docker engine on this machine, and Compose commands for an environment's project with the
//! Compose CLI that `host` decided ([`ComposeCli`]: the plugin, or a standalone v2+).

use std::time::Duration;

use crate::environments::Environment;
use crate::error::Result;
use crate::process::Cmd;

pub use crate::host::ComposeCli;

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
