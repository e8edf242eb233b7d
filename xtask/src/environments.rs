//! The environment model: the one place that knows what `local`, `staging`, `production` and `e2e` are.
//!
//! Read from `infra/environments.toml` (or the file named by `XTASK_ENVIRONMENTS`). Parsing is pure
//! ([`Environments::parse`]); [`Environments::load`] adds the file I/O and the repository root.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// Where the environments file lives, relative to the repository root.
pub const ENVIRONMENTS_FILE: &str = "infra/environments.toml";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Processes on this machine, state under `target/`.
    Local,
    /// A Compose project on this machine's Docker engine.
    Docker,
    /// A Compose project on a remote host reached over SSH.
    Ssh,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Services {
    pub redis: String,
    pub postgres: String,
    pub backend: String,
    pub frontend: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backup {
    /// rclone remote name (`b2`): every setting can be overridden with `RCLONE_CONFIG_B2_*`.
    pub remote: String,
    pub bucket: String,
    /// Objects go to `<remote>:<bucket>/<prefix>/YYYYMM/<file>`.
    pub prefix: String,
}

impl Backup {
    /// `<remote>:<bucket>/<prefix>` as rclone understands it.
    pub fn base(&self) -> String {
        format!("{}:{}/{}", self.remote, self.bucket, self.prefix)
    }
}

/// How to reach a remote host. Values come from the process environment at run time.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshSpec {
    pub host_env: String,
    pub user: String,
    pub port_env: String,
    pub known_hosts_env: String,
    pub key_env: String,
}

/// A resolved SSH target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshTarget {
    pub host: String,
    pub user: String,
    pub port: u16,
    pub known_hosts: PathBuf,
    pub key: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvironment {
    transport: Transport,
    description: String,
    compose_file: PathBuf,
    #[serde(default)]
    compose_overrides: Vec<PathBuf>,
    compose_project: String,
    env_file: Option<PathBuf>,
    remote_dir: Option<String>,
    state_dir: Option<PathBuf>,
    database: String,
    db_user: String,
    migrations_dir: Option<PathBuf>,
    migration_command: String,
    #[serde(default)]
    health_url: String,
    services: Services,
    backup: Backup,
    ssh: Option<SshSpec>,
    redis_replication: Option<crate::verify_redis::declared::RedisReplication>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    environments: BTreeMap<String, RawEnvironment>,
}

/// How migrations are run in an environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MigrationCommand {
    /// The SQL files of `migrations_dir`, applied in order by xtask itself (`schema_migrations`).
    BuiltinSql,
    /// A fixed shell command run in the environment's directory (e.g. `docker compose run --rm backend
    /// pnpm migration:run`), split into words at load time; never built from user input.
    Command(Vec<String>),
}

/// One environment, validated. Paths are absolute (resolved against the repository root).
#[derive(Clone, Debug)]
pub struct Environment {
    pub name: String,
    pub transport: Transport,
    pub description: String,
    /// Repository-relative path as written in the environments file (for docs and remote paths).
    pub compose_file_rel: PathBuf,
    pub compose_file: PathBuf,
    pub compose_overrides: Vec<PathBuf>,
    pub compose_project: String,
    pub env_file_rel: Option<PathBuf>,
    pub env_file: Option<PathBuf>,
    pub remote_dir: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub database: String,
    pub db_user: String,
    pub migrations_dir: Option<PathBuf>,
    pub migration: MigrationCommand,
    pub migration_command_text: String,
    pub health_url: String,
    pub services: Services,
    pub backup: Backup,
    pub ssh: Option<SshSpec>,
    /// Replicas / Sentinels of its Redis (verified with it), when declared.
    pub redis_replication: Option<crate::verify_redis::declared::RedisReplication>,
}

impl Environment {
    /// Resolve the SSH target from the process environment (exit 2 when a variable is missing).
    pub fn ssh_target(&self) -> Result<SshTarget> {
        let t = self.ssh_target_from(|k| std::env::var(k).ok())?;
        if let (Some(key), Some(spec)) = (&t.key, &self.ssh) {
            check_key_file(&spec.key_env, key)?;
        }
        Ok(t)
    }

