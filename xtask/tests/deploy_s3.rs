//! Fail-closed against a signature-checking S3 server (`rclone serve s3 --auth-key`): with a wrong
//! secret the backup upload is refused, the deploy stops at the backup step and no migration runs;
//! with the right secret the same deploy goes through (so the failure was the secret).

mod deploy_support;

use deploy_support::{steps, TestEnv};
use xtask::services::s3::S3Server;

#[test]
fn a_wrong_secret_stops_the_deploy_at_the_backup_and_the_right_one_passes() {
    let objects = tempfile::tempdir().unwrap();
    let bucket = objects.path().join("s3/station-backups");
    std::fs::create_dir_all(&bucket).unwrap();
    let s3 = S3Server::spawn(&objects.path().join("s3")).unwrap();
    let right = s3.rclone_env("b2");

    let mut t = TestEnv::local(0o711);
    t.extra_env = s3.rclone_env_with_secret("b2", "wrong-secret-0c9d");
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
    let steps = steps(&t.audit());
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
    let uploaded = walk(&bucket);
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
