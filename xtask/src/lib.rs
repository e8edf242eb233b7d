//! The Station infra workspace's `cargo xtask`. One module per command; shared pieces beside them.
//! See `docs/ARCHITECTURE.md` for the layout and how data flows through a command.

// Shared pieces.
pub mod cli;
pub mod docker;
pub mod environments;
pub mod error;
pub(crate) mod files;
pub(crate) mod fnv;
pub mod gha;
pub(crate) mod git;
pub(crate) mod host;
pub mod process;
pub(crate) mod random;
pub mod services;
pub(crate) mod signals;
pub mod ssh;
pub(crate) mod time;
pub mod yaml;

// One module per command.
pub mod backup;
pub(crate) mod ci;
pub mod compose;
pub mod deploy;
pub mod docs;
pub mod e2e;
pub mod lint;
pub mod local;
pub mod migrate;
pub mod restore;
pub mod rollback;
pub mod verify_redis;

pub use error::{Error, ExitCode, Result};
