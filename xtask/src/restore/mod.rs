//! `cargo xtask restore --env NAME (OBJECT | --label LABEL) [--yes] [--strict] [--dry-run] [--json]`,
//! `--kept`, `--drop-kept DBNAME`: put a backup back into the live database, beside it first.
//!
//! Steps (each printed and appended to the audit log as `restore:<step>`): plan (with the free
//! space: refused when it does not fit) → lock → download+restore (with a manifest: streamed from
//! the bucket into `<db>_restore_<stamp>`, made like the live database, in one transaction under
//! `\restrict`, committed only when the object's sha256 is the manifest's and the per-table
//! counts and newest migration, taken in that transaction, are too; else download (checked) →
//! restore) → verify (what the dump set on the database itself; the hand-over to the live owner)
//! → properties (the live database's own: ACL, settings, comment, limit) → swap (stop the writers,
//! block connections, end sessions within `--swap-wait`, both renames in one transaction, allow
//! connections) → start (the app) → health. The replaced database is kept as
//! `<db>_before_restore_<stamp>`. Before the swap, any failure (or Ctrl-C, SIGTERM, SIGHUP) leaves
//! the live database untouched and the app running; the scratch database is dropped by a guard.
//! Layout: [`plan`] (pure: names, SQL, checks), [`scratch`] (the replay into the scratch
//! database, shared with `backup drill`), [`target`] (where the commands run).

pub mod plan;
pub(crate) mod scratch;
pub mod target;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::backup::manifest::{self, Manifest};
use crate::backup::{self, result::BackupName, Label, RemoteObject};
use crate::deploy::audit::{Audit, Record};
use crate::deploy::lock::{self, LockGuard, LockInfo};
use crate::deploy::plan::{elapsed_ms, now_ms, now_unix, rfc3339_ms};
use crate::environments::{Environment, Environments};
use crate::error::{Error, ExitCode, Result};

use plan::{DbName, LiveFacts, Names, Stamp};
use scratch::{Replay, Replayer, Scratch, Want};
use target::{Fetched, Target};

#[derive(clap::Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["object", "label", "kept", "drop_kept"])))]
pub struct Args {
    /// Environment from infra/environments.toml (no default: a restore names its target).
    #[arg(long)]
    pub env: String,
    /// The backup: its full path (`b2:bucket/postgres/YYYYMM/station_backup_...sql.gz`) or its
    /// file name, as in `backup drill`.
    pub object: Option<String>,
    /// The newest backup with this label (e.g. `pre-deploy-abc1234`).
    #[arg(long, conflicts_with = "object")]
    pub label: Option<String>,
    /// Do not ask for confirmation (required without a TTY).
    #[arg(long)]
    pub yes: bool,
    /// Refuse a backup without a manifest (exit 1).
    #[arg(long)]
    pub strict: bool,
    /// Print the plan and the commands, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON on stdout; progress goes to stderr.
    #[arg(long)]
    pub json: bool,
    /// List the kept databases (`<db>_before_restore_<stamp>`) with their size and age.
    #[arg(long, conflicts_with_all = ["object", "label", "drop_kept"])]
    pub kept: bool,
    /// Drop one kept database (only names of the shape `<db>_before_restore_YYYYmmdd_HHMMSS[_N]`).
    #[arg(long, value_name = "DBNAME", conflicts_with_all = ["object", "label"])]
    pub drop_kept: Option<String>,
    /// Seconds to wait for the live database's sessions to end before the swap is refused.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub swap_wait: u64,
    /// Break a stale deploy lock (its holder is gone; a live lock still refuses), as deploy does.
    #[arg(long)]
    pub force_unlock: bool,
    /// Replay the dump as the database user (a superuser in the postgres image) instead of a role
    /// that owns only the scratch database: for backups that carry their objects' owners
    /// (`ALTER ... OWNER TO`, taken before xtask's backups left them out). Its SQL then runs with
    /// every right on the server: only for a backup you trust.
    #[arg(long)]
    pub trust_dump: bool,
    /// Restore even when the free space beside the live database looks too small (the estimate,
    /// the live database's size plus its WAL and a reserve, is high for a bloated database).
    #[arg(long)]
    pub ignore_space: bool,
}

/// Which backup to restore.
#[derive(Clone, Debug)]
pub enum Selector {
    Object(String),
    Label(Label),
}

/// What one restore does (the CLI and `rollback` both build one).
#[derive(Clone, Debug)]
pub struct Options {
    pub selector: Selector,
    pub yes: bool,
    pub strict: bool,
    pub dry_run: bool,
    pub json: bool,
    pub swap_wait: Duration,
    /// Audit-log step prefix (`restore`, or `rollback` when rollback drives it).
    pub audit_prefix: String,
    /// Break a stale deploy lock.
    pub force_unlock: bool,
    /// Replay (and count) as the database user, not as the scratch database's own role.
    pub trust_dump: bool,
    /// The SHA and release the audit records carry (rollback: the deploy undone and the release
    /// put back, so that a rollback killed after its swap is still read as one); default: the
    /// backup's git SHA, no release.
    pub audit_sha: Option<String>,
    pub audit_previous: Option<String>,
    /// The sha256 the backup must have (rollback of a deploy's own backup): its manifest's and the
    /// downloaded object's, else the restore is refused.
    pub expect_sha256: Option<String>,
    /// Go on when the space check says the restore does not fit (a warning instead).
    pub ignore_space: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct StepReport {
    pub step: String,
    pub status: String,
    pub duration_ms: u64,
    pub message: String,
}

/// `restore --json`: one JSON document on stdout on every path. Once the plan is made it is this
/// report, also when the restore is refused before anything ran (no confirmation, the space
/// check, the lock, the audit log: `steps` then holds only that refusal, as `confirm`, `space`,
/// `lock`, `audit` or `plan`). On a failure `outcome` is `failed` (or `interrupted`),
/// `failed_step` the step, `message` the error and `exit_code` the process's (1, 2 or 3; 0 when
/// ok). Before a plan exists (bad input, the bucket or the database out of reach while planning)
/// the document is the short one of [`crate::error::JsonFailure`]: `env`, `outcome` `failed`,
/// `failed_step` (`input` or `plan`), `message`, `exit_code`.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub planned: Header,
    pub outcome: String,
    pub steps: Vec<StepReport>,
    /// Writers stopped → healthy again.
    pub downtime_ms: Option<u64>,
    /// What went wrong without undoing the outcome (e.g. the swap's psql failed after its commit,
    /// which pg_database confirmed).
    pub warnings: Vec<String>,
    /// The step that failed (`None` when ok).
    pub failed_step: Option<String>,
    /// The error (`None` when ok).
    pub message: Option<String>,
    /// The exit code of the command (0 ok, 1 failed, 2 bad input, 3 unreachable).
    pub exit_code: i32,
}

/// What the plan chose, first in [`Report`] and [`DryRun`] alike (flattened: their JSON has
/// these fields at the top level).
#[derive(Clone, Debug, Serialize)]
pub struct Header {
    pub env: String,
    pub object: String,
    /// Whether the backup has a manifest.
    pub manifest: bool,
    pub database: String,
    pub scratch_database: String,
    /// The replaced database, kept with every write made after the backup (`None`: there was no
    /// live database).
    pub kept_database: Option<String>,
    pub backup_created_at: Option<String>,
    pub window_seconds: Option<i64>,
}

impl Header {
    fn of(env: &Environment, p: &Planned) -> Header {
        Header {
            env: env.name.clone(),
            object: p.object.path.clone(),
            manifest: p.manifest.is_some(),
            database: p.names.live.to_string(),
            scratch_database: p.names.scratch.to_string(),
            kept_database: p.live.as_ref().map(|_| p.names.kept.to_string()),
            backup_created_at: p.created_at.clone(),
            window_seconds: p.window_seconds,
        }
    }
}

impl Report {
    /// The report of `p` with `steps` so far.
    fn of(env: &Environment, p: &Planned, steps: Vec<StepReport>, warnings: Vec<String>) -> Report {
        Report {
            planned: Header::of(env, p),
            outcome: "ok".into(),
            steps,
            downtime_ms: None,
            warnings,
            failed_step: None,
            message: None,
            exit_code: 0,
        }
    }

    /// This report as failed by `e` (at the first step not ok, else `step`).
    fn failing(mut self, step: &str, e: &Error) -> Report {
        self.outcome = if interrupted() {
            "interrupted"
        } else {
            "failed"
        }
        .into();
        self.failed_step = Some(
            self.steps
                .iter()
                .find(|s| s.status != "ok")
                .map(|s| s.step.clone())
                .unwrap_or_else(|| step.into()),
        );
        self.message = Some(e.to_string());
        self.exit_code = e.exit_code() as i32;
        self
    }
}

/// `restore --dry-run --json`: the plan and the commands, nothing changed. Stable field names:
/// `dry_run` (always true), `env`, `object`, `manifest` (whether it has one), `database`,
/// `scratch_database`, `kept_database` (null: there is no live database to keep),
/// `backup_created_at`, `window_seconds`, `plan` (the plan's text, as printed), `warnings`, and
/// `commands`: the commands the restore would run, in order, as text (secrets redacted).
#[derive(Clone, Debug, Serialize)]
pub struct DryRun {
    pub dry_run: bool,
    #[serde(flatten)]
    pub planned: Header,
    pub plan: String,
    pub warnings: Vec<String>,
    pub commands: Vec<String>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    // `--json`: one document on stdout on every path; a failure before the report exists gets
    // the short one (what step, why, the exit code).
    let (json, env) = (args.json, args.env.clone());
    let mut step = "input";
    let r = run_in(args, &mut step);
    if let (true, Some(step), Err(e)) = (json, Some(step).filter(|s| !s.is_empty()), &r) {
        println!("{}", e.json_failure(Some(&env), step));
    }
    r
}

