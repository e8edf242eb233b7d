//! Pure pieces of `restore`: database names of the fixed shapes, the UTC stamp, the window of writes,
//! the SQL of each step (identifiers validated, then double-quoted; literals only of validated names),
//! and the plan text. No I/O here.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::{Error, Result};

/// Suffix of a scratch database: `<db>_restore_<stamp>`. The stamp has a resolution of one
/// second; a restore in a second whose names an earlier restore took gets `<stamp>_2`, `_3`, …
/// (see [`free_names`]).
pub const SCRATCH_INFIX: &str = "_restore_";
/// Suffix of a kept (replaced) database: `<db>_before_restore_<stamp>`.
pub const KEPT_INFIX: &str = "_before_restore_";

/// A database name we are willing to put in SQL: `[a-z_][a-z0-9_]*`, at most 63 bytes (PostgreSQL's
/// identifier limit, so nothing is silently truncated).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct DbName(String);

impl DbName {
    pub fn parse(s: &str) -> Result<DbName> {
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if ok {
            Ok(DbName(s.to_string()))
        } else {
            Err(Error::usage(format!(
                "database name {s:?} is not of the shape [a-z_][a-z0-9_]* (at most 63 bytes)"
            )))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// `"name"` (the shape excludes quotes, so this is exact).
    pub fn ident(&self) -> String {
        format!("\"{}\"", self.0)
    }
    /// `'name'` as an SQL string literal (the shape excludes quotes).
    pub fn literal(&self) -> String {
        format!("'{}'", self.0)
    }
}

impl std::fmt::Display for DbName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A UTC stamp `YYYYmmdd_HHMMSS`, or `YYYYmmdd_HHMMSS_N` (N ≥ 2, no leading zero, at most 6
/// digits) for the N-th restore of that second ([`Stamp::nth`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Stamp(String);

impl Stamp {
    pub fn at_unix(secs: u64) -> Stamp {
        let t = crate::deploy::plan::rfc3339_ms(secs as u128 * 1000);
        // 2026-12-01T09:00:00.000Z → 20261201_090000
        let b = t.as_bytes();
        let s: String = [
            &b[0..4],
            &b[5..7],
            &b[8..10],
            b"_",
            &b[11..13],
            &b[14..16],
            &b[17..19],
        ]
        .concat()
        .into_iter()
        .map(char::from)
        .collect();
        Stamp(s)
    }
    pub fn parse(s: &str) -> Option<Stamp> {
        let (base, seq) = match s.get(15..) {
            Some("") | None => (s, None),
            Some(rest) => (&s[..15], Some(rest.strip_prefix('_')?)),
        };
        let b = base.as_bytes();
        let base_ok = b.len() == 15
            && b[8] == b'_'
            && b.iter()
                .enumerate()
                .all(|(i, c)| i == 8 || c.is_ascii_digit());
        let seq_ok = seq.is_none_or(|q| {
            (1..=6).contains(&q.len())
                && q.bytes().all(|c| c.is_ascii_digit())
                && q.parse::<u32>().is_ok_and(|n| n >= 2)
                && !q.starts_with('0')
        });
        (base_ok && seq_ok).then(|| Stamp(s.to_string()))
    }
    /// The stamp of the `n`-th restore of this second: itself for 1, else `<stamp>_<n>`.
    pub fn nth(&self, n: u32) -> Stamp {
        let base = &self.0[..15];
        if n <= 1 {
            Stamp(base.to_string())
        } else {
            Stamp(format!("{base}_{n}"))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// Seconds since the epoch of this stamp (UTC).
    pub fn unix(&self) -> i64 {
        let n = |r: std::ops::Range<usize>| self.0[r].parse::<i64>().unwrap_or(0);
        unix_of(n(0..4), n(4..6), n(6..8), n(9..11), n(11..13), n(13..15))
    }
}

/// Seconds since the epoch of a UTC date and time.
fn unix_of(y: i64, m: i64, d: i64, hh: i64, mm: i64, ss: i64) -> i64 {
    crate::time::days_from_civil(y, m, d) * 86_400 + hh * 3600 + mm * 60 + ss
}

/// `2026-12-01T09:00:00Z` (also with fractional seconds or `+00:00`) → seconds since the epoch.
pub fn parse_rfc3339_utc(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || (b[10] != b'T' && b[10] != b' ') {
        return None;
    }
    let rest = &s[19..];
    let rest = rest
        .strip_prefix('.')
        .map(|r| r.trim_start_matches(|c: char| c.is_ascii_digit()))
        .unwrap_or(rest);
    if !(rest == "Z" || rest == "+00:00") {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    Some(unix_of(
        n(0..4)?,
        n(5..7)?,
        n(8..10)?,
        n(11..13)?,
        n(14..16)?,
        n(17..19)?,
    ))
}

/// The plan's `window` line: how old the backup is, so which writes the restore loses. A backup
/// dated after this machine's clock (`window_seconds` < 0) is not called "0s ago": it says by how
/// much, and that the window cannot be judged (see [`clock_skew_warning`]).
pub fn window_text(
    created_at: &str,
    window_seconds: i64,
    live: &DbName,
    kept: Option<&DbName>,
) -> String {
    let kept = kept
        .map(|k| format!("; they stay in the kept database {k}"))
        .unwrap_or_default();
    if window_seconds < 0 {
        format!(
            "  window    UNKNOWN: the backup is dated {created_at}, {} after this machine's clock: the \
             clocks of this machine and the one that took the backup disagree, so which writes made to \
             {live} are NOT in it cannot be judged{kept}\n",
            crate::time::human_span(window_seconds.unsigned_abs())
        )
    } else {
        format!(
            "  window    the backup was taken {created_at}, {} ago: writes made to {live} since then \
             are NOT in it{kept}\n",
            crate::time::human_age(window_seconds)
        )
    }
}

/// The warning for a backup dated in the future of this machine's clock (`None` otherwise).
pub fn clock_skew_warning(object: &str, created_at: &str, window_seconds: i64) -> Option<String> {
    (window_seconds < 0).then(|| {
        format!(
            "{object} is dated {created_at}, {} in the future of this machine's clock: the clocks of \
             this machine and the one that took the backup disagree; the window of writes (what the \
             restore loses) cannot be judged",
            crate::time::human_span(window_seconds.unsigned_abs())
        )
    })
}

/// The databases one restore works with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Names {
    pub live: DbName,
    pub scratch: DbName,
    pub kept: DbName,
    pub stamp: Stamp,
}

impl Names {
    pub fn new(live: &str, stamp: Stamp) -> Result<Names> {
        let live = DbName::parse(live)?;
        let scratch = DbName::parse(&format!("{live}{SCRATCH_INFIX}{}", stamp.as_str()))?;
        let kept = DbName::parse(&format!("{live}{KEPT_INFIX}{}", stamp.as_str()))?;
        Ok(Names {
            live,
            scratch,
            kept,
            stamp,
        })
    }
}

/// First in a superuser's session in a database the dump's role owns: nothing but pg_catalog (and
/// the session's own temp schema, last) to resolve names in.
pub const SAFE_SEARCH_PATH: &str = "SET search_path = pg_catalog, pg_temp";

/// The names of this restore: `first`'s, or those of the same second with the smallest suffix
/// (`_2`, `_3`, …) whose scratch and kept databases both do not exist in `facts` (the answer of
/// [`plan_facts_sql`]): earlier restores of this second took the others. Refused when a suffixed
/// name would exceed 63 bytes (a live name that long: retry in a second).
pub fn free_names(facts: &str, first: Names) -> Result<Names> {
    let taken = |n: &Names| -> Result<bool> {
        Ok(facts_of(facts, &n.scratch)?.is_some()
            || facts_of(facts, &n.kept)?.is_some()
            || is_leftover_role(facts, &n.scratch))
    };
    if !taken(&first)? {
        return Ok(first);
    }
    for i in 2..=999_999 {
        let n = Names::new(first.live.as_str(), first.stamp.nth(i)).map_err(|_| {
            Error::failed(format!(
                "database {} or {} already exists (a restore earlier this second), and names with a \
                 suffix would exceed PostgreSQL's 63 bytes: retry in a second",
                first.scratch, first.kept
            ))
        })?;
        if !taken(&n)? {
            return Ok(n);
        }
    }
    Err(Error::failed(format!(
        "every name {}_N is taken: retry in a second",
        first.kept
    )))
}

/// A kept database name of `live`, with its stamp, or `None` when `name` is not of that shape.
pub fn kept_stamp(live: &DbName, name: &str) -> Option<Stamp> {
    let rest = name.strip_prefix(live.as_str())?.strip_prefix(KEPT_INFIX)?;
    Stamp::parse(rest)
}

/// The stamp of a scratch database name of `live` (`<live>_restore_<stamp>`).
pub fn scratch_stamp(live: &DbName, name: &str) -> Option<Stamp> {
    let rest = name
        .strip_prefix(live.as_str())?
        .strip_prefix(SCRATCH_INFIX)?;
    Stamp::parse(rest)
}

/// `--drop-kept NAME`: only `<db>_before_restore_<stamp>` of this environment's database, or a
/// scratch database `<db>_restore_<stamp>` an interrupted restore left (the plan names those).
pub fn parse_kept(live: &DbName, name: &str) -> Result<DbName> {
    match kept_stamp(live, name).or_else(|| scratch_stamp(live, name)) {
        Some(_) => DbName::parse(name),
        None => Err(Error::usage(format!(
            "--drop-kept {name:?}: only a kept database of the shape {live}{KEPT_INFIX}YYYYmmdd_HHMMSS[_N] \
             (`--kept` lists them) or a scratch database {live}{SCRATCH_INFIX}YYYYmmdd_HHMMSS[_N] left by \
             an interrupted restore can be dropped"
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// SQL. Every identifier is a `DbName` (validated shape, double-quoted).

/// Owner, `datallowconn`, `datconnlimit` and size of several databases in one query:
/// `datname|owner|allow|limit|size` lines.
/// Also lists the scratch databases of `live` (`<live>_restore_%`): one left by an interrupted
/// restore is named in the plan.
pub fn facts_of_sql(live: &DbName, dbs: &[&DbName]) -> String {
    facts_sql(live, dbs, "")
}

/// [`facts_of_sql`] with `more` (` OR datname LIKE ...`) added to the databases' condition.
fn facts_sql(live: &DbName, dbs: &[&DbName], more: &str) -> String {
    // `_` is a LIKE wildcard: escaped. The shape is checked again in Rust.
    let pattern = format!("{}{}%", live.as_str(), SCRATCH_INFIX).replace('_', "\\_");
    format!(
        "SELECT datname || '|' || pg_get_userbyid(datdba) || '|' || datallowconn || '|' || \
         datconnlimit || '|' || pg_database_size(datname) FROM pg_database WHERE datname IN ({}) \
         OR datname LIKE '{pattern}'{more} UNION ALL SELECT '{ROLE_MARK}' || rolname FROM pg_roles \
         WHERE rolname LIKE '{pattern}' AND rolname NOT IN (SELECT datname FROM pg_database)",
        dbs.iter()
            .map(|d| d.literal())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// [`facts_of_sql`] of the plan: the live, scratch and kept databases, and the kept ones of the
/// same second with a suffix (`<kept>_N`, see [`free_names`]; scratch ones are listed anyway).
pub fn plan_facts_sql(n: &Names) -> String {
    let kept_n = format!("{}\\_%", n.kept.as_str().replace('_', "\\_"));
    facts_sql(
        &n.live,
        &[&n.live, &n.scratch, &n.kept],
        &format!(" OR datname LIKE '{kept_n}'"),
    )
}

/// Marks a line of [`facts_of_sql`]'s answer that names a replay role whose database is gone.
const ROLE_MARK: &str = "role:";

/// Scratch databases of `live` in [`facts_of_sql`]'s answer, and replay roles left without
/// theirs, other than `except`.
pub fn leftover_scratch(text: &str, live: &DbName, except: &DbName) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().split('|').next())
        .map(|n| n.strip_prefix(ROLE_MARK).unwrap_or(n))
        .filter(|n| *n != except.as_str() && scratch_stamp(live, n).is_some())
        .map(str::to_string)
        .collect()
}

/// Whether [`facts_of_sql`]'s answer names `db` as a replay role left without its database.
pub fn is_leftover_role(text: &str, db: &DbName) -> bool {
    text.lines()
        .any(|l| l.trim().strip_prefix(ROLE_MARK) == Some(db.as_str()))
}

/// Parse [`facts_of_sql`]'s answer for `db` (`None`: it does not exist).
pub fn facts_of(text: &str, db: &DbName) -> Result<Option<LiveFacts>> {
    let prefix = format!("{}|", db.as_str());
    match text
        .lines()
        .find_map(|l| l.trim().strip_prefix(prefix.as_str()))
    {
        Some(rest) => parse_live_facts(rest),
        None => Ok(None),
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LiveFacts {
    pub owner: String,
    /// `datallowconn`.
    pub allow_connections: bool,
    /// `datconnlimit` (-1: no limit).
    pub conn_limit: i64,
    pub size_bytes: u64,
}

impl LiveFacts {
    /// Blocked (`datallowconn = false` or a limit of 0), e.g. left so by an interrupted swap or by
    /// hand: the databases are not re-blocked after the swap.
    pub fn blocked(&self) -> bool {
        !self.allow_connections || self.conn_limit == 0
    }

    /// The connection limit the live and kept databases get after the swap (and the live one
    /// when a swap is refused): the original one, or -1 when the live database was found blocked.
    pub fn reopen_limit(&self) -> i64 {
        if self.blocked() {
            -1
        } else {
            self.conn_limit
        }
    }

    /// The original values, for the swap's message and audit record.
    pub fn connections_note(&self) -> String {
        let orig = format!(
            "datallowconn={}, datconnlimit={}",
            self.allow_connections, self.conn_limit
        );
        if self.blocked() {
            format!(
                "the live database was found blocked ({orig}): connections are allowed again with limit -1"
            )
        } else {
            format!("connections as before ({orig})")
        }
    }
}

/// Parse one database's `owner|datallowconn|datconnlimit|size` (see [`facts_of_sql`]); `None`
/// when the answer is empty.
pub fn parse_live_facts(text: &str) -> Result<Option<LiveFacts>> {
    let line = text.trim();
    if line.is_empty() {
        return Ok(None);
    }
    let mut it = line.rsplitn(4, '|');
    let (size, limit, allow, owner) = (it.next(), it.next(), it.next(), it.next());
    let allow = match allow {
        Some("true" | "t") => Some(true),
        Some("false" | "f") => Some(false),
        _ => None,
    };
    match (
        owner,
        allow,
        limit.and_then(|l| l.parse().ok()),
        size.and_then(|s| s.parse().ok()),
    ) {
        (Some(o), Some(a), Some(l), Some(s)) => Ok(Some(LiveFacts {
            owner: o.to_string(),
            allow_connections: a,
            conn_limit: l,
            size_bytes: s,
        })),
        _ => Err(Error::failed(format!(
            "unexpected answer about the live database: {line:?}"
        ))),
    }
}

/// A role name as a quoted identifier (`"` doubled).
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

pub fn create_scratch_sql(scratch: &DbName, owner: &str) -> String {
    format!(
        "CREATE DATABASE {} TEMPLATE template0 OWNER {}",
        scratch.ident(),
        quote_ident(owner)
    )
}

/// The role the dump is replayed as: named as the scratch database it alone owns (roles and
/// databases are separate namespaces, so the two shapes stay one), with no attribute beyond
/// LOGIN and no password (it logs in over the server's trusted local socket only). INHERIT (the
/// default) is needed: the database owner's rights on the `public` schema come through the
/// implicit `pg_database_owner` membership; the role is a member of nothing else. The dump's SQL
/// (whatever a tampered object holds) then cannot run programs (`COPY ... TO PROGRAM`), read
/// server files, create roles or databases, or alter the live database: only the scratch
/// database it owns is within its reach.
///
/// BYPASSRLS: the role owns every table it loads, and the dump's own `SET row_security = off`
/// (and the counts) must see every row of a table with FORCE ROW LEVEL SECURITY. `VALID UNTIL
/// 'epoch'`: a password the dump gives its role (`ALTER ROLE CURRENT_USER PASSWORD`, which any
/// role may) is expired, so nobody logs in as it over TCP; the trusted socket does not ask.
pub fn create_replay_role_sql(scratch: &DbName) -> String {
    format!(
        "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION BYPASSRLS \
         CONNECTION LIMIT 2 VALID UNTIL 'epoch'",
        scratch.ident()
    )
}

/// Run in the scratch database once it is verified: the replay role's sessions end (a dump can
/// leave one behind), everything it owns (its objects, the database itself) goes to `owner`, its
/// grants go, and then the role.
pub fn adopt_sql(scratch: &DbName, owner: &str) -> [String; 4] {
    let r = scratch.ident();
    [
        format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = {} \
             AND pid <> pg_backend_pid()",
            scratch.literal()
        ),
        format!("REASSIGN OWNED BY {r} TO {}", quote_ident(owner)),
        format!("DROP OWNED BY {r}"),
        format!("DROP ROLE {r}"),
    ]
}

/// What a dump changed on the scratch database itself, which `pg_dump` without `--create` never
/// writes (so only a tampered object does), and which the swap would carry into the live
/// database: `setting|...` (ALTER DATABASE ... SET), `acl|...` (GRANT ON DATABASE),
/// `template|true`, `connlimit|N`, `allowconn|false`, `comment|...`; then `secdef|FUNCTION` for
/// each SECURITY DEFINER function (not refused: a real database may have them; they run with
/// their owner's rights once handed over, and are named). Run as the owner in the scratch
/// database (one line each).
pub fn scratch_props_sql(scratch: &DbName) -> String {
    let d = format!(
        "(SELECT oid FROM pg_database WHERE datname = {})",
        scratch.literal()
    );
    format!(
        "SELECT 'setting|' || array_to_string(setconfig, ',') FROM pg_db_role_setting \
         WHERE setdatabase = {d} AND setrole = 0 \
         UNION ALL SELECT 'acl|' || datacl::text FROM pg_database WHERE oid = {d} AND datacl IS NOT NULL \
         UNION ALL SELECT 'template|true' FROM pg_database WHERE oid = {d} AND datistemplate \
         UNION ALL SELECT 'connlimit|' || datconnlimit FROM pg_database WHERE oid = {d} AND datconnlimit <> -1 \
         UNION ALL SELECT 'allowconn|false' FROM pg_database WHERE oid = {d} AND NOT datallowconn \
         UNION ALL SELECT 'comment|' || description FROM pg_shdescription WHERE objoid = {d} \
         AND classoid = 'pg_database'::regclass \
         UNION ALL SELECT 'secdef|' || p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n \
         ON n.oid = p.pronamespace WHERE p.prosecdef AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
    )
}

/// [`scratch_props_sql`]'s answer: (what the dump changed on the database, SECURITY DEFINER
/// functions).
pub fn parse_scratch_props(text: &str) -> (Vec<String>, Vec<String>) {
    let mut changed = Vec::new();
    let mut secdef = Vec::new();
    for l in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match l.split_once('|') {
            Some(("secdef", f)) => secdef.push(f.to_string()),
            Some((k, v)) => changed.push(format!("{k} {v}")),
            None => changed.push(l.to_string()),
        }
    }
    (changed, secdef)
}

/// The replay role of `scratch`, if it is still there (after its database was dropped).
pub fn drop_role_sql(scratch: &DbName) -> String {
    format!("DROP ROLE IF EXISTS {}", scratch.ident())
}

pub fn drop_sql(db: &DbName) -> String {
    format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", db.ident())
}

/// Before [`drop_sql`] of a scratch database: a template cannot be dropped, and a dump can make
/// the database it is restored into one (refused, then dropped).
pub fn untemplate_sql(db: &DbName) -> String {
    format!(
        "DO $$BEGIN IF EXISTS (SELECT 1 FROM pg_database WHERE datname = {} AND datistemplate) \
         THEN ALTER DATABASE {} IS_TEMPLATE false; END IF; END$$",
        db.literal(),
        db.ident()
    )
}

/// Drop a kept database: no FORCE (a session on it means someone is looking at it).
pub fn drop_kept_sql(db: &DbName) -> String {
    format!("DROP DATABASE {}", db.ident())
}

/// Block new connections to the live database (also for superusers: `ALLOW_CONNECTIONS false`).
pub fn block_sql(live: &DbName) -> String {
    format!(
        "ALTER DATABASE {0} ALLOW_CONNECTIONS false; ALTER DATABASE {0} CONNECTION LIMIT 0",
        live.ident()
    )
}

/// Allow connections again with the original connection limit.
pub fn unblock_sql(db: &DbName, conn_limit: i64) -> String {
    format!(
        "ALTER DATABASE {0} ALLOW_CONNECTIONS true; ALTER DATABASE {0} CONNECTION LIMIT {1}",
        db.ident(),
        conn_limit
    )
}

/// End every session on `db` except ours; prints how many are left, then their pids.
pub fn terminate_sql(db: &DbName) -> String {
    format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = {} AND pid <> pg_backend_pid()",
        db.literal()
    )
}

/// Pids of the sessions still on `db` (one per line).
pub fn sessions_sql(db: &DbName) -> String {
    format!(
        "SELECT pid || ' ' || coalesce(usename, '?') || ' ' || coalesce(application_name, '') \
         FROM pg_stat_activity WHERE datname = {} AND pid <> pg_backend_pid() ORDER BY pid",
        db.literal()
    )
}

/// [`terminate_sql`] for several databases: one count (of all of them).
pub fn terminate_each_sql(dbs: &[&DbName]) -> String {
    format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname IN ({}) AND pid <> pg_backend_pid()",
        literals(dbs)
    )
}

/// [`sessions_sql`] for several databases, each line led by its database's name.
pub fn sessions_each_sql(dbs: &[&DbName]) -> String {
    format!(
        "SELECT datname || ' ' || pid || ' ' || coalesce(usename, '?') || ' ' || \
         coalesce(application_name, '') FROM pg_stat_activity WHERE datname IN ({}) AND pid <> \
         pg_backend_pid() ORDER BY datname, pid",
        literals(dbs)
    )
}

fn literals(dbs: &[&DbName]) -> String {
    dbs.iter()
        .map(|d| d.literal())
        .collect::<Vec<_>>()
        .join(", ")
}

/// No live database: the restored one just takes the name.
pub fn rename_sql(n: &Names) -> String {
    format!(
        "ALTER DATABASE {} RENAME TO {}",
        n.scratch.ident(),
        n.live.ident()
    )
}

/// Both renames in one transaction: the second failing undoes the first (PostgreSQL rolls the
/// transaction back), so there is never a moment without a database of the live name... except
/// inside the transaction, which nobody else can see.
///
/// The session is tagged ([`swap_tag`]) so that, when its client is gone before the answer, the
/// read-back can end it and wait for it before judging what pg_database shows.
pub fn swap_sql(n: &Names) -> String {
    format!(
        "SET application_name = '{}'; BEGIN; ALTER DATABASE {} RENAME TO {}; ALTER DATABASE {} \
         RENAME TO {}; COMMIT;",
        swap_tag(n),
        n.live.ident(),
        n.kept.ident(),
        n.scratch.ident(),
        n.live.ident()
    )
}

/// `application_name` of the renames' session (the stamp: digits and `_` only).
pub fn swap_tag(n: &Names) -> String {
    format!("xtask-swap-{}", n.stamp.as_str())
}

/// End the renames' session if it still runs (its client may be gone while it waits for a lock)
/// and wait, bounded, until it is gone: a transaction still open could commit after the read-back
/// and make it wrong. Prints `gone`, or `running` when it outlived the wait.
pub fn end_swap_session_sql(n: &Names) -> String {
    let tag = swap_tag(n);
    format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = '{tag}' \
         AND pid <> pg_backend_pid(); \
         DO $$ BEGIN FOR i IN 1..100 LOOP PERFORM pg_stat_clear_snapshot(); EXIT WHEN NOT EXISTS \
         (SELECT 1 FROM pg_stat_activity WHERE application_name = '{tag}' AND pid <> pg_backend_pid()); \
         PERFORM pg_sleep(0.05); END LOOP; END $$; \
         SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = '{tag}' \
         AND pid <> pg_backend_pid()) THEN 'running' ELSE 'gone' END"
    )
}

/// Kept databases of `live`: `name|size_bytes` lines.
pub fn kept_list_sql(live: &DbName) -> String {
    // `_` is a LIKE wildcard: escaped. The shape is checked again in Rust.
    let pattern = format!("{}{}%", live.as_str(), KEPT_INFIX).replace('_', "\\_");
    format!(
        "SELECT datname || '|' || pg_database_size(datname) FROM pg_database \
         WHERE datname LIKE '{pattern}' ORDER BY datname"
    )
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Kept {
    pub database: DbName,
    pub size_bytes: u64,
    pub stamp: Stamp,
    pub age_seconds: i64,
}

pub fn parse_kept_list(live: &DbName, text: &str, now: i64) -> Vec<Kept> {
    text.lines()
        .filter_map(|l| {
            let (name, size) = l.trim().rsplit_once('|')?;
            let stamp = kept_stamp(live, name)?;
            Some(Kept {
                database: DbName::parse(name).ok()?,
                size_bytes: size.parse().ok()?,
                age_seconds: now - stamp.unix(),
                stamp,
            })
        })
        .collect()
}

/// One difference between the manifest and the restored database.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    pub what: String,
    pub manifest: String,
    pub restored: String,
}

/// Compare per-table counts and the newest migration with the manifest's (empty: all equal).
pub fn verify(
    manifest_tables: &BTreeMap<String, u64>,
    restored_tables: &BTreeMap<String, u64>,
    manifest_migration: Option<&str>,
    restored_migration: Option<&str>,
) -> Vec<Mismatch> {
    let mut out = Vec::new();
    let show = |v: Option<&u64>| v.map_or("missing".to_string(), |n| n.to_string());
    let mut names: Vec<&String> = manifest_tables
        .keys()
        .chain(restored_tables.keys())
        .collect();
    names.sort();
    names.dedup();
    for t in names {
        let (a, b) = (manifest_tables.get(t), restored_tables.get(t));
        if a != b {
            out.push(Mismatch {
                what: format!("table {t}"),
                manifest: show(a),
                restored: show(b),
            });
        }
    }
    if manifest_migration != restored_migration {
        out.push(Mismatch {
            what: "newest migration".into(),
            manifest: manifest_migration.unwrap_or("none").into(),
            restored: restored_migration.unwrap_or("none").into(),
        });
    }
    out
}

// ---------------------------------------------------------------------------------------------
// What is true after a swap whose psql failed: read back from pg_database, never assumed.

/// `datname|oid|datallowconn|datconnlimit` of the live, scratch and kept names (those that exist).
pub fn swap_state_sql(n: &Names) -> String {
    format!(
        "SELECT datname || '|' || oid || '|' || datallowconn || '|' || datconnlimit FROM pg_database \
         WHERE datname IN ({}, {}, {}) ORDER BY datname",
        n.live.literal(),
        n.scratch.literal(),
        n.kept.literal()
    )
}

/// One row of [`swap_state_sql`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DbRow {
    pub name: String,
    pub oid: u32,
    pub allow_connections: bool,
    pub conn_limit: i64,
}

impl DbRow {
    /// Open as the swap leaves it: connections allowed with the limit `limit`.
    pub fn open_with(&self, limit: i64) -> bool {
        self.allow_connections && self.conn_limit == limit
    }
}

impl std::fmt::Display for DbRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (oid {}, datallowconn={}, datconnlimit={})",
            self.name, self.oid, self.allow_connections, self.conn_limit
        )
    }
}

pub fn parse_db_rows(text: &str) -> Result<Vec<DbRow>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let bad = || Error::failed(format!("unexpected pg_database row {l:?}"));
            let mut it = l.rsplitn(4, '|');
            let (limit, allow, oid, name) = (it.next(), it.next(), it.next(), it.next());
            Ok(DbRow {
                name: name.ok_or_else(bad)?.to_string(),
                oid: oid.and_then(|o| o.parse().ok()).ok_or_else(bad)?,
                allow_connections: match allow {
                    Some("true" | "t") => true,
                    Some("false" | "f") => false,
                    _ => return Err(bad()),
                },
                conn_limit: limit.and_then(|c| c.parse().ok()).ok_or_else(bad)?,
            })
        })
        .collect()
}

