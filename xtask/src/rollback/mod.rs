//! `cargo xtask rollback --env NAME [--to SHA] [--yes] [--dry-run] [--json]`: undo the last deploy
//! that ran its migrations.
//!
//! From the audit log ([`plan`]): the deploy to undo and the last successful deploy before it (the
//! release put back; `--to` overrides). Its `pre-deploy-<sha7>` backup (the database just before its
//! migrations) must exist with a manifest; it is restored through `restore`'s path (steps recorded
//! as `rollback:<step>`), and once the restored database is live the previous release is started
//! (`compose up -d` with `STATION_TAG=<previous>`; `local` has nothing to roll out). Then health and
//! verify-redis, and a `rollback` record (its `sha` is the undone deploy's) in the audit log.

pub mod plan;

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::backup::{self, result::BackupName};
use crate::deploy::audit::Record;
use crate::deploy::plan::{elapsed_ms, now_ms, rfc3339_ms};
use crate::environments::{Environment, Environments};
use crate::error::{Error, ExitCode, Result};
use crate::git::Sha;
use crate::host::{Host, Script};
use crate::restore::{self, target::Target, Options, Outcome, Selector};

use plan::{Choice, DeployRun};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Environment from infra/environments.toml.
    #[arg(long)]
    pub env: String,
    /// The release to put back (default: the last successful deploy before the undone one).
    #[arg(long)]
    pub to: Option<String>,
    /// Do not ask for confirmation (required without a TTY).
    #[arg(long)]
    pub yes: bool,
    /// Print the plan and the commands, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON on stdout; progress goes to stderr.
    #[arg(long)]
    pub json: bool,
    /// Seconds to wait for the live database's sessions to end before the swap is refused.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub swap_wait: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub env: String,
    pub undone_sha: String,
    pub previous: Option<String>,
    pub backup_object: String,
    pub outcome: String,
    pub restore: Option<restore::Report>,
    pub message: String,
}

/// `cat $1` when it exists (the audit log on the host).
const CAT_IF_EXISTS: Script = Script::sh("if [ -f \"$1\" ]; then cat -- \"$1\"; fi\n").anywhere();

/// The deploy audit log: the server's copy for remote environments (deploys run from CI write it
/// there), else the local one.
pub fn read_audit(host: &Host, root: &Path) -> Result<Vec<Record>> {
    let (text, origin) = match host.remote() {
        Some(r) => {
            let file = format!("{}/deploy-audit.jsonl", r.dir);
            let o = host
                .script(&CAT_IF_EXISTS, std::slice::from_ref(&file))?
                .timeout(Duration::from_secs(60))
                .output()?;
            (crate::host::outcome("reading the audit log", o)?, file)
        }
        None => {
            let p = crate::deploy::runner::audit_path(host, root);
            match std::fs::read_to_string(&p) {
                Ok(t) => (t, p.display().to_string()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    (String::new(), p.display().to_string())
                }
                Err(e) => return Err(Error::read(&p, e)),
            }
        }
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| Error::input(Path::new(&origin), i + 1, e.column(), e.to_string()))
        })
        .collect()
}

/// What a rollback of `env` would do, from its audit log.
pub struct Planned {
    pub choice: Choice,
    /// The pre-deploy backup to restore.
    pub object: String,
}

/// Choose the deploy and the release, and find the pre-deploy backup with its manifest (refused,
/// with the reason, when the backup is missing or has no valid manifest).
pub fn plan_rollback(t: &Target, root: &Path, to: Option<&str>) -> Result<Planned> {
    let records = read_audit(&t.host, root)?;
    let runs: Vec<DeployRun> = plan::runs(&records);
    let choice = plan::choose(&runs, to, t.host.compose_project().is_some())?;
    let label = plan::pre_deploy_label(&choice.undo.sha);
    let objects = backup::list(&t.env)?;
    let is_label = |p: &str| {
        p.rsplit('/')
            .next()
            .and_then(BackupName::parse)
            .is_some_and(|n| n.label == label)
    };
    let object = choice
        .undo
        .backup_object
        .clone()
        .filter(|o| is_label(o) && objects.iter().any(|x| &x.path == o))
        .or_else(|| {
            objects
                .iter()
                .rfind(|o| is_label(&o.path))
                .map(|o| o.path.clone())
        })
        .ok_or_else(|| {
            Error::failed(format!(
                "refusing to roll back {}: its pre-deploy backup ({label}) is not in {}",
                choice.undo.sha,
                t.env.backup.base()
            ))
        })?;
    match backup::read_manifest(&t.env, &object) {
        Ok(Some(_)) => {}
        Ok(None) => {
            return Err(Error::failed(format!(
                "refusing to roll back {}: its pre-deploy backup {object} has no manifest, so it \
                 cannot be checked (restore it by hand with `cargo xtask restore --env {} {object}` \
                 if you must)",
                choice.undo.sha, t.env.name
            )))
        }
        Err(e) => {
            return Err(Error::failed(format!(
                "refusing to roll back {}: the manifest of its pre-deploy backup fails its check: {e}",
                choice.undo.sha
            )))
        }
    }
    Ok(Planned { choice, object })
}

