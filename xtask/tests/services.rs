//! The real-server helpers every other integration test stands on.

use xtask::services::postgres::{temp_base, Cluster};
use xtask::services::redis::{RedisConfig, RedisServer};
use xtask::services::{free_port, wait_for_port};

#[test]
fn postgres_cluster_initializes_starts_answers_and_stops() {
    let base = temp_base().unwrap();
    let port = free_port().unwrap();
    let c = Cluster::at(&base.path().join("pg"), port, "station").unwrap();
    c.init("s3cret-pw").unwrap();
    c.start().unwrap();
    assert!(c.is_running());
    c.psql("postgres", "s3cret-pw", "CREATE DATABASE station")
        .unwrap();
    let v = c.psql("station", "s3cret-pw", "SELECT 40 + 2").unwrap();
    assert_eq!(v.trim(), "42");
    // scram on TCP: a wrong password is refused.
    assert!(c.psql("station", "wrong", "SELECT 1").is_err());
    c.stop().unwrap();
    assert!(!c.is_running());
}

#[test]
fn redis_server_runs_with_a_password_from_a_private_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let cfg = RedisConfig {
        args: vec!["--appendonly".into(), "yes".into()],
        password: Some("pa ss".into()),
        config_lines: vec![],
    };
    let mut s = RedisServer::spawn(dir.path(), port, &cfg).unwrap();
    wait_for_port(port, std::time::Duration::from_secs(5)).unwrap();
    let pid = s.pid().unwrap();
    let cmdline = xtask::services::procscan::argv_of(pid).unwrap();
    assert!(!cmdline.contains("pa ss"), "password on argv: {cmdline}");
    let out = std::process::Command::new("redis-cli")
        .args([
            "-p",
            &port.to_string(),
            "--no-auth-warning",
            "CONFIG",
            "GET",
            "appendonly",
        ])
        .env("REDISCLI_AUTH", "pa ss")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().nth(1),
        Some("yes")
    );
    s.kill();
    assert!(!RedisServer::is_up(port));
}
