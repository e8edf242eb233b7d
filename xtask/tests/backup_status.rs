//! `cargo xtask backup status` against real backups: a PostgreSQL cluster, `backup-db.sh`, the local
//! rclone remote and the S3 test server (`rclone serve s3`, signatures checked).

#[path = "backup_support/mod.rs"]
mod support;

use std::process::Command;

use support::*;
use xtask::services::s3::S3Server;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(mut c: Command) -> Run {
    let o = c.output().unwrap();
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: text(&o.stdout),
        stderr: text(&o.stderr),
    }
}

fn status_json(f: &Fixture, extra: &[(String, String)], args: &[&str]) -> (i32, serde_json::Value) {
    let mut a = vec!["backup", "status", "--env", "t", "--json"];
    a.extend(args);
    let mut c = f.xtask(&a);
    c.envs(extra.iter().cloned());
    let r = run(c);
    let v = serde_json::from_str(r.stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", r.stdout, r.stderr));
    (r.code, v)
}

/// `backup-db.sh` for this fixture with a label and an optional `BACKUP_TIMESTAMP`.
fn script_backup(f: &Fixture, extra: &[(String, String)], label: &str, ts: Option<&str>) {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = f.script(tmp.path());
    c.env("LABEL", label);
    if let Some(ts) = ts {
        c.env("BACKUP_TIMESTAMP", ts);
    }
    if !extra.is_empty() {
        c.env_remove("RCLONE_CONFIG_B2_REMOTE");
        c.envs(extra.iter().cloned());
    }
    let r = run(c);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
}

fn nightly(v: &serde_json::Value) -> &serde_json::Value {
    &v["classes"][0]
}

#[test]
fn status_fails_then_passes_across_a_nightly_and_alarms_on_an_emptied_table() {
    let f = Fixture::new();
    let prom = f.dir.path().join("metrics/station_backup.prom");
    std::fs::create_dir_all(prom.parent().unwrap()).unwrap();
    let prom_arg = prom.display().to_string();

    // Nothing in the bucket: exit 1, no nightly.
    let (code, v) = status_json(&f, &[], &["--prometheus", &prom_arg]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["ok"], false);
    assert_eq!(v["failures"][0], "there is no nightly backup");
    let metrics = std::fs::read_to_string(&prom).unwrap();
    assert!(
        metrics.contains("station_backup_ok{env=\"t\"} 0\n"),
        "{metrics}"
    );

    // A nightly from two days ago (the cron job died since): still exit 1, for its age.
    let old = stamp("2 days ago");
    script_backup(&f, &[], "nightly", Some(&old));
    script_backup(&f, &[], "manual", None);
    let (code, v) = status_json(&f, &[], &[]);
    assert_eq!(code, 1, "{v}");
    assert!(
        v["failures"][0]
            .as_str()
            .unwrap()
            .contains("old (more than 1d 2h)"),
        "{v}"
    );
    assert!(nightly(&v)["newest"]["path"]
        .as_str()
        .unwrap()
        .contains(&old));
    // A wider --max-age accepts it.
    let (code, v) = status_json(&f, &[], &["--max-age", "3d"]);
    assert_eq!(code, 0, "{v}");

    // Tonight's nightly through `cargo xtask backup`: exit 0, fresh, with its manifest, sizes compared.
    let r = run(f.xtask(&["backup", "--env", "t", "--label", "nightly"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (code, v) = status_json(&f, &[], &["--prometheus", &prom_arg]);
    assert_eq!(code, 0, "{v}");
    let n = nightly(&v);
    assert_eq!(n["count"], 2);
    assert!(n["age_seconds"].as_i64().unwrap() < 600, "{v}");
    assert!(n["newest"]["manifest"]
        .as_str()
        .unwrap()
        .ends_with(".sql.gz.json"));
    assert!(
        n["size_change_percent"].as_f64().unwrap().abs() < 20.0,
        "{v}"
    );
    assert_eq!(v["classes"][2]["class"], "manual");
    assert_eq!(v["classes"][2]["count"], 1);
    let metrics = std::fs::read_to_string(&prom).unwrap();
    let size = n["newest"]["size"].as_u64().unwrap();
    assert!(
        metrics.contains("station_backup_ok{env=\"t\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "station_backup_size_bytes{{env=\"t\",label=\"nightly\"}} {size}\n"
        )),
        "{metrics}"
    );
    assert!(metrics.contains("station_backup_age_seconds{env=\"t\",label=\"manual\"} "));
    // Atomic: no temp file left beside it.
    assert_eq!(
        std::fs::read_dir(prom.parent().unwrap()).unwrap().count(),
        1
    );
    // No drill yet: a warning, not a failure. After a drill, the status shows it.
    assert!(v["last_drill"].is_null());
    let r = run(f.xtask(&["backup", "drill", "--env", "t"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (code, v) = status_json(&f, &[], &[]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["last_drill"]["status"], "ok", "{v}");
    assert!(v["last_drill"]["object"]
        .as_str()
        .unwrap()
        .ends_with("_nightly.sql.gz"));

    // The big table is emptied; tonight's nightly "succeeds" at a fraction of the size: exit 1.
    f.psql("station", "TRUNCATE accounts");
    let r = run(f.xtask(&["backup", "--env", "t", "--label", "nightly"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = run(f.xtask(&["backup", "status", "--env", "t", "--prometheus", &prom_arg]));
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("less than half of the previous nightly"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("backup status FAILED"), "{}", r.stdout);
    let metrics = std::fs::read_to_string(&prom).unwrap();
    assert!(
        metrics.contains("station_backup_ok{env=\"t\"} 0\n"),
        "{metrics}"
    );

    // The newest nightly's manifest disappears: exit 1 naming it.
    let (_, v) = status_json(&f, &[], &[]);
    let m = nightly(&v)["newest"]["manifest"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::remove_file(f.objects().join(m.strip_prefix("b2:").unwrap())).unwrap();
    let (code, v) = status_json(&f, &[], &[]);
    assert_eq!(code, 1);
    assert!(v["failures"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x.as_str().unwrap().contains("has no manifest")));
}

#[test]
fn status_over_the_s3_server_goes_from_1_to_0_across_a_nightly() {
    let f = Fixture::new();
    let store = tempfile::tempdir().unwrap();
    let server = S3Server::spawn(&store.path().join("s3")).unwrap();
    let s3 = server.rclone_env("b2");

    let old = stamp("30 hours ago");
    script_backup(&f, &s3, "nightly", Some(&old));
    let (code, v) = status_json(&f, &s3, &[]);
    assert_eq!(code, 1, "{v}");
    assert!(
        v["failures"][0].as_str().unwrap().contains("1d 6h old"),
        "{v}"
    );

    script_backup(&f, &s3, "nightly", None);
    let (code, v) = status_json(&f, &s3, &[]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(nightly(&v)["count"], 2);
    assert!(nightly(&v)["newest"]["manifest"].is_string());

    // A wrong secret: the bucket cannot be listed, exit 3 (not "no backups").
    let mut c = f.xtask(&["backup", "status", "--env", "t"]);
    c.envs(server.rclone_env_with_secret("b2", "not-the-secret-0000"));
    let r = run(c);
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    assert!(!r.stderr.contains(&server.secret_key));
}
