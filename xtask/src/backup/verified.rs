//! The only code that can produce a [`VerifiedBackup`], the value a migration requires (deploy's
//! "verify backup" step, `cargo xtask migrate` on its own). Its fields are private and it has no public constructor, so a migration
//! cannot be started without a backup that was checked in the bucket.

use crate::backup::{self, RemoteObject};
use crate::environments::Environment;
use crate::error::{Error, Result};
use crate::git::Sha;

/// A backup object that exists in the remote with the size and hash that were uploaded.
#[derive(Debug)]
pub struct VerifiedBackup {
    object: RemoteObject,
}

impl VerifiedBackup {
    pub fn object(&self) -> &RemoteObject {
        &self.object
    }

    /// After `backup::create`: the object must exist remotely with the size and hash it reported.
    pub fn verify_created(env: &Environment, created: &RemoteObject) -> Result<VerifiedBackup> {
        let found = backup::stat(env, &created.path)?;
        let object = check_matches(created, found.as_ref())?;
        Ok(VerifiedBackup { object })
    }

    /// For `cargo xtask migrate` on its own: the newest `pre-deploy-<sha7>` object of the bucket,
    /// checked with a fresh `stat` (exit 1 with the command to run when there is none).
    pub fn find_for_sha(env: &Environment, sha: &Sha) -> Result<VerifiedBackup> {
        let label = sha.backup_label();
        let listed = backup::list(env)?;
        let candidate = newest_with_label(&listed, &label).ok_or_else(|| {
            Error::failed(format!(
                "refusing to migrate `{}`: no verified pre-deploy backup `{label}` in {} for {}. \
                 Run `cargo xtask backup --env {} --label {label}` first (or the whole pipeline: \
                 `cargo xtask deploy --env {} --sha {}`). No migration was run.",
                env.name,
                env.backup.base(),
                sha.as_str(),
                env.name,
                env.name,
                sha.as_str()
            ))
        })?;
        let found = backup::stat(env, &candidate.path)?;
        let object = check_matches(candidate, found.as_ref())?;
        Ok(VerifiedBackup { object })
    }
}

/// The newest listed object whose file name is a backup name with exactly `label`
/// (`station_backup_<YYYYmmdd_HHMMSS>_<label>.sql.gz`): `..._<label>.old.sql.gz` or
/// `..._x_<label>.sql.gz` are other labels.
pub fn newest_with_label<'a>(objects: &'a [RemoteObject], label: &str) -> Option<&'a RemoteObject> {
    objects.iter().rfind(|o| {
        let name = o.path.rsplit('/').next().unwrap_or(&o.path);
        o.size > 0
            && crate::backup::result::BackupName::parse(name).is_some_and(|n| n.label == label)
    })
}

/// Pure: the remote object must exist and have the expected size and hash.
pub fn check_matches(
    expected: &RemoteObject,
    found: Option<&RemoteObject>,
) -> Result<RemoteObject> {
    let Some(found) = found else {
        return Err(Error::failed(format!(
            "backup object {} does not exist in the remote",
            expected.path
        )));
    };
    if found.size != expected.size {
        return Err(Error::failed(format!(
            "backup object {}: remote size {} != uploaded size {}",
            expected.path, found.size, expected.size
        )));
    }
    if expected.hash.is_empty()
        || found.hash_type != expected.hash_type
        || !found.hash.eq_ignore_ascii_case(&expected.hash)
    {
        return Err(Error::failed(format!(
            "backup object {}: remote {} {:?} != uploaded {} {:?}",
            expected.path, found.hash_type, found.hash, expected.hash_type, expected.hash
        )));
    }
    if found.size == 0 {
        return Err(Error::failed(format!(
            "backup object {} is empty",
            expected.path
        )));
    }
    Ok(found.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(path: &str, size: u64, hash: &str) -> RemoteObject {
        RemoteObject {
            path: path.into(),
            size,
            hash: hash.into(),
            hash_type: "md5".into(),
        }
    }

    #[test]
    fn verification_needs_same_size_and_hash() {
        let a = obj(
            "b2:x/p/202611/station_backup_1_pre-deploy-abc1234.sql.gz",
            10,
            "aa",
        );
        assert!(check_matches(&a, Some(&a)).is_ok());
        assert!(check_matches(&a, None).is_err());
        assert!(check_matches(&a, Some(&obj(&a.path, 11, "aa"))).is_err());
        assert!(check_matches(&a, Some(&obj(&a.path, 10, "ab"))).is_err());
        assert!(check_matches(&obj(&a.path, 10, ""), Some(&obj(&a.path, 10, ""))).is_err());
    }

    #[test]
    fn finds_the_newest_object_for_the_label() {
        let l = [
            obj(
                "b2:x/p/202611/station_backup_20261101_000001_pre-deploy-abc1234.sql.gz",
                5,
                "1",
            ),
            obj(
                "b2:x/p/202611/station_backup_20261101_000002_manual.sql.gz",
                5,
                "2",
            ),
            obj(
                "b2:x/p/202611/station_backup_20261101_000003_pre-deploy-abc1234.sql.gz",
                5,
                "3",
            ),
            obj(
                "b2:x/p/202611/station_backup_20261101_000004_pre-deploy-abc12345.sql.gz",
                5,
                "4",
            ),
            // Other labels that merely contain the wanted one.
            obj(
                "b2:x/p/202611/station_backup_20261101_000005_pre-deploy-abc1234.old.sql.gz",
                5,
                "5",
            ),
            obj(
                "b2:x/p/202611/station_backup_20261101_000006_x_pre-deploy-abc1234.sql.gz",
                5,
                "6",
            ),
        ];
        assert_eq!(
            newest_with_label(&l, "pre-deploy-abc1234").unwrap().hash,
            "3"
        );
        assert!(newest_with_label(&l, "pre-deploy-0000000").is_none());
    }
}
