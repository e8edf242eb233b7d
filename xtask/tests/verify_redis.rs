//! `verify-redis` against real redis-server processes (temp dirs, free ports), through the built
//! binary, plus the in-container exec script run by a real shell against a real server.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use xtask::services::free_port;
use xtask::services::procscan::{argv_of, ArgvWatch};
use xtask::services::redis::{RedisConfig, RedisServer};
use xtask::verify_redis::transport::{Exec, Via};
use xtask::verify_redis::{collect, Options, Source};

// ----------------------------------------------------------------------------------------------
// helpers
// ----------------------------------------------------------------------------------------------

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Run {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("{e}\nstdout: {}\nstderr: {}", self.stdout, self.stderr))
    }
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

fn xtask(args: &[&str], envs: &[(&str, &str)]) -> Run {
    let mut c = common::verify_redis_command(args, envs);
    let t = Instant::now();
    let o = c.output().unwrap();
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        took: t.elapsed(),
    }
}

fn check<'a>(v: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {v:#}"))
}

fn st(v: &serde_json::Value, id: &str) -> String {
    check(v, id)["status"].as_str().unwrap().to_string()
}

fn start(dir: &Path, args: &[&str], password: Option<&str>, lines: &[&str]) -> RedisServer {
    let cfg = RedisConfig {
        args: args.iter().map(|s| s.to_string()).collect(),
        password: password.map(str::to_string),
        config_lines: lines.iter().map(|s| s.to_string()).collect(),
    };
    RedisServer::spawn(dir, free_port().unwrap(), &cfg).unwrap()
}

fn url(s: &RedisServer) -> String {
    format!("redis://127.0.0.1:{}", s.port)
}

/// redis-cli against a test server (password through REDISCLI_AUTH).
fn cli(s: &RedisServer, password: Option<&str>, args: &[&str]) -> String {
    let mut c = Command::new("redis-cli");
    c.args(["-p", &s.port.to_string(), "--no-auth-warning"])
        .args(args);
    if let Some(p) = password {
        c.env("REDISCLI_AUTH", p);
    }
    let o = c.output().unwrap();
    assert!(o.status.success(), "redis-cli {args:?}: {o:?}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn info_field(s: &RedisServer, password: Option<&str>, key: &str) -> String {
    let text = cli(s, password, &["INFO", "persistence"]);
    text.lines()
        .find_map(|l| {
            l.trim_end()
                .strip_prefix(&format!("{key}:"))
                .map(str::to_string)
        })
        .unwrap_or_default()
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Children of `pid` (by scanning /proc).
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        if after.split_whitespace().nth(1) == Some(&pid.to_string()) {
            out.push(child);
        }
    }
    out
}

/// A `local` environment whose Redis is on `port` with `password` (see `redis_local_env`).
fn local_env(root: &Path, port: u16, password: &str) -> Vec<(String, String)> {
    common::redis_local_env(root, port, password, "")
}

