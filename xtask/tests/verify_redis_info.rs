//! `verify-redis --info-file`: the typed parser over every version's field set and every text
//! shape, through the built binary (exit codes, JSON, GitHub Actions output).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::Run;
use xtask::verify_redis::info;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/info")
        .join(name)
}

fn xtask(args: &[&str], envs: &[(&str, &str)], stdin: Option<&[u8]>) -> Run {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.args(args)
        .env_remove("GITHUB_ACTIONS")
        .env_remove("GITHUB_STEP_SUMMARY")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        c.env(k, v);
    }
    let mut child = c.spawn().unwrap();
    if let Some(b) = stdin {
        child.stdin.take().unwrap().write_all(b).unwrap();
    }
    Run::from(child.wait_with_output().unwrap())
}

fn json_of(file: &str) -> (i32, serde_json::Value) {
    let p = fixture(file);
    let r = xtask(
        &["verify-redis", "--info-file", p.to_str().unwrap(), "--json"],
        &[],
        None,
    );
    let v: serde_json::Value = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("{file}: {e}\n{}\n{}", r.stdout, r.stderr));
    (r.code, v)
}

fn status(v: &serde_json::Value, id: &str) -> String {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id}"))["status"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn every_fixture_parses_with_its_versions_field_set() {
    let read = |f: &str| std::fs::read_to_string(fixture(f)).unwrap();
    // 6.2: no aof_rewrites / async_loading, an extra aof_rewrite_buffer_length.
    let i = info::parse(&read("redis-6.2-aof.txt")).unwrap();
    let p = &i.persistence().unwrap()[0];
    assert!(p.aof_enabled && p.aof_rewrites.is_none() && p.async_loading.is_none());
    assert_eq!(p.raw["aof_rewrite_buffer_length"], "0");
    assert_eq!(i.server().unwrap().to_string(), "Redis 6.2.14");
    assert!(!i.server().unwrap().multi_part_aof());
    // 7.0 real capture, CRLF: the 30 fields of 7.0+ and the 6 of `appendonly yes`.
    let i = info::parse(&read("redis-7.0-aof.txt")).unwrap();
    let p = &i.persistence().unwrap()[0];
    assert_eq!(p.raw.len(), 36);
    assert_eq!(p.aof_rewrites_consecutive_failures, Some(0));
    assert_eq!(p.async_loading, Some(false));
    // A whole INFO (all sections): the persistence section is found among them.
    let i = info::parse(&read("redis-7.0-full-info.txt")).unwrap();
    assert!(i.sections.len() > 5);
    assert_eq!(i.persistence().unwrap().len(), 1);
    assert_eq!(i.server().unwrap().version, "7.0.15");
    // Loading: aof_enabled 0, but configured (aof sizes present), with progress.
    let p = &info::parse(&read("redis-7.0-loading.txt"))
        .unwrap()
        .persistence()
        .unwrap()[0];
    assert!(p.is_loading() && !p.aof_enabled && p.aof_configured());
    assert_eq!(p.loading_loaded_perc, Some(42.0));
    // AOF off: the AOF-only block is absent and tolerated.
    let p = &info::parse(&read("redis-7.2-aof-off.txt"))
        .unwrap()
        .persistence()
        .unwrap()[0];
    assert!(!p.aof_enabled && !p.aof_configured() && p.aof_delayed_fsync.is_none());
    // Valkey 8.
    let i = info::parse(&read("valkey-8.0-rewrite-failing.txt")).unwrap();
    assert_eq!(i.server().unwrap().to_string(), "Valkey 8.0.1");
    // Every shape gives the same fields as the wire capture.
    let wire = info::parse(&read("redis-7.0-aof.txt"))
        .unwrap()
        .persistence()
        .unwrap();
    for shape in ["tty-crcrlf.txt", "resp3-txt-prefix.txt"] {
        let got = info::parse(&read(shape)).unwrap().persistence().unwrap();
        assert_eq!(got, wire, "{shape}");
    }
}

