//! One Compose project on this machine's engine, driven through the detected Compose CLI: up, wait
//! healthy, exec, restart, kill, down. Every command is an argument vector; the Redis password is
//! only ever expanded by the shell inside the container (`$REDIS_PASSWORD` from its environment).

use std::time::{Duration, Instant};

use crate::docker::ComposeCli;
use crate::environments::Environment;
use crate::error::{Error, Result};
use crate::process::Cmd;

/// `redis-cli` inside the redis container, authenticated from the container's own environment:
/// the password is on no command line, ours or the container's. Arguments follow as `"$@"`.
pub const REDIS_CLI_SH: &str =
    r#"REDISCLI_AUTH="$REDIS_PASSWORD" exec redis-cli --no-auth-warning "$@""#;

/// A Compose project: the CLI plus `-p <project> -f <file>... --env-file <file>`.
#[derive(Clone, Debug)]
pub struct Stack {
    pub cli: ComposeCli,
    pub args: Vec<String>,
    pub redis: String,
}

const SHORT: Duration = Duration::from_secs(60);
const LONG: Duration = Duration::from_secs(180);

impl Stack {
    pub fn of(cli: &ComposeCli, env: &Environment) -> Stack {
        Stack {
            cli: *cli,
            args: env.compose_args(),
            redis: env.services.redis.clone(),
        }
    }

    /// The project name (`-p <name>`).
    pub fn project(&self) -> Option<&str> {
        match self.args.as_slice() {
            [p, name, ..] if p == "-p" => Some(name),
            _ => None,
        }
    }

    /// `docker compose <project args>`.
    pub fn cmd(&self) -> Cmd {
        self.cli.base().args(&self.args)
    }

    fn run(&self, what: &[&str], limit: Duration) -> Result<String> {
        self.cmd().args(what).timeout(limit).read()
    }

    /// `up -d <services>` (never `--build`: the images are ours, `pull_policy: never`).
    pub fn up(&self, services: &[&str]) -> Result<()> {
        let mut a = vec!["up", "-d"];
        a.extend_from_slice(services);
        self.run(&a, LONG).map(drop)
    }

    pub fn restart(&self, service: &str) -> Result<()> {
        self.run(&["restart", service], SHORT).map(drop)
    }

    pub fn start(&self, service: &str) -> Result<()> {
        self.run(&["start", service], SHORT).map(drop)
    }

    /// `down` keeping the volumes.
    pub fn down_keep_volumes(&self) -> Result<()> {
        self.run(&["down", "--remove-orphans"], SHORT).map(drop)
    }

    /// `down -v --remove-orphans`: containers, networks and the project's volumes.
    pub fn down_all(&self) -> Result<()> {
        self.run(&["down", "-v", "--remove-orphans"], SHORT)
            .map(drop)
    }

    /// The container id of a service (also when it is stopped), from `ps -a -q <service>`.
    pub fn container(&self, service: &str) -> Result<String> {
        let out = self
            .cmd()
            .args(["ps", "-a", "-q", service])
            .timeout(SHORT)
            .output()?;
        let text = if out.status.success() {
            out.stdout_str()
        } else {
            // Older Compose releases have no `-a`; their `ps -q` lists stopped containers too.
            self.run(&["ps", "-q", service], SHORT)?
        };
        let ids: Vec<&str> = text.split_whitespace().collect();
        match ids.as_slice() {
            [one] => Ok(one.to_string()),
            [] => Err(Error::failed(format!(
                "service `{service}` has no container"
            ))),
            _ => Err(Error::failed(format!(
                "service `{service}` has {} containers, expected one",
                ids.len()
            ))),
        }
    }

    /// `docker compose exec -T <service> <argv...>` with `stdin` fed to it; fails on non-zero.
    pub fn exec(&self, service: &str, argv: &[&str], stdin: Option<Vec<u8>>) -> Result<String> {
        let mut c = self
            .cmd()
            .args(["exec", "-T", service])
            .args(argv)
            .timeout(SHORT);
        if let Some(bytes) = stdin {
            c = c.stdin_bytes(bytes);
        }
        c.read()
    }

