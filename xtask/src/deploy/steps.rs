//! Steps as data: each deploy step yields its [`StepPlan`], the ordered [`Action`]s it takes on the
//! environment's [`Host`]. The runner executes a plan; `--dry-run` prints the same plan. Commands
//! are [`Cmd`]s (secrets are secret envs or stdin, shown as `***` or `< file`); work xtask does
//! itself (the lock, the backup, the migration, verify-redis, `local up`) is a [`Call`] shown as
//! the command a user would type.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::Result;
use crate::git::Sha;
use crate::host::Host;
use crate::process::{Cmd, Output};

use super::plan::{PlannedStep, Step};
use super::remote;
use super::Args;

/// What an executed [`Action::Run`] says in the step's message.
#[derive(Clone, Debug)]
pub enum Note {
    /// The command's trimmed stdout.
    Stdout,
    /// This text.
    Text(String),
    /// The stdout lists these services (`compose ps --services`): fails naming a missing one.
    Services(Vec<String>),
}

/// Work the runner does itself (in-process, through other commands' modules).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// These tools are on PATH (exit 3 naming the package otherwise).
    Tools(Vec<&'static str>),
    /// `cargo xtask compose check` for the environment's compose file.
    ComposeCheck,
    /// `cargo xtask local up` (idempotent), then enough free disk under the state directory.
    LocalUp,
    /// The local cluster and redis-server are running.
    LocalRunning,
    /// The Docker engine answers and the env file exists.
    Engine,
    /// The SSH known_hosts file exists (the host key is pinned).
    KnownHosts,
    /// Take the deploy lock.
    Lock,
    /// `backup::create` with the release's label.
    Backup,
    /// The created object, once more from here (`VerifiedBackup`).
    VerifyBackup,
    /// `migrate::apply` with the verified backup.
    Migrate,
    /// `verify_redis::verify_environment`.
    VerifyRedis,
}

/// One thing a step does.
#[derive(Clone, Debug)]
pub enum Action {
    /// Run a command on the host; a failure is mapped by `host::outcome(what)`.
    Run {
        what: String,
        cmd: Cmd,
        /// The command's stdin is this file's content (read when the action runs).
        stdin_file: Option<PathBuf>,
        /// Print the command's stderr (Compose progress) after it ran.
        echo_stderr: bool,
        note: Note,
    },
    /// Run the commands until each prints its expected line, `tries` rounds 2 s apart.
    Poll {
        checks: Vec<(Cmd, &'static str)>,
        tries: u32,
    },
    /// Work the runner does itself; `shown` is what a dry run prints for it.
    Call { call: Call, shown: Vec<String> },
}

impl Action {
    fn run(what: impl Into<String>, cmd: Cmd, note: Note) -> Action {
        Action::Run {
            what: what.into(),
            cmd,
            stdin_file: None,
            echo_stderr: false,
            note,
        }
    }

    fn call(call: Call, shown: &[String]) -> Action {
        Action::Call {
            call,
            shown: shown.to_vec(),
        }
    }

    /// The lines a dry run prints for this action (the commands, secrets redacted).
    pub fn shown(&self) -> Vec<String> {
        match self {
            Action::Run {
                cmd, stdin_file, ..
            } => vec![match stdin_file {
                Some(f) => format!("{} < {}", cmd.display(), f.display()),
                None => cmd.display(),
            }],
            Action::Poll { checks, .. } => checks.iter().map(|(c, _)| c.display()).collect(),
            Action::Call { shown, .. } => shown.clone(),
        }
    }
}

/// A step's plan: what it does, in words and as actions.
#[derive(Clone, Debug)]
pub struct StepPlan {
    pub step: Step,
    pub what: String,
    pub actions: Vec<Action>,
}

impl StepPlan {
    /// The plan as a dry run shows it (and as `--dry-run --json` prints it).
    pub fn planned(&self) -> PlannedStep {
        let mut p = PlannedStep::new(self.step, self.what.clone());
        for a in &self.actions {
            for line in a.shown() {
                p = match a {
                    Action::Call { .. } => p.call(line),
                    _ => p.text(line),
                };
            }
        }
        p
    }
}

/// What a plan needs to know besides the host.
pub struct Ctx<'a> {
    pub host: &'a Host,
    pub root: &'a std::path::Path,
    pub sha: &'a Sha,
    pub args: &'a Args,
}