/// [`run`]; `step` is the step running while no JSON has been printed (empty once it has).
fn run_in(args: Args, step: &mut &'static str) -> Result<ExitCode> {
    let envs = Environments::load()?;
    let env = envs.get(&args.env)?;
    if args.kept {
        *step = "kept";
        return list_kept(env, args.json);
    }
    if let Some(name) = &args.drop_kept {
        *step = "drop-kept";
        return drop_kept(env, &envs.root, name, &args);
    }
    let selector = match (&args.object, &args.label) {
        (Some(o), None) => Selector::Object(o.clone()),
        (None, Some(l)) => Selector::Label(Label::parse(l)?),
        _ => return Err(Error::usage("give OBJECT or --label LABEL")),
    };
    let opts = Options {
        selector,
        yes: args.yes,
        strict: args.strict,
        dry_run: args.dry_run,
        json: args.json,
        swap_wait: Duration::from_secs(args.swap_wait),
        audit_prefix: "restore".into(),
        force_unlock: args.force_unlock,
        trust_dump: args.trust_dump,
        audit_sha: None,
        audit_previous: None,
        expect_sha256: None,
        ignore_space: args.ignore_space,
    };
    *step = "plan";
    let outcome = restore(env, &envs.root, &opts, &mut |t| start_app(t))?;
    *step = "";
    match outcome {
        Outcome::DryRun(d) => {
            if opts.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&d).expect("serializable")
                );
            }
            Ok(ExitCode::Ok)
        }
        Outcome::Done(r) => {
            if opts.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&r).expect("serializable")
                );
            }
            Ok(ExitCode::Ok)
        }
        Outcome::Failed(r, e) => {
            if opts.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&r).expect("serializable")
                );
            }
            Err(e)
        }
    }
}

/// The default "after the swap": start the writers that the swap stopped.
pub fn start_app(t: &Target) -> Result<String> {
    let w = t.writers();
    t.start_writers()?;
    Ok(if w.is_empty() {
        "no app services (local): nothing to start".into()
    } else {
        format!("started {}", w.join(", "))
    })
}

pub enum Outcome {
    /// `--dry-run`: what would be done (printed; `restore --json` prints it as JSON).
    DryRun(Box<DryRun>),
    Done(Box<Report>),
    /// A step failed (the report says which; the error says why).
    Failed(Box<Report>, Error),
}

/// What the plan step found: the object, its manifest, the databases.
pub struct Planned {
    pub object: RemoteObject,
    pub manifest: Option<Manifest>,
    pub names: Names,
    pub live: Option<LiveFacts>,
    pub created_at: Option<String>,
    pub window_seconds: Option<i64>,
    /// Scratch databases an interrupted restore left behind (named in the plan).
    pub leftover_scratch: Vec<String>,
    /// The live database's own properties, given to the scratch database (`None`: no live one).
    pub props: Option<plan::LiveProps>,
    /// The free-space check.
    pub space: SpaceCheck,
}

/// Choose the object, read its manifest (a malformed one fails; a missing one warns, or fails with
/// `strict`), read the live database's facts. Nothing is changed.
pub fn plan_restore(t: &Target, opts: &Options) -> Result<Planned> {
    let env = &t.env;
    let names = Names::new(&env.database, Stamp::at_unix(now_unix()))?;
    // The databases' facts are read while the bucket is listed and the manifest read (each a
    // round trip of its own: on a server over SSH, or to B2, they add up).
    let facts_sql = plan::plan_facts_sql(&names);
    std::thread::scope(|scope| {
        let facts = scope.spawn(|| facts_and_space(t, &facts_sql));
        let chosen = choose_and_read(t, opts);
        let (fs, facts) = facts
            .join()
            .unwrap_or_else(|_| Err(Error::failed("reading the databases' facts panicked")))?;
        let (object, manifest) = chosen?;
        let mut p = plan_from(object, manifest, names, &facts)?;
        p.space = SpaceCheck::of(
            &facts,
            p.live.as_ref().map(|l| l.size_bytes),
            p.object.size,
            &fs,
        );
        Ok(p)
    })
}

/// The databases' facts (`facts_sql`, a query with the cluster's facts: [`plan::plan_facts_sql`],
/// [`plan::drill_facts_sql`]) and the free space measured once they say where the data directory
/// is. Restore's plan and `backup drill` read them alike (on a thread of their own while the
/// bucket is listed).
pub(crate) fn facts_and_space(t: &Target, facts_sql: &str) -> Result<(Measured, String)> {
    t.sql("postgres", facts_sql)
        .map(|f| (measure_space(t, &f), f))
}

/// The filesystems of the live database's directory and of the WAL, and those paths (see
/// [`plan::space_paths`]), or why they cannot be measured.
pub(crate) type Measured = std::result::Result<([Option<plan::Fs>; 2], [String; 2]), String>;

fn measure_space(t: &Target, facts: &str) -> Measured {
    let cluster = plan::parse_cluster(facts);
    let props = plan::parse_live_props(facts).ok().flatten();
    let paths = plan::space_paths(&cluster, props.as_ref()).ok_or_else(|| {
        format!(
            "the data directory is not readable by {} (it needs superuser or pg_read_all_settings)",
            t.env.db_user
        )
    })?;
    let mut fs = t.free_space(&paths)?.into_iter();
    match (fs.next().flatten(), fs.next().flatten()) {
        (None, _) => Err(format!("df could not measure {}", paths[0])),
        (db, wal) => Ok(([db, wal], paths)),
    }
}

/// The object the selector names, and its manifest (checked against the listing).
fn choose_and_read(t: &Target, opts: &Options) -> Result<(RemoteObject, Option<Manifest>)> {
    let env = &t.env;
    let base = env.backup.base();
    // A full object path names its manifest: read it while the bucket is listed (the listing
    // still decides whether the object is there; the early answer is used only for that path).
    let early = match &opts.selector {
        Selector::Object(o) if o.starts_with(&format!("{base}/")) => Some(o.clone()),
        _ => None,
    };
    let (objects, early) = std::thread::scope(|s| {
        let m = early
            .clone()
            .map(|o| s.spawn(move || (o.clone(), backup::read_manifest(env, &o))));
        let objects = backup::list_names(env);
        (objects, m.and_then(|h| h.join().ok()))
    });
    let objects = objects?;
    // What the user named is not there: bad input (exit 2), with what is there.
    let not_found = |what: String| {
        let newest: Vec<&str> = objects
            .iter()
            .rev()
            .take(5)
            .filter_map(|o| o.path.rsplit('/').next())
            .collect();
        Error::usage(format!(
            "{what} under {base}: {}; `cargo xtask backup status --env {}` shows the newest of each label",
            if newest.is_empty() {
                "there are no backups at all".to_string()
            } else {
                format!("the newest are {}", newest.join(", "))
            },
            env.name
        ))
    };
    let object = match &opts.selector {
        Selector::Object(o) => backup::drill::choose(&objects, Some(o), &base)
            .map_err(|_| not_found(format!("no backup {o:?}")))?,
        Selector::Label(l) => objects
            .iter()
            .rfind(|o| {
                o.path
                    .rsplit('/')
                    .next()
                    .and_then(BackupName::parse)
                    .is_some_and(|n| n.label == l.as_str())
            })
            .cloned()
            .ok_or_else(|| not_found(format!("no backup with label {l}")))?,
    };
    let mpath = manifest::manifest_path(&object.path);
    let read = match early {
        Some((o, m)) if o == object.path => m,
        _ => backup::read_manifest(env, &object.path),
    };
    let manifest = match read? {
        Some(m) => {
            m.check_dump(&object.path, object.size, None)?;
            Some(m)
        }
        None if opts.strict => {
            return Err(Error::failed(format!(
                "{} has no manifest ({mpath} is missing): refused with --strict (without it the \
                 restore runs with a warning and cannot verify the row counts)",
                object.path
            )))
        }
        None => None,
    };
    if let Some(m) = &manifest {
        if m.database != env.database {
            return Err(Error::failed(format!(
                "{} is a backup of database {:?}, but `{}` runs {:?}: refusing",
                object.path, m.database, env.name, env.database
            )));
        }
    }
    Ok((object, manifest))
}

fn plan_from(
    object: RemoteObject,
    manifest: Option<Manifest>,
    names: Names,
    facts: &str,
) -> Result<Planned> {
    let live = plan::facts_of(facts, &names.live)?;
    let names = plan::free_names(facts, names)?;
    let created_at = match &manifest {
        Some(m) => Some(m.created_at.clone()),
        None => object
            .path
            .rsplit('/')
            .next()
            .and_then(BackupName::parse)
            .and_then(|n| Stamp::parse(&n.timestamp))
            .map(|s| rfc3339_ms(s.unix() as u128 * 1000)),
    };
    let window_seconds = created_at
        .as_deref()
        .and_then(plan::parse_rfc3339_utc)
        .map(|c| now_unix() as i64 - c);
    let leftover_scratch = plan::leftover_scratch(facts, &names.live, &names.scratch);
    let props = match &live {
        Some(_) => plan::parse_live_props(facts)?,
        None => None,
    };
    Ok(Planned {
        object,
        manifest,
        names,
        live,
        created_at,
        window_seconds,
        leftover_scratch,
        props,
        space: SpaceCheck {
            space: plan::Space::Unknown("not measured".into()),
            note: None,
        },
    })
}

