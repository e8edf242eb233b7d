//! Parsing what the script and rclone print (pure: text in, values out).

use serde::Deserialize;

use super::RemoteObject;
use crate::error::{Error, Result};

/// The success line `backup-db.sh` prints last on stdout.
pub const OK_PREFIX: &str = "BACKUP_OK ";

/// What the `BACKUP_OK` line says: the verified dump object, and since the manifest exists, the dump's
/// sha256 and the manifest's path (absent in lines of older scripts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OkLine {
    pub object: RemoteObject,
    pub sha256: Option<String>,
    pub manifest: Option<String>,
}

/// Parse `BACKUP_OK path=<p> size=<n> hash_type=<t> hash=<hex> [sha256=<hex> manifest=<p>.json]`.
pub fn parse_ok(line: &str) -> Option<OkLine> {
    let rest = line.trim_end().strip_prefix(OK_PREFIX)?;
    let (mut path, mut size, mut hash_type, mut hash) = (None, None, None, None);
    let (mut sha256, mut manifest) = (None, None);
    for field in rest.split(' ') {
        let (k, v) = field.split_once('=')?;
        match k {
            "path" => path = Some(v.to_string()),
            "size" => size = v.parse::<u64>().ok(),
            "hash_type" => hash_type = Some(v.to_string()),
            "hash" => hash = Some(v.to_string()),
            "sha256" => sha256 = Some(v.to_string()),
            "manifest" => manifest = Some(v.to_string()),
            _ => return None,
        }
    }
    let obj = RemoteObject {
        path: path?,
        size: size?,
        hash: hash?,
        hash_type: hash_type?,
    };
    let hex_len = match obj.hash_type.as_str() {
        "md5" => 32,
        "sha1" => 40,
        _ => return None,
    };
    let hex = |h: &str, len: usize| h.len() == len && h.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex(&obj.hash, hex_len) || sha256.as_deref().is_some_and(|h| !hex(h, 64)) {
        return None;
    }
    if manifest
        .as_deref()
        .is_some_and(|m| m != super::manifest::manifest_path(&obj.path))
    {
        return None;
    }
    Some(OkLine {
        object: obj,
        sha256,
        manifest,
    })
}

/// Parse the `BACKUP_OK` line's object (the first four fields).
pub fn parse_ok_line(line: &str) -> Option<RemoteObject> {
    parse_ok(line).map(|l| l.object)
}

/// The last success line among the script's stdout lines.
pub fn find_ok(lines: &[String]) -> Result<OkLine> {
    lines.iter().rev().find_map(|l| parse_ok(l)).ok_or_else(|| {
        Error::failed(
            "backup-db.sh exited 0 but printed no `BACKUP_OK path=... size=... hash_type=... \
                 hash=...` line: the upload is not proven",
        )
    })
}

/// `(stage, message)` of the last `backup-db: FAILED stage=<stage>: <message>` line.
pub fn failure(lines: &[String]) -> Option<(String, String)> {
    lines.iter().rev().find_map(|l| {
        let rest = l.split_once("FAILED stage=")?.1;
        let (stage, msg) = rest.split_once(": ").unwrap_or((rest, ""));
        Some((stage.trim().to_string(), msg.trim().to_string()))
    })
}

/// A backup file name: `station_backup_<YYYYmmdd>_<HHMMSS>_<label>.sql.gz`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct BackupName {
    /// `YYYYmmdd_HHMMSS` (sorts chronologically).
    pub timestamp: String,
    pub label: String,
}

impl BackupName {
    pub fn parse(file: &str) -> Option<BackupName> {
        let rest = file
            .strip_prefix("station_backup_")?
            .strip_suffix(".sql.gz")?;
        let (ts, label) = (rest.get(..15)?, rest.get(16..)?);
        let b = ts.as_bytes();
        let ts_ok = b.len() == 15
            && b[8] == b'_'
            && b.iter()
                .enumerate()
                .all(|(i, c)| i == 8 || c.is_ascii_digit());
        (ts_ok && rest.as_bytes().get(15) == Some(&b'_') && super::Label::parse(label).is_ok())
            .then(|| BackupName {
                timestamp: ts.to_string(),
                label: label.to_string(),
            })
    }