    pub fn ssh_target_from(&self, get: impl Fn(&str) -> Option<String>) -> Result<SshTarget> {
        let spec = self.ssh.as_ref().ok_or_else(|| {
            Error::usage(format!(
                "environment `{}` is not reached over SSH",
                self.name
            ))
        })?;
        let need = |var: &str| {
            get(var).filter(|v| !v.is_empty()).ok_or_else(|| {
                Error::usage(format!(
                    "environment `{}` needs ${var} (set it in the shell or as a CI secret)",
                    self.name
                ))
            })
        };
        let host = need(&spec.host_env)?;
        if host.starts_with('-') || host.chars().any(|c| c.is_whitespace() || c == '@') {
            return Err(Error::usage(format!(
                "${}: not a host name: {host:?}",
                spec.host_env
            )));
        }
        let port = match get(&spec.port_env).filter(|v| !v.is_empty()) {
            None => 22,
            Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                Error::usage(format!("${}: not a TCP port: {p:?}", spec.port_env))
            })?,
        };
        let known_hosts = PathBuf::from(need(&spec.known_hosts_env)?);
        let key = get(&spec.key_env).filter(|v| !v.is_empty());
        if let Some(k) = &key {
            check_key_value(&spec.key_env, k)?;
        }
        let key = key.map(PathBuf::from);
        Ok(SshTarget {
            host,
            user: spec.user.clone(),
            port,
            known_hosts,
            key,
        })
    }

    /// `docker compose -p <project> -f <file> [-f <override>]... [--env-file <file>]` arguments, with
    /// paths as given (absolute locally; the caller rewrites them for a remote directory).
    pub fn compose_args(&self) -> Vec<String> {
        let mut args = vec!["-p".to_string(), self.compose_project.clone()];
        for f in std::iter::once(&self.compose_file).chain(&self.compose_overrides) {
            args.push("-f".into());
            args.push(f.display().to_string());
        }
        if let Some(env_file) = &self.env_file {
            args.push("--env-file".into());
            args.push(env_file.display().to_string());
        }
        args
    }
}

/// What to say when `$<var>` holds a key instead of naming a file (never the value itself).
fn not_a_key_path(var: &str, what: &str) -> Error {
    Error::usage(format!(
        "${var} must be a path, not the key: {what}. Write the key to a file readable only by you \
         (e.g. `install -m 600 /dev/null ~/.ssh/deploy_key`, then paste it there) and set ${var} to \
         that file's path (nothing was run)"
    ))
}

/// `$<ENV>_SSH_KEY` names a file: a value holding a private key itself (its `-----BEGIN` line, or
/// several lines) would end up on ssh's command line, in errors and in the audit log. Pure.
pub fn check_key_value(var: &str, value: &str) -> Result<()> {
    if value.contains("-----BEGIN") || value.contains("PRIVATE KEY") {
        return Err(not_a_key_path(
            var,
            "it holds the private key itself (its BEGIN line)",
        ));
    }
    if value.contains(['\n', '\r']) || value.chars().any(char::is_control) || value.len() > 4096 {
        return Err(not_a_key_path(
            var,
            "it holds several lines or control characters, not a file name",
        ));
    }
    Ok(())
}

/// The key file exists and is readable (checked before anything runs; exit 2 otherwise).
fn check_key_file(var: &str, key: &Path) -> Result<()> {
    match std::fs::File::open(key) {
        Ok(f) if f.metadata().is_ok_and(|m| m.is_file()) => Ok(()),
        Ok(_) => Err(not_a_key_path(
            var,
            &format!("{} is not a regular file", crate::error::show_path(key)),
        )),
        Err(e) => Err(not_a_key_path(
            var,
            &format!("{} cannot be read ({e})", crate::error::show_path(key)),
        )),
    }
}

/// All environments, by name, plus the repository root they were resolved against.
#[derive(Clone, Debug)]
pub struct Environments {
    pub root: PathBuf,
    pub file: PathBuf,
    pub envs: BTreeMap<String, Environment>,
}

