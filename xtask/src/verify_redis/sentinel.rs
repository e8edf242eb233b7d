//! `--sentinel HOST:PORT[,…] --master NAME`: ask every Sentinel (in parallel) for the current
//! primary (`SENTINEL get-master-addr-by-name`), its replicas (`SENTINEL replicas`) and the quorum
//! (`SENTINEL ckquorum`); then the set of nodes to verify is the primary they agree on and the
//! replicas they list.
//!
//! Sentinels that disagree on the primary are a failure showing every answer; a Sentinel that does
//! not monitor NAME, or says there is no quorum, is a failure; an unreachable Sentinel is a warning
//! (the others may still fail over), all of them unreachable is exit 3. The Sentinels' password
//! comes from `REDIS_SENTINEL_PASSWORD` (never argv).

use std::collections::BTreeMap;
use std::time::Duration;

use super::checks::{check, Check, Status};
use super::resp::{self, Addr, Conn, Endpoint, Reply, Tls};
use crate::error::{Error, Result};

/// What one Sentinel said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    /// `None`: it does not monitor a master of that name.
    pub primary: Option<(String, u16)>,
    /// The answer when it does not know the name (`nil`, `ERR No such master…`).
    pub unknown: Option<String>,
    /// `(ip, port, flags)`.
    pub replicas: Vec<(String, u16, String)>,
    /// `Ok(its message)` or `Err(NOQUORUM …)`.
    pub quorum: std::result::Result<String, String>,
}

/// One Sentinel's address and answer (or why there was none).
#[derive(Clone, Debug)]
pub struct Answer {
    pub sentinel: String,
    pub view: std::result::Result<View, String>,
}

/// `HOST:PORT,HOST:PORT` → addresses (IPv6 as `[::1]:26379`). Pure.
pub fn parse_list(s: &str) -> Result<Vec<(String, u16)>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (host, port) = part
            .rsplit_once(':')
            .ok_or_else(|| Error::usage(format!("--sentinel {part:?}: expected HOST:PORT")))?;
        let port: u16 = port
            .parse()
            .map_err(|_| Error::usage(format!("--sentinel {part:?}: the port is not a number")))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(Error::usage(format!("--sentinel {part:?}: no host")));
        }
        out.push((host.to_string(), port));
    }
    if out.is_empty() {
        return Err(Error::usage("--sentinel: give at least one HOST:PORT"));
    }
    if out.len() > super::set::MAX_NODES {
        return Err(Error::usage(format!(
            "--sentinel: at most {} Sentinels",
            super::set::MAX_NODES
        )));
    }
    Ok(out)
}

fn endpoint(host: &str, port: u16, tls: &Option<Tls>, password: &Option<String>) -> Endpoint {
    Endpoint {
        addr: Addr::Tcp {
            host: host.to_string(),
            port,
        },
        tls: tls.clone(),
        username: None,
        password: password.clone(),
        db: 0,
    }
}

fn ask_one(ep: &Endpoint, shown: &str, master: &str, timeout: Duration) -> Result<View> {
    let mut c = Conn::open(ep, shown, timeout)?;
    let (primary, unknown) = match c.query(&["SENTINEL", "get-master-addr-by-name", master], timeout)? {
        Reply::Ok(v) => match resp::strings(&v) {
            Some(a) if a.len() == 2 => {
                let port = a[1].parse().map_err(|_| {
                    Error::unavailable(format!("{shown}: get-master-addr-by-name answered a bad port {:?}", a[1]))
                })?;
                (Some((a[0].clone(), port)), None)
            }
            _ => (None, Some("nil".to_string())),
        },
        Reply::Err { code, message } if code == "ERR" && message.contains("master") => {
            (None, Some(format!("{code} {message}")))
        }
        Reply::Err { code, message } => {
            return Err(Error::unavailable(format!(
                "{shown}: SENTINEL get-master-addr-by-name failed: {code} {message} (is this a Sentinel?)"
            )))
        }
    };
    if primary.is_none() {
        return Ok(View {
            primary,
            unknown,
            replicas: Vec::new(),
            quorum: Err("unknown master".into()),
        });
    }
    let mut replicas = Vec::new();
    if let Reply::Ok(redis::Value::Array(items)) =
        c.query(&["SENTINEL", "replicas", master], timeout)?
    {
        for item in &items {
            let flat = resp::strings(item).unwrap_or_default();
            let kv: BTreeMap<&str, &str> = flat
                .chunks(2)
                .filter_map(|p| match p {
                    [k, v] => Some((k.as_str(), v.as_str())),
                    _ => None,
                })
                .collect();
            if let (Some(ip), Some(port)) =
                (kv.get("ip"), kv.get("port").and_then(|p| p.parse().ok()))
            {
                replicas.push((
                    ip.to_string(),
                    port,
                    kv.get("flags").unwrap_or(&"").to_string(),
                ));
            }
        }
    }
    replicas.sort();
    let quorum = match c.query(&["SENTINEL", "ckquorum", master], timeout)? {
        Reply::Ok(v) => Ok(resp::text(&v).unwrap_or_else(|| "OK".into())),
        Reply::Err { code, message } => Err(format!("{code} {message}")),
    };
    Ok(View {
        primary,
        unknown,
        replicas,
        quorum,
    })
}