/// The oids of the databases before the swap: which database is which, whatever its name now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Oids {
    /// The live database (`None`: there was none, the restored one only takes the name).
    pub live: Option<u32>,
    pub scratch: u32,
}

impl Oids {
    pub fn of(n: &Names, rows: &[DbRow]) -> Result<Oids> {
        let find = |d: &DbName| rows.iter().find(|r| r.name == d.as_str()).map(|r| r.oid);
        let scratch = find(&n.scratch).ok_or_else(|| {
            Error::failed(format!(
                "the restored database {} is not in pg_database before the swap",
                n.scratch
            ))
        })?;
        Ok(Oids {
            live: find(&n.live),
            scratch,
        })
    }
}

/// What pg_database says the swap did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SwapState {
    /// The restored database is live under the name (and the replaced one is kept).
    Renamed,
    /// Nothing was renamed: the live database is the one it was, the restored one still scratch.
    NotRenamed,
    /// Neither: the rows as they are.
    Other(String),
}

/// Judge by oid: the renames are one transaction, so it is all or nothing, but a database that is
/// missing or renamed by someone else shows as [`SwapState::Other`].
pub fn judge_swap(n: &Names, before: Oids, rows: &[DbRow]) -> SwapState {
    let find = |d: &DbName| rows.iter().find(|r| r.name == d.as_str()).map(|r| r.oid);
    let (live, scratch, kept) = (find(&n.live), find(&n.scratch), find(&n.kept));
    if live == Some(before.scratch) && scratch.is_none() && kept == before.live {
        SwapState::Renamed
    } else if scratch == Some(before.scratch) && live == before.live && kept.is_none() {
        SwapState::NotRenamed
    } else {
        SwapState::Other(if rows.is_empty() {
            format!("none of {}, {}, {} exists", n.live, n.scratch, n.kept)
        } else {
            rows.iter()
                .map(DbRow::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        })
    }
}

/// The SQL that finishes a swap by hand, for each outcome (`kept`: there was a live database).
pub fn finish_by_hand(n: &Names, kept: bool, limit: i64) -> (String, String) {
    let renamed = if kept {
        format!(
            "{}; {}",
            unblock_sql(&n.live, limit),
            unblock_sql(&n.kept, limit)
        )
    } else {
        unblock_sql(&n.live, limit)
    };
    let not_renamed = if kept {
        format!("{}; {}", unblock_sql(&n.live, limit), drop_sql(&n.scratch))
    } else {
        drop_sql(&n.scratch)
    };
    (renamed, not_renamed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_have_the_fixed_shapes_and_bad_names_are_refused() {
        let n = Names::new("station", Stamp::at_unix(1_796_115_600)).unwrap();
        assert_eq!(n.stamp.as_str(), "20261201_090000");
        assert_eq!(n.scratch.as_str(), "station_restore_20261201_090000");
        assert_eq!(n.kept.as_str(), "station_before_restore_20261201_090000");
        assert_eq!(n.stamp.unix(), 1_796_115_600);
        for bad in [
            "",
            "Station",
            "a-b",
            "a\"b",
            "x;DROP",
            &"a".repeat(64),
            "1abc",
        ] {
            assert!(DbName::parse(bad).is_err(), "{bad}");
        }
        // A live name so long that the kept name would exceed 63 bytes is refused, not truncated.
        assert!(Names::new(&"a".repeat(40), n.stamp.clone()).is_err());
        // The N-th restore of a second.
        let n3 = Names::new("station", n.stamp.nth(3)).unwrap();
        assert_eq!(n3.scratch.as_str(), "station_restore_20261201_090000_3");
        assert_eq!(n3.kept.as_str(), "station_before_restore_20261201_090000_3");
        assert_eq!(
            (n3.stamp.unix(), n3.stamp.nth(1)),
            (1_796_115_600, n.stamp.clone())
        );
        assert_eq!(swap_tag(&n3), "xtask-swap-20261201_090000_3");
        for bad in [
            "20261201_090000_",
            "20261201_090000_1",
            "20261201_090000_0",
            "20261201_090000_02",
            "20261201_090000_1234567",
            "20261201_090000_x",
            "20261201_090000x2",
            "20261201_0900002",
        ] {
            assert_eq!(Stamp::parse(bad), None, "{bad}");
        }
        assert!(Stamp::parse("20261201_090000_999999").is_some());
    }

    #[test]
    fn restores_in_the_same_second_get_names_of_their_own() {
        // Regression: the names had the stamp alone (one second), and a restore whose second's
        // names an earlier restore had taken (its kept database, or a scratch one it left) was
        // refused ("another restore ran this second; retry").
        let first = || Names::new("station", Stamp::parse("20261201_090000").unwrap()).unwrap();
        let row = |db: &str| format!("{db}|station|true|-1|9\n");
        assert_eq!(free_names(&row("station"), first()).unwrap(), first());
        let mut facts = row("station");
        let mut seen = Vec::new();
        for _ in 0..6 {
            let n = free_names(&facts, first()).unwrap();
            assert!(!seen.contains(&n.kept), "{} again", n.kept);
            assert!(n.kept.as_str().len() <= 63);
            seen.push(n.kept.clone());
            // This one swapped: its kept database exists now.
            facts.push_str(&row(n.kept.as_str()));
        }
        assert_eq!(
            seen.iter().map(DbName::as_str).collect::<Vec<_>>(),
            [
                "station_before_restore_20261201_090000",
                "station_before_restore_20261201_090000_2",
                "station_before_restore_20261201_090000_3",
                "station_before_restore_20261201_090000_4",
                "station_before_restore_20261201_090000_5",
                "station_before_restore_20261201_090000_6",
            ]
        );
        // A scratch database of the second (an interrupted restore's) takes its suffix too.
        let facts = row("station_restore_20261201_090000")
            + &row("station_before_restore_20261201_090000_2");
        assert_eq!(
            free_names(&facts, first()).unwrap().stamp.as_str(),
            "20261201_090000_3"
        );
        // The plan's query lists the suffixed kept databases of the second.
        let q = plan_facts_sql(&first());
        assert!(
            q.contains("LIKE 'station\\_before\\_restore\\_20261201\\_090000\\_%'"),
            "{q}"
        );
        assert!(q.contains("LIKE 'station\\_restore\\_%'"), "{q}");
        // A live name of 32 bytes: its plain names fit in 63 bytes, suffixed ones would not.
        let long = "a".repeat(32);
        let n = Names::new(&long, Stamp::parse("20261201_090000").unwrap()).unwrap();
        let e = free_names(&row(n.kept.as_str()), n).unwrap_err();
        assert!(e.to_string().contains("63 bytes"), "{e}");
    }

    #[test]
    fn only_kept_names_of_this_database_may_be_dropped() {
        let live = DbName::parse("station").unwrap();
        assert!(parse_kept(&live, "station_before_restore_20261201_090000").is_ok());
        // A scratch database an interrupted restore left (the deploy lock keeps a running restore's).
        assert!(parse_kept(&live, "station_restore_20261201_090000").is_ok());
        // Of the N-th restore of a second.
        assert!(parse_kept(&live, "station_before_restore_20261201_090000_2").is_ok());
        assert!(parse_kept(&live, "station_restore_20261201_090000_12").is_ok());
        for bad in [
            "station_before_restore_20261201_090000_",
            "station_before_restore_20261201_090000_1",
            "station_before_restore_20261201_090000_02",
            "station_restore_20261201_090000_2x",
            "station",
            "other_restore_20261201_090000",
            "station_restore_20261201_09000",
            "station_before_restore_2026120_090000",
            "other_before_restore_20261201_090000",
            "station_before_restore_20261201_090000x",
            "station_before_restore_20261201_090000\"; DROP DATABASE station; --",
        ] {
            let e = parse_kept(&live, bad).unwrap_err();
            assert_eq!(e.exit_code(), crate::error::ExitCode::Usage, "{bad}");
        }
    }

    #[test]
    fn rfc3339_and_ages() {
        assert_eq!(
            parse_rfc3339_utc("2026-12-01T09:00:00Z"),
            Some(1_796_115_600)
        );
        assert_eq!(
            parse_rfc3339_utc("2026-12-01T09:00:00.123Z"),
            Some(1_796_115_600)
        );
        assert_eq!(parse_rfc3339_utc("2026-12-01T09:00:00+02:00"), None);
        assert_eq!(parse_rfc3339_utc("yesterday"), None);
    }

    #[test]
    fn a_backup_dated_in_the_future_is_not_called_0s_ago() {
        let live = DbName::parse("station").unwrap();
        let kept = DbName::parse("station_before_restore_20261201_090000").unwrap();
        let c = "2026-12-01T11:05:00.000Z";
        let w = window_text(c, 3 * 3600 + 60, &live, Some(&kept));
        assert!(
            w.contains("3h 1m ago") && w.contains("kept database station_before"),
            "{w}"
        );
        assert_eq!(clock_skew_warning("b2:x/y.sql.gz", c, 0), None);
        // Dated 2h 5m after this machine's clock.
        let w = window_text(c, -(2 * 3600 + 5 * 60), &live, None);
        assert!(!w.contains("ago"), "{w}");
        assert!(
            w.contains("2h 5m after this machine's clock")
                && w.contains("clocks of this machine and the one that took the backup disagree")
                && w.contains("cannot be judged"),
            "{w}"
        );
        let warn = clock_skew_warning("b2:x/y.sql.gz", c, -(2 * 3600 + 5 * 60)).unwrap();
        assert!(
            warn.contains("2h 5m in the future")
                && warn.contains("clocks")
                && warn.contains("disagree"),
            "{warn}"
        );
    }

    #[test]
    fn swap_is_one_transaction_and_identifiers_are_quoted() {
        let n = Names::new("station", Stamp::parse("20261201_090000").unwrap()).unwrap();
        assert_eq!(
            swap_sql(&n),
            "SET application_name = 'xtask-swap-20261201_090000'; BEGIN; ALTER DATABASE \"station\" RENAME TO \"station_before_restore_20261201_090000\"; \
             ALTER DATABASE \"station_restore_20261201_090000\" RENAME TO \"station\"; COMMIT;"
        );
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert!(kept_list_sql(&n.live).contains("'station\\_before\\_restore\\_%'"));
    }

    #[test]
    fn kept_list_and_facts_parse() {
        let live = DbName::parse("station").unwrap();
        let k = parse_kept_list(
            &live,
            "station_before_restore_20261201_090000|8000\nstation_before_restore_junk|1\n",
            1_796_115_600 + 60,
        );
        assert_eq!(k.len(), 1);
        assert_eq!(k[0].age_seconds, 60);
        assert_eq!(k[0].size_bytes, 8000);
        let open = LiveFacts {
            owner: "station".into(),
            allow_connections: true,
            conn_limit: -1,
            size_bytes: 7000,
        };
        assert_eq!(
            parse_live_facts("station|true|-1|7000\n").unwrap(),
            Some(open.clone())
        );
        assert!(!open.blocked());
        assert_eq!(open.reopen_limit(), -1);
        // A limit of 20 is kept.
        let limited = LiveFacts {
            conn_limit: 20,
            ..open.clone()
        };
        assert_eq!(limited.reopen_limit(), 20);
        // Found blocked (an interrupted swap, by hand): opened with -1, and said so.
        for (allow, limit) in [
            ("false", "-1"),
            ("true", "0"),
            ("false", "0"),
            ("false", "20"),
        ] {
            let f = parse_live_facts(&format!("station|{allow}|{limit}|7000"))
                .unwrap()
                .unwrap();
            assert!(f.blocked(), "{allow} {limit}");
            assert_eq!(f.reopen_limit(), -1);
            let note = f.connections_note();
            assert!(
                note.contains("found blocked")
                    && note.contains(&format!("datallowconn={allow}, datconnlimit={limit}")),
                "{note}"
            );
        }
        assert!(parse_live_facts("station|maybe|-1|7000").is_err());
        assert_eq!(parse_live_facts("").unwrap(), None);
        assert!(parse_live_facts("garbage").is_err());
        // Several at once: each by its exact name (no prefix confusion with a longer name).
        let live = DbName::parse("station").unwrap();
        let kept = DbName::parse("station_before_restore_20261201_120000").unwrap();
        let text =
            "station_before_restore_20261201_120000|station|true|-1|9\nstation|app|false|0|7000\n";
        let f = facts_of(text, &live).unwrap().unwrap();
        assert_eq!(
            (f.owner.as_str(), f.conn_limit, f.size_bytes),
            ("app", 0, 7000)
        );
        assert_eq!(facts_of(text, &kept).unwrap().unwrap().size_bytes, 9);
        let scratch = DbName::parse("station_restore_20261201_120000").unwrap();
        assert_eq!(facts_of(text, &scratch).unwrap(), None);
        let q = facts_of_sql(&live, &[&live, &kept]);
        assert!(
            q.contains(&live.literal()) && q.contains(&kept.literal()),
            "{q}"
        );
        assert!(facts_of_sql(&live, &[&live]).contains("LIKE 'station\\_restore\\_%'"));
        let text = "station_restore_20261201_110000|station|true|-1|9\nstation|app|true|-1|7\n\
                    station_restore_x|a|true|-1|1\n";
        assert_eq!(
            leftover_scratch(text, &live, &scratch),
            ["station_restore_20261201_110000"]
        );
        assert_eq!(
            leftover_scratch(
                text,
                &live,
                &DbName::parse("station_restore_20261201_110000").unwrap()
            ),
            Vec::<String>::new()
        );
        assert!(parse_kept(&live, "station_restore_20261201_110000").is_ok());
        assert!(parse_kept(&live, "station").is_err());
    }

    #[test]
    fn verify_names_every_difference() {
        let m: BTreeMap<String, u64> = [("public.a".into(), 3), ("public.b".into(), 1)].into();
        let r: BTreeMap<String, u64> = [("public.a".into(), 3), ("public.c".into(), 1)].into();
        assert!(verify(&m, &m, Some("2"), Some("2")).is_empty());
        let d = verify(&m, &r, Some("2"), None);
        let what: Vec<&str> = d.iter().map(|x| x.what.as_str()).collect();
        assert_eq!(
            what,
            ["table public.b", "table public.c", "newest migration"]
        );
    }

    #[test]
    fn the_swap_is_judged_by_oid_from_pg_database() {
        let n = Names::new("station", Stamp::at_unix(1_796_115_600)).unwrap();
        let sql = swap_state_sql(&n);
        assert!(
            sql.contains("'station', 'station_restore_20261201_090000', 'station_before_restore_20261201_090000'"),
            "{sql}"
        );
        let rows = |t: &str| parse_db_rows(t).unwrap();
        let before = rows("station|16384|false|0\nstation_restore_20261201_090000|16390|true|-1\n");
        let oids = Oids::of(&n, &before).unwrap();
        assert_eq!(
            oids,
            Oids {
                live: Some(16384),
                scratch: 16390
            }
        );
        assert_eq!(judge_swap(&n, oids, &before), SwapState::NotRenamed);
        let after =
            rows("station|16390|true|-1\nstation_before_restore_20261201_090000|16384|false|0\n");
        assert_eq!(judge_swap(&n, oids, &after), SwapState::Renamed);
        assert!(after[0].open_with(-1) && !after[1].open_with(-1));
        // A live database of another oid, or one name missing: neither layout, the rows named.
        match judge_swap(&n, oids, &rows("station|20000|true|-1\n")) {
            SwapState::Other(s) => assert!(s.contains("station (oid 20000"), "{s}"),
            s => panic!("{s:?}"),
        }
        match judge_swap(&n, oids, &[]) {
            SwapState::Other(s) => assert!(s.contains("none of station"), "{s}"),
            s => panic!("{s:?}"),
        }
        // No live database before: the rename alone.
        let oids = Oids {
            live: None,
            scratch: 16390,
        };
        assert_eq!(
            judge_swap(&n, oids, &rows("station|16390|true|-1")),
            SwapState::Renamed
        );
        assert_eq!(
            judge_swap(
                &n,
                oids,
                &rows("station_restore_20261201_090000|16390|true|-1")
            ),
            SwapState::NotRenamed
        );
        assert!(Oids::of(&n, &rows("station|1|true|-1")).is_err());
        assert!(parse_db_rows("station|x|true|-1").is_err());
        let (done, undone) = finish_by_hand(&n, true, -1);
        assert!(
            done.contains("\"station\" ALLOW_CONNECTIONS true")
                && done.contains("\"station_before_restore_20261201_090000\" CONNECTION LIMIT -1"),
            "{done}"
        );
        assert!(
            undone.contains("DROP DATABASE IF EXISTS \"station_restore_20261201_090000\""),
            "{undone}"
        );
    }
}
