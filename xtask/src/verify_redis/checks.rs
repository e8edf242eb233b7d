//! From what we learned about a server ([`Facts`]) to verdicts ([`Check`]). Pure: no I/O.

use std::collections::BTreeMap;

use serde::Serialize;

use super::info::{Persistence, ServerVersion};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// One verdict. `id` values are stable (part of the JSON schema).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Check {
    pub id: &'static str,
    pub title: &'static str,
    pub status: Status,
    /// What we saw, e.g. `aof_enabled:1` or `appendfsync=everysec`.
    pub value: String,
    /// One line: why this status.
    pub message: String,
    /// What to do about it (`None` when nothing).
    pub action: Option<String>,
}

/// The server's configuration as far as `CONFIG GET` let us see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Config {
    Known(BTreeMap<String, String>),
    /// Not readable, and why (e.g. `NOPERM` under an ACL user, `--info-file`).
    Unknown(String),
}

impl Config {
    pub fn get(&self, k: &str) -> Option<&str> {
        match self {
            Config::Known(m) => m.get(k).map(String::as_str),
            Config::Unknown(_) => None,
        }
    }
}

/// What the transport found in the AOF directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AofFiles {
    /// No manifest (multi-part AOF) or no AOF file (6.2) at `path`.
    Missing { path: String },
    /// The manifest (or single file) exists; `missing` lists files it names that do not.
    /// `check` is `redis-check-aof`'s verdict: `Ok(())` or `Err(its last lines)`.
    Checked {
        path: String,
        files: usize,
        missing: Vec<String>,
        check: Result<(), String>,
    },
    /// The directory could not be determined or read, and why.
    Unreadable(String),
}

/// Everything the checks look at.
#[derive(Clone, Debug)]
pub struct Facts {
    /// At least one; the last is the current state.
    pub samples: Vec<Persistence>,
    pub server: Option<ServerVersion>,
    pub config: Config,
    /// `None` when the transport cannot see the server's files (`--url`, `--info-file`).
    pub aof_files: Option<AofFiles>,
    /// Seconds we waited for a load to finish (`--wait`), if we waited.
    pub waited_secs: Option<f64>,
    /// `--interval` between samples, for messages.
    pub interval_ms: u64,
    /// `INFO replication` (direct transport only).
    pub replication: Option<super::replication::Replication>,
}

const FIRST_REWRITE_ACTION: &str =
    "wait for the rewrite to finish (`aof_rewrite_in_progress:0`), then run verify-redis again";

/// Every check, in a fixed order.
pub fn evaluate(f: &Facts) -> Vec<Check> {
    let mut out = vec![
        aof_enabled(f),
        aof_rewrite(f),
        aof_write(f),
        aof_rewrite_failures(f),
        appendfsync(f),
        no_appendfsync_on_rewrite(f),
        fsync_delays(f),
        rdb_bgsave(f),
    ];
    if let Some(files) = &f.aof_files {
        out.push(aof_files(f, files));
    }
    if let Some(r) = &f.replication {
        out.extend(super::replication::checks(r, &f.config));
    }
    out
}

fn last(f: &Facts) -> &Persistence {
    f.samples.last().expect("at least one sample")
}

/// A [`Check`] (also built by the replication and Sentinel checks).
pub(super) fn check(
    id: &'static str,
    title: &'static str,
    status: Status,
    value: impl Into<String>,
    message: impl Into<String>,
    action: Option<&str>,
) -> Check {
    Check {
        id,
        title,
        status,
        value: value.into(),
        message: message.into(),
        action: action.map(str::to_string),
    }
}

/// The first rewrite after `CONFIG SET appendonly yes` is running: until it ends there is no manifest,
/// and nothing is durable. With the files visible we know; from INFO alone it is "a rewrite runs and
/// none ever finished".
fn first_rewrite_running(f: &Facts) -> bool {
    let p = last(f);
    if p.aof_rewrite_in_progress != Some(true) || !p.aof_enabled {
        return false;
    }
    match &f.aof_files {
        Some(AofFiles::Missing { .. }) => true,
        Some(AofFiles::Checked { .. }) => false,
        _ => p.aof_last_rewrite_time_sec == Some(-1) && p.aof_base_size.unwrap_or(0) == 0,
    }
}

