//! `cargo xtask compose apply|check`: the compose engine.
//!
//! Layout: [`yaml`] (the shared span-preserving tree, `crate::yaml`), [`shell`] (word splitting with
//! byte maps), [`model`] (the redis service: command, server arguments, mounts, [`RedisFacts`]),
//! [`edit`] (apply: byte edits, re-parse, verify), [`check`] (findings). All of those are pure;
//! this file does the I/O: reading files, atomic writes, printing.

pub mod carry;
pub mod check;
pub mod edit;
pub mod model;
pub mod shell;
/// The YAML tree is shared (`crate::yaml`, also used by `ci check`); re-exported here for the
/// compose engine's callers.
pub use crate::yaml;

use std::io::Write;
use std::path::{Path, PathBuf};

pub use model::RedisFacts;

use crate::environments::{Environment, Environments};
use crate::error::{Error, ExitCode, Result};
use crate::process::quote_words;

#[derive(clap::Subcommand, Debug)]
pub enum Args {
    /// Make compose files durable: AOF with `appendfsync everysec`, data volume `*_aof` at /data.
    Apply(ApplyArgs),
    /// Check compose files (the CI gate): exit 1 with one `file:line:col: message` per finding.
    Check(CheckArgs),
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct Targets {
    /// An environment from infra/environments.toml (its compose file and redis service). Repeatable.
    #[arg(long = "env", value_name = "NAME")]
    pub envs: Vec<String>,
    /// A compose file; its redis service is found by name, image or command. Repeatable.
    #[arg(long = "file", value_name = "PATH")]
    pub files: Vec<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub targets: Targets,
    /// Print a unified diff and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Rename the /data volume OLD to NEW instead of the `*_data` -> `*_aof` rule. Repeatable.
    #[arg(long = "rename", value_name = "OLD=NEW", value_parser = parse_rename)]
    pub renames: Vec<(String, String)>,
    /// Compose project name for the printed volume commands (default: the environment's, the
    /// file's `name:`, or its directory name).
    #[arg(long, value_name = "NAME")]
    pub project: Option<String>,
    /// Image for the printed data-copy command (default: the redis service's image).
    #[arg(long, value_name = "IMAGE")]
    pub helper_image: Option<String>,
    /// Env file for the printed `docker compose` commands of a `--file` target (the variables its
    /// `${VAR:?}` interpolations need).
    #[arg(long, value_name = "PATH")]
    pub env_file: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    pub targets: Targets,
    /// Print findings as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

fn parse_rename(s: &str) -> std::result::Result<(String, String), String> {
    let (o, n) = s
        .split_once('=')
        .ok_or_else(|| format!("expected OLD=NEW, got {s:?}"))?;
    let ok = |v: &str| {
        !v.is_empty()
            && v.bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
    };
    if !ok(o) || !ok(n) {
        return Err(format!(
            "volume names are letters, digits, `_`, `-`, `.`: {s:?}"
        ));
    }
    Ok((o.to_string(), n.to_string()))
}

/// One file to work on.
#[derive(Clone, Debug)]
pub struct Target {
    pub file: PathBuf,
    /// The redis service name, when an environment names it.
    pub service: Option<String>,
    pub env: Option<Environment>,
}

fn resolve(t: &Targets) -> Result<Vec<Target>> {
    let mut out: Vec<Target> = Vec::new();
    let envs = if t.files.is_empty() || !t.envs.is_empty() {
        Some(Environments::load()?)
    } else {
        None
    };
    let from_env = |e: &Environment| Target {
        file: e.compose_file.clone(),
        service: Some(e.services.redis.clone()),
        env: Some(e.clone()),
    };
    if let Some(envs) = &envs {
        if t.envs.is_empty() && t.files.is_empty() {
            out.extend(envs.deployed().map(from_env));
        }
        for name in &t.envs {
            out.push(from_env(envs.get(name)?));
        }
    }
    for f in &t.files {
        out.push(Target {
            file: f.clone(),
            service: None,
            env: None,
        });
    }
    // One entry per file (e.g. `local` and `production` share a file): the first one wins.
    let mut seen = std::collections::HashSet::new();
    out.retain(|t| seen.insert(std::path::absolute(&t.file).unwrap_or_else(|_| t.file.clone())));
    Ok(out)
}

fn read_text(file: &Path) -> Result<String> {
    let bytes = std::fs::read(file).map_err(|e| Error::read(file, e))?;
    let text = yaml::decode(&bytes)
        .map_err(|e| Error::input(file, e.at.line, e.at.col, e.message))?
        .to_string();
    Ok(text)
}

fn input(file: &Path, a: model::At) -> Error {
    Error::input(file, a.at.line, a.at.col, a.message)
}

pub fn run(args: Args) -> Result<ExitCode> {
    match args {
        Args::Apply(a) => run_apply(a),
        Args::Check(a) => run_check(a),
    }
}

/// The Compose project name: `--project`, the environment's, the file's `name:`, the directory.
pub fn project_name(
    explicit: Option<&str>,
    env: Option<&Environment>,
    top_name: Option<&str>,
    file: &Path,
) -> String {
    if let Some(p) = explicit {
        return p.to_string();
    }
    if let Some(e) = env {
        return e.compose_project.clone();
    }
    if let Some(n) = top_name.filter(|n| !n.is_empty() && !n.contains('$')) {
        return n.to_string();
    }
    let dir = std::path::absolute(file)
        .ok()
        .and_then(|p| {
            p.parent()
                .and_then(|d| d.file_name())
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    // Compose: lowercase, only [a-z0-9_-], starting with a letter or digit.
    let s: String = dir
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-')
        .collect();
    s.trim_start_matches(['_', '-']).to_string()
}

/// The lines printed after a volume rename. Machine-extractable: the commands to carry the data are
/// the lines starting with two spaces right after the line `To carry the data:`.
pub fn carry_instructions(
    target: &Target,
    applied: &edit::Applied,
    rename: &edit::Rename,
    project: &str,
    helper_image: Option<&str>,
    env_file: Option<&Path>,
) -> Vec<String> {
    let old_real = rename
        .explicit_name
        .clone()
        .unwrap_or_else(|| format!("{project}_{}", rename.old));
    let new_real = rename
        .explicit_name
        .clone()
        .unwrap_or_else(|| format!("{project}_{}", rename.new));
    let file = std::path::absolute(&target.file)
        .unwrap_or_else(|_| target.file.clone())
        .display()
        .to_string();
    let mut lines = vec![format!(
        "{file}: the redis data volume is renamed {} -> {} (Docker volume {old_real} -> {new_real}).",
        rename.old, rename.new
    )];
    if old_real == new_real {
        lines.push(format!(
            "The volume keeps its Docker name `{old_real}` (set by `name:`): no data to carry."
        ));
        return lines;
    }
    let image = helper_image
        .map(str::to_string)
        .or_else(|| applied.image.clone().filter(|i| !i.contains('$')))
        .unwrap_or_else(|| "busybox".into());
    let compose: Vec<String> = match &target.env {
        // On a remote host: the files are in remote_dir, under their repository-relative paths.
        Some(e) if e.remote_dir.is_some() => {
            let dir = e
                .remote_dir
                .as_deref()
                .unwrap_or_default()
                .trim_end_matches('/');
            let mut v: Vec<String> = ["docker", "compose", "-p", project, "-f"]
                .map(String::from)
                .to_vec();
            v.push(format!("{dir}/{}", e.compose_file_rel.display()));
            if let Some(env_file) = &e.env_file_rel {
                v.push("--env-file".into());
                v.push(format!("{dir}/{}", env_file.display()));
            }
            v
        }
        Some(e) => {
            let mut v = vec!["docker".to_string(), "compose".to_string()];
            let mut args = e.compose_args();
            args[1] = project.to_string();
            v.extend(args);
            v
        }
        None => {
            let mut v: Vec<String> = vec![
                "docker".into(),
                "compose".into(),
                "-p".into(),
                project.into(),
                "-f".into(),
                file.clone(),
            ];
            if let Some(f) = env_file {
                v.push("--env-file".into());
                v.push(
                    std::path::absolute(f)
                        .unwrap_or_else(|_| f.to_path_buf())
                        .display()
                        .to_string(),
                );
            }
            v
        }
    };
    lines.push(format!(
        "`docker volume rename` does not exist, and `docker compose up` would otherwise silently create `{new_real}` empty."
    ));
    if let Some(e) = target.env.as_ref().filter(|e| e.remote_dir.is_some()) {
        lines.push(format!(
            "Run these on the `{}` host (files in {}).",
            e.name,
            e.remote_dir.as_deref().unwrap_or_default()
        ));
    }
    let carry = carry::Carry {
        compose: &compose,
        project,
        service: &applied.service,
        old_volume: &old_real,
        new_volume: &new_real,
        new_key: &rename.new,
        image: &image,
    };
    lines.push("To carry the data:".into());
    for c in carry::commands(&carry) {
        lines.push(format!("  {}", quote_words(&c)));
    }
    lines.push(format!(
        "Then start it: {}",
        quote_words(&carry::start(&carry))
    ));
    lines.push(format!(
        "Or start empty instead (Redis is a cache: its data is rebuilt, nothing else is lost): skip the copy; `up` creates `{new_real}` empty. Once the new volume works, `docker volume rm {old_real}` frees the old one."
    ));
    lines
}

fn run_apply(a: ApplyArgs) -> Result<ExitCode> {
    let targets = resolve(&a.targets)?;
    // Plan every file first: nothing is written unless every file is fine.
    let mut planned = Vec::new();
    for t in &targets {
        let text = read_text(&t.file)?;
        let applied =
            edit::apply(&text, t.service.as_deref(), &a.renames).map_err(|e| input(&t.file, e))?;
        planned.push((t, text, applied));
    }
    for (old, new) in &a.renames {
        // Used when some file mounts OLD at /data, or already NEW (a second run).
        let used = planned.iter().any(|(t, text, _)| {
            let v = redis_data_volume_text(text, t.service.as_deref())
                .ok()
                .flatten();
            v.as_deref() == Some(old) || v.as_deref() == Some(new)
        });
        if !used {
            return Err(Error::usage(format!(
                "--rename {old}=...: no redis service mounts a volume `{old}` at /data in the given files"
            )));
        }
    }
    let mut out = std::io::stdout().lock();
    for (t, text, applied) in &planned {
        let file = t.file.display().to_string();
        if applied.text == *text {
            let what = if applied.notes.is_empty() {
                "already durable"
            } else {
                "nothing apply can change"
            };
            let _ = writeln!(
                out,
                "{file}: {what} (service `{}`), nothing written",
                applied.service
            );
            for n in &applied.notes {
                let _ = writeln!(out, "{file}: note: {n}");
            }
            continue;
        }
        if a.dry_run {
            let diff = similar::TextDiff::from_lines(text.as_str(), applied.text.as_str());
            let shown = diff
                .unified_diff()
                .context_radius(3)
                .header(&file, &file)
                .to_string();
            for line in shown.split_inclusive('\n') {
                let _ = write!(out, "{}", model::redact(line));
            }
            let _ = writeln!(out, "{file}: dry run, nothing written");
        } else {
            crate::files::write_atomic(
                &t.file,
                applied.text.as_bytes(),
                crate::files::Mode::Keep { new: None },
            )?;
            let _ = writeln!(out, "{file}: made durable (service `{}`):", applied.service);
            for c in &applied.changes {
                let _ = writeln!(out, "  {file}:{c}");
            }
        }
        for n in &applied.notes {
            let _ = writeln!(out, "{file}: note: {n}");
        }
        if let Some(r) = &applied.rename {
            let project = project_name(
                a.project.as_deref(),
                t.env.as_ref(),
                applied.project_name.as_deref(),
                &t.file,
            );
            let _ = writeln!(out);
            for l in carry_instructions(
                t,
                applied,
                r,
                &project,
                a.helper_image.as_deref(),
                a.env_file.as_deref(),
            ) {
                let _ = writeln!(out, "{l}");
            }
            let _ = writeln!(out);
        }
    }
    Ok(ExitCode::Ok)
}

#[derive(serde::Serialize)]
struct JsonFinding<'a> {
    file: String,
    #[serde(flatten)]
    f: &'a check::Finding,
}

/// Findings for the targets (with the file each is in) and the files checked. Pure of output: the
/// CLI renders them; `deploy` prints them to stderr so its `--json` stdout stays clean.
pub fn findings(targets: &Targets) -> Result<Checked> {
    let targets = resolve(targets)?;
    let mut seen = std::collections::HashSet::new();
    let mut findings: Vec<(PathBuf, check::Finding)> = Vec::new();
    let mut snaps: Vec<(Option<String>, PathBuf, check::Snapshot)> = Vec::new();
    let mut files = Vec::new();
    for t in &targets {
        if !seen.insert((t.file.clone(), t.service.clone())) {
            continue;
        }
        let text = read_text(&t.file)?;
        let (fs, snap) =
            check::check_text(&text, t.service.as_deref()).map_err(|e| input(&t.file, e))?;
        findings.extend(fs.into_iter().map(|f| (t.file.clone(), f)));
        if let Some(s) = snap {
            snaps.push((t.env.as_ref().map(|e| e.name.clone()), t.file.clone(), s));
        }
        files.push(t.file.display().to_string());
    }
    let by_env = |n: &str| snaps.iter().find(|(e, _, _)| e.as_deref() == Some(n));
    if let (Some(p), Some(s)) = (by_env("production"), by_env("staging")) {
        findings.extend(
            check::mirror(&p.2, &s.2)
                .into_iter()
                .map(|f| (s.1.clone(), f)),
        );
    }
    Ok(Checked { findings, files })
}

/// What `compose check` found: each finding with its file, and the files checked.
#[derive(Debug)]
pub struct Checked {
    pub findings: Vec<(PathBuf, check::Finding)>,
    pub files: Vec<String>,
}

/// `file:line:col: message [rule]`
pub fn finding_line(file: &Path, f: &check::Finding) -> String {
    format!(
        "{}:{}:{}: {} [{}]",
        file.display(),
        f.line,
        f.col,
        f.message,
        f.rule
    )
}

fn run_check(a: CheckArgs) -> Result<ExitCode> {
    let Checked { findings, files } = findings(&a.targets)?;
    let mut out = std::io::stdout().lock();
    if a.json {
        let list: Vec<JsonFinding> = findings
            .iter()
            .map(|(file, f)| JsonFinding {
                file: file.display().to_string(),
                f,
            })
            .collect();
        let doc =
            serde_json::json!({ "ok": findings.is_empty(), "files": files, "findings": list });
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&doc).unwrap_or_default()
        );
    } else {
        for (file, f) in &findings {
            let _ = writeln!(out, "{}", finding_line(file, f));
        }
        if findings.is_empty() {
            let _ = writeln!(out, "compose check: ok ({})", files.join(", "));
        } else {
            eprintln!(
                "compose check: {} finding(s); `cargo xtask compose apply` fixes AOF and the volume name",
                findings.len()
            );
        }
    }
    Ok(if findings.is_empty() {
        ExitCode::Ok
    } else {
        ExitCode::Failed
    })
}

fn parse_for(file: &Path, text: &str) -> Result<yaml::Doc> {
    let doc = yaml::parse(text).map_err(|e| Error::input(file, e.at.line, e.at.col, e.message))?;
    if let Some(i) = doc.issues.first() {
        return Err(Error::input(file, i.at.line, i.at.col, i.message.clone()));
    }
    Ok(doc)
}

fn redis_data_volume_text(
    text: &str,
    service: Option<&str>,
) -> std::result::Result<Option<String>, model::At> {
    let doc = yaml::parse(text).map_err(|e| model::at(e.at, e.message))?;
    model::data_volume(text, &model::find_redis(text, &doc.root, service)?)
}

/// [`RedisFacts`] of the service `service` in `text` (pure; `file` only names errors).
pub fn redis_facts_text(file: &Path, text: &str, service: Option<&str>) -> Result<RedisFacts> {
    let doc = parse_for(file, text)?;
    let svc = model::find_redis(text, &doc.root, service).map_err(|e| input(file, e))?;
    model::facts(text, &svc).map_err(|e| input(file, e))
}

/// [`RedisFacts`] of the redis service `service` in `compose_file`.
pub fn redis_facts(compose_file: &Path, service: &str) -> Result<RedisFacts> {
    let text = read_text(compose_file)?;
    redis_facts_text(compose_file, &text, Some(service))
}

/// The redis-server arguments of the redis service `service` in `compose_file`, as redis-server
/// would receive them, without a leading config-file path and without password options
/// (e.g. `["--appendonly", "yes", "--appendfsync", "everysec"]`).
pub fn redis_server_args(compose_file: &Path, service: &str) -> Result<Vec<String>> {
    Ok(redis_facts(compose_file, service)?.server_args)
}

/// The named volume the redis service mounts at `/data` (e.g. `redis_aof`), if any.
pub fn redis_data_volume(compose_file: &Path, service: &str) -> Result<Option<String>> {
    let text = read_text(compose_file)?;
    let doc = parse_for(compose_file, &text)?;
    let svc =
        model::find_redis(&text, &doc.root, Some(service)).map_err(|e| input(compose_file, e))?;
    model::data_volume(&text, &svc).map_err(|e| input(compose_file, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_file(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .join(name)
    }

    #[test]
    fn contracts_on_our_files() {
        for (f, vol) in [
            ("docker-compose.prod.yml", "redis_aof"),
            ("docker-compose.staging.yml", "redis_staging_aof"),
        ] {
            let p = repo_file(f);
            assert_eq!(
                redis_server_args(&p, "redis").unwrap(),
                ["--appendonly", "yes", "--appendfsync", "everysec"]
            );
            assert_eq!(
                redis_data_volume(&p, "redis").unwrap().as_deref(),
                Some(vol)
            );
            let facts = redis_facts(&p, "redis").unwrap();
            assert!(facts.via_shell);
            assert_eq!(facts.image.as_deref(), Some("redis:7.2-alpine"));
        }
    }

    #[test]
    fn project_name_rules() {
        let f = Path::new("/tmp/My App/docker-compose.yml");
        assert_eq!(project_name(Some("p"), None, Some("n"), f), "p");
        assert_eq!(project_name(None, None, Some("n"), f), "n");
        assert_eq!(project_name(None, None, None, f), "myapp");
    }
}
