//! `cargo xtask compose apply|check`: the compose engine.

use std::path::Path;

use crate::error::{Error, ExitCode, Result};

#[derive(clap::Subcommand, Debug)]
pub enum Args {
    /// Make compose files durable.
    Apply,
    /// Check compose files (the CI gate).
    Check,
}

pub fn run(_args: Args) -> Result<ExitCode> {
    Err(Error::unavailable("not implemented yet"))
}

/// The redis-server arguments of the redis service `service` in `compose_file`, as redis-server
/// would receive them, without a leading config-file path and without password options
/// (e.g. `["--appendonly", "yes", "--appendfsync", "everysec"]`).
pub fn redis_server_args(_compose_file: &Path, _service: &str) -> Result<Vec<String>> {
    Err(Error::unavailable("compose engine not implemented yet"))
}

/// The named volume the redis service mounts at `/data` (e.g. `redis_aof`), if any.
pub fn redis_data_volume(_compose_file: &Path, _service: &str) -> Result<Option<String>> {
    Err(Error::unavailable("compose engine not implemented yet"))
}

/// What the docs generator needs to know about a redis service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisFacts {
    pub image: Option<String>,
    pub server_args: Vec<String>,
    pub volume: Option<String>,
}

pub fn redis_facts(_compose_file: &Path, _service: &str) -> Result<RedisFacts> {
    Err(Error::unavailable("compose engine not implemented yet"))
}
