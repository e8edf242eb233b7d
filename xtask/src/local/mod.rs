//! `cargo xtask local up|down|status|env`: the `local` environment, for real.
//!
//! A PostgreSQL cluster (run as `postgres` when we are root), a daemonized redis-server started with
//! the persistence arguments of the compose file (read from it, not copied), and the directory behind
//! the rclone remote `b2`, all under the environment's `state_dir` (`target/local`). Ports and
//! generated passwords live in `state.json` (0600) only. `up` is idempotent and reuses the recorded
//! ports when they are free.

pub mod state;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::environments::{Environment, Environments, Transport};
use crate::error::{Error, ExitCode, Result};
use crate::process::{self, quote};
use crate::services::postgres::Cluster;
use crate::services::redis::{self, RedisConfig, RedisServer};
use crate::services::{self, free_port};
use state::{LocalPaths, LocalState};

#[derive(clap::Subcommand, Debug)]
pub enum Args {
    /// Start the local environment (idempotent): PostgreSQL, redis-server, the rclone remote's directory.
    Up(EnvArg),
    /// Stop PostgreSQL and redis-server (data is kept unless `--purge`).
    Down {
        #[command(flatten)]
        env: EnvArg,
        /// Also delete every file of the local environment (databases, Redis data, backup objects).
        #[arg(long)]
        purge: bool,
    },
    /// Say what runs, on which ports (exit 1 when something is down).
    Status(EnvArg),
    /// Print shell exports for the local environment (`eval "$(cargo xtask local env)"`).
    Env {
        #[command(flatten)]
        env: EnvArg,
        /// Also print PGPASSWORD and REDISCLI_AUTH.
        #[arg(long)]
        secrets: bool,
    },
}

#[derive(clap::Args, Debug)]
pub struct EnvArg {
    /// Environment (must have transport `local`).
    #[arg(long, default_value = "local")]
    pub env: String,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let envs = Environments::load()?;
    let name = match &args {
        Args::Up(e) | Args::Status(e) => &e.env,
        Args::Down { env, .. } | Args::Env { env, .. } => &env.env,
    };
    let env = local_env(&envs, name)?;
    match args {
        Args::Up(_) => {
            let l = up(env)?;
            println!("{}", l.describe());
            println!("shell exports: eval \"$(cargo xtask local env)\"");
            Ok(ExitCode::Ok)
        }
        Args::Down { purge, .. } => {
            down(env, purge)?;
            println!(
                "local environment `{}` stopped{}",
                env.name,
                if purge {
                    " and its files deleted"
                } else {
                    " (data kept; `--purge` deletes it)"
                }
            );
            Ok(ExitCode::Ok)
        }
        Args::Status(_) => status(env),
        Args::Env { secrets, .. } => {
            let l = Local::open(env)?;
            print!("{}", l.exports(secrets));
            Ok(ExitCode::Ok)
        }
    }
}

/// The named environment, which must be of transport `local`.
pub fn local_env<'a>(envs: &'a Environments, name: &str) -> Result<&'a Environment> {
    let env = envs.get(name)?;
    if env.transport != Transport::Local {
        return Err(Error::usage(format!(
            "environment `{name}` has transport {:?}, not local",
            env.transport
        )));
    }
    Ok(env)
}

/// The local environment's pieces, described from its state (running or not).
#[derive(Clone, Debug)]
pub struct Local {
    pub env: Environment,
    pub paths: LocalPaths,
    pub state: LocalState,
    /// Where the cluster actually lives (`paths.pg_base`, or a fallback the `postgres` user can reach).
    pub pg_base: PathBuf,
}

impl Local {
    /// Read the state of an environment that was brought up before (exit 3 when it never was).
    pub fn open(env: &Environment) -> Result<Local> {
        let paths = LocalPaths::of(env)?;
        let state = LocalState::load_from(&paths.state_file)?;
        let pg_base = recorded_pg_base(&paths).unwrap_or_else(|| paths.pg_base.clone());
        Ok(Local {
            env: env.clone(),
            paths,
            state,
            pg_base,
        })
    }

    pub fn cluster(&self) -> Result<Cluster> {
        Cluster::at(&self.pg_base, self.state.pg_port, &self.env.db_user)
    }

    /// `psql`/`pg_dump` against the environment's database, password in `PGPASSWORD` only.
    pub fn pg_client(&self, tool: &str) -> Result<process::Cmd> {
        Ok(self
            .cluster()?
            .client(tool, &self.env.database, &self.state.pg_password))
    }

