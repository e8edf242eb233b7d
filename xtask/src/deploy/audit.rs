//! The deploy audit log: one JSON object per line and per step (and one for the whole pipeline),
//! appended as each step ends. Local: the file under the environment's state dir (or `target/deploy/
//! <env>/audit.jsonl`); remote environments also append it to `<remote_dir>/deploy-audit.jsonl` on
//! the server.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::environments::SshTarget;
use crate::error::{Error, Result};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    pub env: String,
    pub step: String,
    pub status: String,
    pub start: String,
    pub end: String,
    pub duration_ms: u64,
    pub sha: String,
    pub actor: String,
    #[serde(default)]
    pub run_url: Option<String>,
    #[serde(default)]
    pub backup_object: Option<String>,
    #[serde(default)]
    pub message: String,
    /// A `rollback` record: the release it put back (the plan's G), so the runs it undid can be
    /// computed again from the log (`rollback::plan::history`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// A deploy's records (its steps and its `pipeline` record) share a random id, so a run
    /// killed before its `pipeline` record is told from the next one by id, not by clocks that
    /// may be two machines' (`rollback::plan::history`). Older records have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// A `rollback` record: the `run` ids of the runs it undid, exactly (older records have none;
    /// their runs are computed again from `sha` and `previous`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undone_runs: Option<Vec<String>>,
}

#[derive(Clone, Debug)]
pub struct Audit {
    pub local: PathBuf,
    pub remote: Option<(SshTarget, String)>,
}

impl Audit {
    /// Append one record. The local copy must be written (exit 1 otherwise); the remote copy is best
    /// effort once the pipeline has failed (the server may be why), so its error is returned for the
    /// caller to report.
    pub fn append(&self, r: &Record) -> Result<()> {
        let mut line = serde_json::to_string(r).expect("serializable");
        line.push('\n');
        if let Some(dir) = self.local.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::write(dir, e))?;
        }
        // 0600: the log names hosts, objects and errors. A log created before (0644) is fixed too.
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.local)
            .map_err(|e| Error::write(&self.local, e))?;
        let mode = f
            .metadata()
            .map_err(|e| Error::write(&self.local, e))?
            .permissions()
            .mode();
        if mode & 0o777 != 0o600 {
            f.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(|e| Error::write(&self.local, e))?;
        }
        f.write_all(line.as_bytes())
            .map_err(|e| Error::write(&self.local, e))?;
        if let Some((t, file)) = &self.remote {
            let cmd = super::remote::append_cmd(t, file, line.into_bytes());
            super::remote::check("appending to the remote audit log", cmd.output()?)?;
        }
        Ok(())
    }
}

/// Every record of an audit log (the tests read it back).
#[cfg(test)]
pub fn read(path: &std::path::Path) -> Result<Vec<Record>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::read(path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| Error::input(path, i + 1, e.column(), e.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_log_is_0600_also_when_it_existed_with_another_mode() {
        let d = tempfile::tempdir().unwrap();
        let audit = Audit {
            local: d.path().join("deploy/audit.jsonl"),
            remote: None,
        };
        let r = Record {
            env: "local".into(),
            step: "lock".into(),
            status: "ok".into(),
            start: String::new(),
            end: String::new(),
            duration_ms: 0,
            sha: "abc1234".into(),
            actor: "me".into(),
            run_url: None,
            backup_object: None,
            message: String::new(),
            previous: None,
            run: None,
            undone_runs: None,
        };
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        audit.append(&r).unwrap();
        assert_eq!(mode(&audit.local), 0o600);
        std::fs::set_permissions(&audit.local, std::fs::Permissions::from_mode(0o644)).unwrap();
        audit.append(&r).unwrap();
        assert_eq!(mode(&audit.local), 0o600);
        assert_eq!(read(&audit.local).unwrap().len(), 2);
    }
}
