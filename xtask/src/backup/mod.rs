//! `cargo xtask backup` and `backup drill`.
//!
//! `backup` runs `infra/scripts/backup-db.sh` for an environment on its [`Host`], streams its output,
//! parses its `BACKUP_OK` line ([`result`]) and proves the upload once more from here with
//! `rclone lsjson --stat --hash`. `backup drill` ([`drill`]) restores a backup into a scratch database
//! and compares per-table row counts with the source.

pub mod drill;
pub mod label;
pub mod result;
pub mod verified;

use std::process::ExitStatus;

use crate::environments::{Environment, Environments};
use crate::error::{Error, ExitCode, Result};
use crate::host::{Host, RCLONE_FLAGS};
use crate::process::{describe, Cmd};

pub use label::Label;
pub use verified::VerifiedBackup;

/// The script, relative to the repository root and to a server environment's `remote_dir` (the
/// deploy pipeline syncs it there before it runs).
pub const SCRIPT: &str = "infra/scripts/backup-db.sh";

/// `bash backup-db.sh` on the host with the variables it documents: `direct` mode against the local
/// cluster, `compose` mode (`compose exec -T <postgres> pg_dump`) with the project as the host sees
/// it and the Compose CLI of `host`'s one decision (`BACKUP_COMPOSE_CMD`).
pub fn script_cmd(host: &Host, label: &str) -> Result<Cmd> {
    let env = host.env();
    let mut vars: Vec<(String, String)> = vec![
        ("LABEL".into(), label.to_string()),
        ("BACKUP_REMOTE".into(), env.backup.remote.clone()),
        ("BACKUP_BUCKET".into(), env.backup.bucket.clone()),
        ("BACKUP_PREFIX".into(), env.backup.prefix.clone()),
    ];
    match host.compose_project() {
        None => vars.push(("BACKUP_MODE".into(), "direct".into())),
        Some(p) => {
            vars.extend([
                ("BACKUP_MODE".to_string(), "compose".to_string()),
                ("BACKUP_COMPOSE_PROJECT".into(), p.project),
                ("BACKUP_COMPOSE_FILES".into(), p.files.join(":")),
                (
                    "BACKUP_COMPOSE_SERVICE".into(),
                    env.services.postgres.clone(),
                ),
                ("BACKUP_DB_USER".into(), env.db_user.clone()),
                ("BACKUP_DB_NAME".into(), env.database.clone()),
            ]);
            if let Some(f) = p.env_file {
                vars.push(("BACKUP_COMPOSE_ENV_FILE".into(), f));
            }
        }
    }
    host.run_file(SCRIPT, &vars, Some("BACKUP_COMPOSE_CMD"))
}

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Sub>,
    /// Environment from infra/environments.toml.
    #[arg(long, default_value = "local")]
    pub env: String,
    /// Suffix of the file name: 1-80 characters of [A-Za-z0-9._-].
    #[arg(long, default_value = "manual")]
    pub label: String,
    /// Print what would run, run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the verified object as JSON on stdout (the script's output goes to stderr).
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Subcommand, Debug)]
pub enum Sub {
    /// Restore a backup (default: the newest) into a scratch database and compare row counts.
    Drill(drill::Args),
}

pub fn run(args: Args) -> Result<ExitCode> {
    if let Some(Sub::Drill(d)) = args.command {
        return drill::run(d);
    }
    // The label is checked before anything else is read or run.
    let label = Label::parse(&args.label)?;
    let envs = Environments::load()?;
    let env = envs.get(&args.env)?;
    let host = Host::of(env)?;
    if args.dry_run {
        let cmd = script_cmd(&host, label.as_str())?;
        let object = format!(
            "{}/YYYYMM/station_backup_YYYYmmdd_HHMMSS_{}.sql.gz",
            env.backup.base(),
            label
        );
        if args.json {
            let v =
                serde_json::json!({"dry_run": true, "command": cmd.display(), "object": object});
            println!("{v}");
        } else {
            println!("would run: {}", cmd.display());
            println!("would upload: {object}");
        }
        return Ok(ExitCode::Ok);
    }
    let obj = create_with(env, &host, &label, args.json)?;
    if args.json {
        println!("{}", serde_json::to_string(&obj).expect("serializable"));
    } else {
        println!(
            "backup ok: {} ({} bytes, {} {})",
            obj.path, obj.size, obj.hash_type, obj.hash
        );
    }
    Ok(ExitCode::Ok)
}

/// An object in the backup remote.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RemoteObject {
    /// `<remote>:<bucket>/<prefix>/YYYYMM/station_backup_<ts>_<label>.sql.gz`
    pub path: String,
    pub size: u64,
    /// Hex digest and its kind (`md5`, `sha1`), as rclone reports it for the remote.
    pub hash: String,
    pub hash_type: String,
}

/// Run `infra/scripts/backup-db.sh` for the environment with the label, streaming its output, and
/// return the uploaded object (already verified by the script against the local file).
/// The script's output goes to our stderr, so a caller's stdout (e.g. `deploy --json`) stays clean.
pub fn create(env: &Environment, label: &Label) -> Result<RemoteObject> {
    let host = Host::of(env)?;
    create_with(env, &host, label, true)
}

