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

    /// The server preflight with fake `docker`/`docker-compose` first on PATH: a server with only a
    /// standalone Compose v2 passes (it used to fail: preflight wanted the plugin while backup and
    /// verify-redis fell back to `docker-compose`), Compose 1.x is refused with exit 3.
    #[test]
    fn preflight_takes_the_one_compose_decision() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("bin");
        let dir = d.path().join("srv");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(".env"), "").unwrap();
        let fake = |name: &str, body: &str| {
            let p = bin.join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        // `docker compose ...` is not there; `docker-compose` is, in the version under test.
        fake("docker", "exit 1");
        let run = |standalone: &str| {
            fake("docker-compose", &format!("echo {standalone}"));
            let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
            Cmd::new("sh")
                .arg("-c")
                .arg(PREFLIGHT.text())
                .args(["xtask", &dir.display().to_string(), ".env", "1"])
                .env("PATH", path)
                .env_remove("XTASK_COMPOSE")
                .output()
                .unwrap()
        };
        let v2 = run("2.27.0");
        assert!(v2.status.success(), "{}", v2.stderr_str());
        assert!(
            v2.stdout_str().contains("(Compose CLI: standalone)"),
            "{}",
            v2.stdout_str()
        );
        let v1 = run("1.29.2");
        assert_eq!(v1.status.code(), Some(3), "{}", v1.stdout_str());
        assert!(
            v1.stderr_str().contains("Compose 1.x"),
            "{}",
            v1.stderr_str()
        );
    }

    #[test]
    fn files_keep_their_repository_paths_on_the_server() {
        let root = Path::new("/repo");
        let envs = crate::environments::testing::repo_with_staging_override(root);
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
