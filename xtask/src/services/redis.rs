//! A real redis-server on a loopback port with its own directory.
//!
//! The password, when there is one, goes into a 0600 config file passed as the first argument
//! (`redis-server /dir/redis.conf --port ...`): never `--requirepass` on argv, where `ps` shows it.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::process;

/// What to start.
#[derive(Clone, Debug, Default)]
pub struct RedisConfig {
    /// Persistence and other arguments, e.g. `--appendonly yes --appendfsync everysec` (from compose).
    pub args: Vec<String>,
    pub password: Option<String>,
    /// Extra config-file lines (e.g. ACL `user` lines), written to the 0600 config file.
    pub config_lines: Vec<String>,
}

/// A running (or daemonized) redis-server.
#[derive(Debug)]
pub struct RedisServer {
    pub port: u16,
    pub dir: PathBuf,
    pub pidfile: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    fn argv(dir: &Path, port: u16, cfg: &RedisConfig, daemonize: bool) -> Result<Vec<String>> {
        std::fs::create_dir_all(dir).map_err(|e| Error::write(dir, e))?;
        let conf = dir.join("redis.conf");
        let mut text = String::from("# written by cargo xtask; mode 0600\n");
        if let Some(p) = &cfg.password {
            if p.contains(['\n', '\r', '"']) {
                return Err(Error::usage(
                    "the Redis password may not contain newlines or double quotes",
                ));
            }
            text.push_str(&format!("requirepass \"{p}\"\n"));
        }
        for l in &cfg.config_lines {
            text.push_str(l);
            text.push('\n');
        }
        crate::files::write_atomic(&conf, text.as_bytes(), crate::files::Mode::Private)?;
        let mut argv = vec![conf.display().to_string()];
        argv.extend(cfg.args.iter().cloned());
        // Ours come last: "last setting wins" for redis-server arguments.
        argv.extend([
            "--port".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--dir".into(),
            dir.display().to_string(),
            "--pidfile".into(),
            pidfile_in(dir).display().to_string(),
            "--logfile".into(),
            dir.join("redis.log").display().to_string(),
            "--daemonize".into(),
            if daemonize { "yes" } else { "no" }.into(),
        ]);
        Ok(argv)
    }

    /// Start as our child (killed on drop). For tests.
    pub fn spawn(dir: &Path, port: u16, cfg: &RedisConfig) -> Result<Self> {
        let exe = process::require("redis-server")?;
        let argv = Self::argv(dir, port, cfg, false)?;
        let child = Command::new(exe)
            .args(&argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error::unavailable(format!("cannot start redis-server: {e}")))?;
        let s = RedisServer {
            port,
            dir: dir.to_path_buf(),
            pidfile: pidfile_in(dir),
            child: Some(child),
        };
        super::wait_for_port(port, Duration::from_secs(20))?;
        Ok(s)
    }

    /// Start daemonized (survives this process; stop with [`RedisServer::stop_pidfile`]). For `local up`.
    pub fn daemonize(dir: &Path, port: u16, cfg: &RedisConfig) -> Result<Self> {
        let argv = Self::argv(dir, port, cfg, true)?;
        process::Cmd::new("redis-server")
            .args(&argv)
            .timeout(Duration::from_secs(20))
            .run()?;
        super::wait_for_port(port, Duration::from_secs(20))?;
        Ok(RedisServer {
            port,
            dir: dir.to_path_buf(),
            pidfile: pidfile_in(dir),
            child: None,
        })
    }

    /// PID of the server, if our child or in the pidfile.
    pub fn pid(&self) -> Option<u32> {
        self.child
            .as_ref()
            .map(|c| c.id())
            .or_else(|| read_pid(&self.pidfile))
    }

    /// SIGKILL the server (a crash, for durability tests) and reap it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        } else if let Some(pid) = read_pid(&self.pidfile) {
            let _ = process::Cmd::new("kill")
                .args(["-KILL", &pid.to_string()])
                .output();
        }
    }

    /// Whether something answers on the port.
    pub fn is_up(port: u16) -> bool {
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
            .is_ok()
    }

    /// Stop a daemonized server by its pidfile (SIGTERM: redis flushes the AOF and exits), waiting
    /// up to `limit`.
    pub fn stop_pidfile(pidfile: &Path, limit: Duration) -> Result<()> {
        let Some(pid) = read_pid(pidfile) else {
            return Ok(());
        };
        let _ = process::Cmd::new("kill")
            .args(["-TERM", &pid.to_string()])
            .output();
        let start = std::time::Instant::now();
        while Path::new(&format!("/proc/{pid}")).exists() {
            if start.elapsed() > limit {
                return Err(Error::failed(format!(
                    "redis-server (pid {pid}) did not stop within {}s",
                    limit.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Where a server started in `dir` writes its pid.
pub fn pidfile_in(dir: &Path) -> PathBuf {
    dir.join("redis.pid")
}

/// The pid in a pidfile, if that process is alive and is a redis-server: a stale pidfile (after a
/// reboot or a crash) may name a pid the system gave to an unrelated process, which we must never
/// signal.
pub fn read_pid(pidfile: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (comm.trim() == "redis-server").then_some(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_pidfile_naming_another_process_is_not_signalled() {
        let d = tempfile::tempdir().unwrap();
        let mut other = Command::new("sleep").arg("30").spawn().unwrap();
        let pidfile = d.path().join("redis.pid");
        std::fs::write(&pidfile, format!("{}\n", other.id())).unwrap();
        RedisServer::stop_pidfile(&pidfile, Duration::from_secs(2)).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let alive = other.try_wait().unwrap().is_none();
        let _ = other.kill();
        let _ = other.wait();
        assert!(
            alive,
            "an unrelated process named by a stale pidfile was killed"
        );
    }
}
