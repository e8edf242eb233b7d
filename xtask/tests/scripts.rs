//! Every shell script of the crate is a `.sh` file under `xtask/src/` (embedded with
//! `include_str!`), and every one is shellcheck-clean, as are `infra/scripts/*.sh`. A file names its
//! dialect with `# shellcheck shell=sh|bash`; one without the directive (the carry converter, shown
//! verbatim in the docs) is checked as POSIX `sh`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn scripts(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            scripts(&p, out);
        } else if p.extension().is_some_and(|x| x == "sh") {
            out.push(p);
        }
    }
}

#[test]
fn every_script_is_shellcheck_clean() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    scripts(&crate_dir.join("src"), &mut files);
    let embedded = files.len();
    scripts(&crate_dir.join("../infra/scripts"), &mut files);
    assert!(embedded >= 10, "{files:?}");
    let mut failed = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let mut c = Command::new("shellcheck");
        if !text.contains("# shellcheck shell=") && !text.starts_with("#!") {
            c.args(["--shell", "sh"]);
        }
        let out = c.arg(f).output().expect(
            "shellcheck (infra/scripts/install-deps.sh installs it: apt-get install shellcheck)",
        );
        if !out.status.success() {
            failed.push(format!(
                "{}:\n{}",
                f.display(),
                String::from_utf8_lossy(&out.stdout)
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// No multi-line shell script is left in a Rust string literal: scripts live in `.sh` files.
#[test]
fn no_multi_line_script_in_rust_source() {
    let mut rs = Vec::new();
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut rs);
    let shell = |body: &str| {
        body.contains('\n')
            && ["set -e", "\nfi", "done", "\"$@\"", "$1", "then"]
                .iter()
                .any(|m| body.contains(m))
    };
    let mut found = Vec::new();
    for f in rs {
        let text = std::fs::read_to_string(&f).unwrap();
        // Tests may build throwaway scripts; the tool's own scripts are what matter.
        let text = text.split("#[cfg(test)]").next().unwrap();
        // Raw strings `r#"..."#`, and `"...\` strings continued over lines.
        let mut rest = text;
        while let Some(at) = rest.find("r#\"") {
            let body = &rest[at + 3..];
            let end = body.find("\"#").unwrap_or(body.len());
            if shell(&body[..end]) {
                found.push(format!("{}: {:?}", f.display(), &body[..end.min(40)]));
            }
            rest = &body[end..];
        }
        if text.contains("set -e; \\\n") || text.contains("; fi; \\\n") {
            found.push(format!(
                "{}: a `;`-joined script continued with \\",
                f.display()
            ));
        }
    }
    assert!(found.is_empty(), "{found:?}");
}
