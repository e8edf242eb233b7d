//! `cargo xtask rollback --env NAME [--to SHA] [--again | --resume] [--expect-undo SHA] [--yes]
//! [--dry-run] [--json]`: undo the
//! deploys since the last good one.
//!
//! The deploy lock is taken first; then, from the audit log ([`plan`]): the runs to undo (every
//! run since the last good deploy G up to the newest that ran its migrations) and G, whose release
//! is put back (`--to` names an older good deploy). The pre-deploy backup of the FIRST of those runs
//! that migrated (the database just before the first bad migration) must exist with a manifest; a
//! server pulls G's images first, then the backup is restored through `restore`'s path under the
//! same lock (steps recorded as `rollback:<step>`), and once the restored database is live G's
//! release is started (`compose up -d` with `STATION_TAG=<G>`; `local` has nothing to roll out).
//! Then health and verify-redis, and a `rollback` record (`sha`: the newest undone run, `previous`:
//! G, `undone_runs`: the ids of the runs it undid) in the audit log. A second rollback with no
//! migrating deploy since is refused unless `--again`.
//!
//! Ctrl-C, SIGTERM and SIGHUP: restore's handler is installed before the lock is taken, so a
//! signal while the rollback plans, asks or pulls stops it between steps with the lock released
//! (the restore then handles it as a restore does: before the swap it stops, during the wait for
//! the sessions it calls the swap off, the renames it finishes).
//! With `--json` the report is printed on a failure too (`outcome` `failed`, `failed_step`), once
//! the plan is made.
//!
//! **Failing after the swap.** Once the restored database is live (`rollback:swap` recorded
//! `ok`), the runs are undone whatever fails after (`compose up -d`, health, verify-redis): the
//! summary `rollback` record is still `failed` (the command failed), its message says the
//! database WAS rolled back, and [`plan::history`] marks its runs undone as for an ok one (it
//! reads the `rollback:swap ok` record, so older logs count too). Such a rollback is *partial*: a
//! plain re-run refuses (even with `--again`) instead of restoring the same backup again, saying
//! when the database was rolled back and what is left; `rollback --resume` runs only that (start
//! the release, health, verify-redis, recorded as `rollback:<step>`) and a `rollback:resume`
//! record with status `ok` finishes it. A later deploy is undone on its own, with its own backup.
//!
//! `--expect-undo SHA`: refuse (exit 1, nothing changed) unless the plan made under the lock
//! undoes that deploy; `deploy --rollback-on-failure` passes its own SHA, since it checked the
//! plan before it could hold the lock and another deploy may have come in between.

pub mod plan;

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::backup;
use crate::deploy::audit::Record;
use crate::deploy::lock::{self, LockGuard, LockInfo};
use crate::deploy::plan::{elapsed_ms, now_ms, rfc3339_ms};
use crate::environments::{Environment, Environments};
use crate::error::{Error, ExitCode, Result};
use crate::git::Sha;
use crate::host::{Host, Script};
use crate::restore::{self, target::Target, Options, Outcome, Selector};

use plan::{Choice, DeployRun};

pub use plan::ROLLBACK_STEP;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Environment from infra/environments.toml.
    #[arg(long)]
    pub env: String,
    /// The release to put back: a successful, not rolled back deploy in the audit log, older than
    /// the undone ones (full SHA or a unique prefix of 7+ hex digits). Default: the last one. Every
    /// deploy after it is undone.
    #[arg(long)]
    pub to: Option<String>,
    /// Roll back although the newest record is already an ok rollback with no deploy since (this
    /// undoes the deploy before the one already rolled back, on purpose).
    #[arg(long)]
    pub again: bool,
    /// Break a stale deploy lock (past its TTL, or left by a dead process on this host, e.g. a
    /// deploy that was killed); a live one still refuses the rollback.
    #[arg(long)]
    pub force_unlock: bool,
    /// Do not ask for confirmation (required without a TTY).
    #[arg(long)]
    pub yes: bool,
    /// Print the plan and the commands, change nothing (planned without taking the deploy lock).
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON on stdout; progress goes to stderr.
    #[arg(long)]
    pub json: bool,
    /// Seconds to wait for the live database's sessions to end before the swap is refused.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub swap_wait: u64,
    /// Finish a rollback that failed after its swap committed (the database is rolled back
    /// already): run only the steps left, i.e. start the release it put back, health and
    /// verify-redis. Nothing is restored.
    #[arg(long, conflicts_with_all = ["to", "again"])]
    pub resume: bool,
    /// Refuse (exit 1, nothing changed) unless the plan made under the deploy lock undoes this
    /// deploy (full SHA): for a caller that checked the plan before it could hold the lock
    /// (`deploy --rollback-on-failure` passes its own SHA).
    #[arg(long, value_name = "SHA")]
    pub expect_undo: Option<String>,
    /// Replay the pre-deploy backup as the database user, as `restore --trust-dump` does: for a
    /// backup that carries its objects' owners (taken before xtask left them out).
    #[arg(long)]
    pub trust_dump: bool,
    /// Restore even when the free space beside the live database looks too small, as `restore
    /// --ignore-space` does.
    #[arg(long)]
    pub ignore_space: bool,
    /// `--rollback-on-failure`: the failed run's own backup (object, sha256 as it verified it).
    /// Restoring exactly that object, whose sha256 must still be that one, the dump replays as the
    /// database user (it is the live database of minutes ago: its default privileges, untrusted
    /// extensions and event triggers restore too).
    #[arg(skip)]
    pub pinned: Option<(String, String)>,
}

