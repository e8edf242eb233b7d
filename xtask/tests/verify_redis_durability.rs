//! The durability proof: redis-server with exactly the persistence arguments of
//! `docker-compose.prod.yml` (read by the compose engine; only port and dir are ours), a client
//! counting every acknowledged write, SIGKILL, a restart on the same directory, and a count of what
//! survived. With our AOF settings no acknowledged write may be lost; with Redis's defaults (RDB
//! snapshots only) we report how many were.
//!
//! `XTASK_RECORD_DURABILITY=1` writes the figures to `infra/docs/durability.json` (quoted by the
//! generated docs).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use xtask::services::free_port;
use xtask::services::redis::{RedisConfig, RedisServer};

const WRITE_SECONDS: u64 = 3;

struct Outcome {
    acknowledged: u64,
    lost: u64,
    version: String,
}

fn connect(port: u16) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap()
}

/// Write, crash, restart, count.
fn crash_and_count(args: &[String]) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let cfg = RedisConfig {
        args: args.to_vec(),
        password: None,
        config_lines: vec![],
    };
    let mut server = RedisServer::spawn(dir.path(), free_port().unwrap(), &cfg).unwrap();
    let port = server.port;

    // One client, one write at a time: a write counts once its reply has arrived.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut c = connect(port);
            let mut acknowledged = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let r: redis::RedisResult<()> = redis::cmd("SET")
                    .arg(format!("k:{acknowledged}"))
                    .arg(acknowledged)
                    .query(&mut c);
                if r.is_err() {
                    break;
                }
                acknowledged += 1;
            }
            acknowledged
        })
    };
    std::thread::sleep(Duration::from_secs(WRITE_SECONDS));
    server.kill(); // SIGKILL while the writer is mid-stream
    stop.store(true, Ordering::Relaxed);
    let acknowledged = writer.join().unwrap();
    assert!(
        acknowledged > 1000,
        "only {acknowledged} writes in {WRITE_SECONDS}s"
    );

    let server = RedisServer::spawn(dir.path(), free_port().unwrap(), &cfg).unwrap();
    let mut c = connect(server.port);
    // Wait for the load to finish (PING answers LOADING until then).
    let t = Instant::now();
    while redis::cmd("PING").query::<String>(&mut c).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "restart did not finish loading"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut present = 0u64;
    let mut i = 0u64;
    while i < acknowledged {
        let end = (i + 1000).min(acknowledged);
        let mut mget = redis::cmd("MGET");
        for k in i..end {
            mget.arg(format!("k:{k}"));
        }
        let vals: Vec<Option<u64>> = mget.query(&mut c).unwrap();
        for (k, v) in (i..end).zip(vals) {
            if let Some(v) = v {
                assert_eq!(v, k, "k:{k} holds the wrong value");
                present += 1;
            }
        }
        i = end;
    }
    let info: String = redis::cmd("INFO").arg("server").query(&mut c).unwrap();
    let version = info
        .lines()
        .find_map(|l| l.trim_end().strip_prefix("redis_version:"))
        .unwrap_or("")
        .to_string();
    Outcome {
        acknowledged,
        lost: acknowledged - present,
        version,
    }
}

#[test]
fn acknowledged_writes_survive_sigkill_with_the_compose_aof_settings() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let compose = root.join("docker-compose.prod.yml");
    let args = xtask::compose::redis_server_args(&compose, "redis")
        .unwrap_or_else(|e| panic!("redis args from {}: {e}", compose.display()));
    assert!(
        args.windows(2).any(|w| w == ["--appendonly", "yes"]),
        "the production redis command lost --appendonly yes: {args:?}"
    );

    let aof = crash_and_count(&args);
    let rdb = crash_and_count(&[]);
    println!(
        "durability ({} s of writes, then SIGKILL; redis {}):\n  production args {args:?}: {} acknowledged, {} lost\n  Redis defaults (RDB snapshots only): {} acknowledged, {} lost",
        WRITE_SECONDS, aof.version, aof.acknowledged, aof.lost, rdb.acknowledged, rdb.lost
    );
    assert_eq!(
        aof.lost, 0,
        "with {args:?}, {} of {} acknowledged writes were lost after SIGKILL",
        aof.lost, aof.acknowledged
    );

    if std::env::var("XTASK_RECORD_DURABILITY").as_deref() == Ok("1") {
        let doc = serde_json::json!({
            "aof": {"acknowledged": aof.acknowledged, "lost": aof.lost},
            "rdb_only": {"acknowledged": rdb.acknowledged, "lost": rdb.lost},
            "redis_version": aof.version,
            "write_seconds": WRITE_SECONDS,
        });
        let dir = root.join("infra/docs");
        std::fs::create_dir_all(&dir).unwrap();
        let tmp = dir.join(".durability.json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(&doc).unwrap() + "\n").unwrap();
        std::fs::rename(&tmp, dir.join("durability.json")).unwrap();
        println!("recorded {}", dir.join("durability.json").display());
    }
}
