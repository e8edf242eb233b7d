//! `cargo xtask e2e`.

pub mod images;

use crate::error::{ExitCode, Result};

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> Result<ExitCode> {
    let root = crate::environments::repo_root()?;
    for spec in &images::IMAGES {
        let t = std::time::Instant::now();
        let b = images::ensure(&root, spec)?;
        println!("{} {:?} {:.1}s", spec.tag, b, t.elapsed().as_secs_f64());
    }
    Ok(ExitCode::Ok)
}