fn create_with(
    env: &Environment,
    host: &Host,
    label: &Label,
    quiet_stdout: bool,
) -> Result<RemoteObject> {
    let cmd = script_cmd(host, label.as_str())?;
    let (status, out, err) = cmd.stream(quiet_stdout)?;
    if !status.success() {
        return Err(script_error(env, host.remote().is_some(), status, &err));
    }
    let obj = result::find_ok(&out)?;
    // Prove it once more from here: the object is where the script says, with that size and hash.
    match stat(env, &obj.path)? {
        Some(seen)
            if seen.size == obj.size
                && (seen.hash_type != obj.hash_type || seen.hash == obj.hash) =>
        {
            Ok(obj)
        }
        Some(seen) => Err(Error::failed(format!(
            "{} on the remote has size {} and {} {:?}, but the script uploaded {} bytes with {} {}",
            obj.path, seen.size, seen.hash_type, seen.hash, obj.size, obj.hash_type, obj.hash
        ))),
        None => Err(Error::failed(format!(
            "backup-db.sh reported {} but it is not on the remote",
            obj.path
        ))),
    }
}

/// Map the script's (or ssh's) exit status to our exit codes, naming the failed stage.
fn script_error(
    env: &Environment,
    unreachable: bool,
    status: ExitStatus,
    stderr: &[String],
) -> Error {
    let what = match result::failure(stderr) {
        Some((stage, msg)) => format!("backup of `{}` failed at stage `{stage}`: {msg}", env.name),
        None => format!(
            "backup of `{}`: backup-db.sh {}",
            env.name,
            describe(status)
        ),
    };
    match status.code() {
        Some(2) => Error::usage(what),
        Some(3) => Error::unavailable(what),
        Some(255) if unreachable => {
            Error::unavailable(format!("{what} (ssh could not connect or run the script)"))
        }
        _ => Error::failed(format!(
            "{what}; no backup was made, nothing may be migrated"
        )),
    }
}

/// Check a remote object path: `<remote>:` of this environment, no whitespace or control characters.
fn check_path(env: &Environment, path: &str) -> Result<()> {
    let prefix = format!("{}:", env.backup.remote);
    if !path.starts_with(&prefix)
        || path.contains("..")
        || path
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "'\"`$;\\".contains(c))
    {
        return Err(Error::usage(format!(
            "{path:?} is not an object of remote `{}` (expected {}/YYYYMM/station_backup_...sql.gz)",
            env.backup.remote,
            env.backup.base()
        )));
    }
    Ok(())
}

fn rclone_args(first: &[&str], hash_type: &str, target: &str) -> Vec<String> {
    let mut a: Vec<String> = first.iter().map(|s| s.to_string()).collect();
    a.extend(["--hash-type".to_string(), hash_type.to_string()]);
    a.extend(RCLONE_FLAGS.iter().map(|s| s.to_string()));
    a.push(target.to_string());
    a
}

fn rclone_failed(env: &Environment, what: &str, o: &crate::process::Output) -> Error {
    Error::unavailable(format!(
        "`rclone {what}` on remote `{}` {}: {}",
        env.backup.remote,
        describe(o.status),
        o.stderr_str()
            .lines()
            .filter(|l| !l.contains("Config file") && !l.trim().is_empty())
            .collect::<Vec<_>>()
            .join(" | ")
    ))
}

/// Size and hash of one remote object, `None` when it does not exist.
pub fn stat(env: &Environment, path: &str) -> Result<Option<RemoteObject>> {
    check_path(env, path)?;
    let host = Host::of(env)?;
    let mut last = None;
    for ht in ["md5", "sha1"] {
        let o = host
            .rclone(&rclone_args(&["lsjson", "--stat"], ht, path))
            .output()?;
        match o.status.code() {
            Some(0) => {}
            Some(3 | 4) => return Ok(None),
            _ => return Err(rclone_failed(env, "lsjson --stat", &o)),
        }
        let obj = result::parse_stat(&o.stdout_str(), path, ht)?;
        if !obj.hash.is_empty() {
            return Ok(Some(obj));
        }
        last = Some(obj);
    }
    Ok(last)
}

/// All backup objects of the environment, oldest first.
pub fn list(env: &Environment) -> Result<Vec<RemoteObject>> {
    let host = Host::of(env)?;
    list_with(env, &host)
}

fn list_with(env: &Environment, host: &Host) -> Result<Vec<RemoteObject>> {
    let base = env.backup.base();
    let mut last = Vec::new();
    for ht in ["md5", "sha1"] {
        let o = host
            .rclone(&rclone_args(&["lsjson", "-R", "--files-only"], ht, &base))
            .output()?;
        match o.status.code() {
            Some(0) => {}
            // The bucket or folder does not exist yet: no backups.
            Some(3) => return Ok(Vec::new()),
            _ => return Err(rclone_failed(env, "lsjson -R", &o)),
        }
        let objs = result::parse_list(&o.stdout_str(), &base, ht)?;
        if objs.iter().all(|o| !o.hash.is_empty()) {
            return Ok(objs);
        }
        last = objs;
    }
    Ok(last)
}
