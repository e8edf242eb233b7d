//! Argument parsing and dispatch. Each command's flags live in its own module (`Args`).

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::error::ExitCode;
use crate::{
    backup, ci, compose, deploy, docs, e2e, lint, local, migrate, restore, rollback, verify_redis,
};

#[derive(Parser, Debug)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Station infra automation: durable Redis, proven backups, fail-closed deploys",
    after_help = "Exit codes: 0 ok, 1 a check or step failed, 2 bad input or usage, 3 a dependency could not be reached or run."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Make compose files durable (`apply`) or prove they are (`check`).
    #[command(subcommand)]
    Compose(compose::Args),
    /// Ask a live Redis whether its data survives a crash.
    VerifyRedis(verify_redis::Args),
    /// Back up PostgreSQL and prove the upload; `backup drill` restores one.
    Backup(backup::Args),
    /// Run the fail-closed deploy pipeline.
    Deploy(deploy::Args),
    /// Run migrations (refuses without a verified pre-deploy backup for the SHA).
    Migrate(migrate::Args),
    /// Put a backup back into the live database (restored beside it, then swapped; the replaced
    /// database is kept). `--kept` lists kept databases, `--drop-kept` removes one.
    Restore(restore::Args),
    /// Undo the deploys since the last good one (under the deploy lock): restore the pre-deploy
    /// backup of the first of them that migrated, put the last good release back, check health and
    /// Redis
    Rollback(rollback::Args),
    /// Manage the local environment (real PostgreSQL, redis-server, rclone remote under target/).
    #[command(subcommand)]
    Local(local::Args),
    /// Generate infra/docs/{redis,backups}.md from the environments file, the compose files and
    /// durability.json (`--check`: exit 1 with a diff when stale).
    Docs(docs::Args),
    /// Static checks of the GitHub workflows.
    #[command(subcommand)]
    Ci(ci::Args),
    /// End-to-end on the Docker engine: the staging stack survives kills, restarts and the volume move.
    E2e(e2e::Args),
    /// Everything to run before pushing: fmt, clippy, shellcheck, compose/docs/ci checks, zizmor.
    Lint(lint::Args),
}

/// Parse, run, print the error if any, and return the process exit code.
/// `xtask ... | head`: when the reader goes away, end quietly as other command-line tools do
/// (SIGPIPE's default action) instead of panicking in `println!` (exit 101 and a backtrace).
/// Rust sets SIGPIPE to "ignore" before `main`; children get the default back anyway.
pub fn quiet_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: resetting a signal's disposition to its default, before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

pub fn main() -> i32 {
    if let Some(i) = control_character_argument(std::env::args_os().skip(1)) {
        // Not echoed: printed, a newline would start a line of its own, which GitHub Actions reads
        // as a workflow command (`::warning::...`).
        eprintln!(
            "error: argument {i} holds a control character (a newline, tab or escape): no file name, \
             label or value of ours needs one; refused before anything ran"
        );
        if json_requested(std::env::args_os().skip(1)) {
            let e = crate::error::Error::usage(format!(
                "argument {i} holds a control character (a newline, tab or escape): refused \
                 before anything ran"
            ));
            println!("{}", e.json_failure(None, "usage"));
        }
        return ExitCode::Usage as i32;
    }
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m).map(|c| (c, m)));
    let cli = match parsed {
        Ok((c, m)) => {
            // Named for what a signal says when no step of it is registered (`signals`).
            let mut words = Vec::new();
            let mut at = &m;
            while let Some((name, sub)) = at.subcommand() {
                words.push(name.to_string());
                at = sub;
            }
            crate::signals::set_command(words.join(" "));
            c
        }
        Err(e) => {
            let _ = e.print();
            // `--json` asked: stdout holds one document on every path, a usage error too (its
            // first line; the usage and tips stay on stderr).
            if e.use_stderr() && json_requested(std::env::args_os().skip(1)) {
                let text = e.to_string();
                let first = text.lines().next().unwrap_or_default();
                let msg = first.strip_prefix("error: ").unwrap_or(first);
                println!(
                    "{}",
                    crate::error::Error::usage(msg).json_failure(None, "usage")
                );
            }
            return if e.use_stderr() {
                ExitCode::Usage as i32
            } else {
                ExitCode::Ok as i32
            };
        }
    };
    let result = match cli.command {
        Command::Compose(a) => compose::run(a),
        Command::VerifyRedis(a) => verify_redis::run(a),
        Command::Backup(a) => backup::run(a),
        Command::Deploy(a) => deploy::run(a),
        Command::Migrate(a) => migrate::run(a),
        Command::Restore(a) => restore::run(a),
        Command::Rollback(a) => rollback::run(a),
        Command::Local(a) => local::run(a),
        Command::Docs(a) => docs::run(a),
        Command::Ci(a) => ci::run(a),
        Command::E2e(a) => e2e::run(a),
        Command::Lint(a) => lint::run(a),
    };
    match result {
        Ok(code) => code as i32,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code() as i32
        }
    }
}

/// Whether `--json` is among the arguments (before a `--`, after which words are values).
pub fn json_requested(args: impl IntoIterator<Item = std::ffi::OsString>) -> bool {
    args.into_iter()
        .take_while(|a| a != "--")
        .any(|a| a == "--json")
}

/// The 1-based position of the first argument holding a control character, if any.
pub fn control_character_argument(
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> Option<usize> {
    args.into_iter()
        .position(|a| a.to_string_lossy().chars().any(char::is_control))
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn an_argument_with_a_control_character_is_found() {
        let args = |v: &[&str]| v.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        assert_eq!(
            super::control_character_argument(args(&["compose", "check", "--file", "a.yml"])),
            None
        );
        assert_eq!(
            super::control_character_argument(args(&["compose", "--file", "a\n::warning::x"])),
            Some(3)
        );
        assert_eq!(
            super::control_character_argument(args(&["x", "\u{1b}[2J"])),
            Some(2)
        );
    }

    #[test]
    fn the_cli_definition_is_valid_and_docs_help_names_both_files() {
        Cli::command().debug_assert();
        let mut cmd = Cli::command();
        let docs = cmd.find_subcommand_mut("docs").expect("docs subcommand");
        let help = docs.render_long_help().to_string();
        assert!(
            help.contains("redis,backups}.md") && help.contains("durability.json"),
            "{help}"
        );
    }
}
