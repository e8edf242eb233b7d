//! `cargo xtask backup` and `backup drill`.
//!
//! `backup` runs `infra/scripts/backup-db.sh` for an environment on its [`Host`], streams its output,
//! parses its `BACKUP_OK` line ([`result`]) and proves the upload once more from here with
//! `rclone lsjson --stat --hash`, then reads the manifest the script uploaded beside the dump
//! ([`manifest`]) and checks that it describes that dump. `backup drill` ([`drill`]) restores a backup
//! into a scratch database and compares per-table row counts and the newest migration with its manifest.

pub mod drill;
pub mod label;
pub mod manifest;
pub mod prune;
pub mod result;
pub mod schedule;
pub mod status;
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
pub fn script_cmd(host: &Host, label: &str, git_sha: Option<&str>) -> Result<Cmd> {
    let vars = script_vars(host, label, git_sha);
    host.run_file(SCRIPT, &vars, Some("BACKUP_COMPOSE_CMD"))
}

/// The variables `backup-db.sh` gets on `host` (see [`script_cmd`]; `backup schedule` writes them
/// into the nightly job's environment file).
pub fn script_vars(host: &Host, label: &str, git_sha: Option<&str>) -> Vec<(String, String)> {
    let env = host.env();
    let mut vars: Vec<(String, String)> = vec![
        ("LABEL".into(), label.to_string()),
        ("BACKUP_REMOTE".into(), env.backup.remote.clone()),
        ("BACKUP_BUCKET".into(), env.backup.bucket.clone()),
        ("BACKUP_PREFIX".into(), env.backup.prefix.clone()),
    ];
    if let Some(g) = git_sha {
        vars.push(("BACKUP_GIT_SHA".into(), g.to_string()));
    }
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
    vars
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
    /// Freshness, manifest and size of the newest backup per label class; exit 1 on a bad nightly.
    Status(status::Args),
    /// Thin the bucket (restic-forget style): a dry run printing keep/delete and the rule, `--apply` deletes.
    Prune(prune::Args),
    /// Install (or `--remove`) the nightly backup job on the environment's host: systemd timer or cron.
    Schedule(schedule::Args),
}

pub fn run(args: Args) -> Result<ExitCode> {
    match args.command {
        Some(Sub::Drill(d)) => return drill::run(d),
        Some(Sub::Status(a)) => return status::run(a),
        Some(Sub::Prune(a)) => return prune::run(a),
        Some(Sub::Schedule(a)) => return schedule::run(a),
        None => {}
    }
    // `--json`: one document on stdout on every path; a failure gets the short one of
    // `error::JsonFailure` with what is known of the backup (its label, the object once the
    // script reported it, its manifest).
    let (json, env_name) = (args.json, args.env.clone());
    let mut p = Progress::default();
    let r = run_backup(args, &mut p);
    if let (true, Err(e)) = (json, &r) {
        let mut extra = serde_json::json!({ "label": p.label });
        if let Some(path) = &p.path {
            extra["path"] = path.clone().into();
        }
        if let Some(m) = &p.manifest {
            extra["manifest"] = m.clone().into();
        }
        println!("{}", e.json_failure_with(Some(&env_name), &p.step, extra));
    }
    r
}

/// How far `backup` got: the step running (the script's own stage when it failed there) and what
/// is known of the backup.
#[derive(Debug)]
pub struct Progress {
    pub step: String,
    pub label: Option<String>,
    pub path: Option<String>,
    pub manifest: Option<String>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            step: "input".into(),
            label: None,
            path: None,
            manifest: None,
        }
    }
}

