//! What restore (and rollback) needs from the environment's [`Host`]: SQL on a database, fetching
//! and hashing an object on the host, replaying it, the app's writers, health. Every command is a
//! fixed script (`*.sh` beside this file) or argument vector with positional arguments; where it
//! runs (this machine, Compose here, Compose over SSH) is the host's business.

use std::time::Duration;

use super::plan;
use crate::environments::Environment;
use crate::error::{Error, Result};
use crate::host::{Host, Login, Script, RCLONE_FLAGS};
use crate::process::{describe, Cmd, Lifeline};
use crate::restore::plan::Fs;

/// `$1` object → a fresh temp dir on the host, then hashed; prints `DIR SHA256 SIZE`.
const FETCH: Script = Script::bash(include_str!("fetch.sh")).anywhere();
/// `$1` dump file (gzip) → the psql command given as `$2...`, in one transaction committed only
/// when the whole file decompressed, under `\restrict` (see the script). In the environment's
/// directory: the Compose words name the project's files relative to it on a server.
const REPLAY: Script = Script::bash(include_str!("replay.sh")).with_compose();
/// Remove `$1` (only an `xtask-restore.*` temp dir).
const CLEANUP: Script = Script::sh(include_str!("cleanup.sh")).anywhere();
/// `df -Pk` of each path `$@` where PostgreSQL runs (see the script).
const FREE_SPACE: Script = Script::sh(include_str!("free-space.sh")).anywhere();

/// `STATION_TAG` for `compose stop|start`: the compose files require a value to interpolate, but
/// stop and start act on the existing containers and never change their image.
const STOP_START_TAG: &str = "unchanged-by-stop-start";

/// The downloaded object on the host.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub dir: String,
    pub sha256: String,
    pub size: u64,
}

/// How long a streamed object goes on into its hash once psql stopped on the dump's own fault (an
/// SQL error, its input cut): long enough to tell a corrupt object ("differs") from a dump that
/// fails for most backups, short enough that a failure (and a SIGTERM: an interrupt stops the
/// replay at once) is not held up by the rest of a large download. Past it the object's sha256 is
/// not known, and the failure says so.
pub const HASH_GRACE: Duration = Duration::from_secs(5);

/// The sha256 of no bytes at all.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// What a replay that ran to its end answered.
#[derive(Clone, Debug)]
pub struct Replayed {
    /// The object's sha256, taken as it streamed (`None` for a file).
    pub sha256: Option<String>,
    /// What the check printed ([`plan::parse_check`]).
    pub check: String,
    /// The check's gate refused the commit: the counts are not the manifest's (nothing was
    /// committed).
    pub gated: bool,
}

/// What [`Target::replay`] replays.
#[derive(Clone, Debug)]
pub enum Source<'a> {
    /// A file [`Target::fetch`] downloaded (and whose hash was checked).
    File(&'a str),
    /// Streamed from the bucket, committed only when its sha256 is this (the manifest's; the
    /// caller compares the listed size with the manifest's).
    Object { path: &'a str, sha256: &'a str },
}

#[derive(Clone, Debug)]
pub struct Target {
    pub env: Environment,
    pub host: Host,
}

impl Target {
    pub fn of(env: &Environment) -> Result<Target> {
        Ok(Target {
            env: env.clone(),
            host: Host::of(env)?,
        })
    }

    /// The command [`Target::sql`] runs. In a process group of its own: the terminal's Ctrl-C
    /// reaches xtask alone, whose handler decides (a swap once begun is finished; the replay is
    /// ended through its session).
    pub fn sql_cmd(&self, db: &str, sql: &str) -> Result<Cmd> {
        self.sql_each_cmd(db, &[sql])
    }

    /// The command [`Target::sql_each`] runs: one psql, one `-c` (one transaction) per statement.
    pub fn sql_each_cmd(&self, db: &str, sqls: &[&str]) -> Result<Cmd> {
        self.sql_each_cmd_as(db, Login::Owner, sqls)
    }

    /// [`Target::sql_each_cmd`] logged in as `login`.
    pub fn sql_each_cmd_as(&self, db: &str, login: Login<'_>, sqls: &[&str]) -> Result<Cmd> {
        let mut args = vec!["-A", "-t"];
        for s in sqls {
            args.extend(["-c", s]);
        }
        Ok(self
            .host
            .psql_as(db, login, &args)?
            .timeout(Duration::from_secs(120))
            .own_process_group())
    }

