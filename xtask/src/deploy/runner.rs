//! Executes the steps: timing, audit records, GitHub Actions groups/errors/summary, the lock guard,
//! Ctrl-C (the running step finishes or fails, the lock is released, "interrupted" is recorded).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backup::{self, RemoteObject};
use crate::environments::{Environment, Transport};
use crate::error::{Error, ExitCode, Result};
use crate::gha;
use crate::host::{self, Host};
use crate::local::Local;
use crate::process::{self, Cmd};

use super::audit::{Audit, Record};
use super::lock::{self, LockGuard, LockInfo, LockPlace};
use super::plan::{
    elapsed_ms, failure_summary, now_ms, rfc3339_ms, PlannedStep, Report, Sha, Status, Step,
    StepReport,
};
use super::remote;
use super::Args;
use crate::backup::VerifiedBackup;

/// Free space the local machine needs for a local deploy (KiB).
const LOCAL_MIN_FREE_KB: u64 = 256 * 1024;

pub struct Pipeline<'a> {
    env: &'a Environment,
    root: PathBuf,
    sha: Sha,
    args: Args,
    host: Host,
    audit: Audit,
    lock: Option<LockGuard>,
    created: Option<RemoteObject>,
    verified: Option<VerifiedBackup>,
    interrupted: Arc<AtomicBool>,
}

/// Where the lock lives for an environment: in the server's directory, else beside the audit log.
pub fn lock_place(host: &Host, root: &Path) -> LockPlace {
    match host.remote() {
        Some(r) => LockPlace::Remote {
            target: r.target.clone(),
            dir: r.dir.to_string(),
        },
        None => LockPlace::File(host.records_dir(root).join("deploy.lock")),
    }
}

/// The local audit log of an environment.
pub fn audit_path(host: &Host, root: &Path) -> PathBuf {
    match host.local_paths() {
        Some(p) => p.audit_log.clone(),
        None => host.records_dir(root).join("audit.jsonl"),
    }
}

impl<'a> Pipeline<'a> {
    pub fn new(env: &'a Environment, root: &Path, sha: Sha, args: Args) -> Result<Self> {
        let host = Host::of(env)?;
        let remote_audit = host
            .remote()
            .map(|r| (r.target.clone(), format!("{}/deploy-audit.jsonl", r.dir)));
        if args.json {
            // stdout carries only the JSON report.
            gha::commands_to_stderr();
        }
        let interrupted = Arc::new(AtomicBool::new(false));
        let flag = interrupted.clone();
        // Children get the terminal's SIGINT themselves; we finish the running step's bookkeeping.
        // With ctrlc's `termination` feature this also runs on SIGTERM (a cancelled CI job) and SIGHUP.
        let _ = ctrlc::set_handler(move || {
            if flag.swap(true, Ordering::SeqCst) {
                eprintln!(
                    "interrupted again: the lock is released as soon as the running step ends"
                );
            } else {
                eprintln!(
                    "interrupted: stopping after the running step (the lock will be released)"
                );
            }
        });
        Ok(Pipeline {
            env,
            root: root.to_path_buf(),
            sha,
            audit: Audit {
                local: audit_path(&host, root),
                remote: remote_audit,
            },
            args,
            host,
            lock: None,
            created: None,
            verified: None,
            interrupted,
        })
    }

    fn say(&self, s: &str) {
        if self.args.json {
            eprintln!("{s}");
        } else {
            println!("{s}");
        }
    }

    /// The backup of this run for the audit log and the report: the verified one, else the one
    /// created (not verified yet, or its verification failed).
    fn backup_object(&self) -> Option<String> {
        self.verified
            .as_ref()
            .map(|v| v.object().path.clone())
            .or_else(|| self.created.as_ref().map(|c| c.path.clone()))
    }

    fn record(&self, step: &str, status: Status, start_ms: u128, end_ms: u128, message: &str) {
        let r = Record {
            env: self.env.name.clone(),
            step: step.to_string(),
            status: status.as_str().to_string(),
            start: rfc3339_ms(start_ms),
            end: rfc3339_ms(end_ms),
            duration_ms: elapsed_ms(start_ms, end_ms),
            sha: self.sha.as_str().to_string(),
            actor: super::actor(),
            run_url: super::run_url(),
            backup_object: self.backup_object(),
            message: message.to_string(),
        };
        if let Err(e) = self.audit.append(&r) {
            eprintln!("warning: audit log: {e}");
        }
    }

