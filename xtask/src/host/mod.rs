//! Where a command runs. An environment's [`Host`] is one of three places, chosen once from
//! `infra/environments.toml` by [`Host::of`]:
//!
//! | transport | place | commands run as |
//! |---|---|---|
//! | `local` | this machine: PostgreSQL and redis-server as processes, an rclone alias remote | argument vectors; `PGPASSWORD` as a secret env |
//! | `docker` | a Compose project on this machine's engine | the detected Compose CLI (`compose -p .. -f .. ...`) |
//! | `ssh` | a Compose project on a server, in `remote_dir` | fixed `sh -c` scripts over `ssh`, every argument shell-quoted |
//!
//! Everything else in the crate asks a `Host` for a [`Cmd`] and runs it: fixed scripts with
//! positional arguments ([`Host::script`]), Compose ([`Host::compose`], [`Host::compose_exec`]),
//! files put on the host ([`Host::put_file`]), `psql` as the database user ([`Host::psql`]),
//! `rclone` with the host's own configuration ([`Host::rclone`]). No module outside `host/` looks
//! at the transport. The Compose CLI is decided in one place ([`compose`]).

mod compose;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use compose::{ComposeCli, COMPOSE_CLI_SH};

use crate::environments::{Environment, SshTarget, Transport};
use crate::error::{Error, Result};
use crate::local::state::{LocalPaths, LocalState};
use crate::process::{describe, Cmd, Output};

/// `compose` in the environment's directory: `$1` dir, `$2` STATION_TAG, then Compose arguments.
const COMPOSE_SH: &str = include_str!("compose.sh");
/// A fixed command in the environment's directory with COMPOSE_FILE & co. exported.
const IN_PROJECT_SH: &str = include_str!("in-project.sh");
/// stdin → `$1/$2` (temp file, chmod `$3`, `mv`).
const PUT_FILE_SH: &str = include_str!("put-file.sh");
/// stdin appended to `$1`.
pub const APPEND_FILE_SH: &str = include_str!("append-file.sh");
/// Exports `$1` = the Compose CLI words, then runs `$2...`.
const WITH_COMPOSE_VAR_SH: &str = include_str!("with-compose-var.sh");

/// Bounded rclone retries/timeouts for everything xtask runs itself (list, stat, downloads).
pub const RCLONE_FLAGS: [&str; 12] = [
    "--low-level-retries",
    "2",
    "--retries",
    "2",
    "--contimeout",
    "10s",
    "--timeout",
    "60s",
    "--stats",
    "0",
    "--log-level",
    "NOTICE",
];

/// Options of every psql run: no psqlrc, quiet, stop at the first error.
pub const PSQL_OPTS: [&str; 4] = ["-X", "-q", "-v", "ON_ERROR_STOP=1"];

/// Who a psql logs in as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Login<'a> {
    /// The environment's `db_user` (on this machine over TCP with its password).
    Owner,
    /// A role with no password, over the server's local socket, which trusts it (the cluster of
    /// `local` is initialised with `--auth-local=trust`; the postgres image trusts its socket):
    /// restore's replay role, which owns nothing but the scratch database.
    Socket(&'a str),
}

/// `c` with `PATH` past the wrappers [`crate::process::child_path`] steps over.
fn with_real_path(c: Cmd) -> Cmd {
    match crate::process::child_path() {
        Some(p) => c.env("PATH", p.to_string_lossy().as_ref()),
        None => c,
    }
}

/// A fixed script (our own text, never user input) that a [`Host`] runs with positional arguments.
#[derive(Clone, Copy, Debug)]
pub struct Script<'a> {
    text: &'a str,
    bash: bool,
    compose: bool,
    in_dir: bool,
}

impl<'a> Script<'a> {
    /// A POSIX `sh` script, run in the environment's directory.
    pub const fn sh(text: &'a str) -> Script<'a> {
        Script {
            text,
            bash: false,
            compose: false,
            in_dir: true,
        }
    }
    /// A `bash` script (`set -Eeuo pipefail` is prepended), run in the environment's directory.
    pub const fn bash(text: &'a str) -> Script<'a> {
        Script {
            text,
            bash: true,
            compose: false,
            in_dir: true,
        }
    }
    /// The script calls `compose ...` ([`COMPOSE_CLI_SH`] is prepended).
    pub const fn with_compose(mut self) -> Script<'a> {
        self.compose = true;
        self
    }
    /// The script does not start in the environment's directory (it may create it, or `cd` itself).
    pub const fn anywhere(mut self) -> Script<'a> {
        self.in_dir = false;
        self
    }
    /// The text the shell runs.
    pub fn text(&self) -> String {
        let mut t = String::new();
        if self.bash {
            t.push_str("set -Eeuo pipefail\n");
        }
        if self.compose {
            t.push_str(COMPOSE_CLI_SH);
        }
        t.push_str(self.text);
        t
    }
    fn shell(&self) -> &'static str {
        if self.bash {
            "bash"
        } else {
            "sh"
        }
    }
}

