//! Issue 12, the compose items: `compose apply|check` touch only the file they were pointed at,
//! keep what it is (symlink, owner, group, mode, read-only), refuse a rename `check` would then
//! fail, bound every read, and validate/quote the project name. Each test failed on the code
//! before the fix.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Run;

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/compose")
        .join(rel)
}

/// A compose file that `apply` changes (AOF off, `redis_data` renamed).
fn non_durable() -> Vec<u8> {
    std::fs::read(fixture("apply/string_command/before.yml")).unwrap()
}

fn durable() -> Vec<u8> {
    std::fs::read(fixture("apply/string_command/after.yml")).unwrap()
}

/// Run xtask in `dir` with a hard deadline (a hang is a failure, not a stuck test) and an
/// address-space limit (an unbounded read fails instead of eating the machine's memory).
fn xtask(dir: &Path, args: &[&str]) -> Run {
    let mut child = Command::new("sh")
        .args(["-c", "ulimit -v 4000000; exec \"$@\"", "sh"])
        .arg(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .current_dir(dir)
        .env_remove("XTASK_ENVIRONMENTS")
        .env_remove("XTASK_ROOT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run xtask");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("xtask {args:?} still running after 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Run::from(child.wait_with_output().unwrap())
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn apply_on_a_symlink_edits_the_target_and_keeps_the_link() {
    let tmp = tempfile::tempdir().unwrap();
    let real_dir = tmp.path().join("real");
    let link_dir = tmp.path().join("links");
    std::fs::create_dir_all(&real_dir).unwrap();
    std::fs::create_dir_all(&link_dir).unwrap();
    let target = real_dir.join("docker-compose.yml");
    std::fs::write(&target, non_durable()).unwrap();
    let link = link_dir.join("docker-compose.yml");
    std::os::unix::fs::symlink("../real/docker-compose.yml", &link).unwrap();

    let r = xtask(
        &link_dir,
        &["compose", "apply", "--file", "docker-compose.yml"],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let lm = std::fs::symlink_metadata(&link).unwrap();
    assert!(lm.file_type().is_symlink(), "the link was replaced");
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        Path::new("../real/docker-compose.yml")
    );
    assert_eq!(std::fs::read(&target).unwrap(), durable());
    // No temp file left in either directory.
    assert_eq!(entries(&real_dir), ["docker-compose.yml"]);
    assert_eq!(entries(&link_dir), ["docker-compose.yml"]);
    // And check, through the link, passes the durability rules now.
    let r = xtask(
        &link_dir,
        &["compose", "check", "--file", "docker-compose.yml"],
    );
    assert!(!r.stdout.contains("[aof]"), "{}", r.all());
}

fn uid_gid(user: &str) -> (u32, u32) {
    let id = |flag: &str| {
        let out = Command::new("id").args([flag, user]).output().unwrap();
        assert!(out.status.success(), "no user {user}");
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse::<u32>()
            .unwrap()
    };
    (id("-u"), id("-g"))
}

#[test]
fn apply_keeps_owner_group_and_mode() {
    let (uid, gid) = uid_gid("postgres");
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("docker-compose.yml");
    std::fs::write(&file, non_durable()).unwrap();
    std::os::unix::fs::chown(&file, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();

    let r = xtask(
        tmp.path(),
        &["compose", "apply", "--file", "docker-compose.yml"],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(std::fs::read(&file).unwrap(), durable());
    let m = std::fs::metadata(&file).unwrap();
    assert_eq!((m.uid(), m.gid()), (uid, gid), "owner and group kept");
    assert_eq!(m.permissions().mode() & 0o7777, 0o640, "mode kept");
}

#[test]
fn apply_refuses_a_read_only_file() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("docker-compose.yml");
    std::fs::write(&file, non_durable()).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o444)).unwrap();
    let r = xtask(
        tmp.path(),
        &["compose", "apply", "--file", "docker-compose.yml"],
    );
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("read-only (mode 0444)"), "{}", r.stderr);
    assert_eq!(std::fs::read(&file).unwrap(), non_durable());
    let m = std::fs::metadata(&file).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o444);
    // A dry run still works: it writes nothing.
    let r = xtask(
        tmp.path(),
        &[
            "compose",
            "apply",
            "--file",
            "docker-compose.yml",
            "--dry-run",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    // An already durable read-only file is fine: nothing to write.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&file, durable()).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o444)).unwrap();
    let r = xtask(
        tmp.path(),
        &["compose", "apply", "--file", "docker-compose.yml"],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("nothing written"), "{}", r.stdout);
}

#[test]
fn rename_to_a_name_check_rejects_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("c.yml");
    std::fs::write(&file, non_durable()).unwrap();
    for bad in [
        "redis_data=redis_store",
        "redis_data=redis_data",
        "redis_data=_aof",
    ] {
        let r = xtask(
            tmp.path(),
            &["compose", "apply", "--file", "c.yml", "--rename", bad],
        );
        assert_eq!(r.code, 2, "{bad}: {}", r.all());
        assert!(
            r.stderr.contains("must end in `_aof`"),
            "{bad}: {}",
            r.stderr
        );
        assert_eq!(std::fs::read(&file).unwrap(), non_durable(), "{bad}");
    }
    // A NEW ending in `_aof` works, and check then passes the volume rule.
    let r = xtask(
        tmp.path(),
        &[
            "compose",
            "apply",
            "--file",
            "c.yml",
            "--rename",
            "redis_data=kv_aof",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let r = xtask(tmp.path(), &["compose", "check", "--file", "c.yml"]);
    assert!(!r.stdout.contains("[data-volume]"), "{}", r.all());
}

#[test]
fn reads_are_regular_files_only_and_capped() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("fifo.yml");
    let st = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(st.success());
    let big = tmp.path().join("big.yml");
    {
        let mut text = String::from("services:\n  redis:\n    image: redis\n");
        while text.len() <= 5 * 1024 * 1024 {
            text.push_str("# padding padding padding padding padding padding padding padding\n");
        }
        std::fs::write(&big, text).unwrap();
    }
    let fifo_s = fifo.display().to_string();
    let big_s = big.display().to_string();
    for (path, what) in [
        ("/dev/zero", "a device, not a regular file"),
        (fifo_s.as_str(), "a FIFO, not a regular file"),
        (big_s.as_str(), "larger than the 4 MiB cap"),
    ] {
        for cmd in ["check", "apply"] {
            let t0 = Instant::now();
            let r = xtask(tmp.path(), &["compose", cmd, "--file", path]);
            assert_eq!(r.code, 2, "{cmd} {path}: {}", r.all());
            assert!(r.stderr.contains(what), "{cmd} {path}: {}", r.stderr);
            assert!(r.stderr.contains("4 MiB"), "{cmd} {path}: {}", r.stderr);
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "{cmd} {path}: took {:?}",
                t0.elapsed()
            );
        }
    }
}

#[test]
fn project_is_validated_and_the_volume_rm_hint_quoted() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("c.yml");
    for bad in ["Demo", "-demo", "de mo", "demo;touch x", ""] {
        std::fs::write(&file, non_durable()).unwrap();
        let arg = format!("--project={bad}");
        let r = xtask(tmp.path(), &["compose", "apply", "--file", "c.yml", &arg]);
        assert_eq!(r.code, 2, "{bad:?}: {}", r.all());
        assert!(
            r.stderr.contains("is not a Compose project name"),
            "{bad:?}: {}",
            r.stderr
        );
        assert_eq!(std::fs::read(&file).unwrap(), non_durable(), "{bad:?}");
    }
    let r = xtask(
        tmp.path(),
        &[
            "compose",
            "apply",
            "--file",
            "c.yml",
            "--project",
            "demo_1-x",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout
            .contains("Once the new volume works, `docker volume rm demo_1-x_redis_data` frees"),
        "{}",
        r.stdout
    );
}
