//! `cargo xtask backup drill [--env NAME] [OBJECT] [--strict] [--trust-dump]`: turn "a file
//! exists" into "we can restore".
//!
//! Read the backup's manifest ([`super::manifest`]), download the backup on the environment's host,
//! check its sha256 and size against the manifest, replay it the way `restore` does (restore's
//! `replay.sh`: one transaction, psql under `\restrict`) into a fresh scratch database as a role
//! made for it that owns that database and nothing else ([`crate::restore::scratch`]; with
//! `--trust-dump` as `db_user`), refuse what a restore refuses (the dump changing the database
//! itself), count the rows of every table in the scratch database and read its newest migration
//! (as that role), drop the scratch database and the role (also when anything fails), and pass
//! only when the restore has exactly the manifest's tables, counts and newest migration. The
//! manifest is the reference, not the live database: after a bad migration or later writes the
//! live database is the wrong one. A backup without a manifest (made before manifests) is compared
//! with the live database instead, with a warning; `--strict` refuses it.
//!
//! The scratch database is a full copy beside the live one, on the same filesystems: before it is
//! made the drill runs restore's free-space check (`restore/free-space.sh`,
//! `restore::SpaceCheck`; exit 1 with nothing made when it does not fit, `--ignore-space` to go
//! on) and creates it like the live database (its encoding, locale and tablespace, from the same
//! facts query: [`plan::drill_facts_sql`]), as a restore would.

use std::collections::BTreeMap;
use std::time::Instant;

use super::{list_with, RemoteObject};
use crate::environments::{Environment, Environments};
use crate::error::{Error, ExitCode, Result};
use crate::restore::plan::{self, DbName};
use crate::restore::scratch::{Replayer, Scratch};
use crate::restore::target::{Source, Target};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Environment from infra/environments.toml.
    #[arg(long, default_value = "local")]
    pub env: String,
    /// The backup: its full path (`b2:bucket/postgres/YYYYMM/station_backup_...sql.gz`) or its file
    /// name. Default: the newest.
    pub object: Option<String>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Refuse (exit 1) a backup that has no manifest instead of comparing with the live database.
    #[arg(long)]
    pub strict: bool,
    /// Replay the dump as the database user instead of a role that owns only the scratch
    /// database, as `restore --trust-dump` does: for backups that carry their objects' owners
    /// (`ALTER ... OWNER TO`, taken before xtask's backups left them out). Its SQL then runs with
    /// every right that user has: only for a backup you trust.
    #[arg(long)]
    pub trust_dump: bool,
    /// Drill even when the free space beside the live database looks too small, as `restore
    /// --ignore-space` does (the scratch database is a full copy beside it).
    #[arg(long)]
    pub ignore_space: bool,
}

/// How a drill runs (the CLI's flags).
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// A backup without a manifest is refused (exit 1).
    pub strict: bool,
    /// Replay (and count) as the database user, not as the scratch database's own role.
    pub trust_dump: bool,
    /// Go on when the space check says the scratch database does not fit (a warning instead).
    pub ignore_space: bool,
}

/// Exact row counts of every ordinary and partitioned table outside the system schemas, as
/// `schema.table|count` lines. Fixed SQL: identifiers are quoted by PostgreSQL (`format('%I')`).
pub const COUNT_SQL: &str = "SELECT format('%I.%I', n.nspname, c.relname) || '|' || \
 (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', n.nspname, c.relname), \
 false, true, '')))[1]::text \
 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
 WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
 AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%' ORDER BY 1";

/// One table's row count in the reference (`source`: the manifest, or the live database for a backup
/// without one) and in the restored scratch database.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TableCount {
    pub table: String,
    pub source: Option<u64>,
    pub restored: Option<u64>,
}

impl TableCount {
    pub fn ok(&self) -> bool {
        self.source.is_some() && self.source == self.restored
    }
}

/// What the restore was compared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reference {
    /// The backup's manifest (counts taken in the dump's own snapshot).
    Manifest,
    /// The live database: only for backups made before manifests, and only without `--strict`.
    LiveDatabase,
}

/// The newest migration in the manifest and in the restore (only compared with a manifest).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MigrationCheck {
    pub manifest: Option<String>,
    pub restored: Option<String>,
}