/// Ask every Sentinel in parallel: each question within `timeout`, and the whole round too (a
/// Sentinel with no complete answer by then counts as unreachable).
pub fn ask(
    sentinels: &[(String, u16)],
    master: &str,
    tls: &Option<Tls>,
    password: &Option<String>,
    timeout: Duration,
) -> Vec<Answer> {
    let deadline = std::time::Instant::now() + timeout + Duration::from_millis(200);
    let (tx, rx) = std::sync::mpsc::channel();
    let shown: Vec<String> = sentinels
        .iter()
        .map(|(h, p)| {
            if h.contains(':') {
                format!("sentinel [{h}]:{p}")
            } else {
                format!("sentinel {h}:{p}")
            }
        })
        .collect();
    for (i, (h, p)) in sentinels.iter().enumerate() {
        let ep = endpoint(h, *p, tls, password);
        let master = master.to_string();
        let pw = password.clone();
        let name = shown[i].clone();
        let tx = tx.clone();
        std::thread::spawn(move || {
            let r = ask_one(&ep, &name, &master, timeout)
                .map_err(|e| super::transport::scrub(&e.to_string(), pw.as_deref()));
            let _ = tx.send((i, r));
        });
    }
    drop(tx);
    let mut got: Vec<Option<std::result::Result<View, String>>> = vec![None; sentinels.len()];
    while got.iter().any(Option::is_none) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok((i, r)) => got[i] = Some(r),
            Err(_) => break,
        }
    }
    shown
        .into_iter()
        .zip(got)
        .map(|(sentinel, r)| Answer {
            view: r.unwrap_or_else(|| {
                Err(format!(
                    "{sentinel}: no complete answer within {:.1}s",
                    timeout.as_secs_f64()
                ))
            }),
            sentinel,
        })
        .collect()
}

/// What the Sentinels agree on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agreed {
    pub primary: (String, u16),
    pub replicas: Vec<(String, u16)>,
}

fn addr(a: &(String, u16)) -> String {
    if a.0.contains(':') {
        format!("[{}]:{}", a.0, a.1)
    } else {
        format!("{}:{}", a.0, a.1)
    }
}

