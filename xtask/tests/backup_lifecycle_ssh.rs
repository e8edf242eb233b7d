//! `backup status`, `prune` and `schedule` on a server reached over SSH (a real sshd on loopback with
//! pinned keys): the server's own rclone config (remote `b2` = a directory there), its audit log,
//! its deploy lock, its crontab (a `crontab` stand-in on the session's PATH). Nothing of it runs on
//! this side of the connection.

#[path = "backup_support/mod.rs"]
mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use support::*;
use xtask::services::sshd::{Sshd, SshdOptions};

const FAKE_CRONTAB: &str = r#"#!/bin/sh
f="$FAKE_CRONTAB_FILE"
case "$1" in
  -l) if [ -f "$f" ]; then cat "$f"; else echo "no crontab" >&2; exit 1; fi ;;
  -r) rm -f "$f" ;;
  -) cat > "$f" ;;
  *) exit 2 ;;
esac
"#;

#[test]
fn status_prune_and_schedule_run_on_the_server() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let objects = p.join("server-objects");
    let put = |ts: &str, manifest: bool| {
        let dir = objects.join(format!("station-backups/postgres/{}", &ts[..6]));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join(format!("station_backup_{ts}_nightly.sql.gz"));
        std::fs::write(&f, vec![b'x'; 4096]).unwrap();
        if manifest {
            std::fs::write(format!("{}.json", f.display()), b"{}").unwrap();
        }
        format!(
            "station-backups/postgres/{}/station_backup_{ts}_nightly.sql.gz",
            &ts[..6]
        )
    };
    let fresh = put(&stamp("1 hour ago"), true);
    let kept_old = put("20250102_030000", true);
    let gone = put("20250101_030000", true);
    std::fs::write(
        p.join("rclone.conf"),
        format!("[b2]\ntype = alias\nremote = {}\n", objects.display()),
    )
    .unwrap();
    let remote_dir = p.join("remote-dir");
    std::fs::create_dir(&remote_dir).unwrap();
    let drill = serde_json::json!({"env":"remote","step":"drill","status":"ok",
        "start":"2026-11-30T04:00:00.000Z","end":"2026-11-30T04:00:00.000Z","duration_ms":0,
        "sha":"","actor":"cron","backup_object":format!("b2:{kept_old}"),"message":"restored and matched"});
    std::fs::write(remote_dir.join("deploy-audit.jsonl"), format!("{drill}\n")).unwrap();
    let bin = p.join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::write(bin.join("crontab"), FAKE_CRONTAB).unwrap();
    std::fs::set_permissions(bin.join("crontab"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let spool = p.join("spool");
    let mut opts = SshdOptions::with_rclone_config(&p.join("rclone.conf"));
    for (k, v) in opts.set_env.iter_mut() {
        if k == "PATH" {
            *v = format!("{}:{v}", bin.display());
        }
    }
    opts.set_env
        .push(("FAKE_CRONTAB_FILE".into(), spool.display().to_string()));
    let sshd = Sshd::start(opts).unwrap();
    let toml = ssh_remote_toml(&remote_dir, "LC_TEST");
    let file = p.join("environments.toml");
    std::fs::write(&file, &toml).unwrap();
    let root = tempfile::tempdir().unwrap();
    // XTASK_ROOT is a copy-free stand-in: records of this machine go under it, not the repository.
    for sub in ["infra", "xtask"] {
        std::os::unix::fs::symlink(repo_root().join(sub), root.path().join(sub)).unwrap();
    }
    std::fs::copy(
        repo_root().join("docker-compose.prod.yml"),
        root.path().join("docker-compose.prod.yml"),
    )
    .unwrap();
    let xtask = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(args)
            .env("XTASK_ENVIRONMENTS", &file)
            .env("XTASK_ROOT", root.path())
            .envs(ssh_vars("LC_TEST", &sshd))
            .env("PATH", std::env::var("PATH").unwrap())
            .env_remove("FAKE_CRONTAB_FILE")
            .output()
            .unwrap();
        (
            o.status.code().unwrap_or(-1),
            text(&o.stdout),
            text(&o.stderr),
        )
    };

    // status: listed with the server's rclone, the last drill from the server's audit log.
    let (code, out, err) = xtask(&["backup", "status", "--env", "remote", "--json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["classes"][0]["newest"]["path"], format!("b2:{fresh}"));
    assert_eq!(v["classes"][0]["count"], 3);
    assert_eq!(v["last_drill"]["status"], "ok");
    assert!(v["schedule"].is_null());

    // prune --apply: the server's lock and objects; the removal lands in the server's audit log.
    let (code, out, err) = xtask(&[
        "backup",
        "prune",
        "--env",
        "remote",
        "--keep-daily",
        "2",
        "--apply",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains(&format!("deleted b2:{gone}")), "{out}");
    assert!(!objects.join(&gone).exists());
    assert!(!objects.join(format!("{gone}.json")).exists());
    assert!(objects.join(&kept_old).exists() && objects.join(&fresh).exists());
    let audit = std::fs::read_to_string(remote_dir.join("deploy-audit.jsonl")).unwrap();
    assert!(audit.contains("\"step\":\"prune\""), "{audit}");
    assert!(!remote_dir.join(".deploy.lock").exists());

    // schedule: the server's crontab; the job's files in remote_dir, with no secret in them.
    let (code, out, err) = xtask(&["backup", "schedule", "--env", "remote", "--via", "cron"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let line = std::fs::read_to_string(&spool).unwrap();
    let jobdir = remote_dir.join("nightly-backup");
    assert_eq!(
        line.trim(),
        format!(
            "0 3 * * * /bin/bash {j}/nightly.sh {w} {j} # station-backup:remote",
            j = jobdir.display(),
            w = remote_dir.display()
        )
    );
    let envf = std::fs::read_to_string(jobdir.join("nightly.env")).unwrap();
    assert!(
        envf.contains("\nBACKUP_MODE=compose\n") && envf.contains("\nLABEL=nightly\n"),
        "{envf}"
    );
    assert!(
        !envf.contains("PASSWORD") && !envf.contains("RCLONE_CONFIG_"),
        "{envf}"
    );
    let (code, out, _) = xtask(&["backup", "status", "--env", "remote", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["schedule"]["via"], "cron", "{v}");
    let (code, _, err) = xtask(&["backup", "schedule", "--env", "remote", "--remove"]);
    assert_eq!(code, 0, "{err}");
    assert!(!spool.exists() || std::fs::read_to_string(&spool).unwrap().trim().is_empty());
    assert!(!jobdir.join("nightly.env").exists());
}
