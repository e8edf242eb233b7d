//! One deploy per environment at a time. A lock records who holds it (owner, host, pid, SHA, start,
//! expiry, CI run URL) and a random token; it is released by whoever holds the token (a `Drop` guard,
//! so on every exit path). A lock past its TTL, or left by a dead process on this host, is stale:
//! reported, and broken only with `--force-unlock`.
//!
//! Local and docker environments: a file created with `O_EXCL`. Remote environments: a directory in
//! the remote directory created with `mkdir` (atomic on the server), holding `info.json`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::environments::SshTarget;
use crate::error::{Error, Result};
use crate::ssh;
use crate::time::{now_unix, rfc3339_ms};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LockInfo {
    pub owner: String,
    pub host: String,
    pub pid: u32,
    pub sha: String,
    pub started_unix: u64,
    pub expires_unix: u64,
    #[serde(default)]
    pub run_url: Option<String>,
    pub token: String,
}

impl LockInfo {
    pub fn new(sha: &str, ttl_secs: u64, token: String) -> LockInfo {
        let now = now_unix();
        LockInfo {
            owner: super::actor(),
            host: hostname(),
            pid: std::process::id(),
            sha: sha.to_string(),
            started_unix: now,
            expires_unix: now + ttl_secs,
            run_url: super::run_url(),
            token,
        }
    }

    /// Why this lock is stale, if it is (past its TTL, or its process on this host is gone).
    pub fn stale_reason(&self, now: u64) -> Option<String> {
        if now >= self.expires_unix {
            return Some(format!(
                "expired {}s ago (TTL ended {})",
                now - self.expires_unix,
                rfc3339_ms(self.expires_unix as u128 * 1000)
            ));
        }
        if self.host == hostname() && !Path::new(&format!("/proc/{}", self.pid)).exists() {
            return Some(format!("its process {} on {} is gone", self.pid, self.host));
        }
        None
    }

    /// Whether a deploy took the lock: its `sha` is a commit. Other commands record their name
    /// there instead (`restore`, `rollback`, `prune`, `local down`).
    pub fn is_deploy(&self) -> bool {
        !self.sha.is_empty() && self.sha.bytes().all(|b| b.is_ascii_hexdigit())
    }

    /// A refusal's first sentence: `another deploy holds the lock PLACE: held by …`, or for
    /// another command `a restore (started WHEN by OWNER on HOST, pid N) holds the lock PLACE`.
    pub fn holds(&self, place: &str) -> String {
        if self.is_deploy() {
            return format!("another deploy holds the lock {place}: {}", self.describe());
        }
        format!(
            "a {} (started {} by {} on {}, pid {}{}) holds the lock {place}",
            self.sha,
            rfc3339_ms(self.started_unix as u128 * 1000),
            self.owner,
            self.host,
            self.pid,
            self.run_url
                .as_deref()
                .map(|u| format!(", run {u}"))
                .unwrap_or_default()
        )
    }

    pub fn describe(&self) -> String {
        format!(
            "held by {} on {} (pid {}) for {} since {}{}",
            self.owner,
            self.host,
            self.pid,
            self.sha,
            rfc3339_ms(self.started_unix as u128 * 1000),
            self.run_url
                .as_deref()
                .map(|u| format!(", run {u}"))
                .unwrap_or_default()
        )
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into())
}

/// Where the lock lives.
#[derive(Clone, Debug)]
pub enum LockPlace {
    File(PathBuf),
    Remote { target: SshTarget, dir: String },
}

impl LockPlace {
    pub fn describe(&self) -> String {
        match self {
            LockPlace::File(p) => p.display().to_string(),
            LockPlace::Remote { target, dir } => {
                format!("{}@{}:{dir}/.deploy.lock", target.user, target.host)
            }
        }
    }
}

/// A held lock, released on drop.
#[derive(Debug)]
pub struct LockGuard {
    place: LockPlace,
    token: String,
    released: bool,
}

