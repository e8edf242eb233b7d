//! `infra/scripts/backup-db.sh` on its own: bad input runs nothing, a truncated dump is refused before
//! upload, an existing object is never overwritten, temp files are cleaned up, shellcheck is clean.

#[path = "backup_support/mod.rs"]
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use support::*;

fn executable(path: &Path, body: &str) {
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn shellcheck_is_clean() {
    let mut files = vec![script()];
    let bench = repo_root().join("bench/backup.sh");
    if bench.exists() {
        files.push(bench);
    }
    let out = Command::new("shellcheck").args(&files).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stdout));
}

#[test]
fn bad_labels_exit_2_and_run_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let marker = dir.path().join("ran");
    // Stand-ins that only record that they were called: nothing may be called.
    let spy = dir.path().join("spy");
    executable(&spy, &format!("#!/bin/sh\ntouch {}\n", marker.display()));
    let long = "a".repeat(300);
    for bad in [
        "a/b",
        "a b",
        "a;b",
        "$(touch /tmp/x)",
        "`id`",
        "it's",
        "a\"b",
        "",
        "-rf",
        &long,
    ] {
        let out = Command::new("bash")
            .arg(script())
            .env("LABEL", bad)
            .env("BACKUP_BUCKET", "b")
            .env("BACKUP_MODE", "direct")
            .env("BACKUP_PG_DUMP", &spy)
            .env("RCLONE", &spy)
            .env("BACKUP_TMPDIR", &tmp)
            .output()
            .unwrap();
        let stderr = text(&out.stderr);
        if bad.is_empty() {
            // An empty LABEL means the default, `nightly`: not bad input. (It then stops at the
            // remote stage because the spy prints no JSON: exit 3; still nothing dumped.)
            assert_ne!(out.status.code(), Some(2), "{stderr}");
            std::fs::remove_file(&marker).ok();
            continue;
        }
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {stderr}");
        assert!(stderr.contains("FAILED stage=input"), "{stderr}");
        assert!(!marker.exists(), "{bad:?}: something ran");
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    }
    // Other bad input is exit 2 as well.
    for (k, v) in [
        ("BACKUP_MODE", "sideways"),
        ("BACKUP_TIMESTAMP", "2026-01-01"),
        ("BACKUP_BUCKET", "a/b"),
    ] {
        let out = Command::new("bash")
            .arg(script())
            .env("BACKUP_BUCKET", "b")
            .env("BACKUP_MODE", "direct")
            .env(k, v)
            .env("RCLONE", &spy)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{k}={v}: {}", text(&out.stderr));
        assert!(!marker.exists());
    }
}

#[test]
fn a_truncated_dump_is_refused_before_upload() {
    let f = Fixture::new();
    let tmp = f.dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    // A dump cut off mid-stream whose producer still exits 0 (as a lost connection behind a tool
    // that swallows the status would): the real pg_dump, truncated.
    let truncating = f.dir.path().join("pg_dump_truncated");
    executable(
        &truncating,
        "#!/bin/bash\npg_dump \"$@\" | head -c 20000\nexit 0\n",
    );
    let out = f
        .script(&tmp)
        .env("LABEL", "trunc")
        .env("BACKUP_PG_DUMP", &truncating)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("FAILED stage=verify"), "{stderr}");
    assert!(stderr.contains("truncated"), "{stderr}");
    assert!(files(&f.objects()).is_empty());
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "temp left behind"
    );

    // A corrupt .gz (the compressor's output cut short) fails the gzip integrity test.
    let cutting = f.dir.path().join("gzip_cut");
    executable(
        &cutting,
        "#!/bin/bash\ncase \"$*\" in *-dc*) exec gzip \"$@\" ;; *) gzip \"$@\" | head -c 3000 ;; esac\n",
    );
    let out = f
        .script(&tmp)
        .env("LABEL", "corrupt")
        .env("BACKUP_GZIP", &cutting)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("FAILED stage=verify"), "{stderr}");
    assert!(stderr.contains("gzip integrity"), "{stderr}");
    assert!(files(&f.objects()).is_empty());

    // A size floor above the real size refuses it too.
    let out = f
        .script(&tmp)
        .env("LABEL", "small")
        .env("BACKUP_MIN_BYTES", "100000000")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("below the floor"));
    assert!(files(&f.objects()).is_empty());
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
}

#[test]
fn an_existing_object_is_never_overwritten() {
    let f = Fixture::new();
    let tmp = f.dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let run = || {
        f.script(&tmp)
            .env("LABEL", "rerun")
            .env("BACKUP_TIMESTAMP", "20260510_030000")
            .output()
            .unwrap()
    };
    let out = run();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let expected = "b2:station-backups/postgres/202605/station_backup_20260510_030000_rerun.sql.gz";
    assert!(
        stdout.starts_with(&format!("BACKUP_OK path={expected} size=")),
        "{stdout}"
    );
    let file = f.objects().join(expected.strip_prefix("b2:").unwrap());
    let hash = md5_of(&file);
    f.psql(
        "station",
        "INSERT INTO accounts VALUES (999999, 'new@example.org')",
    );
    let out = run();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!(md5_of(&file), hash, "the backup was overwritten");
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
}