impl Environments {
    /// Find the repository root and load the environments file (`XTASK_ENVIRONMENTS` overrides it).
    pub fn load() -> Result<Self> {
        let root = repo_root()?;
        let root = std::path::absolute(&root).unwrap_or(root);
        let file = match std::env::var_os("XTASK_ENVIRONMENTS") {
            Some(f) if !f.is_empty() => PathBuf::from(f),
            _ => root.join(ENVIRONMENTS_FILE),
        };
        let text = std::fs::read_to_string(&file).map_err(|e| Error::read(&file, e))?;
        let file = std::path::absolute(&file).unwrap_or(file);
        Self::parse(&text, &file, &root)
    }

    /// Parse and validate the environments file's text. Pure: no I/O.
    pub fn parse(text: &str, file: &Path, root: &Path) -> Result<Self> {
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let (line, col) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
            Error::input(file, line, col, e.message().to_string())
        })?;
        let mut envs = BTreeMap::new();
        for (name, r) in raw.environments {
            let at = |msg: String| {
                let (line, col) = find_table(text, &name);
                Error::input(file, line, col, format!("environment `{name}`: {msg}"))
            };
            if !valid_name(&name) {
                return Err(at("names are lowercase letters, digits and `-`".into()));
            }
            if !valid_name(&r.compose_project) {
                return Err(at(format!(
                    "compose_project {:?}: lowercase letters, digits and `-` only",
                    r.compose_project
                )));
            }
            for s in [
                &r.services.redis,
                &r.services.postgres,
                &r.services.backend,
                &r.services.frontend,
            ] {
                if !valid_service(s) {
                    return Err(at(format!(
                        "service name {s:?} is not a valid compose service name"
                    )));
                }
            }
            if !valid_name(&r.backup.remote)
                || !valid_bucket(&r.backup.bucket)
                || !valid_name(&r.backup.prefix)
            {
                return Err(at(
                    "backup remote, bucket or prefix has characters outside [a-z0-9.-]".into(),
                ));
            }
            if !valid_ident(&r.database) || !valid_ident(&r.db_user) {
                return Err(at(
                    "database and db_user must be plain identifiers [a-z_][a-z0-9_]*".into(),
                ));
            }
            match r.transport {
                Transport::Local => {
                    if r.state_dir.is_none() || r.migrations_dir.is_none() {
                        return Err(at(
                            "transport `local` needs state_dir and migrations_dir".into()
                        ));
                    }
                }
                Transport::Ssh => {
                    if r.ssh.is_none() || r.remote_dir.is_none() || r.env_file.is_none() {
                        return Err(at(
                            "transport `ssh` needs an [ssh] table, remote_dir and env_file".into(),
                        ));
                    }
                }
                Transport::Docker => {}
            }
            if let Some(dir) = &r.state_dir {
                if let Err(msg) = check_state_dir(dir, root, file) {
                    let (line, col) = find_key(text, &name, "state_dir");
                    return Err(Error::input(
                        file,
                        line,
                        col,
                        format!("environment `{name}`: {msg}"),
                    ));
                }
            }
            if let Some(ssh) = &r.ssh {
                if !valid_user(&ssh.user) {
                    return Err(at(format!(
                        "ssh user {:?}: a login name is [A-Za-z0-9_][A-Za-z0-9_.-]* (it becomes `user@host` on ssh's command line)",
                        ssh.user
                    )));
                }
            }
            if let Some(dir) = &r.remote_dir {
                if !dir.starts_with('/')
                    || dir.contains("..")
                    || dir.chars().any(|c| c.is_whitespace() || c == '\'')
                {
                    return Err(at(format!(
                        "remote_dir {dir:?} must be an absolute path without spaces or quotes"
                    )));
                }
            }
            if let Some(rep) = &r.redis_replication {
                rep.validate().map_err(&at)?;
            }
            let migration = if r.migration_command == "builtin:sql-migrations" {
                if r.migrations_dir.is_none() {
                    return Err(at("builtin:sql-migrations needs migrations_dir".into()));
                }
                MigrationCommand::BuiltinSql
            } else {
                let words = shlex::split(&r.migration_command)
                    .filter(|w| !w.is_empty())
                    .ok_or_else(|| {
                        at(format!(
                            "migration_command {:?} does not split into words",
                            r.migration_command
                        ))
                    })?;
                MigrationCommand::Command(words)
            };
            let abs = |p: &Path| {
                if p.is_absolute() {
                    p.to_path_buf()
                } else {
                    root.join(p)
                }
            };
            envs.insert(
                name.clone(),
                Environment {
                    name: name.clone(),
                    transport: r.transport,
                    description: r.description,
                    compose_file: abs(&r.compose_file),
                    compose_file_rel: r.compose_file,
                    compose_overrides: r.compose_overrides.iter().map(|p| abs(p)).collect(),
                    compose_project: r.compose_project,
                    env_file: r.env_file.as_deref().map(abs),
                    env_file_rel: r.env_file,
                    remote_dir: r.remote_dir,
                    state_dir: r.state_dir.as_deref().map(abs),
                    database: r.database,
                    db_user: r.db_user,
                    migrations_dir: r.migrations_dir.as_deref().map(abs),
                    migration,
                    migration_command_text: r.migration_command,
                    health_url: r.health_url,
                    services: r.services,
                    backup: r.backup,
                    ssh: r.ssh,
                    redis_replication: r.redis_replication,
                },
            );
        }
        if envs.is_empty() {
            return Err(Error::input(file, 1, 1, "no [environments.NAME] tables"));
        }
        Ok(Environments {
            root: root.to_path_buf(),
            file: file.to_path_buf(),
            envs,
        })
    }

    pub fn get(&self, name: &str) -> Result<&Environment> {
        self.envs.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.envs.keys().map(String::as_str).collect();
            Error::usage(format!(
                "unknown environment `{name}` (known: {})",
                known.join(", ")
            ))
        })
    }

    /// The environments whose compose files are gated by `compose check` (production first).
    pub fn deployed(&self) -> impl Iterator<Item = &Environment> {
        ["production", "staging"]
            .into_iter()
            .filter_map(|n| self.envs.get(n))
    }
}

