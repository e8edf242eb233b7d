//! `cargo xtask deploy [--env E] [--sha SHA] [--dry-run] [--json] [--force-unlock] [--step S]`:
//! the fail-closed pipeline preflight → lock → (sync) → backup → verify backup → migrate → roll out →
//! health → verify Redis. Any failure stops it, says what did not run, releases the lock and records
//! the outcome in the audit log.
//!
//! Layout: `plan` (pure: steps, report, timestamps; the SHA is `crate::git::Sha`), `lock`, `audit`,
//! `remote` (the server's preflight and health scripts, the files it needs), `runner` (executes the
//! steps, GitHub Actions groups and summary, Ctrl-C). Where commands run is `crate::host`; the
//! `VerifiedBackup` gate is `crate::backup::verified`.

pub mod audit;
pub mod lock;
pub mod plan;
pub mod remote;
pub mod runner;
pub mod steps;

use crate::environments::{Environment, Environments};
use crate::error::{Error, ExitCode, Result};
use plan::Step;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Environment to deploy (local, staging, production; see infra/environments.toml).
    #[arg(long, default_value = "local")]
    pub env: String,
    /// Commit to deploy (default: `git rev-parse HEAD`).
    #[arg(long)]
    pub sha: Option<String>,
    /// Print the exact plan (every command, secrets redacted) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report (or the plan) as JSON on stdout; progress goes to stderr.
    #[arg(long)]
    pub json: bool,
    /// Break a stale lock (past its TTL, or left by a dead process on this host).
    #[arg(long)]
    pub force_unlock: bool,
    /// Seconds after which a held lock counts as stale.
    #[arg(long, default_value_t = 1800, value_parser = clap::value_parser!(u64).range(10..=86_400))]
    pub lock_ttl: u64,
    /// Run one step only (preflight, sync, rollout, health, verify-redis), under the lock when it
    /// changes something. Backup and migration are `cargo xtask backup` / `cargo xtask migrate`.
    #[arg(long, value_enum)]
    pub step: Option<Step>,
    /// Health polls (2 s apart) before the health step fails.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=600))]
    pub health_tries: u32,
    /// When the deploy fails at migrate, rollout or health, run `cargo xtask rollback` (its pre-deploy
    /// backup restored, the previous release put back). Without it, the final message names that
    /// command and what it would do.
    #[arg(long)]
    pub rollback_on_failure: bool,
}

/// `--json`: the pipeline's report on every path once it runs (and the plan of a dry run);
/// before that (bad input, the environment, the SHA, the signal handler) `error::JsonFailure` at
/// `input`.
pub fn run(args: Args) -> Result<ExitCode> {
    let (json, env) = (args.json, args.env.clone());
    let mut step = "input";
    let r = run_in(args, &mut step);
    crate::error::Error::print_json_failure(&r, json, Some(&env), step);
    r
}

fn run_in(args: Args, step: &mut &'static str) -> Result<ExitCode> {
    let envs = Environments::load()?;
    let env = envs.get(&args.env)?;
    let sha = crate::git::sha_or_head(args.sha.as_deref(), &envs.root)?;
    let host = crate::host::Host::planned(env)?;
    let steps = plan::steps_for(host.remote().is_some(), args.step)?;
    if args.dry_run {
        let planned = steps::dry_run(
            &steps::Ctx {
                host: &host,
                root: &envs.root,
                sha: &sha,
                args: &args,
            },
            &steps,
        )?;
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "env": env.name, "sha": sha, "dry_run": true, "steps": planned
                }))
                .expect("serializable")
            );
        } else {
            println!(
                "deploy plan for `{}` at {} (dry run: nothing is changed)",
                env.name,
                sha.as_str()
            );
            for (i, p) in planned.iter().enumerate() {
                println!("{}. {}: {}", i + 1, p.step.name(), p.what);
                for c in p.calls.iter().chain(&p.commands) {
                    println!("     $ {c}");
                }
            }
        }
        return Ok(ExitCode::Ok);
    }
    let pipeline = runner::Pipeline::new(env, &envs.root, sha, args.clone())?;
    // It prints its report on every path.
    *step = "";
    pipeline.run(&steps)
}

/// Who is deploying: `GITHUB_ACTOR` in Actions, else the login name.
pub fn actor() -> String {
    ["GITHUB_ACTOR", "USER", "LOGNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}

/// The GitHub Actions run URL, when in Actions.
pub fn run_url() -> Option<String> {
    let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    Some(format!(
        "{}/{}/actions/runs/{}",
        get("GITHUB_SERVER_URL")?,
        get("GITHUB_REPOSITORY")?,
        get("GITHUB_RUN_ID")?
    ))
}

/// The compose durability gate, as a preflight check: the environment's own compose file (findings
/// are printed by the check itself).
pub fn compose_check(env: &Environment) -> Result<()> {
    let targets = crate::compose::Targets {
        envs: vec![env.name.clone()],
        files: vec![],
    };
    let crate::compose::Checked { findings, files } = crate::compose::findings(&targets)?;
    for (file, f) in &findings {
        eprintln!("{}", crate::compose::finding_line(file, f));
    }
    // Warnings (e.g. a password read by the container's shell) do not stop a deploy.
    if findings.iter().all(|(_, f)| !f.is_error()) {
        eprintln!("compose check: ok ({})", files.join(", "));
        Ok(())
    } else {
        Err(Error::failed(format!(
            "`cargo xtask compose check --env {}` found {} problem(s): fix the compose file (`cargo xtask compose check --env {}` says what `compose apply` fixes)",
            env.name,
            findings.iter().filter(|(_, f)| f.is_error()).count(),
            env.name
        )))
    }
}
