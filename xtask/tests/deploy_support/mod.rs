//! Shared by the local/deploy integration tests: a `local` environment in a temp directory (its own
//! environments file via `XTASK_ENVIRONMENTS`, the repository as `XTASK_ROOT`), run through the real
//! `xtask` binary, and torn down (`local down --purge`) on drop, also when a test fails.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[path = "../common/mod.rs"]
mod common;
#[allow(unused_imports)] // for the test files that write a deploy lock file
pub use common::{gz, lock_file_text};
pub use common::{repo, services_and_backup, Run};

pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub envs_file: PathBuf,
    pub state_dir: PathBuf,
    pub migrations: PathBuf,
    pub extra_env: Vec<(String, String)>,
}

/// The environments file of a test: one `local` environment with everything under `dir`.
pub fn local_toml(state_dir: &Path, migrations: &Path) -> String {
    format!(
        r#"[environments.local]
transport = "local"
description = "test"
compose_file = "docker-compose.prod.yml"
compose_project = "station-test"
state_dir = "{}"
database = "station"
db_user = "station"
migrations_dir = "{}"
migration_command = "builtin:sql-migrations"
{tables}"#,
        state_dir.display(),
        migrations.display(),
        tables = services_and_backup("local", "station-backups", "postgres"),
    )
}

