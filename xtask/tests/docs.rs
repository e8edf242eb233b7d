//! `cargo xtask docs --check` keeps infra/docs true: the repository's docs are fresh, a change to a
//! compose file or the environments file makes them stale, regenerating fixes it, and what is
//! generated is well-formed Markdown whose shell commands parse.

mod common;

use std::path::Path;
use std::process::Command;

use common::repo as repo_root;
use xtask::docs;
use xtask::environments::{Environments, ENVIRONMENTS_FILE};

fn load(root: &Path) -> Environments {
    let file = root.join(ENVIRONMENTS_FILE);
    Environments::parse(&std::fs::read_to_string(&file).unwrap(), &file, root).unwrap()
}

/// A copy of the files the docs are generated from, plus the generated docs.
fn copy_repo() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let root = repo_root();
    for rel in [
        "docker-compose.prod.yml",
        "docker-compose.staging.yml",
        ENVIRONMENTS_FILE,
        docs::REDIS_DOC,
        docs::BACKUPS_DOC,
        docs::DURABILITY_FILE,
        docs::RESTORE_BENCH_FILE,
    ] {
        let to = tmp.path().join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(root.join(rel), &to).unwrap_or_else(|e| panic!("copy {rel}: {e}"));
    }
    tmp
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.contains(from),
        "{} does not contain {from:?}",
        path.display()
    );
    std::fs::write(path, text.replace(from, to)).unwrap();
}

#[test]
fn repository_docs_are_up_to_date() {
    let stale = docs::check(&load(&repo_root())).unwrap();
    let names: Vec<_> = stale.iter().map(|s| s.path.display().to_string()).collect();
    assert!(
        stale.is_empty(),
        "stale: {names:?}: run `cargo xtask docs` and commit\n{}",
        stale.iter().map(|s| s.diff.as_str()).collect::<String>()
    );
}

#[test]
fn a_renamed_volume_makes_the_docs_stale_until_regenerated() {
    let tmp = copy_repo();
    let root = tmp.path();
    assert!(docs::check(&load(root)).unwrap().is_empty());
    edit(
        &root.join("docker-compose.staging.yml"),
        "redis_staging_aof",
        "redis_stg_aof",
    );
    let stale = docs::check(&load(root)).unwrap();
    assert_eq!(stale.len(), 1, "only redis.md names the volume");
    assert!(stale[0].path.ends_with(docs::REDIS_DOC));
    assert!(
        stale[0].diff.contains("+") && stale[0].diff.contains("redis_stg_aof"),
        "{}",
        stale[0].diff
    );
    let written = docs::write(&load(root)).unwrap();
    assert_eq!(written.len(), 1);
    assert!(docs::check(&load(root)).unwrap().is_empty());
    let text = std::fs::read_to_string(root.join(docs::REDIS_DOC)).unwrap();
    assert!(text.contains("station-staging_redis_stg_aof"));
    assert!(!text.contains("redis_staging_aof"));
}

#[test]
fn written_docs_are_world_readable_like_the_files_they_replace() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = copy_repo();
    let root = tmp.path();
    let redis = root.join(docs::REDIS_DOC);
    let backups = root.join(docs::BACKUPS_DOC);
    std::fs::set_permissions(&redis, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::remove_file(&backups).unwrap();
    edit(
        &root.join("docker-compose.staging.yml"),
        "redis_staging_aof",
        "redis_stg_aof",
    );
    let written = docs::write(&load(root)).unwrap();
    assert_eq!(written.len(), 2, "{written:?}");
    for p in [&redis, &backups] {
        let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "{}: mode {mode:o}", p.display());
    }
}

#[test]
fn a_truncated_durability_file_is_bad_input_at_a_1_based_position() {
    let tmp = copy_repo();
    let root = tmp.path();
    std::fs::write(root.join(docs::DURABILITY_FILE), "{\"aof\": \n").unwrap();
    let err = docs::check(&load(root)).unwrap_err();
    assert_eq!(err.exit_code(), xtask::error::ExitCode::Usage);
    let xtask::error::Error::Input { at, message } = &err else {
        panic!("{err:?}")
    };
    assert!(at.line >= 1 && at.col >= 1, "{err}");
    assert!(!message.contains("column"), "position said twice: {err}");
}

#[test]
fn the_restore_figures_come_from_the_recorded_benchmark() {
    let tmp = copy_repo();
    let root = tmp.path();
    let file = root.join(docs::RESTORE_BENCH_FILE);
    let text = std::fs::read_to_string(&file).unwrap();
    // A new measurement makes backups.md stale, and its figures show up in the diff.
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut v2 = v.clone();
    v2["xtask_s"] = serde_json::json!(7.77);
    std::fs::write(&file, serde_json::to_string(&v2).unwrap()).unwrap();
    let stale = docs::check(&load(root)).unwrap();
    assert_eq!(stale.len(), 1, "{stale:?}");
    assert!(stale[0].path.ends_with("backups.md"), "{stale:?}");
    assert!(stale[0].diff.contains("7.77 s"), "{}", stale[0].diff);
    // A truncated file is bad input at its position, naming what records it.
    std::fs::write(&file, "{\"rows\": \n").unwrap();
    let err = docs::check(&load(root)).unwrap_err();
    assert_eq!(err.exit_code(), xtask::error::ExitCode::Usage);
    assert!(err.to_string().contains("bench/restore.sh"), "{err}");
    // No file: the section says how to record the figures.
    std::fs::remove_file(&file).unwrap();
    let stale = docs::check(&load(root)).unwrap();
    assert!(
        stale[0].diff.contains("BENCH_RECORD=1 bench/restore.sh"),
        "{}",
        stale[0].diff
    );
}

