//! Pure: read the deploy audit log as runs, and choose what a rollback undoes and what it puts back.
//!
//! A deploy run is the records of one `cargo xtask deploy`. The runner appends a record when each
//! step ends and a `pipeline` record at the very end (whose `start` is the run's start). A run that
//! was killed (SIGKILL, a lost machine) has no `pipeline` record, so a run also ends where the next
//! one visibly begins: a step that does not come after the previous one in the pipeline's order,
//! another SHA, a `pipeline` record that started after it, or a restore or rollback (they hold the
//! lock). Such a run is incomplete: it did not succeed, and it may have run its migrations once its
//! backup was verified. Other records (`restore:*`, `rollback:*`, `drill`, `prune`) are not part
//! of any run. Records that carry a run id (every deploy writes one) belong to that run wherever
//! they are: a restore or deploy the lock refused may write records in the middle of a running
//! deploy, which stays one run (ending at its `pipeline` record, or its last one when killed).
//!
//! What a rollback undoes ([`undo_range`]): X, the newest run that ran (or may have run) its
//! migrations and is not undone, and every not-undone run since G, the last good deploy before it
//! (succeeded, not undone; `--to` names an older one). It restores the pre-deploy backup of the
//! FIRST of those runs that migrated: a retry's own backup was taken after the failed run's
//! migrations. An ok `rollback` record marks the runs it names undone (`undone_runs`: their ids;
//! older records without them: the range computed again, from its newest run back to the release
//! it put back), so a later rollback does not undo them again; so does a failed one whose swap
//! committed (a partial rollback, finished by `rollback:resume`: see [`history`]).

use serde::Serialize;

use crate::deploy::audit::Record;
use crate::deploy::plan::Step;
use crate::error::{Error, Result};

/// The step name of a rollback's summary record (its `sha` is the SHA of the newest undone run,
/// its `previous` the release put back).
pub const ROLLBACK_STEP: &str = "rollback";

/// The step name of the summary record of `rollback --resume` (its `sha` is the partial
/// rollback's): with status `ok` it finishes that rollback.
pub const RESUME_STEP: &str = "rollback:resume";

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeployRun {
    pub sha: String,
    /// Its records' `run` id (older records have none).
    pub run: Option<String>,
    /// Got as far as running its migrations (the migrate step ran: ok, failed or interrupted), or,
    /// for an incomplete run, got past its verified backup (it may have started migrating).
    pub migrated: bool,
    /// Ended with its `pipeline` record (false: killed; see the module docs).
    pub complete: bool,
    /// Its migrations and rollout succeeded and the pipeline ended ok.
    pub succeeded: bool,
    /// The step that failed, if any (for an incomplete run: the step after its last record).
    pub failed_step: Option<String>,
    /// Its pre-deploy backup, as recorded.
    pub backup_object: Option<String>,
    /// When it started (its pipeline record's start, else its first record's).
    pub start: String,
    /// When its pipeline ended (for an incomplete run: its last record).
    pub end: String,
    /// Undone by a later rollback.
    pub undone: bool,
}

impl DeployRun {
    /// One line for plans and messages.
    pub fn describe(&self) -> String {
        let outcome = match (&self.failed_step, self.complete, self.succeeded) {
            (_, true, true) => "ok".to_string(),
            (Some(s), true, _) => format!("failed at {s}"),
            (None, true, _) => "failed".to_string(),
            (Some(s), false, _) => format!("INCOMPLETE: killed during {s}"),
            (None, false, _) => "INCOMPLETE: killed".to_string(),
        };
        let migrated = match (self.migrated, self.complete) {
            (true, true) => "ran its migrations",
            (true, false) => "may have run its migrations",
            (false, _) => "no migrations",
        };
        format!(
            "deploy {} (started {}, ended {}, {outcome}; {migrated})",
            self.sha, self.start, self.end
        )
    }
}

/// A rollback in the log that put its backup back: an ok one, or a failed one whose swap
/// committed (a partial rollback: see [`history`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RollbackMark {
    /// The newest run it undid.
    pub sha: String,
    pub end: String,
    /// How many runs the log held before it.
    pub after_runs: usize,
    /// The release it put back (or was to put back).
    pub previous: Option<String>,
    /// The backup it restored.
    pub backup_object: Option<String>,
    /// When the restored database went live (its `rollback:swap` record's end), if recorded.
    pub restored_at: Option<String>,
    /// The runs it marked undone (indices into [`History::runs`]).
    pub undone: Vec<usize>,
    /// It failed after its swap committed, and no `rollback:resume` has finished it since: the
    /// database is rolled back, the release, health and verify-redis steps are left.
    pub partial: bool,
}

/// The deploy runs (oldest first, undone ones marked) and the ok rollbacks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    pub runs: Vec<DeployRun>,
    pub rollbacks: Vec<RollbackMark>,
}

fn step_order(step: &str) -> Option<usize> {
    Step::ALL.iter().position(|s| s.name() == step)
}

fn close(out: &mut Vec<DeployRun>, recs: &mut Vec<&Record>, pipeline: Option<&Record>) {
    if recs.is_empty() && pipeline.is_none() {
        return;
    }
    let status = |name: &str| {
        recs.iter()
            .rev()
            .find(|c| c.step == name)
            .map(|c| c.status.as_str())
    };
    let ran_migrate = matches!(status("migrate"), Some("ok" | "failed" | "interrupted"));
    let (migrated, succeeded, failed_step) = match pipeline {
        Some(p) => (
            ran_migrate,
            p.status == "ok" && status("migrate") == Some("ok") && status("rollout") == Some("ok"),
            recs.iter()
                .find(|c| c.status != "ok" && c.status != "skipped")
                .map(|c| c.step.clone()),
        ),
        None => {
            // Killed: migrate runs right after a verified backup, so from then on it may have.
            let failed = recs
                .iter()
                .find(|c| c.status != "ok" && c.status != "skipped")
                .map(|c| c.step.clone());
            let next = recs
                .last()
                .and_then(|l| step_order(&l.step))
                .and_then(|i| Step::ALL.get(i + 1))
                .map(|s| s.name().to_string());
            (
                ran_migrate || status("verify-backup") == Some("ok"),
                false,
                failed.or(next),
            )
        }
    };
    let first = recs.first().copied();
    let last = recs.last().copied();
    let sha = pipeline
        .or(first)
        .map(|r| r.sha.clone())
        .unwrap_or_default();
    out.push(DeployRun {
        sha,
        run: pipeline.or(first).and_then(|r| r.run.clone()),
        migrated,
        complete: pipeline.is_some(),
        succeeded,
        failed_step,
        backup_object: pipeline
            .and_then(|p| p.backup_object.clone())
            .or_else(|| recs.iter().rev().find_map(|c| c.backup_object.clone())),
        start: pipeline
            .or(first)
            .map(|r| r.start.clone())
            .unwrap_or_default(),
        end: pipeline.or(last).map(|r| r.end.clone()).unwrap_or_default(),
        undone: false,
    });
    recs.clear();
}