    /// `YYYYMM`, the folder the object lives in.
    pub fn month(&self) -> &str {
        &self.timestamp[..6]
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct LsEntry {
    path: String,
    size: i64,
    #[serde(default)]
    is_dir: bool,
    #[serde(default)]
    hashes: std::collections::BTreeMap<String, String>,
}

fn entry_object(e: LsEntry, path: String, hash_type: &str) -> RemoteObject {
    let hash = e.hashes.get(hash_type).cloned().unwrap_or_default();
    RemoteObject {
        path,
        size: e.size.max(0) as u64,
        hash_type: if hash.is_empty() {
            String::new()
        } else {
            hash_type.to_string()
        },
        hash,
    }
}

/// `rclone lsjson -R --files-only` of `<base>` (= `<remote>:<bucket>/<prefix>`): the backup objects
/// (`YYYYMM/station_backup_...sql.gz` in the folder of their own month), oldest first.
pub fn parse_list(json: &str, base: &str, hash_type: &str) -> Result<Vec<RemoteObject>> {
    let entries: Vec<LsEntry> = serde_json::from_str(json)
        .map_err(|e| Error::failed(format!("cannot parse `rclone lsjson` output: {e}")))?;
    let mut found: Vec<(BackupName, RemoteObject)> = entries
        .into_iter()
        .filter(|e| !e.is_dir)
        .filter_map(|e| {
            let (month, file) = e.path.split_once('/')?;
            let name = BackupName::parse(file)?;
            (name.month() == month).then_some(())?;
            let path = format!("{}/{}", base.trim_end_matches('/'), e.path);
            Some((name, entry_object(e, path, hash_type)))
        })
        .collect();
    found.sort_by(|a, b| (&a.0, &a.1.path).cmp(&(&b.0, &b.1.path)));
    Ok(found.into_iter().map(|(_, o)| o).collect())
}

/// `rclone lsjson --files-only` of the folder `dir`: its files as objects `<dir>/<name>`.
pub fn parse_dir(json: &str, dir: &str, hash_type: &str) -> Result<Vec<RemoteObject>> {
    let entries: Vec<LsEntry> = serde_json::from_str(json)
        .map_err(|e| Error::failed(format!("cannot parse `rclone lsjson` output: {e}")))?;
    Ok(entries
        .into_iter()
        .filter(|e| !e.is_dir && !e.path.contains('/'))
        .map(|e| {
            let path = format!("{}/{}", dir.trim_end_matches('/'), e.path);
            entry_object(e, path, hash_type)
        })
        .collect())
}

/// `rclone lsjson --stat` of one object.
pub fn parse_stat(json: &str, path: &str, hash_type: &str) -> Result<RemoteObject> {
    let e: LsEntry = serde_json::from_str(json)
        .map_err(|e| Error::failed(format!("cannot parse `rclone lsjson --stat` output: {e}")))?;
    if e.is_dir {
        return Err(Error::failed(format!(
            "{path} is a directory, not a backup"
        )));
    }
    Ok(entry_object(e, path.to_string(), hash_type))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MD5: &str = "ef5730ccc6fa12f86c9a55cf09bab16f";

    #[test]
    fn ok_line_round_trip() {
        let line = format!("BACKUP_OK path=b2:bk/postgres/202611/station_backup_20261125_181140_x1.sql.gz size=22560 hash_type=md5 hash={MD5}\n");
        let o = parse_ok_line(&line).unwrap();
        assert_eq!(o.size, 22560);
        assert_eq!(o.hash, MD5);
        assert_eq!(o.hash_type, "md5");
        assert!(o.path.ends_with("_x1.sql.gz"));
        // The current script's line adds the dump's sha256 and the manifest's path.
        let sha = "ab".repeat(32);
        let path = "b2:bk/postgres/202611/station_backup_20261125_181140_x1.sql.gz";
        let l = parse_ok(&format!(
            "BACKUP_OK path={path} size=1 hash_type=md5 hash={MD5} sha256={sha} manifest={path}.json"
        ))
        .unwrap();
        assert_eq!(l.sha256.as_deref(), Some(sha.as_str()));
        assert_eq!(l.manifest, Some(format!("{path}.json")));
        // A manifest elsewhere than beside the dump, or a short sha256, is not our line.
        for bad in [
            format!("BACKUP_OK path={path} size=1 hash_type=md5 hash={MD5} manifest=b2:x.json"),
            format!("BACKUP_OK path={path} size=1 hash_type=md5 hash={MD5} sha256=abc"),
        ] {
            assert!(parse_ok(&bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn malformed_ok_lines_are_refused() {
        for l in [
            "BACKUP_OK path=x size=1 hash_type=md5",
            "BACKUP_OK path=x size=-1 hash_type=md5 hash=ef5730ccc6fa12f86c9a55cf09bab16f",
            "BACKUP_OK path=x size=1 hash_type=md5 hash=abc",
            "BACKUP_OK path=x size=1 hash_type=crc hash=ef5730ccc6fa12f86c9a55cf09bab16f",
            "BACKUP_OK path=x size=1 hash_type=md5 hash=ef5730ccc6fa12f86c9a55cf09bab16f extra=1",
            "backup ok",
        ] {
            assert!(parse_ok_line(l).is_none(), "{l}");
        }
        assert_eq!(
            find_ok(&["nothing".into()]).unwrap_err().exit_code(),
            crate::error::ExitCode::Failed
        );
    }

    #[test]
    fn failure_stage_is_found() {
        let lines = vec![
            "backup-db: target b2:x".to_string(),
            "backup-db: FAILED stage=dump: the dump pipeline exited 1".to_string(),
        ];
        assert_eq!(
            failure(&lines),
            Some(("dump".into(), "the dump pipeline exited 1".into()))
        );
        assert_eq!(failure(&lines[..1]), None);
    }

    #[test]
    fn names() {
        let n =
            BackupName::parse("station_backup_20260510_030000_pre-deploy-abc1234.sql.gz").unwrap();
        assert_eq!(n.timestamp, "20260510_030000");
        assert_eq!(n.label, "pre-deploy-abc1234");
        assert_eq!(n.month(), "202605");
        for bad in [
            "station_backup_2026051_030000_x.sql.gz",
            "station_backup_20260510_030000_.sql.gz",
            "station_backup_20260510-030000_x.sql.gz",
            "station_backup_20260510_030000_a b.sql.gz",
            "other.sql.gz",
        ] {
            assert!(BackupName::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn list_keeps_backups_in_their_month_oldest_first() {
        let json = format!(
            r#"[
 {{"Path":"202611/station_backup_20261125_181140_b.sql.gz","Name":"x","Size":5,"IsDir":false,"Hashes":{{"md5":"{MD5}"}}}},
 {{"Path":"202601/station_backup_20260101_000000_nightly.sql.gz","Name":"x","Size":7,"IsDir":false,"Hashes":{{}}}},
 {{"Path":"202602/station_backup_20260101_000000_moved.sql.gz","Name":"x","Size":7,"IsDir":false}},
 {{"Path":"202611/notes.txt","Name":"x","Size":1,"IsDir":false}},
 {{"Path":"202611","Name":"x","Size":-1,"IsDir":true}}
]"#
        );
        let l = parse_list(&json, "b2:bk/postgres", "md5").unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(
            l[0].path,
            "b2:bk/postgres/202601/station_backup_20260101_000000_nightly.sql.gz"
        );
        assert_eq!((l[0].hash.as_str(), l[0].hash_type.as_str()), ("", ""));
        assert_eq!((l[1].size, l[1].hash.as_str()), (5, MD5));
        assert!(parse_list("[{", "b2:x", "md5").is_err());
    }

    #[test]
    fn dir_listing_gives_files_of_that_folder() {
        let json = format!(
            r#"[{{"Path":"a.sql.gz","Size":5,"IsDir":false,"Hashes":{{"md5":"{MD5}"}}}},
 {{"Path":"a.sql.gz.json","Size":2,"IsDir":false}},
 {{"Path":"sub/x","Size":2,"IsDir":false}},
 {{"Path":"sub","Size":-1,"IsDir":true}}]"#
        );
        let l = parse_dir(&json, "b2:bk/postgres/202612/", "md5").unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].path, "b2:bk/postgres/202612/a.sql.gz");
        assert_eq!((l[0].hash.as_str(), l[0].hash_type.as_str()), (MD5, "md5"));
        assert_eq!((l[1].size, l[1].hash.as_str()), (2, ""));
        assert!(parse_dir("{", "b2:x", "md5").is_err());
    }
}
