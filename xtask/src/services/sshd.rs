//! A real `sshd` on a loopback port, for tests: a throwaway host key pinned in a known_hosts file (and
//! a second, wrong one), a throwaway user key allowed to log in as the current user, key auth only.
//! Everything lives in a temp directory (0755) that goes away with the server, killed on drop.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::process::{self, Cmd};

/// How to start the server.
#[derive(Debug, Clone, Default)]
pub struct SshdOptions {
    /// Variables every session gets (`SetEnv`), e.g. `RCLONE_CONFIG` or `PATH`. No spaces in values.
    pub set_env: Vec<(String, String)>,
}

impl SshdOptions {
    /// Sessions get this process's `PATH` and `RCLONE_CONFIG=rclone_conf` (a "server" whose rclone
    /// remotes are its own).
    pub fn with_rclone_config(rclone_conf: &Path) -> SshdOptions {
        SshdOptions {
            set_env: vec![
                ("RCLONE_CONFIG".into(), rclone_conf.display().to_string()),
                ("PATH".into(), std::env::var("PATH").unwrap_or_default()),
            ],
        }
    }
}

/// A running sshd.
#[derive(Debug)]
pub struct Sshd {
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl Sshd {
    /// Generate the keys, write the config, start `/usr/sbin/sshd -D -e -f` and wait (bounded) until
    /// it accepts connections. Exit 3 when sshd or ssh-keygen is missing.
    pub fn start(opts: SshdOptions) -> Result<Sshd> {
        let sshd = ["/usr/sbin/sshd", "/usr/local/sbin/sshd"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .or_else(|| process::which("sshd").filter(|p| p.is_absolute()))
            .ok_or_else(|| process::missing_tool("sshd"))?;
        process::require("ssh-keygen")?;
        if let Some((k, v)) = opts
            .set_env
            .iter()
            .find(|(k, v)| k.is_empty() || k.contains(['=', ' ']) || v.contains([' ', '\n']))
        {
            return Err(Error::usage(format!(
                "sshd SetEnv {k}={v}: names without `=`/spaces, values without spaces"
            )));
        }
        let dir = tempfile::Builder::new()
            .prefix("xtask-sshd-")
            .tempdir()
            .map_err(|e| Error::unavailable(format!("cannot create a temp dir: {e}")))?;
        let d = dir.path();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| Error::write(d, e))?;
        for k in ["host_key", "other_host_key", "user_key"] {
            Cmd::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "xtask-test", "-f"])
                .arg(d.join(k))
                .timeout(Duration::from_secs(30))
                .read()?;
        }
        let copy = |from: &str, to: &str| {
            std::fs::copy(d.join(from), d.join(to)).map_err(|e| Error::write(&d.join(to), e))
        };
        copy("user_key.pub", "authorized_keys")?;
        let port = super::free_port()?;
        for (key, file) in [
            ("host_key", "known_hosts"),
            ("other_host_key", "wrong_known_hosts"),
        ] {
            let path = d.join(format!("{key}.pub"));
            let pubkey = std::fs::read_to_string(&path)
                .map_err(|e| Error::failed(format!("{}: {e}", path.display())))?;
            let mut it = pubkey.split_whitespace();
            let (Some(kind), Some(b64)) = (it.next(), it.next()) else {
                return Err(Error::failed(format!(
                    "{}: not a public key",
                    path.display()
                )));
            };
            let line = format!("[127.0.0.1]:{port} {kind} {b64}\n");
            std::fs::write(d.join(file), line).map_err(|e| Error::write(&d.join(file), e))?;
        }
        let mut config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nPermitRootLogin prohibit-password\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nPubkeyAuthentication yes\n\
             LogLevel ERROR\n",
            d = d.display(),
        );
        if !opts.set_env.is_empty() {
            let vars: Vec<String> = opts
                .set_env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            config.push_str(&format!("SetEnv {}\n", vars.join(" ")));
        }
        let config_file = d.join("sshd_config");
        std::fs::write(&config_file, config).map_err(|e| Error::write(&config_file, e))?;
        if super::is_root() {
            // Privilege separation directory (systemd creates it on a real server).
            std::fs::create_dir_all("/run/sshd")
                .map_err(|e| Error::write(Path::new("/run/sshd"), e))?;
        }
        let log_file = d.join("sshd.log");
        let log = std::fs::File::create(&log_file).map_err(|e| Error::write(&log_file, e))?;
        let child = Command::new(&sshd)
            .args(["-D", "-e", "-f"])
            .arg(&config_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| Error::unavailable(format!("cannot start {}: {e}", sshd.display())))?;
        let mut server = Sshd { port, child, dir };
        if let Err(e) = super::wait_for_port(port, Duration::from_secs(10)) {
            let log = std::fs::read_to_string(&log_file).unwrap_or_default();
            let exited = server.child.try_wait().ok().flatten();
            return Err(match exited {
                Some(status) => Error::unavailable(format!(
                    "sshd {}: {}",
                    process::describe(status),
                    log.trim()
                )),
                None => e.context(format!("sshd: {}", log.trim())),
            });
        }
        Ok(server)
    }

    /// The server's directory (keys, config, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A known_hosts file pinning this server's host key.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir().join("known_hosts")
    }

    /// A known_hosts file with another key for this server's address (must be refused).
    pub fn wrong_known_hosts(&self) -> PathBuf {
        self.dir().join("wrong_known_hosts")
    }

    /// The private key the server accepts.
    pub fn user_key(&self) -> PathBuf {
        self.dir().join("user_key")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ssh(s: &Sshd, known_hosts: &Path, command: &str) -> process::Output {
        let user = Cmd::new("id").arg("-un").read().unwrap();
        Cmd::new("ssh")
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
            ])
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .arg("-i")
            .arg(s.user_key())
            .args(["-p", &s.port.to_string()])
            .arg(format!("{}@127.0.0.1", user.trim()))
            .arg(command)
            .timeout(Duration::from_secs(30))
            .output()
            .unwrap()
    }

    #[test]
    fn the_pinned_key_logs_in_with_set_env_and_the_wrong_one_is_refused() {
        let s = Sshd::start(SshdOptions {
            set_env: vec![("XTASK_SSHD_TEST".into(), "set-by-sshd".into())],
        })
        .unwrap();
        let out = ssh(&s, &s.known_hosts(), "echo \"$XTASK_SSHD_TEST\"");
        assert!(out.status.success(), "{}", out.stderr_str());
        assert_eq!(out.stdout_str().trim(), "set-by-sshd");
        let out = ssh(&s, &s.wrong_known_hosts(), "true");
        assert_eq!(out.status.code(), Some(255), "{}", out.stderr_str());
        assert!(
            out.stderr_str().contains("HOST IDENTIFICATION HAS CHANGED")
                || out.stderr_str().contains("Host key verification failed"),
            "{}",
            out.stderr_str()
        );
        let pid = s.pid();
        drop(s);
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "sshd outlived its drop"
        );
    }

    #[test]
    fn a_set_env_value_with_a_space_is_bad_input() {
        let e = Sshd::start(SshdOptions {
            set_env: vec![("A".into(), "b c".into())],
        })
        .unwrap_err();
        assert_eq!(e.exit_code(), crate::error::ExitCode::Usage, "{e}");
    }
}
