//! `cargo xtask backup prune` on a real bucket: 14 months of backups made by `backup-db.sh` with
//! `BACKUP_TIMESTAMP` (dumps and manifests of a real PostgreSQL cluster, the local rclone remote),
//! deploys and a restore in the audit log; the golden keep/delete table, a dry run that deletes
//! nothing, `--apply` deleting exactly the planned objects and their manifests, and the deploy lock
//! refusing it.

#[path = "backup_support/mod.rs"]
mod support;

use std::process::Command;

use support::*;

/// (BACKUP_TIMESTAMP, LABEL, keep?) — the golden table. Deploys in the audit log: eeeeeee,
/// ddddddd, bbbbbbb (newest first); bbbbbbb's backup was used by a restore just now; flags
/// `--keep-pre-deploy 2 --label manual-old`, other limits the defaults (7 daily, 4 weekly, 12 monthly).
const GOLDEN: &[(&str, &str, bool)] = &[
    ("20251020_030000", "nightly", false),
    ("20251110_030000", "nightly", false),
    ("20251201_030000", "nightly", false),
    ("20251215_120000", "manual", true),
    ("20251224_030000", "nightly", true),
    ("20260110_120000", "manual-old", false),
    ("20260115_030000", "nightly", true),
    ("20260214_030000", "nightly", true),
    ("20260303_030000", "nightly", true),
    ("20260430_030000", "nightly", true),
    ("20260515_030000", "nightly", true),
    ("20260601_100000", "pre-deploy-aaaaaaa", false),
    ("20260610_030000", "nightly", true),
    ("20260704_030000", "nightly", true),
    ("20260820_030000", "nightly", true),
    ("20260901_100000", "pre-deploy-bbbbbbb", true),
    ("20260930_030000", "nightly", true),
    ("20261026_030000", "nightly", true),
    ("20261101_120000", "manual", true),
    ("20261102_030000", "nightly", true),
    ("20261109_030000", "nightly", true),
    ("20261110_100000", "pre-deploy-ccccccc", false),
    ("20261116_030000", "nightly", false),
    ("20261120_030000", "nightly", false),
    ("20261121_030000", "nightly", false),
    ("20261122_020000", "nightly", false),
    ("20261122_230000", "nightly", true),
    ("20261123_030000", "nightly", true),
    ("20261124_030000", "nightly", true),
    ("20261125_030000", "nightly", true),
    ("20261125_100000", "pre-deploy-ddddddd", true),
    ("20261126_030000", "nightly", true),
    ("20261127_030000", "nightly", true),
    ("20261128_030000", "nightly", true),
    ("20261128_100000", "pre-deploy-eeeeeee", true),
    ("20261129_030000", "nightly", true),
];

/// The rule of a few rows, checked too.
const RULES: &[(&str, &str)] = &[
    (
        "20261129_030000",
        "newest nightly, daily 2026-11-29, weekly week of 2026-11-23, monthly 2026-11",
    ),
    ("20261122_230000", "weekly week of 2026-11-16"),
    ("20251224_030000", "monthly 2025-12"),
    (
        "20251110_030000",
        "beyond --keep-daily 7 --keep-weekly 4 --keep-monthly 12",
    ),
    ("20261125_100000", "deploy ddddddd (#2 of the last 2)"),
    ("20261110_100000", "not among the last 2 deploys"),
    ("20260110_120000", "--label manual-old"),
    (
        "20251215_120000",
        "manual backups are kept unless --label names them",
    ),
];

fn rel(ts: &str, label: &str) -> String {
    format!(
        "station-backups/postgres/{}/station_backup_{ts}_{label}.sql.gz",
        &ts[..6]
    )
}

fn now_rfc3339() -> String {
    let o = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%S.000Z"])
        .output()
        .unwrap();
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

fn audit_line(step: &str, sha: &str, end: &str, obj: Option<&str>) -> String {
    serde_json::json!({
        "env": "t", "step": step, "status": "ok", "start": end, "end": end, "duration_ms": 0,
        "sha": sha, "actor": "ci", "backup_object": obj, "message": ""
    })
    .to_string()
}

fn prune(f: &Fixture, extra: &[&str]) -> (i32, String, String) {
    let mut a = vec![
        "backup",
        "prune",
        "--env",
        "t",
        "--keep-pre-deploy",
        "2",
        "--label",
        "manual-old",
    ];
    a.extend(extra);
    let o = f.xtask(&a).output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        text(&o.stdout),
        text(&o.stderr),
    )
}