fn plan_text(t: &Target, p: &Planned, opts: &Options) -> String {
    let env = &t.env;
    let n = &p.names;
    let mut s = format!("restore plan for `{}`:\n", env.name);
    match &p.live {
        Some(l) => s.push_str(&format!(
            "  replace   database {} (owner {}, {} bytes)\n",
            n.live, l.owner, l.size_bytes
        )),
        None => s.push_str(&format!(
            "  create    database {} (there is none yet)\n",
            n.live
        )),
    }
    s.push_str(&format!(
        "  with      {} ({} bytes{})\n",
        p.object.path,
        p.object.size,
        match &p.manifest {
            Some(m) => format!(
                ", sha256 {}, {} tables, newest migration {}",
                m.sha256,
                m.tables.len(),
                m.newest_migration.as_deref().unwrap_or("none")
            ),
            None => ", NO MANIFEST: size and hash and row counts cannot be checked".into(),
        }
    ));
    match (&p.created_at, p.window_seconds) {
        (Some(c), Some(w)) => s.push_str(&plan::window_text(
            c,
            w,
            &n.live,
            p.live.as_ref().map(|_| &n.kept),
        )),
        _ => s.push_str("  window    unknown (no creation time)\n"),
    }
    let writers = t.writers();
    s.push_str(&format!(
        "  steps     lock → {} into {} as {} (one transaction, committed only when the whole dump decompressed{}; psql under \\restrict) → verify → swap ({}block connections, \
         end sessions within {}s, rename {} → {} and {} → {}) → start → health\n",
        if streamed(p, opts).is_some() {
            "download+restore in one pass: the object streams from the bucket"
        } else if p.manifest.is_some() {
            "download + check against the manifest → restore"
        } else {
            "download → restore"
        },
        n.scratch,
        replayer(t, p, opts).words(),
        if streamed(p, opts).is_some() {
            " and its sha256 equals the manifest's (its listed size was compared)"
        } else {
            ""
        },
        if writers.is_empty() {
            String::new()
        } else {
            format!("stop {}, ", writers.join(", "))
        },
        opts.swap_wait.as_secs(),
        n.live,
        n.kept,
        n.scratch,
        n.live
    ));
    s.push_str(&props_text(p));
    s.push_str(&format!(
        "  kept      {} is never dropped: it holds every write made after the backup \
         (`cargo xtask restore --env {} --kept`, `--drop-kept {}`)",
        n.kept, env.name, n.kept
    ));
    for d in &p.leftover_scratch {
        s.push_str(&format!(
            "\n  WARNING   {d} was left by an interrupted restore (a scratch database or its replay role; not touched by this one): drop it with \
             `cargo xtask restore --env {} --drop-kept {d}` once nothing uses it",
            env.name
        ));
    }
    s
}

/// The plan's lines on the live database's own properties and on the free space.
fn props_text(p: &Planned) -> String {
    let mut s = match (&p.props, &p.live) {
        (Some(pr), Some(l)) => format!(
            "  like      {}: encoding {}, LC_COLLATE {}, LC_CTYPE {}{}, tablespace {}; then, before \
             the swap, {}\n",
            p.names.live,
            pr.encoding,
            pr.collate,
            pr.ctype,
            pr.locale_provider
                .as_deref()
                .map(|lp| format!(
                    ", locale provider {}{}",
                    match lp {
                        "c" => "libc",
                        "i" => "icu",
                        "b" => "builtin",
                        other => other,
                    },
                    pr.locale.as_deref().map(|l| format!(" {l}")).unwrap_or_default()
                ))
                .unwrap_or_default(),
            pr.tablespace,
            plan::carry_summary(pr, l.reopen_limit())
        ),
        _ => "  like      no live database: the cluster's defaults (template0's encoding and \
              locale, the default tablespace, the default ACL)\n"
            .into(),
    };
    s.push_str(&format!("  space     {}\n", p.space.space));
    s
}

/// The free-space check of a scratch database made beside the live one: restore's plan and
/// `backup drill`'s. `space`: the verdict ([`plan::space_of`], shown with its `Display`); `note`:
/// what could not be measured (the WAL directory), as a warning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpaceCheck {
    pub space: plan::Space,
    pub note: Option<String>,
}

impl SpaceCheck {
    /// The check of a copy of the live database (`live_size`; `None`: there is none, the object's
    /// `object_size` is the estimate) on what was `measured`, the WAL bounded by the cluster's
    /// `max_wal_size` from `facts` ([`facts_and_space`]).
    pub(crate) fn of(
        facts: &str,
        live_size: Option<u64>,
        object_size: u64,
        measured: &Measured,
    ) -> SpaceCheck {
        let (space, note) = plan::space_of(
            live_size,
            object_size,
            plan::parse_cluster(facts).max_wal_size,
            measured,
        );
        SpaceCheck { space, note }
    }

    /// The verdict (`refusing`: "refusing to restore", ...): short is exit 1 (nothing changed)
    /// unless `--ignore-space` (`ignore`); not measured, or the WAL directory not measured, is a
    /// warning. The warnings it gives.
    pub(crate) fn check(&self, ignore: bool, env: &str, refusing: &str) -> Result<Vec<String>> {
        let verdict = match &self.space {
            plan::Space::Enough(_) => None,
            plan::Space::Short(m) if !ignore => {
                return Err(Error::failed(format!(
                    "{refusing}: not enough free space beside the live database: {m}. A full \
                     disk during the replay fills the WAL too, and PostgreSQL then stops every session \
                     of the cluster. Free some space (`cargo xtask restore --env {env} --kept` lists \
                     the kept databases), or pass --ignore-space if the estimate is too high (a \
                     bloated live database); nothing was changed"
                )))
            }
            plan::Space::Short(m) => Some(format!(
                "not enough free space beside the live database ({m}): going on (--ignore-space)"
            )),
            plan::Space::Unknown(m) => Some(format!(
                "the free space beside the live database could not be checked ({m}): make sure the \
                 replay fits (about the live database's size again, plus its WAL)"
            )),
        };
        Ok(self.note.clone().into_iter().chain(verdict).collect())
    }
}

/// The statements giving the scratch database the live one's ACL, settings, comment and
/// connection limit, after [`plan::SAFE_SEARCH_PATH`] (`None`: nothing to carry, or no live database).
fn carry_sqls(p: &Planned, owner: &str) -> Option<Vec<String>> {
    let (props, live) = (p.props.as_ref()?, p.live.as_ref()?);
    let carry = plan::carry_props_sql(&p.names.scratch, owner, props, live.reopen_limit());
    if carry.is_empty() {
        return None;
    }
    Some(
        std::iter::once(plan::SAFE_SEARCH_PATH.to_string())
            .chain(carry)
            .collect(),
    )
}

fn dry_run_commands(t: &Target, p: &Planned, opts: &Options) -> Result<Vec<String>> {
    let n = &p.names;
    let owner = p
        .live
        .as_ref()
        .map(|l| l.owner.clone())
        .unwrap_or_else(|| t.env.db_user.clone());
    let rp = replayer(t, p, opts);
    let login = rp.login();
    let create = rp.create_sqls(&owner);
    let create = t
        .sql_each_cmd(
            "postgres",
            &create.iter().map(String::as_str).collect::<Vec<_>>(),
        )?
        .display();
    let check = plan::check_sql(want(p).map(|w| (w.tables, w.migration)));
    let mut v = match streamed(p, opts) {
        Some(m) => vec![
            create,
            t.replay_cmd(
                &target::Source::Object {
                    path: &p.object.path,
                    sha256: &m.sha256,
                },
                n.scratch.as_str(),
                login,
            )?
            .display(),
        ],
        None => vec![
            t.fetch_cmd(&p.object.path, p.manifest.is_some())?.display(),
            create,
            t.replay_cmd(
                &target::Source::File("<dir>/backup.sql.gz"),
                n.scratch.as_str(),
                login,
            )?
            .display(),
        ],
    };
    // Not an argument: the first line on the replay's stdin.
    v.push(format!(
        "(the replay's stdin, first line: its check) {check}"
    ));
    v.push(
        t.sql_each_cmd(
            n.scratch.as_str(),
            &[plan::SAFE_SEARCH_PATH, &plan::scratch_props_sql(&n.scratch)],
        )?
        .display(),
    );
    if !opts.trust_dump {
        let adopt = plan::adopt_sql(&n.scratch, &owner);
        v.push(
            t.sql_each_cmd(
                n.scratch.as_str(),
                &std::iter::once(plan::SAFE_SEARCH_PATH)
                    .chain(adopt.iter().map(String::as_str))
                    .collect::<Vec<_>>(),
            )?
            .display(),
        );
    }
    if let Some(carry) = carry_sqls(p, &owner) {
        v.push(
            t.sql_each_cmd(
                "postgres",
                &carry.iter().map(String::as_str).collect::<Vec<_>>(),
            )?
            .display(),
        );
    }
    for w in t.writers() {
        v.push(format!("compose stop {w}"));
    }
    // As the swap runs them: the live database (if any) and the scratch one blocked and emptied
    // of sessions, the renames, then connections allowed again.
    let sw = swap_plan(p);
    v.extend([
        t.sql_cmd("postgres", &sw.state)?.display(),
        t.sql_each_cmd("postgres", &sw.wait(true))?.display(),
        t.sql_cmd("postgres", &sw.rename)?.display(),
        t.sql_each_cmd("postgres", &sw.open())?.display(),
    ]);
    Ok(v)
}

