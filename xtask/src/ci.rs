//! `cargo xtask ci check [FILES...]`: static checks of the GitHub workflows (default:
//! `.github/workflows/*.yml`). Parsing (a small position-carrying tree built from granit-parser
//! events) is separate from the rules, which are pure functions over that tree.
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

use granit_parser::{Event, Parser};

use crate::error::{Error, ExitCode, Result};

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

/// A YAML node with its 1-based line and column.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    Scalar(String, Pos),
    Seq(Vec<Node>, Pos),
    Map(Vec<(Node, Node)>, Pos),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl Node {
    pub fn pos(&self) -> Pos {
        match self {
            Node::Scalar(_, p) | Node::Seq(_, p) | Node::Map(_, p) => *p,
        }
    }
    pub fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(entries, _) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }
    /// The key node of `key` (for positions).
    pub fn key(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(entries, _) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(k, _)| k),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::Scalar(s, _) => Some(s),
            _ => None,
        }
    }
    pub fn entries(&self) -> &[(Node, Node)] {
        match self {
            Node::Map(e, _) => e,
            _ => &[],
        }
    }
    pub fn items(&self) -> &[Node] {
        match self {
            Node::Seq(i, _) => i,
            _ => &[],
        }
    }
}

/// Parse the first YAML document into a [`Node`] tree (exit 2 with `file:line:col` on bad YAML).
pub fn parse(text: &str, file: &Path) -> Result<Node> {
    let mut events = Vec::new();
    for ev in Parser::new_from_str(text) {
        match ev {
            // Comments and anchor metadata are presentation, not data.
            Ok((e, _))
                if !matches!(
                    e,
                    Event::StreamStart
                        | Event::StreamEnd
                        | Event::DocumentStart(..)
                        | Event::DocumentEnd
                        | Event::Alias(_)
                        | Event::Scalar(..)
                        | Event::SequenceStart(..)
                        | Event::SequenceEnd
                        | Event::MappingStart(..)
                        | Event::MappingEnd
                ) => {}
            Ok((e, span)) => events.push((
                e,
                Pos {
                    line: span.start.line(),
                    col: span.start.col() + 1,
                },
            )),
            Err(e) => {
                return Err(Error::input(
                    file,
                    e.marker().line(),
                    e.marker().col() + 1,
                    e.info(),
                ))
            }
        }
    }
    let mut it = events.into_iter().peekable();
    let mut anchors: std::collections::HashMap<usize, Node> = Default::default();
    while let Some((e, pos)) = it.peek() {
        match e {
            Event::StreamStart | Event::DocumentStart(..) => {
                it.next();
            }
            Event::StreamEnd => return Ok(Node::Map(vec![], *pos)),
            _ => return build(&mut it, &mut anchors, file),
        }
    }
    Ok(Node::Map(vec![], Pos { line: 1, col: 1 }))
}

type Events<'i> = std::iter::Peekable<std::vec::IntoIter<(Event<'i>, Pos)>>;

