//! `cargo xtask docs [--check]`.

use crate::error::{Error, ExitCode, Result};

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> Result<ExitCode> {
    Err(Error::unavailable("not implemented yet"))
}