/// A directory holding wrappers for `tools` that log their argv and environment to `log`, then
/// exec the real tool. Returns a PATH with the wrappers first.
fn argv_spy(dir: &Path, tools: &[&str], log: &Path) -> String {
    std::fs::create_dir_all(dir).unwrap();
    for t in tools {
        let real = xtask::process::which(t).unwrap();
        let w = dir.join(t);
        std::fs::write(
            &w,
            format!(
                "#!/bin/sh\nprintf 'argv:' >> '{log}'; printf ' %s' \"$@\" >> '{log}'; echo >> '{log}'\ntr '\\0' '\\n' < /proc/$$/environ | sed 's/^/env: /' >> '{log}'\nexec '{real}' \"$@\"\n",
                log = log.display(),
                real = real.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&w, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    format!("{}:{}", dir.display(), std::env::var("PATH").unwrap())
}

fn pairs(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

// ----------------------------------------------------------------------------------------------
// tests
// ----------------------------------------------------------------------------------------------

#[test]
fn aof_on_is_ok() {
    let d = tempfile::tempdir().unwrap();
    let s = start(
        d.path(),
        &["--appendonly", "yes", "--appendfsync", "everysec"],
        None,
        &[],
    );
    let r = xtask(&["--url", &url(&s), "--json"], &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    let v = r.json();
    assert_eq!(v["status"], "ok", "{v:#}");
    assert_eq!(v["server"]["server"], "redis");
    assert_eq!(v["checks"].as_array().unwrap().len(), 8);
    // The human table says it in plain words.
    let r = xtask(&["--url", &url(&s)], &[]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("Redis keeps its data"), "{}", r.stdout);
    // Two samples, 100 ms apart.
    let r = xtask(
        &[
            "--url",
            &url(&s),
            "--json",
            "--samples",
            "2",
            "--interval",
            "100",
        ],
        &[],
    );
    assert_eq!(r.json()["samples"], 2);
}

#[test]
fn aof_off_fails() {
    let d = tempfile::tempdir().unwrap();
    let s = start(d.path(), &[], None, &[]);
    let r = xtask(&["--url", &url(&s), "--json"], &[]);
    assert_eq!(r.code, 1, "{}", r.all());
    let v = r.json();
    assert_eq!(st(&v, "aof_enabled"), "fail");
    assert!(check(&v, "aof_enabled")["action"]
        .as_str()
        .unwrap()
        .contains("--appendonly yes"));
}

#[test]
fn appendfsync_no_fails() {
    let d = tempfile::tempdir().unwrap();
    let s = start(
        d.path(),
        &["--appendonly", "yes", "--appendfsync", "no"],
        None,
        &[],
    );
    let r = xtask(&["--url", &url(&s), "--json"], &[]);
    assert_eq!(r.code, 1, "{}", r.all());
    let v = r.json();
    assert_eq!(st(&v, "aof_enabled"), "ok");
    assert_eq!(st(&v, "appendfsync"), "fail");
}

#[test]
fn first_rewrite_after_config_set_appendonly_warns_until_it_finishes() {
    let root = tempfile::tempdir().unwrap();
    let s = start(
        &root.path().join("state/redis"),
        &[],
        Some("pw-first-rewrite"),
        &["enable-debug-command yes"],
    );
    let pw = Some("pw-first-rewrite");
    cli(&s, pw, &["DEBUG", "POPULATE", "30000"]);
    // 20 µs per key in the fork: the rewrite takes a few seconds.
    cli(&s, pw, &["CONFIG", "SET", "rdb-key-save-delay", "20"]);
    cli(&s, pw, &["CONFIG", "SET", "appendonly", "yes"]);
    assert_eq!(info_field(&s, pw, "aof_rewrite_in_progress"), "1");

    let r = xtask(
        &["--url", &url(&s), "--json"],
        &[("REDISCLI_AUTH", "pw-first-rewrite")],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let v = r.json();
    assert_eq!(st(&v, "aof_enabled"), "ok");
    assert_eq!(st(&v, "aof_rewrite"), "warn", "{v:#}");
    // --env local also sees that the manifest does not exist yet.
    let env = local_env(root.path(), s.port, "pw-first-rewrite");
    let r = xtask(&["--env", "local", "--json"], &pairs(&env));
    assert_eq!(r.code, 0, "{}", r.all());
    let v = r.json();
    assert_eq!(st(&v, "aof_files"), "warn", "{v:#}");
    assert_eq!(v["transport"], "local");
    assert_eq!(
        v["target"],
        format!("env:local (redis://127.0.0.1:{})", s.port)
    );
    let r = xtask(&["--env", "local", "--strict"], &pairs(&env));
    assert_eq!(r.code, 1);

    cli(&s, pw, &["CONFIG", "SET", "rdb-key-save-delay", "0"]);
    wait_until("the first rewrite", Duration::from_secs(30), || {
        info_field(&s, pw, "aof_rewrite_in_progress") == "0"
    });
    let r = xtask(&["--env", "local", "--json"], &pairs(&env));
    assert_eq!(r.code, 0, "{}", r.all());
    let v = r.json();
    assert_eq!(v["status"], "ok", "{v:#}");
}

#[test]
fn killed_rewrite_child_warns_then_fails_from_three() {
    let d = tempfile::tempdir().unwrap();
    let s = start(
        d.path(),
        &["--appendonly", "yes"],
        None,
        &["enable-debug-command yes"],
    );
    cli(&s, None, &["DEBUG", "POPULATE", "50000"]);
    cli(&s, None, &["CONFIG", "SET", "rdb-key-save-delay", "200"]);
    let pid = s.pid().unwrap();
    for round in 1..=3 {
        cli(&s, None, &["BGREWRITEAOF"]);
        let mut kids = Vec::new();
        wait_until("the rewrite child", Duration::from_secs(10), || {
            kids = children(pid);
            !kids.is_empty()
        });
        for k in &kids {
            Command::new("kill")
                .args(["-KILL", &k.to_string()])
                .status()
                .unwrap();
        }
        wait_until("the failure to be noticed", Duration::from_secs(10), || {
            info_field(&s, None, "aof_rewrites_consecutive_failures") == round.to_string()
        });
        let r = xtask(&["--url", &url(&s), "--json"], &[]);
        let v = r.json();
        if round < 3 {
            assert_eq!(r.code, 0, "{}", r.all());
            assert_eq!(st(&v, "aof_rewrite_failures"), "warn", "{v:#}");
        } else {
            assert_eq!(r.code, 1, "{}", r.all());
            assert_eq!(st(&v, "aof_rewrite_failures"), "fail", "{v:#}");
        }
    }
}

#[test]
fn wrong_or_missing_password_is_exit_3_and_never_printed() {
    let d = tempfile::tempdir().unwrap();
    let s = start(
        d.path(),
        &["--appendonly", "yes"],
        Some("S3rver-Secret-pw"),
        &[],
    );
    let secrets = ["S3rver-Secret-pw", "Wr0ng-Client-pw", "Wr0ng-Url-pw"];
    type Case<'a> = (Vec<String>, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case> = vec![
        (
            vec!["--url".into(), url(&s)],
            vec![("REDISCLI_AUTH", "Wr0ng-Client-pw")],
        ),
        (
            vec!["--url".into(), url(&s), "--json".into()],
            vec![("REDIS_PASSWORD", "Wr0ng-Client-pw")],
        ),
        (vec!["--url".into(), url(&s)], vec![]),
        (
            vec![
                "--url".into(),
                format!("redis://:Wr0ng-Url-pw@127.0.0.1:{}", s.port),
            ],
            vec![],
        ),
    ];
    for (args, envs) in cases {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = xtask(&a, &envs);
        assert_eq!(r.code, 3, "{a:?}: {}", r.all());
        assert!(
            r.stderr.contains("authentication failed"),
            "{a:?}: {}",
            r.stderr
        );
        for p in secrets {
            assert!(!r.all().contains(p), "{p} leaked: {}", r.all());
        }
    }
    // The right password works (and is still not printed).
    let r = xtask(
        &["--url", &url(&s), "--json"],
        &[("REDISCLI_AUTH", "S3rver-Secret-pw")],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(!r.all().contains("S3rver-Secret-pw"));
}

#[test]
fn refused_port_and_silent_listener_are_exit_3_within_the_timeout() {
    let port = free_port().unwrap();
    let r = xtask(
        &[
            "--url",
            &format!("redis://127.0.0.1:{port}"),
            "--timeout",
            "1",
        ],
        &[],
    );
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(r.stderr.contains("refused"), "{}", r.stderr);
    assert!(r.took < Duration::from_secs(2));

    // Accepts connections, never says a word.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in l.incoming() {
            held.push(c);
        }
    });
    for (extra, envs) in [
        (vec![], vec![]),
        (vec!["--json"], vec![("REDISCLI_AUTH", "some-pw")]),
        (
            vec!["--wait", "1", "--samples", "2", "--interval", "100"],
            vec![],
        ),
    ] {
        let u = format!("redis://127.0.0.1:{silent}");
        let mut a = vec!["--url", u.as_str(), "--timeout", "1"];
        a.extend(extra.iter().copied());
        let r = xtask(&a, &envs);
        assert_eq!(r.code, 3, "{a:?}: {}", r.all());
        assert!(r.stderr.contains("no answer"), "{}", r.stderr);
        // Bounded by timeout (+ wait + samples): here at most 1 + 1 + 0.1 s, plus process start.
        assert!(r.took < Duration::from_secs(4), "{a:?} took {:?}", r.took);
        if a.contains(&"--json") {
            assert_eq!(r.json()["status"], "unreachable");
        }
    }
}

#[test]
fn acl_user_without_config_get_warns_and_without_info_is_exit_3() {
    let d = tempfile::tempdir().unwrap();
    let s = start(
        d.path(),
        &["--appendonly", "yes", "--appendfsync", "everysec"],
        None,
        &[
            "user probe on >probe-pw ~* +info +ping",
            "user noinfo on >noinfo-pw ~* +ping +config|get",
        ],
    );
    let probe = format!("redis://probe@127.0.0.1:{}", s.port);
    let r = xtask(
        &["--url", &probe, "--json"],
        &[("REDISCLI_AUTH", "probe-pw")],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let v = r.json();
    assert_eq!(st(&v, "aof_enabled"), "ok");
    assert_eq!(st(&v, "appendfsync"), "warn");
    let msg = check(&v, "appendfsync")["message"].as_str().unwrap();
    assert!(
        msg.contains("cannot verify") && msg.contains("NOPERM"),
        "{msg}"
    );
    assert_eq!(
        xtask(
            &["--url", &probe, "--strict"],
            &[("REDISCLI_AUTH", "probe-pw")]
        )
        .code,
        1
    );

    let noinfo = format!("redis://noinfo@127.0.0.1:{}", s.port);
    let r = xtask(&["--url", &noinfo], &[("REDISCLI_AUTH", "noinfo-pw")]);
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(r.stderr.contains("NOPERM"), "{}", r.stderr);
}

#[test]
fn slow_aof_load_is_waited_for_then_ok() {
    let d = tempfile::tempdir().unwrap();
    let mut s = start(
        d.path(),
        &["--appendonly", "yes"],
        None,
        &["enable-debug-command yes"],
    );
    cli(&s, None, &["DEBUG", "POPULATE", "20000"]);
    cli(&s, None, &["BGREWRITEAOF"]);
    wait_until("the rewrite", Duration::from_secs(20), || {
        info_field(&s, None, "aof_rewrite_in_progress") == "0"
            && info_field(&s, None, "aof_rewrites") == "1"
    });
    s.kill();
    // Same directory; 50 µs per key while loading (about 2 s), serving clients every 1 KiB.
    let s = start(
        d.path(),
        &[
            "--appendonly",
            "yes",
            "--key-load-delay",
            "50",
            "--loading-process-events-interval-bytes",
            "1024",
        ],
        None,
        &[],
    );
    let r = xtask(&["--url", &url(&s), "--json"], &[]);
    assert_eq!(r.code, 1, "{}", r.all());
    let v = r.json();
    let m = check(&v, "aof_enabled")["message"].as_str().unwrap();
    assert!(m.contains("loading") && m.contains("not \"off\""), "{m}");

    let r = xtask(&["--url", &url(&s), "--json", "--wait", "60"], &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    let v = r.json();
    assert_eq!(v["status"], "ok", "{v:#}");
    assert!(v["waited_seconds"].as_f64().unwrap() > 0.0);
    assert!(r.stderr.contains("is loading its data"), "{}", r.stderr);
    assert_eq!(cli(&s, None, &["DBSIZE"]).trim(), "20000");
}

#[test]
fn local_env_checks_the_aof_directory_and_a_truncated_incr_file_fails() {
    let root = tempfile::tempdir().unwrap();
    let pw = "L0cal-Env-pw";
    let s = start(
        &root.path().join("state/redis"),
        &["--appendonly", "yes", "--appendfsync", "always"],
        Some(pw),
        &[],
    );
    for i in 0..200 {
        cli(&s, Some(pw), &["SET", &format!("k{i}"), &"v".repeat(50)]);
    }
    let mut env = local_env(root.path(), s.port, pw);
    let log = root.path().join("argv.log");
    env.push((
        "PATH".into(),
        argv_spy(&root.path().join("spy"), &["redis-check-aof"], &log),
    ));
    let r = xtask(&["--env", "local", "--json"], &pairs(&env));
    assert_eq!(r.code, 0, "{}", r.all());
    let v = r.json();
    assert_eq!(st(&v, "aof_files"), "ok", "{v:#}");
    assert!(check(&v, "aof_files")["value"]
        .as_str()
        .unwrap()
        .ends_with("appendonly.aof.manifest: 2 files"));
    // redis-check-aof ran, and neither its argv nor its environment held the password.
    let spied = std::fs::read_to_string(&log).unwrap();
    assert!(spied.contains("argv: "), "{spied}");
    assert!(!spied.contains(pw), "{spied}");
    assert!(!r.all().contains(pw));

    // Cut the last bytes of the incr file: a torn write.
    let incr = std::fs::read_dir(root.path().join("state/redis/appendonlydir"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".incr.aof"))
        .unwrap();
    let len = std::fs::metadata(&incr).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&incr)
        .unwrap()
        .set_len(len - 7)
        .unwrap();
    let r = xtask(&["--env", "local", "--json"], &pairs(&env));
    assert_eq!(r.code, 1, "{}", r.all());
    let v = r.json();
    let c = check(&v, "aof_files");
    assert_eq!(c["status"], "fail", "{v:#}");
    assert!(c["message"].as_str().unwrap().contains("damaged"), "{c:#}");
    assert!(c["action"].as_str().unwrap().contains("--fix"));
}

fn shell() -> Vec<String> {
    // The containers run a busybox `sh`: use it when installed, else the system sh.
    if xtask::process::which("busybox").is_some() {
        vec!["busybox".into(), "sh".into()]
    } else {
        vec!["sh".into()]
    }
}

#[test]
fn the_in_container_script_answers_without_the_password_in_any_argv() {
    let d = tempfile::tempdir().unwrap();
    let pw = "C0ntainer-pw";
    let s = start(
        &d.path().join("redis"),
        &["--appendonly", "yes", "--appendfsync", "everysec"],
        Some(pw),
        &[],
    );
    cli(&s, Some(pw), &["SET", "a", "1"]);
    let log = d.path().join("argv.log");
    let path = argv_spy(
        &d.path().join("spy"),
        &["redis-cli", "redis-check-aof"],
        &log,
    );
    let exec = |password: &str| Source::Exec {
        exec: Exec {
            via: Via::Shell {
                shell: shell(),
                env: vec![
                    ("REDIS_PASSWORD".into(), password.into()),
                    ("PATH".into(), path.clone()),
                ],
                port: s.port,
            },
            target: "shell".into(),
        },
        transport: "shell",
    };
    let opts = Options {
        samples: 2,
        interval: Duration::from_millis(50),
        ..Options::new(Duration::from_secs(5))
    };
    let r = collect(exec(pw), &opts).unwrap();
    let statuses: Vec<(&str, &str)> = r.checks.iter().map(|c| (c.id, c.status.as_str())).collect();
    assert!(statuses.iter().all(|(_, s)| *s == "ok"), "{statuses:?}");
    assert_eq!(statuses.last().unwrap().0, "aof_files");
    assert_eq!(r.samples, 2);
    assert_eq!(
        r.server.as_ref().unwrap().version.split('.').next(),
        Some("7")
    );

    let e = collect(exec("Wr0ng-pw"), &opts).unwrap_err();
    assert_eq!(e.exit_code(), xtask::ExitCode::Unavailable);
    assert!(e.to_string().contains("authentication failed"), "{e}");
    assert!(!e.to_string().contains("Wr0ng-pw") && !e.to_string().contains(pw));

    let spied = std::fs::read_to_string(&log).unwrap();
    let argv: Vec<&str> = spied.lines().filter(|l| l.starts_with("argv:")).collect();
    assert!(argv.len() >= 6, "{spied}");
    assert!(argv
        .iter()
        .all(|l| !l.contains(pw) && !l.contains("Wr0ng-pw")));
    assert!(argv.iter().all(|l| !l.contains(" -a ")), "{argv:?}");
}

#[test]
fn the_password_is_in_no_argv_while_verify_redis_runs() {
    // While verify-redis waits on a silent server, read /proc/<pid>/cmdline of it and of every
    // child it has: none may hold the password (it travels in REDISCLI_AUTH only). Every other
    // process's argv is watched for it during the whole run, too.
    let pw = "Ps-Visible-pw";
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in silent.incoming() {
            held.push(c);
        }
    });
    let watch = ArgvWatch::start(&[pw.to_string()]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args([
            "verify-redis",
            "--url",
            &format!("redis://127.0.0.1:{port}"),
            "--timeout",
            "1",
        ])
        .env("REDISCLI_AUTH", pw)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut seen = 0;
    for p in std::iter::once(child.id()).chain(children(child.id())) {
        if let Some(c) = argv_of(p) {
            seen += 1;
            assert!(!c.contains(pw));
        }
    }
    assert!(seen >= 1);
    let status = child.wait().unwrap();
    let leaks = watch.stop();
    assert!(leaks.is_empty(), "password on a command line: {leaks:?}");
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(status.code(), Some(3));
    assert!(!out.contains(pw));
}
