//! `cargo xtask e2e`: the staging stack on this machine's Docker engine, as its own Compose project
//! (environment `e2e`), proves the Redis durability claims on running containers:
//!
//! 1. build the test images (cached by content hash), `up -d redis postgres`, wait healthy;
//! 2. `verify-redis --env e2e` is healthy, and `INFO persistence` via `docker compose exec` says
//!    `aof_enabled:1`;
//! 3. acknowledged keys survive `docker compose restart redis` and `docker kill -s KILL` + start;
//! 4. the volume migration: old layout (`redis_staging_data`, no AOF) → `compose apply` on a copy
//!    → the printed carry commands → the new layout: the keys are in the `*_aof` volume;
//! 5. `backup --env e2e` dumps postgres through `docker compose exec -T postgres pg_dump` to an
//!    rclone alias of a temp dir; `backup drill` restores that object into a scratch database and
//!    compares every table's row count with the source; the e2e's own check restores it once more
//!    and compares the content (row count and sum) with what it seeded;
//! 6. cleanup (also on failure and Ctrl-C): `down -v --remove-orphans`, volumes, images if asked.
//!
//! Layout: `images` (the scratch images), `stack` (Compose commands), `carry` (old layout and the
//! carry commands, pure), `pg` (SQL and the independent restore check), `guard` (cleanup).

pub mod carry;
pub mod guard;
pub mod images;
pub mod pg;
pub mod stack;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::docker::{engine_available, ComposeCli};
use crate::environments::{Environment, Environments, Transport};
use crate::error::{Error, ExitCode, Result};
use crate::process::Cmd;

use guard::Cleanup;
use stack::{info_field, info_fields, Stack};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The environment to run against (transport `docker`).
    #[arg(long, default_value = "e2e")]
    pub env: String,
    /// Leave containers, volumes and temp files for debugging (prints how to remove them).
    #[arg(long)]
    pub keep: bool,
    /// Also remove the test images at the end (they are cached by content hash otherwise).
    #[arg(long)]
    pub remove_images: bool,
}

/// Keys written per phase.
const KEYS: usize = 200;
const HEALTHY: Duration = Duration::from_secs(90);

