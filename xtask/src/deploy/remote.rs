//! Remote (ssh) environments: fixed scripts run by `sh -c` on the server with shell-quoted positional
//! arguments (`crate::ssh::script`). Nothing user-supplied is ever spliced into script text; file
//! contents and secrets travel on stdin.

use std::path::Path;
use std::time::Duration;

use crate::environments::{Environment, SshTarget};
use crate::error::{Error, Result};
use crate::process::{describe, Cmd, Output};
use crate::ssh;

/// Free disk space the server needs in `remote_dir` before a deploy (KiB).
pub const MIN_FREE_KB: u64 = 1024 * 1024;

/// `cd DIR; export COMPOSE_*; exec WORDS...`: compose commands in the environment's remote directory.
const COMPOSE_ENV: &str = r#"set -eu
cd "$1"
COMPOSE_FILE=$2; COMPOSE_PROJECT_NAME=$3; STATION_TAG=$5
export COMPOSE_FILE COMPOSE_PROJECT_NAME STATION_TAG
if [ -n "$4" ]; then COMPOSE_ENV_FILES=$4; export COMPOSE_ENV_FILES; fi
shift 5
exec "$@""#;

/// Preflight on the server: tools, the env file, free disk. Exit 3 missing tool, 2 missing env file,
/// 1 not enough disk.
const PREFLIGHT: &str = r#"set -eu
dir=$1; envfile=$2; min_kb=$3
command -v docker >/dev/null 2>&1 || { echo "docker is not installed on the server (apt-get install docker.io)" >&2; exit 3; }
docker compose version >/dev/null 2>&1 || { echo "the docker compose plugin is missing on the server (apt-get install docker-compose-plugin)" >&2; exit 3; }
mkdir -p "$dir"
if [ -n "$envfile" ] && [ ! -r "$dir/$envfile" ]; then echo "$dir/$envfile is missing on the server: copy it there (mode 0600)" >&2; exit 2; fi
avail=$(df -Pk "$dir" | awk 'NR==2 {print $4}')
if [ "$avail" -lt "$min_kb" ]; then echo "only ${avail} KiB free in $dir (need ${min_kb})" >&2; exit 1; fi
echo "server ok: docker, compose, env file, ${avail} KiB free"
"#;

/// Write stdin to `$1/$2` atomically (temp file in the same directory, then `mv`).
const PUT_FILE: &str = r#"set -eu
umask 077
dest="$1/$2"
dir=$(dirname "$dest")
mkdir -p "$dir"
tmp="$dir/.$(basename "$dest").xtask-tmp.$$"
trap 'rm -f "$tmp"' EXIT
cat > "$tmp"
chmod "$3" "$tmp"
mv -f "$tmp" "$dest"
trap - EXIT
"#;

/// Append stdin to `$1` (the remote audit log).
const APPEND: &str = r#"set -eu
umask 077
cat >> "$1"
chmod 600 "$1"
"#;

/// Bounded health polling from the server: `$1` URL, `$2` tries, 2 s apart.
const HEALTH: &str = r#"set -u
url=$1; tries=$2; i=0
while [ "$i" -lt "$tries" ]; do
  if command -v curl >/dev/null 2>&1; then
    curl -fsS -o /dev/null --max-time 5 "$url" && { echo "healthy: $url"; exit 0; }
  elif command -v wget >/dev/null 2>&1; then
    wget -q -O /dev/null -T 5 "$url" && { echo "healthy: $url"; exit 0; }
  else
    echo "neither curl nor wget on the server" >&2; exit 3
  fi
  i=$((i+1)); sleep 2
done
echo "no healthy answer from $url after $tries tries" >&2
exit 1
"#;

/// The remote directory of an ssh environment.
pub fn remote_dir(env: &Environment) -> Result<&str> {
    env.remote_dir
        .as_deref()
        .ok_or_else(|| Error::usage(format!("environment `{}` has no remote_dir", env.name)))
}

/// A file of the environment as it lies under `remote_dir`: its path relative to the repository
/// root, the layout `cargo xtask backup` (`backup::host`) and `verify-redis` (`remote_compose_args`)
/// use on the server too. The root is where `compose_file` was resolved from (`compose_file_rel`).
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

/// Compose files as they are stored in the remote directory (`a.yml:infra/x/b.yml`).
pub fn remote_compose_files(env: &Environment) -> String {
    std::iter::once(&env.compose_file)
        .chain(&env.compose_overrides)
        .map(|p| remote_path(env, p))
        .collect::<Vec<_>>()
        .join(":")
}

/// `-p P -f F [-f O]... [--env-file E]` as run in the environment's remote directory (`cargo xtask
/// backup` and `verify-redis` over SSH): the compose and env files as written in the environments
/// file, overrides by [`remote_path`].
pub fn remote_compose_args(env: &Environment) -> Vec<String> {
    let mut args = vec!["-p".to_string(), env.compose_project.clone()];
    for f in remote_compose_file_list(env) {
        args.extend(["-f".to_string(), f]);
    }
    if let Some(e) = &env.env_file_rel {
        args.extend(["--env-file".to_string(), e.display().to_string()]);
    }
    args
}