fn aof_enabled(f: &Facts) -> Check {
    const ID: &str = "aof_enabled";
    const T: &str = "AOF on and live";
    let p = last(f);
    let configured = f.config.get("appendonly");
    let value = format!(
        "aof_enabled:{}{}",
        u8::from(p.aof_enabled),
        configured
            .map(|c| format!(", appendonly={c}"))
            .unwrap_or_default()
    );
    if p.is_loading() {
        let progress = match (p.loading_loaded_perc, p.loading_eta_seconds) {
            (Some(pc), Some(eta)) => format!(" ({pc:.0}% loaded, about {eta}s left)"),
            (Some(pc), None) => format!(" ({pc:.0}% loaded)"),
            _ => String::new(),
        };
        let what = if p.async_loading == Some(true) && !p.loading {
            "loading a new dataset from its primary (async_loading)"
        } else {
            "still loading its data"
        };
        let msg = match f.waited_secs {
            Some(w) => format!(
                "{what}{progress} after waiting {w:.0}s: aof_enabled reads 0 until loading ends, so durability is not proven yet"
            ),
            None => format!(
                "{what}{progress}: aof_enabled reads 0 until loading ends, so this is \"wait\", not \"off\""
            ),
        };
        let action = if f.waited_secs.is_some() {
            "wait longer: run again with a larger --wait (the load time grows with the AOF size)"
        } else {
            "run again with --wait 120 to wait for the load to finish, then verify"
        };
        return check(ID, T, Status::Fail, value, msg, Some(action));
    }
    if p.aof_enabled {
        if configured == Some("no") {
            return check(
                ID,
                T,
                Status::Warn,
                value,
                "the AOF is live but `appendonly` is `no` in the running config: it is being switched off",
                Some("check who ran CONFIG SET appendonly no; the compose command must keep --appendonly yes"),
            );
        }
        return check(
            ID,
            T,
            Status::Ok,
            value,
            "the append-only file is on: every write is logged before it is acknowledged",
            None,
        );
    }
    if p.aof_configured() || configured == Some("yes") {
        return check(
            ID,
            T,
            Status::Fail,
            value,
            "`appendonly yes` is configured but the AOF is not live",
            Some("look at the Redis log for AOF errors, then restart Redis"),
        );
    }
    check(
        ID,
        T,
        Status::Fail,
        value,
        "the AOF is off: a crash loses every write since the last RDB snapshot (minutes of data)",
        Some("run Redis with `--appendonly yes --appendfsync everysec` (`cargo xtask compose apply`), then restart it"),
    )
}

fn aof_rewrite(f: &Facts) -> Check {
    const ID: &str = "aof_rewrite";
    const T: &str = "AOF rewrite";
    let p = last(f);
    let secs = p.aof_current_rewrite_time_sec.filter(|s| *s >= 0);
    let value = format!(
        "aof_rewrite_in_progress:{}",
        u8::from(p.aof_rewrite_in_progress == Some(true))
    );
    if first_rewrite_running(f) {
        let msg = format!(
            "the first rewrite since the AOF was switched on is still running{}: until it finishes there is no manifest, and a crash loses everything written since",
            secs.map(|s| format!(" ({s}s so far)")).unwrap_or_default()
        );
        return check(ID, T, Status::Warn, value, msg, Some(FIRST_REWRITE_ACTION));
    }
    if p.aof_rewrite_in_progress == Some(true) {
        return check(
            ID,
            T,
            Status::Ok,
            value,
            "a background rewrite is running; the current AOF stays valid meanwhile",
            None,
        );
    }
    if p.aof_rewrite_scheduled == Some(true) {
        return check(
            ID,
            T,
            Status::Ok,
            "aof_rewrite_scheduled:1",
            "a rewrite is scheduled (it starts when the running fork ends)",
            None,
        );
    }
    check(ID, T, Status::Ok, value, "no rewrite running", None)
}

