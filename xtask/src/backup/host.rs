//! Where backup commands run, per transport: the script, rclone and psql as argument vectors on this
//! machine (`local`, `docker`) or as shell-quoted words over SSH (`ssh`). Secrets only in the child's
//! environment (`PGPASSWORD` for the local cluster); on servers the container and rclone hold them.

use crate::environments::{Environment, SshTarget, Transport};
use crate::error::Result;
use crate::local::state::{LocalPaths, LocalState};
use crate::process::Cmd;

/// The script, relative to the repository root and to an SSH environment's `remote_dir` (the deploy
/// pipeline syncs it there before it runs).
pub const SCRIPT: &str = "infra/scripts/backup-db.sh";

/// Bounded rclone retries/timeouts for everything xtask runs itself (list, stat, drill download).
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

/// Defines `compose` for the fixed scripts below: `$XTASK_COMPOSE_CMD`, else whichever CLI runs.
const PRELUDE: &str = r#"set -Eeuo pipefail
compose() {
  local c
  if [ -n "${XTASK_COMPOSE_CMD:-}" ]; then
    read -r -a c <<<"$XTASK_COMPOSE_CMD"
  elif docker compose version >/dev/null 2>&1; then
    c=(docker compose)
  else
    c=(docker-compose)
  fi
  "${c[@]}" "$@"
}
"#;

/// How one environment is reached.
#[derive(Clone, Debug)]
pub enum Host {
    /// The local cluster and an rclone remote on this machine.
    Local {
        state: LocalState,
        rclone_env: Vec<(String, String)>,
    },
    /// A Compose project on this machine's engine.
    Docker { compose_cmd: String },
    /// A Compose project on a server, in `dir`.
    Ssh { target: SshTarget, dir: String },
}

impl Host {
    pub fn of(env: &Environment) -> Result<Host> {
        Ok(match env.transport {
            Transport::Local => {
                let paths = LocalPaths::of(env)?;
                Host::Local {
                    state: LocalState::load(env)?,
                    rclone_env: LocalState::rclone_env(env, &paths),
                }
            }
            Transport::Docker => Host::Docker {
                compose_cmd: crate::docker::ComposeCli::detect()?.words().join(" "),
            },
            Transport::Ssh => Host::Ssh {
                target: env.ssh_target()?,
                dir: env.remote_dir.clone().unwrap_or_else(|| "/".into()),
            },
        })
    }

    /// libpq variables for the local cluster (password separately, as a secret).
    fn pg_env(env: &Environment, state: &LocalState) -> Vec<(String, String)> {
        vec![
            ("PGHOST".into(), "127.0.0.1".into()),
            ("PGPORT".into(), state.pg_port.to_string()),
            ("PGUSER".into(), env.db_user.clone()),
            ("PGDATABASE".into(), env.database.clone()),
        ]
    }

    /// A local command with this host's environment (rclone remote, libpq, no AWS_CA_BUNDLE).
    fn local_cmd(&self, env: &Environment, program: impl Into<std::ffi::OsString>) -> Cmd {
        let mut c = Cmd::new(program)
            .env_remove("AWS_CA_BUNDLE")
            .env_remove("PGSERVICE");
        match self {
            Host::Local { state, rclone_env } => {
                for (k, v) in rclone_env.iter().chain(&Self::pg_env(env, state)) {
                    c = c.env(k, v);
                }
                c.secret_env("PGPASSWORD", &state.pg_password)
            }
            Host::Docker { compose_cmd } => c.env("XTASK_COMPOSE_CMD", compose_cmd),
            Host::Ssh { .. } => c,
        }
    }

    /// `bash backup-db.sh` with the environment variables it documents.
    pub fn script(&self, env: &Environment, label: &str) -> Result<Cmd> {
        self.script_with(env, label, None)
    }

