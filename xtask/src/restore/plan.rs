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
/// Also the live database's own properties ([`PROPS_MARK`], see [`live_props_sql`]) and the
/// cluster's ([`CLUSTER_MARK`], see [`cluster_sql`]), one JSON line each.
pub fn plan_facts_sql(n: &Names) -> String {
    let kept_n = format!("{}\\_%", n.kept.as_str().replace('_', "\\_"));
    format!(
        "{} UNION ALL {} UNION ALL {}",
        facts_sql(
            &n.live,
            &[&n.live, &n.scratch, &n.kept],
            &format!(" OR datname LIKE '{kept_n}'"),
        ),
        live_props_sql(&n.live),
        cluster_sql()
    )
}

/// The facts `backup drill` needs of the live database `live` before it makes its scratch
/// database beside it, in the plan's words: its [`facts_of_sql`] line (for its size), its own
/// properties (the scratch database is made like it) and the cluster's (the space check).
pub fn drill_facts_sql(live: &DbName) -> String {
    format!(
        "{} UNION ALL {} UNION ALL {}",
        facts_of_sql(live, &[live]),
        live_props_sql(live),
        cluster_sql()
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

/// Ends the sessions on the databases `dbs` but this one: one count (of all of them).
pub fn terminate_each_sql(dbs: &[&DbName]) -> String {
    format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname IN ({}) AND pid <> pg_backend_pid()",
        literals(dbs)
    )
}

/// The sessions still on the databases `dbs`, one per line: `datname pid user application`.
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

/// The swap's statements: what the swap sends and `restore --dry-run` prints (one value, so the
/// dry run shows what runs). In order: `state` (which database is which, by oid, for the
/// read-back), the wait (`block` each of `blocked`, then `terminate` their sessions and list
/// the `sessions` left, repeated without the block until none is), `rename`, then `open` each of
/// `opened` again with the live database's connection limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwapPlan {
    pub state: String,
    /// The live database (if any) and the scratch one: blocked, their sessions ended (a session
    /// on the scratch database, a monitoring agent's or a psql left open, would fail the renames).
    pub blocked: Vec<DbName>,
    pub block: Vec<String>,
    pub terminate: String,
    pub sessions: String,
    /// Both renames in one transaction ([`swap_sql`]), or with no live database [`rename_sql`].
    pub rename: String,
    /// The restored database (the scratch one, blocked for the renames) and the kept one.
    pub opened: Vec<DbName>,
    /// [`unblock_sql`] of each of `opened`, in that order.
    pub open: Vec<String>,
}

/// The swap of `n` (`live`: there is a live database to keep), `limit` the connection limit the
/// databases are opened with again ([`LiveFacts::reopen_limit`]; -1 with no live database).
pub fn swap_plan(n: &Names, live: bool, limit: i64) -> SwapPlan {
    let (blocked, rename, opened) = if live {
        (
            vec![n.live.clone(), n.scratch.clone()],
            swap_sql(n),
            vec![n.live.clone(), n.kept.clone()],
        )
    } else {
        (vec![n.scratch.clone()], rename_sql(n), vec![n.live.clone()])
    };
    let refs: Vec<&DbName> = blocked.iter().collect();
    SwapPlan {
        state: swap_state_sql(n),
        block: blocked.iter().map(block_sql).collect(),
        terminate: terminate_each_sql(&refs),
        sessions: sessions_each_sql(&refs),
        blocked,
        rename,
        open: opened.iter().map(|db| unblock_sql(db, limit)).collect(),
        opened,
    }
}

impl SwapPlan {
    /// One round trip of the wait, a transaction per statement: block (the `first` time), end
    /// the sessions, list those left (the answer's first line is terminate's count).
    pub fn wait(&self, first: bool) -> Vec<&str> {
        let block = self.block.iter().filter(|_| first).map(String::as_str);
        block
            .chain([self.terminate.as_str(), self.sessions.as_str()])
            .collect()
    }