impl MigrationCheck {
    pub fn ok(&self) -> bool {
        self.manifest == self.restored
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    pub env: String,
    pub object: RemoteObject,
    pub reference: Reference,
    /// The manifest's object path, when the backup has one.
    pub manifest: Option<String>,
    pub scratch_database: String,
    pub passed: bool,
    pub tables: Vec<TableCount>,
    /// `None` when compared with the live database.
    pub newest_migration: Option<MigrationCheck>,
    pub warnings: Vec<String>,
    pub restore_seconds: f64,
    /// Scratch databases (and replay roles) of drills that were killed, dropped by this one.
    pub dropped_leftovers: Vec<String>,
}

impl Report {
    fn compute_passed(&self) -> bool {
        !self.tables.is_empty()
            && self.tables.iter().all(TableCount::ok)
            && self
                .newest_migration
                .as_ref()
                .is_none_or(MigrationCheck::ok)
    }
}

/// How far a drill got: the step running and what is known of it (the fields of [`Report`] its
/// `--json` failure document carries).
#[derive(Debug)]
pub struct Progress {
    pub step: &'static str,
    pub object: Option<String>,
    pub manifest: Option<String>,
    pub scratch_database: Option<String>,
    /// Leftovers of killed drills this one dropped.
    pub dropped_leftovers: Vec<String>,
    /// Set once the report is printed (`--json` then prints nothing more).
    pub printed: bool,
    /// The report of a drill whose restore differs (printed with the error).
    pub report: Option<serde_json::Value>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            step: "input",
            object: None,
            manifest: None,
            scratch_database: None,
            dropped_leftovers: Vec::new(),
            printed: false,
            report: None,
        }
    }
}

pub fn run(args: Args) -> Result<ExitCode> {
    // `--json`: one document on stdout on every path: the report (also when the counts differ),
    // else the short one of `error::JsonFailure` with what is known (the object, its manifest,
    // the scratch database, the leftovers dropped).
    let (json, env_name) = (args.json, args.env.clone());
    let mut p = Progress::default();
    let r = run_in(args, &mut p);
    if let (true, false, Err(e)) = (json, p.printed, &r) {
        let mut extra = serde_json::json!({
            "outcome": if crate::signals::interrupted() { "interrupted" } else { "failed" },
            "object": p.object,
            "manifest": p.manifest,
            "scratch_database": p.scratch_database,
            "dropped_leftovers": p.dropped_leftovers,
            "passed": false,
        });
        if let (Some(serde_json::Value::Object(r)), Some(x)) =
            (p.report.take(), extra.as_object_mut())
        {
            x.extend(r);
        }
        println!("{}", e.json_failure_with(Some(&env_name), p.step, extra));
    }
    r
}