    /// `redis-cli` against the local redis-server, password in `REDISCLI_AUTH` only.
    pub fn redis_cli(&self) -> process::Cmd {
        process::Cmd::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p"])
            .arg(self.state.redis_port.to_string())
            .secret_env("REDISCLI_AUTH", &self.state.redis_password)
    }

    pub fn redis_pidfile(&self) -> PathBuf {
        redis::pidfile_in(&self.paths.redis_dir)
    }

    pub fn redis_running(&self) -> bool {
        redis_running(&self.paths, self.state.redis_port)
    }

    /// Shell exports; passwords only with `secrets`.
    pub fn exports(&self, secrets: bool) -> String {
        let mut out = String::new();
        let mut export = |k: &str, v: &str| out.push_str(&format!("export {k}={}\n", quote(v)));
        export("PGHOST", "127.0.0.1");
        export("PGPORT", &self.state.pg_port.to_string());
        export("PGUSER", &self.env.db_user);
        export("PGDATABASE", &self.env.database);
        export("REDIS_URL", &self.state.redis_url());
        let rclone = LocalState::rclone_env(&self.env, &self.paths);
        for (k, v) in &rclone {
            export(k, v);
        }
        if secrets {
            export("PGPASSWORD", &self.state.pg_password);
            export("REDISCLI_AUTH", &self.state.redis_password);
        }
        if rclone.is_empty() {
            out.push_str(&format!(
                "# the rclone remote `{}` is configured by your own RCLONE_CONFIG_* variables\n",
                self.env.backup.remote
            ));
        }
        if !secrets {
            out.push_str(&format!(
                "# passwords are not printed: `cargo xtask local env --secrets` adds PGPASSWORD and REDISCLI_AUTH (they live in {}, mode 0600)\n",
                self.paths.state_file.display()
            ));
        }
        out
    }

    pub fn describe(&self) -> String {
        format!(
            "local environment `{}`:\n  PostgreSQL  127.0.0.1:{}  database {} (user {}), data in {}\n  Redis       127.0.0.1:{}  data in {}\n  backups     rclone remote `{}` -> {}",
            self.env.name,
            self.state.pg_port,
            self.env.database,
            self.env.db_user,
            self.pg_base.display(),
            self.state.redis_port,
            self.paths.redis_dir.display(),
            self.env.backup.remote,
            self.paths.objects.display()
        )
    }
}

/// Tools `local up` drives, each named with its package when missing (exit 3).
pub fn required_tools() -> Vec<&'static str> {
    let mut t = vec!["psql", "redis-server", "redis-cli", "rclone"];
    if services::is_root() {
        t.push("runuser");
    }
    t
}

/// Bring the environment up (idempotent) and return it.
pub fn up(env: &Environment) -> Result<Local> {
    for t in required_tools() {
        process::require(t)?;
    }
    let paths = LocalPaths::of(env)?;
    std::fs::create_dir_all(&paths.root).map_err(|e| Error::write(&paths.root, e))?;
    if !paths.marker.exists() {
        std::fs::write(&paths.marker, state::MARKER_TEXT)
            .map_err(|e| Error::write(&paths.marker, e))?;
    }
    let previous = paths
        .state_file
        .exists()
        .then(|| LocalState::load_from(&paths.state_file))
        .transpose()?;
    let pg_base = pg_base_for(&paths)?;

    // Ports: keep the recorded ones when our own server holds them or they are free.
    let pg_running = match &previous {
        Some(s) => Cluster::at(&pg_base, s.pg_port, &env.db_user)?.is_running(),
        None => false,
    };
    let redis_running = previous
        .as_ref()
        .is_some_and(|s| redis_running(&paths, s.redis_port));
    let pick = |old: Option<u16>, ours: bool| -> Result<u16> {
        match old {
            Some(p) if p != 0 && (ours || port_is_free(p)) => Ok(p),
            _ => free_port(),
        }
    };
    let pg_port = pick(previous.as_ref().map(|s| s.pg_port), pg_running)?;
    let mut redis_port = pick(previous.as_ref().map(|s| s.redis_port), redis_running)?;
    while redis_port == pg_port {
        redis_port = free_port()?;
    }
    let state = LocalState {
        pg_port,
        pg_password: previous
            .as_ref()
            .map(|s| s.pg_password.clone())
            .unwrap_or(crate::random::secret()?),
        redis_port,
        redis_password: previous
            .as_ref()
            .map(|s| s.redis_password.clone())
            .unwrap_or(crate::random::secret()?),
    };
    state.save(&paths.state_file)?;
    let local = Local {
        env: env.clone(),
        paths: paths.clone(),
        state,
        pg_base,
    };

    // PostgreSQL.
    let cluster = local.cluster()?;
    if !pg_running {
        if !cluster.is_initialized() {
            cluster.init(&local.state.pg_password)?;
        } else {
            set_pg_port(&cluster)?;
        }
        cluster.start()?;
    }
    let db = &env.database;
    let exists = cluster.psql(
        "postgres",
        &local.state.pg_password,
        &format!("SELECT 1 FROM pg_database WHERE datname = '{db}'"),
    )?;
    if exists.trim() != "1" {
        // `database` and `db_user` are validated identifiers (environments.rs).
        cluster.psql(
            "postgres",
            &local.state.pg_password,
            &format!("CREATE DATABASE {db} OWNER {}", env.db_user),
        )?;
    }

    // Redis, with the persistence arguments of the compose file.
    if !local.redis_running() {
        let args = crate::compose::redis_server_args(&env.compose_file, &env.services.redis)?;
        RedisServer::daemonize(
            &paths.redis_dir,
            local.state.redis_port,
            &RedisConfig {
                args,
                password: Some(local.state.redis_password.clone()),
                config_lines: vec![],
            },
        )?;
    }

    // The rclone remote's directory: `<objects>/<bucket>`.
    let bucket = paths.objects.join(&env.backup.bucket);
    std::fs::create_dir_all(&bucket).map_err(|e| Error::write(&bucket, e))?;
    Ok(local)
}

