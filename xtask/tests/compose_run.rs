//! What `compose apply` writes really runs: the command and health check Compose resolves from an
//! applied corpus file (`docker compose config --format json`) are started as the container would
//! start them (its environment only, a private /tmp and network namespace: `unshare`), with this
//! machine's redis-server. The server requires the password, runs with AOF `everysec`, the health
//! check passes through `REDISCLI_AUTH`, and (for the config-file form) no argv ever holds the
//! password, checked by scanning every process's command line the whole time. Needs root (namespaces),
//! like the PostgreSQL tests; `unshare`/`nsenter` come from util-linux, `ip` from busybox-static.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use xtask::docker::ComposeCli;
use xtask::services::procscan::ArgvWatch;

/// A password per case: tests run in parallel and the watch scans every process.
fn password(case: &str, which: &str) -> String {
    format!("corpus-run-{case}-{}-4711", which.trim_end_matches(".yml"))
}

fn corpus(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/compose/corpus")
        .join(name)
}

/// The redis service as Compose resolves it from `after.yml`.
fn resolved(dir: &Path, case: &str, which: &str, service: &str) -> Value {
    let pw = password(case, which);
    std::fs::copy(corpus(case).join(which), dir.join("docker-compose.yml")).unwrap();
    std::fs::write(dir.join("vars.env"), format!("REDIS_PASSWORD={pw}\n")).unwrap();
    let out = ComposeCli::detect()
        .expect("the Compose CLI: infra/scripts/install-deps.sh installs it")
        .base()
        .args([
            "-p",
            "run",
            "--env-file",
            "vars.env",
            "-f",
            "docker-compose.yml",
        ])
        .args(["--profile", "*", "config", "--format", "json"])
        .dir(dir)
        .env_remove("COMPOSE_PROJECT_NAME")
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert!(out.status.success(), "{case}: {}", out.stderr_str());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["services"][service].clone()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn env_of(svc: &Value) -> BTreeMap<String, String> {
    svc["environment"]
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Compose's output escapes `$` as `$$`; the container gets single `$`.
fn unescape(s: &str) -> String {
    s.replace("$$", "$")
}

/// A command run with the container's environment only.
fn container_cmd(argv: &[String], env: &BTreeMap<String, String>) -> Command {
    let mut c = Command::new(&argv[0]);
    c.args(&argv[1..])
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
        .envs(env);
    c
}

/// The server in its own mount (private tmpfs /tmp), network (loopback only) and PID namespaces.
/// The PID namespace's first process dies with `unshare` (`--kill-child`), and every process in the
/// namespace with it: a server that the command's shell did not `exec` is not left behind.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &Path, command: &[String], env: &BTreeMap<String, String>) -> Server {
    let mut argv: Vec<String> = [
        "unshare",
        "--mount",
        "--net",
        "--pid",
        "--fork",
        "--kill-child",
        "sh",
        "-c",
        "cd \"$0\" && mount -t tmpfs tmpfs /tmp && busybox ip link set lo up && exec \"$@\"",
    ]
    .map(String::from)
    .to_vec();
    argv.push(dir.display().to_string());
    argv.extend(command.iter().map(|w| unescape(w)));
    let mut c = container_cmd(&argv, env);
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Server(c.spawn().expect("unshare (util-linux)"))
}

/// Run `argv` inside the server's namespaces.
fn inside(pid: u32, argv: &[String], env: &BTreeMap<String, String>) -> std::process::Output {
    let mut all: Vec<String> = ["nsenter", "-t", &pid.to_string(), "--net", "--mount", "--"]
        .map(String::from)
        .to_vec();
    all.extend(argv.iter().cloned());
    container_cmd(&all, env).output().unwrap()
}

/// The health check's command (`CMD-SHELL` runs in `sh -c`).
fn healthcheck_argv(svc: &Value) -> Vec<String> {
    if svc["healthcheck"]["test"].is_null() {
        // No health check: the same probe, authenticated the safe way.
        return [
            "sh",
            "-c",
            "REDISCLI_AUTH=\"$REDIS_PASSWORD\" redis-cli --no-auth-warning ping",
        ]
        .map(String::from)
        .to_vec();
    }
    let test = strings(&svc["healthcheck"]["test"]);
    match test[0].as_str() {
        "CMD-SHELL" => vec!["sh".into(), "-c".into(), unescape(&test[1])],
        "CMD" => test[1..].iter().map(|w| unescape(w)).collect(),
        other => panic!("health check form {other}"),
    }
}

struct Seen {
    healthy: bool,
    noauth: String,
    aof: String,
    fsync: String,
    aof_dir: bool,
    leaks: Vec<xtask::services::procscan::Leak>,
    scans: u64,
}

fn run(case: &str, which: &str, service: &str) -> Seen {
    let tmp = tempfile::tempdir().unwrap();
    let svc = resolved(tmp.path(), case, which, service);
    let command = strings(&svc["command"]);
    let env = env_of(&svc);
    let pw = password(case, which);
    if which == "after.yml" {
        // apply moved the password into the container's environment.
        assert_eq!(env.get("REDIS_PASSWORD"), Some(&pw), "{case}");
    }
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();

    let watch = ArgvWatch::start(std::slice::from_ref(&pw));
    let mut server = start(&data, &command, &env);
    let pid = server.0.id();
    let hc = healthcheck_argv(&svc);
    let deadline = Instant::now() + Duration::from_secs(20);
    let healthy = loop {
        let out = inside(pid, &hc, &env);
        if out.status.success() && String::from_utf8_lossy(&out.stdout).contains("PONG")
            || out.status.success() && hc.join(" ").contains("grep -q PONG")
        {
            break true;
        }
        if Instant::now() > deadline || server.0.try_wait().unwrap().is_some() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let cli = |args: &[&str], auth: bool| {
        let mut e = env.clone();
        if auth {
            e.insert("REDISCLI_AUTH".into(), pw.clone());
        }
        let mut argv = vec!["redis-cli".to_string(), "--no-auth-warning".to_string()];
        argv.extend(args.iter().map(|s| s.to_string()));
        String::from_utf8_lossy(&inside(pid, &argv, &e).stdout).into_owned()
    };
    let noauth = cli(&["ping"], false);
    let aof = cli(&["config", "get", "appendonly"], true);
    let fsync = cli(&["config", "get", "appendfsync"], true);
    drop(server);
    let scans = watch.scans();
    let leaks = watch.stop();
    Seen {
        healthy,
        noauth,
        aof,
        fsync,
        aof_dir: data.join("appendonlydir").is_dir(),
        leaks,
        scans,
    }
}

fn run_case(case: &str, service: &str, expect_no_argv_leak: bool) {
    let Seen {
        healthy,
        noauth,
        aof,
        fsync,
        aof_dir,
        leaks,
        scans,
    } = run(case, "after.yml", service);
    assert!(scans > 3, "{case}: the argv watch did not run");
    assert!(healthy, "{case}: the health check never passed");
    assert!(
        noauth.contains("NOAUTH"),
        "{case}: no password required: {noauth}"
    );
    assert!(aof.contains("appendonly\nyes"), "{case}: {aof}");
    assert!(fsync.contains("appendfsync\neverysec"), "{case}: {fsync}");
    // The AOF is written in the data directory (the server's working directory here).
    assert!(aof_dir, "{case}: no AOF written");
    if expect_no_argv_leak {
        assert!(leaks.is_empty(), "{case}: password on an argv: {leaks:?}");
    } else {
        // Shell indirection (a warning): only redis-server's own start-up argv may hold it,
        // never the health check's.
        assert!(
            leaks.iter().all(|l| l.argv.starts_with("redis-server ")),
            "{case}: {leaks:?}"
        );
    }
}

#[test]
fn an_interpolated_password_moved_by_apply_runs_and_never_reaches_an_argv() {
    // `--requirepass ${REDIS_PASSWORD}` and `redis-cli -a ${REDIS_PASSWORD}` before apply.
    run_case("interpolated_string", "redis", true);
    run_case("interpolated_block_list", "redis", true);
}

#[test]
fn the_reference_apps_shape_after_apply_runs_with_its_health_check() {
    // `--requirepass "$$REDIS_PASSWORD"` read by the shell (a warning: argv at start-up only);
    // the health check moved from `redis-cli -a` to REDISCLI_AUTH.
    run_case("ref_app_shell", "redis", false);
}

#[test]
fn before_apply_the_interpolated_password_is_on_argv() {
    // The same run on the original file: the watch sees the password on redis-server's argv
    // (Compose put it in the command) and on redis-cli's (`-a`): what `check` reports as errors.
    let seen = run("interpolated_string", "before.yml", "redis");
    assert!(seen.healthy, "the original health check works");
    assert!(
        seen.leaks.iter().any(|l| l.argv.starts_with("redis-cli ")),
        "{:?}",
        seen.leaks
    );
    assert!(!seen.aof.contains("appendonly\nyes"), "{}", seen.aof);
}