fn build(
    it: &mut Events<'_>,
    anchors: &mut std::collections::HashMap<usize, Node>,
    file: &Path,
) -> Result<Node> {
    let Some((e, pos)) = it.next() else {
        return Err(Error::input(file, 1, 1, "unexpected end of YAML"));
    };
    let (node, anchor) = match e {
        Event::Scalar(v, _, anchor, _) => (Node::Scalar(v.into_owned(), pos), anchor),
        Event::Alias(id) => (
            anchors
                .get(&id)
                .cloned()
                .ok_or_else(|| Error::input(file, pos.line, pos.col, "unknown alias"))?,
            0,
        ),
        Event::SequenceStart(_, anchor, _) => {
            let mut items = Vec::new();
            while !matches!(it.peek(), Some((Event::SequenceEnd, _)) | None) {
                items.push(build(it, anchors, file)?);
            }
            it.next();
            (Node::Seq(items, pos), anchor)
        }
        Event::MappingStart(_, anchor, _) => {
            let mut entries = Vec::new();
            while !matches!(it.peek(), Some((Event::MappingEnd, _)) | None) {
                let k = build(it, anchors, file)?;
                let v = build(it, anchors, file)?;
                entries.push((k, v));
            }
            it.next();
            (Node::Map(entries, pos), anchor)
        }
        other => {
            return Err(Error::input(
                file,
                pos.line,
                pos.col,
                format!("unexpected YAML event {other:?}"),
            ))
        }
    };
    if anchor != 0 {
        anchors.insert(anchor, node.clone());
    }
    Ok(node)
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
    let wf_shell = doc
        .get("defaults")
        .and_then(|d| d.get("run"))
        .and_then(|r| r.get("shell"));
    let wf_concurrency = doc.get("concurrency");
    let Some(jobs) = doc.get("jobs") else {
        find(doc.pos(), "no `jobs:` in this workflow".into());
        return r;
    };
    let mut deploy_jobs = 0;
    for (job_key, job) in jobs.entries() {
        let job_name = job_key.as_str().unwrap_or("?");
        let steps = job.get("steps").map(Node::items).unwrap_or(&[]);
        // Rule for every job: no expressions inside run scripts.
        for step in steps {
            if let Some(run) = step.get("run") {
                if run.as_str().is_some_and(|s| s.contains("${{")) {
                    find(
                        run.pos(),
                        format!(
                            "job `{job_name}`: `${{{{ }}}}` inside `run:` is template injection: pass the value through `env:` and use \"$VAR\""
                        ),
                    );
                }
            }
        }
        let runs = |s: &Node, cmd: &str| {
            s.get("run")
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
            runs(s, "backup") && s.get("name").and_then(Node::as_str) == Some(BACKUP_STEP_NAME)
        });
        if let Some(m) = migrate_idx {
            match backup_idx {
                None => find(
                    steps[m].pos(),
                    format!(
                        "job `{job_name}`: this step runs `cargo xtask migrate` but no step named \"{BACKUP_STEP_NAME}\" runs `cargo xtask backup` before it"
                    ),
                ),
                Some(b) if b > m => find(
                    steps[b].pos(),
                    format!(
                        "job `{job_name}`: \"{BACKUP_STEP_NAME}\" runs after the migration (line {}): move it before",
                        steps[m].pos().line
                    ),
                ),
                Some(_) => {}
            }
        }
        if let Some(k) = job.key("continue-on-error") {
            if truthy_or_expr(job.get("continue-on-error").expect("key exists")) {
                find(
                    k.pos(),
                    format!("job `{job_name}`: a deploy job must not have continue-on-error"),
                );
            }
        }
        for s in steps {
            if runs(s, "backup") || runs(s, "migrate") || runs(s, "deploy") {
                if let (Some(k), Some(v)) = (s.key("continue-on-error"), s.get("continue-on-error"))
                {
                    if truthy_or_expr(v) {
                        find(
                            k.pos(),
                            format!(
                                "job `{job_name}`: continue-on-error on a backup/migrate/deploy step would let a failure pass"
                            ),
                        );
                    }
                }
            }
        }
        let job_shell = job
            .get("defaults")
            .and_then(|d| d.get("run"))
            .and_then(|r| r.get("shell"));
        for s in steps {
            if s.get("run").is_some() {
                let shell = s.get("shell").or(job_shell).or(wf_shell);
                if !is_bash(shell) {
                    find(
                        s.pos(),
                        format!(
                            "job `{job_name}`: run step without `shell: bash` (the default `bash -e` has no pipefail)"
                        ),
                    );
                }
            }
        }
        match job.get("concurrency").or(wf_concurrency) {
            Some(c) if c.get("cancel-in-progress").and_then(Node::as_str) == Some("false") => {}
            Some(c) => find(
                c.pos(),
                format!(
                    "job `{job_name}`: concurrency needs `cancel-in-progress: false` (a cancelled deploy can stop mid-migration)"
                ),
            ),
            None => find(
                job_key.pos(),
                format!(
                    "job `{job_name}`: a deploy job needs `concurrency` with `cancel-in-progress: false`"
                ),
            ),
        }
        if job.get("environment").is_none() {
            find(
                job_key.pos(),
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
