//! verify-redis over a replicated Redis (issue 16): a real primary with two real replicas and three
//! real Sentinels on loopback, in temp dirs, on free ports.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Run;
use xtask::services::free_port;
use xtask::services::redis::{RedisConfig, RedisServer};

fn xtask(args: &[&str]) -> Run {
    xtask_env(args, &[])
}

fn cli(port: u16, args: &[&str]) -> String {
    let o = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn node(dir: &Path, args: &[&str]) -> RedisServer {
    let cfg = RedisConfig {
        args: args.iter().map(|s| s.to_string()).collect(),
        password: None,
        config_lines: vec![],
    };
    RedisServer::spawn(dir, free_port().unwrap(), &cfg).unwrap()
}

const AOF: [&str; 4] = ["--appendonly", "yes", "--appendfsync", "everysec"];

/// A primary and two replicas (the second with `replica_args` instead of AOF), replicas online.
fn replicated(dir: &Path, second: &[&str]) -> (RedisServer, RedisServer, RedisServer) {
    let p = node(&dir.join("p"), &AOF);
    let port = p.port.to_string();
    let mut a_args = AOF.to_vec();
    a_args.extend(["--replicaof", "127.0.0.1", &port]);
    let a = node(&dir.join("a"), &a_args);
    let mut b_args = second.to_vec();
    b_args.extend(["--replicaof", "127.0.0.1", &port]);
    let b = node(&dir.join("b"), &b_args);
    wait_until("two online replicas", Duration::from_secs(20), || {
        cli(p.port, &["INFO", "replication"])
            .matches("state=online")
            .count()
            == 2
    });
    // After the full sync a replica with AOF rewrites it (verify-redis rightly warns meanwhile).
    wait_until(
        "the replicas' post-sync AOF rewrites",
        Duration::from_secs(20),
        || {
            [&a, &b].iter().all(|s| {
                cli(s.port, &["INFO", "persistence"]).contains("aof_rewrite_in_progress:0")
            })
        },
    );
    (p, a, b)
}

fn url(s: &RedisServer) -> String {
    format!("redis://127.0.0.1:{}", s.port)
}

fn node_of<'a>(v: &'a serde_json::Value, target: &str) -> &'a serde_json::Value {
    v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["target"] == target)
        .unwrap_or_else(|| panic!("no node {target} in {v:#}"))
}

