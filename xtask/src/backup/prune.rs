//! `cargo xtask backup prune`: thin the bucket the way `restic forget` does, dry run by default.
//!
//! The policy ([`plan`]) is a pure function of the listing, the clock, the deploys in the audit log
//! and the objects a restore or rollback used: every object gets **keep** or **delete** and the rules
//! that decided it. Nightlies are thinned by calendar buckets (newest per day / week (Monday-based) /
//! month, for the newest N buckets that have one, as restic's `--keep-daily` & co.); pre-deploy
//! backups are kept for the last N deploys; manual and other backups are kept unless a `--label`
//! rule names them. Never deleted: the newest of each class, anything younger than 24 h, anything a
//! restore or rollback used in the last 7 days. `--apply` takes the deploy lock (so no deploy,
//! restore or rollback runs meanwhile; held: exit 1), deletes each object and then its manifest
//! with bounded retries, and records each removal in the audit log.

use std::time::Duration;

use serde::Serialize;

use super::status::{self, Class, Entry};
use crate::deploy::audit::Record;
use crate::environments::Environments;
use crate::error::{Error, ExitCode, Result};
use crate::host::{Host, RCLONE_FLAGS};
use crate::time::{date, now_unix};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Environment from infra/environments.toml.
    #[arg(long, default_value = "local")]
    pub env: String,
    /// Delete what the plan says (default: print the plan, delete nothing).
    #[arg(long)]
    pub apply: bool,
    /// Nightlies: the newest of each of the last N days that have one.
    #[arg(long, default_value_t = 7)]
    pub keep_daily: usize,
    /// Nightlies: the newest of each of the last N weeks (Monday to Sunday) that have one.
    #[arg(long, default_value_t = 4)]
    pub keep_weekly: usize,
    /// Nightlies: the newest of each of the last N calendar months that have one.
    #[arg(long, default_value_t = 12)]
    pub keep_monthly: usize,
    /// Pre-deploy backups of the last N deploys in the audit log.
    #[arg(long, default_value_t = 20)]
    pub keep_pre_deploy: usize,
    /// Also delete manual and other backups with this label (`manual-2025`, or a prefix: `manual-*`); the
    /// never-delete rules still apply. Repeatable.
    #[arg(long = "label", value_name = "LABEL")]
    pub labels: Vec<String>,
    /// Print the plan (and what was deleted) as JSON (schema `backup-prune/1`).
    #[arg(long)]
    pub json: bool,
}

/// The retention policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Policy {
    pub keep_daily: usize,
    pub keep_weekly: usize,
    pub keep_monthly: usize,
    pub keep_pre_deploy: usize,
    /// `--label` rules: exact labels, or prefixes ending in `*`.
    pub labels: Vec<String>,
}

impl Policy {
    fn names(&self, label: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|r| match r.strip_suffix('*') {
                Some(prefix) => label.starts_with(prefix),
                None => label == r.as_str(),
            })
            .map(String::as_str)
    }
}

/// Facts from the audit log the policy needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// SHAs of the deploys, newest first, each once.
    pub deploys: Vec<String>,
    /// Objects a restore or rollback used recently, with the step and its time.
    pub in_use: Vec<(String, String)>,
}

/// How long a restore's or rollback's object stays protected after it used it.
pub const IN_USE_SECS: i64 = 7 * 86_400;
/// Nothing younger than this is deleted.
pub const MIN_AGE_SECS: i64 = 86_400;

impl History {
    /// Deploys (`pipeline` records, newest first) and the objects of `restore*`/`rollback*` records
    /// that ended within [`IN_USE_SECS`] of `now` (pure).
    pub fn from_records(records: &[Record], now: i64) -> History {
        let mut sorted: Vec<&Record> = records.iter().collect();
        sorted.sort_by(|a, b| b.end.cmp(&a.end));
        let mut deploys: Vec<String> = Vec::new();
        let mut in_use = Vec::new();
        for r in sorted {
            if r.step == "pipeline" && !r.sha.is_empty() && !deploys.contains(&r.sha) {
                deploys.push(r.sha.clone());
            }
            if r.step.starts_with("restore") || r.step.starts_with("rollback") {
                if let (Some(o), Some(t)) = (&r.backup_object, rfc3339_unix(&r.end)) {
                    if now - t <= IN_USE_SECS {
                        in_use.push((o.clone(), format!("{} at {}", r.step, r.end)));
                    }
                }
            }
        }
        History { deploys, in_use }
    }
}