/// The Sentinels' checks and the set they describe (the primary most of them name; the replicas
/// those Sentinels list). Pure. Error (exit 3) when no Sentinel answered.
pub fn evaluate(master: &str, answers: &[Answer]) -> Result<(Vec<Check>, Option<Agreed>)> {
    let reached: Vec<(&str, &View)> = answers
        .iter()
        .filter_map(|a| a.view.as_ref().ok().map(|v| (a.sentinel.as_str(), v)))
        .collect();
    if reached.is_empty() {
        let why: Vec<&str> = answers
            .iter()
            .filter_map(|a| a.view.as_ref().err().map(String::as_str))
            .collect();
        return Err(Error::unavailable(format!(
            "no Sentinel answered: {}",
            why.join("; ")
        )));
    }
    let mut out = Vec::new();
    // Reachable.
    let unreachable: Vec<&str> = answers
        .iter()
        .filter_map(|a| a.view.as_ref().err().map(String::as_str))
        .collect();
    out.push(if unreachable.is_empty() {
        check(
            "sentinels",
            "Sentinels reachable",
            Status::Ok,
            format!("{}/{}", reached.len(), answers.len()),
            "every Sentinel answered",
            None,
        )
    } else {
        check(
            "sentinels",
            "Sentinels reachable",
            Status::Warn,
            format!("{}/{}", reached.len(), answers.len()),
            format!("no answer from: {}", unreachable.join("; ")),
            Some("a Sentinel that is down cannot vote in a failover: bring it back"),
        )
    });
    // Monitors NAME.
    let unknown: Vec<String> = reached
        .iter()
        .filter_map(|(s, v)| v.unknown.as_ref().map(|u| format!("{s} ({u})")))
        .collect();
    out.push(if unknown.is_empty() {
        check(
            "sentinel_master",
            "Sentinels monitor the master",
            Status::Ok,
            master.to_string(),
            format!("every answering Sentinel monitors {master:?}"),
            None,
        )
    } else {
        check(
            "sentinel_master",
            "Sentinels monitor the master",
            Status::Fail,
            master.to_string(),
            format!("no master named {master:?} on: {}", unknown.join("; ")),
            Some("check --master, and the `sentinel monitor` line of those Sentinels"),
        )
    });
    // Agree on the primary.
    let mut votes: BTreeMap<(String, u16), Vec<&str>> = BTreeMap::new();
    for (s, v) in &reached {
        if let Some(p) = &v.primary {
            votes.entry(p.clone()).or_default().push(s);
        }
    }
    let answers_text = votes
        .iter()
        .map(|(p, who)| format!("{} says {}", who.join(", "), addr(p)))
        .collect::<Vec<_>>()
        .join("; ");
    let chosen = votes
        .iter()
        .max_by_key(|(_, who)| who.len())
        .map(|(p, _)| p.clone());
    out.push(match votes.len() {
        0 => check(
            "sentinels_agree",
            "Sentinels agree on the primary",
            Status::Fail,
            "none",
            format!("no Sentinel names a primary for {master:?}"),
            Some("check --master and the Sentinels' configuration"),
        ),
        1 => check(
            "sentinels_agree",
            "Sentinels agree on the primary",
            Status::Ok,
            addr(chosen.as_ref().expect("one vote")),
            answers_text,
            None,
        ),
        _ => check(
            "sentinels_agree",
            "Sentinels agree on the primary",
            Status::Fail,
            format!("{} answers", votes.len()),
            format!("the Sentinels disagree: {answers_text}"),
            Some("a failover may be in progress, or Sentinels watch different sets: run again in a minute, then compare their configuration"),
        ),
    });
    // Quorum.
    let noquorum: Vec<String> = reached
        .iter()
        .filter(|(_, v)| v.primary.is_some())
        .filter_map(|(s, v)| v.quorum.as_ref().err().map(|e| format!("{s}: {e}")))
        .collect();
    let ok_text = reached
        .iter()
        .find_map(|(_, v)| v.quorum.as_ref().ok().cloned())
        .unwrap_or_default();
    out.push(if noquorum.is_empty() && votes.is_empty() {
        check(
            "sentinel_quorum",
            "Failover quorum",
            Status::Fail,
            "unknown",
            "no Sentinel could check the quorum",
            None,
        )
    } else if noquorum.is_empty() {
        check(
            "sentinel_quorum",
            "Failover quorum",
            Status::Ok,
            "ckquorum OK",
            ok_text,
            None,
        )
    } else {
        check(
            "sentinel_quorum",
            "Failover quorum",
            Status::Fail,
            "NOQUORUM",
            format!("a failover cannot be authorized: {}", noquorum.join("; ")),
            Some("bring Sentinels back until a majority is up (SENTINEL ckquorum)"),
        )
    });
    let agreed = chosen.map(|p| {
        let mut replicas: Vec<(String, u16)> = reached
            .iter()
            .filter(|(_, v)| v.primary.as_ref() == Some(&p))
            .flat_map(|(_, v)| v.replicas.iter().map(|(h, port, _)| (h.clone(), *port)))
            .filter(|r| *r != p)
            .collect();
        replicas.sort();
        replicas.dedup();
        Agreed {
            primary: p,
            replicas,
        }
    });
    Ok((out, agreed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(p: Option<(&str, u16)>, q: bool) -> View {
        View {
            primary: p.map(|(h, port)| (h.to_string(), port)),
            unknown: p.is_none().then(|| "nil".to_string()),
            replicas: vec![("127.0.0.1".into(), 7002, "slave".into())],
            quorum: if q {
                Ok("OK 3 usable Sentinels".into())
            } else {
                Err("NOQUORUM 1 usable".into())
            },
        }
    }

    #[test]
    fn disagreement_shows_both_answers_and_fails() {
        let a = vec![
            Answer {
                sentinel: "s1".into(),
                view: Ok(view(Some(("127.0.0.1", 7001)), true)),
            },
            Answer {
                sentinel: "s2".into(),
                view: Ok(view(Some(("127.0.0.1", 7001)), true)),
            },
            Answer {
                sentinel: "s3".into(),
                view: Ok(view(Some(("127.0.0.1", 7002)), true)),
            },
        ];
        let (c, agreed) = evaluate("m", &a).unwrap();
        let agree = c.iter().find(|c| c.id == "sentinels_agree").unwrap();
        assert_eq!(agree.status, Status::Fail);
        assert!(
            agree.message.contains("s1, s2 says 127.0.0.1:7001"),
            "{}",
            agree.message
        );
        assert!(
            agree.message.contains("s3 says 127.0.0.1:7002"),
            "{}",
            agree.message
        );
        assert_eq!(agreed.unwrap().primary, ("127.0.0.1".into(), 7001));
    }

    #[test]
    fn unknown_master_unreachable_sentinel_and_no_quorum() {
        let a = vec![
            Answer {
                sentinel: "s1".into(),
                view: Ok(view(Some(("h", 1)), false)),
            },
            Answer {
                sentinel: "s2".into(),
                view: Ok(view(None, false)),
            },
            Answer {
                sentinel: "s3".into(),
                view: Err("refused".into()),
            },
        ];
        let (c, _) = evaluate("m", &a).unwrap();
        let st = |id: &str| c.iter().find(|c| c.id == id).unwrap().status;
        assert_eq!(st("sentinels"), Status::Warn);
        assert_eq!(st("sentinel_master"), Status::Fail);
        assert_eq!(st("sentinel_quorum"), Status::Fail);
        assert!(evaluate(
            "m",
            &[Answer {
                sentinel: "s".into(),
                view: Err("x".into())
            }]
        )
        .is_err());
        assert_eq!(
            parse_list("127.0.0.1:1,[::1]:2").unwrap(),
            vec![("127.0.0.1".into(), 1), ("::1".into(), 2)]
        );
        assert!(parse_list("nohost").is_err());
    }
}