/// Stop both servers; with `purge`, delete what `local up` created (never anything else). Refused
/// while a live deploy holds the environment's lock (it would lose its database mid-step); holds the
/// lock itself while it works, so no deploy starts meanwhile.
pub fn down(env: &Environment, purge: bool) -> Result<()> {
    let paths = LocalPaths::of(env)?;
    if !paths.root.exists() {
        return Ok(());
    }
    if purge && !paths.marker.is_file() {
        return Err(Error::failed(format!(
            "{} was not set up by `cargo xtask local up` (no {} in it): nothing stopped or deleted. \
             Delete it yourself if it is yours, or run `cargo xtask local up` first to adopt it",
            paths.root.display(),
            state::MARKER
        )));
    }
    // A corrupt state file is an error (exit 2), not "nothing runs": servers may be up.
    let local = match paths.state_file.exists() {
        true => Some(Local::open(env)?),
        false => None,
    };
    let mut lock = hold_lock(&paths)?;
    if let Some(l) = &local {
        l.cluster()?.stop()?;
        RedisServer::stop_pidfile(&l.redis_pidfile(), Duration::from_secs(30))?;
        if purge && l.pg_base != paths.pg_base {
            remove_dir(l.pg_base.parent().unwrap_or(&l.pg_base))?;
        }
    }
    if purge {
        for p in paths.owned() {
            if p == paths.lock_file {
                lock.release()?;
            } else {
                remove_path(p)?;
            }
        }
        // The directory itself only if nothing else is left in it.
        match std::fs::remove_dir(&paths.root) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => eprintln!(
                "note: {} still holds files `local up` did not create; they were kept",
                paths.root.display()
            ),
        }
    }
    Ok(())
}

/// Take the environment's deploy lock for `local down`: exit 1 naming the holder when a live deploy
/// holds it; a stale one (dead process, past its TTL) is broken and said so.
fn hold_lock(paths: &LocalPaths) -> Result<crate::deploy::lock::LockGuard> {
    use crate::deploy::lock::{self, LockInfo, LockPlace};
    let place = LockPlace::File(paths.lock_file.clone());
    let busy = |holds: String| {
        Error::failed(format!(
            "{holds}. `local down` would stop PostgreSQL and Redis under it: wait for it to finish \
             (nothing was stopped or deleted)"
        ))
    };
    let place_text = paths.lock_file.display().to_string();
    if let Some(held) = lock::read_file_lock(&paths.lock_file) {
        if held.stale_reason(crate::time::now_unix()).is_none() {
            return Err(busy(if held.is_deploy() {
                format!("a deploy holds the lock {place_text}: {}", held.describe())
            } else {
                held.holds(&place_text)
            }));
        }
    }
    let info = LockInfo::new("local down", 600, crate::random::secret()?);
    let (guard, notes) = lock::acquire(&place, &info, true).map_err(|e| match e {
        Error::Failed(m) if m.contains(" holds the lock ") => busy(
            m.strip_suffix(". Wait for it to finish (--force-unlock only breaks a stale lock)")
                .unwrap_or(&m)
                .to_string(),
        ),
        e => e,
    })?;
    for n in notes {
        eprintln!("note: {n}");
    }
    Ok(guard)
}