// ---------------------------------------------------------------------------------------------
// Ctrl-C (also SIGTERM, SIGHUP): the handler stops the replay (its lifeline: the script kills
// every process of it at once, without a COMMIT) and ends the sessions on the scratch database
// while a restore (or `backup drill`) replays into it (the replay then fails and the guard drops
// the database and its role); at any other
// moment it only sets the flag, which is checked between steps and in the swap's wait for the
// sessions to end (an interrupt there calls the swap off: connections allowed again, the writers
// started). Only the renames and the unblock after them, once begun, are finished: their children
// (psql, ssh, compose, all through `Target`) run in process groups of their own, so the terminal's
// SIGINT to the foreground group does not kill them mid-commit.

/// What an interrupted restore says (the process's one handler, [`crate::signals`], runs alike on
/// SIGINT, SIGTERM and SIGHUP and cannot tell which arrived).
pub(crate) use crate::signals::INTERRUPTED_BY;

static PHASE: Mutex<Phase> = Mutex::new(Phase::Before);
/// The replay running now: where, into which scratch database, and its lifeline.
static REPLAYING: Mutex<Option<(Target, DbName, crate::process::Lifeline)>> = Mutex::new(None);

/// Where the restore is, for what an interrupt does and says.
#[derive(Clone, Debug, PartialEq)]
enum Phase {
    /// Before the swap (or after one called off): the live database stays as it is.
    Before,
    /// The swap's first part (writers stopped, connections blocked, sessions ending): an interrupt
    /// calls it off.
    Waiting,
    /// The renames and the unblock after them: finished first.
    Renaming,
    /// The restored database is live (`live`), the replaced one kept as `kept`.
    Swapped { live: String, kept: Option<String> },
}

fn set_phase(p: Phase) {
    if let Ok(mut g) = PHASE.lock() {
        *g = p;
    }
}

/// What the handler says in `phase` (only what is true at that moment); `stopping`: what it
/// stops before a swap.
fn interrupt_note(phase: &Phase, stopping: &str) -> String {
    match phase {
        Phase::Before => format!("interrupted: {stopping}"),
        Phase::Waiting => "interrupted: the swap is called off before its renames (connections \
                           are allowed again and the app is started; the live database stays as \
                           it is)"
            .into(),
        Phase::Renaming => {
            "interrupted: the swap has begun and is finished first (then the app is started)".into()
        }
        Phase::Swapped { live, kept } => format!(
            "interrupted after the swap: the restored database is already live as {live}{}; \
             that is not undone",
            kept.as_ref()
                .map(|k| format!(" (the replaced one is kept as {k})"))
                .unwrap_or_default()
        ),
    }
}

/// Restore's behaviour on a signal (the process's one handler, [`crate::signals`], calls it while
/// the returned guard lives, the flag already set); `stopping` is what it says when it stops a
/// command that has not begun a swap. Rollback and `backup drill` register it too; a restore inside
/// a rollback inside `deploy --rollback-on-failure` gets it in place of the deploy's.
pub(crate) fn on_signal(stopping: &'static str) -> Result<crate::signals::OnSignal> {
    // A command that registers starts before any swap (not at a phase an earlier restore of this
    // process left, e.g. `Swapped`, which would keep the handler from stopping its replay).
    set_phase(Phase::Before);
    crate::signals::on_signal(move |_again| {
        // The flag first (set by the handler before this runs), then the phase: the swap switches
        // to `Renaming` only under the phase's lock after reading the flag, so the note and what
        // the swap does agree.
        let phase = PHASE.lock().map(|g| g.clone()).unwrap_or(Phase::Before);
        eprintln!("{}", interrupt_note(&phase, stopping));
        if phase != Phase::Before {
            return;
        }
        let current = REPLAYING.lock().ok().and_then(|g| g.clone());
        if let Some((t, db, line)) = current {
            // The replay's script stops every process of it at once (no COMMIT), then the
            // session is ended too (a statement the server still runs).
            line.stop();
            let _ = t.sql("postgres", &plan::terminate_each_sql(&[&db]));
        }
    })
}

pub(crate) fn interrupted() -> bool {
    crate::signals::interrupted()
}

struct Run<'a> {
    t: &'a Target,
    root: std::path::PathBuf,
    opts: &'a Options,
    audit: Audit,
    object: String,
    sha: String,
    steps: Vec<StepReport>,
    warnings: Vec<String>,
}

impl Run<'_> {
    fn say(&self, s: &str) {
        if self.opts.json {
            eprintln!("{s}");
        } else {
            println!("{s}");
        }
    }

    /// Run one named step: print it, time it, record it in the audit log.
    fn step<T>(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut Self) -> Result<(T, String)>,
    ) -> Result<T> {
        self.say(&format!("==> {name}"));
        let s_ms = now_ms();
        let t0 = Instant::now();
        let r = f(self);
        let e_ms = now_ms();
        let (status, message, out) = match r {
            Ok((v, m)) => ("ok", m, Ok(v)),
            Err(e) => (
                if interrupted() {
                    "interrupted"
                } else {
                    "failed"
                },
                e.to_string(),
                Err(e),
            ),
        };
        self.say(&format!(
            "    {name} {status} in {:.2}s{}",
            t0.elapsed().as_secs_f64(),
            if message.is_empty() {
                String::new()
            } else {
                format!(": {message}")
            }
        ));
        self.record(name, status, s_ms, e_ms, &message);
        self.steps.push(StepReport {
            step: name.into(),
            status: status.into(),
            duration_ms: elapsed_ms(s_ms, e_ms),
            message,
        });
        out
    }

    fn record(&self, name: &str, status: &str, s_ms: u128, e_ms: u128, message: &str) {
        if let Err(e) = self.try_record(name, status, s_ms, e_ms, message) {
            eprintln!("warning: audit log: {e}");
        }
    }

    /// Append one record; the error when the audit log cannot be written.
    fn try_record(
        &self,
        name: &str,
        status: &str,
        s_ms: u128,
        e_ms: u128,
        message: &str,
    ) -> Result<()> {
        let r = Record {
            env: self.t.env.name.clone(),
            step: format!("{}:{name}", self.opts.audit_prefix),
            status: status.into(),
            start: rfc3339_ms(s_ms),
            end: rfc3339_ms(e_ms),
            duration_ms: elapsed_ms(s_ms, e_ms),
            sha: self.sha.clone(),
            actor: crate::deploy::actor(),
            run_url: crate::deploy::run_url(),
            backup_object: Some(self.object.clone()),
            message: message.into(),
            previous: self.opts.audit_previous.clone(),
            run: None,
            undone_runs: None,
        };
        self.audit.append(&r)
    }

    fn check_interrupt(&self) -> Result<()> {
        crate::signals::check(BEFORE_THE_SWAP)
    }
}

/// The audit log of the environment (the deploy's).
pub fn audit_of(host: &crate::host::Host, root: &Path) -> Audit {
    Audit {
        local: crate::deploy::runner::audit_path(host, root),
        remote: host
            .remote()
            .map(|r| (r.target.clone(), format!("{}/deploy-audit.jsonl", r.dir))),
    }
}

/// The whole restore. `after_swap` brings the app back once the restored database is live (the
/// plain restore starts the writers it stopped; rollback starts the previous release).
pub fn restore(
    env: &Environment,
    root: &Path,
    opts: &Options,
    after_swap: &mut dyn FnMut(&Target) -> Result<String>,
) -> Result<Outcome> {
    restore_under(env, root, opts, None, after_swap)
}

