//! Output: the human table, the JSON document, GitHub Actions annotations and step summary. Pure
//! except [`github`], which writes through `crate::gha`.

use serde::Serialize;

use super::checks::{overall, verdict, Check, Status};
use super::info::ServerVersion;
use super::replication::Replication;
use crate::gha;

/// Everything we report about one run.
#[derive(Clone, Debug)]
pub struct Report {
    pub target: String,
    pub transport: &'static str,
    pub server: Option<ServerVersion>,
    pub samples: usize,
    pub waited_secs: Option<f64>,
    pub strict: bool,
    pub checks: Vec<Check>,
    /// `INFO replication` as parsed (direct transport only).
    pub replication: Option<Replication>,
    /// The last `INFO persistence` sample (for `--prometheus`).
    pub last_persistence: Option<super::info::Persistence>,
}

impl Report {
    /// `primary` / `replica` when INFO replication was asked.
    pub fn role(&self) -> Option<&'static str> {
        self.replication.as_ref().map(|r| r.role.as_str())
    }

    pub fn status(&self) -> Status {
        overall(&self.checks)
    }

    /// 0 healthy (warnings allowed), 1 a check failed (`--strict`: also a warning).
    pub fn exit_code(&self) -> crate::error::ExitCode {
        match self.status() {
            Status::Fail => crate::error::ExitCode::Failed,
            Status::Warn if self.strict => crate::error::ExitCode::Failed,
            _ => crate::error::ExitCode::Ok,
        }
    }
}

/// The JSON document (schema `verify-redis/1`; see the module docs of `verify_redis`).
#[derive(Serialize)]
pub struct JsonReport<'a> {
    pub schema: &'static str,
    pub target: &'a str,
    pub transport: &'a str,
    pub server: Option<&'a ServerVersion>,
    /// `ok`, `warn`, `fail` or `unreachable`.
    pub status: &'a str,
    pub exit_code: i32,
    pub strict: bool,
    pub samples: usize,
    pub waited_seconds: Option<f64>,
    pub verdict: String,
    pub error: Option<String>,
    /// `primary` / `replica` from INFO replication; null when not asked (exec, files) or no answer.
    pub role: Option<&'static str>,
    pub checks: &'a [Check],
}

pub const SCHEMA: &str = "verify-redis/1";

pub fn json(r: &Report) -> String {
    let doc = JsonReport {
        schema: SCHEMA,
        target: &r.target,
        transport: r.transport,
        server: r.server.as_ref(),
        status: r.status().as_str(),
        exit_code: r.exit_code() as i32,
        strict: r.strict,
        samples: r.samples,
        waited_seconds: r.waited_secs.map(|w| (w * 10.0).round() / 10.0),
        verdict: verdict(&r.checks),
        error: None,
        role: r.role(),
        checks: &r.checks,
    };
    serde_json::to_string_pretty(&doc).expect("serializable")
}

/// The JSON document for a run that got no answer (exit 3).
pub fn json_unreachable(target: &str, transport: &str, strict: bool, error: &str) -> String {
    let doc = JsonReport {
        schema: SCHEMA,
        target,
        transport,
        server: None,
        status: "unreachable",
        exit_code: crate::error::ExitCode::Unavailable as i32,
        strict,
        samples: 0,
        waited_seconds: None,
        verdict: "No answer from Redis: nothing is proven.".into(),
        error: Some(error.to_string()),
        role: None,
        checks: &[],
    };
    serde_json::to_string_pretty(&doc).expect("serializable")
}

/// The human table.
pub fn human(r: &Report) -> String {
    let mut s = format!(
        "verify-redis: {}{}{}\n\n",
        r.target,
        r.server
            .as_ref()
            .map(|v| format!(" ({v})"))
            .unwrap_or_default(),
        match (r.samples, r.waited_secs) {
            (n, Some(w)) if n > 1 => format!(", {n} samples, waited {w:.1}s for loading"),
            (n, None) if n > 1 => format!(", {n} samples"),
            (_, Some(w)) => format!(", waited {w:.1}s for loading"),
            _ => String::new(),
        }
    );
    let title_w = r.checks.iter().map(|c| c.title.len()).max().unwrap_or(5);
    let value_w = r
        .checks
        .iter()
        .map(|c| c.value.chars().count())
        .max()
        .unwrap_or(5)
        .min(48);
    s.push_str(&format!(
        "{:<6}{:<tw$}  {:<vw$}  {}\n",
        "",
        "CHECK",
        "VALUE",
        "REASON",
        tw = title_w,
        vw = value_w
    ));
    for c in &r.checks {
        let tag = match c.status {
            Status::Ok => "ok",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        };
        s.push_str(&format!(
            "{tag:<6}{:<tw$}  {:<vw$}  {}\n",
            c.title,
            c.value,
            c.message,
            tw = title_w,
            vw = value_w
        ));
        if let Some(a) = &c.action {
            if c.status != Status::Ok {
                s.push_str(&format!(
                    "{:<6}{:<tw$}  {:<vw$}  → {a}\n",
                    "",
                    "",
                    "",
                    tw = title_w,
                    vw = value_w
                ));
            }
        }
    }
    s.push('\n');
    s.push_str(&verdict(&r.checks));
    if r.strict && r.status() == Status::Warn {
        s.push_str(" (--strict: warnings fail)");
    }
    s.push('\n');
    s
}

/// The step summary's Markdown table.
pub fn markdown(r: &Report) -> String {
    let mut s = format!(
        "### verify-redis: {}{}\n\n| | Check | Value | Reason | What to do |\n|---|---|---|---|---|\n",
        gha::cell(&r.target),
        r.server
            .as_ref()
            .map(|v| format!(" ({v})"))
            .unwrap_or_default()
    );
    for c in &r.checks {
        let icon = match c.status {
            Status::Ok => "✅",
            Status::Warn => "⚠️",
            Status::Fail => "❌",
        };
        s.push_str(&format!(
            "| {icon} | {} | `{}` | {} | {} |\n",
            gha::cell(c.title),
            gha::cell(&c.value).replace('`', "'"),
            gha::cell(&c.message),
            gha::cell(
                c.action
                    .as_deref()
                    .filter(|_| c.status != Status::Ok)
                    .unwrap_or("")
            )
        ));
    }
    s.push_str(&format!("\n**{}**\n\n", verdict(&r.checks)));
    s
}

/// Under GitHub Actions: one annotation per warning/failure and the summary table. With `--json`
/// stdout carries the document only, so the annotations go to stderr (the runner reads both).
pub fn github(r: &Report, json_mode: bool) {
    if !gha::is_actions() {
        return;
    }
    for c in r.checks.iter().filter(|c| c.status != Status::Ok) {
        let title = format!("verify-redis: {}", c.title);
        let msg = match &c.action {
            Some(a) => format!("{}: {} → {a}", c.value, c.message),
            None => format!("{}: {}", c.value, c.message),
        };
        let kind = if c.status == Status::Fail {
            gha::Annotation::Error
        } else {
            gha::Annotation::Warning
        };
        gha::annotation(kind, &title, &msg, json_mode);
    }
    gha::summary(&markdown(r));
}

/// Under GitHub Actions: the annotation and summary line for a run that got no answer.
pub fn github_unreachable(target: &str, error: &str, json_mode: bool) {
    if !gha::is_actions() {
        return;
    }
    gha::annotation(gha::Annotation::Error, "verify-redis", error, json_mode);
    gha::summary(&format!(
        "### verify-redis: {}\n\n❌ no answer: {}\n\n",
        gha::cell(target),
        gha::cell(error)
    ));
}