fn run_backup(args: Args, p: &mut Progress) -> Result<ExitCode> {
    // The label is checked before anything else is read or run.
    let label = Label::parse(&args.label)?;
    p.label = Some(label.as_str().to_string());
    let envs = Environments::load()?;
    let env = envs.get(&args.env)?;
    let host = Host::of(env)?;
    if args.dry_run {
        let cmd = script_cmd(&host, label.as_str(), None)?;
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
    let c = create_with(env, &host, &label, None, args.json, p)?;
    if args.json {
        let mut v = serde_json::to_value(&c.object).expect("serializable");
        v["sha256"] = c.manifest.sha256.clone().into();
        v["manifest"] = c.manifest_path.clone().into();
        println!("{v}");
    } else {
        let obj = &c.object;
        println!(
            "backup ok: {} ({} bytes, {} {})",
            obj.path, obj.size, obj.hash_type, obj.hash
        );
        println!(
            "manifest ok: {} ({} tables, {} rows, newest migration {})",
            c.manifest_path,
            c.manifest.tables.len(),
            c.manifest.total_rows(),
            c.manifest.newest_migration.as_deref().unwrap_or("none")
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

/// A backup just made: the verified dump object and its verified manifest.
#[derive(Clone, Debug)]
pub struct Created {
    pub object: RemoteObject,
    pub manifest: manifest::Manifest,
    /// `<object path>.json`
    pub manifest_path: String,
}

/// Run `infra/scripts/backup-db.sh` for the environment with the label, streaming its output, and
/// return the uploaded object (already verified by the script against the local file).
/// The script's output goes to our stderr, so a caller's stdout (e.g. `deploy --json`) stays clean.
pub fn create(env: &Environment, label: &Label) -> Result<RemoteObject> {
    create_for(env, label, None).map(|c| c.object)
}

/// [`create`] recording `git_sha` (40 lowercase hex, e.g. the release a deploy rolls out) in the
/// manifest, and returning the manifest too.
pub fn create_for(env: &Environment, label: &Label, git_sha: Option<&str>) -> Result<Created> {
    let host = Host::of(env)?;
    create_with(env, &host, label, git_sha, true, &mut Progress::default())
}

fn create_with(
    env: &Environment,
    host: &Host,
    label: &Label,
    git_sha: Option<&str>,
    quiet_stdout: bool,
    p: &mut Progress,
) -> Result<Created> {
    p.step = "input".into();
    if let Some(g) = git_sha {
        if g.len() != 40
            || !g
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(Error::usage(format!(
                "git SHA {g:?} for the backup manifest: 40 lowercase hex characters expected"
            )));
        }
    }
    let cmd = script_cmd(host, label.as_str(), git_sha)?;
    p.step = "script".into();
    let (status, out, err) = cmd.stream(quiet_stdout)?;
    if !status.success() {
        if let Some((stage, _)) = result::failure(&err) {
            p.step = stage.to_string();
        }
        return Err(script_error(env, host.remote().is_some(), status, &err));
    }
    let ok = result::find_ok(&out)?;
    let obj = ok.object;
    // Proved once more from here (below): the object, then its manifest.
    p.step = "verify".into();
    p.path = Some(obj.path.clone());
    p.manifest = ok.manifest.clone();
    // Prove it once more from here: the object is where the script says, with that size and hash,
    // and so is its manifest (one listing for both).
    let (dump, listed_manifest) = stat_with_manifest(env, host, &obj.path)?;
    match dump {
        Some(seen)
            if seen.size == obj.size
                && (seen.hash_type != obj.hash_type || seen.hash == obj.hash) => {}
        Some(seen) => {
            return Err(Error::failed(format!(
            "{} on the remote has size {} and {} {:?}, but the script uploaded {} bytes with {} {}",
            obj.path, seen.size, seen.hash_type, seen.hash, obj.size, obj.hash_type, obj.hash
        )))
        }
        None => {
            return Err(Error::failed(format!(
                "backup-db.sh reported {} but it is not on the remote",
                obj.path
            )))
        }
    }
    // And its manifest: there, parseable, and describing exactly this dump.
    let (Some(manifest_path), Some(sha256)) = (ok.manifest, ok.sha256) else {
        return Err(Error::failed(format!(
            "backup-db.sh uploaded {} but reported no manifest: the script on `{}` predates manifests \
             (sync infra/scripts/backup-db.sh, e.g. with a deploy) and this backup counts as failed",
            obj.path, env.name
        )));
    };
    let missing = || {
        Error::failed(format!(
            "backup-db.sh reported {manifest_path} but it is not on the remote"
        ))
    };
    p.step = "manifest".into();
    let listed_manifest = listed_manifest.ok_or_else(missing)?;
    let (m, bytes) = read_manifest_with(env, host, &obj.path)?.ok_or_else(missing)?;
    if bytes != listed_manifest.size {
        return Err(Error::failed(format!(
            "{manifest_path}: read {bytes} bytes, the remote lists {}",
            listed_manifest.size
        )));
    }
    m.check_dump(&obj.path, obj.size, Some(&sha256))?;
    if m.label != label.as_str() || m.git_sha.as_deref() != git_sha {
        return Err(Error::failed(format!(
            "{manifest_path} says label {:?} and git SHA {:?}, expected {:?} and {:?}",
            m.label,
            m.git_sha,
            label.as_str(),
            git_sha
        )));
    }
    Ok(Created {
        object: obj,
        manifest: m,
        manifest_path,
    })
}

/// The manifest of the dump object `object` (see [`manifest::manifest_path`]): `None` when there is
/// none (a backup made before manifests), an error (exit 1) when it is there but malformed.
pub fn read_manifest(env: &Environment, object: &str) -> Result<Option<manifest::Manifest>> {
    check_path(env, object)?;
    let host = Host::of(env)?;
    Ok(read_manifest_with(env, &host, object)?.map(|(m, _)| m))
}

/// The parsed manifest and its size in bytes (one `rclone cat`).
fn read_manifest_with(
    env: &Environment,
    host: &Host,
    object: &str,
) -> Result<Option<(manifest::Manifest, u64)>> {
    let path = manifest::manifest_path(object);
    let mut args = vec!["cat".to_string()];
    args.extend(RCLONE_FLAGS.iter().map(|s| s.to_string()));
    args.push(path.clone());
    let o = host.rclone(&args).output()?;
    match o.status.code() {
        // Not found. (A missing key can also read as an empty "directory": a manifest is never empty.)
        Some(3 | 4) => return Ok(None),
        Some(0) if o.stdout.is_empty() => return Ok(None),
        Some(0) => {}
        _ => return Err(rclone_failed(env, "cat", &o)),
    }
    let m = manifest::parse(&o.stdout_str(), &path)?;
    Ok(Some((m, o.stdout.len() as u64)))
}

/// The dump object and its manifest object as one listing of their folder shows them (`None` for
/// each one that is not there): one rclone call instead of one per object.
fn stat_with_manifest(
    env: &Environment,
    host: &Host,
    object: &str,
) -> Result<(Option<RemoteObject>, Option<RemoteObject>)> {
    check_path(env, object)?;
    let (dir, file) = object
        .rsplit_once('/')
        .filter(|(_, f)| result::BackupName::parse(f).is_some())
        .ok_or_else(|| Error::usage(format!("{object:?} is not a backup object path")))?;
    let mut last = (None, None);
    for ht in ["md5", "sha1"] {
        let mut args: Vec<String> = ["lsjson", "--files-only", "--no-mimetype", "--include"]
            .map(String::from)
            .into();
        args.push(format!("/{file}"));
        args.push("--include".into());
        args.push(format!("/{file}{}", manifest::SUFFIX));
        // The trailing `/` says "a folder": rclone's S3 backend then skips probing it as a file.
        let target = format!("{dir}/");
        let args = rclone_args(
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            ht,
            &target,
        );
        let o = host.rclone(&args).output()?;
        match o.status.code() {
            Some(0) => {}
            Some(3) => return Ok((None, None)),
            _ => return Err(rclone_failed(env, "lsjson", &o)),
        }
        let found = result::parse_dir(&o.stdout_str(), dir, ht)?;
        let pick = |p: &str| found.iter().find(|o| o.path == p).cloned();
        let dump = pick(object);
        let man = pick(&manifest::manifest_path(object));
        if dump.as_ref().is_none_or(|d| !d.hash.is_empty()) {
            return Ok((dump, man));
        }
        last = (dump, man);
    }
    Ok(last)
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

/// All backup objects of the environment, oldest first, names and sizes only (`hash` empty): no
/// `--hash`, so a backend that does not store hashes (the local one, an SFTP server) is not made
/// to read every object. For callers that check content by other means (restore: the manifest's
/// sha256 of what it downloads).
pub fn list_names(env: &Environment) -> Result<Vec<RemoteObject>> {
    let host = Host::of(env)?;
    let base = env.backup.base();
    let mut args: Vec<String> = ["lsjson", "-R", "--files-only"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(RCLONE_FLAGS.iter().map(|s| s.to_string()));
    args.push(base.clone());
    let o = host.rclone(&args).output()?;
    match o.status.code() {
        Some(0) => result::parse_list(&o.stdout_str(), &base, ""),
        Some(3) => Ok(Vec::new()),
        _ => Err(rclone_failed(env, "lsjson -R", &o)),
    }
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