    /// [`Host::script`] with `BACKUP_GIT_SHA` (validated by the caller: 40 lowercase hex).
    pub fn script_with(
        &self,
        env: &Environment,
        label: &str,
        git_sha: Option<&str>,
    ) -> Result<Cmd> {
        let mut vars: Vec<(String, String)> = vec![
            ("LABEL".into(), label.to_string()),
            ("BACKUP_REMOTE".into(), env.backup.remote.clone()),
            ("BACKUP_BUCKET".into(), env.backup.bucket.clone()),
            ("BACKUP_PREFIX".into(), env.backup.prefix.clone()),
        ];
        if let Some(g) = git_sha {
            vars.push(("BACKUP_GIT_SHA".into(), g.to_string()));
        }
        let compose_vars = |files: Vec<String>, env_file: Option<String>| {
            let mut v: Vec<(String, String)> = vec![
                ("BACKUP_MODE".into(), "compose".into()),
                ("BACKUP_COMPOSE_PROJECT".into(), env.compose_project.clone()),
                ("BACKUP_COMPOSE_FILES".into(), files.join(":")),
                (
                    "BACKUP_COMPOSE_SERVICE".into(),
                    env.services.postgres.clone(),
                ),
                ("BACKUP_DB_USER".into(), env.db_user.clone()),
                ("BACKUP_DB_NAME".into(), env.database.clone()),
            ];
            if let Some(f) = env_file {
                v.push(("BACKUP_COMPOSE_ENV_FILE".into(), f));
            }
            v
        };
        match self {
            Host::Local { .. } => {
                vars.push(("BACKUP_MODE".into(), "direct".into()));
                let script = crate::environments::repo_root()?.join(SCRIPT);
                let mut c = self.local_cmd(env, "bash").arg(script);
                for (k, v) in vars {
                    c = c.env(k, v);
                }
                Ok(c)
            }
            Host::Docker { compose_cmd } => {
                let files = std::iter::once(&env.compose_file)
                    .chain(&env.compose_overrides)
                    .map(|p| p.display().to_string())
                    .collect();
                vars.extend(compose_vars(
                    files,
                    env.env_file.as_ref().map(|p| p.display().to_string()),
                ));
                vars.push(("BACKUP_COMPOSE_CMD".into(), compose_cmd.clone()));
                let script = crate::environments::repo_root()?.join(SCRIPT);
                let mut c = self.local_cmd(env, "bash").arg(script);
                for (k, v) in vars {
                    c = c.env(k, v);
                }
                Ok(c)
            }
            Host::Ssh { target, dir } => {
                let files = crate::deploy::remote::remote_compose_file_list(env);
                vars.extend(compose_vars(
                    files,
                    env.env_file_rel.as_ref().map(|p| p.display().to_string()),
                ));
                let mut words = vec!["env".to_string()];
                words.extend(vars.into_iter().map(|(k, v)| format!("{k}={v}")));
                words.extend(["bash".to_string(), SCRIPT.to_string()]);
                Ok(crate::ssh::command(target, Some(dir), &words))
            }
        }
    }

    /// `rclone <args>` where the environment's rclone remote is configured.
    pub fn rclone(&self, env: &Environment, args: &[String]) -> Cmd {
        match self {
            Host::Ssh { target, dir } => {
                let mut words = vec!["rclone".to_string()];
                words.extend(args.iter().cloned());
                crate::ssh::command(target, Some(dir), &words)
            }
            _ => self.local_cmd(env, "rclone").args(args),
        }
    }

    /// `psql -X -v ON_ERROR_STOP=1 <extra> -d <db>` words as they run on the host (the local cluster
    /// through libpq variables; Compose through `compose exec -T <postgres> psql -U <user>`).
    pub fn psql_words(&self, env: &Environment, db: &str, extra: &[&str]) -> Vec<String> {
        let mut w: Vec<String> = match self {
            Host::Local { .. } => vec!["psql".into()],
            Host::Docker { .. } | Host::Ssh { .. } => {
                let mut w = vec!["compose".to_string()];
                w.extend(self.compose_args(env));
                w.extend([
                    "exec".into(),
                    "-T".into(),
                    env.services.postgres.clone(),
                    "psql".into(),
                    "-U".into(),
                    env.db_user.clone(),
                ]);
                w
            }
        };
        w.extend(["-X", "-q", "-v", "ON_ERROR_STOP=1"].map(String::from));
        w.extend(extra.iter().map(|s| s.to_string()));
        w.extend(["-d".to_string(), db.to_string()]);
        w
    }

    fn compose_args(&self, env: &Environment) -> Vec<String> {
        match self {
            Host::Ssh { .. } => crate::deploy::remote::remote_compose_args(env),
            _ => env.compose_args(),
        }
    }

    /// Run a fixed bash script (our text, never user input) with positional arguments on the host.
    pub fn bash(&self, env: &Environment, script: &str, args: &[String]) -> Cmd {
        let text = format!("{PRELUDE}{script}");
        match self {
            Host::Ssh { target, dir } => {
                let mut words = vec!["bash".to_string(), "-c".into(), text, "xtask".into()];
                words.extend(args.iter().cloned());
                crate::ssh::command(target, Some(dir), &words)
            }
            _ => self
                .local_cmd(env, "bash")
                .arg("-c")
                .arg(text)
                .arg("xtask")
                .args(args),
        }
    }
}