/// Group the records into deploy runs, oldest first, mark the undone ones, note the rollbacks.
///
/// A `rollback` record marks its runs undone when its status is `ok`, and also when it failed
/// after its swap committed: a `rollback:swap` record with status `ok` since the rollback's
/// `rollback:plan` (the restored database is live, so those runs' migrations are gone whatever
/// failed after: `compose up -d`, health, verify-redis). Such a rollback is `partial` until a
/// `rollback:resume` record with status `ok` (`rollback --resume`: the steps left) finishes it.
/// A rollback killed after its swap (no `rollback` record: SIGKILL, the machine lost) is partial
/// too, from its swap record (which carries the undone SHA and the release put back), once the
/// log goes on with anything but that rollback's own later steps, or ends.
///
/// A deploy's records that carry its `run` id are that run's wherever they are: a record written
/// meanwhile by a command the lock refused (a restore, another deploy) does not split it. Such a
/// run ends at its `pipeline` record, or at its last record when it was killed. A deploy the lock
/// refused (its `lock` step not ok) held nothing, so its records do not end a rollback either.
pub fn history(records: &[Record]) -> History {
    let mut h = History::default();
    // Records without a run id (older versions): the run in progress.
    let mut current: Vec<&Record> = Vec::new();
    // Runs with an id in progress, and where each id's last record is.
    let mut open: Vec<(&str, Vec<&Record>)> = Vec::new();
    let mut last_of: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    // Deploys the lock refused: they held nothing, so their records (written while a rollback
    // held it) do not end that rollback.
    let mut refused: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for (i, r) in records.iter().enumerate() {
        if let Some(id) = deploy_run_id(r) {
            last_of.insert(id, i);
            if r.step == "lock" && r.status != "ok" {
                refused.insert(id);
            }
        }
    }
    // The current rollback's committed swap, until its `rollback` record comes.
    let mut swapped: Option<&Record> = None;
    for (i, r) in records.iter().enumerate() {
        let recovery = r.step == ROLLBACK_STEP
            || r.step.starts_with("restore:")
            || r.step.starts_with("rollback:");
        // What can follow a committed swap in the same rollback: its later steps and its record.
        let same_rollback = r.step == ROLLBACK_STEP
            || (r.step.starts_with("rollback:")
                && r.step != "rollback:plan"
                && r.step != RESUME_STEP)
            || deploy_run_id(r).is_some_and(|id| refused.contains(id));
        if !same_rollback {
            if let Some(s) = swapped.take() {
                killed_after_swap(&mut h, s);
            }
        }
        if recovery {
            // A restore or rollback holds the lock: no deploy runs meanwhile.
            close(&mut h.runs, &mut current, None);
            match r.step.as_str() {
                "rollback:plan" => swapped = None,
                "rollback:swap" if r.status == "ok" => swapped = Some(r),
                RESUME_STEP if r.status == "ok" => {
                    let runs = h.runs.len();
                    if let Some(m) = h
                        .rollbacks
                        .last_mut()
                        .filter(|m| m.partial && m.after_runs == runs && m.sha == r.sha)
                    {
                        m.partial = false;
                    }
                }
                ROLLBACK_STEP => {
                    let restored_at = swapped.take().map(|s| s.end.clone());
                    if r.status == "ok" || restored_at.is_some() {
                        push_rollback(&mut h, r, r.status != "ok", restored_at);
                    }
                }
                _ => {}
            }
            continue;
        }
        if let Some(id) = deploy_run_id(r) {
            // Records without an id before it belong to an earlier run (older versions).
            close(&mut h.runs, &mut current, None);
            let k = match open.iter().position(|(o, _)| *o == id) {
                Some(k) => k,
                None => {
                    open.push((id, Vec::new()));
                    open.len() - 1
                }
            };
            if r.step == "pipeline" {
                let (_, mut recs) = open.remove(k);
                close(&mut h.runs, &mut recs, Some(r));
            } else {
                open[k].1.push(r);
                if last_of.get(id) == Some(&i) {
                    // Killed: no pipeline record follows.
                    let (_, mut recs) = open.remove(k);
                    close(&mut h.runs, &mut recs, None);
                }
            }
            continue;
        }
        if r.step == "pipeline" {
            // Without ids (older versions): this run's own records are those that started when
            // it did or later. The others belong to an earlier, killed run.
            let split = current
                .iter()
                .position(|c| c.start >= r.start && c.sha == r.sha)
                .unwrap_or(current.len());
            let mut mine = current.split_off(split);
            close(&mut h.runs, &mut current, None);
            close(&mut h.runs, &mut mine, Some(r));
            continue;
        }
        let Some(order) = step_order(&r.step) else {
            continue; // drill, prune, ...: not a deploy step
        };
        if let Some(last) = current.last() {
            if last.sha != r.sha || step_order(&last.step).is_some_and(|l| order <= l) {
                close(&mut h.runs, &mut current, None);
            }
        }
        current.push(r);
    }
    close(&mut h.runs, &mut current, None);
    if let Some(s) = swapped.take() {
        killed_after_swap(&mut h, s);
    }
    h
}

/// A deploy's record (a step or its `pipeline` record) with its run id.
fn deploy_run_id(r: &Record) -> Option<&str> {
    if r.step == "pipeline" || step_order(&r.step).is_some() {
        r.run.as_deref()
    } else {
        None
    }
}

/// A rollback whose swap (`s`) committed but whose `rollback` record never came: its runs are
/// undone (the restored database is live), the rollback partial (`rollback --resume` finishes it).
fn killed_after_swap(h: &mut History, s: &Record) {
    push_rollback(h, s, true, Some(s.end.clone()));
}

/// Mark the runs the rollback recorded by `r` undid, and note the rollback.
fn push_rollback(h: &mut History, r: &Record, partial: bool, restored_at: Option<String>) {
    let undone = mark_undone(&mut h.runs, r);
    h.rollbacks.push(RollbackMark {
        sha: r.sha.clone(),
        end: r.end.clone(),
        after_runs: h.runs.len(),
        previous: r.previous.clone(),
        backup_object: r.backup_object.clone(),
        partial,
        restored_at,
        undone,
    });
}

/// Group the records into deploy runs, oldest first, and mark the undone ones.
pub fn runs(records: &[Record]) -> Vec<DeployRun> {
    history(records).runs
}

/// A rollback record: mark what it undid. A `rollback` record names the runs (`undone_runs`, their
/// ids); one without them (older versions, a killed rollback's `rollback:swap` record) is computed
/// again as its plan did: the runs it saw, from the newest not undone back to the last good run of
/// the release it put back. A record neither explains (another newest run) marks only the newest
/// run of its SHA, as older versions did.
fn mark_undone(runs: &mut [DeployRun], r: &Record) -> Vec<usize> {
    let named: Vec<usize> = match &r.undone_runs {
        Some(ids) => (0..runs.len())
            .filter(|&i| !runs[i].undone && runs[i].run.as_ref().is_some_and(|id| ids.contains(id)))
            .collect(),
        None => Vec::new(),
    };
    let undone = if !named.is_empty() {
        named
    } else if let Some(u) = recorded_range(runs, r) {
        u.runs
    } else {
        runs.iter()
            .rposition(|d| d.sha == r.sha && !d.undone)
            .into_iter()
            .collect()
    };
    for &i in &undone {
        runs[i].undone = true;
    }
    undone
}

