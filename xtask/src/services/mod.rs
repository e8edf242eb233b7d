//! Real servers on this machine: PostgreSQL clusters and redis-server processes, used by the `local`
//! environment and by the integration tests (loopback only, free ports, directories we own). The
//! test kit (feature `testkit`, on for the integration tests only): `s3` (`rclone serve s3`),
//! `sshd` (a real sshd with pinned throwaway keys), `procscan` (watches every argv for secrets).

pub mod postgres;
#[cfg(any(test, feature = "testkit"))]
pub mod procscan;
pub mod redis;
#[cfg(any(test, feature = "testkit"))]
pub mod s3;
#[cfg(any(test, feature = "testkit"))]
pub mod sshd;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::unavailable(format!("cannot bind a loopback port: {e}")))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::unavailable(e.to_string()))
}

/// Wait until something accepts connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, limit: Duration) -> Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let start = Instant::now();
    while start.elapsed() < limit {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(Error::unavailable(format!(
        "nothing answered on 127.0.0.1:{port} within {}s",
        limit.as_secs()
    )))
}

/// Whether this process runs as root (PostgreSQL then has to run as the `postgres` user).
pub fn is_root() -> bool {
    // SAFETY-free: read our effective uid from /proc rather than linking libc.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
