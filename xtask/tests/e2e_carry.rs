//! Why the e2e's carry commands convert the data (no Docker needed: host redis-server, temp dirs):
//! Redis 7 started with `appendonly yes` on a directory holding only the old layout's `dump.rdb`
//! starts with an EMPTY dataset (it creates a fresh AOF and never reads the RDB). The conversion
//! script printed after `To carry the data:` (`compose::carry::AOF_CONVERT_SH`) must turn the RDB into an
//! AOF that Redis loads. Here the exact script runs with its two paths pointed at a temp dir.

use std::path::Path;
use std::time::{Duration, Instant};

use xtask::compose::carry::AOF_CONVERT_SH as CONVERT_SH;
use xtask::process::Cmd;
use xtask::services::free_port;

fn cli(port: u16, args: &[&str]) -> String {
    Cmd::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .timeout(Duration::from_secs(10))
        .read()
        .unwrap()
}

fn ping(port: u16) -> bool {
    Cmd::new("redis-cli")
        .args(["-p", &port.to_string(), "PING"])
        .timeout(Duration::from_secs(10))
        .output()
        .is_ok_and(|o| o.stdout_str().contains("PONG"))
}

/// Start redis-server daemonized on `dir`, run `f`, shut it down (SHUTDOWN saves/fsyncs).
fn with_redis(dir: &Path, extra: &[&str], f: impl FnOnce(u16)) {
    let port = free_port().unwrap();
    Cmd::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--daemonize",
            "yes",
        ])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(dir.join("log"))
        .args(extra)
        .timeout(Duration::from_secs(10))
        .run()
        .unwrap();
    // `--daemonize yes` returns before the server listens: poll (a refused PING is not an error).
    let start = Instant::now();
    while !ping(port) {
        assert!(start.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(20));
    }
    f(port);
    let _ = Cmd::new("redis-cli")
        .args(["-p", &port.to_string(), "SHUTDOWN"])
        .timeout(Duration::from_secs(10))
        .output();
}

fn old_layout_volume(dir: &Path) {
    with_redis(dir, &["--appendonly", "no"], |port| {
        for i in 0..100 {
            assert_eq!(cli(port, &["SET", &format!("k{i}"), "v"]).trim(), "OK");
        }
    });
    assert!(
        dir.join("dump.rdb").is_file(),
        "the old layout saves an RDB on shutdown"
    );
}

fn dbsize_with_aof(dir: &Path) -> String {
    let mut n = String::new();
    with_redis(dir, &["--appendonly", "yes"], |port| {
        n = cli(port, &["DBSIZE"]).trim().to_string();
    });
    n
}

#[test]
fn the_carry_conversion_keeps_the_keys_that_a_plain_copy_loses() {
    let plain = tempfile::tempdir().unwrap();
    old_layout_volume(plain.path());
    let naive = dbsize_with_aof(plain.path());

    let converted = tempfile::tempdir().unwrap();
    old_layout_volume(converted.path());
    let sock = converted.path().join("carry.sock");
    let script = CONVERT_SH
        .replace("/tmp/carry.sock", sock.to_str().unwrap())
        .replace(
            "/tmp/carry.log",
            converted.path().join("carry.log").to_str().unwrap(),
        )
        .replace("/data", converted.path().to_str().unwrap());
    let out = Cmd::new("sh")
        .args(["-c", &script])
        .timeout(Duration::from_secs(90))
        .read()
        .unwrap();
    assert!(out.contains("valid"), "redis-check-aof: {out}");
    assert!(converted
        .path()
        .join("appendonlydir/appendonly.aof.manifest")
        .is_file());
    assert_eq!(
        dbsize_with_aof(converted.path()),
        "100",
        "converted: every key loads"
    );
    // The trap itself (Redis 7.0 as installed here): a plain copy comes up empty. Reported, not
    // asserted, so a Redis that starts loading the RDB does not fail this test.
    eprintln!("plain copy + appendonly yes: DBSIZE {naive} (Redis 7.0.15 here: 0 — data lost)");
}