fn plan_text(t: &Target, p: &Planned) -> String {
    let u = &p.choice.undo;
    format!(
        "rollback plan for `{}`:\n  undo      deploy {} (ended {}{}; it ran its migrations)\n  restore   {} \
         (the database just before its migrations; the current one is kept)\n  put back  {}\n  then      health and verify-redis",
        t.env.name,
        u.sha,
        u.end,
        u.failed_step
            .as_deref()
            .map(|s| format!(", failed at {s}"))
            .unwrap_or_else(|| ", ok".into()),
        p.object,
        match (&p.choice.previous, t.host.compose_project().is_some()) {
            (Some(prev), true) => format!("release {prev} (`compose up -d` with STATION_TAG={prev})"),
            (_, false) => "nothing to roll out (the local environment runs no app images)".into(),
            (None, true) => "no release known".into(),
        }
    )
}

pub fn run(args: Args) -> Result<ExitCode> {
    let envs = Environments::load()?;
    let env = envs.get(&args.env)?;
    let to = match &args.to {
        Some(s) => Some(Sha::parse(s)?.as_str().to_string()),
        None => None,
    };
    let r = rollback(env, &envs.root, to.as_deref(), &args)?;
    if args.json {
        if let Some(r) = r {
            println!(
                "{}",
                serde_json::to_string_pretty(&r).expect("serializable")
            );
        }
    }
    Ok(ExitCode::Ok)
}

/// Plan, confirm, restore with the previous release started after the swap, verify Redis, record.
/// `None` for a dry run.
pub fn rollback(
    env: &Environment,
    root: &Path,
    to: Option<&str>,
    args: &Args,
) -> Result<Option<Report>> {
    let say = |s: &str| {
        if args.json {
            eprintln!("{s}");
        } else {
            println!("{s}");
        }
    };
    let t = Target::of(env)?;
    let p = plan_rollback(&t, root, to)?;
    say(&plan_text(&t, &p));
    let opts = Options {
        selector: Selector::Object(p.object.clone()),
        yes: true,
        strict: true,
        dry_run: args.dry_run,
        json: args.json,
        swap_wait: Duration::from_secs(args.swap_wait),
        audit_prefix: "rollback".into(),
    };
    if !args.dry_run && !args.yes {
        confirm()?;
    }
    let start_ms = now_ms();
    let previous = p.choice.previous.clone();
    let mut after_swap = |t: &Target| -> Result<String> {
        match &previous {
            Some(prev) if t.up_with_tag(prev)? => Ok(format!(
                "release {prev} started (compose up -d, STATION_TAG={prev})"
            )),
            _ => Ok("nothing to roll out (no app images here)".into()),
        }
    };
    let result = restore::restore(env, root, &opts, &mut after_swap).and_then(|o| match o {
        Outcome::DryRun => Ok(None),
        Outcome::Failed(_, e) => Err(e),
        Outcome::Done(r) => {
            say("==> verify-redis");
            match crate::verify_redis::verify_environment(env, Duration::from_secs(30))? {
                ExitCode::Ok => say("    verify-redis ok: Redis data survives a crash"),
                code => {
                    return Err(Error::failed(format!(
                        "the database was rolled back and the release put back, but verify-redis \
                         says Redis is not durable (exit {})",
                        code as i32
                    )))
                }
            }
            Ok(Some(*r))
        }
    });
    if args.dry_run {
        return result.map(|_| None);
    }
    let (status, message) = match &result {
        Ok(_) => (
            "ok",
            format!(
                "rolled back deploy {}: restored {}; {}",
                p.choice.undo.sha,
                p.object,
                match &p.choice.previous {
                    Some(prev) => format!("release {prev} put back"),
                    None => "nothing to roll out".into(),
                }
            ),
        ),
        Err(e) => ("failed", e.to_string()),
    };
    let end_ms = now_ms();
    let rec = Record {
        env: env.name.clone(),
        step: plan::ROLLBACK_STEP.into(),
        status: status.into(),
        start: rfc3339_ms(start_ms),
        end: rfc3339_ms(end_ms),
        duration_ms: elapsed_ms(start_ms, end_ms),
        sha: p.choice.undo.sha.clone(),
        actor: crate::deploy::actor(),
        run_url: crate::deploy::run_url(),
        backup_object: Some(p.object.clone()),
        message: message.clone(),
    };
    if let Err(e) = restore::audit_of(&t.host, root).append(&rec) {
        eprintln!("warning: audit log: {e}");
    }
    let restored =
        result.map_err(|e| e.context(format!("rollback of {} failed", p.choice.undo.sha)))?;
    say(&message);
    Ok(Some(Report {
        env: env.name.clone(),
        undone_sha: p.choice.undo.sha.clone(),
        previous: p.choice.previous.clone(),
        backup_object: p.object.clone(),
        outcome: status.into(),
        restore: restored,
        message,
    }))
}

