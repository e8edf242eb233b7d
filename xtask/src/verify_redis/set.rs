//! Several nodes, one verdict: a primary and its replicas (`--replicas discover`, `--replica-url`,
//! Sentinel, or an environment that declares them).
//!
//! Every node is asked in parallel (one thread each, at most [`MAX_NODES`]), each within the same
//! bound as a single run ([`super::Options::budget`]), so three nodes take about the time of one.
//! What is true of the set as a whole (roles, Sentinel's view) are the set's own checks; each node
//! also becomes one `node` check, so that the set's `checks` carry the whole verdict.

use serde::Serialize;

use super::checks::{overall, Check, Status};
use super::render::{self, Report};
use super::replication::Role;
use super::{collect, Options, Source};
use crate::error::{Error, ExitCode, Result};

/// The most nodes one run asks.
pub const MAX_NODES: usize = 16;

/// A node to verify and the role it should have.
pub struct Member {
    pub expect: Role,
    pub source: Source,
}

/// What came back from one node.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub expect: Role,
    pub target: String,
    pub transport: &'static str,
    pub result: std::result::Result<Report, String>,
}

/// A verified set of nodes.
#[derive(Clone, Debug)]
pub struct SetReport {
    /// e.g. `sentinel:mymaster (127.0.0.1:26379,…)` or the primary's URL.
    pub target: String,
    pub transport: &'static str,
    pub strict: bool,
    pub nodes: Vec<Outcome>,
    /// Set-level checks (Sentinel, roles), then one `node` check per node.
    pub checks: Vec<Check>,
}

impl SetReport {
    pub fn status(&self) -> Status {
        overall(&self.checks)
    }

    pub fn exit_code(&self) -> ExitCode {
        match self.status() {
            Status::Fail => ExitCode::Failed,
            Status::Warn if self.strict => ExitCode::Failed,
            _ => ExitCode::Ok,
        }
    }

    /// The set-level checks as one node's report (no server facts), for the table renderers.
    fn as_report(&self) -> Report {
        Report {
            target: self.target.clone(),
            transport: self.transport,
            server: None,
            samples: 1,
            waited_secs: None,
            strict: self.strict,
            checks: self.checks.clone(),
            replication: None,
            last_persistence: None,
        }
    }

    /// The node that should be the primary, if it answered.
    pub fn primary(&self) -> Option<&Report> {
        self.nodes
            .iter()
            .find(|n| n.expect == Role::Primary)
            .and_then(|n| n.result.as_ref().ok())
    }

    pub fn verdict(&self) -> String {
        let n = self.nodes.len();
        match self.status() {
            Status::Ok => format!(
                "All {n} nodes keep their data: a crash of any of them, or a failover to any replica, loses no write that node had acknowledged or received."
            ),
            Status::Warn => format!("All {n} nodes keep their data, with the warnings above."),
            Status::Fail => {
                let failed: Vec<String> = self
                    .checks
                    .iter()
                    .filter(|c| c.status == Status::Fail)
                    .map(|c| {
                        if c.id == "node" {
                            c.value.clone()
                        } else {
                            c.id.to_string()
                        }
                    })
                    .collect();
                format!(
                    "The set's data is NOT proven safe: a crash or a failover may lose data ({}).",
                    failed.join(", ")
                )
            }
        }
    }
}

/// Ask every member in parallel; each is bounded like a single run.
pub fn verify(members: Vec<Member>, opts: &Options) -> Result<Vec<Outcome>> {
    if members.len() > MAX_NODES {
        return Err(Error::usage(format!(
            "{} nodes: verify-redis asks at most {MAX_NODES} in one run",
            members.len()
        )));
    }
    let handles: Vec<_> = members
        .into_iter()
        .map(|m| {
            let target = m.source.target();
            let transport = m.source.transport();
            let opts = opts.clone();
            let h = std::thread::spawn(move || collect(m.source, &opts));
            (m.expect, target, transport, h)
        })
        .collect();
    Ok(handles
        .into_iter()
        .map(|(expect, target, transport, h)| Outcome {
            expect,
            result: match h.join() {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err(format!("{target}: the check panicked")),
            },
            target,
            transport,
        })
        .collect())
}

/// The set's own role checks and one `node` check per node, after `set_checks` (Sentinel's).
/// Error (exit 3) when no node answered.
pub fn assemble(
    target: String,
    transport: &'static str,
    strict: bool,
    nodes: Vec<Outcome>,
    mut set_checks: Vec<Check>,
) -> Result<SetReport> {
    if !nodes.is_empty() && nodes.iter().all(|n| n.result.is_err()) {
        let why: Vec<String> = nodes
            .iter()
            .filter_map(|n| n.result.as_ref().err().cloned())
            .collect();
        return Err(Error::unavailable(format!(
            "{target}: no node answered: {}",
            why.join("; ")
        )));
    }
    set_checks.push(roles(&nodes));
    for n in &nodes {
        set_checks.push(node_check(n));
    }
    Ok(SetReport {
        target,
        transport,
        strict,
        nodes,
        checks: set_checks,
    })
}

