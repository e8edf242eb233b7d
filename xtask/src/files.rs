//! The one atomic-write helper. A file is written to a fresh temp file in its own directory
//! (created 0600), synced, given its mode, and renamed over the target: a reader sees the old file
//! or the new one, never half of either, and a failure leaves no temp file behind.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::{Error, Result};

/// The mode the written file gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// 0600 whatever the file had (state files, password files).
    Private,
    /// The permissions the file has; `new` for a file that does not exist yet (`None`: it must
    /// exist, e.g. `compose apply` only replaces a file it has read).
    Keep { new: Option<u32> },
}

/// Replace `path` with `bytes` atomically (see the module documentation).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: Mode) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let perms = match (mode, std::fs::metadata(path)) {
        (Mode::Private, _) => std::fs::Permissions::from_mode(0o600),
        (Mode::Keep { .. }, Ok(m)) => m.permissions(),
        (Mode::Keep { new: Some(m) }, Err(_)) => std::fs::Permissions::from_mode(m),
        (Mode::Keep { new: None }, Err(e)) => return Err(Error::write(path, e)),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.xtask-tmp."))
        .tempfile_in(dir)
        .map_err(|e| Error::write(path, e))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .and_then(|()| std::fs::set_permissions(tmp.path(), perms))
        .map_err(|e| Error::write(path, e))?;
    tmp.persist(path).map_err(|e| Error::write(path, e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn names(d: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn private_files_replace_atomically_and_leave_no_temp_file() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("state.json");
        write_atomic(&path, b"{\"old\": true}", Mode::Private).unwrap();
        // A reader that opened the old file keeps seeing it whole: the new content is a new file
        // renamed over it, never the old one truncated and rewritten in place.
        let mut reader = std::fs::File::open(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_atomic(&path, b"{\"new\": 1}", Mode::Private).unwrap();
        let mut seen = String::new();
        reader.read_to_string(&mut seen).unwrap();
        assert_eq!(seen, "{\"old\": true}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"new\": 1}");
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(names(d.path()), ["state.json"], "temp file left behind");
        // A failed write names the file and leaves nothing behind.
        let e = write_atomic(
            &d.path().join("no/such/dir/state.json"),
            b"x",
            Mode::Private,
        )
        .unwrap_err();
        assert!(e.to_string().contains("state.json"), "{e}");
    }

    #[test]
    fn kept_modes_and_new_files() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("docker-compose.yml");
        assert!(write_atomic(&path, b"a", Mode::Keep { new: None }).is_err());
        assert!(!path.exists());
        write_atomic(&path, b"a", Mode::Keep { new: Some(0o644) }).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o644
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&path, b"b", Mode::Keep { new: Some(0o644) }).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "b");
        assert_eq!(names(d.path()), ["docker-compose.yml"]);
    }
}
