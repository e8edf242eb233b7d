//! `INFO replication`: parsed (pure) and turned into checks (pure).
//!
//! On a primary: its replicas (state, offset lag in bytes, seconds since their last ACK) and
//! `min-replicas-to-write`. On a replica: the link to its primary (`master_link_status`,
//! `master_last_io_seconds_ago`, `master_sync_in_progress`). A replica's own persistence is checked
//! like any node's (it becomes the primary after a failover).

use serde::Serialize;

use super::checks::{check, Check, Config, Status};
use super::info;

/// Seconds since a replica's last ACK (`lag=`, sent every second) above which it is behind.
pub const LAG_WARN_SECS: i64 = 10;
/// Bytes of replication stream a replica may be behind before it warns.
pub const OFFSET_WARN_BYTES: i64 = 10 << 20;
/// `master_last_io_seconds_ago` above which the link is suspect (the primary pings every 10 s;
/// `repl-timeout` is 60 s by default).
pub const LAST_IO_WARN_SECS: i64 = 30;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Primary,
    Replica,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
        }
    }
}

/// One `slaveN:ip=…,port=…,state=…,offset=…,lag=…` line of a primary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaEntry {
    pub ip: String,
    pub port: u16,
    pub state: String,
    pub offset: i64,
    pub lag: i64,
}

/// What `INFO replication` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replication {
    pub role: Role,
    pub replicas: Vec<ReplicaEntry>,
    pub master_repl_offset: Option<i64>,
    /// `min_slaves_good_slaves` (present when `min-replicas-to-write` is set).
    pub good_replicas: Option<i64>,
    pub master_host: Option<String>,
    pub master_port: Option<u16>,
    pub link_up: Option<bool>,
    pub last_io_secs: Option<i64>,
    pub sync_in_progress: Option<bool>,
    pub link_down_since_secs: Option<i64>,
}

