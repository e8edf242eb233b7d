//! `verify-redis --env` with transport `docker`, on the real Docker engine: a `FROM scratch` image
//! made of this machine's redis binaries (+ their libraries) and a static busybox as `sh`, run with
//! the production compose command (password written to a 0600 file by the container's shell). The
//! password never appears in any process's argv while we verify.
//!
//! Needs a Docker engine (`docker info`); without one the test says so loudly and does nothing
//! else, like the e2e tests.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::services_and_backup;
use xtask::environments::Environments;
use xtask::process::Cmd;
use xtask::services::procscan::ArgvWatch;
use xtask::services::sshd::{Sshd, SshdOptions};
use xtask::verify_redis::render::Report;
use xtask::verify_redis::{collect, verify_environment, Options, Source};
use xtask::ExitCode;

const IMAGE: &str = "station-verify-redis/redis:test";
const PASSWORD: &str = "D0cker-Verify-pw";

/// Copy `file` (following links) to the same path under `root`.
fn copy_in(root: &Path, file: &Path, as_path: &Path) {
    let dest = root.join(as_path.strip_prefix("/").unwrap());
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::copy(file, &dest).unwrap_or_else(|e| panic!("copy {}: {e}", file.display()));
}

fn build_image(ctx: &Path) {
    let rootfs = ctx.join("rootfs");
    let mut libs = std::collections::BTreeSet::new();
    for tool in ["redis-server", "redis-cli", "redis-check-aof"] {
        let path = xtask::process::which(tool).unwrap();
        copy_in(&rootfs, &path, &Path::new("/usr/bin").join(tool));
        let ldd = Cmd::new("ldd").arg(&path).read().unwrap();
        for l in ldd.lines() {
            let p = match l.split_once("=>") {
                Some((_, r)) => r.split_whitespace().next(),
                None => l.split_whitespace().next(),
            };
            if let Some(p) = p.filter(|p| p.starts_with('/')) {
                libs.insert(PathBuf::from(p));
            }
        }
    }
    for lib in libs {
        copy_in(&rootfs, &lib, &lib);
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .expect("busybox (static) is installed");
    copy_in(&rootfs, busybox, Path::new("/bin/sh"));
    std::fs::create_dir_all(rootfs.join("tmp")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(rootfs.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY rootfs/ /\nENV PATH=/usr/bin:/bin\nWORKDIR /data\n",
    )
    .unwrap();
    Cmd::new("docker")
        .args(["build", "-q", "-t", IMAGE])
        .arg(ctx)
        .timeout(Duration::from_secs(300))
        .read()
        .unwrap();
}

const COMPOSE: &str = r#"services:
  redis:
    image: station-verify-redis/redis:test
    command:
      - sh
      - -c
      - umask 077 && printf 'requirepass "%s"\n' "$$REDIS_PASSWORD" > /tmp/redis.conf && exec redis-server /tmp/redis.conf --appendonly yes --appendfsync everysec
    environment:
      REDIS_PASSWORD: ${REDIS_PASSWORD:?set REDIS_PASSWORD}
    volumes:
      - data:/data
volumes:
  data:
"#;

/// `docker compose down -v` on drop.
struct Project {
    env: xtask::environments::Environment,
}

impl Drop for Project {
    fn drop(&mut self) {
        if let Ok(c) = xtask::docker::compose(&self.env) {
            let _ = c
                .args(["down", "-v", "--timeout", "1"])
                .timeout(Duration::from_secs(60))
                .output();
        }
    }
}

/// Every check of the report says ok.
fn assert_all_ok(report: &Report) {
    let statuses: Vec<(&str, &str)> = report
        .checks
        .iter()
        .map(|c| (c.id, c.status.as_str()))
        .collect();
    assert!(statuses.iter().all(|(_, s)| *s == "ok"), "{statuses:?}");
}

#[test]
fn docker_transport_runs_the_script_in_the_container_without_the_password_on_any_argv() {
    if !xtask::docker::engine_available() {
        eprintln!("\n*** verify_redis_docker: did NOT run: no Docker engine answers (`docker info`). ***\n");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    build_image(&dir.path().join("ctx"));
    std::fs::write(dir.path().join("compose.yml"), COMPOSE).unwrap();
    std::fs::write(
        dir.path().join("redis.env"),
        format!("REDIS_PASSWORD={PASSWORD}\n"),
    )
    .unwrap();
    let project = format!("verify-redis-test-{}", std::process::id());
    let toml = format!(
        r#"[environments.dock]
transport = "docker"
description = "verify-redis docker test"
compose_file = "compose.yml"
compose_project = "{project}"
env_file = "redis.env"
database = "station"
db_user = "station"
migration_command = "true"
{dock_tables}
[environments.remote]
transport = "ssh"
description = "the same project, reached over SSH (sshd on loopback)"
compose_file = "compose.yml"
compose_project = "{project}"
env_file = "redis.env"
remote_dir = "{remote_dir}"
database = "station"
db_user = "station"
migration_command = "true"
{remote_tables}
[environments.remote.ssh]
host_env = "VERIFY_REDIS_TEST_SSH_HOST"
user = "root"
port_env = "VERIFY_REDIS_TEST_SSH_PORT"
known_hosts_env = "VERIFY_REDIS_TEST_SSH_KNOWN_HOSTS"
key_env = "VERIFY_REDIS_TEST_SSH_KEY"
"#,
        remote_dir = dir.path().display(),
        dock_tables = services_and_backup("dock", "b", "p"),
        remote_tables = services_and_backup("remote", "b", "p"),
    );
    let envs_file = dir.path().join("environments.toml");
    std::fs::write(&envs_file, &toml).unwrap();
    let envs = Environments::parse(&toml, &envs_file, dir.path()).unwrap();
    let env = envs.get("dock").unwrap().clone();
    let guard = Project { env: env.clone() };
    xtask::docker::compose(&env)
        .unwrap()
        .args(["up", "-d"])
        .timeout(Duration::from_secs(120))
        .read()
        .unwrap();

    let watcher = ArgvWatch::start(&[PASSWORD.to_string()]);

    // Up and answering (redis-server needs a moment after the container starts).
    let opts = Options::new(Duration::from_secs(10));
    let t = Instant::now();
    let report = loop {
        match collect(Source::for_environment(&env).unwrap(), &opts) {
            Ok(r) => break r,
            Err(e) if t.elapsed() < Duration::from_secs(30) => {
                eprintln!("not yet: {e}");
                std::thread::sleep(Duration::from_millis(300));
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(report.transport, "docker");
    assert_eq!(
        report.target,
        "env:dock (docker compose exec redis)".to_string()
    );
    assert_all_ok(&report);
    let files = report.checks.iter().find(|c| c.id == "aof_files").unwrap();
    assert!(
        files
            .value
            .starts_with("/data/appendonlydir/appendonly.aof.manifest"),
        "{files:?}"
    );
    assert_eq!(
        verify_environment(&env, Duration::from_secs(10)).unwrap(),
        ExitCode::Ok
    );

    // The built binary, with the standalone `docker-compose` forced: same answer, in JSON.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["verify-redis", "--env", "dock", "--json"])
        .env("XTASK_ENVIRONMENTS", &envs_file)
        .env("XTASK_ROOT", dir.path())
        .env("XTASK_COMPOSE", "standalone")
        .env_remove("GITHUB_ACTIONS")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (v["status"].as_str(), v["transport"].as_str()),
        (Some("ok"), Some("docker"))
    );
    assert!(!stdout.contains(PASSWORD));

    // The same container over SSH (a real sshd; the remote side runs `docker compose` in remote_dir).
    let sshd = Sshd::start(SshdOptions::default()).unwrap();
    std::env::set_var("VERIFY_REDIS_TEST_SSH_HOST", "127.0.0.1");
    std::env::set_var("VERIFY_REDIS_TEST_SSH_PORT", sshd.port.to_string());
    std::env::set_var("VERIFY_REDIS_TEST_SSH_KNOWN_HOSTS", sshd.known_hosts());
    std::env::set_var("VERIFY_REDIS_TEST_SSH_KEY", sshd.user_key());
    let remote = envs.get("remote").unwrap();
    let report = collect(Source::for_environment(remote).unwrap(), &opts).unwrap();
    assert_eq!(report.transport, "ssh");
    assert!(
        report.target.contains("ssh root@127.0.0.1"),
        "{}",
        report.target
    );
    assert_all_ok(&report);
    assert_eq!(
        verify_environment(remote, Duration::from_secs(10)).unwrap(),
        ExitCode::Ok
    );
    drop(sshd);

    // Weaken it from inside: verify_environment now fails (exit 1).
    xtask::docker::compose(&env)
        .unwrap()
        .args([
            "exec",
            "-T",
            "redis",
            "sh",
            "-c",
            "REDISCLI_AUTH=$REDIS_PASSWORD exec redis-cli --no-auth-warning CONFIG SET appendfsync no",
        ])
        .timeout(Duration::from_secs(30))
        .read()
        .unwrap();
    assert_eq!(
        verify_environment(&env, Duration::from_secs(10)).unwrap(),
        ExitCode::Failed
    );

    // Stopped: no answer (exit 3), quickly.
    xtask::docker::compose(&env)
        .unwrap()
        .args(["stop", "--timeout", "1", "redis"])
        .timeout(Duration::from_secs(60))
        .read()
        .unwrap();
    let e = verify_environment(&env, Duration::from_secs(10)).unwrap_err();
    assert_eq!(e.exit_code(), ExitCode::Unavailable, "{e}");
    assert!(!e.to_string().contains(PASSWORD));

    let leaks = watcher.stop();
    assert!(leaks.is_empty(), "password on a command line: {leaks:?}");
    drop(guard);
}
