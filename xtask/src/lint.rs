//! `cargo xtask lint`: what a contributor runs before pushing, and what CI runs (`.ci/run`), as named
//! steps in the style of bevy's `tools/ci`: every step runs (a failure does not hide the next one),
//! each failed step says what to run, and the end names the failed steps.
//!
//! | step         | command                                                  |
//! |--------------|----------------------------------------------------------|
//! | `fmt`        | `cargo fmt --all --check`                                |
//! | `clippy`     | `cargo clippy --workspace --all-targets -- -D warnings`  |
//! | `shellcheck` | `shellcheck` on every `.sh` that git tracks              |
//! | `compose`    | `cargo xtask compose check`                              |
//! | `docs`       | `cargo xtask docs --check`                               |
//! | `ci`         | `cargo xtask ci check`                                   |
//! | `zizmor`     | `zizmor --offline .github/workflows`                     |
//!
//! Exit 0 all passed; 1 a step failed (named, with its fix); 3 a tool is missing (named, with how to
//! install it) and nothing failed. The xtask steps run this very binary, not `cargo xtask` again.
//!
//! A developer command: the steps run through [xshell](https://docs.rs/xshell) (echoed, output
//! inherited, no timeout). Production commands, which need deadlines and secret handling, use
//! [`crate::process::Cmd`].

use std::path::{Path, PathBuf};

use xshell::{cmd, Shell};

use crate::error::{Error, ExitCode, Result};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Run only this step (repeatable); default: all, in the order of `--list`.
    #[arg(long = "step", value_name = "STEP", value_enum)]
    pub steps: Vec<Step>,
    /// Print the steps and their commands, run nothing.
    #[arg(long)]
    pub list: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Step {
    Fmt,
    Clippy,
    Shellcheck,
    Compose,
    Docs,
    Ci,
    Zizmor,
}

/// How a step ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed,
    /// A tool is missing: the message says how to install it.
    Missing(String),
}

impl Step {
    pub const ALL: [Step; 7] = [
        Step::Fmt,
        Step::Clippy,
        Step::Shellcheck,
        Step::Compose,
        Step::Docs,
        Step::Ci,
        Step::Zizmor,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Step::Fmt => "fmt",
            Step::Clippy => "clippy",
            Step::Shellcheck => "shellcheck",
            Step::Compose => "compose",
            Step::Docs => "docs",
            Step::Ci => "ci",
            Step::Zizmor => "zizmor",
        }
    }

    /// The command, as a contributor would type it.
    pub fn command(self) -> &'static str {
        match self {
            Step::Fmt => "cargo fmt --all --check",
            Step::Clippy => "cargo clippy --workspace --all-targets -- -D warnings",
            Step::Shellcheck => "shellcheck $(git ls-files '*.sh')",
            Step::Compose => "cargo xtask compose check",
            Step::Docs => "cargo xtask docs --check",
            Step::Ci => "cargo xtask ci check",
            Step::Zizmor => "zizmor --offline .github/workflows",
        }
    }

    /// What to do when the step fails.
    pub fn fix(self) -> &'static str {
        match self {
            Step::Fmt => "run `cargo fmt --all` and commit",
            Step::Clippy => {
                "fix the warnings above (`cargo clippy --all-targets --fix` does the mechanical ones)"
            }
            Step::Shellcheck => {
                "fix the findings above (each SCxxxx is explained at https://www.shellcheck.net/wiki/)"
            }
            Step::Compose => {
                "run `cargo xtask compose apply` (or fix the file at the position shown) and commit"
            }
            Step::Docs => "run `cargo xtask docs` and commit",
            Step::Ci => "fix the workflow at the position shown (`cargo xtask ci check`)",
            Step::Zizmor => {
                "fix the findings above (`zizmor --offline .github/workflows` explains each audit)"
            }
        }
    }

    /// Programs the step needs, with how to install each.
    fn tools(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Step::Fmt => &[("cargo-fmt", "rustup component add rustfmt")],
            Step::Clippy => &[("cargo-clippy", "rustup component add clippy")],
            Step::Shellcheck => &[
                ("git", "apt-get install git"),
                ("shellcheck", "apt-get install shellcheck"),
            ],
            Step::Compose | Step::Docs | Step::Ci => &[],
            Step::Zizmor => &[("zizmor", "pip install zizmor")],
        }
    }
}