/// `rollback --json`: one JSON document on stdout on every path. Once the plan is made it is this
/// report (`outcome` `failed` with `failed_step`, `message` and `exit_code` on a failure). Before
/// that (no confirmation without `--yes`, the lock held, nothing to roll back, the pre-deploy
/// backup missing or its manifest bad, the audit log unreadable) it is the short document of
/// [`crate::error::JsonFailure`]: `env`, `outcome` `failed`, `failed_step` (`confirm`, `lock` or
/// `plan`), `message`, `exit_code`.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub env: String,
    /// The newest run undone (X).
    pub undone_sha: String,
    /// Every run undone, oldest first.
    pub undone_runs: Vec<DeployRun>,
    /// The release put back (G).
    pub previous: Option<String>,
    /// The backup restored, the run that made it, and why that one.
    pub backup_object: String,
    pub backup_of: DeployRun,
    pub backup_reason: String,
    /// Whether the plan was made under the deploy lock (a dry run plans without it).
    pub planned_under_lock: bool,
    /// `ok`, `failed` or `dry-run`.
    pub outcome: String,
    /// When it failed, the step: `expect-undo`, `plan`, `confirm`, `pull`, the restore's (`lock`,
    /// `download+restore`, `verify`, `swap`, `start`, `health`, ...), `verify-redis`.
    pub failed_step: Option<String>,
    pub restore: Option<restore::Report>,
    pub message: String,
    /// The exit code of the command (0 ok, 1 failed, 2 bad input, 3 unreachable).
    pub exit_code: i32,
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
    parse_audit(&text, &origin)
}

/// The audit log's records. A last line cut short (no newline after it: the writer was killed
/// mid-append) is left out with a warning; any other bad line is bad input at its position, with
/// what to do.
fn parse_audit(text: &str, origin: &str) -> Result<Vec<Record>> {
    let n = text.lines().count();
    let torn_tail = !text.is_empty() && !text.ends_with('\n');
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(l) {
            Ok(r) => out.push(r),
            Err(_) if torn_tail && i + 1 == n => eprintln!(
                "warning: {origin}:{}: the last line is cut short (a writer killed mid-append?): left \
                 out",
                i + 1
            ),
            Err(e) => {
                let msg = e.to_string();
                let suffix = format!(" at line {} column {}", e.line(), e.column());
                return Err(Error::input(
                    Path::new(origin),
                    i + 1,
                    e.column().max(1),
                    format!(
                        "{}: not an audit record; repair or remove this line (the log is what rollback \
                         decides by)",
                        msg.strip_suffix(&suffix).unwrap_or(&msg)
                    ),
                ));
            }
        }
    }
    Ok(out)
}

/// What a rollback of `env` would do, from its audit log.
pub struct Planned {
    pub choice: Choice,
    /// The pre-deploy backup to restore (of `choice.restore_from`).
    pub object: String,
}