/// An SSH target and the remote directory of a server environment.
#[derive(Clone, Copy, Debug)]
pub struct Remote<'a> {
    pub target: &'a SshTarget,
    pub dir: &'a str,
}

/// The Compose project of an environment as its host sees it (paths relative to the host's
/// directory on a server, absolute on this machine).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComposeProject {
    pub project: String,
    pub files: Vec<String>,
    pub env_file: Option<String>,
}

impl ComposeProject {
    /// `-p P -f F... [--env-file E]`.
    pub fn args(&self) -> Vec<String> {
        let mut a = vec!["-p".to_string(), self.project.clone()];
        for f in &self.files {
            a.extend(["-f".to_string(), f.clone()]);
        }
        if let Some(e) = &self.env_file {
            a.extend(["--env-file".to_string(), e.clone()]);
        }
        a
    }
}

/// Where an environment's commands run (see the module documentation).
#[derive(Clone, Debug)]
pub struct Host {
    env: Environment,
    at: At,
}

#[derive(Clone, Debug)]
enum At {
    Local {
        paths: LocalPaths,
        rclone_env: Vec<(String, String)>,
    },
    Compose {
        cli: ComposeCli,
    },
    Ssh {
        target: SshTarget,
        dir: String,
    },
}

impl Host {
    /// The host of `env`: the local state paths, the Compose CLI of this machine (exit 3 when there
    /// is none, or only Compose 1.x), or the SSH target from the process environment (exit 2 when a
    /// variable is missing).
    pub fn of(env: &Environment) -> Result<Host> {
        let at = match env.transport {
            Transport::Local => {
                let paths = LocalPaths::of(env)?;
                At::Local {
                    rclone_env: LocalState::rclone_env(env, &paths),
                    paths,
                }
            }
            Transport::Docker => At::Compose {
                cli: ComposeCli::detect()?,
            },
            Transport::Ssh => At::Ssh {
                target: env.ssh_target()?,
                dir: remote_dir(env)?.to_string(),
            },
        };
        Ok(Host {
            env: env.clone(),
            at,
        })
    }

    /// Like [`Host::of`] for a plan that runs nothing (`--dry-run`): SSH settings that are not set
    /// show as `$VARIABLE` placeholders, and without a Compose CLI here the plugin form is shown.
    pub fn planned(env: &Environment) -> Result<Host> {
        let at = match env.transport {
            Transport::Docker => At::Compose {
                cli: ComposeCli::detect().unwrap_or(ComposeCli::Plugin),
            },
            Transport::Ssh => At::Ssh {
                target: env.ssh_target().unwrap_or_else(|_| {
                    let spec = env.ssh.as_ref().expect("ssh environments have [ssh]");
                    SshTarget {
                        host: format!("${}", spec.host_env),
                        user: spec.user.clone(),
                        port: 22,
                        known_hosts: PathBuf::from(format!("${}", spec.known_hosts_env)),
                        key: Some(PathBuf::from(format!("${}", spec.key_env))),
                    }
                }),
                dir: remote_dir(env)?.to_string(),
            },
            Transport::Local => return Host::of(env),
        };
        Ok(Host {
            env: env.clone(),
            at,
        })
    }

    /// The environment this host serves.
    pub fn env(&self) -> &Environment {
        &self.env
    }