impl LockGuard {
    pub fn release(&mut self) -> Result<()> {
        if self.released {
            return Ok(());
        }
        self.released = true;
        release(&self.place, &self.token)
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            eprintln!("warning: could not release the deploy lock: {e}");
        }
    }
}

/// Take the lock. Held by a live deploy: exit 1 naming the holder. Stale: exit 1 unless `force`,
/// which breaks it (only that stale lock: the token is checked) and takes it.
pub fn acquire(
    place: &LockPlace,
    info: &LockInfo,
    force: bool,
) -> Result<(LockGuard, Vec<String>)> {
    let mut notes = Vec::new();
    for _ in 0..3 {
        match try_acquire(place, info)? {
            None => {
                return Ok((
                    LockGuard {
                        place: place.clone(),
                        token: info.token.clone(),
                        released: false,
                    },
                    notes,
                ))
            }
            Some(held) => {
                let holder = match &held {
                    Some(h) => h.describe(),
                    None => "with unreadable lock information".to_string(),
                };
                let stale = match &held {
                    Some(h) => h.stale_reason(now_unix()),
                    None => Some("its lock information is unreadable".to_string()),
                };
                match (stale, force) {
                    (None, _) => {
                        // A live lock's information is readable (else it is stale).
                        let holds = held.as_ref().map_or_else(
                            || format!("another deploy holds the lock {}", place.describe()),
                            |h| h.holds(&place.describe()),
                        );
                        return Err(Error::failed(format!(
                            "{holds}. Wait for it to finish{}",
                            if force {
                                " (--force-unlock only breaks a stale lock)"
                            } else {
                                ""
                            }
                        )));
                    }
                    (Some(why), false) => {
                        return Err(Error::failed(format!(
                            "stale deploy lock {} ({why}): {holder}. Make sure that deploy is not \
                             running, then rerun with --force-unlock",
                            place.describe()
                        )))
                    }
                    (Some(why), true) => {
                        notes.push(format!("broke a stale lock ({why}): {holder}"));
                        let token = held.as_ref().map(|h| h.token.as_str()).unwrap_or("");
                        break_stale(place, token)?;
                    }
                }
            }
        }
    }
    Err(Error::failed(format!(
        "could not take the deploy lock {}: it keeps being taken",
        place.describe()
    )))
}

/// `Ok(None)`: acquired. `Ok(Some(info))`: held (info `None` when unreadable).
fn try_acquire(place: &LockPlace, info: &LockInfo) -> Result<Option<Option<LockInfo>>> {
    let json = serde_json::to_string(info).expect("serializable");
    match place {
        LockPlace::File(path) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| Error::write(dir, e))?;
            }
            // The lock file appears whole or not at all: the info is written to a private temp
            // file, then hard-linked to the lock path (fails if it exists). Another taker can
            // never read a half-written lock, call it unreadable, and break a live one.
            let tmp = temp_path(path);
            let linked = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .and_then(|mut f| {
                    f.write_all(json.as_bytes())?;
                    f.sync_all()
                })
                .and_then(|()| std::fs::hard_link(&tmp, path));
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => Ok(None),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    Ok(Some(read_file_lock(path)))
                }
                Err(e) => Err(Error::write(path, e)),
            }
        }
        LockPlace::Remote { target, dir } => {
            let cmd = ssh::script(target, None, REMOTE_ACQUIRE, std::slice::from_ref(dir))
                .stdin_bytes(json.into_bytes())
                .timeout(std::time::Duration::from_secs(30));
            let out = super::remote::check("taking the remote lock", cmd.output()?)?;
            let mut lines = out.splitn(2, '\n');
            match lines.next().map(str::trim) {
                Some("acquired") => Ok(None),
                Some("held") => Ok(Some(
                    serde_json::from_str(lines.next().unwrap_or("").trim()).ok(),
                )),
                other => Err(Error::failed(format!(
                    "taking the remote lock: unexpected answer {other:?}"
                ))),
            }
        }
    }
}

