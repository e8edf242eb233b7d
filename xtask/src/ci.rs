//! `cargo xtask ci check [FILES...]`: static checks of the GitHub workflows (default:
//! `.github/workflows/*.yml`). Parsing is [`crate::yaml`] (the position-carrying tree shared with
//! `compose`); the rules are pure functions over that tree.
//!
//! In every deploy job (a job whose steps run `cargo xtask backup|migrate|deploy`):
//! - a step named "Pre-migration database backup" runs `cargo xtask backup` before the step that runs
//!   `cargo xtask migrate`;
//! - neither those steps nor the job have `continue-on-error`;
//! - every `run:` step uses bash (`shell: bash`, or `defaults.run.shell: bash`): pipefail;
//! - `concurrency` (job or workflow) has `cancel-in-progress: false`;
//! - the job has an `environment:`.
//!
//! In every job of every workflow: no `${{ }}` inside `run:` (template injection; pass through `env:`).

use std::path::{Path, PathBuf};

use crate::error::{Error, ExitCode, Result};
use crate::yaml::{self, Kind, Node, Pos};

pub const BACKUP_STEP_NAME: &str = "Pre-migration database backup";

#[derive(clap::Subcommand, Debug)]
pub enum Args {
    /// Check the workflows (backup before migrate, no continue-on-error, bash, concurrency,
    /// environment, no `${{ }}` in `run:`).
    Check {
        /// Workflow files (default: .github/workflows/*.yml and *.yaml).
        files: Vec<PathBuf>,
    },
}

pub fn run(args: Args) -> Result<ExitCode> {
    let Args::Check { files } = args;
    let files = if files.is_empty() {
        let root = crate::environments::repo_root()?;
        workflow_files(&root.join(".github/workflows"))?
    } else {
        files
    };
    let mut findings = Vec::new();
    let mut deploy_jobs = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).map_err(|e| Error::read(f, e))?;
        let doc = parse(&text, f)?;
        let r = check_workflow(&doc, f);
        deploy_jobs += r.deploy_jobs;
        findings.extend(r.findings);
    }
    for f in &findings {
        println!("{f}");
    }
    if findings.is_empty() {
        println!(
            "ci check: {} workflow file(s), {deploy_jobs} deploy job(s): ok",
            files.len()
        );
        Ok(ExitCode::Ok)
    } else {
        println!(
            "ci check: {} problem(s) in {} workflow file(s)",
            findings.len(),
            files.len()
        );
        Ok(ExitCode::Failed)
    }
}

fn workflow_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::read(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yml" | "yaml")))
        .collect();
    v.sort();
    if v.is_empty() {
        return Err(Error::usage(format!(
            "no workflow files in {}",
            dir.display()
        )));
    }
    Ok(v)
}

/// Parse the first YAML document (exit 2 with `file:line:col` on bad YAML). A stream without a
/// document is an empty mapping at its end, so the rules report what is missing.
pub fn parse(text: &str, file: &Path) -> Result<Node> {
    let stream =
        yaml::parse_stream(text).map_err(|e| Error::input(file, e.at.line, e.at.col, e.message))?;
    Ok(stream.root.unwrap_or_else(|| Node {
        kind: Kind::Map {
            entries: Vec::new(),
            flow: false,
        },
        span: stream.end.offset..stream.end.offset,
        start: stream.end,
        anchor: None,
        alias: None,
    }))
}

/// The value of `key` in a mapping (GitHub workflows have no `<<` merge keys).
fn get<'a>(n: &'a Node, key: &str) -> Option<&'a Node> {
    n.own(key).map(|l| l.value)
}

/// The items of a sequence (none for anything else).
fn items(n: &Node) -> &[Node] {
    n.items().unwrap_or(&[])
}

/// What the rules found in one workflow.
#[derive(Debug, Default)]
pub struct CheckResult {
    pub deploy_jobs: usize,
    /// `file:line:col: message` lines.
    pub findings: Vec<String>,
}