#[test]
fn fourteen_months_golden_plan_dry_run_and_apply() {
    let f = Fixture::new();
    let tmp = tempfile::tempdir().unwrap();
    for (ts, label, _) in GOLDEN {
        let o = f
            .script(tmp.path())
            .env("LABEL", label)
            .env("BACKUP_TIMESTAMP", ts)
            .output()
            .unwrap();
        assert!(o.status.success(), "{ts} {label}: {}", text(&o.stderr));
    }
    // One nightly of the old script, without a manifest.
    let bare = f
        .objects()
        .join(format!("{}.json", rel("20260704_030000", "nightly")));
    std::fs::remove_file(bare).unwrap();
    let sha = |c: char| c.to_string().repeat(40);
    let used = format!("b2:{}", rel("20260901_100000", "pre-deploy-bbbbbbb"));
    let audit = [
        audit_line("pipeline", &sha('b'), "2026-09-01T10:05:00.000Z", None),
        audit_line("pipeline", &sha('d'), "2026-11-25T10:05:00.000Z", None),
        audit_line("pipeline", &sha('e'), "2026-11-28T10:05:00.000Z", None),
        audit_line("restore:download", "", &now_rfc3339(), Some(&used)),
    ]
    .join("\n");
    let audit_file = f.state_dir.join("deploy-audit.jsonl");
    std::fs::write(&audit_file, audit + "\n").unwrap();
    let before = files(&f.objects());
    assert_eq!(before.len(), 2 * GOLDEN.len() - 1);

    // The dry run: the golden table, nothing deleted.
    let (code, out, err) = prune(&f, &["--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let decisions = v["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), GOLDEN.len());
    for (d, (ts, label, keep)) in decisions.iter().zip(GOLDEN) {
        assert_eq!(d["path"], format!("b2:{}", rel(ts, label)));
        assert_eq!(d["keep"], *keep, "{d}");
        if let Some((_, rule)) = RULES.iter().find(|(t, _)| t == ts) {
            let joined: Vec<&str> = d["rules"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap())
                .collect();
            assert_eq!(joined.join(", "), *rule, "{d}");
        }
    }
    let bbb = decisions
        .iter()
        .find(|d| d["path"] == used.as_str())
        .unwrap();
    assert!(bbb["rules"][0]
        .as_str()
        .unwrap()
        .starts_with("used by restore:download at "));
    assert_eq!(v["deleted"].as_array().unwrap().len(), 0);
    assert_eq!(files(&f.objects()), before, "the dry run deleted something");
    // The text form says what happens and deletes nothing either.
    let (code, out, _) = prune(&f, &[]);
    assert_eq!(code, 0);
    assert!(out.contains("36 backups: 26 kept, 10 to delete"), "{out}");
    assert!(out.contains("dry run: nothing was deleted"), "{out}");
    assert_eq!(files(&f.objects()), before);

    // A deploy holds the lock: --apply refuses, nothing deleted.
    {
        // A live deploy's lock file (this test process is its "deploy", alive, on this host).
        let lock_file = f.state_dir.join("deploy.lock");
        let lock = lock_file_text(std::process::id(), "abc1234", "test-token");
        std::fs::write(&lock_file, lock).unwrap();
        let (code, _, err) = prune(&f, &["--apply"]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("another deploy holds the lock"), "{err}");
        assert_eq!(files(&f.objects()), before);
        // Not ours: left in place.
        assert!(lock_file.exists());
        std::fs::remove_file(&lock_file).unwrap();
    }

    // --apply: exactly the planned objects and their manifests go.
    let (code, out, err) = prune(&f, &["--apply", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let mut expected: Vec<String> = before.clone();
    let mut gone = Vec::new();
    for (ts, label, keep) in GOLDEN {
        if !keep {
            let r = rel(ts, label);
            gone.push(r.clone());
            gone.push(format!("{r}.json"));
        }
    }
    expected.retain(|p| !gone.contains(p));
    assert_eq!(files(&f.objects()), expected);
    let mut deleted: Vec<String> = v["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().strip_prefix("b2:").unwrap().to_string())
        .collect();
    deleted.sort();
    gone.sort();
    assert_eq!(deleted, gone);
    // Recorded in the audit log, one record per removed backup.
    let log = std::fs::read_to_string(&audit_file).unwrap();
    let pruned: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["step"] == "prune")
        .collect();
    assert_eq!(pruned.len(), 10);
    assert!(pruned.iter().all(|r| r["status"] == "ok"));
    // The lock was released, and a second run has nothing left to delete.
    assert!(!f.state_dir.join("deploy.lock").exists());
    let (code, out, _) = prune(&f, &["--apply"]);
    assert_eq!(code, 0);
    assert!(out.contains("26 backups: 26 kept, 0 to delete"), "{out}");
    assert_eq!(files(&f.objects()), expected);
}
