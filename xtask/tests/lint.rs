//! `cargo xtask lint` for real, on a throwaway git tree (no recursion into cargo: only the steps that
//! do not build run here): a tracked script with a shellcheck finding fails the `shellcheck` step
//! with its fix and the failed step named (exit 1); untracked scripts are not linted; a missing tool
//! is exit 3 with how to install it.

mod common;

use std::path::Path;
use std::process::Command;

use common::Run;

fn xtask(root: &Path, path: Option<&str>, args: &[&str]) -> Run {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.arg("lint")
        .args(args)
        .current_dir(root)
        .env("XTASK_ROOT", root)
        .env_remove("GITHUB_ACTIONS");
    if let Some(p) = path {
        c.env("PATH", p);
    }
    c.output().unwrap().into()
}

fn git(root: &Path, args: &[&str]) {
    let st = Command::new("git")
        .args(args)
        .current_dir(root)
        .status()
        .unwrap();
    assert!(st.success(), "git {args:?}");
}

/// A tree with a clean tracked script, and `bad` (unquoted `$1`: SC2086) at `bad_at`, tracked or not.
fn tree(bad_at: &str, track_bad: bool) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    git(p, &["init", "-q"]);
    std::fs::create_dir_all(p.join("infra/scripts")).unwrap();
    std::fs::write(
        p.join("infra/scripts/good.sh"),
        "#!/bin/sh\nset -eu\nprintf '%s\\n' \"$1\"\n",
    )
    .unwrap();
    std::fs::write(p.join(bad_at), "#!/bin/sh\nrm -rf $1\n").unwrap();
    git(p, &["add", "infra/scripts/good.sh"]);
    if track_bad {
        git(p, &["add", bad_at]);
    }
    d
}

#[test]
fn a_tracked_script_with_a_finding_fails_the_shellcheck_step_with_its_fix() {
    let d = tree("infra/scripts/bad.sh", true);
    let r = xtask(d.path(), None, &["--step", "shellcheck"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.all().contains("infra/scripts/bad.sh"), "{}", r.all());
    assert!(r.all().contains("SC2086"), "{}", r.all());
    assert!(
        r.stderr.contains(
            "lint: `shellcheck` failed: fix the findings above (each SCxxxx is explained at"
        ),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .ends_with("lint: 1 of 1 step(s) failed: shellcheck\n"),
        "{}",
        r.stderr
    );
}

#[test]
fn untracked_scripts_are_not_linted() {
    let d = tree("scratch.sh", false);
    let r = xtask(d.path(), None, &["--step", "shellcheck"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stderr.contains("good.sh"), "{}", r.stderr);
    assert!(!r.all().contains("scratch.sh"), "{}", r.all());
    assert!(r
        .stderr
        .ends_with("lint: all 1 step(s) passed: shellcheck\n"));
}

#[test]
fn a_missing_tool_is_exit_3_with_how_to_install_it() {
    let d = tree("infra/scripts/bad.sh", true);
    let empty = tempfile::tempdir().unwrap();
    let path = empty.path().to_str().unwrap();
    let r = xtask(
        d.path(),
        Some(path),
        &["--step", "zizmor", "--step", "shellcheck"],
    );
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(
        r.stderr
            .contains("lint: `zizmor` did not run: `zizmor` is not installed or not on PATH: pip install zizmor"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("apt-get install git"), "{}", r.stderr);
    assert!(r
        .stderr
        .ends_with("could not run (a tool is missing): shellcheck, zizmor\n"));
}

#[test]
fn list_prints_the_plan_and_an_unknown_step_is_usage() {
    let d = tempfile::tempdir().unwrap();
    let r = xtask(d.path(), None, &["--list"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let names: Vec<&str> = r
        .stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        names,
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
    assert!(r
        .stdout
        .contains("clippy      cargo clippy --workspace --all-targets -- -D warnings"));
    let r = xtask(d.path(), None, &["--step", "nope"]);
    assert_eq!(r.code, 2, "{}", r.all());
}
