//! GitHub Actions workflow commands and the step summary. Everything here is a no-op outside
//! Actions (`GITHUB_ACTIONS=true`), so commands can call it unconditionally.

use std::io::Write;

pub fn is_actions() -> bool {
    std::env::var("GITHUB_ACTIONS")
        .map(|v| v == "true")
        .unwrap_or(false)
}

/// Escape a workflow-command message (`%`, `\r`, `\n`).
pub fn escape(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escape a workflow-command property value (also `:` and `,`).
pub fn escape_property(s: &str) -> String {
    escape(s).replace(':', "%3A").replace(',', "%2C")
}

static TO_STDERR: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Send workflow commands to stderr from now on (the runner reads both streams): for `--json`
/// modes, whose stdout must hold nothing but the JSON document.
pub fn commands_to_stderr() {
    TO_STDERR.store(true, std::sync::atomic::Ordering::Relaxed);
}

fn command_line(line: &str) {
    if TO_STDERR.load(std::sync::atomic::Ordering::Relaxed) {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

/// `::error` or `::warning` with a title. Goes to stderr when `to_stderr` (or after
/// [`commands_to_stderr`]), else stdout.
pub fn annotation(kind: Annotation, title: &str, msg: &str, to_stderr: bool) {
    if !is_actions() {
        return;
    }
    let kind = match kind {
        Annotation::Error => "error",
        Annotation::Warning => "warning",
    };
    let line = format!("::{kind} title={}::{}", escape_property(title), escape(msg));
    if to_stderr {
        eprintln!("{line}");
    } else {
        command_line(&line);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Annotation {
    Error,
    Warning,
}

pub fn error(title: &str, msg: &str) {
    annotation(Annotation::Error, title, msg, false);
}

pub fn warning(title: &str, msg: &str) {
    annotation(Annotation::Warning, title, msg, false);
}

pub fn group(name: &str) {
    if is_actions() {
        command_line(&format!("::group::{}", escape(name)));
    }
}

pub fn endgroup() {
    if is_actions() {
        command_line("::endgroup::");
    }
}

/// Append Markdown to `$GITHUB_STEP_SUMMARY` (when set; errors are ignored: a summary is a nicety).
pub fn summary(markdown: &str) {
    if !is_actions() {
        return;
    }
    if let Some(path) = std::env::var_os("GITHUB_STEP_SUMMARY").filter(|p| !p.is_empty()) {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
        {
            let _ = f.write_all(markdown.as_bytes());
        }
    }
}

/// Escape a value for a Markdown table cell.
pub fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}