    /// Run the steps; the exit code (or the failing step's error, with what did not run).
    pub fn run(mut self, steps: &[Step]) -> Result<ExitCode> {
        let started = Instant::now();
        let start_ms = now_ms();
        let child_before = process::child_wall_time();
        self.say(&format!(
            "deploying {} to `{}` ({} step{}: {})",
            self.sha.as_str(),
            self.env.name,
            steps.len(),
            if steps.len() == 1 { "" } else { "s" },
            steps
                .iter()
                .map(|s| s.name())
                .collect::<Vec<_>>()
                .join(" → ")
        ));
        let mut reports: Vec<StepReport> = Vec::new();
        let mut failure: Option<(Step, Error)> = None;
        let mut outcome = Status::Ok;
        for (i, &step) in steps.iter().enumerate() {
            if self.interrupted.load(Ordering::SeqCst) {
                outcome = Status::Interrupted;
                failure = Some((step, Error::failed("interrupted (Ctrl-C)")));
                for &s in &steps[i..] {
                    reports.push(skipped(s));
                }
                break;
            }
            gha::group(&format!("deploy: {}", step.name()));
            self.say(&format!("==> {}", step.name()));
            let t0 = Instant::now();
            let c0 = process::child_wall_time();
            let s_ms = now_ms();
            let result = self.step(step);
            let e_ms = now_ms();
            let took = t0.elapsed();
            let child = process::child_wall_time().saturating_sub(c0);
            let interrupted = self.interrupted.load(Ordering::SeqCst);
            let (status, message) = match &result {
                Ok(m) if !interrupted => (Status::Ok, m.clone()),
                Ok(m) => (Status::Interrupted, format!("{m} (then interrupted)")),
                Err(e) if interrupted => (Status::Interrupted, e.to_string()),
                Err(e) => (Status::Failed, e.to_string()),
            };
            self.record(step.name(), status, s_ms, e_ms, &message);
            self.say(&format!(
                "    {} {} in {:.2}s{}",
                step.name(),
                status.as_str(),
                took.as_secs_f64(),
                if message.is_empty() {
                    String::new()
                } else {
                    format!(": {message}")
                }
            ));
            gha::endgroup();
            reports.push(StepReport {
                step,
                status,
                duration_ms: took.as_millis(),
                child_ms: child.as_millis(),
                message,
            });
            if status != Status::Ok {
                outcome = status;
                let err = match result {
                    Err(e) => e,
                    Ok(_) => Error::failed("interrupted (Ctrl-C)"),
                };
                for &s in &steps[i + 1..] {
                    reports.push(skipped(s));
                }
                failure = Some((step, err));
                break;
            }
        }
        // Release the lock on every path (the guard would on drop too; here we can report it).
        if let Some(mut g) = self.lock.take() {
            if let Err(e) = g.release() {
                eprintln!("warning: {e}");
            }
        }
        let total = started.elapsed();
        let child_total = process::child_wall_time().saturating_sub(child_before);
        let end_ms = now_ms();
        let summary_msg = match &failure {
            Some((step, _)) => {
                let not_run: Vec<Step> = reports
                    .iter()
                    .filter(|r| r.status == Status::Skipped)
                    .map(|r| r.step)
                    .collect();
                failure_summary(*step, &not_run)
            }
            None => format!("deployed {} to `{}`", self.sha.as_str(), self.env.name),
        };
        self.record("pipeline", outcome, start_ms, end_ms, &summary_msg);
        let overhead = total.saturating_sub(child_total);
        let report = Report {
            env: self.env.name.clone(),
            sha: self.sha.clone(),
            outcome,
            steps: reports,
            backup_object: self.backup_object(),
            duration_ms: total.as_millis(),
        };
        gha::summary(&summary_table(&report));
        self.say(&table(&report));
        self.say(&format!(
            "wall {:.2}s, child processes {:.2}s, xtask overhead {:.3}s ({:.1}%)",
            total.as_secs_f64(),
            child_total.as_secs_f64(),
            overhead.as_secs_f64(),
            100.0 * overhead.as_secs_f64() / total.as_secs_f64().max(1e-9)
        ));
        self.say(&format!("audit log: {}", self.audit.local.display()));
        if self.args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).expect("serializable")
            );
        }
        match failure {
            None => {
                self.say(&summary_msg);
                Ok(ExitCode::Ok)
            }
            Some((step, e)) => {
                gha::error(
                    &format!("deploy step `{}` failed", step.name()),
                    &format!("{e}\n{summary_msg}\nFix: {}", fix_hint(step, self.env)),
                );
                let mut msg = format!("{e}\n{summary_msg}\nfix: {}", fix_hint(step, self.env));
                if matches!(step, Step::Migrate | Step::Rollout | Step::Health) {
                    msg.push_str(&crate::rollback::after_failed_deploy(
                        self.env,
                        &self.root,
                        self.args.rollback_on_failure,
                    ));
                }
                Err(match e.exit_code() {
                    ExitCode::Unavailable => Error::unavailable(msg),
                    ExitCode::Usage => Error::usage(msg),
                    _ => Error::failed(msg),
                })
            }
        }
    }

    fn step(&mut self, step: Step) -> Result<String> {
        match step {
            Step::Preflight => self.preflight(),
            Step::Lock => {
                let place = lock_place(&self.host, &self.root);
                let info = LockInfo::new(
                    self.sha.as_str(),
                    self.args.lock_ttl,
                    crate::local::random_secret()?,
                );
                let (guard, notes) = lock::acquire(&place, &info, self.args.force_unlock)?;
                for n in &notes {
                    self.say(&format!("    {n}"));
                    gha::warning("deploy lock", n);
                }
                self.lock = Some(guard);
                Ok(format!(
                    "{} (expires in {}s){}",
                    place.describe(),
                    self.args.lock_ttl,
                    notes.first().map(|n| format!("; {n}")).unwrap_or_default()
                ))
            }
            Step::Sync => {
                let mut done = Vec::new();
                for (local, name, mode) in remote::files_to_sync(self.env, &self.root) {
                    let cmd = self
                        .host
                        .put_file(&name, mode, remote::read_for_sync(&local)?)?;
                    host::outcome(&format!("copying {name}"), cmd.output()?)?;
                    done.push(name);
                }
                Ok(format!("copied {}", done.join(", ")))
            }
            Step::Backup => {
                let label = backup::Label::parse(&self.sha.backup_label())?;
                // The manifest records the release only for a full SHA (the contract: 40 hex).
                let sha = self.sha.as_str();
                let full = (sha.len() == 40).then_some(sha);
                let created = backup::create_for(self.env, &label, full)?.object;
                let msg = format!("{} ({} bytes)", created.path, created.size);
                self.created = Some(created);
                Ok(msg)
            }
            Step::VerifyBackup => {
                let created = self
                    .created
                    .as_ref()
                    .ok_or_else(|| Error::failed("no backup was made in this run"))?;
                let v = VerifiedBackup::verify_created(self.env, created)?;
                let msg = format!(
                    "{}: {} bytes, {} {} match the upload",
                    v.object().path,
                    v.object().size,
                    v.object().hash_type,
                    v.object().hash
                );
                self.verified = Some(v);
                Ok(msg)
            }
            Step::Migrate => {
                let v = self.verified.as_ref().ok_or_else(|| {
                    Error::failed("no verified backup in this run: refusing to migrate")
                })?;
                crate::migrate::apply(self.env, &self.sha, v)
            }
            Step::Rollout => self.rollout(),
            Step::Health => self.health(),
            Step::VerifyRedis => {
                match crate::verify_redis::verify_environment(self.env, Duration::from_secs(30))? {
                    ExitCode::Ok => {
                        Ok("Redis data survives a crash (AOF on, fsync everysec)".into())
                    }
                    code => Err(Error::failed(format!(
                        "verify-redis says Redis is not durable (exit {}): see its report above",
                        code as i32
                    ))),
                }
            }
        }
    }

    fn preflight(&mut self) -> Result<String> {
        let env = self.env;
        let mut notes = Vec::new();
        for t in self.host.tools() {
            process::require(t)?;
        }
        notes.push("tools present".to_string());
        super::compose_check(env)?;
        notes.push("compose check clean".into());
        match env.transport {
            Transport::Local => {
                let l = crate::local::up(env)?;
                notes.push(format!(
                    "local environment up (PostgreSQL :{}, Redis :{})",
                    l.state.pg_port, l.state.redis_port
                ));
                let kb = free_kb(&l.paths.root)?;
                if kb < LOCAL_MIN_FREE_KB {
                    return Err(Error::failed(format!(
                        "only {kb} KiB free under {} (need {LOCAL_MIN_FREE_KB})",
                        l.paths.root.display()
                    )));
                }
                notes.push(format!("{} MiB free", kb / 1024));
            }
            Transport::Docker => {
                if !crate::docker::engine_available() {
                    return Err(Error::unavailable(
                        "the Docker engine does not answer (`docker info`)",
                    ));
                }
                if let Some(f) = &env.env_file {
                    if !f.is_file() {
                        return Err(Error::usage(format!("{} is missing", f.display())));
                    }
                }
                notes.push("docker engine answers".into());
            }
            Transport::Ssh => {
                self.host.probe()?;
                notes.push(format!(
                    "ssh {} with the pinned host key",
                    self.host.describe()
                ));
                let cmd = remote::preflight_cmd(&self.host)?;
                let out = host::outcome("server preflight", cmd.output()?)?;
                notes.push(out.trim().to_string());
            }
        }
        Ok(notes.join("; "))
    }

    fn rollout(&mut self) -> Result<String> {
        let env = self.env;
        match env.transport {
            Transport::Local => {
                let l = Local::open(env)?;
                if !l.cluster()?.is_running() || !l.redis_running() {
                    return Err(Error::failed(
                        "the local PostgreSQL or redis-server is not running: `cargo xtask local up`",
                    ));
                }
                Ok("nothing to pull: the local environment runs PostgreSQL and redis-server directly (both running)".into())
            }
            Transport::Docker => {
                // Captured (not inherited) so `--json` keeps stdout for the report.
                let cmd = self
                    .host
                    .compose_up_wait(self.sha.as_str(), 180)?
                    .timeout(Duration::from_secs(300));
                let out = cmd.output()?;
                eprint!("{}", out.stderr_str());
                host::outcome("compose up", out)?;
                Ok("compose up -d --wait".into())
            }
            Transport::Ssh => {
                for words in rollout_words() {
                    let cmd = self
                        .host
                        .compose(Some(self.sha.as_str()), &words)?
                        .timeout(Duration::from_secs(900));
                    let out = cmd.output()?;
                    host::outcome(&format!("compose {}", words.join(" ")), out)?;
                }
                Ok(format!(
                    "compose pull && up -d in {} (STATION_TAG={})",
                    self.host.describe(),
                    self.sha.as_str()
                ))
            }
        }
    }

    fn health(&mut self) -> Result<String> {
        let env = self.env;
        let tries = self.args.health_tries;
        match env.transport {
            Transport::Local => {
                let l = Local::open(env)?;
                let pg = l
                    .pg_client("psql")?
                    .args(["-X", "-A", "-t", "-c", "SELECT 1"]);
                let redis = l.redis_cli().arg("PING");
                let mut last = String::new();
                for i in 0..tries {
                    let pg_ok = pg
                        .clone()
                        .timeout(Duration::from_secs(10))
                        .output()
                        .map(|o| o.status.success() && o.stdout_str().trim() == "1");
                    let redis_ok = redis
                        .clone()
                        .timeout(Duration::from_secs(10))
                        .output()
                        .map(|o| o.stdout_str().trim() == "PONG");
                    match (pg_ok, redis_ok) {
                        (Ok(true), Ok(true)) => {
                            return Ok(format!(
                                "PostgreSQL answers SELECT 1, Redis answers PONG (poll {})",
                                i + 1
                            ))
                        }
                        (a, b) => last = format!("postgres ok: {a:?}, redis ok: {b:?}"),
                    }
                    std::thread::sleep(Duration::from_secs(2));
                }
                Err(Error::failed(format!(
                    "not healthy after {tries} polls: {last}"
                )))
            }
            Transport::Docker => {
                let out = self
                    .host
                    .compose(None, &["ps", "--status", "running", "--services"])?
                    .timeout(Duration::from_secs(60))
                    .read()?;
                let running: Vec<&str> = out.lines().map(str::trim).collect();
                for s in [&env.services.postgres, &env.services.redis] {
                    if !running.contains(&s.as_str()) {
                        return Err(Error::failed(format!("service {s} is not running")));
                    }
                }
                Ok(format!("running: {}", running.join(", ")))
            }
            Transport::Ssh => {
                if env.health_url.is_empty() {
                    return Err(Error::usage(format!(
                        "environment `{}` has no health_url",
                        env.name
                    )));
                }
                let cmd = remote::health_cmd(&self.host, &env.health_url, tries)?;
                let out = host::outcome("health", cmd.output()?)?;
                Ok(out.trim().to_string())
            }
        }
    }
}