fn check_status(n: &serde_json::Value, id: &str) -> String {
    n["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {n:#}"))["status"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn primary_and_two_aof_replicas_are_ok_and_one_without_aof_fails_by_name() {
    let d = tempfile::tempdir().unwrap();
    let (p, a, b) = replicated(d.path(), &AOF);
    let r = xtask(&["--url", &url(&p), "--replicas", "discover", "--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let v = r.json();
    assert_eq!(v["schema"], "verify-redis/1");
    assert_eq!(v["nodes"].as_array().unwrap().len(), 3, "{v:#}");
    assert_eq!(node_of(&v, &url(&p))["role"], "primary");
    for s in [&a, &b] {
        let n = node_of(&v, &url(s));
        assert_eq!(
            (n["role"].as_str(), n["status"].as_str()),
            (Some("replica"), Some("ok")),
            "{n:#}"
        );
        assert_eq!(check_status(n, "replica_link"), "ok");
        assert_eq!(check_status(n, "aof_enabled"), "ok");
    }
    assert_eq!(check_status(node_of(&v, &url(&p)), "replicas"), "ok");
    // The human table names every node.
    let h = xtask(&["--url", &url(&p), "--replicas", "discover"]);
    assert_eq!(h.code, 0, "{}", h.all());
    for s in [&p, &a, &b] {
        assert!(h.stdout.contains(&url(s)), "{}", h.stdout);
    }
    drop((p, a, b));

    // The second replica runs without AOF: exit 1, and the verdict names that node.
    let d = tempfile::tempdir().unwrap();
    let (p, a, b) = replicated(d.path(), &["--appendonly", "no"]);
    let r = xtask(&["--url", &url(&p), "--replicas", "discover", "--json"]);
    assert_eq!(r.code, 1, "{}", r.all());
    let v = r.json();
    assert_eq!(v["status"], "fail");
    assert!(
        v["verdict"]
            .as_str()
            .unwrap()
            .contains(&format!("replica {}", url(&b))),
        "{}",
        v["verdict"]
    );
    assert!(
        !v["verdict"].as_str().unwrap().contains(&url(&a)),
        "{}",
        v["verdict"]
    );
    assert_eq!(check_status(node_of(&v, &url(&b)), "aof_enabled"), "fail");
    assert_eq!(node_of(&v, &url(&a))["status"], "ok");
    let h = xtask(&["--url", &url(&p), "--replicas", "discover"]);
    assert_eq!(h.code, 1);
    assert!(
        h.stdout.contains(&format!("replica {}", url(&b))),
        "{}",
        h.stdout
    );
}

#[test]
fn a_replica_whose_link_is_down_is_its_own_finding() {
    let d = tempfile::tempdir().unwrap();
    let (p, a, b) = replicated(d.path(), &AOF);
    // b now follows a primary that is gone.
    let gone = free_port().unwrap();
    cli(b.port, &["REPLICAOF", "127.0.0.1", &gone.to_string()]);
    wait_until("b's link down", Duration::from_secs(10), || {
        cli(b.port, &["INFO", "replication"]).contains("master_link_status:down")
    });
    let r = xtask(&[
        "--url",
        &url(&p),
        "--replica-url",
        &url(&a),
        "--replica-url",
        &url(&b),
        "--json",
    ]);
    assert_eq!(r.code, 1, "{}", r.all());
    let v = r.json();
    let nb = node_of(&v, &url(&b));
    assert_eq!(check_status(nb, "replica_link"), "fail", "{nb:#}");
    let link = nb["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "replica_link")
        .unwrap();
    assert!(
        link["message"]
            .as_str()
            .unwrap()
            .contains(&format!("127.0.0.1:{gone} is down")),
        "{link:#}"
    );
    assert_eq!(node_of(&v, &url(&a))["status"], "ok");
    // Its persistence is still fine: the link is the finding, not the AOF.
    assert_eq!(check_status(nb, "aof_enabled"), "ok");
}

#[test]
fn an_unreachable_replica_fails_the_set_and_the_whole_run_stays_bounded() {
    let d = tempfile::tempdir().unwrap();
    let p = node(&d.path().join("p"), &AOF);
    let dead = free_port().unwrap();
    let t = Instant::now();
    let r = xtask(&[
        "--url",
        &url(&p),
        "--replica-url",
        &format!("redis://127.0.0.1:{dead}"),
        "--timeout",
        "1",
        "--json",
    ]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(t.elapsed() < Duration::from_secs(4));
    let v = r.json();
    let n = node_of(&v, &format!("redis://127.0.0.1:{dead}"));
    assert_eq!(n["status"], "unreachable");
    assert!(n["error"].as_str().unwrap().contains("refused"), "{n:#}");
    // Every node unreachable: exit 3.
    drop(p);
    let r = xtask(&[
        "--url",
        &format!("redis://127.0.0.1:{dead}"),
        "--replica-url",
        &format!("redis://127.0.0.1:{dead}"),
        "--timeout",
        "1",
    ]);
    assert_eq!(r.code, 3, "{}", r.all());
}

// ---------------------------------------------------------------------------------------------
// Sentinel
// ---------------------------------------------------------------------------------------------

fn sentinel(dir: &Path, master: &str, primary: u16) -> RedisServer {
    let cfg = RedisConfig {
        args: vec!["--sentinel".into()],
        password: None,
        config_lines: vec![
            format!("sentinel monitor {master} 127.0.0.1 {primary} 2"),
            format!("sentinel down-after-milliseconds {master} 2000"),
            format!("sentinel failover-timeout {master} 10000"),
        ],
    };
    RedisServer::spawn(dir, free_port().unwrap(), &cfg).unwrap()
}

fn sentinel_primary(port: u16) -> String {
    cli(port, &["SENTINEL", "get-master-addr-by-name", "station"])
        .lines()
        .nth(1)
        .unwrap_or("")
        .to_string()
}

#[test]
fn three_sentinels_find_the_primary_follow_a_failover_and_a_wrong_master_name_is_a_finding() {
    let d = tempfile::tempdir().unwrap();
    let (p, a, b) = replicated(d.path(), &AOF);
    let sentinels: Vec<RedisServer> = (0..3)
        .map(|i| sentinel(&d.path().join(format!("s{i}")), "station", p.port))
        .collect();
    let list = sentinels
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port))
        .collect::<Vec<_>>()
        .join(",");
    wait_until(
        "Sentinels see each other and both replicas",
        Duration::from_secs(30),
        || {
            sentinels.iter().all(|s| {
                cli(s.port, &["SENTINEL", "ckquorum", "station"]).starts_with("OK")
                    && cli(s.port, &["SENTINEL", "replicas", "station"])
                        .matches("slave")
                        .count()
                        >= 2
            })
        },
    );

    let r = xtask(&["--sentinel", &list, "--master", "station", "--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let v = r.json();
    assert_eq!(v["transport"], "sentinel");
    assert_eq!(v["nodes"][0]["target"], url(&p));
    assert_eq!(v["nodes"][0]["expected_role"], "primary");
    assert_eq!(v["nodes"].as_array().unwrap().len(), 3, "{v:#}");
    for id in [
        "sentinels",
        "sentinel_master",
        "sentinels_agree",
        "sentinel_quorum",
        "roles",
    ] {
        let c = v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .unwrap();
        assert_eq!(c["status"], "ok", "{c:#}");
    }

    // Failover: the verifier follows the new primary.
    let before = p.port.to_string();
    let out = cli(sentinels[0].port, &["SENTINEL", "failover", "station"]);
    assert!(out.starts_with("OK"), "{out}");
    wait_until(
        "every Sentinel names the new primary",
        Duration::from_secs(30),
        || {
            sentinels.iter().all(|s| {
                let now = sentinel_primary(s.port);
                !now.is_empty() && now != before
            })
        },
    );
    let new_port: u16 = sentinel_primary(sentinels[0].port).parse().unwrap();
    assert!(new_port == a.port || new_port == b.port);
    let mut last = None;
    wait_until(
        "verify-redis follows the failover",
        Duration::from_secs(30),
        || {
            let r = xtask(&["--sentinel", &list, "--master", "station", "--json"]);
            let ok = r.code == 0
                && r.json()["nodes"][0]["target"] == format!("redis://127.0.0.1:{new_port}")
                && r.json()["nodes"].as_array().unwrap().len() == 3;
            last = Some(r.all());
            ok
        },
    );
    let r = xtask(&["--sentinel", &list, "--master", "station", "--json"]);
    let v = r.json();
    assert_eq!(node_of(&v, &url(&p))["role"], "replica", "{v:#}");
    let _ = last;

    // A fourth Sentinel that watches another master name: a finding (exit 1) naming it.
    let stray = sentinel(&d.path().join("stray"), "other", new_port);
    let with_stray = format!("{list},127.0.0.1:{}", stray.port);
    let r = xtask(&["--sentinel", &with_stray, "--master", "station", "--json"]);
    assert_eq!(r.code, 1, "{}", r.all());
    let v = r.json();
    let c = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "sentinel_master")
        .unwrap();
    assert_eq!(c["status"], "fail");
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .contains(&format!("sentinel 127.0.0.1:{}", stray.port)),
        "{c:#}"
    );
    // The nodes were still verified through the three good Sentinels.
    assert_eq!(
        v["nodes"][0]["target"],
        format!("redis://127.0.0.1:{new_port}")
    );

    // No Sentinel answers: exit 3.
    let dead = free_port().unwrap();
    let r = xtask(&[
        "--sentinel",
        &format!("127.0.0.1:{dead}"),
        "--master",
        "station",
        "--timeout",
        "1",
    ]);
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(r.stderr.contains("no Sentinel answered"), "{}", r.stderr);
}

// ---------------------------------------------------------------------------------------------
// --prometheus
// ---------------------------------------------------------------------------------------------

/// Each family's `# TYPE` once, its samples together, no label set twice.
fn assert_textfile_format(text: &str) {
    let mut families: Vec<&str> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut current = "";
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            let name = rest.split_whitespace().next().unwrap();
            assert!(!families.contains(&name), "{name} declared twice:\n{text}");
            families.push(name);
            current = name;
        } else if !l.starts_with('#') {
            let (series, value) = l.rsplit_once(' ').unwrap();
            assert!(
                series.starts_with(current),
                "{series} outside its family:\n{text}"
            );
            value.parse::<f64>().unwrap();
            assert!(seen.insert(series.to_string()), "{series} twice:\n{text}");
        }
    }
}

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn prometheus_textfile_follows_a_lapse_and_covers_every_node() {
    let d = tempfile::tempdir().unwrap();
    let (p, a, b) = replicated(d.path(), &AOF);
    let out_dir = d.path().join("textfile");
    std::fs::create_dir(&out_dir).unwrap();
    let prom = out_dir.join("verify_redis.prom");
    let f = prom.to_str().unwrap();

    let r = xtask(&["--url", &url(&p), "--prometheus", f]);
    assert_eq!(r.code, 0, "{}", r.all());
    let text = std::fs::read_to_string(&prom).unwrap();
    assert_textfile_format(&text);
    let node = format!("node=\"{}\"", url(&p));
    let check = |t: &str, id: &str| {
        sample(
            t,
            &format!("xtask_verify_redis_check{{{node},role=\"primary\",check=\"{id}\"}}"),
        )
    };
    assert_eq!(check(&text, "aof_enabled"), Some(0.0), "{text}");
    assert_eq!(
        sample(&text, &format!("redis_aof_enabled{{{node}}}")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, &format!("redis_aof_last_write_status{{{node}}}")),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, &format!("redis_connected_slaves{{{node}}}")),
        Some(2.0)
    );
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&prom).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o644);

    // Between deploys someone switches the AOF off: the next run says so in the file.
    cli(p.port, &["CONFIG", "SET", "appendonly", "no"]);
    let r = xtask(&["--url", &url(&p), "--prometheus", f]);
    assert_eq!(r.code, 1, "{}", r.all());
    let text = std::fs::read_to_string(&prom).unwrap();
    assert_eq!(check(&text, "aof_enabled"), Some(2.0), "{text}");
    assert_eq!(
        sample(&text, &format!("redis_aof_enabled{{{node}}}")),
        Some(0.0)
    );
    assert!(
        text.contains(&format!(
            "xtask_verify_redis_status{{target=\"{}\"}} 2",
            url(&p)
        )),
        "{text}"
    );
    cli(p.port, &["CONFIG", "SET", "appendonly", "yes"]);

    // The set: one series per node and check, replicas' link as redis_exporter names it.
    wait_until("AOF back on", Duration::from_secs(20), || {
        cli(p.port, &["INFO", "persistence"]).contains("aof_rewrite_in_progress:0")
    });
    let r = xtask(&[
        "--url",
        &url(&p),
        "--replicas",
        "discover",
        "--prometheus",
        f,
    ]);
    let text = std::fs::read_to_string(&prom).unwrap();
    assert_textfile_format(&text);
    for s in [&a, &b] {
        let n = format!("node=\"{}\"", url(s));
        assert_eq!(
            sample(
                &text,
                &format!("xtask_verify_redis_check{{{n},role=\"replica\",check=\"replica_link\"}}")
            ),
            Some(0.0),
            "{}\n{text}",
            r.all()
        );
        assert!(
            text.contains(&format!(
                "redis_master_link_up{{{n},master_host=\"127.0.0.1\",master_port=\"{}\"}} 1",
                p.port
            )),
            "{text}"
        );
    }
    // Unreachable: status 3, up 0, and still exit 3.
    let dead = format!("redis://127.0.0.1:{}", free_port().unwrap());
    let r = xtask(&["--url", &dead, "--prometheus", f, "--timeout", "1"]);
    assert_eq!(r.code, 3, "{}", r.all());
    let text = std::fs::read_to_string(&prom).unwrap();
    assert!(
        text.contains(&format!(
            "xtask_verify_redis_up{{node=\"{dead}\",role=\"\"}} 0"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("xtask_verify_redis_status{{target=\"{dead}\"}} 3")),
        "{text}"
    );
    // Only our file in the directory (the temp file was renamed into place).
    let names: Vec<_> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("verify_redis.prom")]);
}