/// [`restore`], with the deploy lock already held by the caller when `held` is given (rollback
/// takes it before it reads the audit log and plans): the lock step then records it instead of
/// taking it again, and the caller releases it.
pub fn restore_under(
    env: &Environment,
    root: &Path,
    opts: &Options,
    held: Option<&LockGuard>,
    after_swap: &mut dyn FnMut(&Target) -> Result<String>,
) -> Result<Outcome> {
    let t = Target::of(env)?;
    let planned = plan_restore(&t, opts)?;
    // Refused before anything ran, once planned: the report with that one step (not in the audit
    // log: the lock may be another's, or the log the reason).
    let refused = |step: &str, e: Error, warnings: Vec<String>| -> Result<Outcome> {
        let steps = vec![StepReport {
            step: step.into(),
            status: if interrupted() {
                "interrupted"
            } else {
                "failed"
            }
            .into(),
            duration_ms: 0,
            message: e.to_string(),
        }];
        let r = Report::of(env, &planned, steps, warnings).failing(step, &e);
        Ok(Outcome::Failed(Box::new(r), e))
    };
    if let Some(want) = &opts.expect_sha256 {
        // The download compares the object's sha256 with this manifest's: the two equal `want`.
        let got = planned.manifest.as_ref().map(|m| m.sha256.as_str());
        if got != Some(want.as_str()) {
            return refused("plan", Error::failed(format!(
                "{} is not the backup the deploy took (its manifest says sha256 {}, the deploy \
                 recorded {want} when it took it): refusing to replay it with the database user's rights; nothing \
                 was changed",
                planned.object.path,
                got.unwrap_or("none: the manifest is gone")
            )), Vec::new());
        }
    }
    let text = plan_text(&t, &planned, opts);
    let say = |s: &str| {
        if opts.json {
            eprintln!("{s}");
        } else {
            println!("{s}");
        }
    };
    say(&text);
    let mut plan_warnings = Vec::new();
    if planned.manifest.is_none() {
        plan_warnings.push(format!(
            "{} has no manifest: its hash and row counts cannot be checked (--strict refuses such a backup)",
            planned.object.path
        ));
    }
    if let Some(l) = planned.live.as_ref().filter(|l| l.blocked()) {
        plan_warnings.push(l.connections_note());
    }
    let skew = match (&planned.created_at, planned.window_seconds) {
        (Some(c), Some(w)) => plan::clock_skew_warning(&planned.object.path, c, w),
        _ => None,
    };
    plan_warnings.extend(skew.clone());
    for w in &plan_warnings {
        eprintln!("warning: {w}");
    }
    let space_warnings =
        match planned
            .space
            .check(opts.ignore_space, &env.name, "refusing to restore")
        {
            Ok(w) => w,
            Err(e) => return refused("space", e, skew.into_iter().collect()),
        };
    for w in &space_warnings {
        eprintln!("warning: {w}");
    }
    if opts.dry_run {
        let commands = match dry_run_commands(&t, &planned, opts) {
            Ok(c) => c,
            Err(e) => return refused("plan", e, space_warnings),
        };
        say("commands (dry run: nothing is changed):");
        for c in &commands {
            say(&format!("  $ {c}"));
        }
        return Ok(Outcome::DryRun(Box::new(DryRun {
            dry_run: true,
            planned: Header::of(env, &planned),
            plan: text,
            warnings: plan_warnings.into_iter().chain(space_warnings).collect(),
            commands,
        })));
    }
    let warnings: Vec<String> = skew.into_iter().chain(space_warnings).collect();
    if !opts.yes {
        if let Err(e) = confirm(&planned.names.live) {
            return refused("confirm", e, warnings);
        }
    }
    let _signals = on_signal("stopping before the swap (the live database stays as it is)")?;
    set_phase(Phase::Before);
    let mut run = Run {
        t: &t,
        root: root.to_path_buf(),
        opts,
        audit: audit_of(&t.host, root),
        object: planned.object.path.clone(),
        sha: opts.audit_sha.clone().unwrap_or_else(|| {
            planned
                .manifest
                .as_ref()
                .and_then(|m| m.git_sha.clone())
                .unwrap_or_default()
        }),
        steps: Vec::new(),
        warnings,
    };
    // The lock before any record: a restore it refuses writes none (the deploy holding it is
    // running, and records in the middle of its own would split it in the log rollback reads).
    let own_lock = match held {
        Some(_) => None,
        None => match take_lock(&t, root, opts) {
            Ok(g) => Some(g),
            Err(e) => return refused("lock", e, run.warnings),
        },
    };
    let held = held.or(own_lock.as_ref());
    // The audit log is what rollback and prune decide by: a restore that cannot record itself does
    // not start.
    if let Err(e) = run.try_record("plan", "ok", now_ms(), now_ms(), &text) {
        let e = Error::failed(format!(
            "refusing to restore: the audit log cannot be written ({e}); nothing was changed"
        ));
        return refused("audit", e, run.warnings);
    }
    let result = execute(&mut run, &planned, held, after_swap);
    let (outcome, downtime) = match &result {
        Ok(d) => ("ok", *d),
        Err(_) if interrupted() => ("interrupted", None),
        Err(_) => ("failed", None),
    };
    let msg = match &result {
        Ok(_) => format!(
            "restored {} into {}{}",
            planned.object.path,
            planned.names.live,
            if planned.live.is_some() {
                format!("; the replaced database is kept as {}", planned.names.kept)
            } else {
                String::new()
            }
        ),
        Err(e) => e.to_string(),
    };
    run.record("pipeline", outcome, now_ms(), now_ms(), &msg);
    let mut report = Report::of(env, &planned, run.steps.clone(), run.warnings.clone());
    report.outcome = outcome.into();
    report.downtime_ms = downtime;
    if let Err(e) = &result {
        report = report.failing("pipeline", e);
    }
    match result {
        Ok(_) => {
            run.say(&msg);
            if let Some(d) = downtime {
                run.say(&format!(
                    "app downtime (writers stopped → healthy): {:.2}s",
                    d as f64 / 1000.0
                ));
            }
            Ok(Outcome::Done(Box::new(report)))
        }
        Err(e) => Ok(Outcome::Failed(Box::new(report), e)),
    }
}

/// Ask on the terminal; without one, exit 2 having changed nothing.
fn confirm(live: &DbName) -> Result<()> {
    if !std::io::stdin().is_terminal() {
        return Err(Error::usage(
            "restore replaces a live database: confirm on a terminal, or pass --yes (nothing was changed)",
        ));
    }
    eprint!("type the database name ({live}) to replace it: ");
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| Error::usage(format!("cannot read the confirmation: {e}")))?;
    if line.trim() == live.as_str() {
        Ok(())
    } else {
        Err(Error::usage("not confirmed: nothing was changed"))
    }
}

/// The manifest the restore streams against: with one, and the dump replayed as the scratch
/// database's own role; `None`: downloaded and checked first (no manifest, or `--trust-dump`).
fn streamed<'a>(p: &'a Planned, opts: &Options) -> Option<&'a Manifest> {
    p.manifest.as_ref().filter(|_| !opts.trust_dump)
}

/// What an interrupted restore says after [`INTERRUPTED_BY`].
const BEFORE_THE_SWAP: &str = " before the swap: the live database is untouched";

/// Who replays the restore's dump into its scratch database (see [`scratch`]).
fn replayer<'a>(t: &'a Target, p: &'a Planned, opts: &Options) -> Replayer<'a> {
    Replayer {
        t,
        scratch: &p.names.scratch,
        trust_dump: opts.trust_dump,
        again: format!("cargo xtask restore --env {} ...", t.env.name),
        interrupted: BEFORE_THE_SWAP,
        like: p.props.as_ref(),
    }
}

/// The manifest's counts and newest migration, which the replay must give before its commit.
fn want(p: &Planned) -> Option<Want<'_>> {
    p.manifest.as_ref().map(|m| Want {
        tables: &m.tables,
        migration: m.newest_migration.as_deref(),
    })
}

/// What the replay counted before its commit (as the replay role, under a fixed `search_path`:
/// not the one the dump may have given its session), compared with the manifest there (counts
/// that differ were never committed): the verify step's message.
fn counted(r: &Replay, p: &Planned) -> String {
    let rows: u64 = r.tables.values().sum();
    let migration = r.migration.as_deref().unwrap_or("none");
    let tables = r.tables.len();
    match &p.manifest {
        None => format!(
            "{tables} tables, {rows} rows, newest migration {migration} (no manifest: not compared)"
        ),
        Some(_) => format!(
            "{tables} tables, {rows} rows and newest migration {migration} equal the manifest \
             (counted in the replay's transaction, before its commit)"
        ),
    }
}

/// The deploy lock for a restore (exit 1, naming the holder, when it is held).
fn take_lock(t: &Target, root: &Path, opts: &Options) -> Result<LockGuard> {
    let place = crate::deploy::runner::lock_place(&t.host, root);
    let info = LockInfo::new("restore", 6 * 3600, crate::random::secret()?);
    let (g, notes) = lock::acquire(&place, &info, opts.force_unlock)
        .map_err(|e| Error::failed(format!("refusing to restore: {e}; nothing was changed")))?;
    for n in notes {
        eprintln!("    {n}");
    }
    Ok(g)
}