impl TestEnv {
    /// `mode` of the temp dir: 0o711 lets the `postgres` user traverse it, 0o700 does not.
    pub fn local(mode: u32) -> TestEnv {
        let dir = tempfile::Builder::new()
            .prefix("xtask-deploy-test-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        let state_dir = dir.path().join("state");
        let migrations = dir.path().join("migrations");
        std::fs::create_dir_all(&migrations).unwrap();
        for e in std::fs::read_dir(repo().join("infra/migrations")).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), migrations.join(e.file_name())).unwrap();
        }
        let envs_file = dir.path().join("environments.toml");
        std::fs::write(&envs_file, local_toml(&state_dir, &migrations)).unwrap();
        TestEnv {
            dir,
            envs_file,
            state_dir,
            migrations,
            extra_env: Vec::new(),
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
        c.args(args)
            .current_dir(repo())
            .env("XTASK_ENVIRONMENTS", &self.envs_file)
            .env("XTASK_ROOT", repo())
            .env_remove("GITHUB_ACTIONS")
            .env_remove("GITHUB_STEP_SUMMARY")
            // Breaks rclone 1.60's S3 backend (see NOTES.md); never needed on loopback.
            .env_remove("AWS_CA_BUNDLE");
        for (k, _) in std::env::vars() {
            if k.starts_with("RCLONE_CONFIG_") {
                c.env_remove(k);
            }
        }
        for (k, v) in &self.extra_env {
            c.env(k, v);
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().unwrap())
    }

    pub fn state(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.state_dir.join("state.json")).unwrap())
            .unwrap()
    }

    pub fn audit(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.state_dir.join("deploy-audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// `psql` against the test environment's database (password from state.json via PGPASSWORD).
    pub fn psql(&self, sql: &str) -> std::process::Output {
        pg(self, "psql", "station")
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .unwrap()
    }

    pub fn psql_ok(&self, sql: &str) -> String {
        let o = self.psql(sql);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        // No deploy of this test runs any more: a lock left behind (a test's fake holder, a killed
        // deploy) must not keep `local down` from stopping the servers.
        let _ = std::fs::remove_file(self.state_dir.join("deploy.lock"));
        let _ = self.command(&["local", "down", "--purge"]).output();
    }
}

/// `"<step> <status>"` for each record of an audit log, in order.
pub fn steps(audit: &[serde_json::Value]) -> Vec<String> {
    audit
        .iter()
        .map(|a| {
            format!(
                "{} {}",
                a["step"].as_str().unwrap(),
                a["status"].as_str().unwrap()
            )
        })
        .collect()
}

pub fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A PostgreSQL client `tool` (`psql`, `pg_dump`) for database `db` of the test environment, as
/// `station` (the password from state.json via PGPASSWORD), stdin closed.
pub fn pg(t: &TestEnv, tool: &str, db: &str) -> Command {
    let s = t.state();
    let mut c = Command::new(tool);
    c.env("PGHOST", "127.0.0.1")
        .env("PGPORT", s["pg_port"].as_u64().unwrap().to_string())
        .env("PGUSER", "station")
        .env("PGDATABASE", db)
        .env("PGPASSWORD", s["pg_password"].as_str().unwrap())
        .stdin(Stdio::null());
    c
}

/// `psql -q -A -t -c q` in `db`, stopping at the first error (which fails the test): the output,
/// trimmed.
pub fn sql(t: &TestEnv, db: &str, q: &str) -> String {
    let o = pg(t, "psql", db)
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", q])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{q}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// `q` in `postgres`, again every 50 ms until it returns something (which it returns); failing
/// with `never` after `within`.
pub fn poll_sql(t: &TestEnv, q: &str, within: std::time::Duration, never: &str) -> String {
    let deadline = std::time::Instant::now() + within;
    loop {
        let v = sql(t, "postgres", q);
        if !v.is_empty() {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "{never}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A session on `station` (application name `app`) running `pg_sleep(secs)` whose backend is
/// stopped (SIGSTOP: it cannot act on pg_terminate_backend): the psql child and the backend's pid
/// (continue it with `kill -CONT`).
pub fn stuck_session(t: &TestEnv, app: &str, secs: u32) -> (std::process::Child, String) {
    let stuck = pg(t, "psql", "station")
        .args(["-X", "-c", &format!("SELECT pg_sleep({secs})")])
        .env("PGAPPNAME", app)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = poll_sql(
        t,
        &format!(
            "SELECT pid FROM pg_stat_activity WHERE application_name = '{app}' AND state = 'active'"
        ),
        std::time::Duration::from_secs(20),
        "the stuck session never showed up",
    );
    assert!(Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    (stuck, pid)
}

/// `pg_dump --schema-only` of `db`, without the per-dump random `\restrict` key lines.
pub fn schema(t: &TestEnv, db: &str) -> String {
    let o = pg(t, "pg_dump", db).arg("--schema-only").output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The per-table row counts of `db` (as `backup drill` counts them).
pub fn counts(t: &TestEnv, db: &str) -> String {
    sql(t, db, xtask::backup::drill::COUNT_SQL)
}

/// Schema text and per-table counts of `db`.
pub fn snapshot_of(t: &TestEnv, db: &str) -> (String, String) {
    (schema(t, db), counts(t, db))
}

/// Schema text and per-table counts of the live database (`station`).
pub fn snapshot(t: &TestEnv) -> (String, String) {
    snapshot_of(t, "station")
}

/// The databases whose names are `LIKE like`, sorted.
pub fn databases(t: &TestEnv, like: &str) -> Vec<String> {
    sql(
        t,
        "postgres",
        &format!("SELECT datname FROM pg_database WHERE datname LIKE '{like}' ORDER BY 1"),
    )
    .lines()
    .map(String::from)
    .collect()
}

/// The scratch databases a restore replays into (left behind only by a fault).
pub fn scratch_dbs(t: &TestEnv) -> Vec<String> {
    databases(t, "station\\_restore\\_%")
}

/// The databases a restore's swap replaced and kept.
pub fn kept_dbs(t: &TestEnv) -> Vec<String> {
    databases(t, "station\\_before\\_restore\\_%")
}

/// The deploy lock of the test environment, held as a running deploy holds it (until the guard
/// drops).
pub fn hold_deploy_lock(t: &TestEnv) -> xtask::deploy::lock::LockGuard {
    let place = xtask::deploy::lock::LockPlace::File(t.state_dir.join("deploy.lock"));
    let info = xtask::deploy::lock::LockInfo::new("abc1234", 600, "held-by-test".into());
    xtask::deploy::lock::acquire(&place, &info, false)
        .unwrap()
        .0
}

/// The files of the bucket's PostgreSQL backups (dumps and manifests, in the local remote's
/// `<year-month>` directories) whose names `keep` takes, sorted (the names sort by time); none
/// before the first backup.
pub fn backup_files(t: &TestEnv, keep: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let base = t.state_dir.join("objects/station-backups/postgres");
    let mut v = Vec::new();
    for month in std::fs::read_dir(&base).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(month.path()).unwrap().flatten() {
            if keep(&f.file_name().to_string_lossy()) {
                v.push(f.path());
            }
        }
    }
    v.sort();
    v
}
