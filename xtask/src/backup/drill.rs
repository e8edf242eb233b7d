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

pub fn run(args: Args) -> Result<ExitCode> {
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
    let result = drill_with(env, args.object.as_deref(), opts);
    super::status::record_drill(env, &envs.root, &result);
    let report = result?;
    let what = match report.reference {
        Reference::Manifest => "manifest",
        Reference::LiveDatabase => "live database",
    };
    if args.json {
        println!("{}", serde_json::to_string(&report).expect("serializable"));
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
    // restore's commands on the environment's host: its replay is the drill's (below).
    let t = Target::of(env)?;
    let host = &t.host;
    let base = env.backup.base();
    if let Some(w) = object.filter(|w| w.contains(':')) {
        super::check_path(env, w)?;
    }
    let live = DbName::parse(&env.database)?;
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
    let (measured, facts) = facts.map_err(|e| {
        e.context(format!(
            "drill FAILED for {}: reading the live database's facts (its size and properties, \
             for the scratch database made beside it)",
            obj.path
        ))
    })?;
    let manifest = super::read_manifest(env, &obj.path)?;
    let mut warnings = Vec::new();
    match &manifest {
        Some(m) => m.check_dump(&obj.path, obj.size, None)?,
        None => {
            let w = no_manifest(&obj.path, opts.strict)?;
            eprintln!("warning: {w}");
            warnings.push(w);
        }
    }
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
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let name = DbName::parse(&format!("xtask_drill_{secs}_{}", std::process::id()))?;
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
    let mut scratch = Scratch::new(&t);
    rp.create(&mut scratch, &env.db_user)?;
    rp.check_interrupt()?;
    let start = Instant::now();
    // Downloaded and checked first (nothing of the object runs before its sha256 matched the
    // manifest), then replayed the way `restore` replays: one transaction, psql under `\restrict`
    // with a key of its own (a planted dump cannot run psql meta-commands: `\!` on this host), as
    // the scratch database's own role (its SQL cannot reach the live database, other roles, or
    // the server's files and programs).
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
    };
    report.passed = report.compute_passed();
    Ok(report)
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