    /// The server and directory, for a host reached over SSH.
    pub fn remote(&self) -> Option<Remote<'_>> {
        match &self.at {
            At::Ssh { target, dir } => Some(Remote { target, dir }),
            _ => None,
        }
    }

    /// The local environment's paths (state, cluster, objects), for the `local` host.
    pub fn local_paths(&self) -> Option<&LocalPaths> {
        match &self.at {
            At::Local { paths, .. } => Some(paths),
            _ => None,
        }
    }

    /// Where xtask keeps its own records of this environment on this machine (audit log, lock of
    /// an environment on this machine): the local state directory, else `target/deploy/<env>`.
    pub fn records_dir(&self, root: &Path) -> PathBuf {
        match &self.at {
            At::Local { paths, .. } => paths.root.clone(),
            _ => root.join("target/deploy").join(&self.env.name),
        }
    }

    /// The environment's transport as named in the environments file (`local`, `docker`, `ssh`).
    pub fn transport(&self) -> &'static str {
        match &self.at {
            At::Local { .. } => "local",
            At::Compose { .. } => "docker",
            At::Ssh { .. } => "ssh",
        }
    }

    /// "this machine", "Compose project P on this machine", "user@host:dir".
    pub fn describe(&self) -> String {
        match &self.at {
            At::Local { .. } => "this machine".into(),
            At::Compose { cli } => format!(
                "Compose project {} on this machine ({})",
                self.env.compose_project,
                cli.words().join(" ")
            ),
            At::Ssh { target, dir } => format!("{}@{}:{dir}", target.user, target.host),
        }
    }

    /// Tools this machine needs to reach the host (checked by `deploy` preflight).
    pub fn tools(&self) -> Vec<&'static str> {
        match &self.at {
            At::Local { .. } => {
                let mut t = crate::local::required_tools();
                t.extend(["pg_dump", "gzip", "bash"]);
                t
            }
            At::Compose { .. } => vec!["docker", "rclone"],
            At::Ssh { .. } => vec!["ssh", "rclone"],
        }
    }

    /// The environment's directory on this machine: the repository root its files were resolved
    /// against.
    fn local_dir(&self) -> PathBuf {
        let depth = self.env.compose_file_rel.components().count();
        self.env
            .compose_file
            .ancestors()
            .nth(depth)
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"))
    }

    /// libpq variables and the password of the local cluster (state read now: exit 2 with the
    /// command to run when `local up` has not run).
    fn local_env(&self, c: Cmd) -> Result<Cmd> {
        self.local_env_as(c, Login::Owner)
    }

    /// [`Host::local_env`] logging in as `login`: a [`Login::Socket`] role gets the cluster's
    /// socket directory and no password at all (the owner's is not in its environment).
    fn local_env_as(&self, mut c: Cmd, login: Login<'_>) -> Result<Cmd> {
        c = with_real_path(c.env_remove("AWS_CA_BUNDLE").env_remove("PGSERVICE"));
        if let At::Local { rclone_env, paths } = &self.at {
            let state = LocalState::load(&self.env)?;
            for (k, v) in rclone_env {
                c = c.env(k, v);
            }
            c = c
                .env("PGPORT", state.pg_port.to_string())
                .env("PGDATABASE", &self.env.database);
            c = match login {
                Login::Owner => c
                    .env("PGHOST", "127.0.0.1")
                    .env("PGUSER", &self.env.db_user)
                    .secret_env("PGPASSWORD", &state.pg_password),
                Login::Socket(role) => c
                    .env("PGHOST", crate::local::socket_dir(paths).as_os_str())
                    .env("PGUSER", role)
                    .env_remove("PGPASSWORD")
                    .env_remove("PGPASSFILE"),
            };
        }
        Ok(c)
    }

    /// Run a fixed script with positional arguments (`$1...`) on the host: on this machine with the
    /// host's environment (rclone remote, libpq), on a server over SSH (arguments shell-quoted).
    pub fn script(&self, s: &Script<'_>, args: &[String]) -> Result<Cmd> {
        self.script_as(s, args, Login::Owner)
    }

    /// [`Host::script`] whose libpq environment on this machine logs in as `login` (on a server
    /// the script's psql words say who logs in: see [`Host::psql_words_as`]).
    pub fn script_as(&self, s: &Script<'_>, args: &[String], login: Login<'_>) -> Result<Cmd> {
        let text = s.text();
        match &self.at {
            At::Ssh { target, dir } => {
                let mut words = vec![s.shell().to_string(), "-c".into(), text, "xtask".into()];
                words.extend(args.iter().cloned());
                Ok(crate::ssh::command(
                    target,
                    s.in_dir.then_some(dir.as_str()),
                    &words,
                ))
            }
            _ => {
                let mut c = Cmd::new(s.shell())
                    .arg("-c")
                    .arg(text)
                    .arg("xtask")
                    .args(args);
                if s.in_dir {
                    c = c.dir(self.local_dir());
                }
                self.local_env_as(c, login)
            }
        }
    }

    /// Run a script file of the repository (`rel`, e.g. `infra/scripts/backup-db.sh`) with `bash`
    /// and the variables `vars`: from the checkout here, from the synced copy in `remote_dir` on a
    /// server. `compose_var` names a variable that receives the Compose CLI words of the one
    /// decision (`docker compose` or `docker-compose`) where the script runs.
    pub fn run_file(
        &self,
        rel: &str,
        vars: &[(String, String)],
        compose_var: Option<&str>,
    ) -> Result<Cmd> {
        match &self.at {
            At::Ssh { target, dir } => {
                let mut words = vec!["env".to_string()];
                words.extend(vars.iter().map(|(k, v)| format!("{k}={v}")));
                words.extend(["bash".to_string(), rel.to_string()]);
                Ok(match compose_var {
                    None => crate::ssh::command(target, Some(dir), &words),
                    Some(var) => {
                        let mut a = vec![var.to_string()];
                        a.extend(words);
                        let s = Script::sh(WITH_COMPOSE_VAR_SH).with_compose();
                        crate::ssh::script(target, Some(dir), &s.text(), &a)
                    }
                })
            }
            At::Local { .. } | At::Compose { .. } => {
                let mut c = Cmd::new("bash").arg(crate::environments::repo_root()?.join(rel));
                for (k, v) in vars {
                    c = c.env(k, v);
                }
                if let (Some(var), At::Compose { cli }) = (compose_var, &self.at) {
                    c = c.env(var, cli.words().join(" "));
                }
                self.local_env(c)
            }
        }
    }

    /// The Compose project as the host sees it; `None` for the `local` host (no Compose there).
    pub fn compose_project(&self) -> Option<ComposeProject> {
        let env = &self.env;
        match &self.at {
            At::Local { .. } => None,
            At::Compose { .. } => Some(ComposeProject {
                project: env.compose_project.clone(),
                files: std::iter::once(&env.compose_file)
                    .chain(&env.compose_overrides)
                    .map(|p| p.display().to_string())
                    .collect(),
                env_file: env.env_file.as_ref().map(|p| p.display().to_string()),
            }),
            At::Ssh { .. } => Some(ComposeProject {
                project: env.compose_project.clone(),
                files: std::iter::once(env.compose_file_rel.display().to_string())
                    .chain(env.compose_overrides.iter().map(|p| remote_path(env, p)))
                    .collect(),
                env_file: env.env_file_rel.as_ref().map(|p| p.display().to_string()),
            }),
        }
    }

    fn no_compose(&self) -> Error {
        Error::usage(format!(
            "environment `{}` runs PostgreSQL and Redis as processes on this machine, not in Compose",
            self.env.name
        ))
    }

    /// `compose -p P -f F... [--env-file E] ARGS...` with the one Compose CLI, `STATION_TAG=tag`
    /// when given (exit 2 for the `local` host, which has no Compose project).
    pub fn compose<S: AsRef<str>>(&self, tag: Option<&str>, args: &[S]) -> Result<Cmd> {
        let project = self.compose_project().ok_or_else(|| self.no_compose())?;
        let args = args.iter().map(|a| a.as_ref().to_string());
        match &self.at {
            At::Compose { cli } => {
                let mut c = cli.base().args(project.args()).args(args);
                if let Some(t) = tag {
                    c = c.env("STATION_TAG", t);
                }
                Ok(c)
            }
            At::Ssh { target, dir } => {
                let mut a = vec![dir.clone(), tag.unwrap_or("").to_string()];
                a.extend(project.args());
                a.extend(args);
                Ok(crate::ssh::script(
                    target,
                    None,
                    &Script::sh(COMPOSE_SH).with_compose().text(),
                    &a,
                ))
            }
            At::Local { .. } => Err(self.no_compose()),
        }
    }

    /// `compose exec -T SERVICE WORDS...`: a command inside a running service's container.
    pub fn compose_exec<S: AsRef<str>>(&self, service: &str, words: &[S]) -> Result<Cmd> {
        let mut a = vec!["exec".to_string(), "-T".into(), service.to_string()];
        a.extend(words.iter().map(|w| w.as_ref().to_string()));
        self.compose(None, &a)
    }

    /// A fixed `sh` script (positional args) where the environment's PostgreSQL server runs: on
    /// this machine (`local`, whose cluster is a process here), in the postgres service's
    /// container (Compose, on this machine or over SSH), so that paths the server reports (its data
    /// directory) mean what they say.
    pub fn script_at_db(&self, s: &Script<'_>, args: &[String]) -> Result<Cmd> {
        match &self.at {
            At::Local { .. } => self.script(&s.anywhere(), args),
            _ => {
                let mut words = vec![s.shell().to_string(), "-c".into(), s.text(), "xtask".into()];
                words.extend(args.iter().cloned());
                self.compose_exec(&self.env.services.postgres, &words)
            }
        }
    }

    /// `compose up -d ...` / `pull` / `ps` / `stop` / `start` are [`Host::compose`] with those words;
    /// this is `up -d --wait` bounded by `wait_secs` (the local rollout).
    pub fn compose_up_wait(&self, tag: &str, wait_secs: u64) -> Result<Cmd> {
        self.compose(
            Some(tag),
            &[
                "up",
                "-d",
                "--wait",
                "--wait-timeout",
                &wait_secs.to_string(),
            ],
        )
    }

    /// The words of a Compose command for a script that was given [`Script::with_compose`]
    /// (`compose -p .. exec ..`), e.g. a psql command piped into inside a script.
    pub fn compose_words<S: AsRef<str>>(&self, args: &[S]) -> Result<Vec<String>> {
        let project = self.compose_project().ok_or_else(|| self.no_compose())?;
        let mut w = vec!["compose".to_string()];
        w.extend(project.args());
        w.extend(args.iter().map(|a| a.as_ref().to_string()));
        Ok(w)
    }

    /// A fixed command (the environment's `migration_command`) in the environment's directory with
    /// `COMPOSE_FILE`, `COMPOSE_PROJECT_NAME`, `COMPOSE_ENV_FILES` and `STATION_TAG` set.
    pub fn in_project(&self, tag: &str, words: &[String]) -> Result<Cmd> {
        let (program, rest) = words
            .split_first()
            .ok_or_else(|| Error::usage("an empty command"))?;
        let env = &self.env;
        match &self.at {
            At::Ssh { target, dir } => {
                let project = self.compose_project().ok_or_else(|| self.no_compose())?;
                let env_file = env
                    .env_file
                    .as_deref()
                    .map(|p| remote_path(env, p))
                    .unwrap_or_default();
                let mut a = vec![
                    dir.clone(),
                    std::iter::once(&env.compose_file)
                        .chain(&env.compose_overrides)
                        .map(|p| remote_path(env, p))
                        .collect::<Vec<_>>()
                        .join(":"),
                    project.project,
                    env_file,
                    tag.to_string(),
                ];
                a.extend(words.iter().cloned());
                Ok(crate::ssh::script(target, None, IN_PROJECT_SH, &a))
            }
            _ => {
                let dir = env
                    .compose_file
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default();
                let files: Vec<String> = std::iter::once(&env.compose_file)
                    .chain(&env.compose_overrides)
                    .map(|p| p.display().to_string())
                    .collect();
                let mut c = Cmd::new(program)
                    .args(rest)
                    .dir(dir)
                    .env("COMPOSE_FILE", files.join(":"))
                    .env("COMPOSE_PROJECT_NAME", &env.compose_project)
                    .env("STATION_TAG", tag);
                if let Some(f) = &env.env_file {
                    c = c.env("COMPOSE_ENV_FILES", f.display().to_string());
                }
                Ok(c)
            }
        }
    }

    /// Put `bytes` at `name` (relative) in the environment's directory, atomically, with `mode`
    /// (`0644`): a temp file beside it, then `mv`. The bytes travel on stdin.
    pub fn put_file(&self, name: &str, mode: &str, bytes: Vec<u8>) -> Result<Cmd> {
        let dir = match &self.at {
            At::Ssh { dir, .. } => dir.clone(),
            _ => self.local_dir().display().to_string(),
        };
        Ok(self
            .script(
                &Script::sh(PUT_FILE_SH).anywhere(),
                &[dir, name.to_string(), mode.to_string()],
            )?
            .stdin_bytes(bytes)
            .timeout(Duration::from_secs(60)))
    }

    /// Append `bytes` to the file `path` on the host (created 0600).
    pub fn append_file(&self, path: &str, bytes: Vec<u8>) -> Result<Cmd> {
        Ok(self
            .script(&Script::sh(APPEND_FILE_SH).anywhere(), &[path.to_string()])?
            .stdin_bytes(bytes)
            .timeout(Duration::from_secs(30)))
    }

    /// `psql [-U user] [-d DB] -X -q -v ON_ERROR_STOP=1 EXTRA...` words as the database user (`-U
    /// db_user` in the postgres container; libpq variables on this machine, where `-d` is left out
    /// for the environment's own database, which `PGDATABASE` names). Compose words start with
    /// `compose`: use them in a [`Script::with_compose`] script.
    pub fn psql_words(&self, db: &str, extra: &[&str]) -> Vec<String> {
        self.psql_words_as(db, Login::Owner, extra)
    }

    /// [`Host::psql_words`] logging in as `login`: `-U <role>` in the postgres container (whose
    /// socket the official image trusts, as it does for `db_user`); on this machine the role comes
    /// from the environment [`Host::script_as`] / [`Host::psql_as`] give.
    pub fn psql_words_as(&self, db: &str, login: Login<'_>, extra: &[&str]) -> Vec<String> {
        let env = &self.env;
        let local = matches!(self.at, At::Local { .. });
        let mut psql: Vec<String> = vec!["psql".into()];
        if !local {
            let user = match login {
                Login::Owner => env.db_user.as_str(),
                Login::Socket(role) => role,
            };
            psql.extend(["-U".to_string(), user.to_string()]);
        }
        if !local || db != env.database {
            psql.extend(["-d".to_string(), db.to_string()]);
        }
        psql.extend(PSQL_OPTS.iter().map(|s| s.to_string()));
        psql.extend(extra.iter().map(|s| s.to_string()));
        if local {
            return psql;
        }
        let mut a = vec![
            "exec".to_string(),
            "-T".into(),
            env.services.postgres.clone(),
        ];
        a.extend(psql);
        self.compose_words(&a)
            .expect("compose hosts have a project")
    }

    /// `psql` against database `db` as the database user: SQL on stdin (`-f -`) or in `extra`
    /// (`-c`). On this machine with `PGPASSWORD` as a secret env; in Compose through `compose exec
    /// -T <postgres> psql -U <db_user>` (the container trusts its own socket). `db` may be the
    /// maintenance database `postgres` (CREATE/ALTER/DROP DATABASE).
    pub fn psql(&self, db: &str, extra: &[&str]) -> Result<Cmd> {
        self.psql_as(db, Login::Owner, extra)
    }

    /// [`Host::psql`] logging in as `login`.
    pub fn psql_as(&self, db: &str, login: Login<'_>, extra: &[&str]) -> Result<Cmd> {
        let words = self.psql_words_as(db, login, extra);
        match &self.at {
            At::Local { .. } => self.local_env_as(Cmd::new(&words[0]).args(&words[1..]), login),
            _ => self.compose(None, &words[1..]),
        }
    }

    /// `rclone ARGS...` where the environment's backup remote is configured: on this machine with
    /// the local remote's variables (and without `AWS_CA_BUNDLE`, which breaks Debian's rclone), on
    /// a server with the server's own rclone configuration.
    pub fn rclone<S: AsRef<str>>(&self, args: &[S]) -> Cmd {
        let args: Vec<String> = args.iter().map(|a| a.as_ref().to_string()).collect();
        match &self.at {
            At::Ssh { target, dir } => {
                let mut words = vec!["rclone".to_string()];
                words.extend(args);
                crate::ssh::command(target, Some(dir), &words)
            }
            At::Local { rclone_env, .. } => {
                let mut c =
                    with_real_path(Cmd::new("rclone").env_remove("AWS_CA_BUNDLE")).args(args);
                for (k, v) in rclone_env {
                    c = c.env(k, v);
                }
                c
            }
            At::Compose { .. } => {
                with_real_path(Cmd::new("rclone").env_remove("AWS_CA_BUNDLE")).args(args)
            }
        }
    }

    /// Check that the host answers (SSH: the pinned host key, exit 3 otherwise). A no-op here.
    pub fn probe(&self) -> Result<()> {
        match &self.at {
            At::Ssh { target, .. } => crate::ssh::probe(target),
            _ => Ok(()),
        }
    }

    /// The command [`Host::probe`] runs, for plans.
    pub fn probe_cmd(&self) -> Option<Cmd> {
        self.remote().map(|r| {
            crate::ssh::command(r.target, None, &["true".to_string()])
                .timeout(Duration::from_secs(20))
        })
    }

    /// Whether a failed command could not reach what it needed (exit 3 material): the server
    /// (ssh's own 255), the database (libpq's "could not connect", "Connection refused", a
    /// connection lost mid-way: [`CONNECTION_LOST`]), or the container it execs into (Compose's
    /// `service "postgres" is not running`, no Docker engine). A command's own failure (an SQL
    /// error, a migration that fails) is none of these.
    pub fn unreachable(&self, out: &Output) -> bool {
        if out.status.success() {
            return false;
        }
        (matches!(self.at, At::Ssh { .. }) && out.status.code() == Some(255))
            || unreachable_text(&out.stderr_str())
    }

    /// Whether a failed Compose command names a service the project does not have (`no such
    /// service: postgres`): the environments file and the compose file disagree (exit 2).
    pub fn misconfigured(&self, out: &Output) -> bool {
        !out.status.success() && out.stderr_str().contains("no such service")
    }
}