fn run_in(args: Args, p: &mut Progress) -> Result<ExitCode> {
    let envs = Environments::load()?;
    let env = envs.get(&args.env)?;
    // Ctrl-C (SIGTERM, SIGHUP) ends the replay's session and the guard drops the scratch
    // database and its role (restore's handler: the drill's children run as restore's do).
    let _signals =
        crate::restore::on_signal("stopping the drill (it never writes to the live database)")?;
    let opts = Options {
        strict: args.strict,
        trust_dump: args.trust_dump,
        ignore_space: args.ignore_space,
    };
    let result = drill_in(env, args.object.as_deref(), opts, p);
    super::status::record_drill(env, &envs.root, &result);
    let report = result?;
    let what = match report.reference {
        Reference::Manifest => "manifest",
        Reference::LiveDatabase => "live database",
    };
    if args.json && report.passed {
        p.printed = true;
        println!("{}", serde_json::to_string(&report).expect("serializable"));
    } else if args.json {
        // Printed by `run` with the error: the report, its outcome, message and exit code.
        p.step = "compare";
        p.report = Some(serde_json::to_value(&report).expect("serializable"));
    } else {
        let n = |v: Option<u64>| v.map_or("missing".to_string(), |v| v.to_string());
        for t in &report.tables {
            println!(
                "  {} {}: {what} {}, restored {}",
                if t.ok() { "ok  " } else { "FAIL" },
                t.table,
                n(t.source),
                n(t.restored)
            );
        }
        if let Some(m) = &report.newest_migration {
            let s = |v: &Option<String>| v.clone().unwrap_or_else(|| "none".into());
            println!(
                "  {} newest migration: manifest {}, restored {}",
                if m.ok() { "ok  " } else { "FAIL" },
                s(&m.manifest),
                s(&m.restored)
            );
        }
    }
    if report.passed {
        if !args.json {
            let rows: u64 = report.tables.iter().filter_map(|t| t.restored).sum();
            println!(
                "drill passed: {} restored into a scratch database in {:.1}s, {} tables and {rows} rows match the {what}",
                report.object.path,
                report.restore_seconds,
                report.tables.len()
            );
        }
        Ok(ExitCode::Ok)
    } else {
        let mut bad: Vec<&str> = report
            .tables
            .iter()
            .filter(|t| !t.ok())
            .map(|t| t.table.as_str())
            .collect();
        if report.newest_migration.as_ref().is_some_and(|m| !m.ok()) {
            bad.push("the newest migration");
        }
        let hint = match report.reference {
            Reference::Manifest => "the dump does not restore what it was taken from",
            Reference::LiveDatabase => {
                "writes since the backup also show up here: drill a backup with a manifest to tell \
                 them apart"
            }
        };
        Err(Error::failed(format!(
            "drill FAILED for {}: the restore differs from the {what} in {} ({hint})",
            report.object.path,
            if bad.is_empty() {
                format!("no tables: the {what} has none")
            } else {
                bad.join(", ")
            }
        )))
    }
}

/// Pick the object to drill: the newest, or the one named by full path or file name.
pub fn choose(objects: &[RemoteObject], wanted: Option<&str>, base: &str) -> Result<RemoteObject> {
    match wanted {
        None => objects.last().cloned().ok_or_else(|| {
            Error::failed(format!(
                "no backups under {base}: run `cargo xtask backup` first"
            ))
        }),
        Some(w) => objects
            .iter()
            .find(|o| o.path == w || o.path.rsplit('/').next() == Some(w))
            .cloned()
            .ok_or_else(|| {
                Error::usage(format!(
                    "no backup {w:?} under {base} (`cargo xtask backup drill` without OBJECT takes the newest)"
                ))
            }),
    }
}

/// Parse `schema.table|count` lines.
pub fn parse_counts(text: &str) -> Result<BTreeMap<String, u64>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (t, n) = l
                .rsplit_once('|')
                .ok_or_else(|| Error::failed(format!("unexpected row count line {l:?}")))?;
            let n = n
                .trim()
                .parse::<u64>()
                .map_err(|_| Error::failed(format!("unexpected row count line {l:?}")))?;
            Ok((t.to_string(), n))
        })
        .collect()
}

/// Compare two count maps: every table of either side, in name order.
pub fn compare(
    source: &BTreeMap<String, u64>,
    restored: &BTreeMap<String, u64>,
) -> Vec<TableCount> {
    let mut names: Vec<&String> = source.keys().chain(restored.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|t| TableCount {
            table: t.clone(),
            source: source.get(t).copied(),
            restored: restored.get(t).copied(),
        })
        .collect()
}

/// Run the drill (not strict) and return its report (`passed` says whether everything matches).
pub fn drill(env: &Environment, object: Option<&str>) -> Result<Report> {
    drill_with(env, object, Options::default())
}

/// The warning (or, `strict`, the refusal) for a backup without a manifest.
pub fn no_manifest(object: &str, strict: bool) -> std::result::Result<String, Error> {
    let path = super::manifest::manifest_path(object);
    if strict {
        Err(Error::failed(format!(
            "{object} has no manifest ({path} does not exist): --strict refuses a backup that cannot be \
             checked against what it was taken from"
        )))
    } else {
        Ok(format!(
            "{object} has no manifest ({path}; made before manifests?): comparing with the live \
             database instead, which differs by every write since the backup"
        ))
    }
}

/// Run the drill and return its report. `opts.strict`: a backup without a manifest is refused
/// (exit 1). The dump is replayed (and counted) as a role that owns only the scratch database
/// (restore's, [`crate::restore::scratch`]), unless `opts.trust_dump`; the scratch database and
/// that role are dropped however the drill ends.
pub fn drill_with(env: &Environment, object: Option<&str>, opts: Options) -> Result<Report> {
    drill_in(env, object, opts, &mut Progress::default())
}

