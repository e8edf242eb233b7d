//! `cargo xtask migrate --env X [--sha SHA]`: run the environment's migrations, but only with a
//! verified pre-deploy backup for the SHA ([`VerifiedBackup`], which only the verify step makes).
//!
//! `builtin:sql-migrations`: the files `NNNN_name.sql` of `migrations_dir`, applied in order by one
//! `psql -X -q -v ON_ERROR_STOP=1 -A -t -f -` session that holds the migration advisory lock
//! ([`MIGRATION_LOCK`]) for its whole life, each file in its own transaction together with its
//! `schema_migrations` row (so a failing file leaves nothing behind). Locally psql talks to the local cluster (password in
//! `PGPASSWORD`); in a compose environment it runs in the postgres container (`exec -T`), over SSH
//! for remote ones. Any other migration command (e.g. `docker compose run --rm backend pnpm
//! migration:run`) runs in the environment's directory, remotely for ssh environments.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::backup::VerifiedBackup;
use crate::environments::{Environment, Environments, MigrationCommand};
use crate::error::{Error, ExitCode, Result};
use crate::git::Sha;
use crate::host::{Host, PSQL_OPTS};
use crate::process::Cmd;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Environment to migrate (required: a migration is never aimed at an environment by default).
    #[arg(long)]
    pub env: String,
    /// The release being deployed (default: `git rev-parse HEAD`); its `pre-deploy-<sha7>` backup
    /// must exist in the bucket.
    #[arg(long)]
    pub sha: Option<String>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let envs = Environments::load()?;
    let env = envs.get(&args.env)?;
    let sha = crate::git::sha_or_head(args.sha.as_deref(), &envs.root)?;
    let backup = VerifiedBackup::find_for_sha(env, &sha)?;
    println!(
        "verified pre-deploy backup: {} ({} bytes, {} {})",
        backup.object().path,
        backup.object().size,
        backup.object().hash_type,
        backup.object().hash
    );
    let applied = apply(env, &sha, &backup)?;
    println!("{applied}");
    Ok(ExitCode::Ok)
}

/// One SQL migration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Migration {
    pub version: u32,
    /// File stem, e.g. `0002_add_status`.
    pub name: String,
    pub file: PathBuf,
}

/// `NNNN_name.sql` → (version, stem). Names are `[a-z0-9_]`.
pub fn parse_file_name(name: &str) -> Option<(u32, String)> {
    let stem = name.strip_suffix(".sql")?;
    let (num, rest) = stem.split_once('_')?;
    if num.len() != 4 || !num.bytes().all(|b| b.is_ascii_digit()) || rest.is_empty() {
        return None;
    }
    if !rest
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return None;
    }
    Some((num.parse().ok()?, stem.to_string()))
}

/// The migrations of a directory, in order. A `.sql` file with a bad name or a repeated version is
/// bad input (exit 2).
pub fn discover(dir: &Path) -> Result<Vec<Migration>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::read(dir, e))?;
    let mut out: Vec<Migration> = Vec::new();
    for e in entries {
        let e = e.map_err(|e| Error::read(dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".sql") {
            continue;
        }
        let (version, stem) = parse_file_name(&name).ok_or_else(|| {
            Error::input(
                &e.path(),
                1,
                1,
                "migration files are named NNNN_name.sql (four digits, then [a-z0-9_])",
            )
        })?;
        out.push(Migration {
            version,
            name: stem,
            file: e.path(),
        });
    }
    out.sort_by_key(|m| m.version);
    for w in out.windows(2) {
        if w[0].version == w[1].version {
            return Err(Error::input(
                &w[1].file,
                1,
                1,
                format!(
                    "version {:04} is also used by {}",
                    w[1].version,
                    w[0].file.display()
                ),
            ));
        }
    }
    Ok(out)
}

pub const SCHEMA_TABLE_SQL: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (\
version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())";

/// The script psql runs for one migration inside `--single-transaction`: the file, then its row.
/// The version and name are validated (digits, `[a-z0-9_]`), so the literal is safe.
pub fn migration_script(m: &Migration, sql: &str) -> String {
    format!(
        "{sql}\n;\nINSERT INTO schema_migrations (version, name) VALUES ({}, '{}');\n",
        m.version, m.name
    )
}

/// The advisory lock every migration runner takes (`pg_try_advisory_lock(int, int)`: "xtas", "migr"),
/// held by the session that runs the migrations, so it lives exactly as long as that psql: two
/// runners never overlap, even when one was orphaned (its xtask killed) and `--force-unlock` broke
/// the deploy lock; the orphan keeps the database's lock until its psql ends.
pub const MIGRATION_LOCK: (i32, i32) = (0x7874_6173, 0x6d69_6772);