    /// Each statement in its own transaction, in order, over one connection (one round trip
    /// instead of one per statement); the first error stops the rest (ON_ERROR_STOP). The outputs
    /// are concatenated. Errors as [`Target::sql`].
    pub fn sql_each(&self, db: &str, sqls: &[&str]) -> Result<String> {
        self.sql_each_as(db, Login::Owner, sqls)
    }

    /// [`Target::sql_each`] logged in as `login`.
    pub fn sql_each_as(&self, db: &str, login: Login<'_>, sqls: &[&str]) -> Result<String> {
        self.judge(db, self.sql_each_cmd_as(db, login, sqls)?.output()?)
    }

    /// A psql script (meta-commands too: `\gset`, `\if`) on `db` over one connection, on
    /// psql's stdin; ON_ERROR_STOP. Errors as [`Target::sql`].
    pub fn sql_script(&self, db: &str, script: &str) -> Result<String> {
        let cmd = self
            .host
            .psql(db, &["-A", "-t"])?
            .stdin_bytes(script.as_bytes().to_vec())
            .timeout(Duration::from_secs(120))
            .own_process_group();
        self.judge(db, cmd.output()?)
    }

    /// Run SQL on `db` (`postgres` for CREATE/ALTER/DROP DATABASE), unaligned tuples-only output.
    /// The database, its container or the server out of reach is exit 3; a Compose service the
    /// project does not have, exit 2; any other failure (an SQL error), exit 1.
    pub fn sql(&self, db: &str, sql: &str) -> Result<String> {
        self.sql_within(db, sql, Duration::from_secs(120))
    }

    /// [`Target::sql`] bounded by `timeout`.
    pub fn sql_within(&self, db: &str, sql: &str, timeout: Duration) -> Result<String> {
        self.judge(db, self.sql_cmd(db, sql)?.timeout(timeout).output()?)
    }

    fn judge(&self, db: &str, o: crate::process::Output) -> Result<String> {
        if o.status.success() {
            Ok(o.stdout_str())
        } else if self.host.unreachable(&o) {
            Err(Error::unavailable(format!(
                "psql on `{}` could not reach the database {}: {}",
                self.env.name,
                describe(o.status),
                o.stderr_str().trim()
            )))
        } else if self.host.misconfigured(&o) {
            Err(Error::usage(format!(
                "psql on `{}`: {} (the environment's services.postgres = {:?} is not a service of \
                 its Compose project)",
                self.env.name,
                o.stderr_str().trim(),
                self.env.services.postgres
            )))
        } else {
            Err(Error::failed(format!(
                "psql on database {db} of `{}` {}: {}",
                self.env.name,
                describe(o.status),
                o.stderr_str().trim()
            )))
        }
    }

    /// `checked`: the caller compares the sha256 with a manifest (rclone's own post-transfer hash
    /// check is skipped then; see the script).
    pub fn fetch_cmd(&self, object: &str, checked: bool) -> Result<Cmd> {
        let mut args = vec![
            object.to_string(),
            if checked { "manifest" } else { "rclone" }.to_string(),
        ];
        args.extend(RCLONE_FLAGS.iter().map(|s| s.to_string()));
        Ok(self.host.script(&FETCH, &args)?.env_remove("AWS_CA_BUNDLE"))
    }

    /// Download the object into a temp dir on the host and hash it there. Not there (rclone's 3
    /// "directory not found" / 4 "file not found", which `fetch.sh` turns into its 4): exit 2, the
    /// object named is not in the bucket; the remote out of reach (any other rclone failure, ssh's
    /// 255): exit 3; anything else (writing the temp file): exit 1.
    pub fn fetch(&self, object: &str, checked: bool) -> Result<Fetched> {
        let o = self.fetch_cmd(object, checked)?.output()?;
        if !o.status.success() {
            let msg = format!(
                "downloading {object} {}: {}",
                describe(o.status),
                tail(&o.stderr_str())
            );
            return Err(match o.status.code() {
                Some(4) => Error::usage(format!(
                    "{object} is not in the bucket (deleted since it was listed?): `cargo xtask \
                     backup status --env {}` shows the newest backups ({msg})",
                    self.env.name
                )),
                Some(5) => Error::failed(format!(
                    "no temp dir for the download: set TMPDIR to a writable directory with room \
                     for the backup ({msg})"
                )),
                Some(3 | 255) => Error::unavailable(msg),
                _ if self.host.unreachable(&o) => Error::unavailable(msg),
                _ => Error::failed(msg),
            });
        }
        let out = o.stdout_str();
        let line = out.trim_end_matches('\n');
        let mut w = line.splitn(3, ' ');
        match (w.next(), w.next().and_then(|s| s.parse().ok()), w.next()) {
            (Some(sum), Some(size), Some(dir)) if sum.len() == 64 && !dir.is_empty() => {
                Ok(Fetched {
                    dir: dir.to_string(),
                    sha256: sum.to_string(),
                    size,
                })
            }
            _ => Err(Error::failed(format!(
                "downloading {object}: unexpected answer {out:?}"
            ))),
        }
    }

