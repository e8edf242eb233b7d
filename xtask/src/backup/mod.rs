//! `cargo xtask backup` and `backup drill`.

use crate::environments::Environment;
use crate::error::{Error, ExitCode, Result};

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> Result<ExitCode> {
    Err(Error::unavailable("not implemented yet"))
}

/// A validated backup label (`[A-Za-z0-9._-]`, bounded length).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Label(String);

impl Label {
    pub fn parse(_s: &str) -> Result<Label> {
        Err(Error::unavailable("not implemented yet"))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An object in the backup remote.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RemoteObject {
    /// `<remote>:<bucket>/<prefix>/YYYYMM/station_backup_<ts>_<label>.sql.gz`
    pub path: String,
    pub size: u64,
    /// Hex digest and its kind (`md5`, `sha1`), as rclone reports it for the remote.
    pub hash: String,
    pub hash_type: String,
}

/// Run `infra/scripts/backup-db.sh` for the environment with the label, streaming its output, and
/// return the uploaded object (already verified by the script against the local file).
pub fn create(_env: &Environment, _label: &Label) -> Result<RemoteObject> {
    Err(Error::unavailable("not implemented yet"))
}

/// Size and hash of one remote object, `None` when it does not exist.
pub fn stat(_env: &Environment, _path: &str) -> Result<Option<RemoteObject>> {
    Err(Error::unavailable("not implemented yet"))
}

/// All backup objects of the environment, oldest first.
pub fn list(_env: &Environment) -> Result<Vec<RemoteObject>> {
    Err(Error::unavailable("not implemented yet"))
}
