//! Pure pieces of the pipeline: the SHA, the step names and order, the report.

use serde::Serialize;

use crate::error::{Error, Result};

pub use crate::git::Sha;
// The clock moved to `crate::time`; restore/ and rollback/ still import it from here.
pub(crate) use crate::time::{elapsed_ms, now_ms, now_unix, rfc3339_ms};

/// The pipeline's steps, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    Preflight,
    Lock,
    /// Remote only: copy the compose file and the backup script to the server.
    Sync,
    Backup,
    VerifyBackup,
    Migrate,
    Rollout,
    Health,
    VerifyRedis,
}

impl Step {
    pub const ALL: [Step; 9] = [
        Step::Preflight,
        Step::Lock,
        Step::Sync,
        Step::Backup,
        Step::VerifyBackup,
        Step::Migrate,
        Step::Rollout,
        Step::Health,
        Step::VerifyRedis,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Step::Preflight => "preflight",
            Step::Lock => "lock",
            Step::Sync => "sync",
            Step::Backup => "backup",
            Step::VerifyBackup => "verify-backup",
            Step::Migrate => "migrate",
            Step::Rollout => "rollout",
            Step::Health => "health",
            Step::VerifyRedis => "verify-redis",
        }
    }

    /// Steps that may be run alone with `--step` (the others are `cargo xtask backup` / `migrate`).
    pub fn selectable(self) -> bool {
        matches!(
            self,
            Step::Preflight | Step::Sync | Step::Rollout | Step::Health | Step::VerifyRedis
        )
    }

    /// Whether the step changes something (and so runs under the lock).
    pub fn mutates(self) -> bool {
        matches!(
            self,
            Step::Sync | Step::Backup | Step::Migrate | Step::Rollout
        )
    }
}

/// The steps for a transport, or for one `--step` (with the lock when it changes something).
/// `remote`: the environment's host is a server (only then are files synced).
pub fn steps_for(remote: bool, only: Option<Step>) -> Result<Vec<Step>> {
    if let Some(s) = only {
        if !s.selectable() {
            return Err(Error::usage(format!(
                "--step {}: run `cargo xtask {}` instead (backup, verification and migration go together)",
                s.name(),
                if s == Step::Migrate { "migrate" } else { "backup" }
            )));
        }
        if s == Step::Sync && !remote {
            return Err(Error::usage(
                "--step sync: only remote (ssh) environments sync files",
            ));
        }
        return Ok(if s.mutates() {
            vec![Step::Lock, s]
        } else {
            vec![s]
        });
    }
    Ok(Step::ALL
        .into_iter()
        .filter(|s| *s != Step::Sync || remote)
        .collect())
}

/// Outcome of one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Failed,
    Interrupted,
    /// Not run because an earlier step failed.
    Skipped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Failed => "failed",
            Status::Interrupted => "interrupted",
            Status::Skipped => "skipped",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct StepReport {
    pub step: Step,
    pub status: Status,
    pub duration_ms: u128,
    /// Time spent in child processes during the step (for the overhead benchmark).
    pub child_ms: u128,
    pub message: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub env: String,
    pub sha: Sha,
    pub outcome: Status,
    pub steps: Vec<StepReport>,
    pub backup_object: Option<String>,
    pub duration_ms: u128,
}

/// A step of a `--dry-run` plan: what it does and the exact commands (secrets redacted).
#[derive(Clone, Debug, Serialize)]
pub struct PlannedStep {
    pub step: Step,
    pub what: String,
    /// The commands the runner executes on the host, in order (secrets redacted).
    pub commands: Vec<String>,
    /// Work xtask does itself, as the command a user would type for it.
    pub calls: Vec<String>,
}

impl PlannedStep {
    pub fn new(step: Step, what: impl Into<String>) -> Self {
        PlannedStep {
            step,
            what: what.into(),
            commands: Vec::new(),
            calls: Vec::new(),
        }
    }
    pub fn call(mut self, c: impl Into<String>) -> Self {
        self.calls.push(c.into());
        self
    }
    pub fn text(mut self, c: impl Into<String>) -> Self {
        self.commands.push(c.into());
        self
    }
}

/// The summary line of a failed pipeline: which step failed and what did not run.
pub fn failure_summary(failed: Step, not_run: &[Step]) -> String {
    let mut s = format!("deploy stopped at step `{}`", failed.name());
    if not_run.is_empty() {
        s.push('.');
    } else {
        let names: Vec<&str> = not_run.iter().map(|s| s.name()).collect();
        s.push_str(&format!("; not run: {}.", names.join(", ")));
    }
    if not_run.contains(&Step::Migrate) {
        s.push_str(" No migration was run.");
    } else if failed == Step::Migrate {
        s.push_str(" The failing migration was rolled back (each runs in its own transaction).");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha_validation() {
        assert_eq!(Sha::parse("ABCDEF0").unwrap().as_str(), "abcdef0");
        assert_eq!(
            Sha::parse("0123456789abcdef").unwrap().backup_label(),
            "pre-deploy-0123456"
        );
        for bad in [
            "",
            "abc",
            "xyz1234",
            "abc1234;rm",
            &"a".repeat(41),
            "-abcdef0",
        ] {
            assert!(Sha::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn steps_per_transport() {
        let local = steps_for(false, None).unwrap();
        assert!(!local.contains(&Step::Sync));
        let ssh = steps_for(true, None).unwrap();
        let pos = |s| ssh.iter().position(|x| *x == s).unwrap();
        assert!(pos(Step::Sync) < pos(Step::Backup));
        assert!(pos(Step::Backup) < pos(Step::VerifyBackup));
        assert!(pos(Step::VerifyBackup) < pos(Step::Migrate));
        assert_eq!(
            steps_for(true, Some(Step::Rollout)).unwrap(),
            [Step::Lock, Step::Rollout]
        );
        assert!(steps_for(true, Some(Step::Migrate)).is_err());
        assert!(steps_for(false, Some(Step::Sync)).is_err());
    }

    #[test]
    fn failure_summary_says_no_migration_ran() {
        let s = failure_summary(Step::Backup, &[Step::VerifyBackup, Step::Migrate]);
        assert!(s.contains("No migration was run"), "{s}");
        let s = failure_summary(Step::Health, &[Step::VerifyRedis]);
        assert!(!s.contains("No migration"), "{s}");
    }
}