/// The range the plan of a rollback record without run ids chose: X its newest run (of the
/// record's SHA), G the last good run of the release it put back before X. Not [`undo_range`] with
/// `--to`: that refuses a release that is also among the undone runs (a failed deploy, then the
/// old release deployed again by hand, both undone, the old release put back).
fn recorded_range(runs: &[DeployRun], r: &Record) -> Option<UndoRange> {
    let newest = runs.iter().rposition(|d| d.migrated && !d.undone)?;
    if runs[newest].sha != r.sha {
        return None;
    }
    let default_good = runs[..newest].iter().rposition(is_good);
    let good = match r.previous.as_deref() {
        None => default_good,
        Some(p) => Some(
            runs[..newest]
                .iter()
                .rposition(|d| is_good(d) && d.sha == p)?,
        ),
    };
    Some(range_after(runs, newest, good))
}

/// The `rollback` record's `undone_runs`: the undone runs' ids (`None` when one has none: a run
/// of an older version, computed again from the log instead).
pub fn undone_ids(c: &Choice) -> Option<Vec<String>> {
    c.undone.iter().map(|u| u.run.clone()).collect()
}

/// What one rollback undoes, as indices into the runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UndoRange {
    /// X: the newest run, not undone, that ran (or may have run) its migrations.
    pub newest: usize,
    /// G: the release put back (the last good deploy before X, or `--to`); `None`: none in the log.
    pub good: Option<usize>,
    /// Every run after G up to X not undone yet, oldest first.
    pub runs: Vec<usize>,
    /// The first of them that ran its migrations: its pre-deploy backup is restored.
    pub first_migrated: usize,
}

fn is_good(r: &DeployRun) -> bool {
    r.succeeded && !r.undone
}

/// The range a rollback undoes. `to`: the release to put back (full SHA or a unique prefix of at
/// least 7 hex digits); it must be a good deploy before X, else exit 2 listing the candidates.
pub fn undo_range(runs: &[DeployRun], to: Option<&str>) -> Result<UndoRange> {
    let Some(newest) = runs.iter().rposition(|r| r.migrated && !r.undone) else {
        return Err(Error::failed(
            "nothing to roll back: no deploy in the audit log ran its migrations (or every one was already rolled back)",
        ));
    };
    let default_good = runs[..newest].iter().rposition(is_good);
    let good = match to {
        None => default_good,
        Some(t) => Some(resolve_to(runs, newest, default_good, t)?),
    };
    Ok(range_after(runs, newest, good))
}

/// Every run after `good` up to `newest` (migrated, not undone) not undone yet.
fn range_after(runs: &[DeployRun], newest: usize, good: Option<usize>) -> UndoRange {
    let from = good.map_or(0, |g| g + 1);
    let range: Vec<usize> = (from..=newest).filter(|&i| !runs[i].undone).collect();
    let first_migrated = *range
        .iter()
        .find(|&&i| runs[i].migrated)
        .expect("the newest run is in the range and migrated");
    UndoRange {
        newest,
        good,
        runs: range,
        first_migrated,
    }
}

