//! The scratch database a dump is replayed into and who replays it: one place for `restore` and
//! `backup drill`, so that both confine a dump alike. The replay role
//! ([`plan::create_replay_role_sql`]) is named as the scratch database, owns it and nothing else,
//! and logs in over the server's trusted local socket ([`Login::Socket`]); with `--trust-dump` the
//! dump is replayed as `db_user` instead. The [`Scratch`] guard drops the database and the role
//! however the command ends.

use std::collections::BTreeMap;
use std::time::Instant;

use super::plan::{self, DbName};
use super::target::{Source, Target};
use crate::error::{Error, Result};
use crate::host::Login;

/// Who replays a dump into the scratch database, and how a refusal says to go on.
pub(crate) struct Replayer<'a> {
    pub t: &'a Target,
    pub scratch: &'a DbName,
    /// Replay (and count) as `db_user`, with every right it has, not as the scratch database's
    /// own role.
    pub trust_dump: bool,
    /// The command that replays the same backup again (the hints add `--trust-dump` to it).
    pub again: String,
    /// What an interrupted replay says after "interrupted (Ctrl-C, SIGTERM or SIGHUP)".
    pub interrupted: &'static str,
    /// The database the scratch one is made like (its encoding, locale, tablespace); `None`: the
    /// cluster's defaults.
    pub like: Option<&'a plan::LiveProps>,
}