/// The plan of `step` for the context's host.
pub fn plan(step: Step, cx: &Ctx<'_>) -> Result<StepPlan> {
    let host = cx.host;
    let env = host.env();
    let sha = cx.sha;
    let mut actions = Vec::new();
    let what: String = match step {
        Step::Preflight => {
            actions.push(Action::call(Call::Tools(host.tools()), &[]));
            actions.push(Action::call(
                Call::ComposeCheck,
                &[format!("cargo xtask compose check --env {}", env.name)],
            ));
            let place = if host.local_paths().is_some() {
                actions.push(Action::call(
                    Call::LocalUp,
                    &[format!("cargo xtask local up --env {}", env.name)],
                ));
                ", and bring the local environment up (`cargo xtask local up`, idempotent)"
            } else if let Some(probe) = host.probe_cmd() {
                actions.push(Action::call(Call::KnownHosts, &[]));
                actions.push(Action::run(
                    "ssh",
                    probe,
                    Note::Text(format!("ssh {} with the pinned host key", host.describe())),
                ));
                actions.push(Action::run(
                    "server preflight",
                    remote::preflight_cmd(host)?,
                    Note::Stdout,
                ));
                ", SSH with the pinned host key, the server's docker/compose/env file/disk"
            } else {
                actions.push(Action::call(Call::Engine, &[]));
                ", the Docker engine and the env file"
            };
            format!(
                "check tools ({}), `cargo xtask compose check`, free disk{place}",
                host.tools().join(", ")
            )
        }
        Step::Lock => {
            let place = super::runner::lock_place(host, cx.root);
            actions.push(Action::call(Call::Lock, &[]));
            format!(
                "take the deploy lock {} (TTL {}s{})",
                place.describe(),
                cx.args.lock_ttl,
                if cx.args.force_unlock {
                    ", breaking a stale lock"
                } else {
                    ""
                }
            )
        }
        Step::Sync => {
            for (local, name, mode) in remote::files_to_sync(env, cx.root) {
                actions.push(Action::Run {
                    what: format!("copying {name}"),
                    cmd: host.put_file(&name, mode, Vec::new())?,
                    stdin_file: Some(local),
                    echo_stderr: false,
                    note: Note::Text(format!("copied {name}")),
                });
            }
            format!(
                "copy the files the server needs into {} (stdin → temp file → mv)",
                crate::host::remote_dir(env)?
            )
        }
        Step::Backup => {
            actions.push(Action::call(
                Call::Backup,
                &[format!(
                    "cargo xtask backup --env {} --label {}",
                    env.name,
                    sha.backup_label()
                )],
            ));
            format!(
                "back up the database with LABEL={} through `cargo xtask backup` (infra/scripts/backup-db.sh) into {}",
                sha.backup_label(),
                env.backup.base()
            )
        }
        Step::VerifyBackup => {
            actions.push(Action::call(
                Call::VerifyBackup,
                &[format!(
                    "rclone lsjson --hash {}/YYYYMM/<object of the backup step>",
                    env.backup.base()
                )],
            ));
            "check that the uploaded object exists remotely with the size and hash the upload reported".into()
        }
        Step::Migrate => {
            actions.push(Action::call(
                Call::Migrate,
                &crate::migrate::plan_commands(env, sha)?,
            ));
            format!(
                "run the migrations ({}) with the verified backup",
                env.migration_command_text
            )
        }
        Step::Rollout => {
            if host.local_paths().is_some() {
                actions.push(Action::call(Call::LocalRunning, &[]));
                "nothing to pull: check that PostgreSQL and redis-server run".into()
            } else if host.remote().is_some() {
                for words in [&["pull"][..], &["up", "-d", "--remove-orphans"]] {
                    actions.push(Action::run(
                        format!("compose {}", words.join(" ")),
                        host.compose(Some(sha.as_str()), words)?
                            .timeout(Duration::from_secs(900)),
                        Note::Text(format!("compose {}", words.join(" "))),
                    ));
                }
                format!("pull and start the release {} on the server", sha.as_str())
            } else {
                // Captured (not inherited) so `--json` keeps stdout for the report.
                actions.push(Action::Run {
                    what: "compose up".into(),
                    cmd: host
                        .compose_up_wait(sha.as_str(), 180)?
                        .timeout(Duration::from_secs(300)),
                    stdin_file: None,
                    echo_stderr: true,
                    note: Note::Text("compose up -d --wait".into()),
                });
                "start the compose project".into()
            }
        }
        Step::Health => {
            let tries = cx.args.health_tries;
            if host.local_paths().is_some() {
                let pg = host
                    .psql(&env.database, &["-A", "-t", "-c", "SELECT 1"])?
                    .timeout(Duration::from_secs(10));
                let redis = crate::local::Local::open(env)?
                    .redis_cli()
                    .arg("PING")
                    .timeout(Duration::from_secs(10));
                actions.push(Action::Poll {
                    checks: vec![(pg, "1"), (redis, "PONG")],
                    tries,
                });
                format!("poll PostgreSQL (SELECT 1) and Redis (PING), {tries} tries 2 s apart")
            } else if host.remote().is_some() {
                if env.health_url.is_empty() {
                    return Err(crate::error::Error::usage(format!(
                        "environment `{}` has no health_url",
                        env.name
                    )));
                }
                actions.push(Action::run(
                    "health",
                    remote::health_cmd(host, &env.health_url, tries)?,
                    Note::Stdout,
                ));
                format!(
                    "poll {} from the server, {tries} tries 2 s apart",
                    env.health_url
                )
            } else {
                actions.push(Action::run(
                    "compose ps",
                    host.compose(None, &["ps", "--status", "running", "--services"])?
                        .timeout(Duration::from_secs(60)),
                    Note::Services(vec![
                        env.services.postgres.clone(),
                        env.services.redis.clone(),
                    ]),
                ));
                "check that the postgres and redis services run".into()
            }
        }
        Step::VerifyRedis => {
            actions.push(Action::call(
                Call::VerifyRedis,
                &[format!("cargo xtask verify-redis --env {}", env.name)],
            ));
            "ask the live Redis whether its data survives a crash (INFO persistence, CONFIG GET)"
                .into()
        }
    };
    Ok(StepPlan {
        step,
        what,
        actions,
    })
}

