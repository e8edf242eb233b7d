//! `cargo xtask compose apply|check` end to end: golden fixtures, bad inputs with exact positions,
//! atomic writes, the printed data-carrying commands, and the findings of `check`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::xtask_in as xtask;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/compose")
}

fn apply_fixture_names() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(fixtures().join("apply"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    assert!(v.len() >= 12, "{v:?}");
    v
}

fn extra_args(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("args"))
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

#[test]
fn golden_fixtures_apply_exactly_and_idempotently() {
    for name in apply_fixture_names() {
        let src = fixtures().join("apply").join(&name);
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("docker-compose.yml");
        let before = std::fs::read(src.join("before.yml")).unwrap();
        let after = std::fs::read(src.join("after.yml")).unwrap();
        std::fs::write(&file, &before).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        let extra = extra_args(&src);
        let mut args = vec!["compose", "apply", "--file", "docker-compose.yml"];
        args.extend(extra.iter().map(String::as_str));

        let r = xtask(tmp.path(), &args);
        assert_eq!(r.code, 0, "{name}: {}{}", r.stdout, r.stderr);
        let got = std::fs::read(&file).unwrap();
        assert!(
            got == after,
            "{name}: result differs from after.yml:\n{}",
            String::from_utf8_lossy(&got)
        );
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640, "{name}: permissions kept");
        if before == after {
            assert!(r.stdout.contains("nothing written"), "{name}: {}", r.stdout);
        }
        // No stray temp files next to it.
        let entries: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(entries.len(), 1, "{name}: temp files left");

        // Idempotent: a second run writes nothing (same inode, same mtime).
        let meta1 = std::fs::metadata(&file).unwrap();
        let r2 = xtask(tmp.path(), &args);
        assert_eq!(r2.code, 0, "{name}: {}", r2.stderr);
        assert!(
            r2.stdout.contains("nothing written"),
            "{name}: {}",
            r2.stdout
        );
        let meta2 = std::fs::metadata(&file).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            (meta1.ino(), meta1.mtime_nsec()),
            (meta2.ino(), meta2.mtime_nsec()),
            "{name}: second run wrote"
        );
        assert_eq!(std::fs::read(&file).unwrap(), after);

        // check: the result passes (or has exactly the expected leftover rules); the input fails.
        let r3 = xtask(
            tmp.path(),
            &["compose", "check", "--file", "docker-compose.yml"],
        );
        let expected_rules =
            std::fs::read_to_string(src.join("after_check_rules")).unwrap_or_default();
        if expected_rules.trim().is_empty() {
            assert_eq!(r3.code, 0, "{name}: check after apply: {}", r3.stdout);
        } else {
            assert_eq!(r3.code, 1, "{name}");
            for rule in expected_rules.split_whitespace() {
                assert!(
                    r3.stdout.contains(&format!("[{rule}]")),
                    "{name}: {}",
                    r3.stdout
                );
            }
        }
        if before != after {
            std::fs::write(&file, &before).unwrap();
            let r4 = xtask(
                tmp.path(),
                &["compose", "check", "--file", "docker-compose.yml"],
            );
            assert_eq!(
                r4.code, 1,
                "{name}: check before apply must fail: {}",
                r4.stdout
            );
            assert!(
                r4.stdout.contains("docker-compose.yml:"),
                "{name}: {}",
                r4.stdout
            );
        }
    }
}