/// Parse the `# Replication` section of INFO text.
pub fn parse(text: &str) -> Result<Replication, String> {
    let parsed = info::parse(text).map_err(|e| format!("line {}: {}", e.line, e.message))?;
    let sec = parsed
        .sections
        .iter()
        .find(|s| s.name == "replication" || s.fields.contains_key("role"))
        .ok_or("no `# Replication` section")?;
    let int = |k: &str| sec.get(k).and_then(|v| v.trim().parse::<i64>().ok());
    let role = match sec.get("role").map(str::trim) {
        Some("master") => Role::Primary,
        Some("slave") => Role::Replica,
        other => return Err(format!("unexpected role {other:?}")),
    };
    let mut replicas = Vec::new();
    let mut names: Vec<(&String, &info::Field)> = sec
        .fields
        .iter()
        .filter(|(k, _)| {
            k.strip_prefix("slave")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    names.sort_by_key(|(k, _)| k[5..].parse::<u32>().unwrap_or(u32::MAX));
    for (k, f) in names {
        let kv: std::collections::BTreeMap<&str, &str> = f
            .value
            .trim()
            .split(',')
            .filter_map(|p| p.split_once('='))
            .collect();
        let port = kv
            .get("port")
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| format!("`{k}` has no port: {:?}", f.value))?;
        replicas.push(ReplicaEntry {
            ip: kv.get("ip").unwrap_or(&"").to_string(),
            port,
            state: kv.get("state").unwrap_or(&"").to_string(),
            offset: kv.get("offset").and_then(|v| v.parse().ok()).unwrap_or(0),
            lag: kv.get("lag").and_then(|v| v.parse().ok()).unwrap_or(-1),
        });
    }
    Ok(Replication {
        role,
        replicas,
        master_repl_offset: int("master_repl_offset"),
        good_replicas: int("min_slaves_good_slaves"),
        master_host: sec.get("master_host").map(|s| s.trim().to_string()),
        master_port: int("master_port").and_then(|p| u16::try_from(p).ok()),
        link_up: sec.get("master_link_status").map(|s| s.trim() == "up"),
        last_io_secs: int("master_last_io_seconds_ago"),
        sync_in_progress: int("master_sync_in_progress").map(|v| v == 1),
        link_down_since_secs: int("master_link_down_since_seconds"),
    })
}

/// The replication checks for one node, in a fixed order: primary → `replicas`, `min_replicas`;
/// replica → `replica_link`. A standalone primary (no replica, `min-replicas-to-write` 0) gets none:
/// its report stays what it always was.
pub fn checks(r: &Replication, config: &Config) -> Vec<Check> {
    let min = config
        .get("min-replicas-to-write")
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or(0);
    match r.role {
        Role::Primary if r.replicas.is_empty() && min == 0 => Vec::new(),
        Role::Primary => vec![replicas(r), min_replicas(r, config)],
        Role::Replica => vec![replica_link(r)],
    }
}

fn replicas(r: &Replication) -> Check {
    const ID: &str = "replicas";
    const T: &str = "Replicas in sync";
    if r.replicas.is_empty() {
        return check(
            ID,
            T,
            Status::Ok,
            "connected_slaves:0",
            "no replica is connected: this node is the only copy of the data",
            None,
        );
    }
    let primary_offset = r.master_repl_offset.unwrap_or(0);
    let mut bad = Vec::new();
    let mut status = Status::Ok;
    let mut max_lag = 0;
    let mut max_behind = 0;
    for e in &r.replicas {
        let behind = (primary_offset - e.offset).max(0);
        max_lag = max_lag.max(e.lag);
        max_behind = max_behind.max(behind);
        let who = format!("{}:{}", e.ip, e.port);
        if e.state != "online" {
            status = status.max(Status::Warn);
            bad.push(format!("{who} is {} (resynchronizing)", e.state));
        } else if e.lag > LAG_WARN_SECS {
            status = status.max(Status::Warn);
            bad.push(format!("{who} last acknowledged {}s ago", e.lag));
        } else if behind > OFFSET_WARN_BYTES {
            status = status.max(Status::Warn);
            bad.push(format!("{who} is {behind} bytes behind"));
        }
    }
    let online = r.replicas.iter().filter(|e| e.state == "online").count();
    let value = format!(
        "{online}/{} online, lag ≤ {max_lag}s, ≤ {max_behind} B behind",
        r.replicas.len()
    );
    if status == Status::Ok {
        check(
            ID,
            T,
            Status::Ok,
            value,
            "every replica is online and acknowledged within the last seconds",
            None,
        )
    } else {
        check(
            ID,
            T,
            status,
            value,
            format!(
                "{}: a failover now could lose what they have not received",
                bad.join("; ")
            ),
            Some("look at the replica's log and its link (INFO replication on the replica)"),
        )
    }
}

fn min_replicas(r: &Replication, config: &Config) -> Check {
    const ID: &str = "min_replicas";
    const T: &str = "min-replicas-to-write";
    let Some(n) = config.get("min-replicas-to-write") else {
        return check(
            ID,
            T,
            Status::Ok,
            "unknown",
            "CONFIG GET min-replicas-to-write was not answered; writes may or may not wait for replicas",
            None,
        );
    };
    let n: i64 = n.trim().parse().unwrap_or(0);
    let max_lag = config.get("min-replicas-max-lag").unwrap_or("10");
    let good = r.good_replicas.unwrap_or_else(|| {
        r.replicas
            .iter()
            .filter(|e| e.state == "online" && e.lag <= LAG_WARN_SECS)
            .count() as i64
    });
    let value = format!("min-replicas-to-write={n}, good replicas {good}");
    if n == 0 {
        return check(
            ID,
            T,
            Status::Ok,
            value,
            "writes do not wait for any replica (the default); replication is asynchronous",
            None,
        );
    }
    if good < n {
        return check(
            ID,
            T,
            Status::Fail,
            value,
            format!(
                "fewer than {n} replicas acknowledged within {max_lag}s: the primary refuses every write (NOREPLICAS)"
            ),
            Some("bring the replicas back, or lower min-replicas-to-write"),
        );
    }
    check(
        ID,
        T,
        Status::Ok,
        value,
        format!("a write is accepted only while {n} replica(s) are connected and current"),
        None,
    )
}

fn replica_link(r: &Replication) -> Check {
    const ID: &str = "replica_link";
    const T: &str = "Link to the primary";
    let primary = format!(
        "{}:{}",
        r.master_host.as_deref().unwrap_or("?"),
        r.master_port.map(|p| p.to_string()).unwrap_or("?".into())
    );
    let value = format!(
        "master_link_status:{}, last io {}{}",
        if r.link_up == Some(true) {
            "up"
        } else {
            "down"
        },
        match r.last_io_secs {
            Some(s) if s >= 0 => format!("{s}s ago"),
            _ => "never".to_string(),
        },
        if r.sync_in_progress == Some(true) {
            ", sync in progress"
        } else {
            ""
        }
    );
    if r.link_up != Some(true) {
        let since = r
            .link_down_since_secs
            .filter(|s| *s >= 0)
            .map(|s| format!(" for {s}s"))
            .unwrap_or_default();
        return check(
            ID,
            T,
            Status::Fail,
            value,
            format!(
                "the replication link to {primary} is down{since}: this replica stops receiving writes, and a failover to it loses them"
            ),
            Some("check that the primary is reachable from the replica (masterauth, network, repl-timeout in its log)"),
        );
    }
    if r.sync_in_progress == Some(true) {
        return check(
            ID,
            T,
            Status::Warn,
            value,
            format!("a full synchronization from {primary} is in progress: the replica's data is not current yet"),
            Some("wait for master_sync_in_progress:0, then run verify-redis again"),
        );
    }
    if r.last_io_secs.unwrap_or(0) > LAST_IO_WARN_SECS {
        return check(
            ID,
            T,
            Status::Warn,
            value,
            format!(
                "nothing heard from {primary} for {}s (it pings every 10s): the link may be stalling",
                r.last_io_secs.unwrap_or(0)
            ),
            Some("look at both nodes' logs and at the network between them"),
        );
    }
    check(
        ID,
        T,
        Status::Ok,
        value,
        format!("replicating from {primary}"),
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const PRIMARY: &str = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\nslave0:ip=127.0.0.1,port=6380,state=online,offset=1000,lag=0\r\nslave1:ip=127.0.0.1,port=6381,state=wait_bgsave,offset=0,lag=1\r\nmaster_repl_offset:1000\r\n";
    const REPLICA_DOWN: &str = "# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\nmaster_port:6379\r\nmaster_link_status:down\r\nmaster_last_io_seconds_ago:-1\r\nmaster_sync_in_progress:0\r\nmaster_link_down_since_seconds:7\r\n";

    fn cfg(kv: &[(&str, &str)]) -> Config {
        Config::Known(
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        )
    }

    #[test]
    fn a_primary_lists_its_replicas_and_a_resync_warns() {
        let r = parse(PRIMARY).unwrap();
        assert_eq!(r.role, Role::Primary);
        assert_eq!(r.replicas.len(), 2);
        assert_eq!(
            (r.replicas[1].port, r.replicas[1].state.as_str()),
            (6381, "wait_bgsave")
        );
        let c = checks(&r, &cfg(&[("min-replicas-to-write", "0")]));
        assert_eq!(c[0].status, Status::Warn, "{c:?}");
        assert!(c[0].message.contains("127.0.0.1:6381 is wait_bgsave"));
        assert_eq!(c[1].status, Status::Ok);
        let c = checks(&r, &cfg(&[("min-replicas-to-write", "2")]));
        assert_eq!(c[1].status, Status::Fail, "{c:?}");
    }

    #[test]
    fn a_replica_with_its_link_down_fails() {
        let r = parse(REPLICA_DOWN).unwrap();
        assert_eq!(r.role, Role::Replica);
        let c = checks(&r, &cfg(&[]));
        assert_eq!(c[0].id, "replica_link");
        assert_eq!(c[0].status, Status::Fail);
        assert!(
            c[0].message.contains("127.0.0.1:6379 is down for 7s"),
            "{}",
            c[0].message
        );
        let standalone = parse("# Replication\nrole:master\nconnected_slaves:0\n").unwrap();
        assert!(checks(&standalone, &cfg(&[("min-replicas-to-write", "0")])).is_empty());
        assert_eq!(
            checks(&standalone, &cfg(&[("min-replicas-to-write", "1")]))[1].status,
            Status::Fail
        );
        let up = REPLICA_DOWN
            .replace("link_status:down", "link_status:up")
            .replace("io_seconds_ago:-1", "io_seconds_ago:1");
        assert_eq!(
            checks(&parse(&up).unwrap(), &cfg(&[]))[0].status,
            Status::Ok
        );
    }
}