    /// The replay of `source` into `db`, its psql logged in as `login`. Its stdin must be a
    /// [`Lifeline`] whose first line is the check to run in its transaction before the COMMIT
    /// ([`plan::check_sql`](super::plan::check_sql); see [`Target::replay`]).
    pub fn replay_cmd(&self, source: &Source<'_>, db: &str, login: Login<'_>) -> Result<Cmd> {
        let mut args = match source {
            Source::File(file) => vec!["file".to_string(), file.to_string()],
            Source::Object { path, sha256 } => {
                let mut a = vec![
                    "object".to_string(),
                    path.to_string(),
                    sha256.to_string(),
                    HASH_GRACE.as_secs().to_string(),
                    RCLONE_FLAGS.len().to_string(),
                ];
                a.extend(RCLONE_FLAGS.iter().map(|s| s.to_string()));
                a
            }
        };
        // Unaligned, tuples only: what the check prints is one line.
        args.extend(self.host.psql_words_as(db, login, &["-A", "-t"]));
        let c = self.host.script_as(&REPLAY, &args, login)?;
        Ok(match source {
            Source::File(_) => c,
            Source::Object { .. } => c.env_remove("AWS_CA_BUNDLE"),
        })
    }

    /// Replay `source` into `db` on the host in one transaction, committed only when the whole
    /// file decompressed (and, streamed from the bucket, only when the object's sha256 equals the
    /// manifest's) and `check` did not fail. Returns the object's sha256 when it was streamed and
    /// what `check` printed, also when its gate ([`plan::GATE_TAG`](super::plan::GATE_TAG))
    /// refused the commit (`gated`). Any other error says what failed; in every failure nothing is
    /// restored (nothing is committed, but by a dump's own `COMMIT`, into the scratch database the
    /// caller drops).
    ///
    /// The script's stdin is a [`Lifeline`] carrying `check` first, on a line of its own (a
    /// manifest's tables can be more than an argument may hold):
    /// [`Lifeline::stop`] on it (the Ctrl-C handler, through `stop` below) stops
    /// every process of the replay at once, and so does xtask's death (`kill -9` included; over
    /// SSH, the session's), without a COMMIT; the script removes its temp dir either way.
    pub fn replay(
        &self,
        source: &Source<'_>,
        db: &str,
        login: Login<'_>,
        line: &Lifeline,
    ) -> Result<Replayed> {
        let o = self
            .replay_cmd(source, db, login)?
            .lifeline(line)
            .output()?;
        let err = o.stderr_str();
        if !o.status.success() {
            let e = format!(
                "replaying the dump into {db} {}: {}; nothing was restored (the scratch database is dropped)",
                describe(o.status),
                tail(&err)
            );
            if o.status.code() == Some(5) {
                return Err(Error::failed(format!(
                    "{e} (set TMPDIR to a writable directory)"
                )));
            }
            return Err(if o.status.code() == Some(3) || self.host.unreachable(&o) {
                Error::unavailable(e)
            } else {
                Error::failed(e)
            });
        }
        let all = o.stdout_str();
        let (out, checked) = all.split_once('\n').unwrap_or((all.as_str(), ""));
        let w: Vec<&str> = out.split_whitespace().collect();
        let object = match source {
            Source::Object { path, .. } => Some(*path),
            Source::File(_) => None,
        };
        // Streamed: the object's sha256 follows the verdict (but for `fetch` and `stopped`), or
        // `-` when the download was stopped before the object's end.
        let got = match (object, w.as_slice()) {
            (Some(_), [_, _, sum]) if sum.len() == 64 => Some(sum.to_string()),
            _ => None,
        };
        let unhashed = matches!((object, w.as_slice()), (Some(_), [_, _, "-"]));
        let unchecked = if unhashed {
            format!(
                "; the object's sha256 was not checked to its end (its download was stopped {}s \
                 after psql stopped), so a corrupt object may be the cause as well as the dump: \
                 `cargo xtask backup drill --env {} <object>` downloads it whole and checks it",
                HASH_GRACE.as_secs(),
                self.env.name
            )
        } else {
            String::new()
        };
        let replayed = |gated| Replayed {
            sha256: got.clone(),
            check: checked.to_string(),
            gated,
        };
        match (w.as_slice(), object) {
            (["ok", ..], None) => Ok(replayed(false)),
            (["ok", ..], Some(_)) if got.is_some() => Ok(replayed(false)),
            // The check ran (its marker came) and its gate raised: the counts are not the
            // manifest's; the caller says how.
            (["psql", "3", ..], _)
                if !checked.trim().is_empty() && err.contains(plan::GATE_TAG) =>
            {
                Ok(replayed(true))
            }
            (["fetch", rc], Some(path)) => {
                let msg = format!(
                    "streaming {path} from the bucket failed (rclone exit {rc}): {}",
                    tail(&err)
                );
                Err(match *rc {
                    "3" | "4" => Error::usage(format!(
                        "{path} is not in the bucket (deleted since it was listed?): `cargo xtask \
                         backup status --env {}` shows the newest backups ({msg}); nothing was \
                         restored",
                        self.env.name
                    )),
                    _ => Error::unavailable(format!("{msg}; nothing was restored")),
                })
            }
            (["differs", ..], Some(path)) => match (&got, source) {
                // Nothing streamed (some bucket backends answer `cat` of a missing key with
                // nothing and exit 0): the object is gone, not corrupt.
                (Some(sum), _) if sum == EMPTY_SHA256 => Err(Error::usage(format!(
                    "{path} streamed no bytes: it is not in the bucket (deleted since it was \
                     listed?): `cargo xtask backup status --env {}` shows the newest backups; \
                     nothing was restored",
                    self.env.name
                ))),
                (Some(sum), Source::Object { sha256, .. }) => Err(Error::failed(format!(
                    "{path} has sha256 {sum} but its manifest says {sha256}: the object is corrupt \
                     or was replaced; nothing was restored"
                ))),
                _ => Err(Error::failed(format!(
                    "{path}: its sha256 could not be taken while it streamed ({out:?}): {}; \
                     nothing was restored",
                    tail(&err)
                ))),
            },
            (["gunzip", rc, ..], _) => Err(Error::failed(format!(
                "the dump is corrupt: it is not a complete gzip stream (exit {rc}): {}{unchecked}; \
                 nothing was restored (the scratch database is dropped)",
                tail(&err)
            ))),
            (["stopped", ..], _) => Err(Error::failed(format!(
                "replaying the dump into {db} was stopped before its end (xtask asked it to, or \
                 a signal reached the script): {}; nothing was restored (the scratch database is \
                 dropped)",
                tail(&err)
            ))),
            // psql: 2 is a lost or refused connection (or a login the server refused: the replay
            // role over a socket its pg_hba does not trust), 3 an error in the dump (ON_ERROR_STOP).
            (["psql", "2", ..], _) if self.host.unreachable(&o) || login == Login::Owner => {
                Err(Error::unavailable(format!(
                    "replaying the dump into {db}: the connection to the database failed: {}; \
                     nothing was restored (the scratch database is dropped)",
                    tail(&err)
                )))
            }
            (["psql", "2", ..], _) => Err(Error::failed(format!(
                "replaying the dump into {db}: the replay role could not log in: {}; the server \
                 must trust its local socket for it (`local all all trust` in pg_hba.conf, as the \
                 postgres image has), or restore with --trust-dump to replay as {}; nothing was \
                 restored",
                tail(&err),
                self.env.db_user
            ))),
            (["psql", rc, ..], _) => Err(Error::failed(format!(
                "replaying the dump into {db} failed (psql exit {rc}): {}{unchecked}; nothing was \
                 restored (the scratch database is dropped)",
                tail(&err)
            ))),
            _ => Err(Error::failed(format!(
                "replaying the dump into {db}: unexpected answer {out:?}: {}",
                tail(&err)
            ))),
        }
    }