#[test]
fn dry_run_prints_a_diff_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("c.yml");
    let before = std::fs::read(fixtures().join("apply/string_command/before.yml")).unwrap();
    std::fs::write(&file, &before).unwrap();
    let r = xtask(
        tmp.path(),
        &["compose", "apply", "--file", "c.yml", "--dry-run"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(std::fs::read(&file).unwrap(), before);
    assert!(r.stdout.contains("--- c.yml\n+++ c.yml\n"), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("\n-      - redis_data:/data\n+      - redis_aof:/data\n"),
        "{}",
        r.stdout
    );
    assert!(r
        .stdout
        .contains("--appendonly yes --save \"\" --appendfsync everysec"));
    assert!(r.stdout.contains("dry run, nothing written"));
}

/// The commands after `To carry the data:`, each on its own line with two leading spaces.
/// The carry commands after the first `To carry the data:`, each re-quoted on one line (the
/// converter script's quoted argument spans several lines of the output).
fn carry_commands(stdout: &str) -> Vec<String> {
    xtask::e2e::carry::parse_carry_commands(stdout)
        .unwrap()
        .iter()
        .map(|words| xtask::process::quote_words(words))
        .collect()
}

#[test]
fn rename_prints_project_prefixed_carry_commands() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("docker-compose.yml");
    std::fs::copy(fixtures().join("apply/string_command/before.yml"), &file).unwrap();
    let r = xtask(
        tmp.path(),
        &[
            "compose",
            "apply",
            "--file",
            "docker-compose.yml",
            "--project",
            "demo",
            "--helper-image",
            "xtask-helper:local",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let cmds = carry_commands(&r.stdout);
    let abs = std::path::absolute(&file).unwrap();
    assert_eq!(
        cmds,
        [
            format!("docker compose -p demo -f {} stop redis", abs.display()),
            "docker volume create --label 'com.docker.compose.project=demo' --label 'com.docker.compose.volume=redis_aof' demo_redis_aof".to_string(),
            "docker run --rm -v demo_redis_data:/from:ro -v demo_redis_aof:/to xtask-helper:local cp -a /from/. /to/".to_string(),
            format!("docker run --rm -v demo_redis_aof:/data xtask-helper:local sh -c {}", xtask::process::quote(xtask::compose::carry::AOF_CONVERT_SH)),
        ]
    );
    assert!(r.stdout.contains("`docker volume rename` does not exist"));
    assert!(r.stdout.contains("silently create `demo_redis_aof` empty"));
    assert!(r.stdout.contains("start empty instead"));

    // Without --project: top-level `name:` gives the prefix; the image is the service's.
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("c.yml");
    std::fs::copy(fixtures().join("apply/sh_c_list_prod/before.yml"), &file).unwrap();
    let r = xtask(tmp.path(), &["compose", "apply", "--file", "c.yml"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let cmds = carry_commands(&r.stdout);
    assert_eq!(cmds[1], "docker volume create --label 'com.docker.compose.project=station' --label 'com.docker.compose.volume=redis_aof' station_redis_aof");
    assert_eq!(
        cmds[2],
        "docker run --rm -v station_redis_data:/from:ro -v station_redis_aof:/to redis:7.2-alpine cp -a /from/. /to/"
    );
}

#[test]
fn rename_override_must_match_a_data_volume() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("c.yml");
    let before = std::fs::read(fixtures().join("apply/string_command/before.yml")).unwrap();
    std::fs::write(&file, &before).unwrap();
    let r = xtask(
        tmp.path(),
        &[
            "compose",
            "apply",
            "--file",
            "c.yml",
            "--rename",
            "nope=x_aof",
        ],
    );
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert!(r.stderr.contains("--rename nope=..."), "{}", r.stderr);
    assert_eq!(std::fs::read(&file).unwrap(), before);
    let r = xtask(
        tmp.path(),
        &["compose", "apply", "--file", "c.yml", "--rename", "bad"],
    );
    assert_eq!(r.code, 2);
    // OLD=OLD without `_aof` would leave a volume `compose check` rejects: refused (issue 12).
    let r = xtask(
        tmp.path(),
        &[
            "compose",
            "apply",
            "--file",
            "c.yml",
            "--rename",
            "redis_data=redis_data",
        ],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_eq!(std::fs::read(&file).unwrap(), before);
}

#[test]
fn bad_inputs_exit_2_with_positions_and_leave_the_file_alone() {
    let dir = fixtures().join("bad");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    names.sort();
    assert!(names.len() >= 12);
    for src in names {
        let stem = src.file_stem().unwrap().to_string_lossy().into_owned();
        let expect = std::fs::read_to_string(dir.join(format!("{stem}.expect"))).unwrap();
        let mut lines = expect.lines();
        let (pos, fragment) = (lines.next().unwrap(), lines.next().unwrap());
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("c.yml");
        let before = std::fs::read(&src).unwrap();
        std::fs::write(&file, &before).unwrap();
        for (cmd, dry) in [("apply", false), ("apply", true), ("check", false)] {
            let mut args = vec!["compose", cmd, "--file", "c.yml"];
            if dry {
                args.push("--dry-run");
            }
            let r = xtask(tmp.path(), &args);
            // check reads through anchors (only editing an inherited command is refused).
            let findings_instead = cmd == "check"
                && (stem == "duplicate_key"
                    || stem == "repeated_merge"
                    || stem == "inherited_command");
            if findings_instead {
                // check reports duplicate keys as findings (exit 1), same position.
                assert_eq!(r.code, 1, "{stem} {cmd}: {}{}", r.stdout, r.stderr);
                if stem != "inherited_command" {
                    assert!(
                        r.stdout.contains(&format!("c.yml:{pos}: ")),
                        "{stem}: {}",
                        r.stdout
                    );
                    assert!(r.stdout.contains(fragment), "{stem}: {}", r.stdout);
                } else {
                    assert!(
                        r.stdout
                            .contains("c.yml:3:38: redis-server runs with `--appendonly no`"),
                        "{}",
                        r.stdout
                    );
                }
            } else {
                assert_eq!(r.code, 2, "{stem} {cmd}: {}{}", r.stdout, r.stderr);
                assert!(
                    r.stderr.contains(&format!("c.yml:{pos}: ")),
                    "{stem} {cmd}: {}",
                    r.stderr
                );
                assert!(r.stderr.contains(fragment), "{stem} {cmd}: {}", r.stderr);
                assert!(!r.stderr.contains("panicked"), "{stem}");
            }
            assert_eq!(
                std::fs::read(&file).unwrap(),
                before,
                "{stem}: file changed"
            );
        }
    }
    // A missing file: exit 2, no panic.
    let tmp = tempfile::tempdir().unwrap();
    let r = xtask(tmp.path(), &["compose", "apply", "--file", "missing.yml"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("missing.yml: cannot read"),
        "{}",
        r.stderr
    );
}

#[test]
fn one_bad_file_means_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good.yml");
    let before = std::fs::read(fixtures().join("apply/block_list/before.yml")).unwrap();
    std::fs::write(&good, &before).unwrap();
    std::fs::copy(
        fixtures().join("bad/duplicate_key.yml"),
        tmp.path().join("bad.yml"),
    )
    .unwrap();
    let r = xtask(
        tmp.path(),
        &[
            "compose", "apply", "--file", "good.yml", "--file", "bad.yml",
        ],
    );
    assert_eq!(r.code, 2);
    assert_eq!(std::fs::read(&good).unwrap(), before);
}

fn check_findings(text: &str) -> (i32, serde_json::Value) {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("c.yml"), text).unwrap();
    let r = xtask(
        tmp.path(),
        &["compose", "check", "--file", "c.yml", "--json"],
    );
    let v: serde_json::Value =
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout));
    (r.code, v)
}

#[test]
fn check_flags_passwords_ports_and_volumes_in_json() {
    let text = "services:\n  redis:\n    image: redis:7\n    command: redis-server --appendonly yes --appendfsync everysec --requirepass ${REDIS_PASSWORD}\n    ports:\n      - \"6379:6379\"\n      - target: 6379\n        published: 6380\n        host_ip: 0.0.0.0\n      - \"127.0.0.1:6381:6379\"\n    healthcheck:\n      test: [\"CMD\", \"redis-cli\", \"-a\", \"secret\", \"ping\"]\n    volumes:\n      - redis_data:/data\nvolumes:\n  redis_data:\n";
    let (code, v) = check_findings(text);
    assert_eq!(code, 1);
    let got: Vec<(String, u64, u64)> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["rule"].as_str().unwrap().to_string(),
                f["line"].as_u64().unwrap(),
                f["col"].as_u64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, u64, u64)> = [
        ("password-argv", 4, 67),
        ("data-volume", 14, 9),
        ("password-argv", 12, 34),
        ("port", 6, 9),
        ("port", 7, 9),
    ]
    .iter()
    .map(|(r, l, c)| (r.to_string(), *l, *c))
    .collect();
    assert_eq!(got, want);
    assert_eq!(v["ok"], false);
    assert!(v["findings"][0]["file"]
        .as_str()
        .unwrap()
        .ends_with("c.yml"));

    // Our own files pass.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let r = xtask(root, &["compose", "check"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let r = xtask(
        root,
        &[
            "compose",
            "check",
            "--env",
            "production",
            "--env",
            "staging",
            "--json",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stdout);
}