// ---------------------------------------------------------------------------------------------
// An environment that declares its replicas
// ---------------------------------------------------------------------------------------------

/// A `local` environment whose Redis is `primary`, declaring `replication` (a TOML table body).
/// `root` stands for the repository; the state dir is `root/state`, a directory of its own inside it.
fn env_file(root: &Path, primary: u16, replication: &str) -> Vec<(String, String)> {
    let table = format!("\n[environments.local.redis_replication]\n{replication}\n");
    common::redis_local_env(root, primary, "", &table)
}

fn xtask_env(args: &[&str], env: &[(String, String)]) -> Run {
    Run::from(common::verify_redis_command(args, env).output().unwrap())
}

#[test]
fn an_environment_with_declared_replicas_verifies_every_node() {
    let d = tempfile::tempdir().unwrap();
    let (p, a, b) = replicated(d.path(), &["--appendonly", "no"]);
    let root = d.path().join("env");
    std::fs::create_dir(&root).unwrap();
    let env = env_file(
        &root,
        p.port,
        &format!(
            "replica_urls = [\"{}\", \"{}\"]\npassword_env = \"TEST_REPLICAS_PW\"",
            url(&a),
            url(&b)
        ),
    );
    let r = xtask_env(&["--env", "local", "--json"], &env);
    assert_eq!(r.code, 1, "{}", r.all());
    let v = r.json();
    assert_eq!(v["nodes"].as_array().unwrap().len(), 3, "{v:#}");
    assert_eq!(v["nodes"][0]["target"], format!("env:local ({})", url(&p)));
    assert_eq!(v["nodes"][0]["role"], "primary");
    assert_eq!(node_of(&v, &url(&a))["status"], "ok");
    assert_eq!(check_status(node_of(&v, &url(&b)), "aof_enabled"), "fail");
    assert!(
        v["verdict"]
            .as_str()
            .unwrap()
            .contains(&format!("replica {}", url(&b))),
        "{}",
        v["verdict"]
    );

    // A declaration that makes no sense: exit 2 at the environment, before anything is asked.
    let env = env_file(
        &root,
        p.port,
        "master = \"station\"\nreplica_urls = [\"redis://127.0.0.1:1\"]",
    );
    let r = xtask_env(&["--env", "local"], &env);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("environments.toml:1:1"), "{}", r.stderr);
    assert!(
        r.stderr.contains("`master` goes with `sentinels`"),
        "{}",
        r.stderr
    );
}

