//! `--info-file PATH|-`: captured INFO text, read with a size cap and without blocking.
//!
//! A file must be a regular file (a FIFO, `/dev/zero`, a directory are refused at once: the file is
//! opened with `O_NONBLOCK`, so a FIFO without a writer cannot block the open, and then checked with
//! `fstat`). Standard input (`-`) may be a pipe; it is read until end of input for at most
//! `--timeout`, and at most [`INFO_CAP`] bytes. Errors are bad input (exit 2).

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use crate::error::{Error, Result};

/// The most INFO text we read: a full `INFO` is 5–10 KB, a hundred samples well under 1 MB.
pub const INFO_CAP: u64 = 4 << 20;

/// `O_NONBLOCK` on Linux (all architectures Rust supports there use 0o4000).
const O_NONBLOCK: i32 = 0o4000;

fn too_big(name: &str) -> Error {
    Error::usage(format!(
        "{name}: more than {} MiB of input: INFO text is a few KB, is this the right input?",
        INFO_CAP >> 20
    ))
}

/// Read a captured INFO file (regular files only, at most [`INFO_CAP`] bytes).
pub fn read_file(path: &Path) -> Result<String> {
    let name = path.display().to_string();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(O_NONBLOCK)
        .open(path)
        .map_err(|e| Error::read(path, e))?;
    let meta = file.metadata().map_err(|e| Error::read(path, e))?;
    let ft = meta.file_type();
    if !ft.is_file() {
        let kind = if ft.is_dir() {
            "a directory"
        } else if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_char_device() {
            "a character device"
        } else if ft.is_block_device() {
            "a block device"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(Error::usage(format!(
            "{name}: is {kind}, not a regular file: --info-file reads captured INFO text from a file, or from standard input with `-` (e.g. `redis-cli INFO persistence | cargo xtask verify-redis --info-file -`)"
        )));
    }
    if meta.len() > INFO_CAP {
        return Err(too_big(&name));
    }
    let mut b = Vec::new();
    file.take(INFO_CAP + 1)
        .read_to_end(&mut b)
        .map_err(|e| Error::read(path, e))?;
    if b.len() as u64 > INFO_CAP {
        return Err(too_big(&name));
    }
    Ok(String::from_utf8_lossy(&b).into_owned())
}

/// Read standard input until its end, at most [`INFO_CAP`] bytes and `limit` of time.
pub fn read_stdin(limit: Duration) -> Result<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut b = Vec::new();
        let r = std::io::stdin()
            .lock()
            .take(INFO_CAP + 1)
            .read_to_end(&mut b)
            .map(|_| b);
        let _ = tx.send(r);
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(b)) if b.len() as u64 > INFO_CAP => Err(too_big("<stdin>")),
        Ok(Ok(b)) => Ok(String::from_utf8_lossy(&b).into_owned()),
        Ok(Err(e)) => Err(Error::usage(format!("<stdin>: cannot read: {e}"))),
        Err(_) => Err(Error::usage(format!(
            "<stdin>: no end of input within {:.1}s (--timeout): pipe the INFO text in, e.g. `redis-cli INFO persistence | cargo xtask verify-redis --info-file -`",
            limit.as_secs_f64()
        ))),
    }
}
