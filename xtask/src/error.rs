//! One error type and one exit-code policy for every command.
//!
//! | code | meaning                                                         |
//! |------|-----------------------------------------------------------------|
//! | 0    | ok                                                              |
//! | 1    | a check or a step failed                                        |
//! | 2    | bad input or usage (with `file:line:col` where there is a file) |
//! | 3    | a dependency could not be reached or run                        |

use std::fmt;
use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Process exit codes, identical for every command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitCode {
    Ok = 0,
    Failed = 1,
    Usage = 2,
    Unavailable = 3,
}

/// A position in a file, 1-based, for `file:line:col` messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", show_path(&self.file), self.line, self.col)
    }
}

/// A path for messages: as is, unless it holds control characters (a newline would start a line of
/// its own, which GitHub Actions reads as a workflow command, e.g. `::warning::`; an escape sequence
/// would drive the terminal): then quoted with them escaped (`"a\n::warning::b"`).
pub fn show_path(p: &Path) -> String {
    let s = p.to_string_lossy();
    if s.chars().any(char::is_control) {
        format!("{s:?}")
    } else {
        s.into_owned()
    }
}

#[derive(Debug)]
pub enum Error {
    /// A check or a pipeline step failed (exit 1). The message says what and what to do.
    Failed(String),
    /// Bad input or usage (exit 2).
    Usage(String),
    /// Bad input at a position in a file (exit 2).
    Input { at: Position, message: String },
    /// A dependency could not be reached or run (exit 3).
    Unavailable(String),
}

impl Error {
    pub fn failed(msg: impl Into<String>) -> Self {
        Error::Failed(msg.into())
    }
    pub fn usage(msg: impl Into<String>) -> Self {
        Error::Usage(msg.into())
    }
    pub fn unavailable(msg: impl Into<String>) -> Self {
        Error::Unavailable(msg.into())
    }
    pub fn input(file: &Path, line: usize, col: usize, msg: impl Into<String>) -> Self {
        Error::Input {
            at: Position {
                file: file.to_path_buf(),
                line,
                col,
            },
            message: msg.into(),
        }
    }
    /// An I/O error on a file the user named: a missing or unreadable input is bad input (exit 2).
    pub fn read(file: &Path, err: std::io::Error) -> Self {
        Error::Usage(format!("{}: cannot read: {err}", show_path(file)))
    }
    /// An I/O error while writing our own output or state: the step failed (exit 1).
    pub fn write(file: &Path, err: std::io::Error) -> Self {
        Error::Failed(format!("{}: cannot write: {err}", show_path(file)))
    }

    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Failed(_) => ExitCode::Failed,
            Error::Usage(_) | Error::Input { .. } => ExitCode::Usage,
            Error::Unavailable(_) => ExitCode::Unavailable,
        }
    }

    /// A new message with this error's exit code (a position becomes plain bad input).
    pub fn same_kind(&self, msg: impl Into<String>) -> Self {
        match self {
            Error::Failed(_) => Error::Failed(msg.into()),
            Error::Usage(_) | Error::Input { .. } => Error::Usage(msg.into()),
            Error::Unavailable(_) => Error::Unavailable(msg.into()),
        }
    }

    /// Prefix the message with context, keeping the exit code.
    pub fn context(self, ctx: impl fmt::Display) -> Self {
        match self {
            Error::Failed(m) => Error::Failed(format!("{ctx}: {m}")),
            Error::Usage(m) => Error::Usage(format!("{ctx}: {m}")),
            Error::Unavailable(m) => Error::Unavailable(format!("{ctx}: {m}")),
            e @ Error::Input { .. } => e,
        }
    }
}

/// The `--json` document of a command that failed before its own report existed (`restore`,
/// `rollback`): stable field names `env` (null when unknown), `outcome` (`failed`), `failed_step`,
/// `message` (the error, as on stderr) and `exit_code` (1, 2 or 3), the names their reports use.
#[derive(Clone, Debug, serde::Serialize)]
pub struct JsonFailure<'a> {
    pub env: Option<&'a str>,
    pub outcome: &'static str,
    pub failed_step: &'a str,
    pub message: String,
    pub exit_code: i32,
}

impl Error {
    /// [`JsonFailure`] of this error at `step`, pretty-printed.
    pub fn json_failure(&self, env: Option<&str>, step: &str) -> String {
        let doc = JsonFailure {
            env,
            outcome: "failed",
            failed_step: step,
            message: self.to_string(),
            exit_code: self.exit_code() as i32,
        };
        serde_json::to_string_pretty(&doc).expect("serializable")
    }

    /// `--json` of a command that prints its own document only once it has one: a failure while
    /// `step` is not empty (nothing printed yet) prints [`Error::json_failure`] at `step`.
    pub fn print_json_failure(r: &Result<ExitCode>, json: bool, env: Option<&str>, step: &str) {
        if let (true, false, Err(e)) = (json, step.is_empty(), r) {
            println!("{}", e.json_failure(env, step));
        }
    }

    /// [`Error::json_failure`] with `extra`'s fields added (the ones of the command's own report
    /// that are known when it failed, e.g. the object); an `extra` field of the same name wins
    /// (`outcome: "interrupted"`).
    pub fn json_failure_with(
        &self,
        env: Option<&str>,
        step: &str,
        extra: serde_json::Value,
    ) -> String {
        let mut doc = serde_json::to_value(JsonFailure {
            env,
            outcome: "failed",
            failed_step: step,
            message: self.to_string(),
            exit_code: self.exit_code() as i32,
        })
        .expect("serializable");
        if let (Some(d), serde_json::Value::Object(x)) = (doc.as_object_mut(), extra) {
            d.extend(x);
        }
        serde_json::to_string_pretty(&doc).expect("serializable")
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Failed(m) | Error::Usage(m) | Error::Unavailable(m) => f.write_str(m),
            Error::Input { at, message } => write!(f, "{at}: {message}"),
        }
    }
}

impl std::error::Error for Error {}
