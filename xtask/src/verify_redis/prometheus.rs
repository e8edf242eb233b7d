//! `--prometheus FILE`: every check as a gauge, in node_exporter's textfile format, written
//! atomically (a temp file in the same directory, then rename: the collector never reads half a
//! file). Point node_exporter's `--collector.textfile.directory` at the file's directory and run
//! verify-redis from a timer (the generated infra/docs/redis.md shows a systemd unit).
//!
//! Series (label `node` = the node's target, never a password; `role` primary/replica when known):
//! - `xtask_verify_redis_check{node,role,check}`: 0 ok, 1 warn, 2 fail, one per check and node
//!   (set-level checks carry `node` = the set's target);
//! - `xtask_verify_redis_up{node,role}`: 1 when the node answered;
//! - `xtask_verify_redis_status`: the run's verdict, 0 ok, 1 warn, 2 fail, 3 unreachable;
//! - `xtask_verify_redis_last_run_timestamp_seconds`;
//! - where they overlap, redis_exporter's own names for the INFO fields we read (`redis_aof_enabled`,
//!   `redis_aof_last_write_status` (1 = ok), `redis_loading_dump_file`, `redis_master_link_up`, …),
//!   so existing dashboards and alerts recognise them.
//!
//! Rendering is pure; [`write`] does the I/O.

use std::fmt::Write as _;

use std::path::Path;

use super::checks::{Check, Status};
use super::render::Report;
use crate::error::Result;

/// One node's result for the file.
pub struct Node<'a> {
    pub target: &'a str,
    pub role: Option<&'a str>,
    pub report: std::result::Result<&'a Report, &'a str>,
}

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn status_value(s: Status) -> u8 {
    match s {
        Status::Ok => 0,
        Status::Warn => 1,
        Status::Fail => 2,
    }
}

/// Metric families in first-use order; the text format wants each family's samples together.
struct Out {
    families: Vec<(&'static str, String, Vec<String>)>,
}

impl Out {
    fn series(&mut self, name: &'static str, help: &str, labels: &[(&str, &str)], value: f64) {
        let l: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", esc(v)))
            .collect();
        let line = format!("{name}{{{}}} {value}", l.join(","));
        match self.families.iter_mut().find(|f| f.0 == name) {
            Some(f) => {
                // One series per label set: the first value wins (never a duplicate sample).
                let key = line
                    .rsplit_once(' ')
                    .map(|(k, _)| k.to_string())
                    .unwrap_or_default();
                if !f
                    .2
                    .iter()
                    .any(|x| x.rsplit_once(' ').map(|(k, _)| k) == Some(key.as_str()))
                {
                    f.2.push(line);
                }
            }
            None => self.families.push((name, help.to_string(), vec![line])),
        }
    }