/// A fresh temp file name next to the lock file (unique per process and call).
fn temp_path(path: &Path) -> PathBuf {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

/// The lock directory appears with its `info.json` already in it (built in a temp directory, then
/// renamed into place, which fails when the lock exists), so a racing taker never sees a lock
/// without its information and breaks it as "unreadable".
const REMOTE_ACQUIRE: &str = include_str!("lock-acquire.sh");

/// Remove the lock only if it still carries `token` (on stdin: never on a command line).
const REMOTE_RELEASE: &str = include_str!("lock-release.sh");

fn release(place: &LockPlace, token: &str) -> Result<()> {
    match place {
        LockPlace::File(path) => {
            let ours = read_file_lock(path)
                .map(|i| i.token == token)
                .unwrap_or(token.is_empty());
            if ours {
                match std::fs::remove_file(path) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(Error::write(path, e)),
                }
            } else {
                Ok(())
            }
        }
        LockPlace::Remote { target, dir } => {
            let cmd = ssh::script(target, None, REMOTE_RELEASE, std::slice::from_ref(dir))
                .stdin_bytes(token.as_bytes().to_vec())
                .timeout(std::time::Duration::from_secs(30));
            super::remote::check("releasing the remote lock", cmd.output()?).map(|_| ())
        }
    }
}

fn break_stale(place: &LockPlace, token: &str) -> Result<()> {
    release(place, token)
}

/// Read the current lock file, if there is one and it parses.
pub fn read_file_lock(path: &Path) -> Option<LockInfo> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(token: &str, expires_in: i64) -> LockInfo {
        let mut i = LockInfo::new("abc1234", 60, token.into());
        i.expires_unix = (now_unix() as i64 + expires_in) as u64;
        i
    }

    #[test]
    fn second_taker_is_refused_and_release_frees_it() {
        let d = tempfile::tempdir().unwrap();
        let place = LockPlace::File(d.path().join("deploy.lock"));
        let (mut g, _) = acquire(&place, &info("t1", 60), false).unwrap();
        let e = acquire(&place, &info("t2", 60), false).unwrap_err();
        assert!(
            e.to_string().contains("another deploy holds the lock"),
            "{e}"
        );
        // --force-unlock does not break a live lock.
        assert!(acquire(&place, &info("t2", 60), true).is_err());
        g.release().unwrap();
        let (_g2, _) = acquire(&place, &info("t2", 60), false).unwrap();
    }

    #[test]
    fn a_refusal_names_the_command_that_holds_the_lock() {
        let d = tempfile::tempdir().unwrap();
        let place = LockPlace::File(d.path().join("deploy.lock"));
        let mut restore = LockInfo::new("restore", 60, "r".into());
        restore.owner = "alice".into();
        restore.started_unix = 1_796_115_600;
        let (_g, _) = acquire(&place, &restore, false).unwrap();
        let e = acquire(&place, &info("t2", 60), false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!(
                "a restore (started 2026-12-01T09:00:00.000Z by alice on {}, pid {}) holds the lock {}",
                hostname(),
                std::process::id(),
                place.describe()
            )),
            "{e}"
        );
        assert!(!e.contains("another deploy"), "{e}");
        // A deploy's lock (its SHA) is still called a deploy.
        assert!(info("t3", 60).is_deploy() && !restore.is_deploy());
        assert!(LockInfo::new("rollback", 60, "x".into())
            .holds("P")
            .starts_with("a rollback (started "));
    }

    #[test]
    fn stale_lock_is_reported_and_broken_only_with_force() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("deploy.lock");
        let place = LockPlace::File(path.clone());
        let (g, _) = acquire(&place, &info("old", -5), false).unwrap();
        std::mem::forget(g); // a crashed deploy: nobody releases it
        let e = acquire(&place, &info("new", 60), false).unwrap_err();
        assert!(e.to_string().contains("stale deploy lock"), "{e}");
        assert!(e.to_string().contains("--force-unlock"), "{e}");
        let (g, notes) = acquire(&place, &info("new", 60), true).unwrap();
        assert!(notes[0].contains("broke a stale lock"));
        assert_eq!(read_file_lock(&path).unwrap().token, "new");
        drop(g);
        assert!(!path.exists());
    }
}

