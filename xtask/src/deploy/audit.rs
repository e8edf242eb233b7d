//! The deploy audit log: one JSON object per line and per step (and one for the whole pipeline),
//! appended as each step ends. Local: the file under the environment's state dir (or `target/deploy/
//! <env>/audit.jsonl`); remote environments also append it to `<remote_dir>/deploy-audit.jsonl` on
//! the server.

use std::io::Write;
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
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.local)
            .map_err(|e| Error::write(&self.local, e))?;
        f.write_all(line.as_bytes())
            .map_err(|e| Error::write(&self.local, e))?;
        if let Some((t, file)) = &self.remote {
            let cmd = super::remote::append_cmd(t, file, line.into_bytes());
            super::remote::check("appending to the remote audit log", cmd.output()?)?;
        }
        Ok(())
    }
}