/// What libpq, Compose and Docker print when the database, the container or the engine cannot be
/// reached (matched case-insensitively in a failed command's stderr).
pub const CONNECTION_LOST: [&str; 11] = [
    // libpq: connecting
    "could not connect to server",
    "connection refused",
    "could not translate host name",
    "no route to host",
    "network is unreachable",
    "timeout expired",
    // libpq: the connection went away mid-session
    "server closed the connection unexpectedly",
    "no connection to the server",
    // Compose / Docker: the container or the engine
    "is not running",
    "cannot connect to the docker daemon",
    "is the docker daemon running",
];

/// Whether `stderr` holds one of [`CONNECTION_LOST`].
pub fn unreachable_text(stderr: &str) -> bool {
    let s = stderr.to_ascii_lowercase();
    CONNECTION_LOST.iter().any(|p| s.contains(p))
}

/// What stands for a withheld line of a PostgreSQL error (see [`without_row_data`]).
pub const WITHHELD: &str = "(DETAIL/CONTEXT withheld: it may quote row data)";

/// What stands for a value an error line quotes (see [`without_row_data`]).
pub const WITHHELD_VALUE: &str = "(value withheld)";

/// A psql/PostgreSQL error text without the parts that quote the data: `DETAIL:` (`Failing row
/// contains (...)`, `Key (...)=(...)`) and `CONTEXT:` (`COPY t, line 5: "..."`) lines, with the
/// lines that continue them (a value holding a newline), each run replaced by [`WITHHELD`]; and
/// the value a message quotes last, after a colon (`invalid input syntax for type integer:
/// "..."`, `malformed array literal: "..."`), replaced by [`WITHHELD_VALUE`] (names such as
/// `relation "t"` are kept). The one filter for every error text that goes to output and the
/// audit log (restore's replay, the drill's, migrate's session): production data belongs in
/// neither.
pub fn without_row_data(stderr: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut withholding = false;
    for line in stderr.lines() {
        // psql prefixes a message's first line with its source (`psql:<stdin>:12: `).
        let l = line.trim_start();
        let l = match l.strip_prefix("psql:") {
            Some(rest) => rest.splitn(3, ':').nth(2).unwrap_or(rest).trim_start(),
            None => l,
        };
        if l.starts_with("DETAIL:") || l.starts_with("CONTEXT:") {
            if !withholding {
                out.push(WITHHELD.to_string());
            }
            withholding = true;
            continue;
        }
        if withholding && !starts_a_message(l) {
            // A continuation line of the withheld part.
            continue;
        }
        withholding = false;
        // A message that ends quoting a value: the value goes (and, when it holds a newline, the
        // lines that continue it).
        match line.rfind(": \"") {
            Some(i) if starts_a_message(l) && !l.starts_with("LINE ") => {
                let rest = &line[i + 3..];
                out.push(format!("{}: \"{WITHHELD_VALUE}\"", &line[..i]));
                withholding = !rest.contains('"');
            }
            _ => out.push(line.to_string()),
        }
    }
    out.join("\n")
}