/// [`drill_with`], saying in `p` how far it got.
fn drill_in(
    env: &Environment,
    object: Option<&str>,
    opts: Options,
    p: &mut Progress,
) -> Result<Report> {
    p.step = "input";
    // The drill's start: the leftovers it may drop were made before it, its own name carries it.
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // restore's commands on the environment's host: its replay is the drill's (below).
    let t = Target::of(env)?;
    let host = &t.host;
    let base = env.backup.base();
    if let Some(w) = object.filter(|w| w.contains(':')) {
        super::check_path(env, w)?;
    }
    let live = DbName::parse(&env.database)?;
    p.step = "plan";
    // The live database's facts (its size and properties, the cluster's data directory) and the
    // free space where PostgreSQL runs, while the bucket is listed.
    let facts_sql = plan::drill_facts_sql(&live);
    let (objects, facts) = std::thread::scope(|scope| {
        let facts = scope.spawn(|| crate::restore::facts_and_space(&t, &facts_sql));
        let objects = list_with(env, host);
        let facts = facts
            .join()
            .unwrap_or_else(|_| Err(Error::failed("reading the databases' facts panicked")));
        (objects, facts)
    });
    // Which backup first: a name that is not there is bad input, whatever the database says.
    let obj = choose(&objects?, object, &base)?;
    p.object = Some(obj.path.clone());
    let (measured, facts) = facts.map_err(|e| {
        e.context(format!(
            "drill FAILED for {}: reading the live database's facts (its size and properties, \
             for the scratch database made beside it)",
            obj.path
        ))
    })?;
    let mut warnings = Vec::new();
    // What drills killed before they could drop it (SIGKILL) left: no running drill's (each
    // holds its lock, `hold_alive`), none in use, of exactly the drill's shape.
    p.step = "leftovers";
    p.dropped_leftovers = drop_leftovers(&t, secs, &mut warnings);
    p.step = "manifest";
    let manifest = super::read_manifest(env, &obj.path)?;
    p.manifest = manifest
        .as_ref()
        .map(|_| super::manifest::manifest_path(&obj.path));
    match &manifest {
        Some(m) => m.check_dump(&obj.path, obj.size, None)?,
        None => {
            let w = no_manifest(&obj.path, opts.strict)?;
            eprintln!("warning: {w}");
            warnings.push(w);
        }
    }
    p.step = "space";
    // The same check as a restore's plan, before anything is made: the scratch database is a
    // full copy beside the live one.
    let live_facts = plan::facts_of(&facts, &live)?;
    let props = match &live_facts {
        Some(_) => plan::parse_live_props(&facts)?,
        None => None,
    };
    let space = crate::restore::SpaceCheck::of(
        &facts,
        live_facts.as_ref().map(|l| l.size_bytes),
        obj.size,
        &measured,
    );
    eprintln!("drill: space {}", space.space);
    for w in space.check(opts.ignore_space, &env.name, "refusing the drill")? {
        eprintln!("warning: {w}");
        warnings.push(w);
    }
    let name = DbName::parse(&format!("xtask_drill_{secs}_{}", std::process::id()))?;
    p.scratch_database = Some(name.to_string());
    let rp = Replayer {
        t: &t,
        scratch: &name,
        trust_dump: opts.trust_dump,
        again: format!(
            "cargo xtask backup drill --env {} {}",
            env.name,
            obj.path.rsplit('/').next().unwrap_or(&obj.path)
        ),
        interrupted: ": the drill stopped (it never writes to the live database)",
        // Made like the live database (encoding, locale, tablespace), as a restore makes its own.
        like: props.as_ref(),
    };
    eprintln!(
        "drill: restoring {} ({} bytes) into scratch database {name} as {}",
        obj.path,
        obj.size,
        rp.words()
    );
    // Armed before the CREATE: the guard drops the database, then the role, on every path.
    p.step = "create";
    // Held (the lock taken) before the CREATE, until the guard below has dropped what it made
    // (declared first: dropped last): a drill never drops another running drill's.
    let _alive = hold_alive(&t, &name)?;
    let mut scratch = Scratch::new(&t);
    rp.create(&mut scratch, &env.db_user)?;
    rp.check_interrupt()?;
    let start = Instant::now();
    // Downloaded and checked first (nothing of the object runs before its sha256 matched the
    // manifest), then replayed the way `restore` replays: one transaction, psql under `\restrict`
    // with a key of its own (a planted dump cannot run psql meta-commands: `\!` on this host), as
    // the scratch database's own role (its SQL cannot reach the live database, other roles, or
    // the server's files and programs).
    p.step = "fetch";
    let f = t
        .fetch(&obj.path, manifest.is_some())
        .map_err(|e| e.context(format!("drill FAILED: {}", obj.path)))?;
    scratch.dir = Some(f.dir.clone());
    rp.check_interrupt()?;
    let replayed = match &manifest {
        Some(m) => m
            .check_dump(&obj.path, f.size, Some(&f.sha256))
            .map_err(|e| e.context("drill FAILED: nothing was restored")),
        None => Ok(()),
    }
    .and_then(|()| {
        p.step = "replay";
        let file = format!("{}/backup.sql.gz", f.dir);
        // Counted in the replay's transaction, as the role that replayed (under a fixed
        // search_path): nothing the dump defined runs with more rights than the dump had. No
        // gate: the drill reports what differs from the manifest.
        rp.replay(&Source::File(&file), None)
            .map_err(|e| e.context(format!("drill FAILED: restoring {} into {name}", obj.path)))
    });
    // The download goes at once (the counts may take a while).
    if let Some(dir) = scratch.dir.take() {
        if let Err(e) = t.cleanup(&dir) {
            eprintln!("warning: {e}");
        }
    }
    let replayed = replayed?;
    let restore_seconds = start.elapsed().as_secs_f64();
    p.step = "properties";
    // What a restore would refuse (the dump changed the database itself) fails the drill too;
    // SECURITY DEFINER functions are named.
    for w in rp
        .check_props(&env.db_user)
        .map_err(|e| e.context(format!("drill FAILED: {}", obj.path)))?
    {
        eprintln!("warning: {w}");
        warnings.push(w);
    }
    rp.check_interrupt()?;
    p.step = "counts";
    let (restored, restored_migration) = (replayed.tables, replayed.migration);
    let (reference, source, newest_migration) = match &manifest {
        Some(m) => {
            let check = MigrationCheck {
                manifest: m.newest_migration.clone(),
                restored: restored_migration,
            };
            (Reference::Manifest, m.tables.clone(), Some(check))
        }
        None => {
            let live = parse_counts(&t.sql(&env.database, COUNT_SQL)?)?;
            (Reference::LiveDatabase, live, None)
        }
    };
    p.step = "cleanup";
    let left = scratch.finish();
    if !left.is_empty() {
        return Err(Error::failed(left.join("; ")));
    }
    let mut report = Report {
        env: env.name.clone(),
        manifest: manifest
            .as_ref()
            .map(|_| super::manifest::manifest_path(&obj.path)),
        object: obj,
        reference,
        scratch_database: name.to_string(),
        passed: false,
        tables: compare(&source, &restored),
        newest_migration,
        warnings,
        restore_seconds,
        dropped_leftovers: std::mem::take(&mut p.dropped_leftovers),
    };
    report.passed = report.compute_passed();
    Ok(report)
}

