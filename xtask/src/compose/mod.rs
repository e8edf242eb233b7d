//! `cargo xtask compose apply|check`: the compose engine.
//!
//! Layout: [`yaml`] (the shared span-preserving tree, `crate::yaml`), [`shell`] (word splitting with
//! byte maps), [`model`] (the redis service: command, server arguments, mounts, [`RedisFacts`]),
//! [`edit`] (apply: byte edits, re-parse, verify), [`check`] (findings). All of those are pure;
//! this file does the I/O: reading files, atomic writes, printing.

pub mod carry;
pub mod channel;
pub mod check;
pub mod edit;
pub mod env;
pub mod model;
pub mod secrets;
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
    #[arg(long, value_name = "NAME", value_parser = parse_project)]
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
    /// Warnings fail the check too (exit 1), not only errors.
    #[arg(long)]
    pub strict: bool,
}

/// Compose's project-name rule: lowercase letters, digits, `_` and `-`, starting with a letter or
/// a digit.
pub fn valid_project_name(s: &str) -> bool {
    s.bytes()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
}

fn parse_project(s: &str) -> std::result::Result<String, String> {
    if valid_project_name(s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a Compose project name: lowercase letters, digits, `_` and `-`, starting with a letter or digit"
        ))
    }
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
    // `compose check` requires an `*_aof` volume at the data directory: a NEW it would then
    // reject is refused here rather than written.
    if !n.ends_with("_aof") || n == "_aof" {
        return Err(format!(
            "the new name must end in `_aof` (`compose check` requires an `*_aof` volume): {n:?}, e.g. `{o}={}_aof`",
            o.strip_suffix("_data").unwrap_or(o)
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

/// The most `compose`/`ci` read from one input file: real compose files are a few KB.
pub const MAX_INPUT_BYTES: u64 = 4 * 1024 * 1024;

/// Read a user-named input file, bounded: regular files only (a device such as `/dev/zero` or a
/// FIFO is refused before it is opened, so nothing blocks or grows), at most [`MAX_INPUT_BYTES`].
pub fn read_capped(file: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let not_regular = |m: &std::fs::Metadata| {
        let ft = m.file_type();
        let what = if ft.is_dir() {
            "a directory"
        } else if std::os::unix::fs::FileTypeExt::is_fifo(&ft) {
            "a FIFO"
        } else if std::os::unix::fs::FileTypeExt::is_char_device(&ft)
            || std::os::unix::fs::FileTypeExt::is_block_device(&ft)
        {
            "a device"
        } else if std::os::unix::fs::FileTypeExt::is_socket(&ft) {
            "a socket"
        } else {
            "not a regular file"
        };
        Error::usage(format!(
            "{}: cannot read: {what}, not a regular file (inputs are regular files of at most {} MiB)",
            crate::error::show_path(file),
            MAX_INPUT_BYTES / (1024 * 1024)
        ))
    };
    let m = std::fs::metadata(file).map_err(|e| Error::read(file, e))?;
    if !m.is_file() {
        return Err(not_regular(&m));
    }
    let too_big = || {
        Error::usage(format!(
            "{}: cannot read: larger than the {} MiB cap for an input file",
            crate::error::show_path(file),
            MAX_INPUT_BYTES / (1024 * 1024)
        ))
    };
    if m.len() > MAX_INPUT_BYTES {
        return Err(too_big());
    }
    let f = std::fs::File::open(file).map_err(|e| Error::read(file, e))?;
    // Swapped between the stat and the open: check what was opened.
    let m = f.metadata().map_err(|e| Error::read(file, e))?;
    if !m.is_file() {
        return Err(not_regular(&m));
    }
    let mut bytes = Vec::new();
    f.take(MAX_INPUT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::read(file, e))?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(too_big());
    }
    Ok(bytes)
}

fn read_text(file: &Path) -> Result<String> {
    let bytes = read_capped(file)?;
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

/// `compose apply` replaces only a file it may write: a read-only file (no write bit for anyone,
/// e.g. 0444) is refused, not overwritten through the directory.
fn writable(file: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let m = std::fs::metadata(file).map_err(|e| Error::read(file, e))?;
    let mode = m.permissions().mode() & 0o7777;
    if mode & 0o222 == 0 {
        return Err(Error::usage(format!(
            "{}: is read-only (mode {mode:04o}): not overwritten; make it writable (`chmod u+w`) and run again, or use --dry-run",
            crate::error::show_path(file)
        )));
    }
    Ok(())
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
    if let Some(n) = top_name.filter(|n| valid_project_name(n)) {
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
        "Or start empty instead (Redis is a cache: its data is rebuilt, nothing else is lost): skip the copy; `up` creates `{new_real}` empty. Once the new volume works, `{}` frees the old one.",
        quote_words(&["docker".to_string(), "volume".to_string(), "rm".to_string(), old_real.clone()])
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
        if applied.text != text && !a.dry_run {
            writable(&t.file)?;
        }
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
        let file = crate::error::show_path(&t.file);
        // What `compose check` would still report on the result (apply's promise is "check
        // passes" only when this is empty).
        let left: Vec<check::Finding> = check::check_text(&applied.text, Some(&applied.service))
            .map(|(fs, _)| fs.into_iter().filter(|f| f.is_error()).collect())
            .unwrap_or_default();
        let print_left = |out: &mut std::io::StdoutLock| {
            if !left.is_empty() {
                let _ = writeln!(
                    out,
                    "{file}: `compose check` still reports {} error(s) that apply cannot fix; edit these lines:",
                    left.len()
                );
                for f in &left {
                    let _ = writeln!(out, "  {}", finding_line(&t.file, f));
                }
            }
        };
        if applied.text == *text {
            let what = if applied.notes.is_empty() && left.is_empty() {
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
            print_left(&mut out);
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
            let what = if left.is_empty() {
                "made durable"
            } else {
                "edited, not yet passing `compose check`"
            };
            let _ = writeln!(out, "{file}: {what} (service `{}`):", applied.service);
            for c in &applied.changes {
                let _ = writeln!(out, "  {file}:{c}");
            }
        }
        for n in &applied.notes {
            let _ = writeln!(out, "{file}: note: {n}");
        }
        print_left(&mut out);
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
        files.push(crate::error::show_path(&t.file));
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

/// `file:line:col: message [rule]` for an error, `file:line:col: warning: message [rule]` for a
/// warning.
pub fn finding_line(file: &Path, f: &check::Finding) -> String {
    format!(
        "{}:{}:{}: {}{} [{}]",
        crate::error::show_path(file),
        f.line,
        f.col,
        if f.is_error() { "" } else { "warning: " },
        f.message,
        f.rule
    )
}

/// What `compose apply` would fix of `findings` in `file` (pure: apply's result is checked
/// again): rule names, for the closing hint; `Err` says why apply cannot edit the file.
fn apply_would_fix(
    file: &Path,
    service: Option<&str>,
    findings: &[&check::Finding],
    strict: bool,
) -> std::result::Result<Vec<&'static str>, String> {
    let text = read_text(file).map_err(|e| e.to_string())?;
    let applied = edit::apply(&text, service, &[]).map_err(|e| {
        format!(
            "{}:{}:{}: {}",
            crate::error::show_path(file),
            e.at.line,
            e.at.col,
            e.message
        )
    })?;
    let after = check::check_text(&applied.text, Some(&applied.service))
        .map(|(fs, _)| {
            fs.into_iter()
                .filter(|f| f.fails(strict))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let mut fixed: Vec<&'static str> = Vec::new();
    for f in findings {
        let before = findings.iter().filter(|g| g.rule == f.rule).count();
        let left = after.iter().filter(|g| g.rule == f.rule).count();
        if left < before && !fixed.contains(&f.rule) {
            fixed.push(f.rule);
        }
    }
    Ok(fixed)
}

fn rule_words(rule: &str) -> &str {
    match rule {
        "aof" => "AOF (`appendonly yes`)",
        "appendfsync" => "`appendfsync everysec`",
        "data-volume" => "the data volume name",
        "password-argv" => "the password on argv",
        other => other,
    }
}

/// `--json`: the findings, or on a failure before them (a file that cannot be read or parsed,
/// bad input) `error::JsonFailure` at `check` (`env`: null).
fn run_check(a: CheckArgs) -> Result<ExitCode> {
    let json = a.json;
    let mut step = "check";
    let r = run_check_in(a, &mut step);
    Error::print_json_failure(&r, json, None, step);
    r
}

fn run_check_in(a: CheckArgs, step: &mut &'static str) -> Result<ExitCode> {
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
        let ok = !findings.iter().any(|(_, f)| f.fails(a.strict));
        let doc = serde_json::json!({ "ok": ok, "files": files, "findings": list });
        *step = "";
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&doc).unwrap_or_default()
        );
    } else {
        for (file, f) in &findings {
            let _ = writeln!(out, "{}", finding_line(file, f));
        }
        let failing: Vec<&(PathBuf, check::Finding)> =
            findings.iter().filter(|(_, f)| f.fails(a.strict)).collect();
        let warnings = findings.iter().filter(|(_, f)| !f.is_error()).count();
        if failing.is_empty() {
            let w = if warnings > 0 {
                format!(", {warnings} warning(s); --strict fails on them")
            } else {
                String::new()
            };
            let _ = writeln!(out, "compose check: ok ({}{w})", files.join(", "));
        } else {
            // Name only what apply really fixes: apply each file (in memory) and check again.
            let targets = resolve(&a.targets)?;
            let mut fixes: Vec<String> = Vec::new();
            let mut cannot: Vec<String> = Vec::new();
            let mut fixed_count = 0;
            for t in &targets {
                let mine: Vec<&check::Finding> = failing
                    .iter()
                    .filter(|(f, _)| *f == t.file)
                    .map(|(_, f)| f)
                    .collect();
                if mine.is_empty() {
                    continue;
                }
                match apply_would_fix(&t.file, t.service.as_deref(), &mine, a.strict) {
                    Ok(rules) => {
                        fixed_count += mine.iter().filter(|f| rules.contains(&f.rule)).count();
                        for r in rules {
                            let w = rule_words(r).to_string();
                            if !fixes.contains(&w) {
                                fixes.push(w);
                            }
                        }
                    }
                    Err(e) => cannot.push(e),
                }
            }
            let hint = if fixes.is_empty() {
                "`cargo xtask compose apply` fixes none of them: edit the lines as each message says".to_string()
            } else {
                let left = failing.len().saturating_sub(fixed_count);
                format!(
                    "`cargo xtask compose apply` fixes {}{}",
                    fixes.join(", "),
                    if left > 0 {
                        "; edit the other lines as each message says".to_string()
                    } else {
                        String::new()
                    }
                )
            };
            eprintln!("compose check: {} finding(s); {hint}", failing.len());
            for c in cannot {
                eprintln!("compose apply cannot edit this file: {c}");
            }
        }
    }
    Ok(if findings.iter().any(|(_, f)| f.fails(a.strict)) {
        ExitCode::Failed
    } else {
        ExitCode::Ok
    })
}

fn parse_for(file: &Path, text: &str) -> Result<yaml::Doc> {
    let doc = yaml::parse(text).map_err(|e| Error::input(file, e.at.line, e.at.col, e.message))?;
    if let Some(i) = doc.issues.first() {
        return Err(Error::input(file, i.at.line, i.at.col, i.message.clone()));
    }
    Ok(doc)
}

/// Run `f` on the redis service of `root` as Compose sees it (`extends:` merged).
fn on_effective<T>(
    text: &str,
    root: &yaml::Node,
    service: Option<&str>,
    f: impl FnOnce(&model::Service) -> std::result::Result<T, model::At>,
) -> std::result::Result<T, model::At> {
    let svc0 = model::find_redis(text, root, service)?;
    let merged = channel::effective(root, &svc0)?;
    f(&channel::with(&svc0, merged.as_ref()))
}

fn redis_data_volume_text(
    text: &str,
    service: Option<&str>,
) -> std::result::Result<Option<String>, model::At> {
    let doc = yaml::parse(text).map_err(|e| model::at(e.at, e.message))?;
    on_effective(text, &doc.root, service, |svc| {
        model::data_volume(text, svc)
    })
}

/// [`RedisFacts`] of the service `service` in `text` (pure; `file` only names errors).
pub fn redis_facts_text(file: &Path, text: &str, service: Option<&str>) -> Result<RedisFacts> {
    let doc = parse_for(file, text)?;
    on_effective(text, &doc.root, service, |svc| model::facts(text, svc))
        .map_err(|e| input(file, e))
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

/// The named volume the redis service mounts at its data directory (e.g. `redis_aof`), if any.
pub fn redis_data_volume(compose_file: &Path, service: &str) -> Result<Option<String>> {
    let text = read_text(compose_file)?;
    let doc = parse_for(compose_file, &text)?;
    on_effective(&text, &doc.root, Some(service), |svc| {
        model::data_volume(&text, svc)
    })
    .map_err(|e| input(compose_file, e))
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
