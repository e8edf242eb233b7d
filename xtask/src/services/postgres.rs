//! A real PostgreSQL cluster in a directory we own, on a loopback port.
//!
//! PostgreSQL refuses to run as root, so when we are root every server-side binary runs as the
//! `postgres` user (`runuser -u postgres --`) and the data directory belongs to it. Settings go into
//! `postgresql.conf` (never through `pg_ctl -o`, which pg_ctl hands to a shell).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::process::{self, Cmd};

/// The user server binaries run as when we are root.
pub const RUN_AS: &str = "postgres";

/// Directory holding `initdb`, `pg_ctl` and `postgres`: on PATH, else the newest
/// `/usr/lib/postgresql/<major>/bin` (Debian does not put server binaries on PATH).
pub fn server_bin_dir() -> Result<PathBuf> {
    if let Some(p) = process::which("pg_ctl") {
        if let Some(d) = p.parent() {
            if d.join("initdb").exists() {
                return Ok(d.to_path_buf());
            }
        }
    }
    let mut majors: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_ctl").exists().then_some((v, bin))
        })
        .collect();
    majors.sort();
    majors
        .pop()
        .map(|(_, b)| b)
        .ok_or_else(|| process::missing_tool("initdb"))
}

/// uid and gid of a user, from /etc/passwd.
pub fn user_ids(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 3 && f[0] == user).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

/// A cluster: data directory, port, superuser, and whether server binaries run as `postgres`.
#[derive(Clone, Debug)]
pub struct Cluster {
    pub data_dir: PathBuf,
    pub socket_dir: PathBuf,
    pub log_file: PathBuf,
    pub port: u16,
    pub superuser: String,
    bin: PathBuf,
    run_as: Option<String>,
}

impl Cluster {
    /// Describe a cluster living in `base` (`base/data`, `base/run`, `base/postgres.log`).
    pub fn at(base: &Path, port: u16, superuser: &str) -> Result<Self> {
        Ok(Cluster {
            data_dir: base.join("data"),
            socket_dir: Self::socket_dir_of(base),
            log_file: base.join("postgres.log"),
            port,
            superuser: superuser.to_string(),
            bin: server_bin_dir()?,
            run_as: super::is_root().then(|| RUN_AS.to_string()),
        })
    }

    /// The socket directory of a cluster living in `base`.
    pub fn socket_dir_of(base: &Path) -> PathBuf {
        base.join("run")
    }

    fn server_cmd(&self, tool: &str) -> Cmd {
        let exe = self.bin.join(tool);
        match &self.run_as {
            Some(user) => Cmd::new("runuser").args(["-u", user, "--"]).arg(exe),
            None => Cmd::new(exe),
        }
    }

