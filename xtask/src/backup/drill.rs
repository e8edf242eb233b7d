//! `cargo xtask backup drill [--env NAME] [OBJECT]`: turn "a file exists" into "we can restore".
//!
//! Download the backup on the environment's host, pipe it through `gzip -dc` into
//! `psql -X -v ON_ERROR_STOP=1 --single-transaction` against a fresh scratch database, count the rows
//! of every table in the scratch database and in the source, drop the scratch database (also when
//! anything fails), and pass only when both sides have the same tables with the same counts.

use std::collections::BTreeMap;
use std::time::Instant;

use super::{list_with, RemoteObject};
use crate::environments::{Environment, Environments};
use crate::error::{Error, ExitCode, Result};
use crate::host::{Host, Script, RCLONE_FLAGS};
use crate::process::quote_words;

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
}

/// Exact row counts of every ordinary and partitioned table outside the system schemas, as
/// `schema.table|count` lines. Fixed SQL: identifiers are quoted by PostgreSQL (`format('%I')`).
pub const COUNT_SQL: &str = "SELECT format('%I.%I', n.nspname, c.relname) || '|' || \
 (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', n.nspname, c.relname), \
 false, true, '')))[1]::text \
 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
 WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
 AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%' ORDER BY 1";

/// Download `$1` (an rclone path) and restore it with the psql command given as `$2...`.
/// `@RCLONE_FLAGS@` stands for [`RCLONE_FLAGS`] (see [`restore_script`]).
const RESTORE: &str = include_str!("drill-restore.sh");

/// [`RESTORE`] with the bounded rclone flags every other xtask rclone call uses.
fn restore_script() -> String {
    RESTORE.replace("@RCLONE_FLAGS@", &quote_words(&RCLONE_FLAGS))
}

/// Run the command given as arguments (psql words, possibly through `compose`).
const RUN: &str = "\"$@\"\n";

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

#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    pub env: String,
    pub object: RemoteObject,
    pub scratch_database: String,
    pub passed: bool,
    pub tables: Vec<TableCount>,
    pub restore_seconds: f64,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let envs = Environments::load()?;
    let env = envs.get(&args.env)?;
    let report = drill(env, args.object.as_deref())?;
    if args.json {
        println!("{}", serde_json::to_string(&report).expect("serializable"));
    } else {
        for t in &report.tables {
            let n = |v: Option<u64>| v.map_or("missing".to_string(), |v| v.to_string());
            println!(
                "  {} {}: source {}, restored {}",
                if t.ok() { "ok  " } else { "FAIL" },
                t.table,
                n(t.source),
                n(t.restored)
            );
        }
    }
    if report.passed {
        if !args.json {
            let rows: u64 = report.tables.iter().filter_map(|t| t.restored).sum();
            println!(
                "drill passed: {} restored into a scratch database in {:.1}s, {} tables and {rows} rows match the source",
                report.object.path,
                report.restore_seconds,
                report.tables.len()
            );
        }
        Ok(ExitCode::Ok)
    } else {
        let bad: Vec<&str> = report
            .tables
            .iter()
            .filter(|t| !t.ok())
            .map(|t| t.table.as_str())
            .collect();
        Err(Error::failed(format!(
            "drill FAILED for {}: row counts differ from the source in {} (writes since the backup \
             also show up here: drill a fresh backup to tell them apart)",
            report.object.path,
            if bad.is_empty() {
                "no tables: the source has none".to_string()
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

fn sql(host: &Host, env: &Environment, db: &str, sql: &str) -> Result<String> {
    let words = host.psql_words(db, &["-A", "-t", "-c", sql]);
    let o = host
        .script(&Script::bash(RUN).with_compose(), &words)?
        .output()?;
    if o.status.success() {
        Ok(o.stdout_str())
    } else {
        Err(Error::failed(format!(
            "psql on database {db} of `{}` {}: {}",
            env.name,
            crate::process::describe(o.status),
            o.stderr_str().trim()
        )))
    }
}

/// Drops the scratch database when the drill ends, however it ends.
struct Scratch<'a> {
    host: &'a Host,
    env: &'a Environment,
    name: String,
    dropped: bool,
}

impl Scratch<'_> {
    fn drop_now(&mut self) -> Result<()> {
        if !self.dropped {
            sql(
                self.host,
                self.env,
                "postgres",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            )?;
            self.dropped = true;
        }
        Ok(())
    }
}

impl Drop for Scratch<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.drop_now() {
            eprintln!(
                "warning: could not drop the scratch database {}: {e}",
                self.name
            );
        }
    }
}

/// Run the drill and return its report (`passed` says whether counts match).
pub fn drill(env: &Environment, object: Option<&str>) -> Result<Report> {
    let host = Host::of(env)?;
    let base = env.backup.base();
    if let Some(w) = object.filter(|w| w.contains(':')) {
        super::check_path(env, w)?;
    }
    let objects = list_with(env, &host)?;
    let obj = choose(&objects, object, &base)?;
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let name = format!("xtask_drill_{secs}_{}", std::process::id());
    eprintln!(
        "drill: restoring {} ({} bytes) into scratch database {name}",
        obj.path, obj.size
    );
    sql(
        &host,
        env,
        "postgres",
        &format!("CREATE DATABASE {name} TEMPLATE template0"),
    )?;
    let mut scratch = Scratch {
        host: &host,
        env,
        name: name.clone(),
        dropped: false,
    };
    let start = Instant::now();
    let mut args = vec![obj.path.clone()];
    args.extend(host.psql_words(&name, &["--single-transaction"]));
    let text = restore_script();
    let o = host
        .script(&Script::bash(&text).with_compose(), &args)?
        .output()?;
    if !o.status.success() {
        let err = o.stderr_str();
        let tail: Vec<&str> = err.lines().rev().take(5).collect();
        return Err(Error::failed(format!(
            "drill FAILED: restoring {} into {name} {}: {}",
            obj.path,
            crate::process::describe(o.status),
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        )));
    }
    let restore_seconds = start.elapsed().as_secs_f64();
    let restored = parse_counts(&sql(&host, env, &name, COUNT_SQL)?)?;
    let source = parse_counts(&sql(&host, env, &env.database, COUNT_SQL)?)?;
    scratch.drop_now()?;
    let tables = compare(&source, &restored);
    let passed = !tables.is_empty() && tables.iter().all(TableCount::ok);
    Ok(Report {
        env: env.name.clone(),
        object: obj,
        scratch_database: name,
        passed,
        tables,
        restore_seconds,
    })
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