/// Whether a `run:` script invokes `cargo xtask <cmd>` (whitespace-insensitive).
pub fn runs_xtask(script: &str, cmd: &str) -> bool {
    script.lines().any(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        words
            .windows(3)
            .any(|w| w[0] == "cargo" && w[1] == "xtask" && w[2] == cmd)
            && !(cmd == "deploy" && words.contains(&"--dry-run"))
    })
}

fn is_bash(n: Option<&Node>) -> bool {
    n.and_then(Node::as_str)
        .is_some_and(|s| s == "bash" || s.starts_with("bash "))
}

fn truthy_or_expr(n: &Node) -> bool {
    match n.as_str() {
        Some(s) => !matches!(s.trim(), "false" | "False" | "FALSE"),
        None => true,
    }
}

/// Apply the rules to a parsed workflow.
pub fn check_workflow(doc: &Node, file: &Path) -> CheckResult {
    let mut r = CheckResult::default();
    let mut find = |p: Pos, msg: String| {
        r.findings
            .push(format!("{}:{}:{}: {msg}", file.display(), p.line, p.col));
    };
    let wf_shell = get(doc, "defaults")
        .and_then(|d| get(d, "run"))
        .and_then(|r| get(r, "shell"));
    let wf_concurrency = get(doc, "concurrency");
    let Some(jobs) = get(doc, "jobs") else {
        find(doc.start, "no `jobs:` in this workflow".into());
        return r;
    };
    let mut deploy_jobs = 0;
    for (job_key, job) in jobs.entries().unwrap_or(&[]) {
        let job_name = job_key.as_str().unwrap_or("?");
        let steps = get(job, "steps").map(items).unwrap_or(&[]);
        // Rule for every job: no expressions inside run scripts.
        for step in steps {
            if let Some(run) = get(step, "run") {
                if run.as_str().is_some_and(|s| s.contains("${{")) {
                    find(
                        run.start,
                        format!(
                            "job `{job_name}`: `${{{{ }}}}` inside `run:` is template injection: pass the value through `env:` and use \"$VAR\""
                        ),
                    );
                }
            }
        }
        let runs = |s: &Node, cmd: &str| {
            get(s, "run")
                .and_then(Node::as_str)
                .is_some_and(|t| runs_xtask(t, cmd))
        };
        let is_deploy = steps
            .iter()
            .any(|s| runs(s, "backup") || runs(s, "migrate") || runs(s, "deploy"));
        if !is_deploy {
            continue;
        }
        deploy_jobs += 1;
        let migrate_idx = steps.iter().position(|s| runs(s, "migrate"));
        let backup_idx = steps.iter().position(|s| {
            runs(s, "backup") && get(s, "name").and_then(Node::as_str) == Some(BACKUP_STEP_NAME)
        });
        if let Some(m) = migrate_idx {
            match backup_idx {
                None => find(
                    steps[m].start,
                    format!(
                        "job `{job_name}`: this step runs `cargo xtask migrate` but no step named \"{BACKUP_STEP_NAME}\" runs `cargo xtask backup` before it"
                    ),
                ),
                Some(b) if b > m => find(
                    steps[b].start,
                    format!(
                        "job `{job_name}`: \"{BACKUP_STEP_NAME}\" runs after the migration (line {}): move it before",
                        steps[m].start.line
                    ),
                ),
                Some(_) => {}
            }
        }
        if let Some(c) = job.own("continue-on-error") {
            if truthy_or_expr(c.value) {
                find(
                    c.key.start,
                    format!("job `{job_name}`: a deploy job must not have continue-on-error"),
                );
            }
        }
        for s in steps {
            if runs(s, "backup") || runs(s, "migrate") || runs(s, "deploy") {
                if let Some(c) = s.own("continue-on-error") {
                    if truthy_or_expr(c.value) {
                        find(
                            c.key.start,
                            format!(
                                "job `{job_name}`: continue-on-error on a backup/migrate/deploy step would let a failure pass"
                            ),
                        );
                    }
                }
            }
        }
        let job_shell = get(job, "defaults")
            .and_then(|d| get(d, "run"))
            .and_then(|r| get(r, "shell"));
        for s in steps {
            if get(s, "run").is_some() {
                let shell = get(s, "shell").or(job_shell).or(wf_shell);
                if !is_bash(shell) {
                    find(
                        s.start,
                        format!(
                            "job `{job_name}`: run step without `shell: bash` (the default `bash -e` has no pipefail)"
                        ),
                    );
                }
            }
        }
        match get(job, "concurrency").or(wf_concurrency) {
            Some(c) if get(c, "cancel-in-progress").and_then(Node::as_str) == Some("false") => {}
            Some(c) => find(
                c.start,
                format!(
                    "job `{job_name}`: concurrency needs `cancel-in-progress: false` (a cancelled deploy can stop mid-migration)"
                ),
            ),
            None => find(
                job_key.start,
                format!(
                    "job `{job_name}`: a deploy job needs `concurrency` with `cancel-in-progress: false`"
                ),
            ),
        }
        if get(job, "environment").is_none() {
            find(
                job_key.start,
                format!("job `{job_name}`: a deploy job needs an `environment:` (protection rules, secrets)"),
            );
        }
    }
    r.deploy_jobs = deploy_jobs;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Vec<String> {
        let f = Path::new("w.yml");
        check_workflow(&parse(text, f).unwrap(), f).findings
    }

    const GOOD: &str = r#"
on: push
defaults:
  run:
    shell: bash
concurrency:
  group: deploy
  cancel-in-progress: false
jobs:
  deploy:
    environment: production
    runs-on: ubuntu-latest
    steps:
      - name: Pre-migration database backup
        run: cargo xtask backup --env production --label "pre-deploy-${SHA:0:7}"
      - name: Migrate
        run: cargo xtask migrate --env production --sha "$SHA"
"#;

    #[test]
    fn good_workflow_passes() {
        assert_eq!(check(GOOD), Vec::<String>::new());
    }

    #[test]
    fn each_rule_fires_with_a_position() {
        let swapped = GOOD.replace(
            "      - name: Pre-migration database backup\n        run: cargo xtask backup --env production --label \"pre-deploy-${SHA:0:7}\"\n",
            "",
        ) + "      - name: Pre-migration database backup\n        run: cargo xtask backup --env production\n";
        let f = check(&swapped);
        assert!(
            f[0].starts_with("w.yml:16:9:") && f[0].contains("after the migration"),
            "{f:?}"
        );
        let f = check(&GOOD.replace("cancel-in-progress: false", "cancel-in-progress: true"));
        assert!(f[0].contains("cancel-in-progress: false"), "{f:?}");
        let f = check(&GOOD.replace("    environment: production\n", ""));
        assert!(f[0].contains("environment"), "{f:?}");
        let f = check(&GOOD.replace("shell: bash", "shell: sh"));
        assert_eq!(f.len(), 2, "{f:?}");
        let f = check(&GOOD.replace("--sha \"$SHA\"", "--sha ${{ github.sha }}"));
        assert!(
            f[0].contains("template injection") && f[0].starts_with("w.yml:17:14:"),
            "{f:?}"
        );
        let f = check(&GOOD.replace(
            "      - name: Migrate\n",
            "      - name: Migrate\n        continue-on-error: true\n",
        ));
        assert!(f[0].contains("continue-on-error"), "{f:?}");
    }

    #[test]
    fn bad_yaml_is_exit_2_with_position() {
        let e = parse("jobs:\n  a: [1, 2\n", Path::new("w.yml")).unwrap_err();
        assert_eq!(e.exit_code(), ExitCode::Usage);
        assert!(e.to_string().starts_with("w.yml:"), "{e}");
    }

    #[test]
    fn xtask_invocations() {
        assert!(runs_xtask(
            "set -x\ncargo  xtask migrate --env p",
            "migrate"
        ));
        assert!(!runs_xtask("echo cargo xtask-migrate", "migrate"));
        assert!(!runs_xtask("cargo xtask deploy --dry-run", "deploy"));
    }
}