    /// Make `dir` (and the directories above it) usable by the server user.
    fn own(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::write(dir, e))?;
        if let Some(user) = &self.run_as {
            let (uid, gid) = user_ids(user).ok_or_else(|| {
                Error::unavailable(format!(
                    "running as root needs the `{user}` user: apt-get install postgresql"
                ))
            })?;
            std::os::unix::fs::chown(dir, Some(uid), Some(gid))
                .map_err(|e| Error::write(dir, e))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| Error::write(dir, e))?;
        }
        Ok(())
    }

    pub fn is_initialized(&self) -> bool {
        self.data_dir.join("PG_VERSION").exists()
    }

    /// `initdb` with a superuser whose password comes from a 0600 file (never argv), scram on
    /// TCP, and the port / socket directory / loopback-only listening written to postgresql.conf.
    pub fn init(&self, password: &str) -> Result<()> {
        let base = self.data_dir.parent().unwrap_or(Path::new("/"));
        self.own(base)?;
        self.own(&self.socket_dir)?;
        let pwfile = base.join(".pwfile");
        crate::files::write_atomic(&pwfile, password.as_bytes(), crate::files::Mode::Private)?;
        if let Some(user) = &self.run_as {
            if let Some((uid, gid)) = user_ids(user) {
                let _ = std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid));
            }
        }
        let out = self
            .server_cmd("initdb")
            .arg("-D")
            .arg(&self.data_dir)
            .args([
                "-U",
                &self.superuser,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .timeout(Duration::from_secs(120))
            .output();
        let _ = std::fs::remove_file(&pwfile);
        let out = out?;
        if !out.status.success() {
            return Err(Error::failed(format!(
                "initdb failed: {}",
                out.stderr_str().trim()
            )));
        }
        let conf = format!(
            "\n# written by cargo xtask\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = on\n",
            self.port,
            self.socket_dir.display()
        );
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.data_dir.join("postgresql.conf"))
            .map_err(|e| Error::write(&self.data_dir, e))?;
        f.write_all(conf.as_bytes())
            .map_err(|e| Error::write(&self.data_dir, e))?;
        Ok(())
    }

    /// Start the server in the background and wait until it accepts connections.
    pub fn start(&self) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        // The log file must be writable by the server user.
        self.server_cmd("pg_ctl")
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&self.log_file)
            .args(["-w", "-t", "60", "start"])
            .timeout(Duration::from_secs(90))
            .output()
            .and_then(|o| {
                if o.status.success() {
                    Ok(())
                } else {
                    let log = std::fs::read_to_string(&self.log_file).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(5).collect();
                    Err(Error::unavailable(format!(
                        "PostgreSQL did not start: {} {}",
                        o.stderr_str().trim(),
                        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                    )))
                }
            })
    }

    pub fn is_running(&self) -> bool {
        self.server_cmd("pg_ctl")
            .arg("-D")
            .arg(&self.data_dir)
            .arg("status")
            .timeout(Duration::from_secs(10))
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// Stop (fast mode). Stopping a cluster that is not running is not an error.
    pub fn stop(&self) -> Result<()> {
        if !self.is_initialized() || !self.is_running() {
            return Ok(());
        }
        self.server_cmd("pg_ctl")
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-m", "fast", "-w", "-t", "60", "stop"])
            .timeout(Duration::from_secs(90))
            .read()
            .map(|_| ())
            .map_err(|e| {
                e.context(format!(
                    "PostgreSQL in {} did not stop (see {})",
                    self.data_dir.display(),
                    self.log_file.display()
                ))
            })
    }

    /// libpq connection variables (TCP on loopback). The password is not included: pass it as
    /// `PGPASSWORD` with [`Cmd::secret_env`].
    pub fn pg_env(&self, database: &str) -> Vec<(&'static str, String)> {
        vec![
            ("PGHOST", "127.0.0.1".to_string()),
            ("PGPORT", self.port.to_string()),
            ("PGUSER", self.superuser.clone()),
            ("PGDATABASE", database.to_string()),
        ]
    }

    /// A client command (`psql`, `pg_dump`, ...) against this cluster.
    pub fn client(&self, tool: &str, database: &str, password: &str) -> Cmd {
        let mut c = Cmd::new(tool).env_remove("PGSERVICE");
        for (k, v) in self.pg_env(database) {
            c = c.env(k, v);
        }
        c.secret_env("PGPASSWORD", password)
    }

    /// Run SQL with `psql -X -v ON_ERROR_STOP=1` and return its unaligned, tuples-only output.
    pub fn psql(&self, database: &str, password: &str, sql: &str) -> Result<String> {
        self.client("psql", database, password)
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .timeout(Duration::from_secs(60))
            .read()
    }
}

/// A temporary directory the `postgres` user can traverse (0711), for test clusters.
pub fn temp_base() -> Result<tempfile::TempDir> {
    let d = tempfile::Builder::new()
        .prefix("xtask-pg-")
        .tempdir()
        .map_err(|e| Error::unavailable(format!("cannot create a temp dir: {e}")))?;
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o711))
        .map_err(|e| Error::write(d.path(), e))?;
    Ok(d)
}