impl<'a> Replayer<'a> {
    /// Who replays and counts the dump: the scratch database's own role, or with `--trust-dump`
    /// the database user.
    pub fn login(&self) -> Login<'a> {
        if self.trust_dump {
            Login::Owner
        } else {
            Login::Socket(self.scratch.as_str())
        }
    }

    /// Who replays, in words for plans and reports.
    pub fn words(&self) -> String {
        if self.trust_dump {
            format!(
                "{}, with every right it has (--trust-dump)",
                self.t.env.db_user
            )
        } else {
            format!("role {}, which owns only that database", self.scratch)
        }
    }

    /// The scratch database (owned by `owner` with `--trust-dump`), and before it its replay
    /// role, which owns it; made like [`Replayer::like`].
    pub fn create_sqls(&self, owner: &str) -> Vec<String> {
        if self.trust_dump {
            vec![plan::create_scratch_like_sql(
                self.scratch,
                owner,
                self.like,
            )]
        } else {
            vec![
                plan::create_replay_role_sql(self.scratch),
                plan::create_scratch_like_sql(self.scratch, self.scratch.as_str(), self.like),
            ]
        }
    }

    /// Create the scratch database (and its role) with `guard` armed first, so that a CREATE
    /// whose reply was lost is still dropped; a refusal for lack of rights says how to go on.
    pub fn create(&self, guard: &mut Scratch<'_>, owner: &str) -> Result<()> {
        guard.arm(self);
        let sqls = self.create_sqls(owner);
        let created = self.t.sql_each(
            "postgres",
            &sqls.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        guard.created(&created);
        created.map(|_| ()).map_err(|e| self.create_hint(e))
    }

    /// The replay role or the scratch database could not be created for lack of rights: `db_user`
    /// is not a superuser. Say what is missing and how to go on.
    pub fn create_hint(&self, e: Error) -> Error {
        let m = e.to_string();
        let rights = m.contains("permission denied to create role")
            || m.contains("must be superuser")
            || acts_for_another_role(&m)
            || m.contains("permission denied to create database");
        if self.trust_dump || !rights {
            return e;
        }
        let env = &self.t.env;
        e.context(format!(
            "the dump is replayed as a role of its own, which {} (db_user of `{}`) could not \
             create or give the scratch database to: that needs a superuser. Run `{} \
             --trust-dump` to replay as {} instead (its SQL then runs with that user's rights)",
            env.db_user, env.name, self.again, env.db_user
        ))
    }

    /// A replay refused for lack of rights (the dump sets owners, or needs a superuser) says what
    /// that means and how to go on.
    pub fn rights_hint(&self, e: Error) -> Error {
        let m = e.to_string();
        if self.trust_dump {
            return e;
        }
        let owners = acts_for_another_role(&m);
        let rights = owners
            || m.contains("permission denied")
            || m.contains("must be superuser")
            || m.contains("must be owner");
        if !rights {
            return e;
        }
        let why = if owners {
            "the dump acts for another role: it sets its objects' owners (`ALTER ... OWNER TO`, as \
             backups taken before xtask left owners out do) or that role's default privileges \
             (`ALTER DEFAULT PRIVILEGES FOR ROLE`, which pg_dump --no-owner still writes), which \
             only a member of that role may"
        } else {
            "the dump's SQL needs rights beyond the scratch database, which is all its replay role \
             may touch"
        };
        e.context(format!(
            "{why}: if you trust this backup, run it again with --trust-dump (`{} --trust-dump`): \
             its SQL then runs with the database user's rights",
            self.again
        ))
    }

    /// Exit 1 when Ctrl-C (SIGTERM, SIGHUP) was pressed, saying what was stopped.
    pub fn check_interrupt(&self) -> Result<()> {
        crate::signals::check(self.interrupted)
    }

    /// Replay `source` into the scratch database with the Ctrl-C handler able to stop the replay
    /// (its [`Lifeline`](crate::process::Lifeline)) and end its session; a refusal for lack of rights says how to go on. In the replay's own
    /// transaction, before its COMMIT, the tables are counted ([`plan::check_sql`]); with `want`
    /// (the manifest's counts and newest migration) counts that differ are never committed:
    /// exit 1 saying what differs.
    pub fn replay(&self, source: &Source<'_>, want: Option<Want<'_>>) -> Result<Replay> {
        // The check goes first on the script's stdin, a line of its own (see `Target::replay`).
        let check = plan::check_sql(want.map(|w| (w.tables, w.migration)));
        let line = crate::process::Lifeline::with_first(format!("{check}\n").into_bytes());
        if let Ok(mut g) = super::REPLAYING.lock() {
            *g = Some((self.t.clone(), self.scratch.clone(), line.clone()));
        }
        // A Ctrl-C before the handler could know the session: it found nothing to end.
        self.check_interrupt()?;
        let t0 = Instant::now();
        let res = self
            .t
            .replay(source, self.scratch.as_str(), self.login(), &line);
        if let Ok(mut g) = super::REPLAYING.lock() {
            *g = None;
        }
        self.check_interrupt()?;
        let got = res.map_err(|e| self.rights_hint(e))?;
        let (tables, migration) = plan::parse_check(&got.check)?;
        if let Some(w) = want {
            let diff = plan::verify(w.tables, &tables, w.migration, migration.as_deref());
            if got.gated || !diff.is_empty() {
                return Err(differs(&diff, got.gated));
            }
        } else if got.gated {
            return Err(Error::failed(
                "the replay's check refused the commit; nothing was restored",
            ));
        }
        Ok(Replay {
            sha256: got.sha256,
            secs: t0.elapsed().as_secs_f64(),
            tables,
            migration,
        })
    }

    /// What the dump did to the scratch database itself, which pg_dump without `--create` never
    /// writes (and a swap would carry into the live database): refused. SECURITY DEFINER
    /// functions are named in the warnings returned (they run with their owner's, `owner`'s,
    /// rights once handed over). Run as the owner in a database the dump's role owns (`public`
    /// included): only pg_catalog on the search path, so no function or operator the dump defined
    /// can stand in for a built-in one (CVE-2018-1058's pattern).
    pub fn check_props(&self, owner: &str) -> Result<Vec<String>> {
        let props = self.t.sql_each(
            self.scratch.as_str(),
            &[
                plan::SAFE_SEARCH_PATH,
                &plan::scratch_props_sql(self.scratch),
            ],
        )?;
        let (changed, secdef) = plan::parse_scratch_props(&props);
        if !changed.is_empty() {
            return Err(Error::failed(format!(
                "the dump changed the database it was restored into ({}), which pg_dump \
                 without --create never writes: a tampered backup? Nothing was restored; the live \
                 database is untouched",
                changed.join("; ")
            )));
        }
        Ok(if secdef.is_empty() {
            Vec::new()
        } else {
            vec![format!(
                "the backup holds SECURITY DEFINER functions, which run with their owner's ({owner}) \
                 rights once restored: {}",
                secdef.join(", ")
            )]
        })
    }
}

