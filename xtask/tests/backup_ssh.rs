//! The `ssh` transport for real: an sshd on loopback (pinned host key, key auth, batch mode) whose
//! sessions get an rclone config through `SetEnv`, and `backup::list`/`stat` run rclone over it in the
//! environment's `remote_dir`, every word shell-quoted.

#[path = "backup_support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};

use support::*;
use xtask::environments::Environments;

struct Sshd(Child);
impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn keygen(path: &Path) {
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
fn list_and_stat_run_rclone_on_the_server_over_ssh() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let (host_key, user_key) = (p.join("host_key"), p.join("user_key"));
    keygen(&host_key);
    keygen(&user_key);
    std::fs::copy(p.join("user_key.pub"), p.join("authorized_keys")).unwrap();
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
    let port = xtask::services::free_port().unwrap();
    let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string();
    let config = format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nStrictModes no\n\
         PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
         UsePAM no\nPidFile {}\nSetEnv RCLONE_CONFIG={} PATH={}\n",
        host_key.display(),
        p.join("authorized_keys").display(),
        p.join("sshd.pid").display(),
        p.join("rclone.conf").display(),
        std::env::var("PATH").unwrap(),
    );
    std::fs::write(p.join("sshd_config"), config).unwrap();
    let _sshd = Sshd(
        Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(p.join("sshd_config"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    xtask::services::wait_for_port(port, std::time::Duration::from_secs(10)).unwrap();
    let pubkey = std::fs::read_to_string(host_key.with_extension("pub")).unwrap();
    let kh = p.join("known_hosts");
    std::fs::write(&kh, format!("[127.0.0.1]:{port} {pubkey}")).unwrap();

    let toml = format!(
        r#"
[environments.remote]
transport = "ssh"
description = "ssh test"
compose_file = "docker-compose.prod.yml"
compose_project = "station"
env_file = ".env.production"
remote_dir = "{}"
database = "station"
db_user = "station"
migration_command = "true"
[environments.remote.services]
redis = "redis"
postgres = "postgres"
backend = "backend"
frontend = "frontend"
[environments.remote.backup]
remote = "b2"
bucket = "station-backups"
prefix = "postgres"
[environments.remote.ssh]
host_env = "BACKUP_TEST_SSH_HOST"
user = "{user}"
port_env = "BACKUP_TEST_SSH_PORT"
known_hosts_env = "BACKUP_TEST_SSH_KNOWN_HOSTS"
key_env = "BACKUP_TEST_SSH_KEY"
"#,
        remote_dir.display()
    );
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
            .env("BACKUP_TEST_SSH_HOST", "127.0.0.1")
            .env("BACKUP_TEST_SSH_PORT", port.to_string())
            .env("BACKUP_TEST_SSH_KNOWN_HOSTS", &kh)
            .env("BACKUP_TEST_SSH_KEY", &user_key)
            .output()
            .unwrap()
    };
    // The drill lists the server's backups over SSH, picks the newest, and then (no Compose project
    // runs on this test server) fails creating the scratch database: exit 1, naming the backup.
    let out = xtask(&["backup", "drill", "--env", "remote"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("drill: restoring b2:station-backups/postgres/202605/station_backup_20260510_030000_pre-deploy-abc1234.sql.gz (17 bytes)"),
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
    let other = p.join("other_key");
    keygen(&other);
    let wrong = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    std::fs::write(&kh, format!("[127.0.0.1]:{port} {wrong}")).unwrap();
    let out = xtask(&["backup", "drill", "--env", "remote"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
}