/// Steps 2-6. Returns the downtime (ms) once the restored database is live and healthy.
fn execute(
    run: &mut Run,
    p: &Planned,
    held: Option<&LockGuard>,
    after_swap: &mut dyn FnMut(&Target) -> Result<String>,
) -> Result<Option<u64>> {
    let t = run.t;
    let n = &p.names;
    let _lock: Option<LockGuard> = run.step("lock", |r| {
        let place = crate::deploy::runner::lock_place(&r.t.host, &r.root);
        if held.is_some() {
            return Ok((
                None,
                format!(
                    "{} (already held by {})",
                    place.describe(),
                    r.opts.audit_prefix
                ),
            ));
        }
        Ok((Some(take_lock(r.t, &r.root, r.opts)?), place.describe()))
    })?;
    run.check_interrupt()?;
    let mut scratch = Scratch::new(t);
    let owner = p
        .live
        .as_ref()
        .map(|l| l.owner.clone())
        .unwrap_or_else(|| t.env.db_user.clone());
    // Who replays and counts: the scratch database's own role (`--trust-dump`: the owner).
    let rp = replayer(t, p, run.opts);
    // The guard drops only these exact names (`DROP ... IF EXISTS`); the plan checked they were
    // free and the lock keeps other restores out, so "already exists" can only be someone else's.
    // Armed before the CREATE: a CREATE that ran but whose reply was lost (psql or ssh killed, the
    // link dropped) still leaves a database that the guard must drop.
    let create = rp.create_sqls(&owner);
    let create: Vec<&str> = create.iter().map(String::as_str).collect();
    scratch.arm(&rp);
    // With a manifest, and the dump replayed as the scratch database's own role, the object
    // streams from the bucket into the replay in one pass: its sha256 and size are taken on the
    // way and the transaction is committed only when they equal the manifest's (until then the
    // SQL runs uncommitted, within reach of nothing but the scratch database). Otherwise (no
    // manifest: rclone's own hash check after a download; --trust-dump: nothing of the object may
    // run before it is checked) it is downloaded and checked first.
    let replayed: Replay = if let Some(m) = streamed(p, run.opts) {
        run.step("download+restore", |_| {
            // The size as listed: a different object is refused before anything runs (one
            // replaced since the listing has another sha256, checked before the commit).
            m.check_dump(&p.object.path, p.object.size, None)
                .map_err(|e| e.context("nothing was restored"))?;
            rp.create(&mut scratch, &owner)?;
            let source = target::Source::Object {
                path: &p.object.path,
                sha256: &m.sha256,
            };
            let got = rp.replay(&source, want(p))?;
            let sum = got.sha256.clone().unwrap_or_default();
            // The script compared it already; the manifest says so again in its own words.
            m.check_dump(&p.object.path, p.object.size, Some(&sum))
                .map_err(|e| e.context("nothing was restored"))?;
            let size = p.object.size;
            let secs = got.secs;
            Ok((
                got,
                format!(
                    "streamed into {} in {:.1}s, one pass: sha256 {sum} and {size} bytes match \
                     the manifest, checked before the one transaction was committed (under \
                     \\restrict, as {})",
                    n.scratch,
                    secs,
                    rp.words()
                ),
            ))
        })?
    } else {
        let fetched: Fetched = run.step("download", |r| {
            // The empty scratch database is created while the object downloads (nothing of the
            // object runs before its check).
            let (f, created) = std::thread::scope(|s| {
                let c = s.spawn(|| r.t.sql_each("postgres", &create));
                let f = r.t.fetch(&p.object.path, p.manifest.is_some());
                let created = c.join().unwrap_or_else(|_| {
                    Err(Error::failed("creating the scratch database panicked"))
                });
                (f, created)
            });
            scratch.created(&created);
            let f = f?;
            scratch.dir = Some(f.dir.clone());
            created.map_err(|e| rp.create_hint(e))?;
            match &p.manifest {
                Some(m) => {
                    m.check_dump(&p.object.path, f.size, Some(&f.sha256))
                        .map_err(|e| e.context("nothing was restored"))?;
                    Ok((
                        f.clone(),
                        format!(
                            "sha256 {} and {} bytes match the manifest ({} created meanwhile)",
                            f.sha256, f.size, n.scratch
                        ),
                    ))
                }
                None => Ok((
                    f.clone(),
                    format!(
                        "sha256 {} ({} bytes); no manifest to check against ({} created meanwhile)",
                        f.sha256, f.size, n.scratch
                    ),
                )),
            }
        })?;
        run.check_interrupt()?;
        run.step("restore", |_| {
            let file = format!("{}/backup.sql.gz", fetched.dir);
            let got = rp.replay(&target::Source::File(&file), want(p))?;
            let secs = got.secs;
            Ok((
                got,
                format!(
                    "into {} in {:.1}s (one transaction, under \\restrict, as {})",
                    n.scratch,
                    secs,
                    rp.words()
                ),
            ))
        })?
    };
    run.check_interrupt()?;
    run.step("verify", |r| {
        // First what the dump did to the database itself (the swap would carry it into the live
        // database): refused; SECURITY DEFINER functions are named. Under a search_path of
        // pg_catalog only, as the hand-over's statements below.
        for w in rp.check_props(&owner)? {
            eprintln!("warning: {w}");
            r.warnings.push(w);
        }
        let m = counted(&replayed, p);
        if r.opts.trust_dump {
            return Ok(((), m));
        }
        // Verified: the database and all in it go to the owner, the replay role goes.
        let adopt = plan::adopt_sql(&n.scratch, &owner);
        let adopt: Vec<&str> = std::iter::once(plan::SAFE_SEARCH_PATH)
            .chain(adopt.iter().map(String::as_str))
            .collect();
        r.t.sql_each(n.scratch.as_str(), &adopt)?;
        scratch.role = None;
        Ok(((), format!("{m}; handed to {owner} (replay role dropped)")))
    })?;
    run.check_interrupt()?;
    // After the property check (it sees only what the dump set) and the hand-over: the live
    // database's own ACL, settings, comment and connection limit, which the swap would lose.
    if let Some(carry) = carry_sqls(p, &owner) {
        run.step("properties", |r| {
            r.t.sql_each(
                "postgres",
                &carry.iter().map(String::as_str).collect::<Vec<_>>(),
            )?;
            let (props, live) = (p.props.as_ref(), p.live.as_ref());
            Ok((
                (),
                format!(
                    "{} got those of {}: {}",
                    n.scratch,
                    n.live,
                    props
                        .zip(live)
                        .map(|(pr, l)| plan::carry_summary(pr, l.reopen_limit()))
                        .unwrap_or_default()
                ),
            ))
        })?;
        run.check_interrupt()?;
    }
    let down_start = Instant::now();
    set_phase(Phase::Waiting);
    // Set when the swap ends with the renames' outcome unknown or unexpected: the guard must not
    // drop the scratch name then (its printed check and finish commands refer to it).
    let keep_scratch = std::cell::Cell::new(false);
    let swapped = run.step("swap", |r| {
        swap(r.t, p, run_swap_wait(r.opts), &keep_scratch).map(|(w, m)| {
            let m = w.iter().fold(m, |m, w| format!("{m}; WARNING: {w}"));
            (w, m)
        })
    });
    match &swapped {
        Ok(_) => set_phase(Phase::Swapped {
            live: n.live.to_string(),
            kept: p.live.as_ref().map(|_| n.kept.to_string()),
        }),
        // Called off or refused before the renames: the live database is as it was.
        Err(_) if !keep_scratch.get() => set_phase(Phase::Before),
        // The renames' outcome unknown or unexpected: nothing more is done.
        Err(_) => scratch.db = None,
    }
    let warnings = swapped?;
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    run.warnings.extend(warnings);
    // The scratch database is the live one now: the guard must not touch that name (it no longer
    // exists under it, but we do not rely on that).
    scratch.db = None;
    run.step("start", |r| {
        let started = after_swap(r.t).map_err(|e| {
            e.context(format!(
                "the restored database is live as {} (the replaced one is kept as {}), but the app \
                 was not started{}",
                n.live,
                n.kept,
                r.t.start_writers_hint()
                    .map(|c| format!(" (its writers are stopped: start them with `{c}`)"))
                    .unwrap_or_default()
            ))
        })?;
        Ok(((), started))
    })?;
    run.step("health", |r| Ok(((), r.t.health(n.live.as_str(), 30)?)))?;
    let downtime = down_start.elapsed().as_millis() as u64;
    // The downloaded file goes once the app is back (not inside the downtime).
    for w in scratch.finish() {
        eprintln!("warning: {w}");
    }
    Ok(Some(downtime))
}

/// The swap of `p` ([`plan::swap_plan`]): what [`swap`] runs and the dry run prints.
fn swap_plan(p: &Planned) -> plan::SwapPlan {
    let limit = p.live.as_ref().map_or(-1, LiveFacts::reopen_limit);
    plan::swap_plan(&p.names, p.live.is_some(), limit)
}

fn run_swap_wait(o: &Options) -> Duration {
    o.swap_wait
}

/// `stop`; when it fails (`compose stop` may have stopped some writers before it failed or timed
/// out), `start` them again, best effort, so a refused swap never leaves the app stopped. The error
/// says whether they were started again.
/// For a message of a swap that ended with the writers stopped: how to start them.
fn writers_left_stopped(t: &Target) -> String {
    t.start_writers_hint()
        .map(|c| format!("\nThe app's writers are stopped; then start them with\n  $ {c}"))
        .unwrap_or_default()
}

fn stop_or_start_again(
    stop: impl FnOnce() -> Result<()>,
    start: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let Err(e) = stop() else {
        return Ok(());
    };
    Err(match start() {
        Ok(()) => e.same_kind(format!(
            "swap refused: {e}; the app was started again and the live database is unchanged"
        )),
        Err(s) => e.same_kind(format!(
            "swap refused: {e}; the live database is unchanged, BUT starting the app again failed too: {s}"
        )),
    })
}

/// Tries and per-try bound of the read-back of pg_database after a swap command failed.
const READ_BACK_TRIES: u32 = 4;
const READ_BACK_TIMEOUT: Duration = Duration::from_secs(10);

/// pg_database's rows of the swap's names, read again until it answers (bounded: a few tries with a
/// short timeout each), or the last error.
fn read_back(t: &Target, n: &Names) -> std::result::Result<Vec<plan::DbRow>, Error> {
    let mut last = None;
    for i in 0..READ_BACK_TRIES {
        if i > 0 {
            std::thread::sleep(Duration::from_secs(1));
        }
        // First the renames' own session, if its client went away while it still runs.
        match t.sql_within(
            "postgres",
            &plan::end_swap_session_sql(n),
            READ_BACK_TIMEOUT,
        ) {
            Ok(out) if out.lines().any(|l| l.trim() == "gone") => {}
            Ok(out) => {
                last = Some(Error::unavailable(format!(
                    "the renames' session ({}) still runs after being ended: {}",
                    plan::swap_tag(n),
                    out.trim()
                )));
                continue;
            }
            Err(e) => {
                last = Some(e);
                continue;
            }
        }
        match t
            .sql_within("postgres", &plan::swap_state_sql(n), READ_BACK_TIMEOUT)
            .and_then(|text| plan::parse_db_rows(&text))
        {
            Ok(rows) => return Ok(rows),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::unavailable("no answer")))
}