/// The first key of the session-level advisory lock a drill holds on `postgres` for as long as it
/// lives (`"dril"` in ASCII); the second is `hashtext(<its scratch database name>)`. A scratch
/// database (or replay role) of the drill shape whose lock is free belongs to no running drill.
pub const DRILL_LOCK_KEY: i32 = 0x6472_696c;

/// The SQL that takes (`pg_advisory_lock`) a drill's lock for `name`, and that tells whether it is
/// held (`pg_locks`, from another session).
pub fn alive_lock_sql(name: &DbName) -> String {
    format!(
        "SELECT pg_advisory_lock({DRILL_LOCK_KEY}, hashtext({}));",
        name.literal()
    )
}

pub fn alive_held_sql(name: &DbName) -> String {
    format!(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = {DRILL_LOCK_KEY}::oid \
         AND objid = hashtext({l})::oid AND objsubid = 2 AND granted",
        l = name.literal()
    )
}

/// Databases and roles named as a drill names its scratch database (`xtask_drill_<secs>_<pid>`),
/// as `d|name` / `r|name` lines.
pub const LEFTOVERS_SQL: &str = "SELECT 'd|' || datname FROM pg_database \
 WHERE datname ~ '^xtask_drill_[0-9]+_[0-9]+$' UNION ALL SELECT 'r|' || rolname FROM pg_roles \
 WHERE rolname ~ '^xtask_drill_[0-9]+_[0-9]+$' ORDER BY 1";