    /// The unblock after the renames, all in one round trip.
    pub fn open(&self) -> Vec<&str> {
        self.open.iter().map(String::as_str).collect()
    }
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

// ---------------------------------------------------------------------------------------------
// The replay's check: run in the replay's own transaction after the dump, before its COMMIT.

/// The restored database's per-table counts and newest migration as one JSON object
/// (`{"tables": {"schema.table": n}, "migration": name | null}`, counted as `backup-db.sh` counts
/// them for the manifest), printed and kept in the session's `xtask.got` for [`check_sql`]'s gate.
/// Run under `search_path = pg_catalog, pg_temp`: every function and operator is pg_catalog's
/// (neither is ever looked up in pg_temp), and the migration tables are named with their schema,
/// `public` (where `backup-db.sh`, on the default search path, finds them): nothing the dump
/// defined in `public` can stand in for a built-in (CVE-2018-1058's pattern), whatever its types.
fn got_sql() -> String {
    format!(
        "SELECT pg_catalog.set_config('xtask.got', pg_catalog.jsonb_build_object('tables', \
         (SELECT coalesce(pg_catalog.jsonb_object_agg(t.k, t.n), '{{}}'::pg_catalog.jsonb) FROM (\
         SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) AS k, \
         (pg_catalog.xpath('/row/c/text()', pg_catalog.query_to_xml(pg_catalog.format(\
         'SELECT pg_catalog.count(*) AS c FROM %I.%I', n.nspname, c.relname), false, true, \
         '')))[1]::pg_catalog.text::pg_catalog.int8 AS n \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
         AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%') t), \
         'migration', nullif(({NEWEST_MIGRATION_SQL}), ''))::pg_catalog.text, false)"
    )
}

/// The newest applied migration, the way `backup-db.sh` records it in the manifest: the name of the
/// greatest `version` in the builtin `public.schema_migrations`, else TypeORM's newest
/// `public.migrations` name, else nothing (an empty line). The tables are only read when they
/// exist with those columns, and named by their schema (see [`got_sql`]).
const NEWEST_MIGRATION_SQL: &str = "SELECT CASE \
 WHEN (SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass('public.schema_migrations') \
 AND attname IN ('version', 'name') AND NOT attisdropped) = 2 \
 THEN (xpath('/row/m/text()', query_to_xml('SELECT name AS m FROM public.schema_migrations \
 ORDER BY version DESC LIMIT 1', false, true, '')))[1]::text \
 WHEN (SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass('public.migrations') \
 AND attname IN ('timestamp', 'name') AND NOT attisdropped) = 2 \
 THEN (xpath('/row/m/text()', query_to_xml('SELECT name AS m FROM public.migrations \
 ORDER BY \"timestamp\" DESC LIMIT 1', false, true, '')))[1]::text \
 END";

/// What the gate raises when the counts are not the manifest's (psql's error names it).
pub const GATE_TAG: &str = "xtask-gate:";

/// The check `replay.sh` runs after the dump in the replay's own transaction, before its COMMIT,
/// on one line (the script reads it from its stdin, first: a manifest's tables can be far more
/// than an argument may hold): the counts and the newest migration ([`got_sql`]: taken there,
/// the scan is over rows only this transaction has written, so it sets no hint bits and dirties
/// no page), and with `want` (the manifest's counts and newest migration) a gate that raises when
/// they differ, so such a restore is never committed. First the session is set back to a known
/// state: `RESET ALL` and `RESET ROLE` (nothing the dump SET applies), the client encoding UTF8
/// (the manifest's and xtask's; `RESET ALL` would leave psql's startup one), a search path of
/// pg_catalog and the session's temp schema last (where the dump could have put a `pg_class` of
/// its own), and `SET CONSTRAINTS ALL IMMEDIATE`: a deferred constraint trigger the dump queued
/// runs now, before the counts, not at the COMMIT after the gate.
pub fn check_sql(want: Option<(&BTreeMap<String, u64>, Option<&str>)>) -> String {
    let mut v = vec![
        "RESET ALL;".to_string(),
        "RESET ROLE;".to_string(),
        "SET client_encoding = 'UTF8';".to_string(),
        format!("{SAFE_SEARCH_PATH};"),
        "SET CONSTRAINTS ALL IMMEDIATE;".to_string(),
        format!("{};", got_sql()),
    ];
    if let Some((tables, migration)) = want {
        let want = serde_json::json!({ "tables": tables, "migration": migration }).to_string();
        v.push("SET standard_conforming_strings = on;".to_string());
        v.push(format!("SET xtask.want = '{}';", want.replace('\'', "''")));
        v.push(format!(
            "DO $xtask$BEGIN IF pg_catalog.current_setting('xtask.got')::pg_catalog.jsonb \
             IS DISTINCT FROM pg_catalog.current_setting('xtask.want')::pg_catalog.jsonb THEN \
             RAISE EXCEPTION '{GATE_TAG} the restored database differs from its manifest'; \
             END IF; END$xtask$;"
        ));
    }
    // One line: JSON escapes every newline in a name; the statements have none.
    v.join(" ")
}

/// What [`check_sql`] printed: the restored per-table counts and newest migration.
pub fn parse_check(out: &str) -> Result<(BTreeMap<String, u64>, Option<String>)> {
    #[derive(serde::Deserialize)]
    struct Got {
        tables: BTreeMap<String, u64>,
        migration: Option<String>,
    }
    let line = out.lines().find(|l| !l.trim().is_empty()).ok_or_else(|| {
        Error::failed(
            "the replay's check printed nothing: the dump did not end where a pg_dump dump ends \
             (an unterminated statement took in the check and the COMMIT?)",
        )
    })?;
    let got: Got = serde_json::from_str(line.trim()).map_err(|e| {
        Error::failed(format!(
            "unexpected answer of the replay's check {line:?}: {e}"
        ))
    })?;
    Ok((got.tables, got.migration))
}

// ---------------------------------------------------------------------------------------------
// The live database's own properties, which a dump without `--create` does not carry and the
// scratch database (made from template0) would otherwise lose in the swap: its encoding, locale
// and tablespace (given to `CREATE DATABASE`), and its ACL, settings (of the database and of roles
// in it), comment and connection limit (applied to the scratch database before the swap).

/// Marks [`plan_facts_sql`]'s line holding the live database's properties (JSON).
const PROPS_MARK: &str = "props:";
/// Marks [`plan_facts_sql`]'s line holding the cluster's facts (JSON).
const CLUSTER_MARK: &str = "cluster:";

/// One line `props:{json}` for `live` (none when it does not exist): the whole `pg_database` row
/// (`to_jsonb`: the locale provider's columns differ by version), the encoding's name, the
/// tablespace and its location (empty: in the data directory), the ACL item by item (`grantee`
/// null: PUBLIC; `has_acl` false: the default ACL), the settings (`role` null: the database's
/// own), the comment. JSON: values of any text (newlines, `|`) stay on one line.
fn live_props_sql(live: &DbName) -> String {
    format!(
        "SELECT '{PROPS_MARK}' || json_build_object('db', to_jsonb(d), \
         'encoding', pg_encoding_to_char(d.encoding), 'tablespace', t.spcname, \
         'location', pg_tablespace_location(d.dattablespace), 'has_acl', d.datacl IS NOT NULL, \
         'acl', (SELECT json_agg(json_build_object('grantor', pg_get_userbyid(a.grantor), \
         'grantee', CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END, \
         'privilege', a.privilege_type, 'grantable', a.is_grantable)) FROM aclexplode(d.datacl) a), \
         'settings', (SELECT json_agg(json_build_object('role', CASE WHEN s.setrole = 0 THEN NULL \
         ELSE pg_get_userbyid(s.setrole) END, 'config', s.setconfig) ORDER BY s.setrole) \
         FROM pg_db_role_setting s WHERE s.setdatabase = d.oid), \
         'comment', shobj_description(d.oid, 'pg_database'))::text \
         FROM pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace WHERE d.datname = {}",
        live.literal()
    )
}

/// One line `cluster:{json}`: the data directory (null when this role may not read it: it needs
/// superuser or pg_read_all_settings) and `max_wal_size` in bytes.
fn cluster_sql() -> String {
    format!(
        "SELECT '{CLUSTER_MARK}' || json_build_object('data_directory', CASE WHEN \
         pg_has_role('pg_read_all_settings', 'USAGE') THEN current_setting('data_directory') END, \
         'max_wal_size', pg_size_bytes(current_setting('max_wal_size')))::text"
    )
}

/// One item of a database's ACL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct AclItem {
    pub grantor: String,
    /// `None`: PUBLIC.
    pub grantee: Option<String>,
    /// `CONNECT`, `CREATE`, `TEMPORARY`.
    pub privilege: String,
    pub grantable: bool,
}