fn remove_path(p: &Path) -> Result<()> {
    match std::fs::symlink_metadata(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::write(p, e)),
        Ok(m) if m.is_dir() => remove_dir(p),
        Ok(_) => std::fs::remove_file(p).map_err(|e| Error::write(p, e)),
    }
}

fn remove_dir(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::write(dir, e)),
    }
}

fn status(env: &Environment) -> Result<ExitCode> {
    if !LocalPaths::of(env)?.state_file.exists() {
        println!(
            "local environment `{}`: not set up (run `cargo xtask local up`)",
            env.name
        );
        return Ok(ExitCode::Failed);
    }
    // A state file that exists but does not parse is reported as corrupt, with its position.
    let l = Local::open(env)?;
    let pg = l.cluster()?.is_running();
    let redis = l.redis_running();
    let word = |b: bool| if b { "running" } else { "stopped" };
    println!("{}", l.describe());
    println!("  PostgreSQL: {}", word(pg));
    println!("  Redis:      {}", word(redis));
    Ok(if pg && redis {
        ExitCode::Ok
    } else {
        println!("start it with `cargo xtask local up`");
        ExitCode::Failed
    })
}

fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Whether the redis-server of the pidfile under `paths.redis_dir` is alive and something answers
/// on `port`.
fn redis_running(paths: &LocalPaths, port: u16) -> bool {
    redis::read_pid(&redis::pidfile_in(&paths.redis_dir)).is_some() && RedisServer::is_up(port)
}

/// Append the (new) port to postgresql.conf: the last setting wins.
fn set_pg_port(c: &Cluster) -> Result<()> {
    use std::io::Write;
    let conf = c.data_dir.join("postgresql.conf");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&conf)
        .map_err(|e| Error::write(&conf, e))?;
    writeln!(f, "port = {}", c.port).map_err(|e| Error::write(&conf, e))
}

/// File recording where the cluster lives when it is not at `paths.pg_base`.
fn location_file(paths: &LocalPaths) -> PathBuf {
    paths.location_file.clone()
}

/// The recorded fallback location, only if it has the shape [`pg_base_for`] gives it
/// (`/var/tmp/xtask-local-<16 hex>/postgres`): `local down --purge` deletes its parent, so a
/// hand-edited or corrupt file must never name some other directory.
/// The cluster's Unix socket directory (where `local up` put the cluster, see [`pg_base_for`]).
pub fn socket_dir(paths: &LocalPaths) -> PathBuf {
    services::postgres::Cluster::socket_dir_of(
        &recorded_pg_base(paths).unwrap_or_else(|| paths.pg_base.clone()),
    )
}

fn recorded_pg_base(paths: &LocalPaths) -> Option<PathBuf> {
    let text = std::fs::read_to_string(location_file(paths)).ok()?;
    let p = PathBuf::from(text.trim());
    let hash = p
        .parent()?
        .to_str()?
        .strip_prefix("/var/tmp/xtask-local-")?
        .to_string();
    let ok = p.file_name()? == "postgres"
        && hash.len() == 16
        && hash.bytes().all(|b| b.is_ascii_hexdigit());
    ok.then_some(p)
}

/// Where the cluster goes: `paths.pg_base` when the `postgres` user can traverse every directory
/// above it, else `/var/tmp/xtask-local-<hash of the state dir>/postgres` (recorded in
/// `postgres.location` so every later command finds it).
fn pg_base_for(paths: &LocalPaths) -> Result<PathBuf> {
    if let Some(p) = recorded_pg_base(paths) {
        return Ok(p);
    }
    if !services::is_root() || postgres_can_traverse(&paths.root) {
        return Ok(paths.pg_base.clone());
    }
    let abs = std::path::absolute(&paths.root).unwrap_or(paths.root.clone());
    let mut hash = crate::fnv::Fnv::default();
    hash.write(abs.to_string_lossy().as_bytes());
    let dir = PathBuf::from(format!("/var/tmp/xtask-local-{}", hash.hex()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::write(&dir, e))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))
        .map_err(|e| Error::write(&dir, e))?;
    let base = dir.join("postgres");
    eprintln!(
        "note: the `postgres` user cannot reach {}; the cluster lives in {} instead",
        paths.root.display(),
        base.display()
    );
    crate::files::write_atomic(
        &location_file(paths),
        base.display().to_string().as_bytes(),
        crate::files::Mode::Private,
    )?;
    Ok(base)
}