/// The start (unix seconds) in a name of exactly the drill shape `xtask_drill_<secs>_<pid>`.
pub fn drill_name_secs(name: &str) -> Option<u64> {
    let rest = name.strip_prefix("xtask_drill_")?;
    let (secs, pid) = rest.split_once('_')?;
    let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(secs) || !digits(pid) {
        return None;
    }
    secs.parse().ok()
}

/// The names in [`LEFTOVERS_SQL`]'s output that a drill started at `started` may look at: exactly
/// the drill shape, made before it started (its own, and those of drills started with it, are
/// not), once each (a database and its role share the name).
pub fn leftover_candidates(listing: &str, started: u64) -> Vec<DbName> {
    let mut names: Vec<DbName> = listing
        .lines()
        .filter_map(|l| l.trim().split_once('|').map(|(_, n)| n))
        .filter(|n| drill_name_secs(n).is_some_and(|s| s < started))
        .filter_map(|n| DbName::parse(n).ok())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// One session: drop the database and role `name` only when no drill holds its lock (taken here
/// for the drop) and no session uses the database. Prints `dropped`, `held` or `busy`.
pub fn drop_leftover_script(name: &DbName) -> String {
    format!(
        "SELECT pg_try_advisory_lock({DRILL_LOCK_KEY}, hashtext({l})) AS xtask_free \\gset\n\
         \\if :xtask_free\n\
         SELECT count(*) = 0 AS xtask_idle FROM pg_stat_activity WHERE datname = {l} \\gset\n\
         \\if :xtask_idle\n\
         DROP DATABASE IF EXISTS {q};\n\
         DROP ROLE IF EXISTS {q};\n\
         \\echo dropped\n\
         \\else\n\
         \\echo busy\n\
         \\endif\n\
         \\else\n\
         \\echo held\n\
         \\endif\n",
        q = name.ident(),
        l = name.literal()
    )
}

/// A drill's mark that it is alive: a psql session on `postgres` holding the drill's advisory
/// lock ([`DRILL_LOCK_KEY`]) for its scratch database's name, its stdin a
/// [`Lifeline`](crate::process::Lifeline). Dropped, it ends the session (end of file); a killed
/// xtask ends it too (the pipe closes), so the lock is held exactly as long as the drill lives.
struct Alive {
    line: crate::process::Lifeline,
}

impl Drop for Alive {
    fn drop(&mut self) {
        self.line.close();
    }
}

/// Take the drill's lock for `name` (see [`Alive`]), confirmed from another session before the
/// scratch database is made.
fn hold_alive(t: &Target, name: &DbName) -> Result<Alive> {
    let line =
        crate::process::Lifeline::with_first(format!("{}\n", alive_lock_sql(name)).into_bytes());
    // Its own process group: the terminal's Ctrl-C does not end it (and the lock) while the drill
    // is still dropping what it made.
    let cmd = t
        .host
        .psql("postgres", &["-A", "-t"])?
        .lifeline(&line)
        .own_process_group();
    let holder = std::thread::spawn(move || cmd.output());
    let alive = Alive { line };
    let check = alive_held_sql(name);
    for _ in 0..200 {
        if t.sql("postgres", &check)?.trim() == "1" {
            return Ok(alive);
        }
        if holder.is_finished() {
            let why = match holder.join() {
                Ok(Ok(o)) => o.stderr_str().trim().to_string(),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "it panicked".into(),
            };
            return Err(Error::failed(format!(
                "the drill's session that marks {name} as in use ended: {why}"
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    Err(Error::failed(format!(
        "the drill's lock for {name} was not granted within 5 s"
    )))
}

/// Drop what killed drills left (databases and roles of the drill shape made before `started`
/// that no drill holds and no session uses); their names, and warnings for what could not be.
fn drop_leftovers(t: &Target, started: u64, warnings: &mut Vec<String>) -> Vec<String> {
    let listing = match t.sql("postgres", LEFTOVERS_SQL) {
        Ok(l) => l,
        Err(e) => {
            let w = format!("could not look for scratch databases killed drills left: {e}");
            eprintln!("warning: {w}");
            warnings.push(w);
            return Vec::new();
        }
    };
    let mut dropped = Vec::new();
    for name in leftover_candidates(&listing, started) {
        match t.sql_script("postgres", &drop_leftover_script(&name)) {
            Ok(out) if out.trim() == "dropped" => {
                eprintln!(
                    "drill: dropped {name} (scratch database and replay role), left behind by a \
                     drill that was killed: no drill holds it and no session used it"
                );
                dropped.push(name.to_string());
            }
            Ok(out) if out.trim() == "busy" => {
                eprintln!("drill: kept {name}: a session is connected to it");
            }
            Ok(_) => {} // held: a running drill's own.
            Err(e) => {
                let w = format!("could not drop {name}, left by a killed drill: {e}");
                eprintln!("warning: {w}");
                warnings.push(w);
            }
        }
    }
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(p: &str) -> RemoteObject {
        RemoteObject {
            path: p.into(),
            size: 1,
            hash: String::new(),
            hash_type: String::new(),
        }
    }

    #[test]
    fn choose_newest_or_named() {
        let objs = [
            obj("b2:b/postgres/202601/station_backup_20260101_000000_a.sql.gz"),
            obj("b2:b/postgres/202602/station_backup_20260201_000000_b.sql.gz"),
        ];
        assert!(choose(&objs, None, "b2:b/postgres")
            .unwrap()
            .path
            .ends_with("_b.sql.gz"));
        assert!(
            choose(&objs, Some("station_backup_20260101_000000_a.sql.gz"), "x")
                .unwrap()
                .path
                .ends_with("_a.sql.gz")
        );
        assert_eq!(
            choose(&objs, Some("nope"), "x").unwrap_err().exit_code(),
            ExitCode::Usage
        );
        assert_eq!(
            choose(&[], None, "x").unwrap_err().exit_code(),
            ExitCode::Failed
        );
    }

    /// Only names of exactly the drill's shape, made before the drill started, once each.
    #[test]
    fn leftovers_are_only_older_names_of_the_drill_shape() {
        assert_eq!(
            drill_name_secs("xtask_drill_1764000000_4242"),
            Some(1764000000)
        );
        for other in [
            "xtask_drill_1_2_x",
            "xtask_drill_x_1",
            "xtask_drill_1",
            "xtask_drill__1",
            "my_xtask_drill_1_2",
            "xtask_drill_1_",
        ] {
            assert_eq!(drill_name_secs(other), None, "{other}");
        }
        let listing = "d|xtask_drill_100_7\nr|xtask_drill_100_7\nr|xtask_drill_90_8\n\
                       d|xtask_drill_200_9\nd|xtask_drill_150_1_x\nd|xtask_drill_199_3\n";
        let names: Vec<String> = leftover_candidates(listing, 200)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            names,
            ["xtask_drill_100_7", "xtask_drill_199_3", "xtask_drill_90_8"]
        );
    }

    #[test]
    fn counts_compare_both_ways() {
        let s = parse_counts("public.a|3\npublic.\"we|ird\"|5\npublic.only_src|1\n").unwrap();
        let r = parse_counts("public.a|3\npublic.\"we|ird\"|4\n").unwrap();
        let c = compare(&s, &r);
        assert_eq!(c.len(), 3);
        let get = |t: &str| c.iter().find(|x| x.table == t).unwrap();
        assert!(get("public.a").ok());
        assert_eq!(get("public.only_src").restored, None);
        assert!(!get("public.only_src").ok());
        assert_eq!(get("public.\"we|ird\"").source, Some(5));
        assert!(!get("public.\"we|ird\"").ok());
        assert!(parse_counts("garbage").is_err());
    }
}