fn aof_write(f: &Facts) -> Check {
    const ID: &str = "aof_write";
    const T: &str = "AOF writes";
    let p = last(f);
    match &p.aof_last_write_status {
        Some(s) if s.is_err() => check(
            ID,
            T,
            Status::Fail,
            "aof_last_write_status:err",
            "the last write to the AOF failed: Redis refuses writes (MISCONF) until it succeeds",
            Some("free disk space or fix the volume's permissions (see the Redis log); writes resume by themselves"),
        ),
        Some(_) => check(
            ID,
            T,
            Status::Ok,
            "aof_last_write_status:ok",
            "the last AOF write succeeded",
            None,
        ),
        None => check(
            ID,
            T,
            Status::Warn,
            "aof_last_write_status absent",
            "this server does not report aof_last_write_status",
            Some("check the Redis log for AOF write errors"),
        ),
    }
}

fn aof_rewrite_failures(f: &Facts) -> Check {
    const ID: &str = "aof_rewrite_failures";
    const T: &str = "AOF rewrite failures";
    let p = last(f);
    let failed = p
        .aof_last_bgrewrite_status
        .as_ref()
        .is_some_and(|s| s.is_err());
    let consecutive = p.aof_rewrites_consecutive_failures.unwrap_or(0);
    let value = format!(
        "aof_last_bgrewrite_status:{}{}",
        if failed { "err" } else { "ok" },
        p.aof_rewrites_consecutive_failures
            .filter(|c| *c > 0)
            .map(|c| format!(", consecutive failures:{c}"))
            .unwrap_or_default()
    );
    const ACTION: &str = "look for the rewrite error in the Redis log (disk space, fork memory: vm.overcommit_memory=1), then run BGREWRITEAOF";
    if consecutive >= 3 {
        return check(
            ID,
            T,
            Status::Fail,
            value,
            format!("{consecutive} rewrites in a row failed: automatic rewrites now back off (up to an hour) and the AOF keeps growing"),
            Some(ACTION),
        );
    }
    if failed || consecutive > 0 {
        return check(
            ID,
            T,
            Status::Warn,
            value,
            "the last AOF rewrite failed (the AOF itself is still valid; it keeps growing until a rewrite succeeds)",
            Some(ACTION),
        );
    }
    check(ID, T, Status::Ok, value, "the last rewrite succeeded", None)
}

fn config_unknown(id: &'static str, title: &'static str, what: &str, why: &str) -> Check {
    check(
        id,
        title,
        Status::Warn,
        "unknown",
        format!("cannot verify {what}: {why}"),
        Some("run verify-redis as a user allowed `CONFIG GET` (ACL `+config|get`), or check the compose command with `cargo xtask compose check`"),
    )
}

fn appendfsync(f: &Facts) -> Check {
    const ID: &str = "appendfsync";
    const T: &str = "fsync policy";
    let Some(v) = f.config.get("appendfsync") else {
        let why = match &f.config {
            Config::Unknown(why) => why.clone(),
            Config::Known(_) => "CONFIG GET returned no appendfsync".into(),
        };
        return config_unknown(ID, T, "appendfsync", &why);
    };
    let value = format!("appendfsync={v}");
    match v {
        "everysec" => check(
            ID,
            T,
            Status::Ok,
            value,
            "fsync every second: a Redis crash loses no acknowledged write, a machine crash about 1 s (2 s when the disk stalls)",
            None,
        ),
        "always" => check(
            ID,
            T,
            Status::Ok,
            value,
            "fsync on every write: nothing acknowledged is lost, at a large cost in latency",
            None,
        ),
        "no" => check(
            ID,
            T,
            Status::Fail,
            value,
            "the OS decides when to flush (often 30 s): a machine crash loses that much",
            Some("run Redis with `--appendfsync everysec` (`cargo xtask compose apply`)"),
        ),
        other => check(
            ID,
            T,
            Status::Fail,
            value,
            format!("unknown fsync policy {other:?}"),
            Some("set `--appendfsync everysec`"),
        ),
    }
}

