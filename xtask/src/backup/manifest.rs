//! The backup manifest (schema `backup-manifest/1`): what a backup contains, written by
//! `infra/scripts/backup-db.sh` beside the dump as `<object>.json` (pure: text in, values out).
//!
//! ```json
//! {"schema": "backup-manifest/1",
//!  "file": "station_backup_20261201_090000_pre-deploy-abc1234.sql.gz",
//!  "sha256": "<64 lowercase hex of the .sql.gz bytes>", "size": 12345,
//!  "label": "pre-deploy-abc1234", "git_sha": "<40 hex>" | null,
//!  "created_at": "2026-12-01T09:00:00Z",
//!  "database": "station", "server_version": "15.10",
//!  "newest_migration": "0002_add_orders" | null,
//!  "tables": {"public.orders": 10, "public.users": 3}}
//! ```
//!
//! - `created_at`: when the dump's snapshot was taken (UTC): the dump holds the database as of then.
//! - `newest_migration`: the name of the greatest `version` in the builtin `schema_migrations` table
//!   when it exists, else the newest `name` (by `timestamp`) in TypeORM's `migrations` table, else null.
//! - `tables`: exact `count(*)` of every ordinary and partitioned table outside the system schemas,
//!   keyed the way PostgreSQL quotes `schema.table` (`format('%I.%I')`: `public.users`,
//!   `public."Audit Log"`, the same keys as [`super::drill::COUNT_SQL`]), read in the very snapshot
//!   `pg_dump --snapshot` dumped, so they equal what the dump restores.
//!
//! The manifest is uploaded only after the dump is verified remotely, so a manifest always describes
//! a complete dump. Unknown fields are ignored (later versions may add some); a missing or malformed
//! field makes [`parse`] fail (exit 1) naming the field.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::result::BackupName;
use super::Label;
use crate::error::{Error, Result};

/// The `schema` value this module reads and `backup-db.sh` writes.
pub const SCHEMA: &str = "backup-manifest/1";

/// What a manifest object's path adds to its dump's path.
pub const SUFFIX: &str = ".json";

/// A parsed and validated manifest.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Manifest {
    pub schema: String,
    /// The dump's file name (`station_backup_<YYYYmmdd_HHMMSS>_<label>.sql.gz`).
    pub file: String,
    /// sha256 of the `.sql.gz` bytes, 64 lowercase hex.
    pub sha256: String,
    /// Size of the `.sql.gz` in bytes.
    pub size: u64,
    pub database: String,
    /// `server_version` of the dumped server, e.g. `15.18`.
    pub server_version: String,
    /// The backup's label (equal to the one in `file`).
    pub label: String,
    /// The deployed commit (40 lowercase hex) when the backup was made by a deploy.
    pub git_sha: Option<String>,
    /// `YYYY-MM-DDTHH:MM:SSZ`, when the snapshot was taken.
    pub created_at: String,
    pub newest_migration: Option<String>,
    /// Exact row count per table (`schema.table`, quoted as PostgreSQL quotes identifiers).
    pub tables: BTreeMap<String, u64>,
}

/// The manifest object of a dump object: `b2:bucket/postgres/YYYYMM/station_backup_...sql.gz` →
/// `b2:bucket/postgres/YYYYMM/station_backup_...sql.gz.json`.
pub fn manifest_path(object: &str) -> String {
    format!("{object}{SUFFIX}")
}

/// The dump object of a manifest object, `None` when `path` is not a manifest's path.
pub fn dump_path(path: &str) -> Option<&str> {
    path.strip_suffix(SUFFIX).filter(|p| p.ends_with(".sql.gz"))
}

fn bad(origin: &str, field: &str, why: impl std::fmt::Display) -> Error {
    Error::failed(format!("backup manifest {origin}: field `{field}` {why}"))
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `YYYY-MM-DDTHH:MM:SSZ` with plausible ranges.
fn is_utc_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 20 {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let shape = b[4] == b'-' && b[7] == b'-' && b[10] == b'T' && b[13] == b':' && b[16] == b':';
    let ok = |v: Option<u32>, lo: u32, hi: u32| v.is_some_and(|v| (lo..=hi).contains(&v));
    shape
        && b[19] == b'Z'
        && ok(digits(0..4), 1970, 9999)
        && ok(digits(5..7), 1, 12)
        && ok(digits(8..10), 1, 31)
        && ok(digits(11..13), 0, 23)
        && ok(digits(14..16), 0, 59)
        && ok(digits(17..19), 0, 60)
}

struct Fields<'a> {
    map: &'a Map<String, Value>,
    origin: &'a str,
}