/// The swap's outcome could not be read: exit 3, saying so, with the SQL that tells and the SQL
/// that finishes either way. The writers stay stopped: which database they would write to is the
/// question.
fn swap_unknown(
    t: &Target,
    n: &Names,
    before: plan::Oids,
    limit: i64,
    why: &Error,
    read: &Error,
) -> Error {
    let kept = before.live.is_some();
    let (done, undone) = plan::finish_by_hand(n, kept, limit);
    let show = |sql: &str| {
        t.sql_cmd("postgres", sql)
            .map(|c| c.display())
            .unwrap_or_else(|_| sql.to_string())
    };
    let writers = t.writers();
    let after = if writers.is_empty() {
        "There are no app writers to start (`local`).".to_string()
    } else {
        format!(
            "The app's writers were left stopped: in both cases start them afterwards \
             (`compose start {}`) and check the health.",
            writers.join(" ")
        )
    };
    Error::unavailable(format!(
        "the swap's outcome is UNKNOWN: the command running the renames failed ({why}) and \
         pg_database could not be read back in {READ_BACK_TRIES} tries ({read}). Before the swap \
         {} had oid {} and {} oid {}. Check on the host:\n  $ {}\n\
         - if {} has oid {}{}, the renames committed: the restored database is live; \
         finish with\n  $ {}\n\
         - if {} still exists with oid {}, nothing was renamed: {} is the database it was; \
         finish with\n  $ {}\n{after}",
        n.live,
        before
            .live
            .map_or("none (there was no live database)".into(), |o| o
                .to_string()),
        n.scratch,
        before.scratch,
        show(&plan::swap_state_sql(n)),
        n.live,
        before.scratch,
        if kept {
            format!(" and {} exists (the replaced database)", n.kept)
        } else {
            String::new()
        },
        show(&done),
        n.scratch,
        before.scratch,
        n.live,
        show(&undone),
    ))
}

/// Stop the writers, block and end sessions, rename both in one transaction, allow connections.
/// Any failure before the rename commits puts everything back (connections, writers). When the
/// command running the renames (or the unblock after it) fails, what happened is read back from
/// pg_database before anything is said: renamed → the swap stands (with a warning), not renamed
/// → put back as before, unreadable → exit 3, UNKNOWN, with the SQL to check and to finish.
/// Returns the warnings.
fn swap(
    t: &Target,
    p: &Planned,
    wait: Duration,
    keep_scratch: &std::cell::Cell<bool>,
) -> Result<(Vec<String>, String)> {
    let n = &p.names;
    stop_or_start_again(|| t.stop_writers(), || t.start_writers())?;
    let limit = p.live.as_ref().map_or(-1, LiveFacts::reopen_limit);
    let undo = |why: Error, read_back: bool| -> Error {
        let mut notes = Vec::new();
        let mut reopened = p.live.is_some();
        if p.live.is_some() {
            if let Err(e) = t.sql("postgres", &plan::unblock_sql(&n.live, limit)) {
                reopened = false;
                notes.push(format!(
                    "could not allow connections to {} again: {e}",
                    n.live
                ));
            }
        }
        if let Err(e) = t.start_writers() {
            notes.push(format!("could not start the app again: {e}"));
        }
        // The cause keeps its exit code (the database out of reach is 3, not 1).
        why.same_kind(format!(
            "swap refused: {why}; {} is unchanged{}{}{}",
            n.live,
            if read_back {
                " (read back from pg_database: nothing was renamed)"
            } else {
                ""
            },
            if reopened { " and open again" } else { "" },
            if notes.is_empty() {
                String::new()
            } else {
                format!(" (BUT: {})", notes.join("; "))
            }
        ))
    };
    let sw = swap_plan(p);
    // Which database is which, by oid, for the read-back.
    let before = t
        .sql("postgres", &sw.state)
        .and_then(|text| plan::parse_db_rows(&text))
        .and_then(|rows| plan::Oids::of(n, &rows))
        .map_err(|e| undo(e, false))?;
    // The live database and the scratch one alike: blocked, their sessions ended. The scratch
    // database is opened again with the live one's limit once it is the live one.
    let blocked: Vec<&DbName> = sw.blocked.iter().collect();
    let deadline = Instant::now() + wait;
    let mut first = true;
    loop {
        // An interrupt while the sessions end calls the swap off: nothing is renamed yet.
        crate::signals::check(&format!(
            " while the sessions on {} were ending, before any rename",
            names_of(&blocked)
        ))
        .map_err(|e| undo(e, false))?;
        // One round trip: block (the first time), end the sessions, list those left.
        let out = t
            .sql_each("postgres", &sw.wait(first))
            .map_err(|e| undo(e, false))?;
        first = false;
        let left: Vec<&str> = out
            .lines()
            .skip(1)
            .filter(|l| !l.trim().is_empty())
            .collect();
        if left.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            return Err(undo(
                Error::failed(format!(
                    "{} session(s) on {} did not end within {}s (pid user application database: {})",
                    left.len(),
                    names_of(&blocked),
                    wait.as_secs(),
                    left.join("; ")
                )),
                false,
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // From here the renames and the unblock are finished whatever arrives; an interrupt that came
    // before this point calls the swap off (see the handler).
    {
        let mut phase = PHASE.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = crate::signals::check(" once the sessions had ended, before any rename") {
            drop(phase);
            return Err(undo(e, false));
        }
        *phase = Phase::Renaming;
    }
    let mut warnings = Vec::new();
    if let Err(why) = t.sql("postgres", &sw.rename) {
        // The renames may have committed though the reply was lost: read, do not assume.
        match read_back(t, n) {
            Err(read) => {
                keep_scratch.set(true);
                return Err(swap_unknown(t, n, before, limit, &why, &read));
            }
            Ok(now) => match plan::judge_swap(n, before, &now) {
                plan::SwapState::NotRenamed => return Err(undo(why, true)),
                plan::SwapState::Renamed => {
                    warnings.push(format!(
                        "the command running the renames failed ({why}), but pg_database shows \
                         they committed: {} is the restored database{}",
                        n.live,
                        if p.live.is_some() {
                            format!(", {} the replaced one", n.kept)
                        } else {
                            String::new()
                        }
                    ));
                }
                plan::SwapState::Other(state) => {
                    keep_scratch.set(true);
                    return Err(Error::failed(format!(
                        "the command running the renames failed ({why}) and pg_database shows \
                         neither the old nor the new layout: {state} (before: {} oid {}, {} oid \
                         {}). Nothing more was done; the app's writers were left stopped",
                        n.live,
                        before.live.map_or("none".into(), |o| o.to_string()),
                        n.scratch,
                        before.scratch
                    )));
                }
            },
        }
    }
    // Renamed. Connections: the new live database (the scratch one, blocked for the renames) and
    // the kept one open with the old limit (-1 when the live one was found blocked, or there was
    // none: see `LiveFacts::reopen_limit`).
    let mut failed = Vec::new();
    // All in one round trip; only when that fails, one by one to know which.
    if t.sql_each("postgres", &sw.open()).is_err() {
        for (db, sql) in sw.opened.iter().zip(&sw.open) {
            if let Err(e) = t.sql("postgres", sql) {
                failed.push((db, e));
            }
        }
    }
    if !failed.is_empty() {
        let errs = failed
            .iter()
            .map(|(db, e)| format!("allowing connections to {db}: {e}"))
            .collect::<Vec<_>>()
            .join("; ");
        let kept_words = match &p.live {
            Some(_) => format!(" and the old one kept as {}", n.kept),
            None => String::new(),
        };
        let fix = || {
            failed
                .iter()
                .map(|(db, _)| plan::unblock_sql(db, limit))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let now = match read_back(t, n) {
            Ok(now) => now,
            Err(read) => {
                return Err(Error::unavailable(format!(
                    "the restored database is live as {}{}, but {errs}; \
                     whether connections are allowed is UNKNOWN (pg_database could not be read \
                     back: {read}). Check with\n  $ {}\nand finish with\n  $ {}{}",
                    n.live,
                    kept_words,
                    t.sql_cmd("postgres", &plan::swap_state_sql(n))?.display(),
                    t.sql_cmd("postgres", &fix())?.display(),
                    writers_left_stopped(t)
                )))
            }
        };
        let blocked: Vec<String> = failed
            .iter()
            .filter(|(db, _)| {
                !now.iter()
                    .any(|r| r.name == db.as_str() && r.open_with(limit))
            })
            .map(|(db, _)| {
                now.iter()
                    .find(|r| r.name == db.as_str())
                    .map_or(format!("{db} (missing)"), |r| r.to_string())
            })
            .collect();
        if !blocked.is_empty() {
            return Err(Error::failed(format!(
                "the restored database is live as {}{}, but {errs}; \
                 pg_database shows still blocked: {}. Finish with\n  $ {}{}",
                n.live,
                kept_words,
                blocked.join(", "),
                t.sql_cmd("postgres", &fix())?.display(),
                writers_left_stopped(t)
            )));
        }
        warnings.push(format!(
            "{errs}; but pg_database shows connections allowed (limit {limit})"
        ));
    }
    let Some(live) = &p.live else {
        return Ok((warnings, format!("{} renamed to {}", n.scratch, n.live)));
    };
    Ok((
        warnings,
        format!(
            "{} → {}, {} → {}; {}",
            n.live,
            n.kept,
            n.scratch,
            n.live,
            live.connections_note()
        ),
    ))
}

/// `a`, `a and b` for a message.
fn names_of(dbs: &[&DbName]) -> String {
    dbs.iter()
        .map(|d| d.as_str())
        .collect::<Vec<_>>()
        .join(" and ")
}

fn list_kept(env: &Environment, json: bool) -> Result<ExitCode> {
    let t = Target::of(env)?;
    let live = DbName::parse(&env.database)?;
    let kept = plan::parse_kept_list(
        &live,
        &t.sql("postgres", &plan::kept_list_sql(&live))?,
        now_unix() as i64,
    );
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&kept).expect("serializable")
        );
    } else if kept.is_empty() {
        println!("no kept databases of {live} on `{}`", env.name);
    } else {
        println!("kept databases of {live} on `{}` (each holds the writes made after the backup that replaced it):", env.name);
        for k in &kept {
            println!(
                "  {}  {} bytes  {} old",
                k.database,
                k.size_bytes,
                crate::time::human_age(k.age_seconds.max(0))
            );
        }
    }
    Ok(ExitCode::Ok)
}

/// Drop one kept database: `--dry-run` only says what it would drop; off a TTY `--yes` is required
/// (exit 2, nothing dropped); under the deploy lock; recorded as `restore:drop-kept`.
fn drop_kept(env: &Environment, root: &Path, name: &str, a: &Args) -> Result<ExitCode> {
    let live = DbName::parse(&env.database)?;
    let db = plan::parse_kept(&live, name)?;
    let t = Target::of(env)?;
    let text = t.sql("postgres", &plan::facts_of_sql(&live, &[&db]))?;
    let scratch = plan::scratch_stamp(&live, db.as_str()).is_some();
    // A replay role left without its database (a restore killed between the two): the role goes.
    let role_only = scratch && plan::is_leftover_role(&text, &db);
    let size = match plan::facts_of(&text, &db)? {
        Some(f) => f.size_bytes,
        None if role_only => 0,
        None => {
            return Err(Error::failed(format!(
            "no database {db} on `{}` (`cargo xtask restore --env {} --kept` lists the kept ones)",
            env.name, env.name
        )))
        }
    };
    let what = if role_only {
        format!("the replay role {db} (its database is gone)")
    } else {
        format!("{db} ({size} bytes)")
    };
    let sql = if role_only {
        plan::drop_role_sql(&db)
    } else {
        plan::drop_kept_sql(&db)
    };
    // A scratch database a dump made a template (the restore refused it) cannot be dropped as it is.
    let untemplate = plan::untemplate_sql(&db);
    let say = |s: &str| {
        if a.json {
            eprintln!("{s}");
        } else {
            println!("{s}");
        }
    };
    if a.dry_run {
        say(&format!(
            "would drop {what} on `{}` (dry run: nothing is dropped)\n  $ {}",
            env.name,
            t.sql_cmd("postgres", &sql)?.display()
        ));
        if a.json {
            println!(
                "{}",
                serde_json::json!({"dropped": null, "would_drop": db.as_str(), "dry_run": true})
            );
        }
        return Ok(ExitCode::Ok);
    }
    if !a.yes {
        confirm_drop(&db)?;
    }
    let place = crate::deploy::runner::lock_place(&t.host, root);
    let info = LockInfo::new("restore", 3600, crate::random::secret()?);
    let (mut guard, _) = lock::acquire(&place, &info, a.force_unlock)
        .map_err(|e| Error::failed(format!("refusing to drop {db}: {e} (nothing was dropped)")))?;
    let s_ms = now_ms();
    // A scratch database an interrupted restore left may still have its replay role (named as it,
    // owning nothing else): it goes with it.
    let result = if scratch && !role_only {
        t.sql_each("postgres", &[&untemplate, &sql, &plan::drop_role_sql(&db)])
    } else {
        t.sql("postgres", &sql)
    };
    let e_ms = now_ms();
    let (status, message) = match &result {
        Ok(_) => ("ok", format!("dropped {what}")),
        Err(e) => ("failed", format!("dropping {db} failed: {e}")),
    };
    let record = Record {
        env: env.name.clone(),
        step: "restore:drop-kept".into(),
        status: status.into(),
        start: rfc3339_ms(s_ms),
        end: rfc3339_ms(e_ms),
        duration_ms: elapsed_ms(s_ms, e_ms),
        sha: String::new(),
        actor: crate::deploy::actor(),
        run_url: crate::deploy::run_url(),
        backup_object: None,
        previous: None,
        run: None,
        undone_runs: None,
        message,
    };
    if let Err(e) = audit_of(&t.host, root).append(&record) {
        eprintln!("warning: audit log: {e}");
    }
    if let Err(e) = guard.release() {
        eprintln!("warning: {e}");
    }
    result?;
    if a.json {
        println!("{}", serde_json::json!({"dropped": db.as_str()}));
    } else {
        println!("dropped {db}");
    }
    Ok(ExitCode::Ok)
}

/// Ask on the terminal for the kept database's name; without one, exit 2 having dropped nothing.
fn confirm_drop(db: &DbName) -> Result<()> {
    if !std::io::stdin().is_terminal() {
        return Err(Error::usage(format!(
            "--drop-kept deletes {db} for good: confirm on a terminal, or pass --yes (nothing was dropped)"
        )));
    }
    eprint!("type the database name ({db}) to drop it: ");
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| Error::usage(format!("cannot read the confirmation: {e}")))?;
    if line.trim() == db.as_str() {
        Ok(())
    } else {
        Err(Error::usage("not confirmed: nothing was dropped"))
    }
}