fn skipped(step: Step) -> StepReport {
    StepReport {
        step,
        status: Status::Skipped,
        duration_ms: 0,
        child_ms: 0,
        message: String::new(),
    }
}

fn rollout_words() -> [Vec<String>; 2] {
    [
        ["pull"].map(String::from).to_vec(),
        ["up", "-d", "--remove-orphans"].map(String::from).to_vec(),
    ]
}

/// Free KiB in the filesystem holding `dir` (`df -Pk`).
fn free_kb(dir: &Path) -> Result<u64> {
    let out = Cmd::new("df")
        .arg("-Pk")
        .arg(dir)
        .timeout(Duration::from_secs(20))
        .read()?;
    out.lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error::failed(format!("cannot read `df -Pk` output: {out:?}")))
}

fn fix_hint(step: Step, env: &Environment) -> String {
    let e = &env.name;
    match step {
        Step::Preflight => format!("fix what preflight names (install the tool, pin the host key, copy the env file), then rerun `cargo xtask deploy --env {e}`"),
        Step::Lock => "wait for the other deploy to finish; if it died, rerun with --force-unlock once its lock is stale".into(),
        Step::Sync => "check the SSH connection and that the remote directory is writable".into(),
        Step::Backup => format!("check the backup remote (RCLONE_CONFIG_{}_* / credentials) and run `cargo xtask backup --env {e}` on its own", env.backup.remote.to_uppercase()),
        Step::VerifyBackup => format!("the uploaded object does not match: inspect it with `rclone lsjson --hash {}`", env.backup.base()),
        Step::Migrate => format!("fix the failing migration; the database is as the backup left it apart from migrations applied before it; rerun `cargo xtask deploy --env {e}`"),
        Step::Rollout => "read the compose output above; the previous containers keep running when `up` fails".into(),
        Step::Health => format!("the new release does not answer {}: check `docker compose logs`", if env.health_url.is_empty() { "its health checks" } else { &env.health_url }),
        Step::VerifyRedis => format!("run `cargo xtask verify-redis --env {e}` and `cargo xtask compose check`"),
    }
}