impl Fields<'_> {
    fn get(&self, f: &str) -> Result<&Value> {
        self.map
            .get(f)
            .ok_or_else(|| bad(self.origin, f, "is missing"))
    }

    fn string(&self, f: &str) -> Result<String> {
        match self.get(f)? {
            Value::String(s) if !s.is_empty() => Ok(s.clone()),
            Value::String(_) => Err(bad(self.origin, f, "is empty")),
            other => Err(bad(self.origin, f, format!("is not a string: {other}"))),
        }
    }

    fn opt_string(&self, f: &str) -> Result<Option<String>> {
        match self.get(f)? {
            Value::Null => Ok(None),
            _ => self.string(f).map(Some),
        }
    }

    fn count(&self, f: &str, v: &Value) -> Result<u64> {
        v.as_u64().ok_or_else(|| {
            bad(
                self.origin,
                f,
                format!("is not a non-negative integer: {v}"),
            )
        })
    }
}

/// Parse and validate a manifest. `origin` names it in errors (its object path or a file).
/// Every failure is a failed check (exit 1) naming the field.
pub fn parse(text: &str, origin: &str) -> Result<Manifest> {
    let v: Value = serde_json::from_str(text).map_err(|e| {
        Error::failed(format!(
            "backup manifest {origin} is not valid JSON (line {} column {}): {e}",
            e.line(),
            e.column()
        ))
    })?;
    let map = v
        .as_object()
        .ok_or_else(|| Error::failed(format!("backup manifest {origin} is not a JSON object")))?;
    let f = Fields { map, origin };

    let schema = f.string("schema")?;
    if schema != SCHEMA {
        return Err(bad(
            origin,
            "schema",
            format!("is {schema:?}: this xtask reads {SCHEMA:?}"),
        ));
    }
    let file = f.string("file")?;
    let name = BackupName::parse(&file).ok_or_else(|| {
        bad(
            origin,
            "file",
            format!("{file:?} is not a backup file name (station_backup_<YYYYmmdd_HHMMSS>_<label>.sql.gz)"),
        )
    })?;
    let sha256 = f.string("sha256")?;
    if !is_hex(&sha256, 64) {
        return Err(bad(origin, "sha256", "is not 64 lowercase hex characters"));
    }
    let size = f.count("size", f.get("size")?)?;
    if size == 0 {
        return Err(bad(origin, "size", "is 0: a dump is never empty"));
    }
    let database = f.string("database")?;
    let server_version = f.string("server_version")?;
    let label = f.string("label")?;
    Label::parse(&label).map_err(|e| bad(origin, "label", e))?;
    if label != name.label {
        return Err(bad(
            origin,
            "label",
            format!(
                "{label:?} differs from the label in `file` ({:?})",
                name.label
            ),
        ));
    }
    let git_sha = f.opt_string("git_sha")?;
    if let Some(g) = &git_sha {
        if !is_hex(g, 40) {
            return Err(bad(
                origin,
                "git_sha",
                "is neither null nor 40 lowercase hex characters",
            ));
        }
    }
    let created_at = f.string("created_at")?;
    if !is_utc_timestamp(&created_at) {
        return Err(bad(
            origin,
            "created_at",
            format!("{created_at:?} is not a UTC time YYYY-MM-DDTHH:MM:SSZ"),
        ));
    }
    let newest_migration = f.opt_string("newest_migration")?;
    let tables = match f.get("tables")? {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| {
                if k.is_empty() {
                    return Err(bad(origin, "tables", "has an empty table name"));
                }
                Ok((k.clone(), f.count(&format!("tables.{k}"), v)?))
            })
            .collect::<Result<BTreeMap<_, _>>>()?,
        other => {
            return Err(bad(
                origin,
                "tables",
                format!("is not an object of table: count: {other}"),
            ))
        }
    };
    Ok(Manifest {
        schema,
        file,
        sha256,
        size,
        database,
        server_version,
        label,
        git_sha,
        created_at,
        newest_migration,
        tables,
    })
}