/// Choose the runs and the release, and check the backup of the first run that migrated: it
/// must be in the bucket with a valid manifest, else refused with the reason (never another
/// backup instead: a later run's was taken after that run's migrations). `again`: see
/// [`plan::check_cascade`].
pub fn plan_rollback(t: &Target, root: &Path, to: Option<&str>, again: bool) -> Result<Planned> {
    let records = read_audit(&t.host, root)?;
    plan::check_logged(&records, &t.env.name)?;
    let h = plan::history(&records);
    plan::check_cascade(&h, &t.env.name, again)?;
    let choice = plan::choose(&h.runs, to, t.host.compose_project().is_some())?;
    let from = &choice.restore_from;
    let label = plan::pre_deploy_label(&from.sha);
    let refuse = |why: String| {
        Error::failed(format!(
            "refusing to roll back {}: {why}; no other backup is used instead (a later run's was \
             taken after that run's migrations)",
            choice.undo.sha
        ))
    };
    let Some(object) = from.backup_object.clone() else {
        return Err(refuse(format!(
            "the audit log records no pre-deploy backup ({label}) for {}",
            from.describe()
        )));
    };
    let objects = backup::list_names(&t.env)?;
    if !objects.iter().any(|x| x.path == object) {
        return Err(refuse(format!(
            "the pre-deploy backup of {} ({object}, {label}) is not in {}",
            from.describe(),
            t.env.backup.base()
        )));
    }
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

fn put_back_text(t: &Target, previous: Option<&str>) -> String {
    match (previous, t.host.compose_project().is_some()) {
        (Some(prev), true) => format!(
            "release {prev} ({}`compose up -d` with STATION_TAG={prev})",
            if t.host.remote().is_some() {
                "`compose pull` before the swap, "
            } else {
                "this machine's images, "
            }
        ),
        (_, false) => "nothing to roll out (the local environment runs no app images)".into(),
        (None, true) => "no release known".into(),
    }
}

fn plan_text(t: &Target, p: &Planned, locked: bool) -> String {
    let c = &p.choice;
    let mut s = format!("rollback plan for `{}`:\n", t.env.name);
    for (i, u) in c.undone.iter().enumerate() {
        s.push_str(&format!(
            "  {}  {}\n",
            if i == 0 { "undo    " } else { "        " },
            u.describe()
        ));
    }
    s.push_str(&format!(
        "  restore   {} (the current database is kept)\n            why: {}\n",
        p.object, c.why
    ));
    s.push_str(&format!(
        "  put back  {}\n  then      health and verify-redis; the `rollback` record marks {} undone",
        put_back_text(t, c.previous.as_deref()),
        if c.undone.len() == 1 {
            "that run".to_string()
        } else {
            format!("these {} runs", c.undone.len())
        }
    ));
    if !locked {
        s.push_str(
            "\n  (dry run: planned WITHOUT taking the deploy lock; a deploy running now could \
             change this plan)",
        );
    }
    s
}

pub fn run(args: Args) -> Result<ExitCode> {
    let envs = Environments::load()?;
    let env = envs.get(&args.env)?;
    let to = match &args.to {
        Some(s) => match Sha::parse(s) {
            Ok(sha) => Some(sha.as_str().to_string()),
            Err(_) => {
                let e = Error::usage(format!(
                    "--to {s:?}: a commit SHA is 7 to 40 hexadecimal characters"
                ));
                if args.json {
                    println!("{}", e.json_failure(Some(&env.name), "input"));
                }
                return Err(e);
            }
        },
        None => None,
    };
    // The report on stdout also when the rollback failed once planned (its `outcome` says so).
    let (report, result) = match rollback(env, &envs.root, to.as_deref(), &args) {
        Ok(r) => (Some(Box::new(r)), Ok(ExitCode::Ok)),
        Err(f) => {
            if let (true, None) = (args.json, &f.report) {
                // Failed before the report existed: the short document.
                println!("{}", f.error.json_failure(Some(&env.name), f.step));
            }
            (f.report, Err(f.error))
        }
    };
    if let (true, Some(r)) = (args.json, &report) {
        println!("{}", serde_json::to_string_pretty(r).expect("serializable"));
    }
    result
}

/// Take the deploy lock for a rollback (exit 1, naming the holder, when a deploy or restore holds
/// it).
fn take_lock(t: &Target, root: &Path, force: bool) -> Result<LockGuard> {
    let place = crate::deploy::runner::lock_place(&t.host, root);
    let info = LockInfo::new("rollback", 6 * 3600, crate::random::secret()?);
    let (g, notes) = lock::acquire(&place, &info, force).map_err(|e| {
        Error::failed(format!(
            "refusing to roll back: {e} (nothing was read or changed)"
        ))
    })?;
    for n in notes {
        eprintln!("    {n}");
    }
    Ok(g)
}

/// A rollback that failed: the error, and once the plan was made the report (`outcome`
/// `failed`, `failed_step`) that `--json` prints.
#[derive(Debug)]
pub struct Failed {
    pub error: Error,
    pub report: Option<Box<Report>>,
    /// The step, for the short `--json` document when there is no report.
    pub step: &'static str,
}

impl Failed {
    /// A failure at `step` before the report exists.
    fn at(step: &'static str, error: Error) -> Failed {
        Failed {
            error,
            report: None,
            step,
        }
    }
}

impl From<Error> for Failed {
    fn from(error: Error) -> Self {
        Failed::at("plan", error)
    }
}

impl Report {
    /// This report as the failure at `step` (nothing in it changes but the outcome, the step and
    /// the message).
    fn failed(mut self, step: &str, error: Error) -> Failed {
        self.outcome = "failed".into();
        self.failed_step = Some(step.into());
        self.message = error.to_string();
        self.exit_code = error.exit_code() as i32;
        Failed {
            error,
            report: Some(Box::new(self)),
            step: "",
        }
    }
}

/// Stop (the lock is released as the guard drops) when Ctrl-C, SIGTERM or SIGHUP came: the
/// handler is restore's, installed before the lock is taken, so a signal while the rollback holds
/// it (planning, the confirmation, `compose pull`) no longer kills it with the lock left behind.
fn check_interrupt(during: &str) -> Result<()> {
    crate::signals::check(&format!(
        " during {during}: the rollback stops before the restore; nothing was changed"
    ))
}

/// Lock, plan, confirm, pull the release, restore with the release started after the swap, verify
/// Redis, record, unlock. A dry run plans without the lock and changes nothing.
pub fn rollback(
    env: &Environment,
    root: &Path,
    to: Option<&str>,
    args: &Args,
) -> std::result::Result<Report, Failed> {
    let say = |s: &str| {
        if args.json {
            eprintln!("{s}");
        } else {
            println!("{s}");
        }
    };
    if !args.dry_run && !args.yes && !std::io::stdin().is_terminal() {
        return Err(Failed::at(
            "confirm",
            Error::usage(
                "rollback replaces the live database: confirm on a terminal, or pass --yes (nothing was changed)",
            ),
        ));
    }
    let t = Target::of(env)?;
    // Before the lock: from then on a signal only sets the flag, checked between steps (and by the
    // restore), and the guard releases the lock on the way out. Restore's behaviour, also when a
    // deploy runs this rollback (`--rollback-on-failure`): its own is the current one until then.
    let _signals = if args.dry_run {
        None
    } else {
        Some(restore::on_signal(
            "stopping before the swap (the live database stays as it is)",
        )?)
    };
    let mut guard = if args.dry_run {
        None
    } else {
        Some(take_lock(&t, root, args.force_unlock).map_err(|e| Failed::at("lock", e))?)
    };
    if args.resume {
        return resume(&t, root, guard, args);
    }
    let p = plan_rollback(&t, root, to, args.again)?;
    let c = &p.choice;
    let mut report = Report {
        env: env.name.clone(),
        undone_sha: c.undo.sha.clone(),
        undone_runs: c.undone.clone(),
        previous: c.previous.clone(),
        backup_object: p.object.clone(),
        backup_of: c.restore_from.clone(),
        backup_reason: c.why.clone(),
        planned_under_lock: guard.is_some(),
        outcome: "dry-run".into(),
        failed_step: None,
        restore: None,
        message: String::new(),
        exit_code: 0,
    };
    if let Some(want) = args.expect_undo.as_deref() {
        if !p.choice.undo.sha.eq_ignore_ascii_case(want.trim()) {
            return Err(report.failed(
                "expect-undo",
                Error::failed(format!(
                    "refusing to roll back: the plan made under the deploy lock undoes {}, not \
                     {want} as expected (a deploy ran since that was checked?); nothing was changed",
                    p.choice.undo.sha
                )),
            ));
        }
    }
    if let Err(e) = check_interrupt("the plan") {
        return Err(report.failed("plan", e));
    }
    say(&plan_text(&t, &p, guard.is_some()));
    // The failed run's own backup, pinned by the deploy: its sha256 must still be the one the
    // deploy verified, and then it replays as the database user.
    let pin = args
        .pinned
        .as_ref()
        .filter(|(object, _)| *object == p.object)
        .map(|(_, sum)| sum.clone());
    let opts = Options {
        selector: Selector::Object(p.object.clone()),
        yes: true,
        strict: true,
        dry_run: args.dry_run,
        json: args.json,
        swap_wait: Duration::from_secs(args.swap_wait),
        audit_prefix: "rollback".into(),
        // Rollback takes the lock itself (breaking a stale one with its own --force-unlock).
        force_unlock: false,
        trust_dump: args.trust_dump || pin.is_some(),
        expect_sha256: pin,
        ignore_space: args.ignore_space,
        audit_sha: Some(c.undo.sha.clone()),
        audit_previous: c.previous.clone(),
    };
    let pull = match &c.previous {
        Some(prev) => match t.pull_cmd(prev) {
            Ok(cmd) => cmd,
            Err(e) => return Err(report.failed("pull", e)),
        },
        None => None,
    };
    if args.dry_run {
        if let Some(cmd) = &pull {
            say(&format!("before the swap: $ {}", cmd.display()));
        }
        match restore::restore(env, root, &opts, &mut |_| Ok(String::new())) {
            Err(e) => return Err(report.failed("plan", e)),
            // Refused by the restore's plan (the space check, ...): that step.
            Ok(Outcome::Failed(r, e)) => {
                let step = r.failed_step.clone().unwrap_or_else(|| "plan".into());
                report.restore = Some(*r);
                return Err(report.failed(&step, e));
            }
            Ok(_) => {}
        }
        report.message = "dry run: nothing was changed".into();
        return Ok(report);
    }
    if !args.yes {
        if let Err(e) = confirm() {
            return Err(report.failed("confirm", e));
        }
    }
    let start_ms = now_ms();
    let previous = c.previous.clone();
    // The step that failed (for the report), and the restore's own report when it ran.
    let mut failed_step = String::from("pull");
    let mut restored: Option<restore::Report> = None;
    let pulled = match (&pull, &previous) {
        (Some(cmd), Some(prev)) => {
            say(&format!("==> pull (release {prev})"));
            cmd.output()
                .and_then(|o| crate::host::outcome(&format!("compose pull of release {prev}"), o))
                .map(|_| say(&format!("    pulled release {prev}")))
                .map_err(|e| {
                    e.context(format!(
                        "refusing to roll back: release {prev} cannot be pulled, so it could not \
                         be started after the swap; the live database and the app are untouched"
                    ))
                })
        }
        _ => Ok(()),
    }
    .and_then(|()| check_interrupt("the pull"));
    let mut after_swap = |t: &Target| -> Result<String> {
        match &previous {
            Some(prev) if t.up_with_tag(prev)? => Ok(format!(
                "release {prev} started (compose up -d, STATION_TAG={prev})"
            )),
            _ => Ok("nothing to roll out (no app images here)".into()),
        }
    };
    // When the restored database went live: from then on this rollback has undone its runs,
    // whatever fails after (see `plan::history`).
    let mut swapped_at: Option<String> = None;
    let result = match pulled {
        Err(e) => Err(e),
        Ok(()) => {
            failed_step = "plan".into();
            match restore::restore_under(env, root, &opts, guard.as_ref(), &mut after_swap) {
                Err(e) => Err(e),
                Ok(Outcome::DryRun(_)) => Ok(()),
                Ok(Outcome::Failed(r, e)) => {
                    if r.steps.iter().any(|s| s.step == "swap" && s.status == "ok") {
                        swapped_at = Some(rfc3339_ms(now_ms()));
                    }
                    if let Some(s) = r.steps.iter().find(|s| s.status != "ok") {
                        failed_step = s.step.clone();
                    }
                    restored = Some(*r);
                    Err(e)
                }
                Ok(Outcome::Done(r)) => {
                    swapped_at = Some(rfc3339_ms(now_ms()));
                    restored = Some(*r);
                    failed_step = "verify-redis".into();
                    say("==> verify-redis");
                    match crate::verify_redis::verify_environment(env, Duration::from_secs(30)) {
                        Ok(ExitCode::Ok) => {
                            say("    verify-redis ok: Redis data survives a crash");
                            Ok(())
                        }
                        Ok(code) => Err(Error::failed(format!(
                            "the database was rolled back and the release put back, but \
                             verify-redis says Redis is not durable (exit {})",
                            code as i32
                        ))),
                        Err(e) => Err(e),
                    }
                }
            }
        }
    };
    let (status, message) =
        match &result {
            Ok(_) => (
                "ok",
                format!(
                    "rolled back {} ({}): restored {}; {}",
                    if c.undone.len() == 1 {
                        format!("deploy {}", c.undo.sha)
                    } else {
                        format!("{} runs up to deploy {}", c.undone.len(), c.undo.sha)
                    },
                    c.undone
                        .iter()
                        .map(|u| format!("{} started {}", u.sha, u.start))
                        .collect::<Vec<_>>()
                        .join(", "),
                    p.object,
                    match &c.previous {
                        Some(prev) => format!("release {prev} put back"),
                        None => "nothing to roll out".into(),
                    }
                ),
            ),
            Err(e) => match &swapped_at {
                // Still `failed` (the command failed), but the message says the swap committed; the
                // `rollback:swap ok` record before this one is what `plan::history` reads.
                Some(at) => (
                    "failed",
                    format!(
                    "the database WAS rolled back (restored {}; its swap committed, by {at}), so \
                     {} undone; then: {e}. Left: {}health and verify-redis: `cargo xtask rollback \
                     --env {} --resume --yes` runs just those (a plain re-run refuses to restore \
                     again)",
                    p.object,
                    if c.undone.len() == 1 {
                        format!("deploy {} is", c.undo.sha)
                    } else {
                        format!("the {} runs up to deploy {} are", c.undone.len(), c.undo.sha)
                    },
                    match &c.previous {
                        Some(prev) if t.host.compose_project().is_some() =>
                            format!("start release {prev}, "),
                        _ => String::new(),
                    },
                    env.name
                ),
                ),
                None => ("failed", e.to_string()),
            },
        };
    let end_ms = now_ms();
    let rec = Record {
        env: env.name.clone(),
        step: plan::ROLLBACK_STEP.into(),
        status: status.into(),
        start: rfc3339_ms(start_ms),
        end: rfc3339_ms(end_ms),
        duration_ms: elapsed_ms(start_ms, end_ms),
        sha: c.undo.sha.clone(),
        actor: crate::deploy::actor(),
        run_url: crate::deploy::run_url(),
        backup_object: Some(p.object.clone()),
        message: message.clone(),
        previous: c.previous.clone(),
        run: None,
        undone_runs: plan::undone_ids(c),
    };
    // Written under the lock, naming the runs it undid (`plan::history` reads them back; a
    // record without them, as older versions wrote, is computed again from the log).
    if let Err(e) = restore::audit_of(&t.host, root).append(&rec) {
        eprintln!("warning: audit log: {e}");
    }
    if let Some(mut g) = guard.take() {
        if let Err(e) = g.release() {
            eprintln!("warning: {e}");
        }
    }
    report.restore = restored;
    if let Err(e) = result {
        let error = if swapped_at.is_some() {
            // The message says it all; the exit code stays the cause's (3: unreachable).
            match e {
                Error::Unavailable(_) => Error::unavailable(message.clone()),
                _ => Error::failed(message.clone()),
            }
        } else {
            e.context(format!("rollback of {} failed", c.undo.sha))
        };
        let mut f = report.failed(&failed_step, error);
        if let Some(r) = f.report.as_mut() {
            r.message = message;
        }
        return Err(f);
    }
    say(&message);
    report.outcome = status.into();
    report.message = message;
    Ok(report)
}

/// `rollback --resume`, under the lock: finish the partial rollback (see [`plan::pending_resume`])
/// with the steps it left: start its release, health, verify-redis, each recorded as
/// `rollback:<step>`, then a `rollback:resume` record (`ok` finishes it). Nothing is restored.
fn resume(
    t: &Target,
    root: &Path,
    mut guard: Option<LockGuard>,
    args: &Args,
) -> std::result::Result<Report, Failed> {
    let say = |s: &str| {
        if args.json {
            eprintln!("{s}");
        } else {
            println!("{s}");
        }
    };
    let env = &t.env;
    let h = plan::history(&read_audit(&t.host, root)?);
    let m = plan::pending_resume(&h)
        .map_err(|why| Error::failed(format!("refusing to resume: {why}")))?
        .clone();
    let undone: Vec<DeployRun> = m.undone.iter().map(|&i| h.runs[i].clone()).collect();
    let restored_at = m.restored_at.as_deref().unwrap_or("an unrecorded time");
    say(&format!(
        "rollback --resume for `{}`: the rollback of {} (ended {}) restored {} and its swap \
         committed at {restored_at}; nothing is restored again\n  left      {}health, \
         verify-redis{}",
        env.name,
        m.sha,
        m.end,
        m.backup_object.as_deref().unwrap_or("its backup"),
        match (&m.previous, t.host.compose_project().is_some()) {
            (Some(p), true) => format!("start release {p} (compose up -d, STATION_TAG={p}), "),
            _ => String::new(),
        },
        if guard.is_none() {
            "\n  (dry run: planned WITHOUT taking the deploy lock)"
        } else {
            ""
        }
    ));
    let mut report = Report {
        env: env.name.clone(),
        undone_sha: m.sha.clone(),
        backup_of: undone
            .iter()
            .find(|u| u.migrated)
            .or(undone.first())
            .cloned()
            .ok_or_else(|| {
                Error::failed(format!(
                    "refusing to resume: the rollback of {} marked no run undone",
                    m.sha
                ))
            })?,
        undone_runs: undone,
        previous: m.previous.clone(),
        backup_object: m.backup_object.clone().unwrap_or_default(),
        backup_reason: format!("restored by the rollback that committed its swap at {restored_at}"),
        planned_under_lock: guard.is_some(),
        outcome: "dry-run".into(),
        failed_step: None,
        restore: None,
        message: String::new(),
        exit_code: 0,
    };
    if args.dry_run {
        report.message = "dry run: nothing was changed".into();
        return Ok(report);
    }
    if !args.yes {
        if let Err(e) = confirm() {
            return Err(report.failed("confirm", e));
        }
    }
    let audit = restore::audit_of(&t.host, root);
    let record = |step: &str, status: &str, s_ms: u128, message: &str| {
        let e_ms = now_ms();
        let rec = Record {
            env: env.name.clone(),
            step: step.into(),
            status: status.into(),
            start: rfc3339_ms(s_ms),
            end: rfc3339_ms(e_ms),
            duration_ms: elapsed_ms(s_ms, e_ms),
            sha: m.sha.clone(),
            actor: crate::deploy::actor(),
            run_url: crate::deploy::run_url(),
            backup_object: m.backup_object.clone(),
            message: message.into(),
            previous: m.previous.clone(),
            run: None,
            undone_runs: None,
        };
        if let Err(e) = audit.append(&rec) {
            eprintln!("warning: audit log: {e}");
        }
    };
    let start_ms = now_ms();
    let failed_step = std::cell::RefCell::new(String::new());
    let step = |name: &str, f: &mut dyn FnMut() -> Result<String>| -> Result<()> {
        say(&format!("==> {name}"));
        let s_ms = now_ms();
        *failed_step.borrow_mut() = name.to_string();
        // A signal stops the resume before its next step (the database stays rolled back).
        let r =
            crate::signals::check(" before this step: the resume stops here").and_then(|()| f());
        let (status, msg) = match &r {
            Ok(m) => ("ok", m.clone()),
            Err(e) => ("failed", e.to_string()),
        };
        say(&format!("    {name} {status}: {msg}"));
        record(&format!("rollback:{name}"), status, s_ms, &msg);
        r.map(|_| ())
    };
    let db = env.database.clone();
    let result = step("start", &mut || match &m.previous {
        Some(prev) if t.up_with_tag(prev)? => Ok(format!(
            "release {prev} started (compose up -d, STATION_TAG={prev})"
        )),
        _ => Ok("nothing to roll out (no app images here)".into()),
    })
    .and_then(|()| step("health", &mut || t.health(&db, 30)))
    .and_then(|()| {
        step(
            "verify-redis",
            &mut || match crate::verify_redis::verify_environment(env, Duration::from_secs(30))? {
                ExitCode::Ok => Ok("Redis data survives a crash".into()),
                code => Err(Error::failed(format!(
                    "verify-redis says Redis is not durable (exit {})",
                    code as i32
                ))),
            },
        )
    });
    let (status, message) = match &result {
        Ok(()) => (
            "ok",
            format!(
                "resumed the rollback of {}: the database was rolled back at {restored_at} \
                 (restored {}); {}, health and verify-redis ok",
                m.sha,
                report.backup_object,
                match &m.previous {
                    Some(prev) if t.host.compose_project().is_some() =>
                        format!("release {prev} put back"),
                    _ => "nothing to roll out".into(),
                }
            ),
        ),
        Err(e) => (
            "failed",
            format!(
                "resuming the rollback of {} failed: {e}; the database stays rolled back (at \
                 {restored_at}); run `cargo xtask rollback --env {} --resume --yes` again once \
                 that is fixed",
                m.sha, env.name
            ),
        ),
    };
    record(plan::RESUME_STEP, status, start_ms, &message);
    if let Some(mut g) = guard.take() {
        if let Err(e) = g.release() {
            eprintln!("warning: {e}");
        }
    }
    if let Err(e) = result {
        let error = match e {
            Error::Unavailable(_) => Error::unavailable(message),
            _ => Error::failed(message),
        };
        return Err(report.failed(&failed_step.into_inner(), error));
    }
    say(&message);
    report.outcome = status.into();
    report.message = message;
    Ok(report)
}

fn confirm() -> Result<()> {
    if !std::io::stdin().is_terminal() {
        return Err(Error::usage(
            "rollback replaces the live database: confirm on a terminal, or pass --yes (nothing was changed)",
        ));
    }
    eprint!("roll back? type `yes`: ");
    // Read on a thread and wait for it here: with the signal handler installed, Ctrl-C only sets
    // the flag, which would leave the prompt waiting for a line.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let r = std::io::stdin().read_line(&mut line).map(|_| line);
        let _ = tx.send(r);
    });
    let line = loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(r) => {
                break r.map_err(|e| Error::usage(format!("cannot read the confirmation: {e}")))?
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) if restore::interrupted() => {
                eprintln!();
                return Err(Error::usage(format!(
                    "{} at the confirmation: nothing was changed",
                    restore::INTERRUPTED_BY
                )));
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Error::usage(
                    "cannot read the confirmation: nothing was changed",
                ))
            }
        }
    };
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
    pinned: Option<(String, String)>,
) -> String {
    let planned = Target::of(env).and_then(|t| {
        let runs = plan::runs(&read_audit(&t.host, root)?);
        if let Err(why) = plan::offer_after_failed_deploy(&runs, sha, migrated) {
            return Ok(Err(why));
        }
        let p = plan_rollback(&t, root, None, false)?;
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
        "restores {} ({}; the current database is kept as {}_before_restore_<stamp>), marks {} \
         undone and {}",
        p.object,
        p.choice.why,
        env.database,
        p.choice
            .undone
            .iter()
            .map(DeployRun::describe)
            .collect::<Vec<_>>()
            .join(", "),
        match (&p.choice.previous, t.host.compose_project().is_some()) {
            (Some(prev), true) =>
                format!("puts release {prev} back (compose up -d, STATION_TAG={prev})"),
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
        again: false,
        force_unlock: false,
        yes: true,
        dry_run: false,
        json: true,
        swap_wait: 10,
        resume: false,
        // The plan above was made without the lock: `rollback` plans again under it and refuses
        // when another deploy came in between.
        expect_undo: Some(sha.to_string()),
        trust_dump: false,
        ignore_space: false,
        pinned,
    };
    match rollback(env, root, None, &args) {
        Ok(_) => format!("\nrolled back (--rollback-on-failure): `{cmd}` {what}: done"),
        Err(f) => format!("\n--rollback-on-failure: `{cmd}` FAILED: {}", f.error),
    }
}

#[cfg(test)]
mod audit_tests {
    use super::*;

    #[test]
    fn a_torn_last_line_is_left_out_and_any_other_bad_line_is_input_at_its_position() {
        let good = r#"{"env":"local","step":"pipeline","status":"ok","start":"2026-12-01T09:00:00.000Z","end":"2026-12-01T09:00:01.000Z","duration_ms":1,"sha":"a","actor":"t"}"#;
        let torn = format!("{good}\n{{\"partial\": ");
        assert_eq!(parse_audit(&torn, "log").unwrap().len(), 1);
        let bad = format!("{good}\n{{\"partial\": \n{good}\n");
        let e = parse_audit(&bad, "log").unwrap_err();
        assert_eq!(e.exit_code(), ExitCode::Usage);
        let s = e.to_string();
        assert!(s.starts_with("log:2:"), "{s}");
        assert!(!s.contains("at line"), "position said twice: {s}");
        assert!(s.contains("repair or remove this line"), "{s}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The release to put back is pulled where a deploy pulls (a server), with its tag; nothing is
    /// pulled where the images are this machine's (Compose here) or there are none (`local`).
    #[test]
    fn the_release_is_pulled_only_where_a_deploy_pulls() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let text = std::fs::read_to_string(repo.join("infra/environments.toml")).unwrap();
        let envs = Environments::parse(&text, Path::new("environments.toml"), &repo).unwrap();
        let target = |name: &str| {
            let env = envs.get(name).unwrap().clone();
            let host = crate::host::Host::planned(&env).unwrap();
            Target { env, host }
        };
        let t = target("staging");
        let cmd = t.pull_cmd("abc1234").unwrap().expect("a server pulls");
        let words = shlex::split(&cmd.get_args().last().unwrap()).unwrap();
        assert_eq!(words.last().map(String::as_str), Some("pull"), "{words:?}");
        assert!(words.iter().any(|w| w == "abc1234"), "{words:?}");
        assert!(put_back_text(&t, Some("abc1234")).contains("`compose pull` before the swap"));
        for name in ["local", "e2e"] {
            let t = target(name);
            assert!(t.pull_cmd("abc1234").unwrap().is_none(), "{name}");
            assert!(
                !put_back_text(&t, Some("abc1234")).contains("pull"),
                "{name}"
            );
        }
    }
}