/// The repository root: `XTASK_ROOT`, else the nearest ancestor of the current directory holding
/// `infra/environments.toml`, else the workspace this binary was built from.
pub fn repo_root() -> Result<PathBuf> {
    if let Some(r) = std::env::var_os("XTASK_ROOT").filter(|r| !r.is_empty()) {
        return Ok(PathBuf::from(r));
    }
    if let Ok(cwd) = std::env::current_dir() {
        for dir in cwd.ancestors() {
            if dir.join(ENVIRONMENTS_FILE).is_file() {
                return Ok(dir.to_path_buf());
            }
        }
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf);
    match built {
        Some(dir) if dir.join(ENVIRONMENTS_FILE).is_file() => Ok(dir),
        _ => Err(Error::usage(format!(
            "cannot find the repository root (no {ENVIRONMENTS_FILE} above the current directory)"
        ))),
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
}

fn valid_bucket(s: &str) -> bool {
    valid_name(&s.replace('.', "-"))
}

fn valid_service(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !s.starts_with(['-', '.'])
}

/// A POSIX-portable login name; never starts with `-` (ssh would read `-o...@host` as an option).
fn valid_user(s: &str) -> bool {
    let mut it = s.bytes();
    s.len() <= 32
        && matches!(it.next(), Some(b) if b.is_ascii_lowercase() || b == b'_')
        && it.all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        })
}

fn valid_ident(s: &str) -> bool {
    let mut it = s.bytes();
    matches!(it.next(), Some(b) if b.is_ascii_lowercase() || b == b'_')
        && it.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Where `key = ...` of `[environments.<name>]` starts (the table header when not found).
fn find_key(text: &str, name: &str, key: &str) -> (usize, usize) {
    let header = format!("[environments.{name}]");
    let Some(start) = text.find(&header) else {
        return (1, 1);
    };
    let body = start + header.len();
    let end = text[body..].find("\n[").map_or(text.len(), |o| body + o);
    let mut offset = body;
    for line in text[body..end].split_inclusive('\n') {
        let t = line.trim_start();
        if t.strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with('='))
        {
            return line_col(text, offset + (line.len() - t.len()));
        }
        offset += line.len();
    }
    line_col(text, start)
}

