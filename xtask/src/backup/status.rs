//! `cargo xtask backup status`: is the newest nightly fresh, complete and plausible?
//!
//! I/O ([`run`], [`list_all`], [`audit_records`]) is kept apart from the pure part: [`entries`] pairs
//! the listed dumps with their manifests, [`evaluate`] classifies them by label (nightly, pre-deploy,
//! manual, other) and decides, and the renderers turn a [`Report`] into text, JSON or node_exporter
//! textfile metrics. Ages come from the timestamp in the object's name (`BACKUP_TIMESTAMP`, UTC), the
//! one clock every copy of a backup agrees on.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::manifest;
use super::result::BackupName;
use crate::deploy::audit::Record;
use crate::environments::{Environment, Environments};
use crate::error::{Error, ExitCode, Result};
use crate::host::{Host, Script, RCLONE_FLAGS};
use crate::time::{days_from_civil, human_age};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Environment from infra/environments.toml.
    #[arg(long, default_value = "local")]
    pub env: String,
    /// The newest nightly may be this old (`26h`, `90m`, `2d`, `1d2h`, `3600s`).
    #[arg(long, default_value = "26h")]
    pub max_age: String,
    /// Print the report as JSON (schema `backup-status/1`).
    #[arg(long)]
    pub json: bool,
    /// Also write node_exporter textfile metrics to FILE (atomically).
    #[arg(long, value_name = "FILE")]
    pub prometheus: Option<PathBuf>,
}

/// The label classes, in report order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    Nightly,
    PreDeploy,
    Manual,
    Other,
}

impl Class {
    pub const ALL: [Class; 4] = [
        Class::Nightly,
        Class::PreDeploy,
        Class::Manual,
        Class::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Nightly => "nightly",
            Class::PreDeploy => "pre-deploy",
            Class::Manual => "manual",
            Class::Other => "other",
        }
    }

    /// `nightly`, `pre-deploy-<sha>`, `manual` (each also with a `-suffix`); anything else is other.
    pub fn of(label: &str) -> Class {
        let is = |base: &str| {
            label == base
                || label
                    .strip_prefix(base)
                    .is_some_and(|r| r.starts_with('-') && r.len() > 1)
        };
        if is("nightly") {
            Class::Nightly
        } else if is("pre-deploy") {
            Class::PreDeploy
        } else if is("manual") {
            Class::Manual
        } else {
            Class::Other
        }
    }
}

/// One file of the recursive listing of `<remote>:<bucket>/<prefix>` (path relative to it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub rel: String,
    pub size: u64,
}

/// A backup dump in the bucket, with what is known about it from the listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// Full rclone path of the dump.
    pub path: String,
    /// Full rclone path of its manifest when the listing has it.
    pub manifest: Option<String>,
    pub label: String,
    pub class: Class,
    /// `YYYYmmdd_HHMMSS` from the name (UTC).
    pub timestamp: String,
    /// The same as Unix seconds.
    pub unix: i64,
    pub size: u64,
}

/// Parse `rclone lsjson -R --files-only` output (pure).
pub fn parse_listing(json: &str) -> Result<Vec<Listed>> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct E {
        path: String,
        size: i64,
        #[serde(default)]
        is_dir: bool,
    }
    let v: Vec<E> = serde_json::from_str(json)
        .map_err(|e| Error::failed(format!("cannot parse `rclone lsjson` output: {e}")))?;
    Ok(v.into_iter()
        .filter(|e| !e.is_dir)
        .map(|e| Listed {
            rel: e.path,
            size: e.size.max(0) as u64,
        })
        .collect())
}

/// The dumps of a listing (`YYYYMM/station_backup_...sql.gz` in the folder of their month), each
/// with its manifest when `<dump>.json` is listed too; oldest first (pure).
pub fn entries(listed: &[Listed], base: &str) -> Vec<Entry> {
    let base = base.trim_end_matches('/');
    let manifests: std::collections::BTreeSet<&str> = listed
        .iter()
        .filter_map(|l| manifest::dump_path(&l.rel))
        .collect();
    let mut out: Vec<Entry> = listed
        .iter()
        .filter_map(|l| {
            let (month, file) = l.rel.split_once('/')?;
            let name = BackupName::parse(file)?;
            (name.month() == month).then_some(())?;
            let unix = timestamp_unix(&name.timestamp)?;
            Some(Entry {
                path: format!("{base}/{}", l.rel),
                manifest: manifests
                    .contains(l.rel.as_str())
                    .then(|| format!("{base}/{}", manifest::manifest_path(&l.rel))),
                class: Class::of(&name.label),
                label: name.label,
                timestamp: name.timestamp,
                unix,
                size: l.size,
            })
        })
        .collect();
    out.sort_by(|a, b| (a.unix, &a.path).cmp(&(b.unix, &b.path)));
    out
}