/// The steps to run: the chosen ones (default all), once each, in the canonical order.
pub fn plan(chosen: &[Step]) -> Vec<Step> {
    let mut v: Vec<Step> = if chosen.is_empty() {
        Step::ALL.to_vec()
    } else {
        chosen.to_vec()
    };
    v.sort();
    v.dedup();
    v
}

/// The closing report and the exit code: failed steps (exit 1) with their fixes, else missing tools
/// (exit 3), else ok.
pub fn summary(results: &[(Step, Outcome)]) -> (String, ExitCode) {
    let failed: Vec<Step> = results
        .iter()
        .filter(|(_, o)| *o == Outcome::Failed)
        .map(|(s, _)| *s)
        .collect();
    let missing: Vec<(Step, &str)> = results
        .iter()
        .filter_map(|(s, o)| match o {
            Outcome::Missing(m) => Some((*s, m.as_str())),
            _ => None,
        })
        .collect();
    let names =
        |v: &mut dyn Iterator<Item = Step>| v.map(Step::name).collect::<Vec<_>>().join(", ");
    let mut out = String::new();
    for s in &failed {
        out.push_str(&format!("lint: `{}` failed: {}\n", s.name(), s.fix()));
    }
    for (s, m) in &missing {
        out.push_str(&format!("lint: `{}` did not run: {m}\n", s.name()));
    }
    let code = if !failed.is_empty() {
        out.push_str(&format!(
            "lint: {} of {} step(s) failed: {}\n",
            failed.len(),
            results.len(),
            names(&mut failed.iter().copied())
        ));
        ExitCode::Failed
    } else if !missing.is_empty() {
        out.push_str(&format!(
            "lint: {} step(s) could not run (a tool is missing): {}\n",
            missing.len(),
            names(&mut missing.iter().map(|(s, _)| *s))
        ));
        ExitCode::Unavailable
    } else {
        out.push_str(&format!(
            "lint: all {} step(s) passed: {}\n",
            results.len(),
            names(&mut results.iter().map(|(s, _)| *s))
        ));
        ExitCode::Ok
    };
    (out, code)
}

pub fn run(args: Args) -> Result<ExitCode> {
    let steps = plan(&args.steps);
    if args.list {
        for s in &steps {
            println!("{:<10}  {}", s.name(), s.command());
        }
        return Ok(ExitCode::Ok);
    }
    let root = crate::environments::repo_root()?;
    let exe = std::env::current_exe()
        .map_err(|e| Error::unavailable(format!("cannot find the xtask binary: {e}")))?;
    let sh = Shell::new().map_err(|e| Error::unavailable(format!("xshell: {e}")))?;
    sh.change_dir(&root);
    let mut results = Vec::new();
    for step in steps {
        crate::gha::group(&format!("lint: {}", step.name()));
        eprintln!("==> lint: {} ({})", step.name(), step.command());
        let outcome = run_step(&sh, step, &exe, &root);
        crate::gha::endgroup();
        if outcome == Outcome::Failed {
            crate::gha::error(&format!("lint: {} failed", step.name()), step.fix());
        }
        results.push((step, outcome));
    }
    let (report, code) = summary(&results);
    eprint!("{report}");
    Ok(code)
}