/// `a/./b/../c` → `a/c` without touching the file system (`..` at the root stays at the root).
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// `local down --purge` deletes under `state_dir`, so it must be a directory of its own: strictly
/// inside the repository (or inside the directory of an environments file kept outside it, as tests
/// and benchmarks do), never `/`, the repository itself or one of its parents. Lexical: a relative
/// `state_dir` is resolved against the repository root.
pub fn check_state_dir(dir: &Path, root: &Path, file: &Path) -> std::result::Result<(), String> {
    let root = normalize(root);
    let abs = normalize(&root.join(dir));
    let file_dir = normalize(&root.join(file.parent().unwrap_or(Path::new(""))));
    let shown = dir.display();
    if abs.parent().is_none() {
        return Err(format!("state_dir {shown:?} is `/`: it must be a directory of its own inside the repository, such as target/local"));
    }
    if root.starts_with(&abs) {
        return Err(format!(
            "state_dir {shown:?} is the repository {} or a parent of it: `local down --purge` deletes what is under it; use a directory inside the repository, such as target/local",
            root.display()
        ));
    }
    let inside = |base: &Path| abs.starts_with(base) && abs != base;
    let outside_repo_file = !file_dir.starts_with(&root);
    if inside(&root) || (outside_repo_file && inside(&file_dir)) {
        return Ok(());
    }
    Err(format!(
        "state_dir {shown:?} is outside the repository {}{}: `local down --purge` deletes what is under it; use a directory inside the repository, such as target/local",
        root.display(),
        if outside_repo_file {
            format!(" and outside the directory of {}", file.display())
        } else {
            String::new()
        }
    ))
}

fn find_table(text: &str, name: &str) -> (usize, usize) {
    let header = format!("[environments.{name}]");
    text.find(&header)
        .map(|o| line_col(text, o))
        .unwrap_or((1, 1))
}

