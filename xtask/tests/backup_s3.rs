//! `cargo xtask backup` against a real S3 server that checks signatures (`rclone serve s3` with a
//! key pair), with the remote `b2` redefined through rclone's own `RCLONE_CONFIG_B2_*` variables.

#[path = "backup_support/mod.rs"]
mod support;

use std::time::Instant;

use support::*;
use xtask::services::s3::S3Server;

#[test]
fn s3_upload_is_proven_and_drilled_and_a_wrong_secret_fails_fast_with_no_object() {
    let f = Fixture::new();
    let store = tempfile::tempdir().unwrap();
    let server = S3Server::spawn(&store.path().join("s3")).unwrap();
    // The server's key is not on its argv either.
    let argv = xtask::services::procscan::argv_of(server.pid().unwrap()).unwrap();
    assert!(!argv.contains(&server.secret_key));

    // Correct credentials: the object is under postgres/YYYYMM/, with the hash the xtask reports.
    let mut cmd = f.xtask(&["backup", "--env", "t", "--label", "s3-ok", "--json"]);
    cmd.envs(server.rclone_env("b2"));
    let (out, hits, _) = run_watching_argv(cmd, &server.secret_key);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(hits.is_empty(), "S3 secret on an argv: {hits:?}");
    assert!(!stdout.contains(&server.secret_key) && !stderr.contains(&server.secret_key));
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let path = v["path"].as_str().unwrap();
    let month = this_month();
    assert!(
        path.starts_with(&format!(
            "b2:station-backups/postgres/{month}/station_backup_"
        )),
        "{path}"
    );
    let on_disk = server.dir.join(path.strip_prefix("b2:").unwrap());
    assert_eq!(v["hash_type"], "md5");
    assert_eq!(v["hash"].as_str().unwrap(), md5_of(&on_disk));
    assert_eq!(
        v["size"].as_u64().unwrap(),
        std::fs::metadata(&on_disk).unwrap().len()
    );

    // The drill downloads it from S3 and restores it.
    let mut cmd = f.xtask(&["backup", "drill", "--env", "t", "--json"]);
    cmd.envs(server.rclone_env("b2"));
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["passed"], true);
    assert_eq!(report["object"]["path"], path);

    // Wrong secret: refused within seconds, with the stage named, and nothing uploaded.
    let before = files(&server.dir);
    let start = Instant::now();
    let mut cmd = f.xtask(&["backup", "--env", "t", "--label", "s3-bad"]);
    cmd.envs(server.rclone_env_with_secret("b2", "not-the-secret-0000"));
    let out = cmd.output().unwrap();
    let stderr = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(start.elapsed().as_secs() < 10, "{:?}", start.elapsed());
    assert!(stderr.contains("stage=remote"), "{stderr}");
    assert!(stderr.contains("403"), "{stderr}");
    assert_eq!(files(&server.dir), before);
    assert!(!files(&server.dir).iter().any(|p| p.contains("s3-bad")));
}
