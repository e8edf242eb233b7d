//! `cargo xtask ci check`.

use crate::error::{Error, ExitCode, Result};

#[derive(clap::Subcommand, Debug)]
pub enum Args {
    /// Check the workflows.
    Check,
}

pub fn run(_args: Args) -> Result<ExitCode> {
    Err(Error::unavailable("not implemented yet"))
}