#[test]
fn check_requires_staging_to_mirror_production() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("infra")).unwrap();
    std::fs::copy(
        root.join("infra/environments.toml"),
        tmp.path().join("infra/environments.toml"),
    )
    .unwrap();
    std::fs::copy(
        root.join("docker-compose.prod.yml"),
        tmp.path().join("docker-compose.prod.yml"),
    )
    .unwrap();
    let staging = std::fs::read_to_string(root.join("docker-compose.staging.yml"))
        .unwrap()
        .replacen("image: redis:7.2-alpine", "image: redis:7.4-alpine", 1)
        .replacen(
            "interval: 10s\n      timeout: 5s\n      retries: 5\n\nvolumes",
            "interval: 30s\n      timeout: 5s\n      retries: 5\n\nvolumes",
            1,
        );
    std::fs::write(tmp.path().join("docker-compose.staging.yml"), staging).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["compose", "check"])
        .current_dir(tmp.path())
        .env("XTASK_ROOT", tmp.path())
        .env_remove("XTASK_ENVIRONMENTS")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].contains("docker-compose.staging.yml:60:5: staging's redis image differs"),
        "{stdout}"
    );
    assert!(
        lines[1].contains("docker-compose.staging.yml:71:5: staging's redis healthcheck differs"),
        "{stdout}"
    );
}