#[cfg(test)]
mod race_tests {
    use super::*;

    /// The remote acquire script, run by `sh` here: while one taker is still sending its lock
    /// information, another must not find a lock without it.
    #[test]
    fn remote_lock_never_shows_without_its_information() {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().to_str().unwrap().to_string();
        let run = |stdin: Stdio| {
            Command::new("sh")
                .args(["-c", REMOTE_ACQUIRE, "xtask", &dir])
                .stdin(stdin)
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        };
        // A: slow to send its information (its stdin stays open).
        let mut a = run(Stdio::piped());
        std::thread::sleep(std::time::Duration::from_millis(300));
        // B: sends at once.
        let mut b = run(Stdio::piped());
        let info_b = serde_json::to_string(&LockInfo::new("abc1234", 60, "b".into())).unwrap();
        b.stdin
            .take()
            .unwrap()
            .write_all(info_b.as_bytes())
            .unwrap();
        let out_b = String::from_utf8(b.wait_with_output().unwrap().stdout).unwrap();
        let mut lines = out_b.splitn(2, '\n');
        match lines.next() {
            Some("acquired") => {}
            Some("held") => {
                let info = lines.next().unwrap_or("");
                assert!(
                    serde_json::from_str::<LockInfo>(info.trim()).is_ok(),
                    "B saw a lock without readable information: {info:?}"
                );
            }
            other => panic!("unexpected answer {other:?}"),
        }
        let info_a = serde_json::to_string(&LockInfo::new("abc1234", 60, "a".into())).unwrap();
        a.stdin
            .take()
            .unwrap()
            .write_all(info_a.as_bytes())
            .unwrap();
        let out_a = String::from_utf8(a.wait_with_output().unwrap().stdout).unwrap();
        // Exactly one of them holds it, and the lock carries the holder's token.
        let acquired = [&out_a, &out_b]
            .iter()
            .filter(|o| o.starts_with("acquired"))
            .count();
        assert_eq!(acquired, 1, "A: {out_a:?} B: {out_b:?}");
        let held: LockInfo = serde_json::from_str(
            &std::fs::read_to_string(d.path().join(".deploy.lock/info.json")).unwrap(),
        )
        .unwrap();
        let winner = if out_a.starts_with("acquired") {
            "a"
        } else {
            "b"
        };
        assert_eq!(held.token, winner);
        // No temp directory is left behind.
        let names: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [".deploy.lock"]);
    }
    use std::sync::{Arc, Barrier, Mutex};

    /// Many deploys racing for the lock, all with --force-unlock: exactly one may hold it. (A
    /// taker must never see a half-written lock file, call it unreadable, and break a live lock.)
    #[test]
    fn racing_takers_with_force_unlock_never_both_hold_the_lock() {
        let d = tempfile::tempdir().unwrap();
        for round in 0..300 {
            let place = LockPlace::File(d.path().join(format!("deploy-{round}.lock")));
            let n = 6;
            let barrier = Arc::new(Barrier::new(n));
            let held = Arc::new(Mutex::new(Vec::new()));
            let threads: Vec<_> = (0..n)
                .map(|i| {
                    let (place, barrier, held) = (place.clone(), barrier.clone(), held.clone());
                    std::thread::spawn(move || {
                        let info = LockInfo::new("abc1234", 600, format!("r{round}t{i}"));
                        barrier.wait();
                        if let Ok((g, _)) = acquire(&place, &info, true) {
                            held.lock().unwrap().push(g);
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            let held = held.lock().unwrap();
            assert_eq!(held.len(), 1, "round {round}: {} holders", held.len());
        }
    }
}