/// Markers the session script prints (one per line) so `apply` knows what happened.
const M_HELD: &str = "XTASK_MIGRATION_LOCK_HELD";
const M_START: &str = "XTASK_MIGRATION_START ";
const M_DONE: &str = "XTASK_MIGRATION_DONE ";

/// The one psql session of a migrate step: take the advisory lock (or say who holds it and stop),
/// create `schema_migrations`, then each migration not applied yet (checked inside the session, under
/// the lock) in its own transaction with its row. Versions and names are validated, so the literals
/// are safe; `label` is a validated SHA.
pub fn session_script(migrations: &[(Migration, String)], label: &str) -> String {
    let (k1, k2) = MIGRATION_LOCK;
    let mut s = format!(
        "SELECT pg_try_advisory_lock({k1}, {k2}) AS xtask_locked \\gset\n\
         \\if :xtask_locked\n\
         \\else\n\
         \\echo {M_HELD}\n\
         SELECT 'pid ' || a.pid || ' (' || COALESCE(NULLIF(a.application_name, ''), 'no application name') || \
         ', connected since ' || date_trunc('second', a.backend_start) || ')' FROM pg_locks l JOIN pg_stat_activity a \
         ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.classid = {k1} AND l.objid = {k2} AND l.objsubid = 2 \
         AND l.granted;\n\
         \\quit\n\
         \\endif\n\
         SET application_name = 'xtask migrate {label}';\n\
         {SCHEMA_TABLE_SQL};\n"
    );
    for (m, sql) in migrations {
        s.push_str(&format!(
            "SELECT NOT EXISTS (SELECT 1 FROM schema_migrations WHERE version = {v}) AS xtask_pending \\gset\n\
             \\if :xtask_pending\n\
             \\echo {M_START}{v}\n\
             BEGIN;\n\
             {body}\
             COMMIT;\n\
             \\echo {M_DONE}{v}\n\
             \\endif\n",
            v = m.version,
            body = migration_script(m, sql),
        ));
    }
    s
}

/// The migrate session: unaligned tuples only, script on stdin.
const SESSION_OPTS: &[&str] = &["-A", "-t", "-f", "-"];

/// psql against the environment's database on its host (local cluster, compose container, or the
/// container on the server).
struct Psql<'a> {
    host: &'a Host,
}

impl Psql<'_> {
    fn cmd(&self, extra: &[&str]) -> Result<Cmd> {
        Ok(self
            .host
            .psql(&self.host.env().database, extra)?
            .timeout(Duration::from_secs(600)))
    }
}

/// The commands `apply` would run (for `deploy --dry-run`; secrets redacted).
pub fn plan_commands(env: &Environment, sha: &Sha) -> Result<Vec<String>> {
    let host = Host::planned(env)?;
    match &env.migration {
        MigrationCommand::BuiltinSql => {
            let dir = migrations_dir(env)?;
            let p = Psql { host: &host };
            let mut v = Vec::new();
            let cmd = |extra: &[&str]| -> Result<String> {
                Ok(match p.cmd(extra) {
                    Ok(c) => c.display(),
                    // Not set up yet (local) or not configured: show the psql part only.
                    Err(_) => {
                        crate::process::quote_words(&[&["psql"][..], &PSQL_OPTS, extra].concat())
                    }
                })
            };
            let files: Vec<String> = discover(&dir)?
                .iter()
                .map(|m| m.file.display().to_string())
                .collect();
            v.push(format!(
                "{}  < one session: pg_try_advisory_lock{:?} (held until it ends), schema_migrations, \
                 then each of {} not applied yet in its own transaction with its row",
                cmd(SESSION_OPTS)?,
                MIGRATION_LOCK,
                files.join(", ")
            ));
            Ok(v)
        }
        MigrationCommand::Command(words) => Ok(vec![command_cmd(&host, sha, words)
            .map(|c| c.display())
            .unwrap_or_else(|_| crate::process::quote_words(words))]),
    }
}

fn migrations_dir(env: &Environment) -> Result<PathBuf> {
    env.migrations_dir.clone().ok_or_else(|| {
        Error::usage(format!(
            "environment `{}` uses builtin:sql-migrations without migrations_dir",
            env.name
        ))
    })
}