/// Settings of the database (`role` None) or of a role in it (`ALTER ROLE r IN DATABASE d SET`):
/// `name=value` as `pg_db_role_setting` stores them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RoleSettings {
    pub role: Option<String>,
    pub config: Vec<String>,
}

/// What the live database has that the scratch one must get (see the section's comment).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LiveProps {
    pub encoding: String,
    pub collate: String,
    pub ctype: String,
    /// `datlocprovider` (15+: `c` libc, `i` icu, 17+: `b` builtin); `None` before 15.
    pub locale_provider: Option<String>,
    /// `daticulocale` (15, 16) / `datlocale` (17+).
    pub locale: Option<String>,
    /// `daticurules` (16+).
    pub icu_rules: Option<String>,
    pub tablespace: String,
    /// The tablespace's directory; empty for one inside the data directory (pg_default).
    pub location: String,
    /// `None`: the default ACL (`datacl` null).
    pub acl: Option<Vec<AclItem>>,
    pub settings: Vec<RoleSettings>,
    pub comment: Option<String>,
}

/// The cluster's facts the space check needs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ClusterFacts {
    /// `None`: this role may not read it.
    pub data_directory: Option<String>,
    pub max_wal_size: u64,
}

fn json_line<'a>(text: &'a str, mark: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.trim().strip_prefix(mark))
}

/// The live database's properties in [`plan_facts_sql`]'s answer (`None`: there is no live
/// database).
pub fn parse_live_props(text: &str) -> Result<Option<LiveProps>> {
    let Some(line) = json_line(text, PROPS_MARK) else {
        return Ok(None);
    };
    let bad = |e: String| {
        Error::failed(format!(
            "unexpected answer about the live database's properties: {e}"
        ))
    };
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
    let db = &v["db"];
    let s = |v: &serde_json::Value| v.as_str().map(str::to_string);
    let need = |v: &serde_json::Value, what: &str| s(v).ok_or_else(|| bad(format!("no {what}")));
    let acl = if v["has_acl"].as_bool() == Some(true) {
        Some(if v["acl"].is_null() {
            Vec::new()
        } else {
            serde_json::from_value(v["acl"].clone()).map_err(|e| bad(e.to_string()))?
        })
    } else {
        None
    };
    let settings = if v["settings"].is_null() {
        Vec::new()
    } else {
        serde_json::from_value(v["settings"].clone()).map_err(|e| bad(e.to_string()))?
    };
    Ok(Some(LiveProps {
        encoding: need(&v["encoding"], "encoding")?,
        collate: need(&db["datcollate"], "datcollate")?,
        ctype: need(&db["datctype"], "datctype")?,
        locale_provider: s(&db["datlocprovider"]),
        locale: s(&db["datlocale"]).or_else(|| s(&db["daticulocale"])),
        icu_rules: s(&db["daticurules"]),
        tablespace: need(&v["tablespace"], "tablespace")?,
        location: s(&v["location"]).unwrap_or_default(),
        acl,
        settings,
        comment: s(&v["comment"]),
    }))
}

/// The cluster's facts in [`plan_facts_sql`]'s answer (defaults when missing).
pub fn parse_cluster(text: &str) -> ClusterFacts {
    let Some(v) = json_line(text, CLUSTER_MARK)
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
    else {
        return ClusterFacts::default();
    };
    ClusterFacts {
        data_directory: v["data_directory"]
            .as_str()
            .filter(|d| !d.is_empty())
            .map(str::to_string),
        max_wal_size: v["max_wal_size"].as_u64().unwrap_or(0),
    }
}

