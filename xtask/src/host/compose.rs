//! The Compose CLI decision, made once by [`COMPOSE_CLI_SH`] (plugin, else standalone v2+, 1.x
//! refused with exit 3): on this machine [`ComposeCli::detect`] runs that snippet, on servers it is
//! prepended to the scripts that call `compose`. There is no other place that picks a CLI.

use std::sync::OnceLock;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::process::Cmd;

/// Defines `xtask_compose_cli` (prints `plugin` or `standalone`, status 3 when neither is usable)
/// and `compose ARGS...` (runs the chosen CLI). POSIX `sh`.
pub const COMPOSE_CLI_SH: &str = include_str!("compose-cli.sh");

/// How to invoke Compose on this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ComposeCli {
    /// `docker compose ...` (the plugin, v2+).
    Plugin,
    /// `docker-compose ...`, a standalone Compose v2 or later.
    Standalone,
}

impl ComposeCli {
    /// Decide once per process with [`COMPOSE_CLI_SH`] (`XTASK_COMPOSE=plugin|standalone` forces a
    /// form). No usable CLI, or only Compose 1.x: exit 3 with the package to install.
    pub fn detect() -> Result<ComposeCli> {
        static CLI: OnceLock<std::result::Result<ComposeCli, String>> = OnceLock::new();
        CLI.get_or_init(|| {
            let out = Cmd::new("sh")
                .arg("-c")
                .arg(format!("{COMPOSE_CLI_SH}\nxtask_compose_cli\n"))
                .arg("xtask")
                .timeout(Duration::from_secs(40))
                .output()
                .map_err(|e| e.to_string())?;
            match out.stdout_str().trim() {
                "plugin" if out.status.success() => Ok(ComposeCli::Plugin),
                "standalone" if out.status.success() => Ok(ComposeCli::Standalone),
                _ => Err(out.stderr_str().trim().to_string()),
            }
        })
        .clone()
        .map_err(Error::unavailable)
    }

    /// A Compose command with no project arguments yet.
    pub fn base(&self) -> Cmd {
        let w = self.words();
        Cmd::new(&w[0]).args(&w[1..])
    }

    /// The words of [`ComposeCli::base`].
    pub fn words(&self) -> Vec<String> {
        match self {
            ComposeCli::Plugin => vec!["docker".into(), "compose".into()],
            ComposeCli::Standalone => vec!["docker-compose".into()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The snippet with fake `docker`/`docker-compose` on PATH: what it picks, and 1.x refused.
    fn pick(docker_compose_ok: bool, standalone_version: Option<&str>) -> (i32, String, String) {
        let d = tempfile::tempdir().unwrap();
        let write = |name: &str, body: &str| {
            use std::os::unix::fs::PermissionsExt;
            let p = d.path().join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        write(
            "docker",
            if docker_compose_ok {
                "exit 0"
            } else {
                "exit 1"
            },
        );
        if let Some(v) = standalone_version {
            write("docker-compose", &format!("echo {v}"));
        }
        let sh = crate::process::which("sh").unwrap();
        let out = Cmd::new(sh)
            .arg("-c")
            .arg(format!("{COMPOSE_CLI_SH}\nxtask_compose_cli"))
            .env("PATH", d.path())
            .env_remove("XTASK_COMPOSE")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            out.stdout_str().trim().to_string(),
            out.stderr_str(),
        )
    }

    #[test]
    fn plugin_first_then_standalone_v2_and_compose_1_is_refused() {
        assert_eq!(pick(true, Some("1.29.2")).1, "plugin");
        assert_eq!(pick(false, Some("2.24.6")).1, "standalone");
        assert_eq!(pick(false, Some("5.6.1")).1, "standalone");
        let (code, out, err) = pick(false, Some("1.29.2"));
        assert_eq!((code, out.as_str()), (3, ""));
        assert!(
            err.contains("Compose 1.x") && err.contains("docker-compose-plugin"),
            "{err}"
        );
        let (code, _, err) = pick(false, None);
        assert_eq!(code, 3);
        assert!(
            err.contains("apt-get install docker-compose-plugin"),
            "{err}"
        );
    }
}