impl Manifest {
    /// The manifest as JSON (the shape [`parse`] reads).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("serializable")
    }

    /// Total rows over all tables.
    pub fn total_rows(&self) -> u64 {
        self.tables.values().sum()
    }

    /// Does this manifest describe the dump object `object` (a path ending in its file name) of
    /// `size` bytes, with `sha256` when the caller knows it? Exit 1 naming what differs.
    pub fn check_dump(&self, object: &str, size: u64, sha256: Option<&str>) -> Result<()> {
        let file = object.rsplit('/').next().unwrap_or(object);
        if file != self.file {
            return Err(Error::failed(format!(
                "the manifest of {object} describes another file ({})",
                self.file
            )));
        }
        if size != self.size {
            return Err(Error::failed(format!(
                "{object} is {size} bytes but its manifest says {}: the object is not the dump the \
                 manifest describes",
                self.size
            )));
        }
        if let Some(h) = sha256 {
            if h != self.sha256 {
                return Err(Error::failed(format!(
                    "{object} has sha256 {h} but its manifest says {}: the object is corrupt or \
                     was replaced",
                    self.sha256
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ExitCode;

    const SHA: &str = "5a1d0c41e4a4ed1c5f7e0b9b4f8a3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b";

    fn good() -> Value {
        serde_json::json!({
            "schema": "backup-manifest/1",
            "file": "station_backup_20261201_090000_pre-deploy-abc1234.sql.gz",
            "sha256": SHA,
            "size": 12345,
            "database": "station",
            "server_version": "15.18",
            "label": "pre-deploy-abc1234",
            "git_sha": "abc1234abc1234abc1234abc1234abc1234abc12",
            "created_at": "2026-12-01T09:00:00Z",
            "newest_migration": "0002_add_orders",
            "tables": {"public.users": 3, "public.\"Audit Log\"": 0, "public.orders": 10},
            "added_later": {"ignored": true}
        })
    }

    fn err_of(v: &Value) -> String {
        let e = parse(&v.to_string(), "m.json").unwrap_err();
        assert_eq!(e.exit_code(), ExitCode::Failed);
        e.to_string()
    }

    #[test]
    fn a_good_manifest_parses_and_round_trips() {
        let m = parse(&good().to_string(), "m.json").unwrap();
        assert_eq!(m.size, 12345);
        assert_eq!(m.label, "pre-deploy-abc1234");
        assert_eq!(m.newest_migration.as_deref(), Some("0002_add_orders"));
        assert_eq!(
            m.tables.keys().collect::<Vec<_>>(),
            ["public.\"Audit Log\"", "public.orders", "public.users"]
        );
        assert_eq!(m.total_rows(), 13);
        assert_eq!(parse(&m.to_json(), "again").unwrap(), m);
        // Nulls where the schema allows them.
        let mut v = good();
        v["git_sha"] = Value::Null;
        v["newest_migration"] = Value::Null;
        v["tables"] = serde_json::json!({});
        let m = parse(&v.to_string(), "m.json").unwrap();
        assert_eq!((m.git_sha, m.newest_migration), (None, None));
        assert!(m.tables.is_empty());
    }

    #[test]
    fn every_missing_field_is_named() {
        for field in [
            "schema",
            "file",
            "sha256",
            "size",
            "database",
            "server_version",
            "label",
            "git_sha",
            "created_at",
            "newest_migration",
            "tables",
        ] {
            let mut v = good();
            v.as_object_mut().unwrap().remove(field);
            let e = err_of(&v);
            assert!(e.contains(&format!("field `{field}` is missing")), "{e}");
        }
    }

    #[test]
    fn malformed_fields_are_named() {
        let cases: [(&str, Value); 17] = [
            ("schema", "backup-manifest/2".into()),
            ("file", "dump.sql.gz".into()),
            ("sha256", SHA.to_uppercase().into()),
            ("sha256", "abc".into()),
            ("size", (-1).into()),
            ("size", 0.into()),
            ("size", "12345".into()),
            ("database", "".into()),
            ("server_version", 15.into()),
            ("label", "other-label".into()),
            ("label", "a b".into()),
            ("git_sha", "abc1234".into()),
            ("created_at", "2026-12-01 09:00:00".into()),
            ("created_at", "2026-13-01T09:00:00Z".into()),
            ("newest_migration", 2.into()),
            ("tables", serde_json::json!([1, 2])),
            ("tables", serde_json::json!({"public.users": -3})),
        ];
        for (field, value) in cases {
            let mut v = good();
            v[field] = value.clone();
            let e = err_of(&v);
            assert!(
                e.contains(&format!("field `{field}")),
                "{field}={value}: {e}"
            );
        }
        let e = parse("{\"schema\":", "x.json").unwrap_err().to_string();
        assert!(e.contains("not valid JSON"), "{e}");
        let e = parse("[1]", "x.json").unwrap_err().to_string();
        assert!(e.contains("not a JSON object"), "{e}");
    }

    #[test]
    fn paths_and_dump_checks() {
        let o = "b2:bk/postgres/202612/station_backup_20261201_090000_pre-deploy-abc1234.sql.gz";
        let m = manifest_path(o);
        assert_eq!(m, format!("{o}.json"));
        assert_eq!(dump_path(&m), Some(o));
        assert_eq!(dump_path(o), None);
        assert_eq!(dump_path("b2:bk/notes.json"), None);

        let man = parse(&good().to_string(), "m.json").unwrap();
        man.check_dump(o, 12345, Some(SHA)).unwrap();
        man.check_dump(o, 12345, None).unwrap();
        let e = man.check_dump(o, 12346, None).unwrap_err();
        assert_eq!(e.exit_code(), ExitCode::Failed);
        assert!(e.to_string().contains("12346 bytes"), "{e}");
        let other = "0".repeat(64);
        assert!(man.check_dump(o, 12345, Some(&other)).is_err());
        assert!(man
            .check_dump(&o.replace("090000", "090001"), 12345, None)
            .is_err());
    }
}