/// Per-table counts (for callers that compare databases).
pub fn counts(t: &Target, db: &str) -> Result<BTreeMap<String, u64>> {
    backup::drill::parse_counts(&t.sql(db, backup::drill::COUNT_SQL)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// The dry run's and the report's JSON: the plan's fields at the top level, in the order the
    /// two documents always had (the header is shared, flattened).
    #[test]
    fn the_dry_run_and_the_report_put_the_plans_fields_at_the_top_level() {
        let planned = Header {
            env: "e".into(),
            object: "o".into(),
            manifest: true,
            database: "d".into(),
            scratch_database: "s".into(),
            kept_database: None,
            backup_created_at: Some("c".into()),
            window_seconds: Some(5),
        };
        let head = r#""env":"e","object":"o","manifest":true,"database":"d","scratch_database":"s","kept_database":null,"backup_created_at":"c","window_seconds":5"#;
        let d = DryRun {
            dry_run: true,
            planned: planned.clone(),
            plan: "p".into(),
            warnings: vec![],
            commands: vec!["x".into()],
        };
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            format!(r#"{{"dry_run":true,{head},"plan":"p","warnings":[],"commands":["x"]}}"#)
        );
        let r = Report {
            planned,
            outcome: "ok".into(),
            steps: vec![],
            downtime_ms: Some(1),
            warnings: vec![],
            failed_step: None,
            message: None,
            exit_code: 0,
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            format!(
                r#"{{{head},"outcome":"ok","steps":[],"downtime_ms":1,"warnings":[],"failed_step":null,"message":null,"exit_code":0}}"#
            )
        );
    }

    #[test]
    fn too_little_space_refuses_unless_ignored_and_an_unmeasured_one_warns() {
        const R: &str = "refusing to restore";
        let check_space = |space: &plan::Space, note: Option<&str>, ignore, env, refusing| {
            SpaceCheck {
                space: space.clone(),
                note: note.map(str::to_string),
            }
            .check(ignore, env, refusing)
        };
        let short = plan::Space::Short("1 GiB free on d /, 2 GiB needed".into());
        let e = check_space(&short, None, false, "staging", R).unwrap_err();
        assert_eq!(e.exit_code(), ExitCode::Failed);
        let m = e.to_string();
        assert!(
            m.starts_with(R)
                && m.contains("not enough free space")
                && m.contains("2 GiB needed")
                && m.contains("--ignore-space")
                && m.contains("--env staging --kept")
                && m.contains("nothing was changed"),
            "{m}"
        );
        let w = check_space(&short, None, true, "staging", R).unwrap();
        assert!(
            w.len() == 1 && w[0].contains("going on (--ignore-space)"),
            "{w:?}"
        );
        let w = check_space(
            &plan::Space::Unknown("df failed".into()),
            None,
            false,
            "x",
            R,
        )
        .unwrap();
        assert!(
            w.len() == 1 && w[0].contains("could not be checked (df failed)"),
            "{w:?}"
        );
        let ok = plan::Space::Enough("ok".into());
        assert!(check_space(&ok, None, false, "x", R).unwrap().is_empty());
        // The WAL directory unmeasured: its warning, also when the rest fits.
        let w = check_space(&ok, Some("df could not measure /d/pg_wal"), false, "x", R).unwrap();
        assert_eq!(w, vec!["df could not measure /d/pg_wal".to_string()]);
        // As the plan and the drill show the verdict.
        assert_eq!(ok.to_string(), "ok");
        assert_eq!(
            short.to_string(),
            "NOT ENOUGH: 1 GiB free on d /, 2 GiB needed"
        );
        assert_eq!(
            plan::Space::Unknown("df failed".into()).to_string(),
            "not measured: df failed"
        );
    }

    #[test]
    fn a_failed_stop_of_the_writers_starts_them_again() {
        // Regression: `t.stop_writers()?` returned at once, leaving a half-stopped app stopped.
        let started = Cell::new(0);
        let e = stop_or_start_again(
            || Err(Error::failed("compose stop timed out")),
            || {
                started.set(started.get() + 1);
                Ok(())
            },
        )
        .unwrap_err();
        assert_eq!(started.get(), 1);
        assert_eq!(e.exit_code(), ExitCode::Failed);
        let m = e.to_string();
        assert!(
            m.contains("compose stop timed out") && m.contains("started again"),
            "{m}"
        );
        // Starting fails too: both errors are named.
        let e = stop_or_start_again(
            || Err(Error::failed("stop failed")),
            || Err(Error::failed("start failed")),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("stop failed") && e.contains("start failed"),
            "{e}"
        );
        // A successful stop starts nothing.
        let started = Cell::new(0);
        stop_or_start_again(
            || Ok(()),
            || {
                started.set(started.get() + 1);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(started.get(), 0);
    }
}