fn command_cmd(host: &Host, sha: &Sha, words: &[String]) -> Result<Cmd> {
    Ok(host
        .in_project(sha.as_str(), words)?
        .timeout(Duration::from_secs(1800)))
}

/// The outcome of the configured migration command: its own failure is a failed step (exit 1)
/// whatever code it exits with (psql's 3 or a tool's 2 are not "unreachable"/"bad input"); only
/// ssh's own 255, or the database or its container out of reach ([`Host::unreachable`]), is exit 3.
fn command_result(host: &Host, out: crate::process::Output) -> Result<String> {
    let env = host.env();
    if out.status.success() {
        return Ok(out.stdout_str());
    }
    let msg = format!(
        "migration command `{}` {}: {}",
        env.migration_command_text,
        crate::process::describe(out.status),
        crate::host::without_row_data(&out.stderr_str()).trim()
    );
    Err(if host.unreachable(&out) {
        Error::unavailable(format!(
            "{msg} (the server, its database or its container could not be reached)"
        ))
    } else {
        Error::failed(msg)
    })
}

/// Apply the pending migrations. `_proof` is the verified backup: only the verify step can make one,
/// so no code path reaches a migration without it.
pub fn apply(env: &Environment, sha: &Sha, _proof: &VerifiedBackup) -> Result<String> {
    let host = Host::of(env)?;
    match &env.migration {
        MigrationCommand::Command(words) => {
            let cmd = command_cmd(&host, sha, words)?;
            let text = command_result(&host, cmd.output()?)?;
            Ok(format!(
                "ran `{}`{}",
                env.migration_command_text,
                if text.trim().is_empty() {
                    String::new()
                } else {
                    format!(":\n{}", text.trim_end())
                }
            ))
        }
        MigrationCommand::BuiltinSql => {
            let migrations = discover(&migrations_dir(env)?)?
                .into_iter()
                .map(|m| {
                    let sql =
                        std::fs::read_to_string(&m.file).map_err(|e| Error::read(&m.file, e))?;
                    Ok((m, sql))
                })
                .collect::<Result<Vec<_>>>()?;
            let psql = Psql { host: &host };
            let out = psql
                .cmd(SESSION_OPTS)?
                .stdin_bytes(session_script(&migrations, sha.as_str()))
                .output()?;
            session_result(&migrations, &out)
        }
    }
}