/// A line that begins a message of its own (not the continuation of a `DETAIL:`'s value).
fn starts_a_message(l: &str) -> bool {
    const LEVELS: [&str; 10] = [
        "ERROR:",
        "FATAL:",
        "PANIC:",
        "WARNING:",
        "NOTICE:",
        "INFO:",
        "LOG:",
        "HINT:",
        "STATEMENT:",
        "LINE ",
    ];
    l.is_empty() || LEVELS.iter().any(|p| l.starts_with(p)) || l.starts_with("psql")
}

/// Turn a finished host command into a result: 255 (ssh's own failure) and 3 are exit 3, 2 is bad
/// input, anything else failed. The message names `what` and the command's stderr.
pub fn outcome(what: &str, out: Output) -> Result<String> {
    let stdout = out.stdout_str();
    if out.status.success() {
        return Ok(stdout);
    }
    let msg = format!(
        "{what}: remote command {}: {}",
        describe(out.status),
        out.stderr_str().trim()
    );
    Err(match out.status.code() {
        Some(255) | Some(3) => Error::unavailable(msg),
        Some(2) => Error::usage(msg),
        _ => Error::failed(msg),
    })
}

/// The remote directory of a server environment (exit 2 when it has none).
pub fn remote_dir(env: &Environment) -> Result<&str> {
    env.remote_dir
        .as_deref()
        .ok_or_else(|| Error::usage(format!("environment `{}` has no remote_dir", env.name)))
}