/// `YYYYmmdd_HHMMSS` (UTC) as Unix seconds; `None` for an impossible date or time.
pub fn timestamp_unix(ts: &str) -> Option<i64> {
    let n = |r: std::ops::Range<usize>| ts.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (n(0..4)?, n(4..6)?, n(6..8)?);
    let (h, mi, s) = (n(9..11)?, n(11..13)?, n(13..15)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let mdays = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&mo)
        || d < 1
        || d > mdays[(mo - 1) as usize]
        || h > 23
        || mi > 59
        || s > 59
    {
        return None;
    }
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s)
}

/// `26h`, `90m`, `2d`, `1d2h`, `3600s` as seconds (exit 2 otherwise).
pub fn parse_duration(s: &str) -> Result<i64> {
    let bad = || {
        Error::usage(format!(
            "invalid duration {s:?}: expected e.g. 26h, 90m, 2d, 1d2h, 3600s"
        ))
    };
    let mut total: i64 = 0;
    let mut num = String::new();
    let mut any = false;
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(bad()),
        };
        let n: i64 = num.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        num.clear();
        any = true;
    }
    if !num.is_empty() || !any || total == 0 {
        return Err(bad());
    }
    Ok(total)
}

/// The newest backup of a class and how it compares with the one before.
#[derive(Clone, Debug, Serialize)]
pub struct ClassStatus {
    pub class: Class,
    pub count: usize,
    pub newest: Option<Entry>,
    pub age_seconds: Option<i64>,
    pub previous_size: Option<u64>,
    /// Size change from the previous one of the class, in percent.
    pub size_change_percent: Option<f64>,
}

/// The last drill in the audit log.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct DrillResult {
    pub status: String,
    pub end: String,
    pub object: Option<String>,
    pub message: String,
}

/// What `backup status` says (schema `backup-status/1`).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub env: String,
    pub now_unix: i64,
    pub max_age_seconds: i64,
    pub ok: bool,
    pub classes: Vec<ClassStatus>,
    pub last_drill: Option<DrillResult>,
    /// The installed nightly job, where it can be read (see `backup schedule`).
    pub schedule: Option<super::schedule::JobStatus>,
    /// Why the status failed (exit 1).
    pub failures: Vec<String>,
    pub warnings: Vec<String>,
}

/// The last `drill` record of the audit log.
pub fn last_drill(records: &[Record]) -> Option<DrillResult> {
    records
        .iter()
        .filter(|r| r.step == "drill")
        .max_by(|a, b| a.end.cmp(&b.end))
        .map(|r| DrillResult {
            status: r.status.clone(),
            end: r.end.clone(),
            object: r.backup_object.clone(),
            message: r.message.clone(),
        })
}