/// The manifest's counts and newest migration, which a replay must give before it is committed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Want<'a> {
    pub tables: &'a BTreeMap<String, u64>,
    pub migration: Option<&'a str>,
}

/// A replay committed into the scratch database.
#[derive(Clone, Debug)]
pub(crate) struct Replay {
    /// The object's sha256, taken as it streamed (`None` for a file).
    pub sha256: Option<String>,
    pub secs: f64,
    /// The per-table counts and newest migration, taken in the replay's transaction before its
    /// COMMIT.
    pub tables: BTreeMap<String, u64>,
    pub migration: Option<String>,
}

/// Exit 1: the restored database is not what the manifest says (`gated`: the replay's gate
/// refused its commit).
fn differs(diff: &[plan::Mismatch], gated: bool) -> Error {
    let what = if diff.is_empty() {
        "the replay's check refused it".to_string()
    } else {
        diff.iter()
            .map(|d| format!("{} manifest {} restored {}", d.what, d.manifest, d.restored))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let committed = if gated {
        " (counted before the commit, which did not happen)"
    } else {
        ""
    };
    Error::failed(format!(
        "the restored database differs from the manifest{committed}: {what}; nothing was \
         restored, the live database is untouched"
    ))
}

/// PostgreSQL's refusal to act for a role the session is not a member of (15: "must be member of
/// role", 16+: "must be able to SET ROLE").
fn acts_for_another_role(m: &str) -> bool {
    m.contains("must be member of role") || m.contains("must be able to SET ROLE")
}

/// Drops the scratch database, then its replay role, and removes the downloaded file, however
/// the command ends: only these exact names (`DROP ... IF EXISTS`), and only what it was armed
/// with (a restore disarms the database once it is the live one).
pub(crate) struct Scratch<'a> {
    pub t: &'a Target,
    pub db: Option<DbName>,
    /// The replay role (named as the database), dropped after it.
    pub role: Option<DbName>,
    pub dir: Option<String>,
}

impl<'a> Scratch<'a> {
    pub fn new(t: &'a Target) -> Scratch<'a> {
        Scratch {
            t,
            db: None,
            role: None,
            dir: None,
        }
    }

    /// Arm for `r`'s scratch database and (unless `--trust-dump`) its role: before their CREATE,
    /// so that one whose reply was lost (psql or ssh killed, the link dropped) is still dropped.
    pub fn arm(&mut self, r: &Replayer<'_>) {
        self.db = Some(r.scratch.clone());
        if !r.trust_dump {
            self.role = Some(r.scratch.clone());
        }
    }

    /// After the CREATE: "already exists" can only be someone else's (the names were free, the
    /// caller's lock or unique name keeps other runs out): never dropped.
    pub fn created(&mut self, created: &Result<String>) {
        let (Err(e), Some(db)) = (created, &self.db) else {
            return;
        };
        let m = e.to_string();
        // The role comes first: when it exists, the database was not created either
        // (ON_ERROR_STOP).
        if m.contains(&format!("role \"{db}\" already exists")) {
            self.role = None;
            self.db = None;
        } else if m.contains(&format!("database \"{db}\" already exists")) {
            self.db = None;
        }
    }

    /// Drop what is armed now; the warnings for what could not be.
    pub fn finish(&mut self) -> Vec<String> {
        let mut warnings = Vec::new();
        if let Ok(mut g) = super::REPLAYING.lock() {
            *g = None;
        }
        if let Some(db) = self.db.take() {
            let sqls = [plan::untemplate_sql(&db), plan::drop_sql(&db)];
            if let Err(e) = self.t.sql_each("postgres", &[&sqls[0], &sqls[1]]) {
                warnings.push(format!("could not drop the scratch database {db}: {e}"));
            }
        }
        if let Some(role) = self.role.take() {
            if let Err(e) = self.t.sql("postgres", &plan::drop_role_sql(&role)) {
                warnings.push(format!("could not drop the replay role {role}: {e}"));
            }
        }
        if let Some(dir) = self.dir.take() {
            if let Err(e) = self.t.cleanup(&dir) {
                warnings.push(format!("could not remove {dir}: {e}"));
            }
        }
        warnings
    }
}

impl Drop for Scratch<'_> {
    fn drop(&mut self) {
        for w in self.finish() {
            eprintln!("warning: {w}");
        }
    }
}
