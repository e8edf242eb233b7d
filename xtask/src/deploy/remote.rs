//! What a deploy does on a server (ssh environments), on top of [`Host`]: the preflight and health
//! scripts (`preflight.sh`, `health.sh`, fixed text with positional arguments) and the files the
//! server needs. The remote layout itself (`remote_dir`, repository-relative paths) lives in
//! `host`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::environments::{Environment, SshTarget};
use crate::error::{Error, Result};
use crate::host::{self, Host, Script};
use crate::process::{Cmd, Output};

/// Free disk space the server needs in `remote_dir` before a deploy (KiB).
pub const MIN_FREE_KB: u64 = 1024 * 1024;

/// Preflight on the server: docker, the Compose CLI, the env file, free disk.
const PREFLIGHT: Script = Script::sh(include_str!("preflight.sh"))
    .with_compose()
    .anywhere();

/// Bounded health polling from the server: `$1` URL, `$2` tries, 2 s apart.
const HEALTH: Script = Script::sh(include_str!("health.sh")).anywhere();

/// The server's preflight (exit 3 missing tool or Compose CLI, 2 missing env file, 1 short of disk).
pub fn preflight_cmd(host: &Host) -> Result<Cmd> {
    let env = host.env();
    let envfile = env
        .env_file
        .as_deref()
        .map(|p| host::remote_path(env, p))
        .unwrap_or_default();
    Ok(host
        .script(
            &PREFLIGHT,
            &[
                host::remote_dir(env)?.to_string(),
                envfile,
                MIN_FREE_KB.to_string(),
            ],
        )?
        .timeout(Duration::from_secs(60)))
}

/// Files the server needs, as (local path, remote name, mode).
pub fn files_to_sync(env: &Environment, root: &Path) -> Vec<(PathBuf, String, &'static str)> {
    let mut v: Vec<_> = std::iter::once(&env.compose_file)
        .chain(&env.compose_overrides)
        .map(|p| (p.clone(), host::remote_path(env, p), "0644"))
        .collect();
    // The same relative path as in the repository: `cargo xtask backup` runs it from there.
    v.push((
        root.join(crate::backup::SCRIPT),
        crate::backup::SCRIPT.to_string(),
        "0755",
    ));
    v
}

/// Poll the health URL from the host.
pub fn health_cmd(host: &Host, url: &str, tries: u32) -> Result<Cmd> {
    Ok(host
        .script(&HEALTH, &[url.to_string(), tries.to_string()])?
        .timeout(Duration::from_secs(20 + 8 * tries as u64)))
}

/// Append stdin to a file on the server (the remote audit log).
pub fn append_cmd(t: &SshTarget, file: &str, bytes: Vec<u8>) -> Cmd {
    crate::ssh::script(t, None, host::APPEND_FILE_SH, &[file.to_string()])
        .stdin_bytes(bytes)
        .timeout(Duration::from_secs(30))
}

/// See [`host::outcome`].
pub fn check(what: &str, out: Output) -> Result<String> {
    host::outcome(what, out)
}

/// Read a file the server needs (exit 1 naming it when it cannot be read).
pub fn read_for_sync(local: &Path) -> Result<Vec<u8>> {
    std::fs::read(local).map_err(|e| {
        Error::failed(format!(
            "{}: cannot read a file the server needs: {e}",
            local.display()
        ))
    })
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