fn no_appendfsync_on_rewrite(f: &Facts) -> Check {
    const ID: &str = "no_appendfsync_on_rewrite";
    const T: &str = "fsync during rewrites";
    let Some(v) = f.config.get("no-appendfsync-on-rewrite") else {
        let why = match &f.config {
            Config::Unknown(why) => why.clone(),
            Config::Known(_) => "CONFIG GET returned no no-appendfsync-on-rewrite".into(),
        };
        return config_unknown(ID, T, "no-appendfsync-on-rewrite", &why);
    };
    let value = format!("no-appendfsync-on-rewrite={v}");
    if v == "yes" {
        check(
            ID,
            T,
            Status::Warn,
            value,
            "fsync is skipped while a rewrite or snapshot runs: a machine crash then loses up to 30 s",
            Some("set `no-appendfsync-on-rewrite no` (the default) unless the disk cannot keep up"),
        )
    } else {
        check(
            ID,
            T,
            Status::Ok,
            value,
            "fsync continues during rewrites",
            None,
        )
    }
}

fn fsync_delays(f: &Facts) -> Check {
    const ID: &str = "fsync_delays";
    const T: &str = "fsync health";
    let values: Vec<i64> = f
        .samples
        .iter()
        .filter_map(|p| p.aof_delayed_fsync)
        .collect();
    let Some(&now) = values.last() else {
        return check(
            ID,
            T,
            Status::Ok,
            "aof_delayed_fsync absent",
            "not reported (the AOF is off or still loading)",
            None,
        );
    };
    if values.len() < 2 {
        let msg = if now == 0 {
            "no delayed fsync since the stats were reset".to_string()
        } else {
            format!("{now} delayed fsyncs since the stats were reset (the disk was slow at some point); take two samples (--samples 2) to see whether it is rising")
        };
        return check(
            ID,
            T,
            Status::Ok,
            format!("aof_delayed_fsync:{now}"),
            msg,
            None,
        );
    }
    // A counter reset (CONFIG RESETSTAT) makes it drop: count only increases.
    let rise: i64 = values.windows(2).map(|w| (w[1] - w[0]).max(0)).sum();
    let value = format!(
        "aof_delayed_fsync:{} → {now} over {} samples",
        values[0],
        values.len()
    );
    if rise > 0 {
        let secs = (values.len() - 1) as f64 * f.interval_ms as f64 / 1000.0;
        check(
            ID,
            T,
            Status::Warn,
            value,
            format!("{rise} fsyncs were delayed in {secs:.1}s: the disk cannot keep up and an OS crash can lose about 2 s"),
            Some("move the AOF to a faster disk, or find what else writes to it (backups, logs)"),
        )
    } else {
        check(
            ID,
            T,
            Status::Ok,
            value,
            "no fsync was delayed between samples",
            None,
        )
    }
}

fn rdb_bgsave(f: &Facts) -> Check {
    const ID: &str = "rdb_bgsave";
    const T: &str = "RDB snapshots";
    let p = last(f);
    let err = p
        .rdb_last_bgsave_status
        .as_ref()
        .is_some_and(|s| s.is_err());
    let value = format!("rdb_last_bgsave_status:{}", if err { "err" } else { "ok" });
    if !err {
        return check(
            ID,
            T,
            Status::Ok,
            value,
            "the last snapshot succeeded (or none was needed)",
            None,
        );
    }
    const ACTION: &str =
        "look for the BGSAVE error in the Redis log (disk space, fork memory), then run BGSAVE";
    match f.config.get("stop-writes-on-bgsave-error") {
        Some("no") => check(
            ID,
            T,
            Status::Warn,
            value + ", stop-writes-on-bgsave-error=no",
            "the last snapshot failed; writes continue (stop-writes-on-bgsave-error no)",
            Some(ACTION),
        ),
        Some(_) => check(
            ID,
            T,
            Status::Fail,
            value + ", stop-writes-on-bgsave-error=yes",
            "the last snapshot failed and Redis refuses writes (MISCONF) until one succeeds",
            Some(ACTION),
        ),
        None => check(
            ID,
            T,
            Status::Fail,
            value,
            "the last snapshot failed; with the default stop-writes-on-bgsave-error yes, Redis refuses writes (MISCONF)",
            Some(ACTION),
        ),
    }
}

