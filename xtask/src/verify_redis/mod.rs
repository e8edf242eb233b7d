//! `cargo xtask verify-redis`.

use std::time::Duration;

use crate::environments::Environment;
use crate::error::{Error, ExitCode, Result};

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> Result<ExitCode> {
    Err(Error::unavailable("not implemented yet"))
}

/// Verify the Redis of an environment (local: direct connection; docker: `docker compose exec`;
/// ssh: exec over SSH), print the human report, and return the exit code it implies
/// (Ok, Failed; unreachable is `Err` with exit 3).
pub fn verify_environment(_env: &Environment, _timeout: Duration) -> Result<ExitCode> {
    Err(Error::unavailable("not implemented yet"))
}