fn roles(nodes: &[Outcome]) -> Check {
    let mut bad = Vec::new();
    let mut seen = Vec::new();
    for n in nodes {
        let Ok(r) = &n.result else { continue };
        let Some(role) = r.role() else { continue };
        seen.push(format!("{}={role}", n.target));
        if role != n.expect.as_str() {
            bad.push(format!(
                "{} answers role {role} but was named a {}",
                n.target,
                n.expect.as_str()
            ));
        }
    }
    let primaries = nodes
        .iter()
        .filter_map(|n| n.result.as_ref().ok())
        .filter(|r| r.role() == Some("primary"))
        .count();
    if primaries > 1 {
        bad.push(format!(
            "{primaries} nodes answer role primary: writes may go to two places (split brain)"
        ));
    }
    let (status, message, action) = if bad.is_empty() {
        (
            Status::Ok,
            "one primary, every other node replicates".to_string(),
            None,
        )
    } else {
        (
            Status::Fail,
            format!("{} (a failover in progress?)", bad.join("; ")),
            Some("run verify-redis again in a minute; if it persists, look at Sentinel's and the nodes' logs".to_string()),
        )
    };
    Check {
        id: "roles",
        title: "Roles",
        status,
        value: seen.join(", "),
        message,
        action,
    }
}

fn node_check(n: &Outcome) -> Check {
    let value = format!("{} {}", n.expect.as_str(), n.target);
    match &n.result {
        Ok(r) => {
            let status = r.status();
            let failing: Vec<&str> = r
                .checks
                .iter()
                .filter(|c| c.status != Status::Ok)
                .map(|c| c.id)
                .collect();
            let message = if failing.is_empty() || status == Status::Fail {
                super::checks::verdict(&r.checks)
            } else {
                format!("{} ({})", super::checks::verdict(&r.checks), failing.join(", "))
            };
            Check {
                id: "node",
                title: "Node",
                status,
                value,
                message,
                action: (status != Status::Ok)
                    .then(|| "see this node's table above".to_string()),
            }
        }
        Err(e) => Check {
            id: "node",
            title: "Node",
            status: Status::Fail,
            value,
            message: format!("no answer: {e}"),
            action: Some(
                "a node that may become primary must be verified: bring it back or remove it from the set".into(),
            ),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

#[derive(Serialize)]
struct JsonNode<'a> {
    target: &'a str,
    /// The role it was expected to have.
    expected_role: &'static str,
    /// What INFO replication says (null when unreachable).
    role: Option<&'static str>,
    transport: &'a str,
    server: Option<&'a super::info::ServerVersion>,
    status: &'a str,
    samples: usize,
    waited_seconds: Option<f64>,
    verdict: String,
    error: Option<&'a str>,
    checks: &'a [Check],
}

#[derive(Serialize)]
struct JsonSet<'a> {
    schema: &'static str,
    target: &'a str,
    transport: &'a str,
    server: Option<&'a super::info::ServerVersion>,
    status: &'a str,
    exit_code: i32,
    strict: bool,
    samples: usize,
    waited_seconds: Option<f64>,
    verdict: String,
    error: Option<String>,
    role: Option<&'static str>,
    checks: &'a [Check],
    nodes: Vec<JsonNode<'a>>,
}

pub fn json(s: &SetReport) -> String {
    let primary = s.primary();
    let nodes = s
        .nodes
        .iter()
        .map(|n| match &n.result {
            Ok(r) => JsonNode {
                target: &n.target,
                expected_role: n.expect.as_str(),
                role: r.role(),
                transport: n.transport,
                server: r.server.as_ref(),
                status: r.status().as_str(),
                samples: r.samples,
                waited_seconds: r.waited_secs.map(|w| (w * 10.0).round() / 10.0),
                verdict: super::checks::verdict(&r.checks),
                error: None,
                checks: &r.checks,
            },
            Err(e) => JsonNode {
                target: &n.target,
                expected_role: n.expect.as_str(),
                role: None,
                transport: n.transport,
                server: None,
                status: "unreachable",
                samples: 0,
                waited_seconds: None,
                verdict: "No answer from Redis: nothing is proven.".into(),
                error: Some(e),
                checks: &[],
            },
        })
        .collect();
    let doc = JsonSet {
        schema: render::SCHEMA,
        target: &s.target,
        transport: s.transport,
        server: primary.and_then(|p| p.server.as_ref()),
        status: s.status().as_str(),
        exit_code: s.exit_code() as i32,
        strict: s.strict,
        samples: primary.map(|p| p.samples).unwrap_or(0),
        waited_seconds: primary
            .and_then(|p| p.waited_secs)
            .map(|w| (w * 10.0).round() / 10.0),
        verdict: s.verdict(),
        error: None,
        role: None,
        checks: &s.checks,
        nodes,
    };
    serde_json::to_string_pretty(&doc).expect("serializable")
}

/// The human report: one table per node, then the set's.
pub fn human(s: &SetReport) -> String {
    let mut out = format!("verify-redis: {} ({} nodes)\n\n", s.target, s.nodes.len());
    for n in &s.nodes {
        out.push_str(&format!("== {} {}\n", n.expect.as_str(), n.target));
        match &n.result {
            Ok(r) => out.push_str(&render::human(r)),
            Err(e) => out.push_str(&format!("NO ANSWER: {e}\n")),
        }
        out.push('\n');
    }
    out.push_str("== the set\n");
    let set = s.as_report();
    let table = render::human(&set);
    // The table without its own header and verdict lines.
    let lines: Vec<&str> = table.lines().collect();
    let body = &lines[2..lines.len().saturating_sub(2)];
    out.push_str(&body.join("\n"));
    out.push_str("\n\n");
    out.push_str(&s.verdict());
    if s.strict && s.status() == Status::Warn {
        out.push_str(" (--strict: warnings fail)");
    }
    out.push('\n');
    out
}

/// Under GitHub Actions: annotations for every failing or warning check of every node, and the
/// summary tables.
pub fn github(s: &SetReport, json_mode: bool) {
    for n in &s.nodes {
        if let Ok(r) = &n.result {
            render::github(r, json_mode);
        }
    }
    let set = s.as_report();
    render::github(&set, json_mode);
}
