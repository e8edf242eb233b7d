//! The `ssh` transport for real: an sshd on loopback (pinned host key, key auth, batch mode) whose
//! sessions get an rclone config through `SetEnv`, and `backup::list`/`stat` run rclone over it in the
//! environment's `remote_dir`, every word shell-quoted.

#[path = "backup_support/mod.rs"]
mod support;

use std::process::Command;

use support::*;
use xtask::environments::Environments;
use xtask::services::sshd::{Sshd, SshdOptions};

#[test]
fn list_and_stat_run_rclone_on_the_server_over_ssh() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    // The server's own rclone config: remote `b2` is a directory there.
    let objects = p.join("server-objects");
    let month_dir = objects.join("station-backups/postgres/202605");
    std::fs::create_dir_all(&month_dir).unwrap();
    std::fs::write(
        month_dir.join("station_backup_20260510_030000_pre-deploy-abc1234.sql.gz"),
        b"not really a dump",
    )
    .unwrap();
    std::fs::write(month_dir.join("unrelated.txt"), b"x").unwrap();
    std::fs::write(
        p.join("rclone.conf"),
        format!("[b2]\ntype = alias\nremote = {}\n", objects.display()),
    )
    .unwrap();
    let remote_dir = p.join("remote-dir");
    std::fs::create_dir(&remote_dir).unwrap();
    let sshd = Sshd::start(SshdOptions::with_rclone_config(&p.join("rclone.conf"))).unwrap();
    let kh = sshd.known_hosts();

    let toml = ssh_remote_toml(&remote_dir, "BACKUP_TEST");
    let file = p.join("environments.toml");
    std::fs::write(&file, &toml).unwrap();
    let envs = Environments::parse(&toml, &file, &repo_root()).unwrap();
    assert!(envs.get("remote").is_ok());

    // Run through the binary so the SSH variables are the child's, not this test process's.
    let xtask = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(args)
            .env("XTASK_ENVIRONMENTS", &file)
            .env("XTASK_ROOT", repo_root())
            .envs(ssh_vars("BACKUP_TEST", &sshd))
            .output()
            .unwrap()
    };
    // The drill lists the server's backups over SSH, picks the newest, and then (no Compose project
    // runs on this test server) fails reading the live database's facts, before any scratch
    // database is made: exit 1, naming the backup.
    let out = xtask(&["backup", "drill", "--env", "remote"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("drill FAILED for b2:station-backups/postgres/202605/station_backup_20260510_030000_pre-deploy-abc1234.sql.gz: reading the live database's facts"),
        "{stderr}"
    );
    // An unknown object is bad input (exit 2), found out over SSH.
    let out = xtask(&[
        "backup",
        "drill",
        "--env",
        "remote",
        "station_backup_20990101_000000_x.sql.gz",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    // A host key that does not match is refused: exit 3, never a prompt.
    std::fs::copy(sshd.wrong_known_hosts(), &kh).unwrap();
    let out = xtask(&["backup", "drill", "--env", "remote"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
}
