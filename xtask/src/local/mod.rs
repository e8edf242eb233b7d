//! `cargo xtask local up|down|status|env`.

use crate::error::{Error, ExitCode, Result};

#[derive(clap::Subcommand, Debug)]
pub enum Args {
    /// Start the local environment.
    Up,
}

pub fn run(_args: Args) -> Result<ExitCode> {
    Err(Error::unavailable("not implemented yet"))
}

pub mod state;