#[test]
fn a_literal_password_is_never_printed() {
    let tmp = tempfile::tempdir().unwrap();
    let text = "services:\n  redis:\n    image: redis:7\n    command: redis-server --requirepass hunter2 --appendonly no\n    volumes: [redis_aof:/data]\nvolumes:\n  redis_aof:\n";
    std::fs::write(tmp.path().join("c.yml"), text).unwrap();
    for args in [
        &["compose", "apply", "--file", "c.yml", "--dry-run"][..],
        &["compose", "check", "--file", "c.yml"][..],
        &["compose", "check", "--file", "c.yml", "--json"][..],
    ] {
        let r = xtask(tmp.path(), args);
        assert!(
            !r.stdout.contains("hunter2") && !r.stderr.contains("hunter2"),
            "{args:?}: {}{}",
            r.stdout,
            r.stderr
        );
        assert!(r.code == 0 || r.code == 1, "{args:?}: {}", r.stderr);
    }
    let r = xtask(
        tmp.path(),
        &["compose", "apply", "--file", "c.yml", "--dry-run"],
    );
    assert!(
        r.stdout.contains(
            "+    command: redis-server --requirepass *** --appendonly yes --appendfsync everysec"
        ),
        "{}",
        r.stdout
    );
    let r = xtask(tmp.path(), &["compose", "check", "--file", "c.yml"]);
    assert!(
        r.stdout
            .contains("c.yml:4:27: `--requirepass` is given a literal password"),
        "{}",
        r.stdout
    );
}

#[test]
fn a_literal_secret_variable_in_the_diff_context_is_never_printed() {
    let tmp = tempfile::tempdir().unwrap();
    let text = "services:\n  redis:\n    image: redis:7\n    environment:\n      REDIS_PASSWORD: hunter2\n    labels:\n      - \"API_TOKEN=s3cr3t\"\n    command: redis-server --appendonly no\n";
    std::fs::write(tmp.path().join("c.yml"), text).unwrap();
    let r = xtask(
        tmp.path(),
        &["compose", "apply", "--file", "c.yml", "--dry-run"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .contains("+    command: redis-server --appendonly yes"),
        "{}",
        r.stdout
    );
    for secret in ["hunter2", "s3cr3t"] {
        assert!(
            !r.stdout.contains(secret) && !r.stderr.contains(secret),
            "{secret}: {}{}",
            r.stdout,
            r.stderr
        );
    }
}

#[test]
fn without_flags_apply_fixes_production_and_staging_from_the_environments_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("infra")).unwrap();
    std::fs::copy(
        root.join("infra/environments.toml"),
        tmp.path().join("infra/environments.toml"),
    )
    .unwrap();
    let legacy = |f: &str| {
        std::fs::read_to_string(root.join(f))
            .unwrap()
            .replace("--appendonly yes --appendfsync everysec", "--appendonly no")
            .replace("redis_aof", "redis_data")
            .replace("redis_staging_aof", "redis_staging_data")
    };
    for f in ["docker-compose.prod.yml", "docker-compose.staging.yml"] {
        std::fs::write(tmp.path().join(f), legacy(f)).unwrap();
    }
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(args)
            .current_dir(tmp.path())
            .env("XTASK_ROOT", tmp.path())
            .env_remove("XTASK_ENVIRONMENTS")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, _) = run(&["compose", "check"]);
    assert_eq!(code, Some(1));
    let (code, stdout) = run(&["compose", "apply"]);
    assert_eq!(code, Some(0), "{stdout}");
    for f in ["docker-compose.prod.yml", "docker-compose.staging.yml"] {
        assert_eq!(
            std::fs::read_to_string(tmp.path().join(f)).unwrap(),
            std::fs::read_to_string(root.join(f)).unwrap(),
            "{f}"
        );
    }
    // Two carry blocks: production then staging, with each environment's project and env file.
    let blocks: Vec<Vec<String>> = stdout
        .split("To carry the data:\n")
        .skip(1)
        .map(|b| carry_commands(&format!("To carry the data:\n{b}")))
        .collect();
    assert!(stdout.contains("Run these on the `production` host (files in /opt/station)."));
    assert_eq!(
        blocks[0],
        [
            "docker compose -p station -f /opt/station/docker-compose.prod.yml --env-file /opt/station/.env.production stop redis".to_string(),
            "docker volume create --label 'com.docker.compose.project=station' --label 'com.docker.compose.volume=redis_aof' station_redis_aof".into(),
            "docker run --rm -v station_redis_data:/from:ro -v station_redis_aof:/to redis:7.2-alpine cp -a /from/. /to/".into(),
            format!("docker run --rm -v station_redis_aof:/data redis:7.2-alpine sh -c {}", xtask::process::quote(xtask::compose::carry::AOF_CONVERT_SH)),
        ]
    );
    assert_eq!(
        blocks[1][1],
        "docker volume create --label 'com.docker.compose.project=station-staging' --label 'com.docker.compose.volume=redis_staging_aof' station-staging_redis_staging_aof"
    );
    let (code, _) = run(&["compose", "check"]);
    assert_eq!(code, Some(0));
}