    /// The command [`Target::free_space`] runs.
    pub fn free_space_cmd(&self, paths: &[String]) -> Result<Cmd> {
        Ok(self
            .host
            .script_at_db(&FREE_SPACE, paths)?
            .timeout(Duration::from_secs(30)))
    }

    /// The filesystem of each of `paths` where PostgreSQL runs (`None`: df could not tell), or
    /// why none could be measured.
    pub fn free_space(&self, paths: &[String]) -> std::result::Result<Vec<Option<Fs>>, String> {
        let o = self
            .free_space_cmd(paths)
            .map_err(|e| e.to_string())?
            .output()
            .map_err(|e| e.to_string())?;
        if !o.status.success() {
            return Err(format!(
                "df {}: {}",
                describe(o.status),
                tail(&o.stderr_str())
            ));
        }
        let out = o.stdout_str();
        let v: Vec<Option<Fs>> = out
            .lines()
            .map(crate::restore::plan::parse_df_line)
            .collect();
        if v.len() != paths.len() {
            return Err(format!("unexpected answer of df: {out:?}"));
        }
        Ok(v)
    }

    pub fn cleanup(&self, dir: &str) -> Result<()> {
        let o = self
            .host
            .script(&CLEANUP, &[dir.to_string()])?
            .timeout(Duration::from_secs(60))
            .output()?;
        if o.status.success() {
            Ok(())
        } else {
            Err(Error::failed(format!(
                "removing {dir} {}",
                describe(o.status)
            )))
        }
    }

