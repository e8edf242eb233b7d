//! `cargo xtask compose apply|check`: the compose engine.

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