fn table(r: &Report) -> String {
    let mut s = String::from("step            status       seconds\n");
    for st in &r.steps {
        s.push_str(&format!(
            "{:<15} {:<12} {:>7.2}\n",
            st.step.name(),
            st.status.as_str(),
            st.duration_ms as f64 / 1000.0
        ));
    }
    s.trim_end().to_string()
}

fn summary_table(r: &Report) -> String {
    let mut s = format!(
        "### Deploy `{}` to `{}`: {}\n\n| step | status | seconds | detail |\n|---|---|---:|---|\n",
        r.sha.as_str(),
        r.env,
        r.outcome.as_str()
    );
    for st in &r.steps {
        s.push_str(&format!(
            "| {} | {} | {:.2} | {} |\n",
            st.step.name(),
            st.status.as_str(),
            st.duration_ms as f64 / 1000.0,
            gha::cell(&st.message)
        ));
    }
    s.push('\n');
    s
}

/// The `--dry-run` plan: what every step would do, with its exact commands (secrets redacted).
pub fn dry_run(
    env: &Environment,
    root: &Path,
    sha: &Sha,
    steps: &[Step],
    args: &Args,
) -> Result<Vec<PlannedStep>> {
    // Unconfigured SSH settings are shown as placeholders: a plan must work on a laptop.
    let host = Host::planned(env)?;
    let mut out = Vec::new();
    for &step in steps {
        let p = match step {
            Step::Preflight => {
                let mut p = PlannedStep::new(
                    step,
                    format!(
                        "check tools ({}), `cargo xtask compose check`, free disk{}",
                        host.tools().join(", "),
                        match env.transport {
                            Transport::Local => ", and bring the local environment up (`cargo xtask local up`, idempotent)",
                            Transport::Docker => ", the Docker engine and the env file",
                            Transport::Ssh => ", SSH with the pinned host key, the server's docker/compose/env file/disk",
                        }
                    ),
                );
                if let Some(probe) = host.probe_cmd() {
                    p = p.cmd(&probe).cmd(&remote::preflight_cmd(&host)?);
                }
                p
            }
            Step::Lock => {
                let place = lock_place(&host, root);
                PlannedStep::new(
                    step,
                    format!(
                        "take the deploy lock {} (TTL {}s{})",
                        place.describe(),
                        args.lock_ttl,
                        if args.force_unlock {
                            ", breaking a stale lock"
                        } else {
                            ""
                        }
                    ),
                )
            }
            Step::Sync => {
                let dir = crate::host::remote_dir(env)?;
                let mut p = PlannedStep::new(
                    step,
                    format!("copy the files the server needs into {dir} (stdin → temp file → mv)"),
                );
                for (local, name, mode) in remote::files_to_sync(env, root) {
                    p = p.text(format!(
                        "{} < {}",
                        host.put_file(&name, mode, Vec::new())?.display(),
                        local.display()
                    ));
                }
                p
            }
            Step::Backup => PlannedStep::new(
                step,
                format!(
                    "back up the database with LABEL={} through `cargo xtask backup` (infra/scripts/backup-db.sh) into {}",
                    sha.backup_label(),
                    env.backup.base()
                ),
            )
            .text(format!(
                "cargo xtask backup --env {} --label {}",
                env.name,
                sha.backup_label()
            )),
            Step::VerifyBackup => PlannedStep::new(
                step,
                "check that the uploaded object exists remotely with the size and hash the upload reported",
            )
            .text(format!(
                "rclone lsjson --hash {}/YYYYMM/<object of the backup step>",
                env.backup.base()
            )),
            Step::Migrate => {
                let mut p = PlannedStep::new(
                    step,
                    format!(
                        "run the migrations ({}) with the verified backup",
                        env.migration_command_text
                    ),
                );
                for c in crate::migrate::plan_commands(env, sha)? {
                    p = p.text(c);
                }
                p
            }
            Step::Rollout => match (&env.transport, host.remote()) {
                (Transport::Ssh, Some(_)) => {
                    let mut p = PlannedStep::new(
                        step,
                        format!("pull and start the release {} on the server", sha.as_str()),
                    );
                    for w in rollout_words() {
                        p = p.cmd(&host.compose(Some(sha.as_str()), &w)?);
                    }
                    p
                }
                (Transport::Docker, _) => PlannedStep::new(step, "start the compose project")
                    .cmd(&host.compose_up_wait(sha.as_str(), 180)?),
                _ => PlannedStep::new(
                    step,
                    "nothing to pull: check that PostgreSQL and redis-server run",
                ),
            },
            Step::Health => match host.remote() {
                Some(_) => PlannedStep::new(
                    step,
                    format!(
                        "poll {} from the server, {} tries 2 s apart",
                        env.health_url, args.health_tries
                    ),
                )
                .cmd(&remote::health_cmd(&host, &env.health_url, args.health_tries)?),
                None => PlannedStep::new(
                    step,
                    format!(
                        "poll PostgreSQL (SELECT 1) and Redis (PING), {} tries 2 s apart",
                        args.health_tries
                    ),
                ),
            },
            Step::VerifyRedis => PlannedStep::new(
                step,
                "ask the live Redis whether its data survives a crash (INFO persistence, CONFIG GET)",
            )
            .text(format!("cargo xtask verify-redis --env {}", env.name)),
        };
        out.push(p);
    }
    Ok(out)
}
