//! `cargo xtask local up|down|status|env` against real PostgreSQL and redis-server.

mod deploy_support;

use deploy_support::{port_free, TestEnv};
use std::os::unix::fs::PermissionsExt;

#[test]
fn up_status_env_down_and_up_again_keep_ports_and_data() {
    let t = TestEnv::local(0o711);
    let r = t.run(&["local", "up"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let state = t.state();
    let (pg_port, redis_port) = (
        state["pg_port"].as_u64().unwrap() as u16,
        state["redis_port"].as_u64().unwrap() as u16,
    );
    let (pg_pw, redis_pw) = (
        state["pg_password"].as_str().unwrap().to_string(),
        state["redis_password"].as_str().unwrap().to_string(),
    );
    assert!(pg_pw.len() >= 32 && redis_pw.len() >= 32 && pg_pw != redis_pw);
    let mode = std::fs::metadata(t.state_dir.join("state.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // The cluster lives under the state dir (the postgres user can reach it).
    assert!(t.state_dir.join("postgres/data/PG_VERSION").exists());

    // The database is owned by db_user.
    assert_eq!(
        t.psql_ok("SELECT pg_get_userbyid(datdba) || '/' || current_database() FROM pg_database WHERE datname = current_database()"),
        "station/station"
    );

    // Redis: password not on argv, persistence arguments from docker-compose.prod.yml.
    let pid = std::fs::read_to_string(t.state_dir.join("redis/redis.pid")).unwrap();
    let cmdline = xtask::services::procscan::argv_of(pid.trim().parse().unwrap()).unwrap();
    assert!(!cmdline.contains(&redis_pw), "password on argv");
    for (k, want) in [("appendonly", "yes"), ("appendfsync", "everysec")] {
        let o = std::process::Command::new("redis-cli")
            .args(["-p", &redis_port.to_string(), "CONFIG", "GET", k])
            .env("REDISCLI_AUTH", &redis_pw)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).lines().nth(1),
            Some(want),
            "{k}"
        );
    }

    // status and env.
    let r = t.run(&["local", "status"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("PostgreSQL: running") && r.stdout.contains("Redis:      running"));
    let r = t.run(&["local", "env"]);
    assert_eq!(r.code, 0);
    assert!(
        r.stdout.contains(&format!("export PGPORT={pg_port}\n")),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains(&format!(
        "export REDIS_URL=redis://127.0.0.1:{redis_port}\n"
    )));
    assert!(r.stdout.contains("export RCLONE_CONFIG_B2_TYPE=alias"));
    assert!(r.stdout.contains("--secrets"));
    assert!(!r.all().contains(&pg_pw) && !r.all().contains(&redis_pw));
    let r = t.run(&["local", "env", "--secrets"]);
    assert!(r.stdout.contains(&format!("export PGPASSWORD={pg_pw}\n")));
    assert!(r
        .stdout
        .contains(&format!("export REDISCLI_AUTH={redis_pw}\n")));
    // The exports work: psql through a shell that evals them.
    let o = std::process::Command::new("bash")
        .args([
            "-c",
            "eval \"$1\" && psql -X -A -t -c 'SELECT 6 * 7'",
            "x",
            &r.stdout,
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "42");

    // Idempotent: same ports, same passwords.
    t.psql_ok("CREATE TABLE kept (v int); INSERT INTO kept VALUES (7)");
    let r = t.run(&["local", "up"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(t.state(), state);

    // down stops both, keeps data; status says so (exit 1).
    let r = t.run(&["local", "down"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(port_free(pg_port) && port_free(redis_port));
    let r = t.run(&["local", "status"]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("PostgreSQL: stopped"));

    // up after down reuses the free ports and finds the data.
    let r = t.run(&["local", "up"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(t.state(), state);
    assert_eq!(t.psql_ok("SELECT v FROM kept"), "7");

    // --purge deletes everything.
    let r = t.run(&["local", "down", "--purge"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(!t.state_dir.exists());
}

#[test]
fn a_busy_recorded_port_is_replaced() {
    let t = TestEnv::local(0o711);
    assert_eq!(t.run(&["local", "up"]).code, 0);
    let old = t.state()["redis_port"].as_u64().unwrap() as u16;
    assert_eq!(t.run(&["local", "down"]).code, 0);
    let _squatter = std::net::TcpListener::bind(("127.0.0.1", old)).unwrap();
    let r = t.run(&["local", "up"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_ne!(t.state()["redis_port"].as_u64().unwrap() as u16, old);
}

#[test]
fn unreachable_directory_falls_back_to_a_path_postgres_can_reach() {
    if !xtask::services::is_root() {
        // Not root: the cluster runs as us and can always reach the directory; nothing to fall back from.
        let t = TestEnv::local(0o700);
        assert_eq!(t.run(&["local", "up"]).code, 0);
        return;
    }
    let t = TestEnv::local(0o700);
    let r = t.run(&["local", "up"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let recorded = std::fs::read_to_string(t.state_dir.join("postgres.location")).unwrap();
    assert!(recorded.starts_with("/var/tmp/xtask-local-"), "{recorded}");
    assert!(std::path::Path::new(recorded.trim())
        .join("data/PG_VERSION")
        .exists());
    assert!(r.stderr.contains("cannot reach"), "{}", r.stderr);
    assert_eq!(t.psql_ok("SELECT 1"), "1");
    let r = t.run(&["local", "down", "--purge"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(!std::path::Path::new(recorded.trim()).exists());
}

#[test]
fn a_missing_tool_is_exit_3_with_the_package() {
    let t = TestEnv::local(0o711);
    let out = t
        .command(&["local", "up"])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("apt-get install postgresql-client"), "{err}");
    assert!(
        !t.state_dir.exists(),
        "nothing is created when a tool is missing"
    );
}

#[test]
fn a_non_local_environment_is_refused() {
    let t = TestEnv::local(0o711);
    let out = t
        .command(&["local", "up", "--env", "production"])
        .env_remove("XTASK_ENVIRONMENTS")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