/// Classify and decide (pure). Fails on the newest nightly only: older than `max_age`, without its
/// manifest, or under half the size of the previous nightly (an emptied database dumps "fine").
pub fn evaluate(
    env: &str,
    entries: &[Entry],
    now: i64,
    max_age: i64,
    last_drill: Option<DrillResult>,
) -> Report {
    let mut failures = Vec::new();
    let mut warnings = Vec::new();
    let mut classes = Vec::new();
    for class in Class::ALL {
        let of: Vec<&Entry> = entries.iter().filter(|e| e.class == class).collect();
        let newest = of.last().copied();
        let previous = of.len().checked_sub(2).map(|i| of[i]);
        let st = ClassStatus {
            class,
            count: of.len(),
            newest: newest.cloned(),
            age_seconds: newest.map(|e| now - e.unix),
            previous_size: previous.map(|p| p.size),
            size_change_percent: match (newest, previous) {
                (Some(n), Some(p)) if p.size > 0 => {
                    Some(((n.size as f64 - p.size as f64) / p.size as f64 * 1000.0).round() / 10.0)
                }
                _ => None,
            },
        };
        match (class, newest) {
            (Class::Nightly, None) => failures.push("there is no nightly backup".to_string()),
            (Class::Nightly, Some(n)) => {
                let age = now - n.unix;
                if age > max_age {
                    failures.push(format!(
                        "the newest nightly {} is {} old (more than {})",
                        n.path,
                        human_age(age),
                        human_age(max_age)
                    ));
                }
                if n.manifest.is_none() {
                    failures.push(format!("the newest nightly {} has no manifest", n.path));
                }
                if let Some(p) = previous {
                    if n.size.saturating_mul(2) < p.size {
                        failures.push(format!(
                            "the newest nightly {} is {} bytes, less than half of the previous \
                             nightly's {} bytes ({}): was the database emptied?",
                            n.path, n.size, p.size, p.path
                        ));
                    }
                }
            }
            (_, Some(n)) if n.manifest.is_none() => warnings.push(format!(
                "the newest {} backup {} has no manifest",
                class.as_str(),
                n.path
            )),
            _ => {}
        }
        classes.push(st);
    }
    match &last_drill {
        None => warnings.push("no drill in the audit log: run `cargo xtask backup drill`".into()),
        Some(d) if d.status != "ok" => warnings.push(format!(
            "the last drill ({}) {}: {}",
            d.end, d.status, d.message
        )),
        _ => {}
    }
    Report {
        schema: "backup-status/1",
        env: env.to_string(),
        now_unix: now,
        max_age_seconds: max_age,
        ok: failures.is_empty(),
        classes,
        last_drill,
        schedule: None,
        failures,
        warnings,
    }
}

/// The report for people.
pub fn render_text(r: &Report) -> String {
    let mut s = format!("backup status of `{}`\n", r.env);
    for c in &r.classes {
        match &c.newest {
            None => s.push_str(&format!("  {:<10} none\n", c.class.as_str())),
            Some(n) => {
                let change = match c.size_change_percent {
                    Some(p) => format!(", {p:+.1}% vs previous"),
                    None => String::new(),
                };
                s.push_str(&format!(
                    "  {:<10} {} ({} old, {} bytes{change}, {}), {} in the bucket\n",
                    c.class.as_str(),
                    n.path,
                    human_age(c.age_seconds.unwrap_or(0)),
                    n.size,
                    if n.manifest.is_some() {
                        "manifest ok"
                    } else {
                        "NO MANIFEST"
                    },
                    c.count
                ));
            }
        }
    }
    match &r.last_drill {
        Some(d) => s.push_str(&format!(
            "  last drill {} at {}{}\n",
            d.status,
            d.end,
            d.object
                .as_deref()
                .map(|o| format!(" ({o})"))
                .unwrap_or_default()
        )),
        None => s.push_str("  last drill: none recorded\n"),
    }
    match &r.schedule {
        Some(j) => s.push_str(&format!("  schedule: {}\n", j.describe())),
        None => {
            s.push_str("  schedule: no nightly job installed (`cargo xtask backup schedule`)\n")
        }
    }
    for w in &r.warnings {
        s.push_str(&format!("warning: {w}\n"));
    }
    for f in &r.failures {
        s.push_str(&format!("FAIL: {f}\n"));
    }
    s.push_str(if r.ok {
        "backup status ok\n"
    } else {
        "backup status FAILED\n"
    });
    s
}

/// node_exporter textfile metrics: age and size of the newest backup per class, and the verdict.
pub fn render_prometheus(r: &Report) -> String {
    let env = prom_escape(&r.env);
    let mut s = String::new();
    s.push_str("# HELP station_backup_age_seconds Age of the newest backup of the label class.\n");
    s.push_str("# TYPE station_backup_age_seconds gauge\n");
    for c in r.classes.iter().filter(|c| c.newest.is_some()) {
        s.push_str(&format!(
            "station_backup_age_seconds{{env=\"{env}\",label=\"{}\"}} {}\n",
            c.class.as_str(),
            c.age_seconds.unwrap_or(0)
        ));
    }
    s.push_str("# HELP station_backup_size_bytes Size of the newest backup of the label class.\n");
    s.push_str("# TYPE station_backup_size_bytes gauge\n");
    for c in &r.classes {
        if let Some(n) = &c.newest {
            s.push_str(&format!(
                "station_backup_size_bytes{{env=\"{env}\",label=\"{}\"}} {}\n",
                c.class.as_str(),
                n.size
            ));
        }
    }
    s.push_str(
        "# HELP station_backup_ok 1 when the newest nightly is fresh, has its manifest and did not shrink by half.\n",
    );
    s.push_str("# TYPE station_backup_ok gauge\n");
    s.push_str(&format!(
        "station_backup_ok{{env=\"{env}\"}} {}\n",
        u8::from(r.ok)
    ));
    s
}