#[test]
fn a_missing_tool_is_exit_3_and_an_interrupt_still_removes_the_temp_file() {
    let f = Fixture::new();
    let tmp = f.dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let out = f
        .script(&tmp)
        .env("RCLONE", "/nonexistent/rclone")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("FAILED stage=tools"));

    // Interrupted mid-dump (Ctrl-C reaches the whole process group): the partial dump is removed.
    let slow = f.dir.path().join("pg_dump_slow");
    executable(&slow, "#!/bin/bash\npg_dump \"$@\"\nsleep 30\n");
    use std::os::unix::process::CommandExt;
    let child = f
        .script(&tmp)
        .env("LABEL", "interrupted")
        .env("BACKUP_PG_DUMP", &slow)
        .env("BACKUP_GZIP", "pigz")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    // Wait until the temp file holds the dump. (The temp dir also holds the snapshot session's fifos
    // and logs; gzip and igzip hold back their output until the end of such a small input, pigz does not.)
    loop {
        let partial = files(&tmp);
        if partial.iter().any(|p| {
            p.ends_with(".sql.gz")
                && std::fs::metadata(tmp.join(p))
                    .map(|m| m.len() > 0)
                    .unwrap_or(false)
        }) {
            break;
        }
        assert!(start.elapsed().as_secs() < 20, "the dump never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let pgid = child.id().to_string();
    Command::new("kill")
        .args(["-INT", "--", &format!("-{pgid}")])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        start.elapsed().as_secs() < 20,
        "the interrupt was not handled promptly"
    );
    assert!(stderr.contains("FAILED stage=dump"), "{stderr}");
    assert!(
        files(&tmp).is_empty(),
        "temp left behind: {:?}",
        files(&tmp)
    );
    assert!(files(&f.objects()).is_empty());
}

#[test]
fn a_dump_that_hangs_is_stopped_by_the_dump_timeout() {
    // A "server" that accepts connections and never answers: pg_dump (libpq without a connect
    // timeout) waits forever on it. The script must give up after BACKUP_DUMP_TIMEOUT.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    let objects = dir.path().join("objects");
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::create_dir_all(objects.join("station-backups")).unwrap();
    let mut child = Command::new("bash")
        .arg(script())
        .env_remove("AWS_CA_BUNDLE")
        .env_remove("PGCONNECT_TIMEOUT")
        .env("LABEL", "hung")
        .env("BACKUP_MODE", "direct")
        .env("BACKUP_BUCKET", "station-backups")
        .env("BACKUP_TMPDIR", &tmp)
        .env("BACKUP_DUMP_TIMEOUT", "2")
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", port.to_string())
        .env("PGUSER", "station")
        .env("PGDATABASE", "station")
        .env("RCLONE_CONFIG_B2_TYPE", "alias")
        .env("RCLONE_CONFIG_B2_REMOTE", &objects)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed().as_secs() > 60 {
            let _ = child.kill();
            let _ = child.wait();
            panic!("backup-db.sh still hangs after 60 s on a silent database");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // The first connection is the snapshot session's (the dump imports its snapshot).
    assert!(stderr.contains("FAILED stage=snapshot"), "{stderr}");
    assert!(stderr.contains("BACKUP_DUMP_TIMEOUT"), "{stderr}");
    assert!(
        files(&tmp).is_empty(),
        "temp left behind: {:?}",
        files(&tmp)
    );
    assert!(files(&objects).iter().all(|f| !f.ends_with(".sql.gz")));

    // A bad value is bad input, before anything runs.
    let out = Command::new("bash")
        .arg(script())
        .env("BACKUP_BUCKET", "b")
        .env("BACKUP_MODE", "direct")
        .env("BACKUP_DUMP_TIMEOUT", "1h")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

/// A PATH directory with every program of /usr/bin except `without` (as symlinks).
fn path_without(dir: &Path, without: &[&str]) -> std::path::PathBuf {
    let bin = dir.join(format!("bin-without-{}", without.join("-")));
    std::fs::create_dir_all(&bin).unwrap();
    for e in std::fs::read_dir("/usr/bin").unwrap().flatten() {
        let name = e.file_name();
        if !without.iter().any(|w| name == std::ffi::OsStr::new(w)) {
            std::os::unix::fs::symlink(e.path(), bin.join(&name)).unwrap();
        }
    }
    bin
}

#[test]
fn compression_prefers_igzip_then_pigz_then_gzip_and_stays_plain_gzip() {
    let f = Fixture::new();
    let tmp = f.dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    assert!(
        xtask::process::which("igzip").is_some(),
        "igzip is not installed: run infra/scripts/install-deps.sh (Debian package isal)"
    );
    for (label, without, expect) in [
        ("gz-igzip", vec![], "igzip -1 -T"),
        ("gz-pigz", vec!["igzip"], "pigz -1"),
        ("gz-gzip", vec!["igzip", "pigz"], "gzip -1"),
    ] {
        let mut c = f.script(&tmp);
        c.env("LABEL", label);
        if !without.is_empty() {
            c.env("PATH", path_without(f.dir.path(), &without));
        }
        let out = c.output().unwrap();
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "{label}: {stderr}");
        assert!(
            stderr.contains(&format!("compressing with {expect}")),
            "{label}: {stderr}"
        );
        let path = stdout
            .lines()
            .find_map(|l| l.strip_prefix("BACKUP_OK path="))
            .and_then(|l| l.split(' ').next())
            .unwrap();
        let file = f.objects().join(path.strip_prefix("b2:").unwrap());
        // Ordinary gzip: `gzip -t` accepts it and `gzip -dc` gives the whole dump.
        let t = Command::new("gzip").arg("-t").arg(&file).output().unwrap();
        assert!(t.status.success(), "{label}: {}", text(&t.stderr));
        let sql = Command::new("gzip").arg("-dc").arg(&file).output().unwrap();
        let sql = text(&sql.stdout);
        assert!(
            sql.contains("-- PostgreSQL database dump complete"),
            "{label}"
        );
        assert!(sql.contains("COPY public.accounts"), "{label}");
    }
    assert!(
        files(&tmp).is_empty(),
        "temp left behind: {:?}",
        files(&tmp)
    );
}