    /// The services that write to the database: the app's backend in Compose environments, none
    /// where there is no Compose project (`local` runs no app).
    pub fn writers(&self) -> Vec<String> {
        match self.host.compose_project() {
            Some(_) => vec![self.env.services.backend.clone()],
            None => Vec::new(),
        }
    }

    /// A Compose command (in its own process group, like [`Target::sql_cmd`]): the engine out of
    /// reach is exit 3, a service the project does not have exit 2, else [`crate::host::outcome`].
    fn compose_checked(&self, tag: Option<&str>, args: &[&str], what: &str) -> Result<()> {
        let o = self
            .host
            .compose(tag, args)?
            .timeout(Duration::from_secs(600))
            .own_process_group()
            .output()?;
        let what = format!("{what} on `{}`", self.env.name);
        if self.host.misconfigured(&o) {
            return Err(Error::usage(format!(
                "{what}: {} (check the environment's services table)",
                o.stderr_str().trim()
            )));
        }
        if self.host.unreachable(&o) {
            return Err(Error::unavailable(format!(
                "{what} {}: {}",
                describe(o.status),
                o.stderr_str().trim()
            )));
        }
        crate::host::outcome(&what, o).map(|_| ())
    }

    /// `compose stop <writers>` (nothing without a Compose project).
    pub fn stop_writers(&self) -> Result<()> {
        let w = self.writers();
        if w.is_empty() {
            return Ok(());
        }
        let mut a = vec!["stop"];
        a.extend(w.iter().map(String::as_str));
        self.compose_checked(Some(STOP_START_TAG), &a, "stopping the app")
    }

    /// The command that starts the writers, as text for a message (`None`: no writers here).
    pub fn start_writers_hint(&self) -> Option<String> {
        let w = self.writers();
        if w.is_empty() {
            return None;
        }
        let mut a = vec!["start"];
        a.extend(w.iter().map(String::as_str));
        self.host
            .compose(Some(STOP_START_TAG), &a)
            .ok()
            .map(|c| c.display())
    }

    /// `compose start <writers>` (nothing without a Compose project).
    pub fn start_writers(&self) -> Result<()> {
        let w = self.writers();
        if w.is_empty() {
            return Ok(());
        }
        let mut a = vec!["start"];
        a.extend(w.iter().map(String::as_str));
        self.compose_checked(Some(STOP_START_TAG), &a, "starting the app")
    }

    /// `compose pull` with `STATION_TAG=tag` where a deploy pulls its release (a server); `None`
    /// where the images are this machine's own (Compose here, as the deploy's rollout) or there
    /// are none (`local`).
    pub fn pull_cmd(&self, tag: &str) -> Result<Option<Cmd>> {
        if self.host.remote().is_none() || self.host.compose_project().is_none() {
            return Ok(None);
        }
        Ok(Some(
            self.host
                .compose(Some(tag), &["pull"])?
                .timeout(Duration::from_secs(900)),
        ))
    }

    /// `compose up -d` with `STATION_TAG=tag`: the release `tag` runs (rollback). `false` when
    /// there is no Compose project (nothing to roll out).
    pub fn up_with_tag(&self, tag: &str) -> Result<bool> {
        if self.host.compose_project().is_none() {
            return Ok(false);
        }
        self.compose_checked(Some(tag), &["up", "-d", "--remove-orphans"], "compose up")?;
        Ok(true)
    }