fn run_step(sh: &Shell, step: Step, exe: &Path, root: &Path) -> Outcome {
    for (tool, install) in step.tools() {
        if crate::process::which(tool).is_none() {
            return Outcome::Missing(format!(
                "`{tool}` is not installed or not on PATH: {install} (infra/scripts/install-deps.sh \
                 installs the Debian and PyPI tools)"
            ));
        }
    }
    let ran = match step {
        Step::Fmt => cmd!(sh, "cargo fmt --all --check").run(),
        Step::Clippy => cmd!(sh, "cargo clippy --workspace --all-targets -- -D warnings").run(),
        Step::Shellcheck => match tracked_scripts(sh) {
            Ok(files) if files.is_empty() => {
                eprintln!("no tracked .sh files under {}", root.display());
                Ok(())
            }
            Ok(files) => {
                // A fragment with neither a shebang nor a `# shellcheck shell=` directive (the carry
                // converter, shown to users inside `sh -c '…'`) is POSIX sh, as tests/scripts.rs checks it.
                let (declared, fragments): (Vec<PathBuf>, Vec<PathBuf>) =
                    files.into_iter().partition(|f| {
                        std::fs::read_to_string(root.join(f))
                            .is_ok_and(|t| t.starts_with("#!") || t.contains("# shellcheck shell="))
                    });
                let mut r = Ok(());
                if !declared.is_empty() {
                    r = cmd!(sh, "shellcheck {declared...}").run();
                }
                if r.is_ok() && !fragments.is_empty() {
                    r = cmd!(sh, "shellcheck --shell sh {fragments...}").run();
                }
                r
            }
            Err(e) => Err(e),
        },
        Step::Compose => cmd!(sh, "{exe} compose check").run(),
        Step::Docs => cmd!(sh, "{exe} docs --check").run(),
        Step::Ci => cmd!(sh, "{exe} ci check").run(),
        Step::Zizmor => cmd!(sh, "zizmor --offline .github/workflows").run(),
    };
    match ran {
        Ok(()) => Outcome::Passed,
        Err(e) => {
            eprintln!("{e}");
            Outcome::Failed
        }
    }
}

/// Every `.sh` file git tracks under the shell's directory (paths relative to it).
fn tracked_scripts(sh: &Shell) -> xshell::Result<Vec<PathBuf>> {
    let out = cmd!(sh, "git ls-files -z -- *.sh").quiet().read()?;
    Ok(out
        .split('\0')
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_is_every_step_in_order_or_the_chosen_ones_once() {
        let all: Vec<&str> = plan(&[]).into_iter().map(Step::name).collect();
        assert_eq!(
            all,
            [
                "fmt",
                "clippy",
                "shellcheck",
                "compose",
                "docs",
                "ci",
                "zizmor"
            ]
        );
        assert_eq!(
            plan(&[Step::Zizmor, Step::Fmt, Step::Zizmor]),
            [Step::Fmt, Step::Zizmor]
        );
    }

    #[test]
    fn a_failure_is_named_with_its_fix_and_beats_a_missing_tool() {
        let (out, code) = summary(&[
            (Step::Fmt, Outcome::Failed),
            (Step::Clippy, Outcome::Passed),
            (Step::Docs, Outcome::Failed),
            (
                Step::Zizmor,
                Outcome::Missing("`zizmor` is not installed".into()),
            ),
        ]);
        assert_eq!(code, ExitCode::Failed);
        assert!(
            out.contains("lint: `fmt` failed: run `cargo fmt --all` and commit"),
            "{out}"
        );
        assert!(
            out.contains("lint: `docs` failed: run `cargo xtask docs` and commit"),
            "{out}"
        );
        assert!(
            out.contains("`zizmor` did not run: `zizmor` is not installed"),
            "{out}"
        );
        assert!(
            out.ends_with("lint: 2 of 4 step(s) failed: fmt, docs\n"),
            "{out}"
        );
    }

    #[test]
    fn a_missing_tool_alone_is_exit_3_and_all_passed_is_0() {
        let (out, code) = summary(&[
            (Step::Fmt, Outcome::Passed),
            (Step::Zizmor, Outcome::Missing("pip install zizmor".into())),
        ]);
        assert_eq!(code, ExitCode::Unavailable, "{out}");
        assert!(
            out.contains("could not run (a tool is missing): zizmor"),
            "{out}"
        );
        let (out, code) = summary(&[(Step::Fmt, Outcome::Passed), (Step::Ci, Outcome::Passed)]);
        assert_eq!(code, ExitCode::Ok);
        assert_eq!(out, "lint: all 2 step(s) passed: fmt, ci\n");
    }
}