/// `2026-12-01T09:00:00[.123]Z` as Unix seconds.
fn rfc3339_unix(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[10] != b'T' || !s.ends_with('Z') {
        return None;
    }
    let ts = format!(
        "{}{}{}_{}{}{}",
        s.get(0..4)?,
        s.get(5..7)?,
        s.get(8..10)?,
        s.get(11..13)?,
        s.get(14..16)?,
        s.get(17..19)?
    );
    status::timestamp_unix(&ts)
}

/// One object's fate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub path: String,
    pub manifest: Option<String>,
    pub class: Class,
    pub label: String,
    pub timestamp: String,
    pub keep: bool,
    /// Why (`newest nightly`, `daily 2026-11-29`, `beyond --keep-monthly 12`, ...).
    pub rules: Vec<String>,
}

fn day_key(unix: i64) -> i64 {
    unix.div_euclid(86_400)
}

/// The Monday of the week (days since the epoch; 1970-01-01 was a Thursday).
fn week_key(unix: i64) -> i64 {
    let d = day_key(unix);
    d - (d + 3).rem_euclid(7)
}

/// The plan (pure). `entries` as [`status::entries`] gives them (oldest first); the result is in the
/// same order.
pub fn plan(entries: &[Entry], now: i64, policy: &Policy, history: &History) -> Vec<Decision> {
    let mut rules: Vec<Vec<String>> = vec![Vec::new(); entries.len()];
    let mut keep = vec![false; entries.len()];
    let mut protect = |i: usize, why: String, rules: &mut Vec<Vec<String>>| {
        keep[i] = true;
        rules[i].push(why);
    };
    // Never-delete rules first.
    for (i, e) in entries.iter().enumerate() {
        if let Some((_, why)) = history.in_use.iter().find(|(o, _)| *o == e.path) {
            protect(i, format!("used by {why}"), &mut rules);
        }
        if now - e.unix < MIN_AGE_SECS {
            protect(i, "younger than 24h".into(), &mut rules);
        }
    }
    for class in Class::ALL {
        if let Some(i) = entries.iter().rposition(|e| e.class == class) {
            protect(i, format!("newest {}", class.as_str()), &mut rules);
        }
    }
    // Nightlies: restic's bucket walk, newest first, once per rule.
    let nightlies: Vec<usize> = (0..entries.len())
        .rev()
        .filter(|&i| entries[i].class == Class::Nightly)
        .collect();
    type Bucket = fn(i64) -> (i64, String);
    let buckets: [(&str, usize, Bucket); 3] = [
        ("daily", policy.keep_daily, |t| {
            (day_key(t), date(day_key(t)))
        }),
        ("weekly", policy.keep_weekly, |t| {
            (week_key(t), format!("week of {}", date(week_key(t))))
        }),
        ("monthly", policy.keep_monthly, |t| {
            let d = date(day_key(t));
            let ym: i64 =
                d[..4].parse::<i64>().unwrap_or(0) * 12 + d[5..7].parse::<i64>().unwrap_or(0);
            (ym, d[..7].to_string())
        }),
    ];
    for (name, n, bucket) in buckets {
        let mut last = None;
        let mut count = 0;
        for &i in &nightlies {
            let (key, shown) = bucket(entries[i].unix);
            if Some(key) != last && count < n {
                protect(i, format!("{name} {shown}"), &mut rules);
                count += 1;
            }
            last = Some(key);
        }
    }
    // Pre-deploy: the last N deploys; when the audit log knows fewer, the newest ones fill up to N.
    let deploys: Vec<&String> = history
        .deploys
        .iter()
        .take(policy.keep_pre_deploy)
        .collect();
    let mut kept_pre = 0;
    for i in (0..entries.len()).rev() {
        let e = &entries[i];
        if e.class != Class::PreDeploy {
            continue;
        }
        let sha = e.label.strip_prefix("pre-deploy-").unwrap_or("");
        if let Some(k) = deploys
            .iter()
            .position(|d| !sha.is_empty() && d.starts_with(sha))
        {
            protect(
                i,
                format!(
                    "deploy {} (#{} of the last {})",
                    &deploys[k][..deploys[k].len().min(7)],
                    k + 1,
                    policy.keep_pre_deploy
                ),
                &mut rules,
            );
            kept_pre += 1;
        }
    }
    if deploys.len() < policy.keep_pre_deploy {
        for i in (0..entries.len()).rev() {
            if kept_pre >= policy.keep_pre_deploy {
                break;
            }
            if entries[i].class == Class::PreDeploy
                && !rules[i].iter().any(|r| r.starts_with("deploy "))
            {
                protect(
                    i,
                    format!(
                        "newest pre-deploy (the audit log knows {} deploys, fewer than {})",
                        deploys.len(),
                        policy.keep_pre_deploy
                    ),
                    &mut rules,
                );
                kept_pre += 1;
            }
        }
    }
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let mut why = rules[i].clone();
            let kept = keep[i]
                || match e.class {
                    Class::Nightly | Class::PreDeploy => false,
                    Class::Manual | Class::Other => policy.names(&e.label).is_none(),
                };
            if !keep[i] {
                why.push(match e.class {
                    Class::Nightly => format!(
                        "beyond --keep-daily {} --keep-weekly {} --keep-monthly {}",
                        policy.keep_daily, policy.keep_weekly, policy.keep_monthly
                    ),
                    Class::PreDeploy => {
                        format!("not among the last {} deploys", policy.keep_pre_deploy)
                    }
                    Class::Manual | Class::Other => match policy.names(&e.label) {
                        Some(r) => format!("--label {r}"),
                        None => format!(
                            "{} backups are kept unless --label names them",
                            e.class.as_str()
                        ),
                    },
                });
            }
            Decision {
                path: e.path.clone(),
                manifest: e.manifest.clone(),
                class: e.class,
                label: e.label.clone(),
                timestamp: e.timestamp.clone(),
                keep: kept,
                rules: why,
            }
        })
        .collect()
}