    /// Healthy: the database answers on its live name; in Compose environments the writers run;
    /// where the environment has a health URL, it answers.
    pub fn health(&self, db: &str, tries: u32) -> Result<String> {
        let mut notes = Vec::new();
        let mut last = String::new();
        let mut ok = false;
        for _ in 0..tries.max(1) {
            match self.sql(db, "SELECT 1") {
                Ok(s) if s.trim() == "1" => {
                    ok = true;
                    break;
                }
                Ok(s) => last = s,
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        if !ok {
            return Err(Error::failed(format!(
                "database {db} does not answer: {last}"
            )));
        }
        notes.push(format!("database {db} answers SELECT 1"));
        let writers = self.writers();
        if !writers.is_empty() {
            let mut running = Vec::new();
            for _ in 0..tries.max(1) {
                let out = self
                    .host
                    .compose(
                        Some(STOP_START_TAG),
                        &["ps", "--status", "running", "--services"],
                    )?
                    .timeout(Duration::from_secs(60))
                    .read()?;
                running = out.lines().map(|l| l.trim().to_string()).collect();
                if writers.iter().all(|w| running.contains(w)) {
                    break;
                }
                std::thread::sleep(Duration::from_secs(2));
            }
            let missing: Vec<&String> = writers.iter().filter(|w| !running.contains(w)).collect();
            if !missing.is_empty() {
                return Err(Error::failed(format!(
                    "the app does not run: {} not running (running: {})",
                    missing
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    running.join(", ")
                )));
            }
            notes.push(format!("{} running", writers.join(", ")));
        }
        if !self.env.health_url.is_empty() {
            let cmd = crate::deploy::remote::health_cmd(&self.host, &self.env.health_url, tries)?;
            let out = crate::host::outcome("health", cmd.output()?)?;
            notes.push(out.trim().to_string());
        }
        Ok(notes.join("; "))
    }
}

/// The last lines of a child's stderr for an error message: without rclone's "no config file"
/// notice, and without psql's `DETAIL:` and `CONTEXT:` lines ([`crate::host::without_row_data`]),
/// which quote the row being copied or the one that failed a constraint (production data does not
/// belong in messages and audit logs).
fn tail(err: &str) -> String {
    let err = crate::host::without_row_data(err);
    let t: Vec<&str> = err
        .lines()
        .filter(|l| {
            let l = l.trim();
            !l.is_empty() && !l.contains("NOTICE: Config file")
        })
        .rev()
        .take(5)
        .collect();
    t.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_of_a_psql_error_quotes_no_row_data() {
        let err = "psql:<stdin>:40: ERROR:  null value in column \"note\" of relation \"people\" violates not-null constraint\n\
                   DETAIL:  Failing row contains (1, 123-45-6789, null).\n\
                   CONTEXT:  COPY people, line 1: \"1\t123-45-6789\t\\N\"\n";
        let t = tail(err);
        assert!(!t.contains("123-45-6789"), "{t}");
        assert!(t.contains("violates not-null constraint"), "{t}");
        assert!(t.contains(crate::host::WITHHELD), "{t}");
        // A value holding a newline continues the DETAIL line: withheld too; the next message is
        // kept.
        let err = "ERROR:  duplicate key value violates unique constraint \"k\"\n\
                   DETAIL:  Key (ssn)=(123-45\n6789) already exists.\n\
                   HINT:  something useful\n";
        let t = tail(err);
        assert!(!t.contains("6789") && !t.contains("123-45"), "{t}");
        assert!(t.contains("HINT:  something useful"), "{t}");
        // A message quoting the value it could not read: the value goes, the names stay.
        let err =
            "psql:<stdin>:9: ERROR:  invalid input syntax for type integer: \"123-45-6789\"\n\
                   ERROR:  relation \"people\" does not exist\n\
                   ERROR:  malformed array literal: \"{1,\n2-secret\"\n\
                   HINT:  next\n";
        let t = tail(err);
        assert!(
            !t.contains("123-45") && !t.contains("2-secret") && !t.contains("{1,"),
            "{t}"
        );
        assert!(
            t.contains("invalid input syntax for type integer: \"(value withheld)\""),
            "{t}"
        );
        assert!(t.contains("relation \"people\" does not exist"), "{t}");
        assert!(t.contains("HINT:  next"), "{t}");
    }
}
