//! `cargo xtask ci check` on the real workflows and on broken fixtures, and zizmor on the real ones.

mod common;

use std::process::Command;

use common::repo;

fn xtask(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn fixture(name: &str) -> String {
    repo()
        .join("xtask/tests/fixtures/workflows")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn the_real_workflows_pass() {
    let (code, out) = xtask(&["ci", "check"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("2 deploy job(s): ok"), "{out}");
}

#[test]
fn backup_after_the_migration_fails_with_its_position() {
    let f = fixture("backup_after_migrate.yml");
    let (code, out) = xtask(&["ci", "check", &f]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("{f}:21:9:")) && out.contains("runs after the migration (line 19)"),
        "{out}"
    );
}

#[test]
fn a_missing_backup_fails_at_the_migration_step() {
    let f = fixture("backup_missing.yml");
    let (code, out) = xtask(&["ci", "check", &f]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("{f}:21:9:")), "{out}");
    assert!(
        out.contains("no step named \"Pre-migration database backup\""),
        "{out}"
    );
}

#[test]
fn every_other_rule_is_enforced() {
    let f = fixture("unsafe_job.yml");
    let (code, out) = xtask(&["ci", "check", &f]);
    assert_eq!(code, 1, "{out}");
    for (at, what) in [
        ("17:14", "template injection"),
        ("15:9", "continue-on-error"),
        ("13:9", "shell: bash"),
        ("10:7", "cancel-in-progress: false"),
        ("7:3", "environment"),
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("{f}:{at}:")) && l.contains(what)),
            "{at} {what}: {out}"
        );
    }
}

#[test]
fn bad_yaml_and_missing_files_are_usage_errors() {
    let d = tempfile::tempdir().unwrap();
    let bad = d.path().join("bad.yml");
    std::fs::write(&bad, "jobs:\n  deploy: {steps: [\n").unwrap();
    let (code, out) = xtask(&["ci", "check", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains(&format!("{}:", bad.display())), "{out}");
    let (code, _) = xtask(&["ci", "check", "/nonexistent/w.yml"]);
    assert_eq!(code, 2);
}

/// zizmor (PyPI, installed by install-deps.sh) offline: nothing above low severity.
#[test]
fn zizmor_reports_nothing_above_low() {
    let out = Command::new("zizmor")
        .args(["--offline", "--min-severity", "medium", "--format", "plain"])
        .arg(repo().join(".github/workflows"))
        .output()
        .expect("zizmor is installed by infra/scripts/install-deps.sh (pip install zizmor)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "zizmor findings:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And it does find problems when there are some: the injection fixture is high severity.
    let bad = Command::new("zizmor")
        .args(["--offline", "--min-severity", "medium"])
        .arg(fixture("unsafe_job.yml"))
        .output()
        .unwrap();
    assert!(
        !bad.status.success(),
        "zizmor accepted the template-injection fixture"
    );
}
