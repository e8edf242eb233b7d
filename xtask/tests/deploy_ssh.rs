//! Remote (ssh) deploys against a real `sshd` on a loopback port: a throwaway host key pinned in a
//! known_hosts file, a throwaway user key, an environments file in a temp directory whose `staging`
//! environment points at it, and a temp directory as the server's `remote_dir`.
//!
//! Covered for real: preflight with the pinned key (and the server checks: docker, compose, env file,
//! disk), refusal of a wrong host key (exit 3, nothing after preflight runs), the file sync into the
//! remote directory, the remote lock (held, stale + `--force-unlock`, released), the remote audit log.
//! The full pipeline against a real Compose stack behind the sshd is `deploy_remote_docker.rs`.

mod deploy_support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use deploy_support::{repo, services_and_backup, steps, Run};
use xtask::services::sshd::{Sshd, SshdOptions};

const SHA: &str = "89abcdef01234567";

struct Remote {
    _dir: tempfile::TempDir,
    sshd: Sshd,
    root: PathBuf,
    remote_dir: PathBuf,
    envs_file: PathBuf,
}

fn whoami() -> String {
    let o = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

impl Remote {
    fn start() -> Remote {
        let dir = tempfile::Builder::new()
            .prefix("xtask-deploy-ssh-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        let sshd = Sshd::start(SshdOptions::with_rclone_config(&d.join("rclone.conf")))
            .expect("sshd (apt-get install openssh-server)");

        // The repository the deploy runs from: the real staging compose file and backup script.
        let root = d.join("repo");
        std::fs::create_dir_all(root.join("infra/scripts")).unwrap();
        std::fs::copy(
            repo().join("docker-compose.staging.yml"),
            root.join("docker-compose.staging.yml"),
        )
        .unwrap();
        std::fs::copy(
            repo().join("infra/scripts/backup-db.sh"),
            root.join("infra/scripts/backup-db.sh"),
        )
        .expect("infra/scripts/backup-db.sh");
        let remote_dir = d.join("server/opt/station-staging");
        std::fs::create_dir_all(&remote_dir).unwrap();
        std::fs::write(remote_dir.join(".env.staging"), "STATION_TAG=\n").unwrap();
        let health_port = health_server();
        let envs_file = d.join("environments.toml");
        let toml = ["staging", "unhealthy", "migrating"]
            .map(|name| {
                env_toml(
                    name,
                    &remote_dir,
                    &format!("http://127.0.0.1:{health_port}/api/{name}"),
                    if name == "migrating" {
                        RECORDING_MIGRATION
                    } else {
                        "docker compose run --rm backend pnpm migration:run"
                    },
                )
            })
            .join("\n");
        std::fs::write(&envs_file, toml).unwrap();
        Remote {
            root,
            remote_dir,
            envs_file,
            sshd,
            _dir: dir,
        }
    }

    fn run_with(&self, known_hosts: &Path, args: &[&str]) -> Run {
        Run::from(
            Command::new(env!("CARGO_BIN_EXE_xtask"))
                .args(args)
                .current_dir(&self.root)
                .env("XTASK_ENVIRONMENTS", &self.envs_file)
                .env("XTASK_ROOT", &self.root)
                .env("STAGING_SSH_HOST", "127.0.0.1")
                .env("STAGING_SSH_PORT", self.sshd.port.to_string())
                .env("STAGING_SSH_KNOWN_HOSTS", known_hosts)
                .env("STAGING_SSH_KEY", self.sshd.user_key())
                .env_remove("GITHUB_ACTIONS")
                .env_remove("AWS_CA_BUNDLE")
                .output()
                .unwrap(),
        )
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_with(&self.sshd.known_hosts(), args)
    }

    /// `deploy --env ENV --sha SHA EXTRA...` with the pinned host key.
    fn deploy(&self, env: &str, extra: &[&str]) -> Run {
        let args = [&["deploy", "--env", env, "--sha", SHA][..], extra].concat();
        self.run(&args)
    }

    fn audit(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.root.join("target/deploy/staging/audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn lock_dir(&self) -> PathBuf {
        self.remote_dir.join(".deploy.lock")
    }
}

/// A migration command that records what the remote side sees (the compose settings exported for
/// it, the release tag, its working directory) instead of running the app's migrations.
const RECORDING_MIGRATION: &str = r#"sh -c "printf '%s|%s|%s|%s|%s' \"$COMPOSE_FILE\" \"$COMPOSE_PROJECT_NAME\" \"$COMPOSE_ENV_FILES\" \"$STATION_TAG\" \"$PWD\" > migrated.txt""#;

/// An environment reached through the test sshd; all share the SSH variables of `staging`.
fn env_toml(name: &str, remote_dir: &Path, health_url: &str, migration: &str) -> String {
    format!(
        r#"[environments.{name}]
transport = "ssh"
description = "{name} on a test sshd"
compose_file = "docker-compose.staging.yml"
compose_project = "station-staging"
env_file = ".env.staging"
remote_dir = "{}"
database = "station"
db_user = "station"
migration_command = '''{migration}'''
health_url = "{health_url}"
{tables}
[environments.{name}.ssh]
host_env = "STAGING_SSH_HOST"
user = "{}"
port_env = "STAGING_SSH_PORT"
known_hosts_env = "STAGING_SSH_KNOWN_HOSTS"
key_env = "STAGING_SSH_KEY"
"#,
        remote_dir.display(),
        whoami(),
        tables = services_and_backup(name, "station-backups-staging", "postgres"),
    )
}

/// A minimal HTTP server on loopback (a thread of the test process): 200 for `/api/staging`, 503 for
/// anything else. The health step polls it from the "server" side (curl/wget over SSH).
fn health_server() -> u16 {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let n = c.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            let ok = req.starts_with("GET /api/staging ");
            let status = if ok {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            let _ = write!(
                c,
                "HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            );
        }
    });
    port
}

#[test]
fn health_polls_the_url_from_the_server_and_fails_when_it_stays_down() {
    let r = Remote::start();
    let out = r.deploy("staging", &["--step", "health"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stdout.contains("healthy: http://127.0.0.1:"),
        "{}",
        out.stdout
    );
    let t0 = std::time::Instant::now();
    let out = r.deploy("unhealthy", &["--step", "health", "--health-tries", "2"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr
            .contains("no healthy answer from http://127.0.0.1:"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("after 2 tries"), "{}", out.stderr);
    assert!(t0.elapsed().as_secs() < 30, "polling is bounded");
}

#[test]
fn preflight_succeeds_with_the_pinned_host_key() {
    let r = Remote::start();
    let out = r.deploy("staging", &["--step", "preflight"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stdout.contains("with the pinned host key"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("server ok: docker, compose, env file"),
        "{}",
        out.stdout
    );
    // Preflight changes nothing on the server.
    assert!(!r.lock_dir().exists());
    assert!(!r.remote_dir.join("infra/scripts/backup-db.sh").exists());
}

#[test]
fn a_wrong_host_key_is_refused_and_nothing_after_preflight_runs() {
    let r = Remote::start();
    let out = r.run_with(
        &r.sshd.wrong_known_hosts(),
        &["deploy", "--env", "staging", "--sha", SHA],
    );
    assert_eq!(out.code, 3, "{}", out.all());
    assert!(
        out.stderr.contains("deploy stopped at step `preflight`"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("No migration was run"),
        "{}",
        out.stderr
    );
    let steps = steps(&r.audit());
    assert_eq!(steps, ["preflight failed", "pipeline failed"]);
    // Nothing reached the server.
    assert!(!r.lock_dir().exists());
    assert!(!r.remote_dir.join("docker-compose.staging.yml").exists());
    assert!(!r.remote_dir.join("deploy-audit.jsonl").exists());
}

#[test]
fn a_deploy_syncs_the_files_then_stops_closed_at_the_backup() {
    let r = Remote::start();
    let out = r.deploy("staging", &[]);
    // No real stack runs behind this sshd: the backup step fails, and the pipeline stops there.
    assert_ne!(out.code, 0, "{}", out.all());
    assert!(
        out.stderr.contains("deploy stopped at step `backup`"),
        "{}",
        out.all()
    );
    assert!(
        out.stderr.contains("No migration was run"),
        "{}",
        out.stderr
    );
    // The files the server needs landed in the remote dir, byte for byte, the script executable.
    for (local, remote) in [
        ("docker-compose.staging.yml", "docker-compose.staging.yml"),
        ("infra/scripts/backup-db.sh", "infra/scripts/backup-db.sh"),
    ] {
        assert_eq!(
            std::fs::read(r.root.join(local)).unwrap(),
            std::fs::read(r.remote_dir.join(remote)).unwrap(),
            "{remote}"
        );
    }
    let mode = std::fs::metadata(r.remote_dir.join("infra/scripts/backup-db.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    // No temp file left, the lock released, the audit log on both sides.
    let leftovers: Vec<_> = std::fs::read_dir(&r.remote_dir)
        .unwrap()
        .chain(std::fs::read_dir(r.remote_dir.join("infra/scripts")).unwrap())
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("xtask-tmp"))
        .collect();
    assert!(leftovers.is_empty());
    assert!(!r.lock_dir().exists(), "remote lock not released");
    let local = steps(&r.audit());
    assert_eq!(
        local,
        [
            "preflight ok",
            "lock ok",
            "sync ok",
            "backup failed",
            "pipeline failed"
        ]
    );
    let remote_log = std::fs::read_to_string(r.remote_dir.join("deploy-audit.jsonl")).unwrap();
    assert_eq!(remote_log.lines().count(), 5, "{remote_log}");
    assert!(remote_log.contains("\"step\":\"backup\",\"status\":\"failed\""));
}

#[test]
fn the_remote_lock_refuses_a_held_lock_and_breaks_a_stale_one_only_when_asked() {
    let r = Remote::start();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let info = |token: &str, expires: u64| {
        serde_json::json!({
            "owner": "ci", "host": "another-runner", "pid": 1, "sha": "feedfacecafe",
            "started_unix": now - 100, "expires_unix": expires, "run_url": null, "token": token
        })
        .to_string()
    };
    std::fs::create_dir_all(r.lock_dir()).unwrap();
    std::fs::write(
        r.lock_dir().join("info.json"),
        info("held-token", now + 3600),
    )
    .unwrap();
    let out = r.deploy("staging", &["--step", "sync", "--force-unlock"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.contains("another deploy holds the lock"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("held by ci on another-runner"),
        "{}",
        out.stderr
    );
    assert!(std::fs::read_to_string(r.lock_dir().join("info.json"))
        .unwrap()
        .contains("held-token"));
    assert!(
        !r.remote_dir.join("infra/scripts/backup-db.sh").exists(),
        "sync ran without the lock"
    );

    // Expired: reported, kept without --force-unlock, broken with it.
    std::fs::write(
        r.lock_dir().join("info.json"),
        info("stale-token", now - 10),
    )
    .unwrap();
    let out = r.deploy("staging", &["--step", "sync"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("stale deploy lock"), "{}", out.stderr);
    assert!(r.lock_dir().exists());
    let out = r.deploy("staging", &["--step", "sync", "--force-unlock"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("broke a stale lock"), "{}", out.stdout);
    assert!(r.remote_dir.join("infra/scripts/backup-db.sh").exists());
    assert!(!r.lock_dir().exists(), "our lock was not released");
}

/// The lock token never is on a command line (ssh's here, the shell's there), where any user of
/// either machine can read it: the release (of our own lock, and the break of a stale one) sends
/// it on stdin, as the acquire sends the lock's information. An `ssh` stand-in first on the PATH
/// records every ssh command line and, at each call, the tokens of the lock then on the server.
#[test]
fn the_remote_lock_token_is_never_on_a_command_line() {
    let r = Remote::start();
    let d = r.root.parent().unwrap().join("standin");
    std::fs::create_dir_all(&d).unwrap();
    let ssh = xtask::process::which("ssh").unwrap();
    let (argv_log, tokens_log) = (d.join("argv.log"), d.join("tokens.log"));
    std::fs::write(
        d.join("ssh"),
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{argv}'\n\
             cat '{info}' >> '{tokens}' 2>/dev/null && echo >> '{tokens}'\nexec '{ssh}' \"$@\"\n",
            argv = argv_log.display(),
            info = r.lock_dir().join("info.json").display(),
            tokens = tokens_log.display(),
            ssh = ssh.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(d.join("ssh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    // A stale lock, broken with --force-unlock, then ours, taken and released.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    std::fs::create_dir_all(r.lock_dir()).unwrap();
    std::fs::write(
        r.lock_dir().join("info.json"),
        serde_json::json!({
            "owner": "ci", "host": "another-runner", "pid": 1, "sha": "feedfacecafe",
            "started_unix": now - 100, "expires_unix": now - 10, "run_url": null,
            "token": "stale-token-0123456789abcdef"
        })
        .to_string(),
    )
    .unwrap();
    let out = Run::from(
        Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args([
                "deploy",
                "--env",
                "staging",
                "--sha",
                SHA,
                "--step",
                "sync",
                "--force-unlock",
            ])
            .current_dir(&r.root)
            .env(
                "PATH",
                format!("{}:{}", d.display(), std::env::var("PATH").unwrap()),
            )
            .env("XTASK_ENVIRONMENTS", &r.envs_file)
            .env("XTASK_ROOT", &r.root)
            .env("STAGING_SSH_HOST", "127.0.0.1")
            .env("STAGING_SSH_PORT", r.sshd.port.to_string())
            .env("STAGING_SSH_KNOWN_HOSTS", r.sshd.known_hosts())
            .env("STAGING_SSH_KEY", r.sshd.user_key())
            .env_remove("GITHUB_ACTIONS")
            .env_remove("AWS_CA_BUNDLE")
            .output()
            .unwrap(),
    );
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("broke a stale lock"), "{}", out.stdout);
    assert!(!r.lock_dir().exists(), "our lock was not released");
    let tokens: std::collections::BTreeSet<String> = std::fs::read_to_string(&tokens_log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["token"].as_str().map(String::from))
        .collect();
    assert!(
        tokens.contains("stale-token-0123456789abcdef") && tokens.len() == 2,
        "the stand-in saw the stale lock and ours: {tokens:?}"
    );
    let argv = std::fs::read_to_string(&argv_log).unwrap();
    for token in &tokens {
        assert!(
            !argv.contains(token.as_str()),
            "the lock token {token} was on ssh's command line:\n{argv}"
        );
    }
}

#[test]
fn migrate_runs_the_configured_command_on_the_server_only_with_the_pre_deploy_backup() {
    let r = Remote::start();
    // The bucket: an rclone `alias` of a local directory, through rclone's own variables.
    // The server lists its bucket with its own rclone config (sshd hands sessions RCLONE_CONFIG).
    let bucket_root = r.root.join("bucket");
    let month = bucket_root.join("station-backups-staging/postgres/202611");
    std::fs::create_dir_all(&month).unwrap();
    std::fs::write(
        r.root.parent().unwrap().join("rclone.conf"),
        format!("[b2]\ntype = alias\nremote = {}\n", bucket_root.display()),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = r.run(args);
        (out.code, out.all())
    };
    let marker = r.remote_dir.join("migrated.txt");
    let (code, out) = run(&["migrate", "--env", "migrating", "--sha", SHA]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("refusing to migrate") && out.contains("pre-deploy-89abcde"),
        "{out}"
    );
    assert!(!marker.exists(), "the migration ran without a backup");

    let gz = Command::new("sh")
        .args(["-c", "printf 'SELECT 1;\\n' | gzip -c"])
        .output()
        .unwrap()
        .stdout;
    std::fs::write(
        month.join("station_backup_20261125_120000_pre-deploy-89abcde.sql.gz"),
        gz,
    )
    .unwrap();
    let (code, out) = run(&["migrate", "--env", "migrating", "--sha", SHA]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        format!(
            "docker-compose.staging.yml|station-staging|.env.staging|{SHA}|{}",
            r.remote_dir.display()
        )
    );
}
