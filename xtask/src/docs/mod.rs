//! `cargo xtask docs [--check]`: writes `infra/docs/redis.md` and `infra/docs/backups.md` from the
//! environment model, the compose files and the recorded durability figures. `--check` writes
//! nothing and fails (exit 1, unified diff) when a file is stale.
//!
//! Data flow: [`collect`] (I/O: environments file, compose files, `infra/docs/durability.json`,
//! `infra/docs/restore-bench.json`) →
//! [`render`] (pure: facts → Markdown) → compare or write.

mod render;

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::environments::{Environment, Environments};
use crate::error::{Error, ExitCode, Result};

pub use render::{render_backups, render_redis};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Write nothing; exit 1 with a diff when a generated file is stale.
    #[arg(long)]
    pub check: bool,
}

/// Where the generated files and their inputs live, relative to the repository root.
pub const REDIS_DOC: &str = "infra/docs/redis.md";
pub const BACKUPS_DOC: &str = "infra/docs/backups.md";
pub const DURABILITY_FILE: &str = "infra/docs/durability.json";
/// What `BENCH_RECORD=1 bench/restore.sh` measured (the restore section shows it).
pub const RESTORE_BENCH_FILE: &str = "infra/docs/restore-bench.json";

/// What the durability integration test measured (`XTASK_RECORD_DURABILITY=1` records it).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Durability {
    pub aof: Tally,
    pub rdb_only: Tally,
    pub redis_version: String,
    pub write_seconds: u64,
}

/// One run of `bench/restore.sh` (seconds are hyperfine means).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct RestoreBench {
    pub measured_on: String,
    pub rows: u64,
    pub compressed_bytes: u64,
    pub cores: u64,
    pub runs: u64,
    pub load_before: String,
    pub postgres: String,
    pub floor_s: f64,
    pub reference_s: f64,
    pub xtask_s: f64,
    pub downtime_s: f64,
    /// `(step, mean seconds)`, longest first.
    pub steps: Vec<(String, f64)>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Tally {
    pub acknowledged: u64,
    pub lost: u64,
}

/// Facts about one deployed environment, all read from config files.
#[derive(Clone, Debug)]
pub struct EnvFacts {
    pub env: Environment,
    pub redis_image: Option<String>,
    pub server_args: Vec<String>,
    /// The volume key in the compose file (`redis_aof`) ...
    pub volume: Option<String>,
    /// ... and the engine's name for it (`<project>_redis_aof`).
    pub volume_engine_name: Option<String>,
}

/// Everything the generated docs say that comes from a file.
#[derive(Clone, Debug)]
pub struct Facts {
    pub envs: Vec<EnvFacts>,
    pub durability: Option<Durability>,
    pub restore_bench: Option<RestoreBench>,
    pub environments_file: String,
}

/// Read the facts from the repository at `envs.root`.
pub fn collect(envs: &Environments) -> Result<Facts> {
    let mut out = Vec::new();
    for env in envs.deployed() {
        let redis = crate::compose::redis_facts(&env.compose_file, &env.services.redis)?;
        let volume_engine_name = redis
            .data_volume
            .as_ref()
            .map(|v| format!("{}_{v}", env.compose_project));
        out.push(EnvFacts {
            env: env.clone(),
            redis_image: redis.image,
            server_args: redis.server_args,
            volume: redis.data_volume,
            volume_engine_name,
        });
    }
    let durability = read_recorded(
        &envs.root.join(DURABILITY_FILE),
        "the durability test records it with XTASK_RECORD_DURABILITY=1",
    )?;
    let restore_bench = read_recorded(
        &envs.root.join(RESTORE_BENCH_FILE),
        "BENCH_RECORD=1 bench/restore.sh records it",
    )?;
    let environments_file = envs
        .file
        .strip_prefix(&envs.root)
        .unwrap_or(&envs.file)
        .display()
        .to_string();
    Ok(Facts {
        envs: out,
        durability,
        restore_bench,
        environments_file,
    })
}

