//! Git facts the commands share: the validated commit [`Sha`] a deploy, a migration, a backup
//! label and a rollback name, and the checkout's [`head_sha`] (the default of `--sha`: [`sha_or_head`]).

use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::process::Cmd;

/// A validated git commit SHA (hex, 7–40 characters, stored lowercase).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Sha(String);

impl Sha {
    pub fn parse(s: &str) -> Result<Sha> {
        let s = s.trim();
        if (7..=40).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Sha(s.to_ascii_lowercase()))
        } else {
            Err(Error::usage(format!(
                "--sha {s:?}: a commit SHA is 7 to 40 hexadecimal characters"
            )))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn short(&self) -> &str {
        &self.0[..7]
    }
    /// The backup label of the pre-deploy backup for this SHA: `pre-deploy-<sha7>`.
    pub fn backup_label(&self) -> String {
        format!("pre-deploy-{}", self.short())
    }
}

/// `git rev-parse HEAD` of the repository (exit 2 when there is no git checkout: pass --sha).
pub fn head_sha(root: &Path) -> Result<Sha> {
    let out = Cmd::new("git")
        .args(["rev-parse", "HEAD"])
        .dir(root)
        .timeout(std::time::Duration::from_secs(20))
        .output()
        .map_err(|e| Error::usage(format!("cannot ask git for the commit ({e}): pass --sha")))?;
    if !out.status.success() {
        return Err(Error::usage(format!(
            "cannot determine the commit (`git rev-parse HEAD`: {}): pass --sha",
            out.stderr_str().trim()
        )));
    }
    Sha::parse(out.stdout_str().trim())
}

/// The commit a command is for: `--sha` when given (validated), else the checkout's [`head_sha`].
pub fn sha_or_head(sha: Option<&str>, root: &Path) -> Result<Sha> {
    match sha {
        Some(s) => Sha::parse(s),
        None => head_sha(root),
    }
}