fn aof_files(f: &Facts, files: &AofFiles) -> Check {
    const ID: &str = "aof_files";
    const T: &str = "AOF files on disk";
    let p = last(f);
    match files {
        AofFiles::Unreadable(why) => check(
            ID,
            T,
            Status::Warn,
            "unknown",
            format!("cannot inspect the AOF directory: {why}"),
            Some("run `redis-check-aof <dir>/appendonlydir/appendonly.aof.manifest` where Redis runs"),
        ),
        AofFiles::Missing { path } => {
            if first_rewrite_running(f) {
                check(
                    ID,
                    T,
                    Status::Warn,
                    format!("{path}: not yet written"),
                    "no manifest yet: the first rewrite writes it when it finishes",
                    Some(FIRST_REWRITE_ACTION),
                )
            } else if !p.aof_enabled && !p.aof_configured() {
                check(
                    ID,
                    T,
                    Status::Fail,
                    format!("{path}: missing"),
                    "no AOF on disk (the AOF is off): nothing would be replayed after a crash",
                    Some("turn the AOF on (see aof_enabled)"),
                )
            } else {
                check(
                    ID,
                    T,
                    Status::Fail,
                    format!("{path}: missing"),
                    "the AOF is on but its manifest is missing: after a restart Redis would start from an empty (or old RDB) dataset",
                    Some("check the volume mounted at Redis's dir, then run BGREWRITEAOF to write a new manifest"),
                )
            }
        }
        AofFiles::Checked {
            path,
            files,
            missing,
            check: verdict,
        } => {
            if !missing.is_empty() {
                return check(
                    ID,
                    T,
                    Status::Fail,
                    format!("{path}: {} of {files} files missing", missing.len()),
                    format!("the manifest names files that do not exist: {}", missing.join(", ")),
                    Some("Redis will refuse to start: restore the AOF directory from a backup, or run BGREWRITEAOF while it still runs"),
                );
            }
            match verdict {
                Ok(()) => check(
                    ID,
                    T,
                    Status::Ok,
                    format!("{path}: {files} files"),
                    "manifest and files present; redis-check-aof: valid",
                    None,
                ),
                Err(out) => check(
                    ID,
                    T,
                    Status::Fail,
                    format!("{path}: redis-check-aof failed"),
                    format!("the AOF is damaged: {out}"),
                    Some("copy the AOF directory aside, then run `redis-check-aof --fix <manifest>` (it truncates the damaged tail) and restart Redis"),
                ),
            }
        }
    }
}

/// The overall status: the worst check.
pub fn overall(checks: &[Check]) -> Status {
    checks.iter().map(|c| c.status).max().unwrap_or(Status::Ok)
}