fn prom_escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The recursive listing of the environment's backup folder, through the host's rclone.
pub fn list_all(host: &Host) -> Result<Vec<Listed>> {
    let env = host.env();
    let mut args: Vec<String> = ["lsjson", "-R", "--files-only"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(RCLONE_FLAGS.iter().map(|s| s.to_string()));
    args.push(env.backup.base());
    let o = host.rclone(&args).output()?;
    match o.status.code() {
        Some(0) => parse_listing(&o.stdout_str()),
        // The bucket or folder does not exist yet: no backups.
        Some(3) => Ok(Vec::new()),
        _ => Err(Error::unavailable(format!(
            "`rclone lsjson -R {}` {}: {}",
            env.backup.base(),
            crate::process::describe(o.status),
            o.stderr_str().trim()
        ))),
    }
}

/// Reads a file on the host; prints nothing when it does not exist.
const CAT_IF_EXISTS: &str = r#"[ ! -e "$1" ] || cat -- "$1""#;

/// The audit log records of the environment: this machine's copy, and on a server its own copy
/// (deploys from CI write there; the runner's copy is gone with the runner). Duplicates merged.
pub fn audit_records(host: &Host, root: &Path) -> Result<Vec<Record>> {
    let mut texts = Vec::new();
    let local = crate::deploy::runner::audit_path(host, root);
    match std::fs::read_to_string(&local) {
        Ok(t) => texts.push((local.display().to_string(), t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::read(&local, e)),
    }
    if let Some(r) = host.remote() {
        let file = format!("{}/deploy-audit.jsonl", r.dir);
        let cmd = host
            .script(
                &Script::sh(CAT_IF_EXISTS).anywhere(),
                std::slice::from_ref(&file),
            )?
            .timeout(std::time::Duration::from_secs(30));
        let text = crate::host::outcome("reading the server's audit log", cmd.output()?)?;
        texts.push((file, text));
    }
    let mut out: Vec<Record> = Vec::new();
    for (origin, text) in texts {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            // A line we cannot read is someone else's (or a torn write): say so, keep going.
            match serde_json::from_str::<Record>(line) {
                Ok(r) => {
                    if !out.contains(&r) {
                        out.push(r);
                    }
                }
                Err(e) => eprintln!("warning: {origin}:{}: not an audit record: {e}", i + 1),
            }
        }
    }
    Ok(out)
}

/// Append one record for a backup command (`drill`, `prune`) to the environment's audit log (this
/// machine's copy and, on a server, the server's).
pub fn record(host: &Host, root: &Path, step: &str, status: &str, object: Option<&str>, msg: &str) {
    let now = crate::time::now_unix();
    let at = crate::time::rfc3339_ms(now as u128 * 1000);
    let r = Record {
        env: host.env().name.clone(),
        step: step.to_string(),
        status: status.to_string(),
        start: at.clone(),
        end: at,
        duration_ms: 0,
        sha: String::new(),
        actor: crate::deploy::actor(),
        run_url: crate::deploy::run_url(),
        backup_object: object.map(str::to_string),
        message: msg.to_string(),
        previous: None,
        run: None,
        undone_runs: None,
    };
    let audit = crate::deploy::audit::Audit {
        local: crate::deploy::runner::audit_path(host, root),
        remote: host
            .remote()
            .map(|r| (r.target.clone(), format!("{}/deploy-audit.jsonl", r.dir))),
    };
    if let Err(e) = audit.append(&r) {
        eprintln!("warning: could not record `{step}` in the audit log: {e}");
    }
}

/// Record a drill's outcome in the audit log (step `drill`: `ok`, or `failed` with the reason), so
/// `backup status` can show the last one.
pub fn record_drill(env: &Environment, root: &Path, result: &Result<super::drill::Report>) {
    let Ok(host) = Host::of(env) else { return };
    match result {
        Ok(r) if r.passed => record(
            &host,
            root,
            "drill",
            "ok",
            Some(&r.object.path),
            "restored and matched",
        ),
        Ok(r) => record(
            &host,
            root,
            "drill",
            "failed",
            Some(&r.object.path),
            "the restore differs",
        ),
        Err(e) => record(&host, root, "drill", "failed", None, &e.to_string()),
    }
}

/// Gather and evaluate the status of `env` (I/O).
pub fn status_of(env: &Environment, root: &Path, max_age: i64) -> Result<Report> {
    let host = Host::of(env)?;
    let listed = list_all(&host)?;
    let es = entries(&listed, &env.backup.base());
    let records = audit_records(&host, root)?;
    let now = crate::time::now_unix() as i64;
    let mut r = evaluate(&env.name, &es, now, max_age, last_drill(&records));
    r.schedule = super::schedule::job_status(&host, root);
    if let Some(j) = &r.schedule {
        if j.last_result.as_deref().is_some_and(|x| x != "ok") {
            r.warnings
                .push(format!("the last scheduled run failed: {}", j.describe()));
        }
    }
    Ok(r)
}

/// `--json`: the report, or on a failure before it (bad input, the bucket out of reach, the
/// textfile not written) `error::JsonFailure` at `status`.
pub fn run(args: Args) -> Result<ExitCode> {
    let (json, env) = (args.json, args.env.clone());
    let r = run_in(args);
    Error::print_json_failure(&r, json, Some(&env), "status");
    r
}

fn run_in(args: Args) -> Result<ExitCode> {
    let max_age = parse_duration(&args.max_age)?;
    let envs = Environments::load()?;
    let env = envs.get(&args.env)?;
    let report = status_of(env, &envs.root, max_age)?;
    if let Some(file) = &args.prometheus {
        crate::files::write_atomic(
            file,
            render_prometheus(&report).as_bytes(),
            crate::files::Mode::Keep { new: Some(0o644) },
        )?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&report).expect("serializable"));
    } else {
        print!("{}", render_text(&report));
    }
    Ok(if report.ok {
        ExitCode::Ok
    } else {
        ExitCode::Failed
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "b2:bk/postgres";

    fn listed(items: &[(&str, u64)]) -> Vec<Listed> {
        items
            .iter()
            .map(|(r, s)| Listed {
                rel: r.to_string(),
                size: *s,
            })
            .collect()
    }

    fn dump(ts: &str, label: &str) -> String {
        format!("{}/station_backup_{ts}_{label}.sql.gz", &ts[..6])
    }

    #[test]
    fn classes_by_label() {
        for (l, c) in [
            ("nightly", Class::Nightly),
            ("nightly-retry", Class::Nightly),
            ("nightlyx", Class::Other),
            ("pre-deploy-abc1234", Class::PreDeploy),
            ("pre-deploy", Class::PreDeploy),
            ("pre-deploy-", Class::Other),
            ("manual", Class::Manual),
            ("manual-before-upgrade", Class::Manual),
            ("s3-ok", Class::Other),
        ] {
            assert_eq!(Class::of(l), c, "{l}");
        }
    }

    #[test]
    fn timestamps_and_durations() {
        assert_eq!(timestamp_unix("19700101_000000"), Some(0));
        assert_eq!(timestamp_unix("20261201_093000"), Some(1_796_117_400));
        assert_eq!(timestamp_unix("20240229_000000"), Some(1_709_164_800));
        for bad in [
            "20230229_000000",
            "20261301_000000",
            "20261201_240000",
            "2026",
        ] {
            assert_eq!(timestamp_unix(bad), None, "{bad}");
        }
        assert_eq!(parse_duration("26h").unwrap(), 93_600);
        assert_eq!(parse_duration("1d2h").unwrap(), 93_600);
        assert_eq!(parse_duration("90m").unwrap(), 5400);
        for bad in ["", "26", "h", "0h", "-1h", "26x", "1.5h"] {
            assert_eq!(
                parse_duration(bad).unwrap_err().exit_code(),
                ExitCode::Usage,
                "{bad}"
            );
        }
    }

    #[test]
    fn dumps_pair_with_their_manifests_and_foreign_files_are_ignored() {
        let d1 = dump("20261130_030000", "nightly");
        let d2 = dump("20261201_030000", "nightly");
        let l = listed(&[
            (&d2, 900),
            (&format!("{d1}.json"), 300),
            (&d1, 1000),
            ("202611/notes.txt", 1),
            // In the wrong month's folder: not ours.
            ("202610/station_backup_20261101_030000_nightly.sql.gz", 5),
        ]);
        let e = entries(&l, BASE);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].path, format!("{BASE}/{d1}"));
        assert_eq!(e[0].manifest, Some(format!("{BASE}/{d1}.json")));
        assert_eq!(e[1].manifest, None);
    }

    fn at(ts: &str) -> i64 {
        timestamp_unix(ts).unwrap()
    }

    #[test]
    fn a_fresh_complete_nightly_passes_and_each_alarm_fails() {
        let d1 = dump("20261130_030000", "nightly");
        let d2 = dump("20261201_030000", "nightly");
        let p = dump("20261201_080000", "pre-deploy-abc1234");
        let base = vec![
            (d1.clone(), 1000u64),
            (format!("{d1}.json"), 300),
            (d2.clone(), 990),
            (format!("{d2}.json"), 300),
            (p.clone(), 995),
        ];
        let mk = |items: &[(String, u64)]| {
            let v: Vec<(&str, u64)> = items.iter().map(|(a, b)| (a.as_str(), *b)).collect();
            entries(&listed(&v), BASE)
        };
        let now = at("20261201_090000");
        let ok = evaluate("t", &mk(&base), now, 26 * 3600, None);
        assert!(ok.ok, "{:?}", ok.failures);
        let n = &ok.classes[0];
        assert_eq!(n.age_seconds, Some(6 * 3600));
        assert_eq!(n.size_change_percent, Some(-1.0));
        assert!(ok
            .warnings
            .iter()
            .any(|w| w.contains("no manifest") && w.contains("pre-deploy")));
        assert!(ok.warnings.iter().any(|w| w.contains("no drill")));

        // Too old.
        let late = evaluate("t", &mk(&base), at("20261202_060000"), 26 * 3600, None);
        assert!(!late.ok);
        assert!(
            late.failures[0].contains("1d 3h old (more than 1d 2h)"),
            "{:?}",
            late.failures
        );
        // No manifest.
        let no_m: Vec<_> = base
            .iter()
            .filter(|(p, _)| p != &format!("{d2}.json"))
            .cloned()
            .collect();
        let r = evaluate("t", &mk(&no_m), now, 26 * 3600, None);
        assert!(
            r.failures.iter().any(|f| f.contains("no manifest")),
            "{:?}",
            r.failures
        );
        // Shrunk to under half (exactly half passes).
        let mut small = base.clone();
        small[2].1 = 499;
        let r = evaluate("t", &mk(&small), now, 26 * 3600, None);
        assert!(
            r.failures.iter().any(|f| f.contains("less than half")),
            "{:?}",
            r.failures
        );
        small[2].1 = 500;
        assert!(evaluate("t", &mk(&small), now, 26 * 3600, None).ok);
        // No nightly at all.
        let r = evaluate("t", &mk(&base[4..]), now, 26 * 3600, None);
        assert_eq!(r.failures, ["there is no nightly backup"]);
    }

    #[test]
    fn metrics_are_textfile_format() {
        let d = dump("20261201_030000", "nightly");
        let e = entries(&listed(&[(&d, 1234), (&format!("{d}.json"), 1)]), BASE);
        let drill = DrillResult {
            status: "failed".into(),
            end: "2026-12-01T04:00:00.000Z".into(),
            object: None,
            message: "x differs".into(),
        };
        let r = evaluate("prod\"x", &e, at("20261201_040000"), 3600 * 26, Some(drill));
        assert!(r.ok);
        assert!(r.warnings.iter().any(|w| w.contains("failed: x differs")));
        let p = render_prometheus(&r);
        assert!(
            p.contains("station_backup_age_seconds{env=\"prod\\\"x\",label=\"nightly\"} 3600\n"),
            "{p}"
        );
        assert!(p.contains("station_backup_size_bytes{env=\"prod\\\"x\",label=\"nightly\"} 1234\n"));
        assert!(p.contains("station_backup_ok{env=\"prod\\\"x\"} 1\n"));
        assert!(!p.contains("label=\"manual\""));
        for l in p.lines() {
            assert!(
                l.starts_with("# HELP ")
                    || l.starts_with("# TYPE ")
                    || l.starts_with("station_backup_"),
                "{l}"
            );
        }
    }
}
