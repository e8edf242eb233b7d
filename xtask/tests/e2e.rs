//! `cargo xtask e2e` on this machine's real Docker engine: the whole run passes and leaves nothing
//! behind; a failing step and a Ctrl-C clean up too; passwords never reach a command line or the
//! output. Where no Docker engine answers, the command must exit 3 and these tests say loudly that
//! the e2e did not run (the only skip).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PROJECT: &str = "station-e2e";

/// The tests share one Compose project and check that it is gone afterwards: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn xtask() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.current_dir(root());
    c
}

/// The test-only passwords of infra/e2e/e2e.env.
fn passwords() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("infra/e2e/e2e.env")).unwrap();
    let pw: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.ends_with("_PASSWORD"))
        .map(|(_, v)| v.trim().to_string())
        .collect();
    assert_eq!(
        pw.len(),
        2,
        "e2e.env has POSTGRES_PASSWORD and REDIS_PASSWORD"
    );
    pw
}

/// Returns false (and says why, loudly) when no engine answers; then `e2e` must exit 3.
fn engine_or_explain(test: &str) -> bool {
    if xtask::docker::engine_available() {
        return true;
    }
    let out = xtask().arg("e2e").output().unwrap();
    assert_eq!(out.status.code(), Some(3), "without an engine e2e exits 3");
    assert!(String::from_utf8_lossy(&out.stderr).contains("did NOT run"));
    // Straight to the process's stderr (not `eprintln!`, which the test harness captures), so
    // the skip shows in every `cargo test` run.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "\n*** {test}: the e2e did NOT run: no Docker engine answers (`docker info` failed). \
         `cargo xtask e2e` exited 3 as it must. ***"
    );
    false
}

/// Every process command line seen while `running`, checked for the passwords.
fn watch_cmdlines(
    running: Arc<AtomicBool>,
    secrets: Vec<String>,
) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let mut leaks = Vec::new();
        while running.load(Ordering::Relaxed) {
            if let Ok(dir) = std::fs::read_dir("/proc") {
                for e in dir.flatten() {
                    let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
                        continue;
                    };
                    let line = String::from_utf8_lossy(&raw).replace('\0', " ");
                    if secrets.iter().any(|s| line.contains(s.as_str())) {
                        leaks.push(line);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        leaks
    })
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    leaks: Vec<String>,
    secs: f64,
}

/// Run `xtask e2e <args>`; `interrupt_at`: send SIGINT to its process group (as Ctrl-C in a
/// terminal does) when a stdout line contains it.
fn run_e2e(args: &[&str], envs: &[(&str, &str)], interrupt_at: Option<&str>) -> Run {
    let start = Instant::now();
    let running = Arc::new(AtomicBool::new(true));
    let watcher = watch_cmdlines(running.clone(), passwords());
    // Its own process group, so that "Ctrl-C" reaches it and its children like a terminal's.
    use std::os::unix::process::CommandExt;
    let mut child = xtask()
        .process_group(0)
        .arg("e2e")
        .args(args)
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut err = child.stderr.take().unwrap();
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let stdout = Arc::new(Mutex::new(String::new()));
    let mut interrupted = false;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        println!("{line}");
        if let Some(marker) = interrupt_at {
            if !interrupted && line.contains(marker) {
                interrupted = true;
                let ok = Command::new("kill")
                    .args(["-INT", "--", &format!("-{pid}")])
                    .status()
                    .unwrap();
                assert!(ok.success());
            }
        }
        let mut s = stdout.lock().unwrap();
        s.push_str(&line);
        s.push('\n');
    }
    let status = child.wait().unwrap();
    running.store(false, Ordering::Relaxed);
    let stderr = t_err.join().unwrap();
    eprint!("{stderr}");
    let stdout = stdout.lock().unwrap().clone();
    Run {
        code: status.code(),
        stdout,
        stderr,
        leaks: watcher.join().unwrap(),
        secs: start.elapsed().as_secs_f64(),
    }
}