#[test]
fn sentinel_and_node_passwords_come_from_the_environment_and_are_never_printed() {
    let d = tempfile::tempdir().unwrap();
    let p = RedisServer::spawn(
        &d.path().join("p"),
        free_port().unwrap(),
        &RedisConfig {
            args: AOF.iter().map(|s| s.to_string()).collect(),
            password: Some("N0de-Secret-pw".into()),
            config_lines: vec![],
        },
    )
    .unwrap();
    let s = RedisServer::spawn(
        &d.path().join("s"),
        free_port().unwrap(),
        &RedisConfig {
            args: vec!["--sentinel".into()],
            password: Some("Sent1nel-Secret-pw".into()),
            config_lines: vec![
                format!("sentinel monitor station 127.0.0.1 {} 1", p.port),
                "sentinel auth-pass station N0de-Secret-pw".into(),
            ],
        },
    )
    .unwrap();
    let list = format!("127.0.0.1:{}", s.port);
    let run = |envs: &[(&str, &str)]| {
        let env: Vec<(String, String)> = envs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        xtask_env(
            &["--sentinel", &list, "--master", "station", "--json"],
            &env,
        )
    };
    let secrets = ["N0de-Secret-pw", "Sent1nel-Secret-pw", "Wr0ng-pw"];
    let ok = run(&[
        ("REDIS_SENTINEL_PASSWORD", "Sent1nel-Secret-pw"),
        ("REDISCLI_AUTH", "N0de-Secret-pw"),
    ]);
    assert_eq!(ok.code, 0, "{}", ok.all());
    assert_eq!(ok.json()["nodes"][0]["target"], url(&p));
    let wrong = run(&[
        ("REDIS_SENTINEL_PASSWORD", "Wr0ng-pw"),
        ("REDISCLI_AUTH", "N0de-Secret-pw"),
    ]);
    assert_eq!(wrong.code, 3, "{}", wrong.all());
    assert!(
        wrong.stderr.contains("set REDIS_SENTINEL_PASSWORD"),
        "{}",
        wrong.stderr
    );
    let node = run(&[
        ("REDIS_SENTINEL_PASSWORD", "Sent1nel-Secret-pw"),
        ("REDISCLI_AUTH", "Wr0ng-pw"),
    ]);
    assert_eq!(node.code, 3, "{}", node.all());
    assert!(node.stderr.contains("set REDISCLI_AUTH"), "{}", node.stderr);
    for r in [&ok, &wrong, &node] {
        for secret in secrets {
            assert!(!r.all().contains(secret), "{secret} leaked: {}", r.all());
        }
    }
}