pub fn run(args: Args) -> Result<ExitCode> {
    if !engine_available() {
        return Err(Error::unavailable(
            "no Docker engine answers (`docker info` failed): the e2e did NOT run. Start the \
             engine (systemctl start docker) or run where one is available.",
        ));
    }
    let cli = ComposeCli::detect()?;
    let envs = Environments::load()?;
    let env = envs.get(&args.env)?.clone();
    if env.transport != Transport::Docker {
        return Err(Error::usage(format!(
            "environment `{}` has transport {:?}; `e2e` needs a `docker` environment",
            env.name, env.transport
        )));
    }
    let _lock = lock()?;
    println!(
        "e2e: environment `{}` (project {}), compose: {} ",
        env.name,
        env.compose_project,
        cli.words().join(" ")
    );
    let start = Instant::now();
    let guard = Cleanup::new(args.keep, args.remove_images);
    let mut e2e = E2e {
        root: envs.root.clone(),
        stack: Stack::of(&cli, &env),
        cli,
        env,
        guard,
        times: Vec::new(),
    };
    let result = e2e.steps();
    let problems = e2e.guard.finish();
    if guard::interrupted() {
        // The Ctrl-C handler cleaned up (or is about to) and exits 130; a step that failed
        // because its child was interrupted must not exit first with its own code.
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    println!("==> summary");
    for (name, secs) in &e2e.times {
        println!("    {secs:6.1}s  {name}");
    }
    println!("    {:6.1}s  total", start.elapsed().as_secs_f64());
    if result.is_err() {
        for p in &problems {
            eprintln!("e2e cleanup: {p}");
        }
    }
    result?;
    if !problems.is_empty() {
        return Err(Error::failed(format!(
            "e2e passed but cleanup failed:\n  {}",
            problems.join("\n  ")
        )));
    }
    println!("e2e: ok");
    Ok(ExitCode::Ok)
}

/// One e2e run at a time on this machine (the project name is fixed): an advisory file lock.
fn lock() -> Result<std::fs::File> {
    let path = std::env::temp_dir().join("station-e2e.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::unavailable(format!("{}: {e}", path.display())))?;
    if f.try_lock().is_err() {
        println!("e2e: another e2e run holds {}; waiting", path.display());
        f.lock()
            .map_err(|e| Error::unavailable(format!("{}: {e}", path.display())))?;
    }
    Ok(f)
}

struct E2e {
    root: PathBuf,
    cli: ComposeCli,
    env: Environment,
    stack: Stack,
    guard: Cleanup,
    times: Vec<(String, f64)>,
}

impl E2e {
    fn step<T>(
        &mut self,
        n: usize,
        name: &str,
        f: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<T> {
        println!("==> step {n}: {name}");
        let t = Instant::now();
        let r = f(self);
        let secs = t.elapsed().as_secs_f64();
        self.times.push((format!("step {n}: {name}"), secs));
        match r {
            Ok(v) => {
                println!("    ok ({secs:.1}s)");
                Ok(v)
            }
            Err(e) => {
                let code = e.exit_code();
                let e = e.context(format!("e2e step {n} ({name}) failed"));
                // A command that could not be run stays exit 3; everything else is a failed step.
                Err(if code == ExitCode::Unavailable {
                    e
                } else {
                    Error::failed(e.to_string())
                })
            }
        }
    }

    fn steps(&mut self) -> Result<()> {
        self.step(1, "build images, up -d redis postgres, wait healthy", |s| {
            s.up()
        })?;
        self.step(
            2,
            "verify-redis --env e2e and aof_enabled:1 via exec",
            |s| s.verify_redis(),
        )?;
        self.step(3, "acknowledged keys survive restart and kill -9", |s| {
            s.survive()
        })?;
        self.step(
            4,
            "volume migration: old layout -> compose apply -> carry -> new",
            |s| s.migrate(),
        )?;
        self.step(
            5,
            "backup --env e2e through exec pg_dump, drill, restore check",
            |s| s.backup(),
        )?;
        Ok(())
    }

    fn redis(&self) -> &str {
        &self.env.services.redis
    }

    fn postgres(&self) -> &str {
        &self.env.services.postgres
    }

    // ---- step 1 ----------------------------------------------------------------------------

    fn up(&mut self) -> Result<()> {
        for spec in &images::IMAGES {
            let t = Instant::now();
            match images::ensure(&self.root, spec)? {
                images::Built::Cached(h) => println!("    image {} cached ({h})", spec.tag),
                images::Built::Built(h) => println!(
                    "    image {} built ({h}) in {:.1}s",
                    spec.tag,
                    t.elapsed().as_secs_f64()
                ),
            }
        }
        self.preflight()?;
        self.guard.stack(&self.stack);
        let (redis, postgres) = (self.redis().to_string(), self.postgres().to_string());
        // A previous run killed hard may have left the project: start from nothing.
        self.stack.down_all()?;
        println!("    up -d {redis} {postgres}");
        self.stack.up(&[&redis, &postgres])?;
        self.stack.wait_healthy(&[&redis, &postgres], HEALTHY)?;
        println!("    {redis} and {postgres} are healthy");
        // PostgreSQL runs as the image's non-root user (its entrypoint initialized PGDATA).
        let uid = self.stack.exec(&postgres, &["id", "-u"], None)?;
        if uid.trim() == "0" || uid.trim().is_empty() {
            return Err(Error::failed(format!(
                "{postgres} runs as uid `{}`, expected a non-root user",
                uid.trim()
            )));
        }
        println!("    {postgres} runs as uid {}", uid.trim());
        // Healthy must mean serving: the real server, not the entrypoint's init-time one.
        let (db, user) = (&self.env.database, &self.env.db_user);
        let one = pg::psql(&self.stack, &postgres, user, db, "SELECT 40 + 2;\n")?;
        if one.trim() != "42" {
            return Err(Error::failed(format!(
                "{postgres} is healthy but `SELECT 40 + 2` in {db} answered `{}`",
                one.trim()
            )));
        }
        println!("    {postgres} serves {db} as {user}");
        Ok(())
    }

    /// `config --services`: the files, the override and the env file load with this Compose CLI
    /// and define our services. (Not `config --quiet`: that also wants the backend's `env_file`,
    /// which only exists on the servers.)
    fn preflight(&self) -> Result<()> {
        let out = self
            .stack
            .cmd()
            .args(["config", "--services"])
            .timeout(Duration::from_secs(60))
            .output()?;
        if out.status.success() {
            let text = out.stdout_str();
            let services: Vec<&str> = text.split_whitespace().collect();
            for s in [self.redis(), self.postgres()] {
                if !services.contains(&s) {
                    return Err(Error::failed(format!(
                        "the compose files define no service `{s}` (they define: {})",
                        services.join(", ")
                    )));
                }
            }
            return Ok(());
        }
        let why = out.stderr_str();
        Err(Error::failed(format!(
            "`{} config` rejects the files:\n{}",
            self.stack.cmd().display(),
            why.trim()
        )))
    }

    // ---- step 2 ----------------------------------------------------------------------------

    fn verify_redis(&mut self) -> Result<()> {
        match crate::verify_redis::verify_environment(&self.env, Duration::from_secs(30)) {
            Ok(ExitCode::Ok) => println!("    verify-redis --env {}: healthy", self.env.name),
            Ok(code) => {
                return Err(Error::failed(format!(
                    "verify-redis --env {} exited {} (expected 0: AOF on, data survives)",
                    self.env.name, code as i32
                )))
            }
            Err(e) => return Err(e.context("verify-redis")),
        }
        let fields = self.loaded_persistence(&self.stack.clone())?;
        expect_aof(&fields, "1")?;
        println!("    INFO persistence via exec: aof_enabled:1");
        Ok(())
    }

    /// `INFO persistence` once Redis has finished loading (`aof_enabled` reads 0 while loading).
    fn loaded_persistence(&self, stack: &Stack) -> Result<Vec<(String, String)>> {
        let start = Instant::now();
        loop {
            let out = stack.redis_cli(&["INFO", "persistence"], None)?;
            let fields = info_fields(&out);
            if info_field(&fields, "loading") == Some("0") {
                return Ok(fields);
            }
            if start.elapsed() > HEALTHY {
                return Err(Error::failed(format!(
                    "redis still loading after {}s: {out}",
                    HEALTHY.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    // ---- step 3 ----------------------------------------------------------------------------

    fn survive(&mut self) -> Result<()> {
        let stack = self.stack.clone();
        let redis = self.redis().to_string();
        let keys = write_keys(&stack, "survive")?;
        println!("    {} keys written and acknowledged", keys.len());

        println!("    docker compose restart {redis}");
        stack.restart(&redis)?;
        stack.wait_healthy(&[&redis], HEALTHY)?;
        self.loaded_persistence(&stack)?;
        check_keys(&stack, &keys).map_err(|e| e.context("after restart"))?;
        println!("    all {} keys present after restart", keys.len());

        let more = write_keys(&stack, "kill")?;
        let id = stack.container(&redis)?;
        println!("    docker kill -s KILL {}", short(&id));
        stack::kill(&id)?;
        let state = stack::inspect(&id, "{{.State.Status}} {{.State.ExitCode}}")?;
        if state != "exited 137" {
            return Err(Error::failed(format!(
                "after docker kill -s KILL the container is `{state}`, expected `exited 137`"
            )));
        }
        println!("    container exited 137; docker compose start {redis}");
        stack.start(&redis)?;
        stack.wait_healthy(&[&redis], HEALTHY)?;
        self.loaded_persistence(&stack)?;
        let all: Vec<(String, String)> = keys.into_iter().chain(more).collect();
        check_keys(&stack, &all).map_err(|e| e.context("after kill -9"))?;
        println!(
            "    every acknowledged key ({}) present after kill -9",
            all.len()
        );
        let check = stack.check_aof()?;
        println!("    redis-check-aof: {check}");
        Ok(())
    }

    // ---- step 4 ----------------------------------------------------------------------------

    fn migrate(&mut self) -> Result<()> {
        let project = self.env.compose_project.clone();
        let redis = self.redis().to_string();
        let old_vol = format!("{project}_{}", carry::OLD_VOLUME);
        let new_vol = format!("{project}_{}", carry::NEW_VOLUME);
        println!("    down -v the stack of steps 1-3 (the migration starts without {new_vol})");
        self.stack.down_all()?;

        let dir = tempfile::Builder::new()
            .prefix("station-e2e-compose-")
            .tempdir()
            .map_err(|e| Error::failed(format!("cannot create a temporary directory: {e}")))?;
        let name = self
            .env
            .compose_file
            .file_name()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("docker-compose.yml"));
        let copy = dir.path().join(name);
        let current = std::fs::read_to_string(&self.env.compose_file)
            .map_err(|e| Error::read(&self.env.compose_file, e))?;
        std::fs::write(&copy, carry::old_layout(&current)?).map_err(|e| Error::write(&copy, e))?;
        let mut old_env = self.env.clone();
        old_env.compose_file = copy.clone();
        let old = Stack::of(&self.cli, &old_env);
        self.guard.dir(dir);
        self.guard.stack(&old);
        self.guard.volume(&old_vol);
        self.guard.volume(&new_vol);

        println!("    old layout ({old_vol}, no AOF flags): up -d {redis}");
        old.up(&[&redis])?;
        old.wait_healthy(&[&redis], HEALTHY)?;
        expect_aof(&self.loaded_persistence(&old)?, "0")
            .map_err(|e| e.context("the old layout should run without AOF"))?;
        let keys = write_keys(&old, "migrate")?;
        println!("    {} keys written; down (volumes kept)", keys.len());
        old.down_keep_volumes()?;
        volume_exists(&old_vol)?;

        let output = self.compose_apply(&copy)?;
        let cmds = carry::parse_carry_commands(&output)?;
        if cmds.is_empty() {
            return Err(Error::failed(format!(
                "compose apply printed no `{}` commands:\n{output}",
                carry::CARRY_HEADER
            )));
        }
        for c in &cmds {
            let cmd = Cmd::new(&c[0])
                .args(&c[1..])
                .timeout(Duration::from_secs(180));
            println!("    $ {}", abbreviate(&cmd.display()));
            cmd.read().map_err(|e| e.context("carry command"))?;
        }

        println!("    new layout: up -d {redis}");
        old.up(&[&redis])?;
        old.wait_healthy(&[&redis], HEALTHY)?;
        let id = old.container(&redis)?;
        let mounts = stack::inspect(&id, "{{range .Mounts}}{{.Name}} {{end}}")?;
        if !mounts.split_whitespace().any(|m| m == new_vol) {
            return Err(Error::failed(format!(
                "redis mounts `{mounts}`, expected the new volume {new_vol}"
            )));
        }
        expect_aof(&self.loaded_persistence(&old)?, "1")?;
        check_keys(&old, &keys).map_err(|e| e.context("in the new volume"))?;
        println!(
            "    all {} keys present in {new_vol}, aof_enabled:1",
            keys.len()
        );
        old.down_all()?;
        Ok(())
    }

    /// `compose apply` on the copy (the real CLI); returns its output with the carry commands.
    fn compose_apply(&mut self, copy: &Path) -> Result<String> {
        let project = &self.env.compose_project;
        let exe = xtask_exe()?;
        let cmd = Cmd::new(exe)
            .args(["compose", "apply", "--file"])
            .arg(copy)
            .args(["--project", project, "--helper-image", images::REDIS_IMAGE]);
        let cmd = match &self.env.env_file {
            Some(f) => cmd.arg("--env-file").arg(f),
            None => cmd,
        }
        .timeout(Duration::from_secs(120));
        println!("    $ {}", cmd.display());
        let out = cmd.read().map_err(|e| e.context("compose apply"))?;
        print!("{}", indent(&out));
        let vol = crate::compose::redis_data_volume(copy, self.redis())?;
        if vol.as_deref() != Some(carry::NEW_VOLUME) {
            return Err(Error::failed(format!(
                "after compose apply the copy mounts {vol:?}, expected {}",
                carry::NEW_VOLUME
            )));
        }
        Ok(out)
    }

    // ---- step 5 ----------------------------------------------------------------------------

    fn backup(&mut self) -> Result<()> {
        let stack = self.stack.clone();
        let pg = self.postgres().to_string();
        println!("    up -d {pg}");
        stack.up(&[&pg])?;
        stack.wait_healthy(&[&pg], HEALTHY)?;
        let (db, user) = (self.env.database.clone(), self.env.db_user.clone());
        let seed = "CREATE TABLE e2e_items (id int PRIMARY KEY, name text NOT NULL);\n\
                    INSERT INTO e2e_items SELECT g, 'item ' || g FROM generate_series(1, 1000) g;\n";
        pg::psql(&stack, &pg, &user, &db, seed)?;
        println!("    seeded {db}.e2e_items with 1000 rows");

        let remote = tempfile::Builder::new()
            .prefix("station-e2e-remote-")
            .tempdir()
            .map_err(|e| Error::failed(format!("cannot create a temporary directory: {e}")))?;
        // The backup remote `b2` becomes an alias of a local directory, for this process only.
        std::env::set_var(
            format!(
                "RCLONE_CONFIG_{}_TYPE",
                self.env.backup.remote.to_uppercase()
            ),
            "alias",
        );
        std::env::set_var(
            format!(
                "RCLONE_CONFIG_{}_REMOTE",
                self.env.backup.remote.to_uppercase()
            ),
            remote.path(),
        );
        println!(
            "    remote {}: = alias of {}",
            self.env.backup.remote,
            remote.path().display()
        );
        self.guard.dir(remote);
        let label = crate::backup::Label::parse("e2e")?;
        let obj = crate::backup::create(&self.env, &label).map_err(|e| e.context("backup"))?;
        println!(
            "    backup --env {}: {} ({} bytes, {} {})",
            self.env.name, obj.path, obj.size, obj.hash_type, obj.hash
        );

        let report = crate::backup::drill::drill(&self.env, Some(&obj.path))
            .map_err(|e| e.context("backup drill"))?;
        for t in &report.tables {
            let n = |v: Option<u64>| v.map_or("missing".to_string(), |v| v.to_string());
            println!(
                "    drill {} {}: source {}, restored {}",
                if t.ok() { "ok  " } else { "FAIL" },
                t.table,
                n(t.source),
                n(t.restored)
            );
        }
        if !report.passed {
            return Err(Error::failed(format!(
                "backup drill FAILED for {}: the restored row counts differ from the source",
                report.object.path
            )));
        }
        let rows: u64 = report.tables.iter().filter_map(|t| t.restored).sum();
        println!(
            "    drill passed: {} restored into {} in {:.1}s; every table ({}, {rows} rows) matches the source",
            report.object.path,
            report.scratch_database,
            report.restore_seconds,
            report.tables.len()
        );

        // The drill compares counts with the live source; this compares content with what was
        // seeded, through a separate download and restore (an oracle independent of the backup code).
        let restored = pg::restore_check(&stack, &self.env, &obj.path)?;
        println!(
            "    own restore check: {} restored into a scratch database: {restored}",
            obj.path
        );
        Ok(())
    }
}

fn expect_aof(fields: &[(String, String)], want: &str) -> Result<()> {
    match info_field(fields, "aof_enabled") {
        Some(v) if v == want => Ok(()),
        other => Err(Error::failed(format!(
            "INFO persistence says aof_enabled:{}, expected aof_enabled:{want}",
            other.unwrap_or("(missing)")
        ))),
    }
}

/// Write [`KEYS`] keys `e2e:<tag>:<n>` through one redis-cli; the acknowledged ones (reply `OK`).
fn write_keys(stack: &Stack, tag: &str) -> Result<Vec<(String, String)>> {
    let keys: Vec<(String, String)> = (0..KEYS)
        .map(|i| (format!("e2e:{tag}:{i:04}"), format!("{tag}-value-{i}")))
        .collect();
    let script: String = keys.iter().map(|(k, v)| format!("SET {k} {v}\n")).collect();
    let out = stack.redis_cli(&[], Some(script.into_bytes()))?;
    let replies: Vec<&str> = out.lines().map(str::trim).collect();
    let acked: Vec<(String, String)> = keys
        .into_iter()
        .zip(&replies)
        .filter(|(_, r)| **r == "OK")
        .map(|(kv, _)| kv)
        .collect();
    if acked.len() != KEYS {
        return Err(Error::failed(format!(
            "only {} of {KEYS} SETs were acknowledged; replies: {}",
            acked.len(),
            abbreviate(&out)
        )));
    }
    Ok(acked)
}

/// Every key has its value (one GET per key, one redis-cli).
fn check_keys(stack: &Stack, keys: &[(String, String)]) -> Result<()> {
    let script: String = keys.iter().map(|(k, _)| format!("GET {k}\n")).collect();
    let out = stack.redis_cli(&[], Some(script.into_bytes()))?;
    let got: Vec<&str> = out.lines().map(str::trim).collect();
    let missing: Vec<&str> = keys
        .iter()
        .enumerate()
        .filter(|(i, (_, v))| got.get(*i) != Some(&v.as_str()))
        .map(|(_, (k, _))| k.as_str())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::failed(format!(
            "{} of {} acknowledged keys lost (first: {})",
            missing.len(),
            keys.len(),
            missing
                .iter()
                .take(5)
                .copied()
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }
}

fn volume_exists(name: &str) -> Result<()> {
    Cmd::new("docker")
        .args(["volume", "inspect", name])
        .timeout(Duration::from_secs(30))
        .read()
        .map(drop)
        .map_err(|_| Error::failed(format!("volume {name} does not exist after down")))
}

/// Our own executable (`XTASK_EXE` overrides it, for in-process callers such as tests).
fn xtask_exe() -> Result<PathBuf> {
    match std::env::var_os("XTASK_EXE").filter(|v| !v.is_empty()) {
        Some(p) => Ok(PathBuf::from(p)),
        None => std::env::current_exe()
            .map_err(|e| Error::unavailable(format!("cannot find the xtask executable: {e}"))),
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    | {l}\n")).collect()
}

fn abbreviate(s: &str) -> String {
    let one = s.replace('\n', " ");
    if one.chars().count() > 160 {
        format!("{}...", one.chars().take(157).collect::<String>())
    } else {
        one
    }
}