/// One sentence in plain words.
pub fn verdict(checks: &[Check]) -> String {
    match overall(checks) {
        Status::Ok => "Redis keeps its data: a crash of Redis loses no acknowledged write.".into(),
        Status::Warn => "Redis keeps its data, with the warnings above.".into(),
        Status::Fail => {
            let failed: Vec<&str> = checks
                .iter()
                .filter(|c| c.status == Status::Fail)
                .map(|c| c.id)
                .collect();
            format!(
                "Redis data is NOT proven safe: a crash may lose data ({}).",
                failed.join(", ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::info::parse;
    use super::*;

    fn facts(text: &str, config: &[(&str, &str)]) -> Facts {
        Facts {
            samples: parse(text).unwrap().persistence().unwrap(),
            server: None,
            config: Config::Known(
                config
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            aof_files: None,
            waited_secs: None,
            interval_ms: 1000,
            replication: None,
        }
    }

    fn status(checks: &[Check], id: &str) -> Status {
        checks.iter().find(|c| c.id == id).unwrap().status
    }

    const GOOD: &[(&str, &str)] = &[
        ("appendonly", "yes"),
        ("appendfsync", "everysec"),
        ("no-appendfsync-on-rewrite", "no"),
    ];

    #[test]
    fn healthy_aof() {
        let f = facts(
            "loading:0\naof_enabled:1\naof_rewrite_in_progress:0\naof_last_write_status:ok\naof_last_bgrewrite_status:ok\naof_current_size:10\naof_delayed_fsync:0\n",
            GOOD,
        );
        let c = evaluate(&f);
        assert_eq!(overall(&c), Status::Ok, "{c:#?}");
    }

    #[test]
    fn loading_is_wait_not_off() {
        let f = facts(
            "loading:1\naof_enabled:0\naof_current_size:0\nloading_loaded_perc:42.10\nloading_eta_seconds:3\n",
            GOOD,
        );
        let c = evaluate(&f);
        let a = c.iter().find(|c| c.id == "aof_enabled").unwrap();
        assert_eq!(a.status, Status::Fail);
        assert!(a.message.contains("not \"off\""), "{}", a.message);
        assert!(a.message.contains("42%"));
        assert!(a.action.as_deref().unwrap().contains("--wait"));
    }

    #[test]
    fn misconf_and_rewrite_failures() {
        let f = facts(
            "loading:0\naof_enabled:1\naof_last_write_status:err\naof_last_bgrewrite_status:err\naof_rewrites_consecutive_failures:1\n",
            GOOD,
        );
        let c = evaluate(&f);
        assert_eq!(status(&c, "aof_write"), Status::Fail);
        assert_eq!(status(&c, "aof_rewrite_failures"), Status::Warn);
        let f = facts(
            "loading:0\naof_enabled:1\naof_last_bgrewrite_status:err\naof_rewrites_consecutive_failures:3\n",
            GOOD,
        );
        assert_eq!(status(&evaluate(&f), "aof_rewrite_failures"), Status::Fail);
    }

    #[test]
    fn fsync_policies_and_unknown_config() {
        let no = facts(
            "loading:0\naof_enabled:1\n",
            &[("appendfsync", "no"), ("no-appendfsync-on-rewrite", "yes")],
        );
        let c = evaluate(&no);
        assert_eq!(status(&c, "appendfsync"), Status::Fail);
        assert_eq!(status(&c, "no_appendfsync_on_rewrite"), Status::Warn);
        let mut acl = facts("loading:0\naof_enabled:1\n", &[]);
        acl.config = Config::Unknown("NOPERM".into());
        let c = evaluate(&acl);
        let a = c.iter().find(|c| c.id == "appendfsync").unwrap();
        assert_eq!(a.status, Status::Warn);
        assert!(a.message.contains("cannot verify"));
    }

    #[test]
    fn delayed_fsync_rising_between_samples_warns_but_resets_do_not() {
        let rising = facts(
            "# Persistence\nloading:0\naof_enabled:1\naof_delayed_fsync:5\n# Persistence\nloading:0\naof_enabled:1\naof_delayed_fsync:7\n",
            GOOD,
        );
        assert_eq!(status(&evaluate(&rising), "fsync_delays"), Status::Warn);
        let reset = facts(
            "# Persistence\nloading:0\naof_enabled:1\naof_delayed_fsync:5\n# Persistence\nloading:0\naof_enabled:1\naof_delayed_fsync:0\n",
            GOOD,
        );
        assert_eq!(status(&evaluate(&reset), "fsync_delays"), Status::Ok);
    }

    #[test]
    fn bgsave_error_fails_only_when_it_blocks_writes() {
        let t = "loading:0\naof_enabled:1\nrdb_last_bgsave_status:err\n";
        let mut cfg = GOOD.to_vec();
        cfg.push(("stop-writes-on-bgsave-error", "yes"));
        assert_eq!(
            status(&evaluate(&facts(t, &cfg)), "rdb_bgsave"),
            Status::Fail
        );
        cfg.pop();
        cfg.push(("stop-writes-on-bgsave-error", "no"));
        assert_eq!(
            status(&evaluate(&facts(t, &cfg)), "rdb_bgsave"),
            Status::Warn
        );
    }

    #[test]
    fn first_rewrite_from_info_alone_and_from_files() {
        let t = "loading:0\naof_enabled:1\naof_rewrite_in_progress:1\naof_last_rewrite_time_sec:-1\naof_current_size:0\naof_base_size:0\n";
        assert_eq!(
            status(&evaluate(&facts(t, GOOD)), "aof_rewrite"),
            Status::Warn
        );
        let mut f = facts(t, GOOD);
        f.aof_files = Some(AofFiles::Checked {
            path: "m".into(),
            files: 2,
            missing: vec![],
            check: Ok(()),
        });
        assert_eq!(status(&evaluate(&f), "aof_rewrite"), Status::Ok);
        f.aof_files = Some(AofFiles::Missing { path: "m".into() });
        let c = evaluate(&f);
        assert_eq!(status(&c, "aof_rewrite"), Status::Warn);
        assert_eq!(status(&c, "aof_files"), Status::Warn);
    }
}