/// The compose files for [`remote_compose_args`] (and `backup-db.sh`'s `BACKUP_COMPOSE_FILES`).
pub fn remote_compose_file_list(env: &Environment) -> Vec<String> {
    std::iter::once(env.compose_file_rel.display().to_string())
        .chain(env.compose_overrides.iter().map(|p| remote_path(env, p)))
        .collect()
}

fn remote_env_file(env: &Environment) -> String {
    env.env_file
        .as_deref()
        .map(|p| remote_path(env, p))
        .unwrap_or_default()
}

/// A command run in the environment's remote directory with its compose settings exported.
pub fn compose_env_cmd(
    env: &Environment,
    t: &SshTarget,
    sha: &str,
    words: &[String],
) -> Result<Cmd> {
    let mut args = vec![
        remote_dir(env)?.to_string(),
        remote_compose_files(env),
        env.compose_project.clone(),
        remote_env_file(env),
        sha.to_string(),
    ];
    args.extend(words.iter().cloned());
    Ok(ssh::script(t, None, COMPOSE_ENV, &args))
}

pub fn preflight_cmd(env: &Environment, t: &SshTarget) -> Result<Cmd> {
    let envfile = remote_env_file(env);
    Ok(ssh::script(
        t,
        None,
        PREFLIGHT,
        &[
            remote_dir(env)?.to_string(),
            envfile,
            MIN_FREE_KB.to_string(),
        ],
    )
    .timeout(Duration::from_secs(60)))
}

/// Files the server needs, as (local path, remote name, mode).
pub fn files_to_sync(
    env: &Environment,
    root: &Path,
) -> Vec<(std::path::PathBuf, String, &'static str)> {
    let mut v: Vec<_> = std::iter::once(&env.compose_file)
        .chain(&env.compose_overrides)
        .map(|p| (p.clone(), remote_path(env, p), "0644"))
        .collect();
    // The same relative path as in the repository: `cargo xtask backup` runs it from there.
    v.push((
        root.join(crate::backup::host::SCRIPT),
        crate::backup::host::SCRIPT.to_string(),
        "0755",
    ));
    v
}

pub fn put_cmd(t: &SshTarget, dir: &str, name: &str, mode: &str, bytes: Vec<u8>) -> Cmd {
    ssh::script(
        t,
        None,
        PUT_FILE,
        &[dir.to_string(), name.to_string(), mode.to_string()],
    )
    .stdin_bytes(bytes)
    .timeout(Duration::from_secs(60))
}

pub fn append_cmd(t: &SshTarget, file: &str, bytes: Vec<u8>) -> Cmd {
    ssh::script(t, None, APPEND, &[file.to_string()])
        .stdin_bytes(bytes)
        .timeout(Duration::from_secs(30))
}

pub fn health_cmd(t: &SshTarget, url: &str, tries: u32) -> Cmd {
    ssh::script(t, None, HEALTH, &[url.to_string(), tries.to_string()])
        .timeout(Duration::from_secs(20 + 8 * tries as u64))
}

/// Turn a finished remote command into a result: ssh's own failures (255) are exit 3; the remote
/// script's codes keep their meaning (3 unavailable, 2 usage, anything else failed).
pub fn check(what: &str, out: Output) -> Result<String> {
    let stderr = out.stderr_str();
    let stdout = out.stdout_str();
    if out.status.success() {
        return Ok(stdout);
    }
    let msg = format!(
        "{what}: remote command {}: {}",
        describe(out.status),
        stderr.trim()
    );
    Err(match out.status.code() {
        Some(255) | Some(3) => Error::unavailable(msg),
        Some(2) => Error::usage(msg),
        _ => Error::failed(msg),
    })
}

/// Copy the files the server needs into the remote directory (each atomically).
pub fn sync(env: &Environment, t: &SshTarget, root: &Path) -> Result<Vec<String>> {
    let dir = remote_dir(env)?;
    let mut done = Vec::new();
    for (local, name, mode) in files_to_sync(env, root) {
        let bytes = std::fs::read(&local).map_err(|e| {
            Error::failed(format!(
                "{}: cannot read a file the server needs: {e}",
                local.display()
            ))
        })?;
        let cmd = put_cmd(t, dir, &name, mode, bytes);
        let out = cmd.output()?;
        check(&format!("copying {name}"), out)?;
        done.push(format!("{dir}/{name}"));
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::environments::Environments;

    #[test]
    fn files_keep_their_repository_paths_on_the_server() {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/environments.toml"),
        )
        .unwrap()
        .replace(
            "compose_project = \"station-staging\"",
            "compose_project = \"station-staging\"\ncompose_overrides = [\"infra/e2e/docker-compose.e2e.yml\"]",
        );
        let root = Path::new("/repo");
        let envs = Environments::parse(&text, Path::new("environments.toml"), root).unwrap();
        let env = envs.get("staging").unwrap();
        // The layout backup (`backup::host`) and verify-redis (`remote_compose_args`) use too.
        assert_eq!(
            remote_compose_files(env),
            "docker-compose.staging.yml:infra/e2e/docker-compose.e2e.yml"
        );
        assert_eq!(remote_env_file(env), ".env.staging");
        let names: Vec<String> = files_to_sync(env, root)
            .into_iter()
            .map(|(_, name, _)| name)
            .collect();
        assert_eq!(
            names,
            [
                "docker-compose.staging.yml",
                "infra/e2e/docker-compose.e2e.yml",
                "infra/scripts/backup-db.sh"
            ]
        );
    }
}