#[test]
fn a_renamed_project_makes_both_docs_stale() {
    let tmp = copy_repo();
    let root = tmp.path();
    edit(
        &root.join(ENVIRONMENTS_FILE),
        "compose_project = \"station\"\n",
        "compose_project = \"station-prod\"\n",
    );
    let stale = docs::check(&load(root)).unwrap();
    // redis.md names the volume, backups.md the restore's `compose -p <project> stop backend`.
    assert_eq!(stale.len(), 2, "{stale:?}");
    let diff = |doc: &str| {
        &stale
            .iter()
            .find(|s| s.path.ends_with(doc))
            .unwrap_or_else(|| panic!("{doc} not stale: {stale:?}"))
            .diff
    };
    assert!(
        diff(docs::REDIS_DOC).contains("station-prod_redis_aof"),
        "{}",
        diff(docs::REDIS_DOC)
    );
    assert!(
        diff(docs::BACKUPS_DOC)
            .contains("docker compose -p station-prod -f docker-compose.prod.yml"),
        "{}",
        diff(docs::BACKUPS_DOC)
    );
    docs::write(&load(root)).unwrap();
    assert!(docs::check(&load(root)).unwrap().is_empty());
}

#[test]
fn the_check_writes_nothing() {
    let tmp = copy_repo();
    let root = tmp.path();
    edit(
        &root.join("docker-compose.prod.yml"),
        "redis_aof",
        "redis_main_aof",
    );
    let before = std::fs::read(root.join(docs::REDIS_DOC)).unwrap();
    assert!(!docs::check(&load(root)).unwrap().is_empty());
    assert_eq!(std::fs::read(root.join(docs::REDIS_DOC)).unwrap(), before);
}

/// Code blocks of a Markdown text: (info string, body). Panics on an unclosed fence.
fn code_blocks(md: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in md.lines() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => open = Some((info.to_string(), String::new())),
            (Some(_), Some("")) => blocks.push(open.take().unwrap()),
            (Some((_, body)), _) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "unclosed code fence");
    blocks
}

#[test]
fn generated_markdown_is_well_formed_and_every_command_parses() {
    let root = repo_root();
    let files = docs::render(&docs::collect(&load(&root)).unwrap());
    for (rel, md) in &files {
        assert!(
            md.starts_with("<!-- Generated by `cargo xtask docs`"),
            "{rel}: header"
        );
        let headings: Vec<&str> = md.lines().filter(|l| l.starts_with('#')).collect();
        assert!(
            headings.iter().any(|h| h.starts_with("# ")),
            "{rel}: no title"
        );
        assert!(
            headings.iter().all(|h| h.contains("# ") && h.len() > 3),
            "{rel}: bad heading {headings:?}"
        );
        let blocks = code_blocks(md);
        assert!(!blocks.is_empty(), "{rel}: no commands");
        for (info, body) in blocks {
            assert_eq!(info, "sh", "{rel}: every block is a shell block");
            let out = Command::new("bash")
                .args(["-n", "-c", &body])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{rel}: does not parse:\n{body}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            for line in body.lines().filter(|l| l.contains("redis-cli")) {
                assert!(
                    !line.contains(" -a "),
                    "{rel}: redis-cli -a leaks the password:\n{line}"
                );
            }
        }
    }
    let redis = &files[0].1;
    for must in [
        "aof_enabled:1",
        "REDISCLI_AUTH",
        "redis-check-aof --fix",
        "aof_current_size",
        "aof_base_size",
        "appendonlydir",
        "docker volume rename",
        "station_redis_aof",
        "station-staging_redis_staging_aof",
        ".env.production",
        "cargo xtask verify-redis --env production",
    ] {
        assert!(redis.contains(must), "redis.md lacks {must:?}");
    }
}

#[test]
fn a_replicated_environment_is_covered_node_by_node_and_a_timer_is_shown() {
    let tmp = copy_repo();
    let root = tmp.path();
    let envs = root.join(ENVIRONMENTS_FILE);
    let mut text = std::fs::read_to_string(&envs).unwrap();
    text.push_str(
        "\n[environments.production.redis_replication]\nsentinels = [\"10.0.0.5:26379\", \"10.0.0.6:26379\"]\nmaster = \"station\"\npassword_env = \"PRODUCTION_REDIS_PASSWORD\"\n",
    );
    std::fs::write(&envs, text).unwrap();
    let files = docs::render(&docs::collect(&load(root)).unwrap());
    let redis = &files[0].1;
    for must in [
        "`10.0.0.5:26379`, `10.0.0.6:26379`",
        "primary of `station`",
        "password from `PRODUCTION_REDIS_PASSWORD`",
        "verify-redis --env production --prometheus",
        "systemctl enable --now verify-redis-production.timer",
    ] {
        assert!(redis.contains(must), "redis.md lacks {must:?}");
    }
    // The repository's own docs (no replication declared) do not claim any.
    let own = &docs::render(&docs::collect(&load(&repo_root())).unwrap())[0].1;
    assert!(!own.contains("watched by Redis Sentinel"));
    assert!(own.contains("### Between deploys"));
}
