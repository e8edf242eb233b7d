//! Pure: read the deploy audit log as runs, and choose what a rollback undoes and what it puts back.
//!
//! A deploy run is the records of one `cargo xtask deploy`, ending with its `pipeline` record
//! (runs never overlap: they hold the lock). Records of restores and rollbacks (`restore:*`,
//! `rollback:*`) are not part of any run. A `rollback` record with status `ok` marks the latest run
//! of its SHA before it as undone.

use serde::Serialize;

use crate::deploy::audit::Record;
use crate::error::{Error, Result};

/// The step name of a rollback's summary record (its `sha` is the SHA of the undone deploy).
pub const ROLLBACK_STEP: &str = "rollback";

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeployRun {
    pub sha: String,
    /// Got as far as running its migrations (the migrate step ran: ok, failed or interrupted).
    pub migrated: bool,
    /// Its migrations and rollout succeeded and the pipeline ended ok.
    pub succeeded: bool,
    /// The step that failed, if any.
    pub failed_step: Option<String>,
    /// Its pre-deploy backup, as recorded.
    pub backup_object: Option<String>,
    /// When its pipeline ended.
    pub end: String,
    /// Undone by a later rollback.
    pub undone: bool,
}

/// Group the records into deploy runs, oldest first, and mark the undone ones.
pub fn runs(records: &[Record]) -> Vec<DeployRun> {
    let mut out: Vec<DeployRun> = Vec::new();
    let mut current: Vec<&Record> = Vec::new();
    for r in records {
        if r.step.contains(':') {
            continue;
        }
        if r.step == ROLLBACK_STEP {
            if r.status == "ok" {
                if let Some(run) = out.iter_mut().rev().find(|d| d.sha == r.sha && !d.undone) {
                    run.undone = true;
                }
            }
            continue;
        }
        if r.step != "pipeline" {
            current.push(r);
            continue;
        }
        let status = |name: &str| {
            current
                .iter()
                .rev()
                .find(|c| c.step == name)
                .map(|c| c.status.as_str())
        };
        let migrated = matches!(status("migrate"), Some("ok" | "failed" | "interrupted"));
        let succeeded =
            r.status == "ok" && status("migrate") == Some("ok") && status("rollout") == Some("ok");
        out.push(DeployRun {
            sha: r.sha.clone(),
            migrated,
            succeeded,
            failed_step: current
                .iter()
                .find(|c| c.status != "ok" && c.status != "skipped")
                .map(|c| c.step.clone()),
            backup_object: r
                .backup_object
                .clone()
                .or_else(|| current.iter().rev().find_map(|c| c.backup_object.clone())),
            end: r.end.clone(),
            undone: false,
        });
        current.clear();
    }
    out
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Choice {
    /// The deploy to undo.
    pub undo: DeployRun,
    /// The release to put back: the last successful deploy before it (or `--to`); `None` when there
    /// is none and nothing needs rolling out (`local`).
    pub previous: Option<String>,
}

/// The deploy to undo (the last one, not undone yet, that ran its migrations) and the last
/// successful deploy before it (`to` overrides). `need_previous`: the environment runs releases
/// (Compose), so one must be known.
pub fn choose(runs: &[DeployRun], to: Option<&str>, need_previous: bool) -> Result<Choice> {
    let Some(i) = runs.iter().rposition(|r| r.migrated && !r.undone) else {
        return Err(Error::failed(
            "nothing to roll back: no deploy in the audit log ran its migrations (or every one was already rolled back)",
        ));
    };
    let undo = runs[i].clone();
    let previous = match to {
        Some(t) => Some(t.to_string()),
        None => runs[..i]
            .iter()
            .rev()
            .find(|r| r.succeeded && !r.undone)
            .map(|r| r.sha.clone()),
    };
    if previous.is_none() && need_previous {
        return Err(Error::failed(format!(
            "no successful deploy before {} in the audit log, so there is no release to put back: \
             pass --to SHA",
            undo.sha
        )));
    }
    Ok(Choice { undo, previous })
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

/// `pre-deploy-<sha7>`, the label of the backup the deploy of `sha` made before its migrations.
pub fn pre_deploy_label(sha: &str) -> String {
    format!("pre-deploy-{}", &sha[..sha.len().min(7)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(step: &str, status: &str, sha: &str) -> Record {
        Record {
            env: "local".into(),
            step: step.into(),
            status: status.into(),
            start: "2026-12-01T09:00:00.000Z".into(),
            end: "2026-12-01T09:00:01.000Z".into(),
            duration_ms: 1,
            sha: sha.into(),
            actor: "t".into(),
            run_url: None,
            backup_object: (step == "verify-backup" || step == "pipeline").then(|| {
                format!(
                    "b2:b/postgres/202612/station_backup_20261201_090000_pre-deploy-{}.sql.gz",
                    &sha[..7]
                )
            }),
            message: String::new(),
        }
    }

    fn deploy(sha: &str, fail_at: Option<&str>) -> Vec<Record> {
        let mut v = Vec::new();
        let mut failed = false;
        for s in [
            "preflight",
            "lock",
            "backup",
            "verify-backup",
            "migrate",
            "rollout",
            "health",
            "verify-redis",
        ] {
            if failed {
                break;
            }
            let st = if Some(s) == fail_at {
                failed = true;
                "failed"
            } else {
                "ok"
            };
            v.push(rec(s, st, sha));
        }
        v.push(rec("pipeline", if failed { "failed" } else { "ok" }, sha));
        v
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
            .undo
            .backup_object
            .as_deref()
            .unwrap()
            .ends_with("pre-deploy-bbbbbbb.sql.gz"));
        // --to overrides.
        assert_eq!(
            choose(&r, Some(C), true).unwrap().previous.as_deref(),
            Some(C)
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
    fn refusals_name_the_reason() {
        let log = deploy(A, Some("preflight"));
        let e = choose(&runs(&log), None, true).unwrap_err();
        assert!(e.to_string().contains("nothing to roll back"), "{e}");
        let log = deploy(A, None);
        let e = choose(&runs(&log), None, true).unwrap_err();
        assert!(e.to_string().contains("pass --to SHA"), "{e}");
        // Local: nothing to roll out, no previous release needed.
        let c = choose(&runs(&log), None, false).unwrap();
        assert_eq!((c.undo.sha.as_str(), c.previous), (A, None));
        assert_eq!(pre_deploy_label(A), "pre-deploy-aaaaaaa");
    }
}