#[test]
fn fixture_verdicts_and_exit_codes() {
    let (code, v) = json_of("redis-7.0-aof.txt");
    assert_eq!(code, 0);
    assert_eq!(v["schema"], "verify-redis/1");
    assert_eq!(v["transport"], "file");
    assert_eq!(status(&v, "aof_enabled"), "ok");
    // CONFIG is not in INFO text: the fsync policy is unverifiable, a warning that says so.
    assert_eq!(status(&v, "appendfsync"), "warn");
    assert!(v["checks"][4]["message"]
        .as_str()
        .unwrap()
        .contains("cannot verify"));
    assert_eq!(v["status"], "warn");

    let (code, v) = json_of("redis-6.2-aof.txt");
    assert_eq!((code, status(&v, "aof_enabled")), (0, "ok".into()));
    assert_eq!(v["server"]["version"], "6.2.14");

    let (code, v) = json_of("redis-7.2-aof-off.txt");
    assert_eq!((code, status(&v, "aof_enabled")), (1, "fail".into()));

    let (code, v) = json_of("redis-7.0-loading.txt");
    assert_eq!(code, 1);
    let c = &v["checks"][0];
    assert!(
        c["message"].as_str().unwrap().contains("not \"off\""),
        "{c}"
    );

    let (code, v) = json_of("redis-7.2-misconf.txt");
    assert_eq!((code, status(&v, "aof_write")), (1, "fail".into()));

    let (code, v) = json_of("valkey-8.0-rewrite-failing.txt");
    assert_eq!(
        (code, status(&v, "aof_rewrite_failures")),
        (1, "fail".into())
    );
    assert_eq!(v["server"]["server"], "valkey");

    let (code, v) = json_of("redis-7.4-two-samples-rising.txt");
    assert_eq!((code, status(&v, "fsync_delays")), (0, "warn".into()));
    assert_eq!(v["samples"], 2);
}

#[test]
fn strict_turns_warnings_into_exit_1() {
    let p = fixture("redis-7.0-aof.txt");
    let args = ["verify-redis", "--info-file", p.to_str().unwrap()];
    assert_eq!(xtask(&args, &[], None).code, 0);
    let mut strict = args.to_vec();
    strict.push("--strict");
    let r = xtask(&strict, &[], None);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stdout.contains("--strict"));
}

#[test]
fn stdin_and_bad_input() {
    let text = std::fs::read(fixture("tty-crcrlf.txt")).unwrap();
    let r = xtask(&["verify-redis", "--info-file", "-"], &[], Some(&text));
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("AOF on and live"));

    let bad = fixture("bad-line.txt");
    let r = xtask(
        &["verify-redis", "--info-file", bad.to_str().unwrap()],
        &[],
        None,
    );
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains(&format!("{}:6:1:", bad.display())),
        "{}",
        r.stderr
    );
    let r = xtask(
        &["verify-redis", "--info-file", "-"],
        &[],
        Some(b"# Persistence\nloading:0\naof_enabled:maybe\n"),
    );
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("<stdin>:3:13:"), "{}", r.stderr);
    // Not INFO persistence at all.
    let r = xtask(
        &["verify-redis", "--info-file", "-"],
        &[],
        Some(b"# Server\nredis_version:7.0.0\n"),
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    // Missing file, and flags.
    assert_eq!(
        xtask(
            &["verify-redis", "--info-file", "/nonexistent/x"],
            &[],
            None
        )
        .code,
        2
    );
    assert_eq!(xtask(&["verify-redis"], &[], None).code, 2);
    assert_eq!(
        xtask(
            &["verify-redis", "--url", "redis://x", "--timeout", "-1"],
            &[],
            None
        )
        .code,
        2
    );
    assert_eq!(
        xtask(&["verify-redis", "--url", "http://x:1"], &[], None).code,
        2
    );
}

#[test]
fn github_actions_annotations_and_step_summary() {
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("summary.md");
    let p = fixture("redis-7.2-misconf.txt");
    let r = xtask(
        &["verify-redis", "--info-file", p.to_str().unwrap()],
        &[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_STEP_SUMMARY", summary.to_str().unwrap()),
        ],
        None,
    );
    assert_eq!(r.code, 1);
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("::error title=verify-redis%3A AOF writes::")),
        "{}",
        r.stdout
    );
    assert!(r.stdout.lines().any(|l| l.starts_with("::warning ")));
    let md = std::fs::read_to_string(&summary).unwrap();
    assert!(md.contains("| ❌ | AOF writes |"), "{md}");
    assert!(md.contains("NOT proven safe"));

    // With --json, stdout stays one JSON document; annotations go to stderr.
    let r = xtask(
        &["verify-redis", "--info-file", p.to_str().unwrap(), "--json"],
        &[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_STEP_SUMMARY", summary.to_str().unwrap()),
        ],
        None,
    );
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["status"], "fail");
    assert!(r.stderr.contains("::error title="));
}