fn resolve_to(
    runs: &[DeployRun],
    newest: usize,
    default_good: Option<usize>,
    to: &str,
) -> Result<usize> {
    let to = to.trim().to_ascii_lowercase();
    let candidates: Vec<usize> = (0..newest).filter(|&i| is_good(&runs[i])).collect();
    let list = || {
        let mut seen: Vec<&str> = Vec::new();
        for &i in candidates.iter().rev() {
            if !seen.contains(&runs[i].sha.as_str()) {
                seen.push(&runs[i].sha);
            }
        }
        if seen.is_empty() {
            "none: no successful deploy before it in the audit log".to_string()
        } else {
            seen.iter()
                .map(|s| {
                    let r = candidates
                        .iter()
                        .rev()
                        .map(|&i| &runs[i])
                        .find(|r| r.sha == *s);
                    format!("{s} (ended {})", r.map(|r| r.end.as_str()).unwrap_or("?"))
                })
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let undone_from = default_good.map_or(0, |g| g + 1);
    if (undone_from..=newest).any(|i| !runs[i].undone && runs[i].sha.starts_with(&to)) {
        return Err(Error::usage(format!(
            "--to {to}: that is a deploy this rollback undoes (newest: {}); put back a good deploy \
             before it, one of: {}",
            runs[newest].sha,
            list()
        )));
    }
    let matching: Vec<usize> = candidates
        .iter()
        .copied()
        .filter(|&i| runs[i].sha.starts_with(&to))
        .collect();
    let mut shas: Vec<&str> = matching.iter().map(|&i| runs[i].sha.as_str()).collect();
    shas.dedup();
    shas.sort_unstable();
    shas.dedup();
    match (matching.last(), shas.len()) {
        (Some(&i), 1) => Ok(i),
        (Some(_), _) => Err(Error::usage(format!(
            "--to {to}: the prefix matches several deploys ({}): give more of the SHA",
            shas.join(", ")
        ))),
        (None, _) => Err(Error::usage(format!(
            "--to {to}: not a successful, not rolled back deploy before {} in the audit log; \
             candidates: {}",
            runs[newest].sha,
            list()
        ))),
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Choice {
    /// X, the newest deploy undone.
    pub undo: DeployRun,
    /// Every run undone (after G up to X, not undone before), oldest first.
    pub undone: Vec<DeployRun>,
    /// The run whose pre-deploy backup is restored: the first of `undone` that ran its migrations.
    pub restore_from: DeployRun,
    /// Why that backup (for the plan and --json).
    pub why: String,
    /// The release to put back: G's SHA; `None` when there is none and nothing needs rolling out
    /// (`local`).
    pub previous: Option<String>,
}

/// The runs to undo and the release to put back (`to` overrides). `need_previous`: the
/// environment runs releases (Compose), so one must be known.
pub fn choose(runs: &[DeployRun], to: Option<&str>, need_previous: bool) -> Result<Choice> {
    let u = undo_range(runs, to)?;
    let undo = runs[u.newest].clone();
    let previous = u.good.map(|g| runs[g].sha.clone());
    if previous.is_none() && need_previous {
        return Err(Error::failed(format!(
            "no successful deploy before {} in the audit log, so there is no release to put back: \
             restore its pre-deploy backup with `cargo xtask restore`, then start a known release \
             with `cargo xtask deploy --step rollout --sha SHA`",
            undo.sha
        )));
    }
    let first = runs[u.first_migrated].clone();
    let since = match u.good {
        Some(g) => format!(
            "the last good deploy {} (ended {})",
            runs[g].sha, runs[g].end
        ),
        None => "the start of the audit log (no good deploy before)".to_string(),
    };
    let why =
        if u.runs.len() == 1 {
            format!(
            "the pre-deploy backup of the only run since {since} that {}: the database just before \
             its migrations",
            if first.complete { "ran its migrations" } else { "may have run its migrations" }
        )
        } else {
            format!(
            "the pre-deploy backup of the FIRST of the {} runs since {since} that {} ({}, started \
             {}): the database just before the first bad migration; the later runs' own backups \
             were taken after it",
            u.runs.len(),
            if first.complete { "ran its migrations" } else { "may have run its migrations" },
            first.sha,
            first.start
        )
        };
    Ok(Choice {
        undo,
        undone: u.runs.iter().map(|&i| runs[i].clone()).collect(),
        restore_from: first,
        why,
        previous,
    })
}

/// `rollback` twice in a row must not cascade: when the newest ok rollback came after the newest
/// run that ran (or may have run) its migrations, refuse (unless `again`).
pub fn check_cascade(h: &History, env: &str, again: bool) -> Result<()> {
    let Some(last) = h.rollbacks.last() else {
        return Ok(());
    };
    if h.runs[last.after_runs..].iter().any(|r| r.migrated) {
        return Ok(());
    }
    if last.partial && h.runs.len() == last.after_runs {
        return Err(Error::failed(partial_text(env, last)));
    }
    if again {
        return Ok(());
    }
    Err(Error::failed(format!(
        "deploy {} was already rolled back at {} and no deploy has run its migrations since: a \
         second rollback would undo the deploy before it too. To do that on purpose, pass --again",
        last.sha, last.end
    )))
}

/// The partial rollback `rollback --resume` would finish: the newest rollback, partial, with no
/// deploy run since (a deploy since put its own release out, so there is nothing to resume).
pub fn pending_resume(h: &History) -> std::result::Result<&RollbackMark, String> {
    match h.rollbacks.last() {
        Some(m) if m.partial && h.runs.len() == m.after_runs => Ok(m),
        Some(m) if m.partial => Err(format!(
            "the rollback of {} (ended {}) failed after its swap, but a deploy ran since: there \
             is nothing to resume",
            m.sha, m.end
        )),
        Some(m) => Err(format!(
            "the newest rollback (of {}, ended {}) finished: there is nothing to resume",
            m.sha, m.end
        )),
        None => Err("the audit log holds no rollback: there is nothing to resume".into()),
    }
}

/// What a re-run after a partial rollback says: the database is rolled back already, what is left
/// and the command that does it.
pub fn partial_text(env: &str, m: &RollbackMark) -> String {
    format!(
        "the database was already rolled back at {} (the rollback of {} restored {} and its swap \
         committed; it failed after that, ended {}): restoring again would replace the database, \
         with every write since, a second time. Left: {}health and verify-redis; `cargo xtask \
         rollback --env {env} --resume --yes` runs just those",
        m.restored_at.as_deref().unwrap_or("an unrecorded time"),
        m.sha,
        m.backup_object.as_deref().unwrap_or("its backup"),
        m.end,
        match &m.previous {
            Some(p) => format!(
                "put release {p} back (compose up -d, STATION_TAG={p}; nothing to roll out on \
                 local), "
            ),
            None => String::new(),
        }
    )
}

/// After a deploy of `sha` failed: whether a rollback may be offered (or run, with
/// `--rollback-on-failure`), or why not. Only when this run ran its migrations (`migrated`, from
/// the runner) and the audit log's newest run is this one, migrated and not undone: otherwise a
/// rollback would undo some older deploy (a `--step health` run, or one failing before migrate,
/// left the database as it was).
pub fn offer_after_failed_deploy(
    runs: &[DeployRun],
    sha: &str,
    migrated: bool,
) -> std::result::Result<(), String> {
    if !migrated {
        return Err(format!(
            "this deploy ({sha}) did not run its migrations, so its database is unchanged and there is \
             nothing of it to undo (a rollback now would undo an older deploy)"
        ));
    }
    match runs.last() {
        Some(r) if r.sha == sha && r.migrated && !r.undone => Ok(()),
        Some(r) => Err(format!(
            "the newest deploy in the audit log is {} (not this deploy, {sha}, with its migrations), \
             so a rollback would not undo this deploy",
            r.sha
        )),
        None => Err(format!(
            "this deploy ({sha}) is not in the audit log, so a rollback would not undo it"
        )),
    }
}

/// An audit log that is missing (or holds no record) leaves nothing to roll back from: refused,
/// saying that a backup can still be restored by hand.
pub fn check_logged(records: &[Record], env: &str) -> Result<()> {
    if !records.is_empty() {
        return Ok(());
    }
    Err(Error::failed(format!(
        "nothing to roll back: the audit log of `{env}` is missing or empty (no deploy is recorded \
         to roll back from). A backup can still be restored by hand: `cargo xtask restore --env \
         {env} --label pre-deploy-<sha7>` (`cargo xtask backup status --env {env}` lists them)"
    )))
}

/// `pre-deploy-<sha7>`, the label of the backup the deploy of `sha` made before its migrations.
pub fn pre_deploy_label(sha: &str) -> String {
    format!("pre-deploy-{}", &sha[..sha.len().min(7)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        static CLOCK: Cell<u32> = const { Cell::new(1000) };
    }

    /// A later timestamp on every call (records are appended in time order).
    fn tick() -> String {
        let n = CLOCK.with(|c| {
            c.set(c.get() + 1);
            c.get()
        });
        format!(
            "2026-12-01T{:02}:{:02}:{:02}.000Z",
            n / 3600,
            (n / 60) % 60,
            n % 60
        )
    }

    fn rec(step: &str, status: &str, sha: &str) -> Record {
        let t = tick();
        Record {
            env: "local".into(),
            step: step.into(),
            status: status.into(),
            start: t.clone(),
            end: t,
            duration_ms: 1,
            sha: sha.into(),
            actor: "t".into(),
            run_url: None,
            backup_object: None,
            message: String::new(),
            previous: None,
            run: None,
            undone_runs: None,
        }
    }

    const STEPS: [&str; 8] = [
        "preflight",
        "lock",
        "backup",
        "verify-backup",
        "migrate",
        "rollout",
        "health",
        "verify-redis",
    ];

    /// The records a run writes up to `last` (its status `last_status`), with the pipeline record
    /// when `pipeline` (a killed run has none). Every run's backup object is its own.
    fn run_records(sha: &str, last: &str, last_status: &str, pipeline: bool) -> Vec<Record> {
        let t0 = tick();
        let object = format!(
            "b2:b/postgres/202612/station_backup_{}_pre-deploy-{}.sql.gz",
            t0.replace([':', '-', '.'], ""),
            &sha[..7]
        );
        let mut v = Vec::new();
        for (i, s) in STEPS.iter().enumerate() {
            let mut r = rec(s, if *s == last { last_status } else { "ok" }, sha);
            if i >= 2 {
                r.backup_object = Some(object.clone());
            }
            v.push(r);
            if *s == last {
                break;
            }
        }
        if pipeline {
            let mut p = rec(
                "pipeline",
                if last_status == "ok" { "ok" } else { "failed" },
                sha,
            );
            p.start = t0;
            p.backup_object = v.last().and_then(|r| r.backup_object.clone());
            v.push(p);
        }
        v
    }

    fn deploy(sha: &str, fail_at: Option<&str>) -> Vec<Record> {
        match fail_at {
            Some(s) => run_records(sha, s, "failed", true),
            None => run_records(sha, "verify-redis", "ok", true),
        }
    }

    /// A run SIGKILLed during the step after `last`: no pipeline record.
    fn killed(sha: &str, last: &str) -> Vec<Record> {
        run_records(sha, last, "ok", false)
    }

    fn rolled_back(sha: &str, previous: Option<&str>) -> Record {
        let mut r = rec(ROLLBACK_STEP, "ok", sha);
        r.previous = previous.map(str::to_string);
        r
    }

    fn backup_of(log: &[Record], sha: &str, nth: usize) -> String {
        runs(log)
            .into_iter()
            .filter(|r| r.sha == sha)
            .nth(nth)
            .and_then(|r| r.backup_object)
            .unwrap()
    }

    /// The records of one deploy, with its run id (as every deploy writes now).
    fn with_run(mut v: Vec<Record>, id: &str) -> Vec<Record> {
        for r in &mut v {
            r.run = Some(id.into());
        }
        v
    }

    /// `run`'s records with `extra` written right after its `after` step.
    fn interleaved(run: Vec<Record>, after: &str, extra: &[Record]) -> Vec<Record> {
        let at = run.iter().position(|r| r.step == after).unwrap() + 1;
        let mut v = run;
        v.splice(at..at, extra.iter().cloned());
        v
    }

    fn shas(runs: &[DeployRun]) -> Vec<&str> {
        runs.iter().map(|u| u.sha.as_str()).collect()
    }

    const A: &str = "aaaaaaa1111111111111111111111111111111aa";
    const B: &str = "bbbbbbb2222222222222222222222222222222bb";
    const C: &str = "ccccccc3333333333333333333333333333333cc";

    #[test]
    fn undo_the_last_migrated_deploy_and_put_back_the_last_good_one() {
        let mut log = deploy(A, None);
        log.extend(deploy(B, Some("health")));
        // A deploy that failed before migrating does not count.
        log.extend(deploy(C, Some("backup")));
        // Restore records are not deploys.
        log.push(rec("restore:swap", "ok", ""));
        let r = runs(&log);
        assert_eq!(r.len(), 3);
        assert_eq!(r[1].failed_step.as_deref(), Some("health"));
        assert!(r[1].migrated && !r[1].succeeded);
        assert!(!r[2].migrated);
        let c = choose(&r, None, true).unwrap();
        assert_eq!(c.undo.sha, B);
        assert_eq!(c.previous.as_deref(), Some(A));
        assert!(c
            .restore_from
            .backup_object
            .as_deref()
            .unwrap()
            .ends_with("pre-deploy-bbbbbbb.sql.gz"));
        assert_eq!(c.undone, vec![r[1].clone()]);
        // --to names a good deploy; C never succeeded.
        assert_eq!(
            choose(&r, Some(A), true).unwrap().previous.as_deref(),
            Some(A)
        );
        assert_eq!(
            choose(&r, Some(C), true).unwrap_err().exit_code(),
            crate::error::ExitCode::Usage
        );
    }

    #[test]
    fn a_migrate_failure_counts_and_rolled_back_deploys_are_skipped() {
        let mut log = deploy(A, None);
        log.extend(deploy(B, None));
        log.extend(deploy(C, Some("migrate")));
        let c = choose(&runs(&log), None, true).unwrap();
        assert_eq!((c.undo.sha.as_str(), c.previous.as_deref()), (C, Some(B)));
        // After rolling C back, the next rollback undoes B and puts A back.
        log.push(rec(ROLLBACK_STEP, "ok", C));
        let c = choose(&runs(&log), None, true).unwrap();
        assert_eq!((c.undo.sha.as_str(), c.previous.as_deref()), (B, Some(A)));
        // A failed rollback marks nothing.
        let mut log2 = deploy(A, None);
        log2.extend(deploy(B, None));
        log2.push(rec(ROLLBACK_STEP, "failed", B));
        assert_eq!(choose(&runs(&log2), None, true).unwrap().undo.sha, B);
    }

    #[test]
    fn after_a_failed_deploy_only_this_runs_migrations_are_offered_for_undo() {
        let mut log = deploy(A, None);
        log.extend(deploy(B, Some("health")));
        // C ran `--step health` only (no migrate) and failed: yesterday's B must not be offered.
        log.extend(
            deploy(C, Some("health"))
                .into_iter()
                .filter(|r| matches!(r.step.as_str(), "health" | "pipeline")),
        );
        let r = runs(&log);
        assert_eq!(choose(&r, None, true).unwrap().undo.sha, B, "the old trap");
        let e = offer_after_failed_deploy(&r, C, false).unwrap_err();
        assert!(e.contains("did not run its migrations"), "{e}");
        // Even if the runner claimed a migrate, the log's newest run did not migrate.
        let e = offer_after_failed_deploy(&r, C, true).unwrap_err();
        assert!(e.contains("not this deploy"), "{e}");
        // A run failing before migrate.
        let mut log2 = deploy(A, None);
        log2.extend(deploy(C, Some("backup")));
        assert!(offer_after_failed_deploy(&runs(&log2), C, false).is_err());
        // Another SHA is the newest run.
        assert!(offer_after_failed_deploy(&runs(&log2), A, true).is_err());
        // This run migrated and is the newest: offered.
        let mut log3 = deploy(A, None);
        log3.extend(deploy(B, Some("migrate")));
        assert_eq!(offer_after_failed_deploy(&runs(&log3), B, true), Ok(()));
        // Already rolled back (e.g. by hand in between): not offered again.
        log3.push(rec(ROLLBACK_STEP, "ok", B));
        assert!(offer_after_failed_deploy(&runs(&log3), B, true).is_err());
        assert!(offer_after_failed_deploy(&[], B, true).is_err());
    }

    #[test]
    fn a_missing_audit_log_says_how_to_restore_by_hand() {
        let e = check_logged(&[], "staging").unwrap_err();
        assert_eq!(e.exit_code(), crate::error::ExitCode::Failed);
        let m = e.to_string();
        assert!(
            m.contains("nothing to roll back")
                && m.contains("missing or empty")
                && m.contains("`cargo xtask restore --env staging --label pre-deploy-<sha7>`")
                && m.contains("`cargo xtask backup status --env staging`"),
            "{m}"
        );
        assert!(check_logged(&deploy(A, None), "staging").is_ok());
    }

    #[test]
    fn refusals_name_the_reason() {
        let log = deploy(A, Some("preflight"));
        let e = choose(&runs(&log), None, true).unwrap_err();
        assert!(e.to_string().contains("nothing to roll back"), "{e}");
        let log = deploy(A, None);
        let e = choose(&runs(&log), None, true).unwrap_err();
        assert!(e.to_string().contains("no release to put back"), "{e}");
        // Local: nothing to roll out, no previous release needed.
        let c = choose(&runs(&log), None, false).unwrap();
        assert_eq!((c.undo.sha.as_str(), c.previous), (A, None));
        assert_eq!(pre_deploy_label(A), "pre-deploy-aaaaaaa");
    }

    #[test]
    fn a_retried_failed_deploy_restores_the_first_runs_backup_and_undoes_every_run_since_the_good_one(
    ) {
        // A ok; B fails at health after migrating (backup b1, before B's migration); B retried
        // fails again (its backup b2 was taken AFTER B's bad migration).
        let mut log = deploy(A, None);
        log.extend(deploy(B, Some("health")));
        log.extend(deploy(B, Some("health")));
        let b1 = backup_of(&log, B, 0);
        let b2 = backup_of(&log, B, 1);
        assert_ne!(b1, b2);
        let r = runs(&log);
        let c = choose(&r, None, true).unwrap();
        assert_eq!(
            c.restore_from.backup_object.as_deref(),
            Some(b1.as_str()),
            "not b2"
        );
        assert_eq!(c.undone, r[1..].to_vec());
        assert_eq!((c.undo.sha.as_str(), c.previous.as_deref()), (B, Some(A)));
        assert!(
            c.why.contains("FIRST of the 2 runs") && c.why.contains(A),
            "{}",
            c.why
        );
        // The same with a fix C that fails too.
        let mut log2 = deploy(A, None);
        log2.extend(deploy(B, Some("health")));
        log2.extend(deploy(C, Some("migrate")));
        let c2 = choose(&runs(&log2), None, true).unwrap();
        assert_eq!(c2.restore_from.sha, B);
        assert_eq!(c2.undo.sha, C);
        assert_eq!(c2.undone.len(), 2);
        // The ok rollback record marks both runs undone (computed again from the log), so a later
        // rollback does not undo either of them again: the next one would undo A.
        log.push(rolled_back(B, Some(A)));
        let r = runs(&log);
        assert!(r[1].undone && r[2].undone && !r[0].undone, "{r:?}");
        let c = choose(&r, None, false).unwrap();
        assert_eq!(c.undo.sha, A);
        // A new failing deploy after the rollback: its own backup (taken after the restore) is
        // the one, and only it is undone.
        log.extend(deploy(C, Some("health")));
        let c = choose(&runs(&log), None, true).unwrap();
        assert_eq!(
            c.undone.iter().map(|u| u.sha.as_str()).collect::<Vec<_>>(),
            [C]
        );
        assert_eq!(c.restore_from.backup_object, Some(backup_of(&log, C, 0)));
        assert_eq!(c.previous.as_deref(), Some(A));
        // A backup missing from the log is not replaced by a later one: there is none to choose.
        let mut log3 = deploy(A, None);
        let mut b = deploy(B, Some("health"));
        for r in &mut b {
            r.backup_object = None;
        }
        log3.extend(b);
        log3.extend(deploy(B, Some("health")));
        let c = choose(&runs(&log3), None, true).unwrap();
        assert_eq!(
            c.restore_from.backup_object, None,
            "the first run's, missing"
        );
    }

    #[test]
    fn a_killed_deploy_is_its_own_incomplete_run() {
        // B is SIGKILLed during migrate: its records end at verify-backup, no pipeline record.
        let mut log = deploy(A, None);
        log.extend(killed(B, "verify-backup"));
        let r = runs(&log);
        assert_eq!(r.len(), 2);
        assert!(
            !r[1].complete && !r[1].succeeded && r[1].migrated,
            "{:?}",
            r[1]
        );
        assert_eq!(r[1].failed_step.as_deref(), Some("migrate"));
        assert!(
            r[1].describe().contains("may have run its migrations"),
            "{}",
            r[1].describe()
        );
        let c = choose(&r, None, true).unwrap();
        assert_eq!((c.undo.sha.as_str(), c.previous.as_deref()), (B, Some(A)));
        assert_eq!(c.restore_from.backup_object, Some(backup_of(&log, B, 0)));
        assert!(c.why.contains("may have run"), "{}", c.why);
        // Then C deploys fine: the killed run's records are not merged into C's run.
        log.extend(deploy(C, None));
        let r = runs(&log);
        assert_eq!(r.len(), 3, "{r:?}");
        assert!(r[2].succeeded && r[2].complete);
        assert_ne!(r[1].backup_object, r[2].backup_object);
        // Rolling C back undoes the killed B too (C migrated on top of whatever B did) and
        // restores B's backup.
        let c = choose(&r, None, true).unwrap();
        assert_eq!(c.restore_from.sha, B);
        assert_eq!(c.undone.len(), 2);
        // Killed during verify-backup: migrate never started.
        let mut log2 = deploy(A, None);
        log2.extend(killed(B, "backup"));
        let r2 = runs(&log2);
        assert!(!r2[1].migrated && !r2[1].complete);
        // Killed, then the same SHA's `--step health` run (health, pipeline): two runs, split by
        // the pipeline record's start.
        let mut log3 = deploy(A, None);
        log3.extend(killed(B, "verify-backup"));
        let mut h = rec("health", "failed", B);
        let mut p = rec("pipeline", "failed", B);
        p.start = h.start.clone();
        h.start = tick();
        h.end = h.start.clone();
        p.end = tick();
        log3.extend([h, p]);
        let r3 = runs(&log3);
        assert_eq!(r3.len(), 3, "{r3:?}");
        assert!(r3[1].migrated && !r3[1].complete);
        assert!(!r3[2].migrated && r3[2].complete);
        // The same, but the killed run ran on a machine whose clock is ahead (its records start
        // after the `--step health` run's pipeline record does): told apart by the run ids.
        let mut log5 = deploy(A, None);
        let mut late = killed(B, "verify-backup");
        let mut h = rec("health", "failed", B);
        let mut p = rec("pipeline", "failed", B);
        p.end = tick();
        for r in late.iter_mut() {
            r.start = tick();
            r.end = r.start.clone();
            r.run = Some("killed01".into());
        }
        (h.run, p.run) = (Some("health02".into()), Some("health02".into()));
        log5.extend(late);
        log5.extend([h, p]);
        let r5 = runs(&log5);
        assert_eq!(r5.len(), 3, "{r5:?}");
        assert!(r5[1].migrated && !r5[1].complete, "{:?}", r5[1]);
        assert!(!r5[2].migrated && r5[2].complete, "{:?}", r5[2]);
        // A killed run before a rollback record ends there; drill/prune records are no steps.
        let mut log4 = deploy(A, None);
        log4.push(rec("drill", "ok", ""));
        log4.extend(killed(B, "migrate"));
        log4.push(rec("rollback:plan", "ok", ""));
        log4.push(rolled_back(B, Some(A)));
        let r4 = runs(&log4);
        assert_eq!(r4.len(), 2, "{r4:?}");
        assert!(r4[0].succeeded && r4[1].undone);
    }

    #[test]
    fn to_must_name_a_good_deploy_before_the_undone_runs() {
        let mut log = deploy(A, None);
        log.extend(deploy(B, None));
        log.extend(deploy(C, Some("health")));
        let r = runs(&log);
        // A unique prefix of 7+ hex digits, or the full SHA.
        assert_eq!(
            choose(&r, Some(&B[..7]), true).unwrap().previous.as_deref(),
            Some(B)
        );
        assert_eq!(
            choose(&r, Some(B), true).unwrap().previous.as_deref(),
            Some(B)
        );
        // An older release: every deploy after it is undone, the first one's backup restored.
        let c = choose(&r, Some(A), true).unwrap();
        assert_eq!(c.previous.as_deref(), Some(A));
        assert_eq!(c.restore_from.sha, B);
        assert_eq!(c.undone.len(), 2);
        // The undone SHA itself, or one not in the log: exit 2 with the candidates.
        for bad in [C, "0123456789abcdef0123456789abcdef01234567"] {
            let e = choose(&r, Some(bad), true).unwrap_err();
            assert_eq!(e.exit_code(), crate::error::ExitCode::Usage, "{e}");
            assert!(
                e.to_string().contains(A) && e.to_string().contains(B),
                "{e}"
            );
        }
        assert!(choose(&r, Some(C), true)
            .unwrap_err()
            .to_string()
            .contains("undoes"));
        // A rolled back deploy is no candidate either.
        let mut log2 = log.clone();
        log2.push(rolled_back(C, Some(A)));
        log2.extend(deploy(C, Some("health")));
        let e = choose(&runs(&log2), Some(B), true).unwrap_err();
        assert_eq!(e.exit_code(), crate::error::ExitCode::Usage, "{e}");
    }

    #[test]
    fn a_second_rollback_without_a_deploy_since_is_refused_unless_again() {
        let mut log = deploy(A, None);
        log.extend(deploy(B, None));
        log.extend(deploy(C, Some("health")));
        assert!(check_cascade(&history(&log), "local", false).is_ok());
        log.push(rolled_back(C, Some(B)));
        let e = check_cascade(&history(&log), "local", false).unwrap_err();
        assert_eq!(e.exit_code(), crate::error::ExitCode::Failed);
        assert!(
            e.to_string()
                .contains(&format!("deploy {C} was already rolled back at"))
                && e.to_string().contains("--again"),
            "{e}"
        );
        // --again undoes B on purpose, putting A back.
        check_cascade(&history(&log), "local", true).unwrap();
        let c = choose(&runs(&log), None, true).unwrap();
        assert_eq!((c.undo.sha.as_str(), c.previous.as_deref()), (B, Some(A)));
        // A deploy failing before migrate changes nothing; one that migrated does.
        log.extend(deploy(C, Some("preflight")));
        assert!(check_cascade(&history(&log), "local", false).is_err());
        log.extend(deploy(C, Some("migrate")));
        assert!(check_cascade(&history(&log), "local", false).is_ok());
    }
    /// A rollback that failed after its swap committed: the `rollback:*` records its restore
    /// wrote up to `last` (ok), then the failed summary.
    fn partial_rollback(sha: &str, previous: &str, last: &str) -> Vec<Record> {
        let mut v: Vec<Record> = [
            "plan", "lock", "restore", "verify", "swap", "start", "health",
        ]
        .iter()
        .take_while(|s| **s != last)
        .chain(std::iter::once(&last))
        .map(|s| rec(&format!("rollback:{s}"), "ok", ""))
        .collect();
        v.push(rec("rollback:verify-redis", "failed", ""));
        let mut r = rec(ROLLBACK_STEP, "failed", sha);
        r.previous = Some(previous.into());
        r.backup_object = Some("b2:b/postgres/x_pre-deploy-ccccccc.sql.gz".into());
        v.push(r);
        v
    }

    /// A rollback SIGKILLed after its swap (its records stop at `rollback:swap ok`, which names the
    /// undone SHA and the release put back): its runs are undone and it is partial, so a re-run
    /// resumes instead of restoring again; whatever comes next in the log.
    #[test]
    fn a_rollback_killed_after_its_swap_counts_as_a_partial_rollback() {
        let mut log = deploy(A, None);
        log.extend(deploy(B, None));
        log.extend(deploy(C, Some("health")));
        for s in ["plan", "lock", "download+restore", "verify"] {
            log.push(rec(&format!("rollback:{s}"), "ok", C));
        }
        let mut swap = rec("rollback:swap", "ok", C);
        swap.previous = Some(B.into());
        log.push(swap.clone());
        log.push(rec("rollback:start", "ok", C));
        for next in [
            None,
            Some("rollback:plan"),
            Some("restore:plan"),
            Some("preflight"),
        ] {
            let mut l = log.clone();
            if let Some(step) = next {
                l.push(rec(step, "ok", C));
            }
            let h = history(&l);
            assert!(
                h.runs[2].undone && !h.runs[1].undone,
                "{next:?}: {:?}",
                h.runs
            );
            let m = &h.rollbacks[0];
            assert!(m.partial && m.undone == vec![2], "{next:?}: {m:?}");
            assert_eq!(m.restored_at.as_deref(), Some(swap.end.as_str()));
            assert_eq!(m.previous.as_deref(), Some(B));
        }
        let h = history(&log);
        let e = check_cascade(&h, "local", false).unwrap_err().to_string();
        assert!(e.contains("--resume"), "{e}");
        assert!(pending_resume(&h).is_ok());
        // Finished by a resume: no longer partial.
        log.push(rec(RESUME_STEP, "ok", C));
        assert!(!history(&log).rollbacks[0].partial);
    }

    #[test]
    fn a_rollback_failing_after_its_swap_undoes_its_runs_and_is_resumed_not_repeated() {
        let mut log = deploy(A, None);
        log.extend(deploy(B, None));
        log.extend(deploy(C, Some("health")));
        log.extend(partial_rollback(C, B, "health"));
        let h = history(&log);
        assert!(h.runs[2].undone && !h.runs[1].undone, "{:?}", h.runs);
        let m = pending_resume(&h).unwrap();
        assert!(m.partial && m.undone == vec![2], "{m:?}");
        let swap_end = log
            .iter()
            .find(|r| r.step == "rollback:swap")
            .unwrap()
            .end
            .clone();
        assert_eq!(m.restored_at.as_deref(), Some(swap_end.as_str()));
        // (a) A plain re-run (even --again) refuses to restore again, naming what is left.
        for again in [false, true] {
            let e = check_cascade(&h, "local", again).unwrap_err().to_string();
            assert!(
                e.contains(&format!("already rolled back at {swap_end}"))
                    && e.contains("--resume")
                    && e.contains(&format!("put release {B} back")),
                "{e}"
            );
        }
        // (b) A later deploy D failing: D alone is undone, with D's own backup, B put back.
        let mut log2 = log.clone();
        log2.extend(deploy(A, Some("health")));
        let h2 = history(&log2);
        check_cascade(&h2, "local", false).unwrap();
        let c = choose(&h2.runs, None, true).unwrap();
        assert_eq!(c.undone.len(), 1, "{:?}", c.undone);
        assert_eq!(c.restore_from.backup_object, Some(backup_of(&log2, A, 1)));
        assert_eq!(c.previous.as_deref(), Some(B));
        assert!(pending_resume(&h2)
            .unwrap_err()
            .contains("a deploy ran since"));
        // A failure BEFORE the swap marks nothing (the database was not replaced).
        let mut log3 = deploy(A, None);
        log3.extend(deploy(C, Some("health")));
        log3.push(rec("rollback:plan", "ok", ""));
        log3.push(rec("rollback:swap", "failed", ""));
        log3.push(rec(ROLLBACK_STEP, "failed", C));
        let h3 = history(&log3);
        assert!(!h3.runs[1].undone && h3.rollbacks.is_empty());
        // Nor does an earlier rollback's committed swap leak into a later failed one.
        let mut log4 = log.clone();
        log4.push(rec(RESUME_STEP, "ok", C));
        log4.extend(deploy(C, Some("health")));
        log4.push(rec("rollback:plan", "ok", ""));
        log4.push(rec("rollback:verify", "failed", ""));
        log4.push(rec(ROLLBACK_STEP, "failed", C));
        let h4 = history(&log4);
        assert!(
            !h4.runs[3].undone && h4.rollbacks.len() == 1,
            "{:?}",
            h4.runs
        );
        // A finished resume: the rollback counts as an ok one (a re-run is the plain cascade).
        log.push(rec(RESUME_STEP, "ok", C));
        let h = history(&log);
        assert!(!h.rollbacks[0].partial);
        assert!(pending_resume(&h).unwrap_err().contains("finished"));
        let e = check_cascade(&h, "local", false).unwrap_err().to_string();
        assert!(e.contains("--again") && !e.contains("--resume"), "{e}");
        // A failed resume leaves it partial.
        let mut log5 = deploy(A, None);
        log5.extend(deploy(C, Some("health")));
        log5.extend(partial_rollback(C, A, "start"));
        log5.push(rec(RESUME_STEP, "failed", C));
        assert!(pending_resume(&history(&log5)).is_ok());
    }

    /// A failed B, then A deployed again by hand: the rollback undoes both and puts A back. Its
    /// record must mark both undone (it used to mark only the second A: `--to A` is refused as a
    /// release the rollback undoes), else the next rollback undoes B again and restores B's
    /// backup, losing every write since.
    #[test]
    fn a_rollback_putting_back_a_release_it_also_undid_marks_exactly_its_runs() {
        for ids in [true, false] {
            let id = |v: Vec<Record>, n: &str| if ids { with_run(v, n) } else { v };
            let mut log = id(deploy(A, None), "r1");
            log.extend(id(deploy(B, Some("health")), "r2"));
            log.extend(id(deploy(A, None), "r3"));
            let c = choose(&runs(&log), None, true).unwrap();
            assert_eq!(shas(&c.undone), [B, A], "ids {ids}");
            assert_eq!(
                (c.restore_from.sha.as_str(), c.previous.as_deref()),
                (B, Some(A))
            );
            // The record rollback writes: the runs by id (none for runs of older versions).
            let mut r = rolled_back(&c.undo.sha, c.previous.as_deref());
            r.undone_runs = undone_ids(&c);
            assert_eq!(r.undone_runs.is_some(), ids);
            log.push(r);
            let h = history(&log);
            assert!(
                !h.runs[0].undone && h.runs[1].undone && h.runs[2].undone,
                "ids {ids}: {:?}",
                h.runs
            );
            assert_eq!(h.rollbacks[0].undone, [1, 2]);
            // Then C fails at migrate: only C is undone, from C's own backup, the first A put back.
            log.extend(id(deploy(C, Some("migrate")), "r4"));
            let r = runs(&log);
            assert!(offer_after_failed_deploy(&r, C, true).is_ok());
            let c = choose(&r, None, true).unwrap();
            assert_eq!(shas(&c.undone), [C], "ids {ids}");
            assert_eq!(c.restore_from.backup_object, Some(backup_of(&log, C, 0)));
            assert_eq!(c.previous.as_deref(), Some(A));
        }
        // The ids a record names are what it marks, not what the log would compute again.
        let mut log = with_run(deploy(A, None), "r1");
        log.extend(with_run(deploy(B, Some("health")), "r2"));
        log.extend(with_run(deploy(C, Some("health")), "r3"));
        let mut r = rolled_back(C, Some(A));
        r.undone_runs = Some(vec!["r3".into()]);
        log.push(r);
        let h = history(&log);
        assert!(!h.runs[1].undone && h.runs[2].undone, "{:?}", h.runs);
    }

    /// A restore (or a deploy) the lock refused writes its records while a deploy holds it: they
    /// must not split that deploy (which has its run id on every record) in two.
    #[test]
    fn records_of_a_refused_restore_or_deploy_inside_a_deploy_do_not_split_it() {
        let restore = vec![
            rec("restore:plan", "ok", ""),
            rec("restore:lock", "failed", ""),
            rec("restore:pipeline", "failed", ""),
        ];
        let refused_deploy = with_run(run_records(C, "lock", "failed", true), "rX");
        for (what, extra) in [("restore", &restore), ("deploy", &refused_deploy)] {
            for after in ["lock", "migrate", "rollout"] {
                // B succeeds, then C fails at migrate: C alone is undone, from its own backup.
                let mut log = with_run(deploy(A, None), "r1");
                log.extend(interleaved(with_run(deploy(B, None), "r2"), after, extra));
                log.extend(with_run(deploy(C, Some("migrate")), "r3"));
                let r = runs(&log);
                let b = r.iter().find(|d| d.run.as_deref() == Some("r2")).unwrap();
                assert!(
                    b.succeeded && b.complete && b.migrated,
                    "{what} after {after}: {r:?}"
                );
                let own = |id: &str| r.iter().find(|d| d.run.as_deref() == Some(id)).unwrap();
                let c = choose(&r, None, true).unwrap();
                assert_eq!(shas(&c.undone), [C], "{what} after {after}");
                assert!(own("r3").backup_object.is_some());
                assert_eq!(c.restore_from.backup_object, own("r3").backup_object);
                assert_eq!(c.previous.as_deref(), Some(B));
                // B fails at health: the rollback is offered for B (--rollback-on-failure).
                let mut log = with_run(deploy(A, None), "r1");
                log.extend(interleaved(
                    with_run(deploy(B, Some("health")), "r2"),
                    after,
                    extra,
                ));
                let r = runs(&log);
                assert_eq!(
                    offer_after_failed_deploy(&r, B, true),
                    Ok(()),
                    "{what} after {after}: {r:?}"
                );
                let c = choose(&r, None, true).unwrap();
                assert_eq!((c.undo.sha.as_str(), c.previous.as_deref()), (B, Some(A)));
                assert_eq!(c.restore_from.backup_object, Some(backup_of(&log, B, 0)));
            }
        }
        // A deploy the lock refused while a rollback held it (after its swap) does not end that
        // rollback: one ok rollback, not a partial one too.
        let mut log = with_run(deploy(A, None), "r1");
        log.extend(with_run(deploy(B, Some("health")), "r2"));
        let mut rb: Vec<Record> = ["plan", "lock", "download+restore", "verify", "swap"]
            .iter()
            .map(|s| rec(&format!("rollback:{s}"), "ok", B))
            .collect();
        rb.extend(refused_deploy.iter().cloned());
        rb.push(rec("rollback:start", "ok", B));
        let mut done = rolled_back(B, Some(A));
        done.undone_runs = Some(vec!["r2".into()]);
        rb.push(done);
        log.extend(rb);
        let h = history(&log);
        assert_eq!(h.rollbacks.len(), 1, "{:?}", h.rollbacks);
        assert!(!h.rollbacks[0].partial && h.rollbacks[0].undone == [1]);
        assert!(h.runs[1].undone && !h.runs[0].undone);
        // A run with an id killed mid-way ends at its last record, before what comes next.
        let mut log = with_run(deploy(A, None), "r1");
        log.extend(with_run(killed(B, "verify-backup"), "r2"));
        log.extend(restore.clone());
        log.extend(with_run(deploy(C, None), "r3"));
        let r = runs(&log);
        assert_eq!(shas(&r), [A, B, C]);
        assert!(r[1].migrated && !r[1].complete);
    }
}