/// `keep    <path> [+manifest]  <rules>` per object, then a summary (restic-style).
pub fn render(decisions: &[Decision]) -> String {
    let mut s = String::new();
    for d in decisions {
        s.push_str(&format!(
            "{:<7} {}{}  [{}]\n",
            if d.keep { "keep" } else { "delete" },
            d.path,
            if d.manifest.is_some() {
                " +manifest"
            } else {
                ""
            },
            d.rules.join(", ")
        ));
    }
    let del = decisions.iter().filter(|d| !d.keep).count();
    s.push_str(&format!(
        "{} backups: {} kept, {del} to delete\n",
        decisions.len(),
        decisions.len() - del
    ));
    s
}

/// `rclone deletefile` with bounded attempts; an object already gone counts as deleted.
fn delete(host: &Host, path: &str) -> Result<()> {
    let mut last = String::new();
    for attempt in 1..=3 {
        let mut args = vec!["deletefile".to_string()];
        args.extend(RCLONE_FLAGS.iter().map(|s| s.to_string()));
        args.push(path.to_string());
        let o = host
            .rclone(&args)
            .timeout(Duration::from_secs(120))
            .output()?;
        match o.status.code() {
            Some(0) => return Ok(()),
            // rclone: 3 directory not found, 4 file not found.
            Some(3 | 4) => return Ok(()),
            _ => last = o.stderr_str().trim().to_string(),
        }
        if attempt < 3 {
            std::thread::sleep(Duration::from_secs(attempt));
        }
    }
    Err(Error::failed(format!(
        "could not delete {path} after 3 attempts: {last}"
    )))
}