/// A recorded measurement: `None` when the file does not exist; bad JSON is bad input at its
/// position, with `how` saying what writes the file.
fn read_recorded<T: serde::de::DeserializeOwned>(file: &Path, how: &str) -> Result<Option<T>> {
    match std::fs::read_to_string(file) {
        Ok(t) => Ok(Some(
            serde_json::from_str(&t).map_err(|e| json_error(file, &e, how))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::read(file, e)),
    }
}

/// A JSON syntax error as `file:line:col: message`: serde_json counts the column of an error at
/// the start of a line (e.g. an early end of file) as 0, and repeats the position in its message.
fn json_error(file: &Path, e: &serde_json::Error, how: &str) -> Error {
    let (line, col) = (e.line().max(1), e.column().max(1));
    let msg = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let msg = msg.strip_suffix(&suffix).unwrap_or(&msg);
    Error::input(file, line, col, format!("{msg}: fix or delete it ({how})"))
}

/// The generated files: (repository-relative path, content).
pub fn render(facts: &Facts) -> Vec<(&'static str, String)> {
    vec![
        (REDIS_DOC, render_redis(facts)),
        (BACKUPS_DOC, render_backups(facts)),
    ]
}

/// A stale file: its path and a unified diff from what is on disk to what it should be.
#[derive(Debug)]
pub struct Stale {
    pub path: PathBuf,
    pub diff: String,
}

/// Compare the generated files with the ones under `root`.
pub fn stale(root: &Path, files: &[(&str, String)]) -> Vec<Stale> {
    files
        .iter()
        .filter_map(|(rel, want)| {
            let path = root.join(rel);
            let have = std::fs::read_to_string(&path).unwrap_or_default();
            (have != *want).then(|| Stale {
                diff: similar::TextDiff::from_lines(have.as_str(), want.as_str())
                    .unified_diff()
                    .context_radius(2)
                    .header(&format!("a/{rel}"), &format!("b/{rel}"))
                    .to_string(),
                path,
            })
        })
        .collect()
}

/// `--check` for the repository at `envs.root`: the stale files (empty when up to date).
pub fn check(envs: &Environments) -> Result<Vec<Stale>> {
    let files = render(&collect(envs)?);
    Ok(stale(&envs.root, &files))
}

/// Write the generated files under `envs.root` (atomically); returns the paths that changed.
pub fn write(envs: &Environments) -> Result<Vec<PathBuf>> {
    let files = render(&collect(envs)?);
    let mut changed = Vec::new();
    for (rel, content) in &files {
        let path = envs.root.join(rel);
        if std::fs::read_to_string(&path).unwrap_or_default() == *content {
            continue;
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| Error::write(dir, e))?;
        crate::files::write_atomic(
            &path,
            content.as_bytes(),
            crate::files::Mode::Keep { new: Some(0o644) },
        )?;
        changed.push(path);
    }
    Ok(changed)
}

pub fn run(args: Args) -> Result<ExitCode> {
    let envs = Environments::load()?;
    if args.check {
        let stale = check(&envs)?;
        if stale.is_empty() {
            println!("docs: {REDIS_DOC} and {BACKUPS_DOC} are up to date");
            return Ok(ExitCode::Ok);
        }
        for s in &stale {
            print!("{}", s.diff);
            eprintln!("{}: stale", s.path.display());
            crate::gha::error(
                "generated docs are stale",
                &format!(
                    "{} is stale: run `cargo xtask docs` and commit",
                    s.path.display()
                ),
            );
        }
        eprintln!("run `cargo xtask docs` and commit");
        return Ok(ExitCode::Failed);
    }
    let changed = write(&envs)?;
    if changed.is_empty() {
        println!("docs: nothing to do, {REDIS_DOC} and {BACKUPS_DOC} are up to date");
    }
    for p in changed {
        println!("docs: wrote {}", p.display());
    }
    Ok(ExitCode::Ok)
}