fn docker_lines(args: &[&str]) -> Vec<String> {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(out.status.success(), "docker {args:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

/// Nothing of the project is left: containers, volumes, networks.
fn assert_nothing_left() {
    let label = format!("label=com.docker.compose.project={PROJECT}");
    let name = format!("name={PROJECT}_");
    assert_eq!(
        docker_lines(&["ps", "-a", "-q", "--filter", &label]),
        Vec::<String>::new()
    );
    assert_eq!(
        docker_lines(&["volume", "ls", "-q", "--filter", &name]),
        Vec::<String>::new()
    );
    assert_eq!(
        docker_lines(&["network", "ls", "-q", "--filter", &name]),
        Vec::<String>::new()
    );
}

fn assert_no_secret(run: &Run) {
    for pw in passwords() {
        assert!(!run.stdout.contains(&pw), "password in stdout");
        assert!(!run.stderr.contains(&pw), "password in stderr");
    }
    assert!(
        run.leaks.is_empty(),
        "password on a command line: {:?}",
        run.leaks
    );
}

#[test]
fn e2e_passes_on_the_docker_engine_and_leaves_nothing() {
    let _serial = serial();
    if !engine_or_explain("e2e_passes_on_the_docker_engine_and_leaves_nothing") {
        return;
    }
    let run = run_e2e(&[], &[], None);
    assert_eq!(run.code, Some(0), "e2e failed:\n{}", run.stderr);
    for want in [
        "==> step 1: build images",
        "redis and postgres are healthy",
        "postgres runs as uid 999",
        "postgres serves station as station",
        "INFO persistence via exec: aof_enabled:1",
        "all 200 keys present after restart",
        "container exited 137",
        "every acknowledged key (400) present after kill -9",
        "redis-check-aof: All AOF files and manifest are valid",
        "verify-redis --env e2e: healthy",
        // compose apply's own output, and its carry commands run one by one
        "appended --appendonly yes --appendfsync everysec to the redis-server arguments",
        "| To carry the data:",
        "$ docker volume create --label 'com.docker.compose.project=station-e2e'",
        "$ docker run --rm -v station-e2e_redis_staging_data:/from:ro",
        "all 200 keys present in station-e2e_redis_staging_aof, aof_enabled:1",
        // the real backup, its drill, and the e2e's own content check
        "backup --env e2e: b2:station-backups-e2e/postgres/",
        "drill ok   public.e2e_items: source 1000, restored 1000",
        "drill passed: b2:station-backups-e2e/postgres/",
        "every table (1, 1000 rows) matches the source",
        "own restore check: b2:station-backups-e2e/postgres/",
        "1000 rows, sum 500500",
        "==> cleanup",
        "e2e: ok",
    ] {
        assert!(run.stdout.contains(want), "missing `{want}` in the output");
    }
    // The real verify-redis report (on stderr: a step of another command keeps stdout theirs).
    for want in [
        "verify-redis: env:e2e (docker compose exec redis)",
        "AOF on and live",
        "aof_enabled:1, appendonly=yes",
        "Redis keeps its data: a crash of Redis loses no acknowledged write.",
    ] {
        assert!(run.stderr.contains(want), "missing `{want}` in stderr");
    }
    // The object backup-db.sh reported is the one the e2e printed, drilled and restored.
    let object = run
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("BACKUP_OK path="))
        .and_then(|l| l.split_whitespace().next())
        .expect("backup-db.sh printed its BACKUP_OK line");
    assert!(
        object.starts_with("b2:station-backups-e2e/postgres/") && object.ends_with("_e2e.sql.gz")
    );
    for want in [
        format!("backup --env e2e: {object} ("),
        format!("drill passed: {object} restored into xtask_drill_"),
        format!("own restore check: {object} restored"),
    ] {
        assert!(run.stdout.contains(&want), "missing `{want}` in the output");
    }
    assert_no_secret(&run);
    assert_nothing_left();
    // The images stay (cached by content hash) unless --remove-images.
    assert_eq!(
        docker_lines(&["image", "ls", "-q", "station-e2e/redis:test"]).len(),
        1
    );
    eprintln!("e2e run took {:.1}s", run.secs);
}

#[test]
fn a_failing_step_names_itself_and_still_cleans_up() {
    let _serial = serial();
    if !engine_or_explain("a_failing_step_names_itself_and_still_cleans_up") {
        return;
    }
    // The e2e environment with one more override whose redis healthcheck always fails.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yml");
    std::fs::write(
        &broken,
        "services:\n  redis:\n    healthcheck:\n      test: [\"CMD\", \"false\"]\n      interval: 1s\n      retries: 1\n",
    )
    .unwrap();
    let envs_file = dir.path().join("environments.toml");
    let text = std::fs::read_to_string(root().join("infra/environments.toml")).unwrap();
    let needle = "compose_overrides = [\"infra/e2e/docker-compose.e2e.yml\"]";
    assert!(text.contains(needle));
    let text = text.replace(
        needle,
        &format!(
            "compose_overrides = [\"infra/e2e/docker-compose.e2e.yml\", \"{}\"]",
            broken.display()
        ),
    );
    std::fs::write(&envs_file, text).unwrap();
    let run = run_e2e(
        &[],
        &[("XTASK_ENVIRONMENTS", envs_file.to_str().unwrap())],
        None,
    );
    assert_eq!(run.code, Some(1), "a failed step exits 1");
    assert!(
        run.stderr
            .contains("e2e step 1 (build images, up -d redis postgres, wait healthy) failed")
            && run.stderr.contains("unhealthy"),
        "the error names the step and the cause: {}",
        run.stderr
    );
    assert!(run.stdout.contains("==> cleanup"));
    assert_no_secret(&run);
    assert_nothing_left();
}

#[test]
fn ctrl_c_mid_run_cleans_up_and_exits_130() {
    let _serial = serial();
    if !engine_or_explain("ctrl_c_mid_run_cleans_up_and_exits_130") {
        return;
    }
    // Mid-migration: two projects (the repository file and the old-layout copy) and the old
    // volume exist; the guard must remove them all.
    let run = run_e2e(&[], &[], Some("keys written; down (volumes kept)"));
    assert_eq!(run.code, Some(130), "stdout:\n{}", run.stdout);
    assert!(run.stderr.contains("interrupted, cleaning up"));
    assert!(run.stdout.contains("==> cleanup"));
    assert_nothing_left();
}