/// `--json`: the decisions (with `failed` when deletions failed), or on a failure before them
/// (bad input, the lock, the bucket or the audit log out of reach) `error::JsonFailure` at
/// `prune`.
pub fn run(args: Args) -> Result<ExitCode> {
    let (json, env) = (args.json, args.env.clone());
    let mut step = "prune";
    let r = run_in(args, &mut step);
    Error::print_json_failure(&r, json, Some(&env), step);
    r
}

fn run_in(args: Args, step: &mut &'static str) -> Result<ExitCode> {
    for l in &args.labels {
        super::Label::parse(l.strip_suffix('*').unwrap_or(l))?;
    }
    let policy = Policy {
        keep_daily: args.keep_daily,
        keep_weekly: args.keep_weekly,
        keep_monthly: args.keep_monthly,
        keep_pre_deploy: args.keep_pre_deploy,
        labels: args.labels.clone(),
    };
    let envs = Environments::load()?;
    let env = envs.get(&args.env)?;
    let host = Host::of(env)?;
    // The deploy lock is held for the whole --apply: no deploy, restore or rollback starts while
    // objects disappear, and none that runs now is pruned under.
    let _lock = if args.apply {
        let place = crate::deploy::runner::lock_place(&host, &envs.root);
        let info = crate::deploy::lock::LockInfo::new("prune", 3600, crate::random::secret()?);
        Some(crate::deploy::lock::acquire(&place, &info, false)?.0)
    } else {
        None
    };
    let listed = status::list_all(&host)?;
    let entries = status::entries(&listed, &env.backup.base());
    let now = now_unix() as i64;
    let history = History::from_records(&status::audit_records(&host, &envs.root)?, now);
    let decisions = plan(&entries, now, &policy, &history);
    if !args.json {
        print!("{}", render(&decisions));
    }
    let mut deleted: Vec<String> = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    if args.apply {
        for d in decisions.iter().filter(|d| !d.keep) {
            let why = d.rules.join(", ");
            let r = delete(&host, &d.path).and_then(|()| match &d.manifest {
                Some(m) => delete(&host, m).map(|()| deleted.push(m.clone())),
                None => Ok(()),
            });
            match r {
                Ok(()) => {
                    deleted.push(d.path.clone());
                    status::record(
                        &host,
                        &envs.root,
                        "prune",
                        "ok",
                        Some(&d.path),
                        &format!("deleted ({why})"),
                    );
                    if !args.json {
                        println!("deleted {}", d.path);
                    }
                }
                Err(e) => {
                    status::record(
                        &host,
                        &envs.root,
                        "prune",
                        "failed",
                        Some(&d.path),
                        &e.to_string(),
                    );
                    eprintln!("error: {e}");
                    failed.push(d.path.clone());
                }
            }
        }
    } else if !args.json {
        println!("dry run: nothing was deleted (rerun with --apply)");
    }
    if args.json {
        *step = "";
        let v = serde_json::json!({
            "schema": "backup-prune/1",
            "env": env.name,
            "apply": args.apply,
            "policy": policy,
            "decisions": decisions,
            "deleted": deleted,
            "failed": failed,
        });
        println!("{v}");
    }
    if failed.is_empty() {
        Ok(ExitCode::Ok)
    } else {
        Err(Error::failed(format!(
            "prune: {} of the planned deletions failed (see above); everything else was deleted",
            failed.len()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::status::{entries, timestamp_unix, Listed};

    const BASE: &str = "b2:bk/postgres";

    fn listing(items: &[(&str, &str, bool)]) -> Vec<Entry> {
        let mut l = Vec::new();
        for (ts, label, manifest) in items {
            let rel = format!("{}/station_backup_{ts}_{label}.sql.gz", &ts[..6]);
            if *manifest {
                l.push(Listed {
                    rel: format!("{rel}.json"),
                    size: 10,
                });
            }
            l.push(Listed { rel, size: 1000 });
        }
        entries(&l, BASE)
    }

    fn policy() -> Policy {
        Policy {
            keep_daily: 7,
            keep_weekly: 4,
            keep_monthly: 12,
            keep_pre_deploy: 2,
            labels: vec!["manual-old".into()],
        }
    }

    /// 14 months of backups: nightlies thinning out into the past, pre-deploys, manual ones.
    pub const FOURTEEN_MONTHS: &[(&str, &str, bool)] = &[
        ("20251020_030000", "nightly", true),
        ("20251110_030000", "nightly", true),
        ("20251201_030000", "nightly", true),
        ("20251215_120000", "manual", true),
        ("20251224_030000", "nightly", true),
        ("20260110_120000", "manual-old", true),
        ("20260115_030000", "nightly", true),
        ("20260214_030000", "nightly", true),
        ("20260303_030000", "nightly", true),
        ("20260430_030000", "nightly", true),
        ("20260515_030000", "nightly", true),
        ("20260601_100000", "pre-deploy-aaaaaaa", true),
        ("20260610_030000", "nightly", true),
        ("20260704_030000", "nightly", false),
        ("20260820_030000", "nightly", true),
        ("20260901_100000", "pre-deploy-bbbbbbb", true),
        ("20260930_030000", "nightly", true),
        ("20261026_030000", "nightly", true),
        ("20261101_120000", "manual", true),
        ("20261102_030000", "nightly", true),
        ("20261109_030000", "nightly", true),
        ("20261110_100000", "pre-deploy-ccccccc", true),
        ("20261116_030000", "nightly", true),
        ("20261120_030000", "nightly", true),
        ("20261121_030000", "nightly", true),
        ("20261122_020000", "nightly", true),
        ("20261122_230000", "nightly", true),
        ("20261123_030000", "nightly", true),
        ("20261124_030000", "nightly", true),
        ("20261125_030000", "nightly", true),
        ("20261125_100000", "pre-deploy-ddddddd", true),
        ("20261126_030000", "nightly", true),
        ("20261127_030000", "nightly", true),
        ("20261128_030000", "nightly", true),
        ("20261128_100000", "pre-deploy-eeeeeee", true),
        ("20261129_030000", "nightly", true),
    ];

    /// The golden table for [`FOURTEEN_MONTHS`] (deploys eeeeeee, ddddddd, bbbbbbb; keep 2).
    pub const GOLDEN: &str = "\
delete  b2:bk/postgres/202510/station_backup_20251020_030000_nightly.sql.gz +manifest  [beyond --keep-daily 7 --keep-weekly 4 --keep-monthly 12]
delete  b2:bk/postgres/202511/station_backup_20251110_030000_nightly.sql.gz +manifest  [beyond --keep-daily 7 --keep-weekly 4 --keep-monthly 12]
delete  b2:bk/postgres/202512/station_backup_20251201_030000_nightly.sql.gz +manifest  [beyond --keep-daily 7 --keep-weekly 4 --keep-monthly 12]
keep    b2:bk/postgres/202512/station_backup_20251215_120000_manual.sql.gz +manifest  [manual backups are kept unless --label names them]
keep    b2:bk/postgres/202512/station_backup_20251224_030000_nightly.sql.gz +manifest  [monthly 2025-12]
delete  b2:bk/postgres/202601/station_backup_20260110_120000_manual-old.sql.gz +manifest  [--label manual-old]
keep    b2:bk/postgres/202601/station_backup_20260115_030000_nightly.sql.gz +manifest  [monthly 2026-01]
keep    b2:bk/postgres/202602/station_backup_20260214_030000_nightly.sql.gz +manifest  [monthly 2026-02]
keep    b2:bk/postgres/202603/station_backup_20260303_030000_nightly.sql.gz +manifest  [monthly 2026-03]
keep    b2:bk/postgres/202604/station_backup_20260430_030000_nightly.sql.gz +manifest  [monthly 2026-04]
keep    b2:bk/postgres/202605/station_backup_20260515_030000_nightly.sql.gz +manifest  [monthly 2026-05]
delete  b2:bk/postgres/202606/station_backup_20260601_100000_pre-deploy-aaaaaaa.sql.gz +manifest  [not among the last 2 deploys]
keep    b2:bk/postgres/202606/station_backup_20260610_030000_nightly.sql.gz +manifest  [monthly 2026-06]
keep    b2:bk/postgres/202607/station_backup_20260704_030000_nightly.sql.gz  [monthly 2026-07]
keep    b2:bk/postgres/202608/station_backup_20260820_030000_nightly.sql.gz +manifest  [monthly 2026-08]
keep    b2:bk/postgres/202609/station_backup_20260901_100000_pre-deploy-bbbbbbb.sql.gz +manifest  [used by restore:download at 2026-11-30T12:00:00.000Z]
keep    b2:bk/postgres/202609/station_backup_20260930_030000_nightly.sql.gz +manifest  [monthly 2026-09]
keep    b2:bk/postgres/202610/station_backup_20261026_030000_nightly.sql.gz +manifest  [monthly 2026-10]
keep    b2:bk/postgres/202611/station_backup_20261101_120000_manual.sql.gz +manifest  [newest manual]
keep    b2:bk/postgres/202611/station_backup_20261102_030000_nightly.sql.gz +manifest  [weekly week of 2026-11-02]
keep    b2:bk/postgres/202611/station_backup_20261109_030000_nightly.sql.gz +manifest  [weekly week of 2026-11-09]
delete  b2:bk/postgres/202611/station_backup_20261110_100000_pre-deploy-ccccccc.sql.gz +manifest  [not among the last 2 deploys]
delete  b2:bk/postgres/202611/station_backup_20261116_030000_nightly.sql.gz +manifest  [beyond --keep-daily 7 --keep-weekly 4 --keep-monthly 12]
delete  b2:bk/postgres/202611/station_backup_20261120_030000_nightly.sql.gz +manifest  [beyond --keep-daily 7 --keep-weekly 4 --keep-monthly 12]
delete  b2:bk/postgres/202611/station_backup_20261121_030000_nightly.sql.gz +manifest  [beyond --keep-daily 7 --keep-weekly 4 --keep-monthly 12]
delete  b2:bk/postgres/202611/station_backup_20261122_020000_nightly.sql.gz +manifest  [beyond --keep-daily 7 --keep-weekly 4 --keep-monthly 12]
keep    b2:bk/postgres/202611/station_backup_20261122_230000_nightly.sql.gz +manifest  [weekly week of 2026-11-16]
keep    b2:bk/postgres/202611/station_backup_20261123_030000_nightly.sql.gz +manifest  [daily 2026-11-23]
keep    b2:bk/postgres/202611/station_backup_20261124_030000_nightly.sql.gz +manifest  [daily 2026-11-24]
keep    b2:bk/postgres/202611/station_backup_20261125_030000_nightly.sql.gz +manifest  [daily 2026-11-25]
keep    b2:bk/postgres/202611/station_backup_20261125_100000_pre-deploy-ddddddd.sql.gz +manifest  [deploy ddddddd (#2 of the last 2)]
keep    b2:bk/postgres/202611/station_backup_20261126_030000_nightly.sql.gz +manifest  [daily 2026-11-26]
keep    b2:bk/postgres/202611/station_backup_20261127_030000_nightly.sql.gz +manifest  [daily 2026-11-27]
keep    b2:bk/postgres/202611/station_backup_20261128_030000_nightly.sql.gz +manifest  [daily 2026-11-28]
keep    b2:bk/postgres/202611/station_backup_20261128_100000_pre-deploy-eeeeeee.sql.gz +manifest  [newest pre-deploy, deploy eeeeeee (#1 of the last 2)]
keep    b2:bk/postgres/202611/station_backup_20261129_030000_nightly.sql.gz +manifest  [newest nightly, daily 2026-11-29, weekly week of 2026-11-23, monthly 2026-11]
36 backups: 26 kept, 10 to delete
";

    pub fn history_records() -> Vec<Record> {
        let rec = |step: &str, sha: &str, end: &str, obj: Option<&str>| Record {
            env: "t".into(),
            step: step.into(),
            status: "ok".into(),
            start: end.into(),
            end: end.into(),
            duration_ms: 0,
            sha: sha.into(),
            actor: "ci".into(),
            run_url: None,
            backup_object: obj.map(str::to_string),
            message: String::new(),
            previous: None,
            run: None,
            undone_runs: None,
        };
        let sha = |c: char| c.to_string().repeat(40);
        vec![
            rec("pipeline", &sha('b'), "2026-09-01T10:05:00.000Z", None),
            rec("pipeline", &sha('d'), "2026-11-25T10:05:00.000Z", None),
            rec("pipeline", &sha('e'), "2026-11-28T10:05:00.000Z", None),
            rec("pipeline", &sha('e'), "2026-11-28T11:05:00.000Z", None),
            rec(
                "restore:download",
                "",
                "2026-11-30T12:00:00.000Z",
                Some("b2:bk/postgres/202609/station_backup_20260901_100000_pre-deploy-bbbbbbb.sql.gz"),
            ),
            // Too long ago to protect anything.
            rec(
                "rollback",
                "",
                "2026-10-01T12:00:00.000Z",
                Some("b2:bk/postgres/202606/station_backup_20260601_100000_pre-deploy-aaaaaaa.sql.gz"),
            ),
        ]
    }

    #[test]
    fn fourteen_months_golden_table() {
        let now = timestamp_unix("20261201_090000").unwrap();
        let h = History::from_records(&history_records(), now);
        assert_eq!(h.deploys.len(), 3);
        let d = plan(&listing(FOURTEEN_MONTHS), now, &policy(), &h);
        let got = render(&d);
        assert_eq!(got, GOLDEN, "\n{got}");
    }

    #[test]
    fn never_deleted_young_newest_and_in_use() {
        let now = timestamp_unix("20261201_090000").unwrap();
        let items = [
            ("20261130_100000", "nightly", true),
            ("20261130_120000", "manual-x", true),
            ("20261201_030000", "nightly", true),
        ];
        let p = Policy {
            keep_daily: 0,
            keep_weekly: 0,
            keep_monthly: 0,
            keep_pre_deploy: 0,
            labels: vec!["manual-*".into()],
        };
        let d = plan(&listing(&items), now, &p, &History::default());
        assert!(d.iter().all(|d| d.keep), "{}", render(&d));
        assert_eq!(d[0].rules, ["younger than 24h"]);
        assert_eq!(d[1].rules, ["younger than 24h", "newest manual"]);
        // A day later: the older nightly goes, the --label rule deletes nothing that is newest.
        let later = now + 2 * 86_400;
        let d = plan(&listing(&items), later, &p, &History::default());
        assert!(!d[0].keep);
        assert!(d[1].keep && d[2].keep, "{}", render(&d));
        // Pre-deploy with no deploys in the audit log: the newest N fill in.
        let pre = [
            ("20261101_100000", "pre-deploy-1111111", true),
            ("20261102_100000", "pre-deploy-2222222", true),
            ("20261103_100000", "pre-deploy-3333333", true),
        ];
        let p = Policy {
            keep_pre_deploy: 2,
            ..p
        };
        let d = plan(&listing(&pre), later, &p, &History::default());
        let keeps: Vec<bool> = d.iter().map(|d| d.keep).collect();
        assert_eq!(keeps, [false, true, true], "{}", render(&d));
        assert!(d[1].rules[0].contains("knows 0 deploys"));
    }

    #[test]
    fn weeks_start_on_monday() {
        let t = |s| timestamp_unix(s).unwrap();
        assert_eq!(date(week_key(t("20261129_235959"))), "2026-11-23");
        assert_eq!(date(week_key(t("20261130_000000"))), "2026-11-30");
        assert_eq!(date(week_key(t("20260101_120000"))), "2025-12-29");
        assert_eq!(
            rfc3339_unix("2026-12-01T09:30:00.123Z"),
            Some(t("20261201_093000"))
        );
    }
}