/// The plan of every step for `--dry-run` (nothing runs). A step whose commands cannot be built
/// yet (the local environment is not up, so its ports and passwords do not exist) says so.
pub fn dry_run(cx: &Ctx<'_>, steps: &[Step]) -> Result<Vec<PlannedStep>> {
    let mut out = Vec::new();
    for &step in steps {
        out.push(match plan(step, cx) {
            Ok(p) => p.planned(),
            Err(e) if cx.host.local_paths().is_some() => PlannedStep::new(
                step,
                format!("its commands are known once `cargo xtask local up` has run ({e})"),
            ),
            Err(e) => return Err(e),
        });
    }
    Ok(out)
}

/// Runs the commands of a plan. The deploy uses [`Real`]; tests record what a run executes.
pub trait Executor {
    /// Run `cmd` and capture its output.
    fn output(&mut self, cmd: &Cmd) -> Result<Output>;
    /// Stand in for a [`Call`] (tests): `None` runs it for real.
    fn call(&mut self, _call: &Call, _shown: &[String]) -> Option<Result<Option<String>>> {
        None
    }
}

/// Runs commands for real. With `XTASK_DEPLOY_TRACE=<file>`, each command is appended to the file
/// first, as `--dry-run` shows it (secrets redacted): what a real run executed, to compare with the
/// plan.
#[derive(Debug, Default)]
pub struct Real;

impl Executor for Real {
    fn output(&mut self, cmd: &Cmd) -> Result<Output> {
        if let Some(path) = std::env::var_os("XTASK_DEPLOY_TRACE").filter(|p| !p.is_empty()) {
            use std::io::Write;
            let path = PathBuf::from(path);
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut f| writeln!(f, "{}", cmd.display()))
                .map_err(|e| crate::error::Error::write(&path, e))?;
        }
        cmd.output()
    }
}