    /// `redis-cli <args>` in the redis container (see [`REDIS_CLI_SH`]).
    pub fn redis_cli(&self, args: &[&str], stdin: Option<Vec<u8>>) -> Result<String> {
        let mut argv = vec!["sh", "-c", REDIS_CLI_SH, "sh"];
        argv.extend_from_slice(args);
        self.exec(&self.redis, &argv, stdin)
    }

    /// `redis-check-aof` on the AOF manifest inside the redis container: its verdict line.
    pub fn check_aof(&self) -> Result<String> {
        let out = self.exec(
            &self.redis,
            &[
                "redis-check-aof",
                "/data/appendonlydir/appendonly.aof.manifest",
            ],
            None,
        )?;
        Ok(out.lines().last().unwrap_or("").trim().to_string())
    }

    /// Wait (bounded) until every service's container is running and healthy.
    pub fn wait_healthy(&self, services: &[&str], limit: Duration) -> Result<()> {
        let start = Instant::now();
        for service in services {
            let id = self.container(service)?;
            loop {
                let state = inspect(
                    &id,
                    "{{.State.Status}}|{{if .State.Health}}{{.State.Health.Status}}{{end}}",
                )?;
                match state.split_once('|') {
                    Some(("running", "healthy")) => break,
                    Some((status @ ("exited" | "dead"), _)) | Some((_, status @ "unhealthy")) => {
                        return Err(Error::failed(format!(
                            "service `{service}` is {status}; its last log lines:\n{}",
                            logs(&id)
                        )))
                    }
                    _ => {}
                }
                if start.elapsed() > limit {
                    return Err(Error::failed(format!(
                        "service `{service}` not healthy within {}s (state {state}); its last log lines:\n{}",
                        limit.as_secs(),
                        logs(&id)
                    )));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        Ok(())
    }
}

/// `docker inspect --format <fmt> <id>`, trimmed.
pub fn inspect(id: &str, format: &str) -> Result<String> {
    Cmd::new("docker")
        .args(["inspect", "--format", format, id])
        .timeout(SHORT)
        .read()
        .map(|s| s.trim().to_string())
}

/// The last lines of a container's log, for failure messages.
pub fn logs(id: &str) -> String {
    Cmd::new("docker")
        .args(["logs", "--tail", "30", id])
        .timeout(SHORT)
        .output()
        .map(|o| format!("{}{}", o.stdout_str(), o.stderr_str()))
        .unwrap_or_else(|e| format!("(docker logs failed: {e})"))
}

/// `docker kill -s KILL <id>`.
pub fn kill(id: &str) -> Result<()> {
    Cmd::new("docker")
        .args(["kill", "-s", "KILL", id])
        .timeout(SHORT)
        .read()
        .map(drop)
}

/// The fields of `INFO` output (`key:value`, split on the first `:`; `\r` and headers dropped).
pub fn info_fields(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn info_field<'a>(fields: &'a [(String, String)], key: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_is_split_on_the_first_colon() {
        let f = info_fields("# Persistence\r\nloading:0\r\naof_enabled:1\r\nx:a:b\r\n\r\n");
        assert_eq!(info_field(&f, "aof_enabled"), Some("1"));
        assert_eq!(info_field(&f, "x"), Some("a:b"));
        assert_eq!(info_field(&f, "Persistence"), None);
    }

    #[test]
    fn redis_cli_wrapper_expands_the_password_only_inside_the_container() {
        // Run the wrapper with a fake redis-cli: the password reaches it through the environment.
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("redis-cli");
        std::fs::write(&fake, "#!/bin/sh\nprintf '%s|' \"$REDISCLI_AUTH\" \"$@\"\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!(
            "{}:{}",
            dir.path().display(),
            std::env::var("PATH").unwrap()
        );
        let out = Cmd::new("sh")
            .args(["-c", REDIS_CLI_SH, "sh", "INFO", "persistence"])
            .env("PATH", path)
            .secret_env("REDIS_PASSWORD", "p w")
            .read()
            .unwrap();
        assert_eq!(out, "p w|--no-auth-warning|INFO|persistence|");
    }
}