fn confirm() -> Result<()> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        return Err(Error::usage(
            "rollback replaces the live database: confirm on a terminal, or pass --yes (nothing was changed)",
        ));
    }
    eprint!("roll back? type `yes`: ");
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| Error::usage(format!("cannot read the confirmation: {e}")))?;
    if line.trim() == "yes" {
        Ok(())
    } else {
        Err(Error::usage("not confirmed: nothing was changed"))
    }
}

/// For the final message of a deploy that failed at migrate, rollout or health: the exact rollback
/// command and what it would do, or why there is none. With `run_it` (`deploy
/// --rollback-on-failure`) the rollback runs, and the text says how it went.
///
/// Offered only for this deploy (`sha`, whose migrate step ran when `migrated`): see
/// [`plan::offer_after_failed_deploy`]; otherwise the text says no rollback is offered and why.
pub fn after_failed_deploy(
    env: &Environment,
    root: &Path,
    sha: &str,
    migrated: bool,
    run_it: bool,
) -> String {
    let planned = Target::of(env).and_then(|t| {
        let runs = plan::runs(&read_audit(&t.host, root)?);
        if let Err(why) = plan::offer_after_failed_deploy(&runs, sha, migrated) {
            return Ok(Err(why));
        }
        let p = plan_rollback(&t, root, None)?;
        if p.choice.undo.sha != sha {
            return Ok(Err(format!(
                "the rollback plan would undo {}, not this deploy ({sha})",
                p.choice.undo.sha
            )));
        }
        Ok(Ok((t, p)))
    });
    let (t, p) = match planned {
        Ok(Ok(x)) => x,
        Ok(Err(why)) => return format!("\nno rollback offered: {why}"),
        Err(e) => return format!("\nno rollback possible: {e}"),
    };
    let cmd = format!("cargo xtask rollback --env {} --yes", env.name);
    let what = format!(
        "restores {} (the database just before this deploy's migrations; the current one is kept as \
         {}_before_restore_<stamp>) and {}",
        p.object,
        env.database,
        match (&p.choice.previous, t.host.compose_project().is_some()) {
            (Some(prev), true) => format!("puts release {prev} back (compose up -d, STATION_TAG={prev})"),
            _ => "has nothing to roll out".into(),
        }
    );
    if !run_it {
        return format!("\nto undo this deploy: `{cmd}` {what}");
    }
    eprintln!("--rollback-on-failure: running `{cmd}` ({what})");
    let args = Args {
        env: env.name.clone(),
        to: None,
        yes: true,
        dry_run: false,
        json: true,
        swap_wait: 10,
    };
    match rollback(env, root, None, &args) {
        Ok(_) => format!("\nrolled back (--rollback-on-failure): `{cmd}` {what}: done"),
        Err(e) => format!("\n--rollback-on-failure: `{cmd}` FAILED: {e}"),
    }
}