/// What the migrate session did, from its exit status and markers.
fn session_result(
    migrations: &[(Migration, String)],
    out: &crate::process::Output,
) -> Result<String> {
    use std::os::unix::process::ExitStatusExt;
    let stdout = out.stdout_str();
    let lines: Vec<&str> = stdout.lines().map(str::trim).collect();
    let version =
        |prefix: &str, l: &str| l.strip_prefix(prefix).and_then(|v| v.parse::<u32>().ok());
    let name_of = |v: u32| {
        migrations
            .iter()
            .find(|(m, _)| m.version == v)
            .map(|(m, _)| m)
    };
    let done: Vec<String> = lines
        .iter()
        .filter_map(|l| version(M_DONE, l))
        .filter_map(|v| name_of(v).map(|m| m.name.clone()))
        .collect();
    let applied_note = if done.is_empty() {
        String::new()
    } else {
        format!(" (applied before it: {})", done.join(", "))
    };
    if let Some(i) = lines.iter().position(|l| *l == M_HELD) {
        let holder = lines.get(i + 1).filter(|h| !h.is_empty()).copied();
        return Err(Error::failed(format!(
            "another migration runner holds the database's migration lock (pg_advisory_lock{:?}, {}): \
             nothing was migrated. Two runners never overlap; wait for it to finish (an orphaned psql \
             of a killed deploy keeps it until its migration ends)",
            MIGRATION_LOCK,
            holder.map_or("holder unknown".to_string(), |h| format!("held by backend {h}"))
        )));
    }
    if out.status.success() {
        return Ok(if done.is_empty() {
            format!("no pending migration (all {} applied)", migrations.len())
        } else {
            format!("applied {}: {}", done.len(), done.join(", "))
        });
    }
    // The migration that was running: started, not done.
    let running = lines
        .iter()
        .rev()
        .find_map(|l| version(M_START, l))
        .filter(|v| !lines.iter().any(|l| version(M_DONE, l) == Some(*v)))
        .and_then(name_of);
    let what = match running {
        Some(m) => format!("migration {}", m.file.display()),
        None => "the migration session (before any migration ran)".to_string(),
    };
    // The error without the lines that quote rows (a migration's UPDATE failing a constraint).
    let stderr = crate::host::without_row_data(&out.stderr_str());
    match (out.status.code(), out.status.signal()) {
        (None, Some(sig)) => Err(Error::unavailable(format!(
            "{what} did not finish: psql was killed by signal {sig}{}; its transaction was rolled back \
             by the server{applied_note}. The migration itself did not fail",
            signal_name(sig)
        ))),
        // psql: 2 = the connection to the server went bad.
        (Some(2), _) => Err(Error::unavailable(format!(
            "{what} did not finish: the database went away (psql lost its connection){applied_note}: {}",
            stderr.trim()
        ))),
        _ => Err(Error::failed(format!(
            "{what} failed and was rolled back{applied_note}: {}",
            stderr.trim()
        ))),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        1 => " (SIGHUP)",
        2 => " (SIGINT)",
        9 => " (SIGKILL)",
        15 => " (SIGTERM)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        assert_eq!(
            parse_file_name("0002_add_status.sql"),
            Some((2, "0002_add_status".into()))
        );
        for bad in [
            "2_x.sql",
            "0002.sql",
            "0002_.sql",
            "0002_Add.sql",
            "0002_a-b.sql",
            "0002_a'b.sql",
            "abcd_x.sql",
        ] {
            assert_eq!(parse_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn repo_migrations_are_in_order_and_scripts_record_them() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/migrations");
        let ms = discover(&dir).unwrap();
        assert!(ms.len() >= 2);
        assert!(ms.windows(2).all(|w| w[0].version < w[1].version));
        let s = migration_script(&ms[0], "SELECT 1");
        assert!(
            s.ends_with("VALUES (1, '0001_create_core_tables');\n"),
            "{s}"
        );
    }

    #[test]
    fn the_session_takes_the_advisory_lock_before_anything_and_checks_each_version_under_it() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/migrations");
        let ms: Vec<(Migration, String)> = discover(&dir)
            .unwrap()
            .into_iter()
            .map(|m| (m, "SELECT 1;".to_string()))
            .collect();
        let s = session_script(&ms, "abc1234");
        let lock = s
            .find("pg_try_advisory_lock(2020893043, 1835624306)")
            .unwrap();
        assert!(
            lock < s
                .find("CREATE TABLE IF NOT EXISTS schema_migrations")
                .unwrap()
        );
        assert!(
            s.contains("\\gset\n\\if :xtask_locked\n\\else\n\\echo XTASK_MIGRATION_LOCK_HELD\n")
        );
        assert!(s.contains("SET application_name = 'xtask migrate abc1234';"));
        assert!(s.contains("WHERE version = 2) AS xtask_pending \\gset\n\\if :xtask_pending\n\\echo XTASK_MIGRATION_START 2\nBEGIN;\nSELECT 1;"));
        assert_eq!(s.matches("BEGIN;").count(), ms.len());
        assert_eq!(s.matches("COMMIT;").count(), ms.len());
    }

    #[test]
    fn a_failing_migration_command_is_a_failed_step_whatever_its_exit_code() {
        let envs = crate::environments::testing::repo_at(Path::new("/repo"));
        let run = |code: u8| {
            Cmd::new("sh")
                .args(["-c", &format!("echo boom >&2; exit {code}")])
                .output()
                .unwrap()
        };
        for name in ["local", "staging"] {
            let host = Host::planned(envs.get(name).unwrap()).unwrap();
            for code in [1, 2, 3] {
                let e = command_result(&host, run(code)).unwrap_err();
                assert_eq!(e.exit_code(), ExitCode::Failed, "{name} exit {code}: {e}");
                assert!(e.to_string().contains("boom"), "{e}");
            }
        }
        let ssh = Host::planned(envs.get("staging").unwrap()).unwrap();
        assert_eq!(
            command_result(&ssh, run(255)).unwrap_err().exit_code(),
            ExitCode::Unavailable
        );
        assert_eq!(command_result(&ssh, run(0)).unwrap(), "");
    }

    #[test]
    fn bad_and_duplicate_files_are_input_errors() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("0001_a.sql"), "").unwrap();
        std::fs::write(d.path().join("0001_b.sql"), "").unwrap();
        assert!(matches!(discover(d.path()), Err(Error::Input { .. })));
        std::fs::remove_file(d.path().join("0001_b.sql")).unwrap();
        std::fs::write(d.path().join("1_b.sql"), "").unwrap();
        assert!(matches!(discover(d.path()), Err(Error::Input { .. })));
    }
}
