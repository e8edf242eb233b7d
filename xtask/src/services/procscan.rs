//! Watch every process's command line while something runs, for secrets that must never be on an
//! argv (`/proc/<pid>/cmdline` is readable by every user on the machine). For tests: start the watch,
//! run the command, stop it and assert that no [`Leak`] was seen.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the watch scans `/proc` by default (a full scan itself takes a few ms).
pub const POLL: Duration = Duration::from_millis(2);

/// A process whose argv held a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leak {
    pub pid: u32,
    /// The argv, NUL separators shown as spaces.
    pub argv: String,
}

/// A background thread scanning `/proc/*/cmdline` until [`ArgvWatch::stop`].
#[derive(Debug)]
pub struct ArgvWatch {
    running: Arc<AtomicBool>,
    scans: Arc<AtomicU64>,
    argvs_read: Arc<AtomicU64>,
    thread: Option<JoinHandle<Vec<Leak>>>,
}

impl ArgvWatch {
    /// Scan every [`POLL`].
    pub fn start(secrets: &[String]) -> ArgvWatch {
        Self::start_every(secrets, POLL)
    }

    /// Scan, then sleep `interval` (zero: scan continuously), until stopped.
    pub fn start_every(secrets: &[String], interval: Duration) -> ArgvWatch {
        let secrets: Vec<String> = secrets.iter().filter(|s| !s.is_empty()).cloned().collect();
        let running = Arc::new(AtomicBool::new(true));
        let scans = Arc::new(AtomicU64::new(0));
        let argvs_read = Arc::new(AtomicU64::new(0));
        let (r, n, a) = (running.clone(), scans.clone(), argvs_read.clone());
        let thread = std::thread::spawn(move || {
            let mut leaks = Vec::new();
            loop {
                // Read the flag first: a stop always gets one more full scan after it.
                let last = !r.load(Ordering::SeqCst);
                a.fetch_add(scan(&secrets, &mut leaks), Ordering::Relaxed);
                n.fetch_add(1, Ordering::SeqCst);
                if last {
                    break;
                }
                if !interval.is_zero() {
                    // Woken early by `stop` (unpark).
                    std::thread::park_timeout(interval);
                }
            }
            leaks
        });
        ArgvWatch {
            running,
            scans,
            argvs_read,
            thread: Some(thread),
        }
    }

    /// Full scans of `/proc` so far.
    pub fn scans(&self) -> u64 {
        self.scans.load(Ordering::SeqCst)
    }

    /// Command lines read so far (all processes, all scans).
    pub fn argvs_read(&self) -> u64 {
        self.argvs_read.load(Ordering::Relaxed)
    }

    /// Stop after one last full scan; every argv that held a secret (a process once per distinct
    /// argv).
    pub fn stop(mut self) -> Vec<Leak> {
        self.finish()
    }

    fn finish(&mut self) -> Vec<Leak> {
        self.running.store(false, Ordering::SeqCst);
        match self.thread.take() {
            Some(t) => {
                t.thread().unpark();
                t.join().unwrap_or_default()
            }
            None => Vec::new(),
        }
    }
}

impl Drop for ArgvWatch {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// One pass over `/proc`: record new leaks, return how many command lines were read.
fn scan(secrets: &[String], leaks: &mut Vec<Leak>) -> u64 {
    let mut read = 0;
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Some(line) = argv_of(pid) else {
            continue;
        };
        read += 1;
        if secrets.iter().any(|s| line.contains(s.as_str()))
            && !leaks.iter().any(|l| l.pid == pid && l.argv == line)
        {
            leaks.push(Leak { pid, argv: line });
        }
    }
    read
}

/// The command line of `pid`, NULs as spaces (`None` once it is gone).
pub fn argv_of(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(String::from_utf8_lossy(&raw).replace('\0', " "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_on_a_child_argv_is_seen_and_other_secrets_are_not() {
        let secret = format!("argv-watch-{}", super::super::s3::random_hex(8));
        let absent = format!("never-{}", super::super::s3::random_hex(8));
        let w = ArgvWatch::start(&[secret.clone(), absent.clone()]);
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 0.3", &secret])
            .spawn()
            .unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(w.scans() > 0);
        let leaks = w.stop();
        assert!(leaks.iter().any(|l| l.pid == pid), "{leaks:?}");
        assert!(leaks
            .iter()
            .all(|l| l.argv.contains(&secret) && !l.argv.contains(&absent)));
    }

    #[test]
    fn stop_scans_at_least_once() {
        let w = ArgvWatch::start_every(&["x".into()], Duration::from_secs(3600));
        let t = std::time::Instant::now();
        let _ = w.stop();
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