/// Whether the `postgres` user can traverse `dir` (and so everything above it).
pub fn postgres_can_traverse(dir: &Path) -> bool {
    process::Cmd::new("runuser")
        .args(["-u", crate::services::postgres::RUN_AS, "--", "test", "-x"])
        .arg(dir)
        .timeout(Duration::from_secs(10))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_never_deletes_a_directory_a_bad_location_file_names() {
        let d = tempfile::tempdir().unwrap();
        let envs = crate::environments::testing::repo_at(d.path());
        let env = envs.get("local").unwrap();
        let paths = LocalPaths::of(env).unwrap();
        std::fs::create_dir_all(&paths.root).unwrap();
        std::fs::write(&paths.marker, state::MARKER_TEXT).unwrap();
        LocalState {
            pg_port: 1,
            pg_password: "x".into(),
            redis_port: 2,
            redis_password: "y".into(),
        }
        .save(&paths.state_file)
        .unwrap();
        let victim = d.path().join("victim");
        std::fs::create_dir_all(&victim).unwrap();
        std::fs::write(victim.join("keep.txt"), "precious").unwrap();
        std::fs::write(
            location_file(&paths),
            victim.join("postgres").display().to_string(),
        )
        .unwrap();
        assert_eq!(recorded_pg_base(&paths), None);
        down(env, true).unwrap();
        assert!(victim.join("keep.txt").exists(), "purge deleted {victim:?}");
        assert!(!paths.root.exists());
        // The shape pg_base_for writes is accepted.
        std::fs::create_dir_all(&paths.root).unwrap();
        std::fs::write(
            location_file(&paths),
            "/var/tmp/xtask-local-0123456789abcdef/postgres\n",
        )
        .unwrap();
        assert_eq!(
            recorded_pg_base(&paths),
            Some(PathBuf::from(
                "/var/tmp/xtask-local-0123456789abcdef/postgres"
            ))
        );
    }
    #[test]
    fn local_down_names_the_restore_that_holds_the_lock() {
        let d = tempfile::tempdir().unwrap();
        let envs = crate::environments::testing::repo_at(d.path());
        let paths = LocalPaths::of(envs.get("local").unwrap()).unwrap();
        let place = crate::deploy::lock::LockPlace::File(paths.lock_file.clone());
        let info = crate::deploy::lock::LockInfo::new("restore", 600, "r".into());
        let (_g, _) = crate::deploy::lock::acquire(&place, &info, false).unwrap();
        let e = hold_lock(&paths).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "a restore (started {}",
                crate::time::rfc3339_ms(info.started_unix as u128 * 1000)
            )) && e.contains(&format!("by {} on ", info.owner))
                && e.contains("holds the lock")
                && e.contains("`local down` would stop"),
            "{e}"
        );
        assert!(!e.contains("a deploy"), "{e}");
    }

    #[test]
    fn purge_deletes_only_what_local_up_created() {
        let d = tempfile::tempdir().unwrap();
        let envs = crate::environments::testing::repo_at(d.path());
        let env = envs.get("local").unwrap();
        let paths = LocalPaths::of(env).unwrap();
        // Without the marker: nothing is deleted, and it says why.
        std::fs::create_dir_all(paths.objects.join("b")).unwrap();
        std::fs::write(paths.root.join("notes.txt"), "mine").unwrap();
        let e = down(env, true).unwrap_err();
        assert!(
            e.to_string()
                .contains("not set up by `cargo xtask local up`"),
            "{e}"
        );
        assert!(paths.objects.join("b").exists());
        // With it: our sub-paths go, a file we did not create stays (and so does the directory).
        std::fs::write(&paths.marker, state::MARKER_TEXT).unwrap();
        std::fs::write(&paths.audit_log, "{}").unwrap();
        down(env, true).unwrap();
        assert!(!paths.objects.exists() && !paths.audit_log.exists() && !paths.marker.exists());
        assert_eq!(
            std::fs::read_to_string(paths.root.join("notes.txt")).unwrap(),
            "mine"
        );
        // Nothing left but ours: the directory goes too.
        std::fs::remove_file(paths.root.join("notes.txt")).unwrap();
        std::fs::write(&paths.marker, state::MARKER_TEXT).unwrap();
        down(env, true).unwrap();
        assert!(!paths.root.exists());
    }
}