    fn text(&self) -> String {
        let mut t = String::new();
        for (name, help, lines) in &self.families {
            let _ = writeln!(t, "# HELP {name} {help}");
            let _ = writeln!(t, "# TYPE {name} gauge");
            for l in lines {
                let _ = writeln!(t, "{l}");
            }
        }
        t
    }
}

/// The INFO fields redis_exporter exports under the same name (`redis_` + its name).
const EXPORTER_GAUGES: [(&str, &str); 8] = [
    ("aof_enabled", "redis_aof_enabled"),
    ("aof_rewrite_in_progress", "redis_aof_rewrite_in_progress"),
    ("aof_delayed_fsync", "redis_aof_delayed_fsync"),
    ("aof_pending_bio_fsync", "redis_aof_pending_bio_fsync"),
    (
        "rdb_changes_since_last_save",
        "redis_rdb_changes_since_last_save",
    ),
    ("rdb_bgsave_in_progress", "redis_rdb_bgsave_in_progress"),
    ("aof_current_size", "redis_aof_current_size_bytes"),
    ("loading", "redis_loading_dump_file"),
];
const EXPORTER_STATUSES: [(&str, &str); 3] = [
    ("aof_last_write_status", "redis_aof_last_write_status"),
    (
        "aof_last_bgrewrite_status",
        "redis_aof_last_bgrewrite_status",
    ),
    ("rdb_last_bgsave_status", "redis_rdb_last_bgsave_status"),
];

/// The whole file. `overall` is 0 ok, 1 warn, 2 fail, 3 unreachable.
pub fn render(
    set_target: &str,
    nodes: &[Node],
    set_checks: &[Check],
    overall: u8,
    now_secs: u64,
) -> String {
    let mut o = Out {
        families: Vec::new(),
    };
    const CHECK_HELP: &str = "verify-redis check result: 0 ok, 1 warn, 2 fail";
    for n in nodes {
        let role = n.role.unwrap_or("");
        o.series(
            "xtask_verify_redis_up",
            "1 when verify-redis got an answer from the node",
            &[("node", n.target), ("role", role)],
            if n.report.is_ok() { 1.0 } else { 0.0 },
        );
        let Ok(r) = n.report else { continue };
        for c in &r.checks {
            o.series(
                "xtask_verify_redis_check",
                CHECK_HELP,
                &[("node", n.target), ("role", role), ("check", c.id)],
                status_value(c.status) as f64,
            );
        }
    }
    // `node` checks repeat each node's verdict, already in the per-node series.
    for c in set_checks.iter().filter(|c| c.id != "node") {
        o.series(
            "xtask_verify_redis_check",
            CHECK_HELP,
            &[("node", set_target), ("role", "set"), ("check", c.id)],
            status_value(c.status) as f64,
        );
    }
    o.series(
        "xtask_verify_redis_status",
        "verify-redis verdict: 0 ok, 1 warn, 2 fail, 3 unreachable",
        &[("target", set_target)],
        overall as f64,
    );
    o.series(
        "xtask_verify_redis_last_run_timestamp_seconds",
        "when verify-redis last wrote this file",
        &[("target", set_target)],
        now_secs as f64,
    );
    // redis_exporter-compatible INFO gauges.
    for n in nodes {
        let Ok(r) = n.report else { continue };
        let Some(p) = &r.last_persistence else {
            continue;
        };
        let labels = [("node", n.target)];
        for (field, name) in EXPORTER_GAUGES {
            if let Some(v) = p.raw.get(field).and_then(|v| v.trim().parse::<f64>().ok()) {
                o.series(name, field, &labels, v);
            }
        }
        for (field, name) in EXPORTER_STATUSES {
            if let Some(v) = p.raw.get(field) {
                o.series(
                    name,
                    field,
                    &labels,
                    if v.trim() == "ok" { 1.0 } else { 0.0 },
                );
            }
        }
        if let Some(rep) = &r.replication {
            if rep.role == super::replication::Role::Primary {
                o.series(
                    "redis_connected_slaves",
                    "connected_slaves",
                    &labels,
                    rep.replicas.len() as f64,
                );
                for e in &rep.replicas {
                    let port = e.port.to_string();
                    let l = [
                        ("node", n.target),
                        ("slave_ip", e.ip.as_str()),
                        ("slave_port", port.as_str()),
                        ("slave_state", e.state.as_str()),
                    ];
                    o.series(
                        "redis_connected_slave_lag_seconds",
                        "Lag of connected slave",
                        &l,
                        e.lag as f64,
                    );
                    o.series(
                        "redis_connected_slave_offset_bytes",
                        "Offset of connected slave",
                        &l,
                        e.offset as f64,
                    );
                }
            } else {
                let host = rep.master_host.clone().unwrap_or_default();
                let port = rep.master_port.map(|p| p.to_string()).unwrap_or_default();
                let l = [
                    ("node", n.target),
                    ("master_host", host.as_str()),
                    ("master_port", port.as_str()),
                ];
                o.series(
                    "redis_master_link_up",
                    "Master link status on Redis slave",
                    &l,
                    if rep.link_up == Some(true) { 1.0 } else { 0.0 },
                );
                if let Some(s) = rep.last_io_secs {
                    o.series(
                        "redis_master_last_io_seconds_ago",
                        "Master last io seconds ago",
                        &l,
                        s as f64,
                    );
                }
                if let Some(s) = rep.sync_in_progress {
                    o.series(
                        "redis_master_sync_in_progress",
                        "Master sync in progress",
                        &l,
                        if s { 1.0 } else { 0.0 },
                    );
                }
            }
        }
    }
    o.text()
}

/// Write the file atomically (mode 0644 when new: node_exporter must read it).
pub fn write(path: &Path, text: &str) -> Result<()> {
    crate::compose::write_atomic(path, text, Some(0o644))
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_contiguous_and_series_unique() {
        let mut o = Out {
            families: Vec::new(),
        };
        o.series("a", "h", &[("node", "x")], 1.0);
        o.series("b", "h", &[("node", "x")], 1.0);
        o.series("a", "h", &[("node", "y\"q")], 2.0);
        o.series("a", "h", &[("node", "x")], 3.0);
        let t = o.text();
        assert_eq!(
            t,
            "# HELP a h\n# TYPE a gauge\na{node=\"x\"} 1\na{node=\"y\\\"q\"} 2\n# HELP b h\n# TYPE b gauge\nb{node=\"x\"} 1\n"
        );
    }
}