/// `s` as an SQL string literal, right whatever `standard_conforming_strings` says: quotes
/// doubled, and with a backslash in it the `E'...'` form with backslashes doubled (as pg_dump's
/// `appendStringLiteral` writes when it cannot rely on the setting).
pub fn quote_literal(s: &str) -> String {
    if s.contains('\\') {
        format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

/// The scratch database made like the live one: its encoding, locale (provider and ICU/builtin
/// locale on 15+) and tablespace; with no live database, the cluster's defaults (template0's).
pub fn create_scratch_like_sql(scratch: &DbName, owner: &str, like: Option<&LiveProps>) -> String {
    let mut s = create_scratch_sql(scratch, owner);
    let Some(p) = like else {
        return s;
    };
    s.push_str(&format!(
        " ENCODING {} LC_COLLATE {} LC_CTYPE {}",
        quote_literal(&p.encoding),
        quote_literal(&p.collate),
        quote_literal(&p.ctype)
    ));
    match p.locale_provider.as_deref() {
        Some("i") => {
            s.push_str(" LOCALE_PROVIDER icu");
            if let Some(l) = &p.locale {
                s.push_str(&format!(" ICU_LOCALE {}", quote_literal(l)));
            }
            if let Some(r) = &p.icu_rules {
                s.push_str(&format!(" ICU_RULES {}", quote_literal(r)));
            }
        }
        Some("b") => {
            s.push_str(" LOCALE_PROVIDER builtin");
            if let Some(l) = &p.locale {
                s.push_str(&format!(" BUILTIN_LOCALE {}", quote_literal(l)));
            }
        }
        Some(_) => s.push_str(" LOCALE_PROVIDER libc"),
        None => {}
    }
    s.push_str(&format!(" TABLESPACE {}", quote_ident(&p.tablespace)));
    s
}

/// Settings whose value is a list of quoted words (pg_dump's `variable_is_guc_list_quote`): the
/// stored value is split and each word given as a literal, else it would become one word.
const LIST_QUOTE: [&str; 6] = [
    "local_preload_libraries",
    "search_path",
    "session_preload_libraries",
    "shared_preload_libraries",
    "temp_tablespaces",
    "unix_socket_directories",
];

/// PostgreSQL's `SplitGUCList`: words separated by commas, a word double-quoted (`""` inside it
/// one `"`) or bare (up to a comma or white space, case kept); `None` when malformed.
pub fn split_guc_list(s: &str) -> Option<Vec<String>> {
    let b: Vec<char> = s.chars().collect();
    let mut i = 0;
    let ws = |c: char| c.is_ascii_whitespace();
    let mut out = Vec::new();
    while i < b.len() && ws(b[i]) {
        i += 1;
    }
    if i == b.len() {
        return Some(out);
    }
    loop {
        let mut w = String::new();
        if b[i] == '"' {
            i += 1;
            loop {
                match b.get(i) {
                    None => return None,
                    Some('"') if b.get(i + 1) == Some(&'"') => {
                        w.push('"');
                        i += 2;
                    }
                    Some('"') => {
                        i += 1;
                        break;
                    }
                    Some(c) => {
                        w.push(*c);
                        i += 1;
                    }
                }
            }
        } else {
            while i < b.len() && b[i] != ',' && !ws(b[i]) {
                w.push(b[i]);
                i += 1;
            }
            if w.is_empty() {
                return None;
            }
        }
        out.push(w);
        while i < b.len() && ws(b[i]) {
            i += 1;
        }
        match b.get(i) {
            None => return Some(out),
            Some(',') => {
                i += 1;
                while i < b.len() && ws(b[i]) {
                    i += 1;
                }
                if i == b.len() {
                    return None;
                }
            }
            Some(_) => return None,
        }
    }
}

/// `SET "name" TO value` of one stored `name=value` (as pg_dump's `makeAlterConfigCommand`).
fn set_clause(entry: &str) -> String {
    let (name, value) = entry.split_once('=').unwrap_or((entry, ""));
    let list = LIST_QUOTE.iter().any(|l| l.eq_ignore_ascii_case(name));
    let value = match split_guc_list(value).filter(|_| list) {
        Some(words) if !words.is_empty() => words
            .iter()
            .map(|w| quote_literal(w))
            .collect::<Vec<_>>()
            .join(", "),
        _ => quote_literal(value),
    };
    format!("SET {} TO {value}", quote_ident(name))
}

/// What is applied to the scratch database before the swap, after the property check (which must
/// see only what the dump set) and the hand-over (the owner is the live one's by then): the live
/// database's ACL (PUBLIC's and the owner's default rights revoked first, then each item granted;
/// one granted by another role than the owner as that role), its settings and its roles' settings
/// in it, its comment, and the connection limit the swap opens it with (`limit`, see
/// [`LiveFacts::reopen_limit`]). Run as the database user after [`SAFE_SEARCH_PATH`].
pub fn carry_props_sql(scratch: &DbName, owner: &str, p: &LiveProps, limit: i64) -> Vec<String> {
    let d = scratch.ident();
    let mut v = Vec::new();
    if let Some(acl) = &p.acl {
        v.push(format!("REVOKE ALL ON DATABASE {d} FROM PUBLIC"));
        v.push(format!(
            "REVOKE ALL ON DATABASE {d} FROM {}",
            quote_ident(owner)
        ));
        // The owner's grants first: a grant by another role needs the grant option it was given.
        let mut items: Vec<&AclItem> = acl.iter().collect();
        items.sort_by_key(|a| a.grantor != owner);
        for a in items {
            let grant = format!(
                "GRANT {} ON DATABASE {d} TO {}{}",
                a.privilege,
                a.grantee.as_deref().map_or("PUBLIC".into(), quote_ident),
                if a.grantable {
                    " WITH GRANT OPTION"
                } else {
                    ""
                }
            );
            if a.grantor == owner {
                v.push(grant);
            } else {
                v.push(format!("SET ROLE {}", quote_ident(&a.grantor)));
                v.push(grant);
                v.push("RESET ROLE".into());
            }
        }
    }
    for s in &p.settings {
        for e in &s.config {
            v.push(match &s.role {
                None => format!("ALTER DATABASE {d} {}", set_clause(e)),
                Some(r) => format!(
                    "ALTER ROLE {} IN DATABASE {d} {}",
                    quote_ident(r),
                    set_clause(e)
                ),
            });
        }
    }
    if let Some(c) = &p.comment {
        v.push(format!("COMMENT ON DATABASE {d} IS {}", quote_literal(c)));
    }
    if limit != -1 {
        v.push(format!("ALTER DATABASE {d} CONNECTION LIMIT {limit}"));
    }
    v
}

/// The carry's summary for the step's message.
pub fn carry_summary(p: &LiveProps, limit: i64) -> String {
    let db = p
        .settings
        .iter()
        .filter(|s| s.role.is_none())
        .map(|s| s.config.len())
        .sum::<usize>();
    let roles = p
        .settings
        .iter()
        .filter(|s| s.role.is_some())
        .map(|s| s.config.len())
        .sum::<usize>();
    format!(
        "{}; {db} database setting(s), {roles} role setting(s) in it; {}; connection limit {limit}",
        match &p.acl {
            None => "default ACL".to_string(),
            Some(a) => format!("ACL of {} item(s)", a.len()),
        },
        if p.comment.is_some() {
            "its comment"
        } else {
            "no comment"
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Free space: the scratch database is made beside the live one, on the same filesystems. A full
// disk there fills the WAL too (PostgreSQL PANICs, every session of the cluster is dropped), which
// would break "a failure before the swap leaves the live database untouched".

/// Headroom beyond the estimate: a tenth of it, at least this (what the rest of the cluster keeps
/// writing meanwhile, temp files, the estimate's error).
pub const SPACE_RESERVE_MIN: u64 = 256 << 20;

/// The paths [`space_verdict`] needs measured: where the scratch database goes (its tablespace's
/// directory, else the data directory) and the WAL directory (`pg_wal`, which may be a link to
/// another filesystem). `None` when the data directory is unknown.
pub fn space_paths(cluster: &ClusterFacts, like: Option<&LiveProps>) -> Option<[String; 2]> {
    let data = cluster.data_directory.as_deref()?;
    let db = like
        .map(|p| p.location.as_str())
        .filter(|l| !l.is_empty())
        .unwrap_or(data);
    Some([
        db.to_string(),
        format!("{}/pg_wal", data.trim_end_matches('/')),
    ])
}

/// One filesystem as `df -Pk` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Fs {
    /// Device and mount point: equal for two paths on one filesystem.
    pub id: String,
    pub avail_bytes: u64,
}

/// The last line of `df -Pk PATH` (`Filesystem 1024-blocks Used Available Capacity Mounted-on`).
pub fn parse_df_line(l: &str) -> Option<Fs> {
    let w: Vec<&str> = l.split_whitespace().collect();
    if w.len() < 6 || !w[4].ends_with('%') {
        return None;
    }
    // Signed: GNU df reports a negative figure when the usage is beyond the root reserve (a
    // filesystem over-full for others): nothing is free, which is short, not unmeasured.
    let kb: i64 = w[3].parse().ok()?;
    Some(Fs {
        id: format!("{} {}", w[0], w[5..].join(" ")),
        avail_bytes: u64::try_from(kb).unwrap_or(0).saturating_mul(1024),
    })
}

/// The verdict of [`space_verdict`] on what was measured at [`space_paths`] (the filesystems and
/// the paths; `Err`: why nothing could be), and a warning naming the WAL directory when df could
/// not measure it (no right to stat inside a 0700 data directory): its share is then counted on
/// the database's filesystem, which is right only when `pg_wal` is not a link to another one.
pub fn space_of(
    live_size: Option<u64>,
    object_size: u64,
    max_wal_size: u64,
    measured: &std::result::Result<([Option<Fs>; 2], [String; 2]), String>,
) -> (Space, Option<String>) {
    let (fs, paths) = match measured {
        Ok(m) => m,
        Err(why) => return (Space::Unknown(why.clone()), None),
    };
    let verdict = space_verdict(
        live_size,
        object_size,
        max_wal_size,
        [fs[0].as_ref(), fs[1].as_ref()],
    );
    let note = match fs {
        [Some(db), None] => Some(format!(
            "df could not measure the WAL directory {} (not readable by the user running df?): \
             the replay's WAL was counted on the filesystem of {} ({}); if {} is a link to another \
             filesystem, check its free space by hand",
            paths[1], paths[0], db.id, paths[1]
        )),
        _ => None,
    };
    (verdict, note)
}

/// The verdict of the space check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Space {
    /// Enough: what was compared.
    Enough(String),
    /// Not enough: what is short.
    Short(String),
    /// Not measured: why (the restore goes on with a warning).
    Unknown(String),
}

/// How the plan (and `backup drill`) shows the verdict: what was compared, `NOT ENOUGH: ...`, or
/// `not measured: ...`.
impl std::fmt::Display for Space {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Space::Enough(m) => f.write_str(m),
            Space::Short(m) => write!(f, "NOT ENOUGH: {m}"),
            Space::Unknown(m) => write!(f, "not measured: {m}"),
        }
    }
}

/// Bytes with a binary unit, for people.
pub fn human_bytes(b: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

/// Compare the free space with what the restore writes beside the live database: the scratch
/// database (estimated as the live database's size; with no live database the backup object's
/// compressed size, a lower bound), the WAL its replay writes (as much again, at most
/// `max_wal_size`: checkpoints recycle it beyond), and a reserve of a tenth of that, at least
/// [`SPACE_RESERVE_MIN`]. `fs`: the filesystems of [`space_paths`] (database, WAL), `None` where
/// unmeasured.
pub fn space_verdict(
    live_size: Option<u64>,
    object_size: u64,
    max_wal_size: u64,
    fs: [Option<&Fs>; 2],
) -> Space {
    let (data, basis) = match live_size {
        Some(s) => (s, "the live database's size"),
        None => (
            object_size,
            "no live database: the backup's compressed size, a lower bound",
        ),
    };
    let wal = if max_wal_size > 0 {
        data.min(max_wal_size)
    } else {
        data
    };
    let reserve = |n: u64| (n / 10).max(SPACE_RESERVE_MIN);
    let [Some(db_fs), wal_fs] = fs else {
        return Space::Unknown("the data directory's filesystem could not be measured".into());
    };
    // (filesystem, needed, what it holds)
    let mut checks = Vec::new();
    match wal_fs {
        Some(w) if w.id != db_fs.id => {
            checks.push((db_fs, data + reserve(data), "the scratch database"));
            checks.push((w, wal + reserve(wal), "the replay's WAL"));
        }
        _ => checks.push((
            db_fs,
            data + wal + reserve(data + wal),
            "the scratch database and the replay's WAL",
        )),
    }
    let text = |(f, need, what): &(&Fs, u64, &str)| {
        format!(
            "{} free on {}, {} needed for {what} ({}: {}; WAL at most max_wal_size; reserve a tenth, at least {})",
            human_bytes(f.avail_bytes),
            f.id,
            human_bytes(*need),
            basis,
            human_bytes(data),
            human_bytes(SPACE_RESERVE_MIN)
        )
    };
    let short: Vec<String> = checks
        .iter()
        .filter(|c| c.0.avail_bytes < c.1)
        .map(text)
        .collect();
    if short.is_empty() {
        Space::Enough(checks.iter().map(text).collect::<Vec<_>>().join("; "))
    } else {
        Space::Short(short.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replay_check_gates_only_with_a_manifest_and_quotes_what_it_carries() {
        let plain = check_sql(None);
        assert!(plain.starts_with(
            "RESET ALL; RESET ROLE; SET client_encoding = 'UTF8'; SET search_path = pg_catalog, pg_temp;"
        ));
        assert!(!plain.contains('\n'), "{plain}");
        assert!(!plain.contains("DO $xtask$"), "{plain}");
        // The migration tables by their schema.
        for (gone, there) in [
            (
                "to_regclass('schema_migrations')",
                "to_regclass('public.schema_migrations')",
            ),
            (
                "to_regclass('migrations')",
                "to_regclass('public.migrations')",
            ),
            ("FROM schema_migrations ", "FROM public.schema_migrations "),
            ("FROM migrations ", "FROM public.migrations "),
        ] {
            assert!(
                !plain.contains(gone) && plain.contains(there),
                "{gone}: {plain}"
            );
        }
        let tables = BTreeMap::from([("public.\"it's\"".to_string(), 3u64)]);
        let gated = check_sql(Some((&tables, Some("0002_o'k"))));
        assert!(gated.contains(GATE_TAG), "{gated}");
        assert!(!gated.contains('\n'), "{gated}");
        // The manifest's JSON as one SQL literal: every quote doubled, nothing else changed.
        let at = gated.find("SET xtask.want = '").unwrap() + "SET xtask.want = '".len();
        let end = gated.find("'; DO $xtask$").unwrap();
        let lit = &gated[at..end];
        assert!(!lit.replace("''", "").contains('\''), "{lit}");
        let v: serde_json::Value = serde_json::from_str(&lit.replace("''", "'")).unwrap();
        assert_eq!(v["tables"]["public.\"it's\""], 3);
        assert_eq!(v["migration"], "0002_o'k");
        assert_eq!(
            parse_check("{\"tables\": {\"public.a\": 2}, \"migration\": null}\n").unwrap(),
            (BTreeMap::from([("public.a".to_string(), 2)]), None)
        );
        assert!(parse_check("")
            .unwrap_err()
            .to_string()
            .contains("printed nothing"));
        assert!(parse_check("3 rows").is_err());
    }

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

    /// `restore --dry-run` prints `state`, `wait(true)`, `rename` and `open()` (one psql each) and
    /// the swap sends exactly these (the wait's later rounds: `wait(false)`), from one value.
    #[test]
    fn the_swap_plan_holds_the_statements_the_dry_run_prints_and_the_swap_runs() {
        let n = Names::new("station", Stamp::parse("20261201_090000").unwrap()).unwrap();
        let sw = swap_plan(&n, true, 7);
        let both = [&n.live, &n.scratch];
        assert_eq!(sw.state, swap_state_sql(&n));
        assert_eq!(sw.blocked, [n.live.clone(), n.scratch.clone()]);
        assert_eq!(
            sw.wait(true),
            [
                block_sql(&n.live),
                block_sql(&n.scratch),
                terminate_each_sql(&both),
                sessions_each_sql(&both),
            ]
        );
        // Later rounds end the sessions and list them again, without blocking again.
        assert_eq!(sw.wait(false), sw.wait(true)[2..]);
        assert_eq!(sw.rename, swap_sql(&n));
        assert_eq!(sw.opened, [n.live.clone(), n.kept.clone()]);
        assert_eq!(
            sw.open(),
            [unblock_sql(&n.live, 7), unblock_sql(&n.kept, 7)]
        );
        // No live database: only the scratch one is blocked, renamed and opened (as the live one).
        let sw = swap_plan(&n, false, -1);
        assert_eq!(
            sw.wait(true),
            [
                block_sql(&n.scratch),
                terminate_each_sql(&[&n.scratch]),
                sessions_each_sql(&[&n.scratch]),
            ]
        );
        assert_eq!(sw.rename, rename_sql(&n));
        assert_eq!(
            (sw.opened, sw.open),
            (vec![n.live.clone()], vec![unblock_sql(&n.live, -1)])
        );
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

    fn props_line(db: &str, rest: &str) -> String {
        format!(
            "station|station|true|50|9\n{PROPS_MARK}{{\"db\": {db}, \"encoding\": \"LATIN1\", \
             \"tablespace\": \"fast\", \"location\": \"/srv/fast\", {rest}}}\n\
             {CLUSTER_MARK}{{\"data_directory\": \"/var/lib/postgresql/data\", \"max_wal_size\": 1073741824}}\n"
        )
    }

    #[test]
    fn the_live_databases_properties_are_read_whatever_the_version() {
        // 15: datlocprovider and daticulocale; an ACL with a grant by another role; settings.
        let pg15 = props_line(
            r#"{"datname": "station", "datcollate": "C", "datctype": "C", "datlocprovider": "i", "daticulocale": "und-x-icu"}"#,
            r#""has_acl": true, "acl": [{"grantor": "station", "grantee": null, "privilege": "CONNECT", "grantable": false}, {"grantor": "admin", "grantee": "readonly", "privilege": "CONNECT", "grantable": false}, {"grantor": "station", "grantee": "admin", "privilege": "CONNECT", "grantable": true}], "settings": [{"role": null, "config": ["statement_timeout=5s", "search_path=\"$user\", public, \"We ird\""]}, {"role": "readonly", "config": ["work_mem=8MB"]}], "comment": "it's \\ here""#,
        );
        let p = parse_live_props(&pg15).unwrap().unwrap();
        assert_eq!(
            (p.encoding.as_str(), p.collate.as_str(), p.ctype.as_str()),
            ("LATIN1", "C", "C")
        );
        assert_eq!(p.locale_provider.as_deref(), Some("i"));
        assert_eq!(p.locale.as_deref(), Some("und-x-icu"));
        assert_eq!(p.icu_rules, None);
        assert_eq!(p.acl.as_ref().unwrap().len(), 3);
        assert_eq!(p.settings[1].role.as_deref(), Some("readonly"));
        assert_eq!(p.comment.as_deref(), Some("it's \\ here"));
        // The facts line of the same answer still parses; the cluster's too.
        let live = DbName::parse("station").unwrap();
        assert_eq!(facts_of(&pg15, &live).unwrap().unwrap().conn_limit, 50);
        let c = parse_cluster(&pg15);
        assert_eq!(
            c.data_directory.as_deref(),
            Some("/var/lib/postgresql/data")
        );
        assert_eq!(c.max_wal_size, 1 << 30);
        assert_eq!(
            space_paths(&c, Some(&p)).unwrap(),
            ["/srv/fast", "/var/lib/postgresql/data/pg_wal"]
        );

        let s = DbName::parse("s").unwrap();
        assert_eq!(
            create_scratch_like_sql(&s, "o", Some(&p)),
            "CREATE DATABASE \"s\" TEMPLATE template0 OWNER \"o\" ENCODING 'LATIN1' LC_COLLATE 'C' \
             LC_CTYPE 'C' LOCALE_PROVIDER icu ICU_LOCALE 'und-x-icu' TABLESPACE \"fast\""
        );
        // 17: datlocale, the builtin provider; a default ACL, no settings, no comment.
        let pg17 = props_line(
            r#"{"datcollate": "C.UTF-8", "datctype": "C.UTF-8", "datlocprovider": "b", "datlocale": "C.UTF-8", "daticurules": null}"#,
            r#""has_acl": false, "acl": null, "settings": null, "comment": null"#,
        );
        let p17 = parse_live_props(&pg17).unwrap().unwrap();
        assert!(p17.acl.is_none() && p17.settings.is_empty() && p17.comment.is_none());
        assert!(create_scratch_like_sql(&s, "o", Some(&p17))
            .ends_with("LOCALE_PROVIDER builtin BUILTIN_LOCALE 'C.UTF-8' TABLESPACE \"fast\""));
        // Nothing to carry but a connection limit other than -1.
        assert!(carry_props_sql(&s, "o", &p17, -1).is_empty());
        assert_eq!(
            carry_props_sql(&s, "o", &p17, 7),
            ["ALTER DATABASE \"s\" CONNECTION LIMIT 7"]
        );
        // 14: no provider column (LOCALE_PROVIDER is not said).
        let pg14 = props_line(
            r#"{"datcollate": "de_DE.UTF-8", "datctype": "de_DE.UTF-8"}"#,
            r#""has_acl": true, "acl": null, "settings": null, "comment": null"#,
        );
        let p14 = parse_live_props(&pg14).unwrap().unwrap();
        let c14 = create_scratch_like_sql(&s, "o", Some(&p14));
        assert!(
            !c14.contains("LOCALE_PROVIDER") && c14.contains("LC_CTYPE 'de_DE.UTF-8'"),
            "{c14}"
        );
        // An ACL present but empty (everything revoked): revoked, nothing granted.
        assert_eq!(
            carry_props_sql(&s, "o", &p14, -1),
            [
                "REVOKE ALL ON DATABASE \"s\" FROM PUBLIC",
                "REVOKE ALL ON DATABASE \"s\" FROM \"o\""
            ]
        );
        // 16: ICU rules.
        let pg16 = props_line(
            r#"{"datcollate": "C", "datctype": "C", "datlocprovider": "i", "daticulocale": "en", "daticurules": "&a < g"}"#,
            r#""has_acl": false"#,
        );
        let c16 = create_scratch_like_sql(&s, "o", parse_live_props(&pg16).unwrap().as_ref());
        assert!(c16.contains("ICU_LOCALE 'en' ICU_RULES '&a < g'"), "{c16}");
        // No live database: the cluster's defaults, as before.
        assert_eq!(
            create_scratch_like_sql(&s, "o", None),
            create_scratch_sql(&s, "o")
        );
        assert_eq!(
            parse_live_props("station|station|true|-1|9\n").unwrap(),
            None
        );
        assert!(parse_live_props(&format!("{PROPS_MARK}{{not json")).is_err());
        // Without the right to read the data directory: nothing to measure.
        let c = parse_cluster(&format!(
            "{CLUSTER_MARK}{{\"data_directory\": null, \"max_wal_size\": 5}}"
        ));
        assert_eq!(space_paths(&c, Some(&p)), None);
        let d = ClusterFacts {
            data_directory: Some("/d/".into()),
            max_wal_size: 0,
        };
        let mut in_data_dir = p17.clone();
        in_data_dir.location = String::new();
        assert_eq!(
            space_paths(&d, Some(&in_data_dir)).unwrap(),
            ["/d/", "/d/pg_wal"]
        );
        assert_eq!(space_paths(&d, None).unwrap()[0], "/d/");
    }

    #[test]
    fn the_carry_quotes_as_pg_dump_does_and_grants_in_an_order_that_works() {
        let text = props_line(
            r#"{"datcollate": "C", "datctype": "C"}"#,
            r#""has_acl": true, "acl": [{"grantor": "admin", "grantee": "readonly", "privilege": "CONNECT", "grantable": false}, {"grantor": "station", "grantee": "admin", "privilege": "CONNECT", "grantable": true}], "settings": [{"role": null, "config": ["statement_timeout=5s", "search_path=\"$user\", public, \"We \"\"ird\"", "app.tenant=it's"]}, {"role": "Read Only", "config": ["work_mem=8MB"]}], "comment": "a \\ b 'c'""#,
        );
        let p = parse_live_props(&text).unwrap().unwrap();
        let s = DbName::parse("station_restore_20261201_090000").unwrap();
        let d = s.ident();
        assert_eq!(
            carry_props_sql(&s, "station", &p, 50),
            [
                format!("REVOKE ALL ON DATABASE {d} FROM PUBLIC"),
                format!("REVOKE ALL ON DATABASE {d} FROM \"station\""),
                // The owner's grant (with the grant option) before the one it makes possible.
                format!("GRANT CONNECT ON DATABASE {d} TO \"admin\" WITH GRANT OPTION"),
                "SET ROLE \"admin\"".to_string(),
                format!("GRANT CONNECT ON DATABASE {d} TO \"readonly\""),
                "RESET ROLE".to_string(),
                format!("ALTER DATABASE {d} SET \"statement_timeout\" TO '5s'"),
                format!("ALTER DATABASE {d} SET \"search_path\" TO '$user', 'public', 'We \"ird'"),
                format!("ALTER DATABASE {d} SET \"app.tenant\" TO 'it''s'"),
                format!("ALTER ROLE \"Read Only\" IN DATABASE {d} SET \"work_mem\" TO '8MB'"),
                format!("COMMENT ON DATABASE {d} IS E'a \\\\ b ''c'''"),
                format!("ALTER DATABASE {d} CONNECTION LIMIT 50"),
            ]
        );
        let sum = carry_summary(&p, 50);
        assert!(
            sum.contains("ACL of 2 item(s)")
                && sum.contains("3 database setting(s), 1 role setting(s)"),
            "{sum}"
        );
        assert_eq!(quote_literal("plain"), "'plain'");
        assert_eq!(quote_literal("o'k"), "'o''k'");
        assert_eq!(quote_literal("a\\'b"), "E'a\\\\''b'");
        // PostgreSQL's SplitGUCList.
        assert_eq!(split_guc_list("").unwrap(), Vec::<String>::new());
        assert_eq!(split_guc_list("\"\"").unwrap(), [""]);
        assert_eq!(split_guc_list("a, \"B c\" ,d").unwrap(), ["a", "B c", "d"]);
        assert_eq!(split_guc_list("\"x\"\"y\"").unwrap(), ["x\"y"]);
        for bad in ["a,", "\"open", "a b", ",a"] {
            assert_eq!(split_guc_list(bad), None, "{bad}");
        }
        // A list that does not split is one literal; an empty search_path stays empty; a list
        // setting that is not quoted word by word is one literal.
        assert_eq!(
            set_clause("search_path=\"open"),
            "SET \"search_path\" TO '\"open'"
        );
        assert_eq!(set_clause("search_path=\"\""), "SET \"search_path\" TO ''");
        assert_eq!(
            set_clause("DateStyle=ISO, MDY"),
            "SET \"DateStyle\" TO 'ISO, MDY'"
        );
    }

    #[test]
    fn the_space_check_counts_the_copy_its_wal_and_a_reserve() {
        let fs = |id: &str, avail: u64| Fs {
            id: id.into(),
            avail_bytes: avail,
        };
        let (mib, gib) = (1u64 << 20, 1u64 << 30);
        // One filesystem: 10 GiB live + 1 GiB WAL (max_wal_size) + a tenth = 12.1 GiB.
        let root = fs("/dev/vda /", 13 * gib);
        match space_verdict(Some(10 * gib), 1, gib, [Some(&root), Some(&root)]) {
            Space::Enough(m) => assert!(
                m.contains("13.0 GiB free on /dev/vda /") && m.contains("12.1 GiB needed"),
                "{m}"
            ),
            v => panic!("{v:?}"),
        }
        let small = fs("/dev/vda /", 12 * gib);
        match space_verdict(Some(10 * gib), 1, gib, [Some(&small), None]) {
            Space::Short(m) => {
                assert!(
                    m.contains("12.0 GiB free") && m.contains("12.1 GiB needed"),
                    "{m}"
                )
            }
            v => panic!("{v:?}"),
        }
        // A small database: its own size of WAL, the reserve's minimum.
        match space_verdict(Some(8 * mib), 1, gib, [Some(&fs("d /", 272 * mib)), None]) {
            Space::Enough(m) => assert!(m.contains("272.0 MiB needed"), "{m}"),
            v => panic!("{v:?}"),
        }
        assert!(matches!(
            space_verdict(Some(8 * mib), 1, gib, [Some(&fs("d /", 271 * mib)), None]),
            Space::Short(_)
        ));
        // The WAL on a filesystem of its own: each checked for its part, the short one named.
        let data = fs("/dev/sdb /data", 12 * gib);
        let wal = fs("/dev/sdc /wal", gib);
        match space_verdict(Some(10 * gib), 1, gib, [Some(&data), Some(&wal)]) {
            Space::Short(m) => assert!(
                m.contains("/dev/sdc /wal")
                    && m.contains("the replay's WAL")
                    && !m.contains("/dev/sdb"),
                "{m}"
            ),
            v => panic!("{v:?}"),
        }
        // No live database: the object's compressed size, said to be a lower bound.
        match space_verdict(None, 3 * gib, gib, [Some(&fs("d /", gib)), None]) {
            Space::Short(m) => assert!(m.contains("lower bound"), "{m}"),
            v => panic!("{v:?}"),
        }
        // Not measured.
        assert!(matches!(
            space_verdict(Some(1), 1, gib, [None, None]),
            Space::Unknown(_)
        ));
        // df -Pk lines (GNU, busybox), a mount point with a space; anything else is not one.
        assert_eq!(
            parse_df_line("/dev/vda         264212084 23548136  71737752      25% /"),
            Some(fs("/dev/vda /", 71_737_752 * 1024))
        );
        assert_eq!(
            parse_df_line("overlay 1000 10 990 1% /var/lib/my data")
                .unwrap()
                .id,
            "overlay /var/lib/my data"
        );
        assert_eq!(parse_df_line("?"), None);
        // GNU df's negative "Available" (usage beyond the reserve): nothing free, and short.
        let over = parse_df_line("/dev/vdb 1000000 1010000 -10000 101% /srv").unwrap();
        assert_eq!(over, fs("/dev/vdb /srv", 0));
        assert!(matches!(
            space_verdict(Some(1), 1, gib, [Some(&over), Some(&over)]),
            Space::Short(_)
        ));
        assert_eq!(
            parse_df_line("/dev/vdb 1000000 1000000 0 100% /srv"),
            Some(fs("/dev/vdb /srv", 0))
        );
        assert_eq!(
            parse_df_line("Filesystem 1024-blocks Used Available Capacity Mounted on"),
            None
        );
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
    }

    #[test]
    fn an_unmeasured_wal_directory_is_named_and_counted_on_the_databases_filesystem() {
        let gib = 1u64 << 30;
        let paths = ["/d".to_string(), "/d/pg_wal".to_string()];
        let data = Fs {
            id: "/dev/vda /".into(),
            avail_bytes: 100 * gib,
        };
        let (v, note) = space_of(
            Some(gib),
            1,
            gib,
            &Ok(([Some(data.clone()), None], paths.clone())),
        );
        assert!(matches!(v, Space::Enough(_)), "{v:?}");
        let note = note.expect("a warning naming pg_wal");
        assert!(
            note.contains("/d/pg_wal") && note.contains("/dev/vda /") && note.contains("by hand"),
            "{note}"
        );
        // Both measured: no warning; nothing measured: unknown, no warning of its own.
        let both = [Some(data.clone()), Some(data)];
        assert_eq!(
            space_of(Some(gib), 1, gib, &Ok((both, paths.clone()))).1,
            None
        );
        let (v, note) = space_of(Some(gib), 1, gib, &Err("df failed".into()));
        assert_eq!((v, note), (Space::Unknown("df failed".into()), None));
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