/// A file of the environment as it lies in the server's directory: its path relative to the
/// repository root (where `compose_file` was resolved from). The one remote layout, used by sync,
/// Compose, backup and verify-redis alike.
pub fn remote_path(env: &Environment, p: &Path) -> String {
    let depth = env.compose_file_rel.components().count();
    env.compose_file
        .ancestors()
        .nth(depth)
        .and_then(|root| p.strip_prefix(root).ok())
        .unwrap_or(p)
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::environments::Environments;

    fn envs() -> Environments {
        crate::environments::testing::repo_with_staging_override(Path::new("/repo"))
    }

    #[test]
    fn server_layout_keeps_repository_paths() {
        let envs = envs();
        let h = Host::planned(envs.get("staging").unwrap()).unwrap();
        let p = h.compose_project().unwrap();
        assert_eq!(
            p.files,
            [
                "docker-compose.staging.yml",
                "infra/e2e/docker-compose.e2e.yml"
            ]
        );
        assert_eq!(p.env_file.as_deref(), Some(".env.staging"));
        assert!(h.remote().is_some());
        assert!(h.local_paths().is_none());
    }

    #[test]
    fn server_commands_are_quoted_scripts_with_the_one_compose_decision() {
        let envs = envs();
        let h = Host::planned(envs.get("staging").unwrap()).unwrap();
        let c = h.compose(Some("abc1234"), &["pull"]).unwrap();
        assert_eq!(c.program(), "ssh");
        let remote = c.get_args().last().unwrap();
        // One shell-quoted remote command line that defines `compose` from the shared snippet.
        assert!(remote.contains("xtask_compose_cli()"), "{remote}");
        let words = shlex::split(&remote).unwrap();
        assert_eq!(&words[..2], ["sh", "-c"]);
        assert_eq!(
            &words[3..],
            [
                "xtask",
                "/opt/station-staging",
                "abc1234",
                "-p",
                "station-staging",
                "-f",
                "docker-compose.staging.yml",
                "-f",
                "infra/e2e/docker-compose.e2e.yml",
                "--env-file",
                ".env.staging",
                "pull"
            ]
        );
        // psql as the database user in the postgres container.
        let psql = h.psql("postgres", &["-c", "SELECT 1"]).unwrap();
        let words = shlex::split(&psql.get_args().last().unwrap()).unwrap();
        let tail = &words[words.len() - 14..];
        assert_eq!(
            tail,
            [
                "exec",
                "-T",
                "postgres",
                "psql",
                "-U",
                "station",
                "-d",
                "postgres",
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                "SELECT 1"
            ]
        );
    }

    #[test]
    fn a_database_or_container_out_of_reach_is_unreachable_and_a_missing_service_is_usage() {
        use std::os::unix::process::ExitStatusExt;
        let out = |code: i32, err: &str| Output {
            status: std::process::ExitStatus::from_raw(code << 8),
            stdout: Vec::new(),
            stderr: err.as_bytes().to_vec(),
        };
        let envs = envs();
        let local = Host::planned(envs.get("local").unwrap()).unwrap();
        let ssh = Host::planned(envs.get("staging").unwrap()).unwrap();
        for err in [
            "psql: error: connection to server at \"127.0.0.1\", port 5432 failed: Connection refused\n\tIs the server running on that host and accepting TCP/IP connections?",
            "psql: could not connect to server: No such file or directory",
            "server closed the connection unexpectedly\n\tThis probably means the server terminated abnormally",
            "service \"postgres\" is not running",
            "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?",
        ] {
            assert!(local.unreachable(&out(2, err)), "{err}");
            assert!(!local.misconfigured(&out(2, err)), "{err}");
        }
        // A command's own failure is not "unreachable", whatever its code.
        for (code, err) in [
            (1, "ERROR:  relation \"x\" does not exist"),
            (2, "FATAL:  database \"nope\" does not exist"),
            (3, "ERROR:  syntax error at or near \"x\""),
        ] {
            assert!(!local.unreachable(&out(code, err)), "{err}");
            assert!(!ssh.unreachable(&out(code, err)), "{err}");
        }
        // ssh's own 255 only over ssh; success never.
        assert!(ssh.unreachable(&out(255, "")));
        assert!(!local.unreachable(&out(255, "")));
        assert!(!local.unreachable(&out(0, "is not running")));
        assert!(local.misconfigured(&out(1, "no such service: postgress")));
    }

    #[test]
    fn a_script_at_the_database_runs_in_the_postgres_container_or_here() {
        let envs = envs();
        let s = Script::sh("df -Pk -- \"$1\"");
        // Over SSH: compose exec in the postgres service, the script and its argument quoted.
        let ssh = Host::planned(envs.get("staging").unwrap()).unwrap();
        let c = ssh.script_at_db(&s, &["/var/lib/my data".into()]).unwrap();
        let words = shlex::split(&c.get_args().last().unwrap()).unwrap();
        let tail = &words[words.len() - 8..];
        assert_eq!(
            tail,
            [
                "exec",
                "-T",
                "postgres",
                "sh",
                "-c",
                "df -Pk -- \"$1\"",
                "xtask",
                "/var/lib/my data"
            ]
        );
        // (Locally it is `sh` on this machine, where the cluster runs: tests/restore_local.rs.)
    }

    #[test]
    fn the_local_host_has_no_compose_project() {
        let envs = envs();
        let h = Host::planned(envs.get("local").unwrap()).unwrap();
        assert!(h.compose_project().is_none());
        assert_eq!(
            h.compose(None, &["ps"]).unwrap_err().exit_code(),
            crate::ExitCode::Usage
        );
        // The local cluster's own database comes from PGDATABASE; any other is named.
        assert_eq!(
            h.psql_words("station", &["-c", "SELECT 1"]),
            [
                "psql",
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                "SELECT 1"
            ]
        );
        assert_eq!(
            h.psql_words("postgres", &["-c", "SELECT 1"])[..3],
            ["psql", "-d", "postgres"]
        );
    }
}