/// For the unit tests of other modules: the repository's own environments file.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// `infra/environments.toml` of the repository, parsed with `root` as the repository root.
    pub fn repo_at(root: &Path) -> Environments {
        edited_repo_at(root, |t| t)
    }

    /// The same with `staging` given the e2e override (`compose_overrides`), for server layouts.
    pub fn repo_with_staging_override(root: &Path) -> Environments {
        edited_repo_at(root, |t| {
            t.replace(
                "compose_project = \"station-staging\"",
                "compose_project = \"station-staging\"\ncompose_overrides = [\"infra/e2e/docker-compose.e2e.yml\"]",
            )
        })
    }

    fn edited_repo_at(root: &Path, edit: impl FnOnce(String) -> String) -> Environments {
        let file = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .join(ENVIRONMENTS_FILE);
        let text = edit(std::fs::read_to_string(file).unwrap());
        Environments::parse(&text, Path::new("environments.toml"), root).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> Environments {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let file = root.join(ENVIRONMENTS_FILE);
        Environments::parse(&std::fs::read_to_string(&file).unwrap(), &file, root).unwrap()
    }

    #[test]
    fn repo_file_parses_with_the_four_environments() {
        let envs = repo();
        let names: Vec<&str> = envs.envs.keys().map(String::as_str).collect();
        assert_eq!(names, ["e2e", "local", "production", "staging"]);
        assert_eq!(envs.get("production").unwrap().transport, Transport::Ssh);
        assert_eq!(
            envs.get("local").unwrap().migration,
            MigrationCommand::BuiltinSql
        );
        assert!(envs.get("nope").is_err());
    }

    #[test]
    fn ssh_target_comes_from_the_environment_and_is_validated() {
        let envs = repo();
        let prod = envs.get("production").unwrap();
        let vars = |k: &str| match k {
            "PRODUCTION_SSH_HOST" => Some("vps.example.org".to_string()),
            "PRODUCTION_SSH_KNOWN_HOSTS" => Some("/tmp/kh".to_string()),
            "PRODUCTION_SSH_PORT" => Some("2222".to_string()),
            _ => None,
        };
        let t = prod.ssh_target_from(vars).unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.user.as_str()),
            ("vps.example.org", 2222, "deploy")
        );
        let bad = |k: &str| match k {
            "PRODUCTION_SSH_HOST" => Some("-oProxyCommand=x".to_string()),
            _ => Some("1".to_string()),
        };
        assert!(matches!(prod.ssh_target_from(bad), Err(Error::Usage(_))));
    }

    #[test]
    fn an_ssh_key_variable_holding_the_key_itself_is_refused_without_echoing_it() {
        let envs = repo();
        let prod = envs.get("production").unwrap();
        let key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n-----END OPENSSH PRIVATE KEY-----\n";
        for value in [key, "b3BlbnNzaC1rZXktdjEAAAAABG5v\nbmUAAAAEbm9uZQ"] {
            let vars = |k: &str| match k {
                "PRODUCTION_SSH_HOST" => Some("vps.example.org".to_string()),
                "PRODUCTION_SSH_KNOWN_HOSTS" => Some("/tmp/kh".to_string()),
                "PRODUCTION_SSH_KEY" => Some(value.to_string()),
                _ => None,
            };
            let e = prod.ssh_target_from(vars).unwrap_err();
            assert_eq!(e.exit_code(), crate::error::ExitCode::Usage);
            let m = e.to_string();
            assert!(m.contains("a path, not the key"), "{m}");
            assert!(!m.contains("b3BlbnNzaC1rZXktdjEAAAAABG5v"), "{m}");
        }
        let d = tempfile::tempdir().unwrap();
        assert!(check_key_file("K", d.path()).is_err());
        assert!(check_key_file("K", &d.path().join("missing")).is_err());
        std::fs::write(d.path().join("k"), "x").unwrap();
        check_key_file("K", &d.path().join("k")).unwrap();
    }

    #[test]
    fn ssh_user_cannot_become_an_ssh_option() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let file = root.join(ENVIRONMENTS_FILE);
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.contains("user = \"deploy\""));
        let bad = text.replacen(
            "user = \"deploy\"",
            "user = \"-oProxyCommand=touch /tmp/pwned\"",
            1,
        );
        let err = Environments::parse(&bad, &file, root).unwrap_err();
        let Error::Input { at, message } = &err else {
            panic!("{err:?}")
        };
        assert!(message.contains("ssh user"), "{message}");
        assert!(at.line > 1, "{err}");
    }

    #[test]
    fn state_dir_must_be_a_directory_of_its_own_inside_the_repository() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let file = root.join(ENVIRONMENTS_FILE);
        let text = std::fs::read_to_string(&file).unwrap();
        let line = "state_dir = \"target/local\"";
        let want = text[..text.find(line).unwrap()].matches('\n').count() + 1;
        for bad in [
            ".",
            "./",
            "target/..",
            "..",
            "/",
            "/tmp/elsewhere",
            "target/../../x",
            root.to_str().unwrap(),
            root.parent().unwrap().to_str().unwrap(),
        ] {
            let t = text.replacen(line, &format!("state_dir = {bad:?}"), 1);
            let err = Environments::parse(&t, &file, root).unwrap_err();
            let Error::Input { at, message } = &err else {
                panic!("{bad}: {err:?}")
            };
            assert_eq!((at.line, at.col), (want, 1), "{bad}: {err}");
            assert!(message.contains("state_dir"), "{message}");
        }
        for good in ["target/local", "target/./x/../local", "state"] {
            let t = text.replacen(line, &format!("state_dir = {good:?}"), 1);
            Environments::parse(&t, &file, root).unwrap();
        }
        // An environments file kept outside the repository may keep state below its own directory.
        let outside = Path::new("/tmp/xtask-envs/environments.toml");
        for (dir, ok) in [
            ("/tmp/xtask-envs/state", true),
            ("/tmp/xtask-envs", false),
            ("/tmp", false),
            ("/tmp/other", false),
        ] {
            let t = text.replacen(line, &format!("state_dir = {dir:?}"), 1);
            assert_eq!(Environments::parse(&t, outside, root).is_ok(), ok, "{dir}");
        }
    }

    #[test]
    fn bad_files_give_positions() {
        let err = Environments::parse(
            "[environments.x]\ntransport = \"nope\"\n",
            Path::new("e.toml"),
            Path::new("/r"),
        )
        .unwrap_err();
        let Error::Input { at, .. } = err else {
            panic!("{err:?}")
        };
        assert_eq!((at.line, at.col), (2, 13));
    }
}
