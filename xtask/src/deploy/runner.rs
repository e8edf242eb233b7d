//! Executes the steps: timing, audit records, GitHub Actions groups/errors/summary, the lock guard,
//! Ctrl-C (the running step finishes or fails, the lock is released, "interrupted" is recorded).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::backup::{self, RemoteObject};
use crate::environments::Environment;
use crate::error::{Error, ExitCode, Result};
use crate::gha;
use crate::host::{self, Host};
use crate::local::Local;
use crate::process::{self, Cmd};
use crate::time::{elapsed_ms, now_ms, rfc3339_ms};

use super::audit::{Audit, Record};
use super::lock::{self, LockGuard, LockInfo, LockPlace};
use super::plan::{failure_summary, Report, Sha, Status, Step, StepReport};
use super::remote;
use super::steps::{self, Action, Call, Executor, Note};
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
    /// The sha256 of the created dump, from its manifest (what `--rollback-on-failure` pins).
    created_sha256: Option<String>,
    verified: Option<VerifiedBackup>,
    /// What a signal does while the deploy runs its steps (dropped once they ended).
    signals: Option<crate::signals::OnSignal>,
    exec: Box<dyn Executor>,
    /// The id every record of this run carries ([`Record::run`]).
    run_id: String,
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
        Self::on(env, Host::of(env)?, root, sha, args)
    }

    /// The pipeline on a given host (`new` builds it from the environment).
    pub fn on(env: &'a Environment, host: Host, root: &Path, sha: Sha, args: Args) -> Result<Self> {
        let remote_audit = host
            .remote()
            .map(|r| (r.target.clone(), format!("{}/deploy-audit.jsonl", r.dir)));
        if args.json {
            // stdout carries only the JSON report.
            gha::commands_to_stderr();
        }
        // Children get the terminal's SIGINT themselves; we finish the running step's bookkeeping.
        // The process's one handler (`crate::signals`: also SIGTERM, a cancelled CI job, and
        // SIGHUP) says this while the deploy's steps run; the rollback of
        // `--rollback-on-failure` puts restore's words and behaviour in its place while it runs.
        let signals = crate::signals::on_signal(|again| {
            if again {
                eprintln!(
                    "interrupted again: the lock is released as soon as the running step ends"
                );
            } else {
                eprintln!(
                    "interrupted: stopping after the running step (the lock will be released)"
                );
            }
        })?;
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
            created_sha256: None,
            verified: None,
            signals: Some(signals),
            exec: Box::new(steps::Real),
            run_id: crate::random::hex(8)?,
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
            previous: None,
            run: Some(self.run_id.clone()),
            undone_runs: None,
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
            if crate::signals::interrupted() {
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
            // A Ctrl-C that killed the step's child reaches our handler thread a moment later: on a
            // failure, give it that moment, so the interruption is not reported as the step's fault.
            if result.is_err() {
                let t = Instant::now();
                while !crate::signals::interrupted() && t.elapsed() < Duration::from_millis(500) {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            let interrupted = crate::signals::interrupted();
            let (status, message) = match &result {
                Ok(m) if !interrupted => (Status::Ok, m.clone()),
                Ok(m) => (Status::Interrupted, format!("{m} (then interrupted)")),
                Err(e) if interrupted => (
                    Status::Interrupted,
                    format!("{INTERRUPTED} during this step; it stopped with: {e}"),
                ),
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
        // No step runs any more: the deploy's words ("stopping after the running step") would be
        // false now; a rollback (`--rollback-on-failure`) registers restore's.
        self.signals = None;
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
            Some((step, e)) if outcome == Status::Interrupted => {
                // Not the step's fault: whatever the interrupted child said (rclone "cannot reach",
                // psql "connection lost") is not what to fix.
                let msg = format!(
                    "the deploy was {INTERRUPTED} during step `{}` (it stopped with: {e})\n{summary_msg}\n\
                     fix: nothing is broken by the step itself; rerun `cargo xtask deploy --env {}` when you want to deploy",
                    step.name(),
                    self.env.name
                );
                gha::error(&format!("deploy interrupted at `{}`", step.name()), &msg);
                Err(Error::failed(msg))
            }
            Some((step, e)) => {
                gha::error(
                    &format!("deploy step `{}` failed", step.name()),
                    &format!("{e}\n{summary_msg}\nFix: {}", fix_hint(step, self.env, &e)),
                );
                let mut msg = format!("{e}\n{summary_msg}\nfix: {}", fix_hint(step, self.env, &e));
                if matches!(step, Step::Migrate | Step::Rollout | Step::Health) {
                    // Whether this run's migrate step ran (ok, failed or interrupted): only then
                    // has it anything to undo.
                    let migrated = report
                        .steps
                        .iter()
                        .any(|r| r.step == Step::Migrate && r.status != Status::Skipped);
                    // This run's verified backup, as it was verified: a rollback restoring
                    // exactly that object may replay it with the database user's rights.
                    let pinned = match (&self.verified, &self.created_sha256) {
                        (Some(v), Some(sum)) => Some((v.object().path.clone(), sum.clone())),
                        _ => None,
                    };
                    msg.push_str(&crate::rollback::after_failed_deploy(
                        self.env,
                        &self.root,
                        self.sha.as_str(),
                        migrated,
                        self.args.rollback_on_failure,
                        pinned,
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

    /// The step's plan, built now (a local environment's commands exist once preflight brought it
    /// up), executed action by action.
    fn step(&mut self, step: Step) -> Result<String> {
        let plan = steps::plan(
            step,
            &steps::Ctx {
                host: &self.host,
                root: &self.root,
                sha: &self.sha,
                args: &self.args,
            },
        )?;
        let mut notes = Vec::new();
        for action in &plan.actions {
            if let Some(n) = self.act(action)? {
                notes.push(n);
            }
        }
        Ok(notes.join("; "))
    }

    fn act(&mut self, action: &Action) -> Result<Option<String>> {
        match action {
            Action::Run {
                what,
                cmd,
                stdin_file,
                echo_stderr,
                note,
            } => {
                let cmd = match stdin_file {
                    Some(f) => cmd.clone().stdin_bytes(remote::read_for_sync(f)?),
                    None => cmd.clone(),
                };
                let out = self.exec.output(&cmd)?;
                if *echo_stderr {
                    eprint!("{}", out.stderr_str());
                }
                let stdout = host::outcome(what, out)?;
                Ok(Some(match note {
                    Note::Stdout => stdout.trim().to_string(),
                    Note::Text(t) => t.clone(),
                    Note::Services(want) => {
                        let running: Vec<&str> = stdout.lines().map(str::trim).collect();
                        for s in want {
                            if !running.contains(&s.as_str()) {
                                return Err(Error::failed(format!("service {s} is not running")));
                            }
                        }
                        format!("running: {}", running.join(", "))
                    }
                }))
            }
            Action::Poll { checks, tries } => {
                let mut last = String::new();
                for i in 0..*tries {
                    let mut all = true;
                    let mut seen = Vec::new();
                    for (cmd, want) in checks {
                        let ok = self
                            .exec
                            .output(cmd)
                            .map(|o| o.status.success() && o.stdout_str().trim() == *want);
                        all &= matches!(ok, Ok(true));
                        seen.push(format!("{} → {ok:?}", cmd.program()));
                    }
                    if all {
                        return Ok(Some(format!(
                            "PostgreSQL answers SELECT 1, Redis answers PONG (poll {})",
                            i + 1
                        )));
                    }
                    last = seen.join(", ");
                    std::thread::sleep(Duration::from_secs(2));
                }
                Err(Error::failed(format!(
                    "not healthy after {tries} polls: {last}"
                )))
            }
            Action::Call { call, shown } => match self.exec.call(call, shown) {
                Some(r) => r,
                None => self.call(call),
            },
        }
    }

    fn call(&mut self, call: &Call) -> Result<Option<String>> {
        let env = self.env;
        Ok(Some(match call {
            Call::Tools(tools) => {
                for t in tools {
                    process::require(t)?;
                }
                "tools present".into()
            }
            Call::ComposeCheck => {
                super::compose_check(env)?;
                "compose check clean".into()
            }
            Call::LocalUp => {
                let l = crate::local::up(env)?;
                let kb = free_kb(&l.paths.root)?;
                if kb < LOCAL_MIN_FREE_KB {
                    return Err(Error::failed(format!(
                        "only {kb} KiB free under {} (need {LOCAL_MIN_FREE_KB})",
                        l.paths.root.display()
                    )));
                }
                format!(
                    "local environment up (PostgreSQL :{}, Redis :{}); {} MiB free",
                    l.state.pg_port,
                    l.state.redis_port,
                    kb / 1024
                )
            }
            Call::LocalRunning => {
                let l = Local::open(env)?;
                if !l.cluster()?.is_running() || !l.redis_running() {
                    return Err(Error::failed(
                        "the local PostgreSQL or redis-server is not running: `cargo xtask local up`",
                    ));
                }
                "nothing to pull: the local environment runs PostgreSQL and redis-server directly (both running)".into()
            }
            Call::Engine => {
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
                "docker engine answers".into()
            }
            Call::KnownHosts => {
                if let Some(r) = self.host.remote() {
                    crate::ssh::require_known_hosts(r.target)?;
                }
                return Ok(None);
            }
            Call::Lock => {
                let place = lock_place(&self.host, &self.root);
                let info = LockInfo::new(
                    self.sha.as_str(),
                    self.args.lock_ttl,
                    crate::random::secret()?,
                );
                let (guard, notes) = lock::acquire(&place, &info, self.args.force_unlock)?;
                for n in &notes {
                    self.say(&format!("    {n}"));
                    gha::warning("deploy lock", n);
                }
                self.lock = Some(guard);
                format!(
                    "{} (expires in {}s){}",
                    place.describe(),
                    self.args.lock_ttl,
                    notes.first().map(|n| format!("; {n}")).unwrap_or_default()
                )
            }
            Call::Backup => {
                let label = backup::Label::parse(&self.sha.backup_label())?;
                // The manifest records the release only for a full SHA (the contract: 40 hex).
                let sha = self.sha.as_str();
                let full = (sha.len() == 40).then_some(sha);
                let made = backup::create_for(env, &label, full)?;
                let created = made.object;
                let msg = format!("{} ({} bytes)", created.path, created.size);
                self.created = Some(created);
                self.created_sha256 = Some(made.manifest.sha256);
                msg
            }
            Call::VerifyBackup => {
                let created = self
                    .created
                    .as_ref()
                    .ok_or_else(|| Error::failed("no backup was made in this run"))?;
                let v = VerifiedBackup::verify_created(env, created)?;
                let msg = format!(
                    "{}: {} bytes, {} {} match the upload",
                    v.object().path,
                    v.object().size,
                    v.object().hash_type,
                    v.object().hash
                );
                self.verified = Some(v);
                msg
            }
            Call::Migrate => {
                let v = self.verified.as_ref().ok_or_else(|| {
                    Error::failed("no verified backup in this run: refusing to migrate")
                })?;
                crate::migrate::apply(env, &self.sha, v)?
            }
            Call::VerifyRedis => {
                match crate::verify_redis::verify_environment(env, Duration::from_secs(30))? {
                    ExitCode::Ok => "Redis data survives a crash (AOF on, fsync everysec)".into(),
                    code => {
                        return Err(Error::failed(format!(
                        "verify-redis says Redis is not durable (exit {}): see its report above",
                        code as i32
                    )))
                    }
                }
            }
        }))
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

/// Free KiB in the filesystem holding `dir` (`df -Pk`, its last line read as restore's space
/// check reads it: [`crate::restore::plan::parse_df_line`]).
fn free_kb(dir: &Path) -> Result<u64> {
    let out = Cmd::new("df")
        .arg("-Pk")
        .arg(dir)
        .timeout(Duration::from_secs(20))
        .read()?;
    out.lines()
        .last()
        .and_then(crate::restore::plan::parse_df_line)
        .map(|fs| fs.avail_bytes / 1024)
        .ok_or_else(|| Error::failed(format!("cannot read `df -Pk` output: {out:?}")))
}

/// What an interrupted deploy says (the handler runs on SIGINT, SIGTERM and SIGHUP).
const INTERRUPTED: &str = crate::signals::INTERRUPTED_BY;

fn fix_hint(step: Step, env: &Environment, err: &Error) -> String {
    let e = &env.name;
    match step {
        Step::Migrate if err.exit_code() == ExitCode::Unavailable => format!("the migration did not fail on its own: the database went away or psql was killed (see above); its transaction was rolled back. Check that PostgreSQL runs (`cargo xtask local status` locally), then rerun `cargo xtask deploy --env {e}`"),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::Output;
    use std::os::unix::process::ExitStatusExt;

    /// Records what the runner executes and answers like a healthy host, running nothing.
    #[derive(Default)]
    struct Recorder {
        log: std::rc::Rc<std::cell::RefCell<(Vec<String>, Vec<String>)>>,
    }

    impl Executor for Recorder {
        fn output(&mut self, cmd: &Cmd) -> Result<Output> {
            self.log.borrow_mut().0.push(cmd.display());
            let stdout = if cmd.get_args().any(|a| a.contains("--services")) {
                "postgres\nredis\nbackend\n"
            } else {
                "ok\n"
            };
            Ok(Output {
                status: std::process::ExitStatus::from_raw(0),
                stdout: stdout.into(),
                stderr: Vec::new(),
            })
        }
        fn call(&mut self, _call: &Call, shown: &[String]) -> Option<Result<Option<String>>> {
            self.log.borrow_mut().1.extend(shown.iter().cloned());
            Some(Ok(None))
        }
    }

    fn args() -> Args {
        Args {
            env: String::new(),
            sha: None,
            dry_run: false,
            json: true,
            force_unlock: false,
            lock_ttl: 600,
            step: None,
            health_tries: 3,
            rollback_on_failure: false,
        }
    }

    /// For a server (ssh) and a Compose project on this machine (docker): a run of the pipeline
    /// executes exactly the commands, and makes exactly the calls, that its dry run lists, in order.
    #[test]
    fn a_dry_run_lists_exactly_what_a_run_executes() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let root = tempfile::tempdir().unwrap();
        for f in ["docker-compose.staging.yml", crate::backup::SCRIPT] {
            let to = root.path().join(f);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(repo.join(f), to).unwrap();
        }
        let migrations = root.path().join("infra/migrations");
        std::fs::create_dir_all(&migrations).unwrap();
        for m in std::fs::read_dir(repo.join("infra/migrations")).unwrap() {
            let m = m.unwrap();
            std::fs::copy(m.path(), migrations.join(m.file_name())).unwrap();
        }
        let envs = crate::environments::testing::repo_at(root.path());
        let sha = Sha::parse("0123abcdef").unwrap();
        for name in ["staging", "e2e"] {
            let env = envs.get(name).unwrap();
            let host = Host::planned(env).unwrap();
            let steps = super::super::plan::steps_for(host.remote().is_some(), None).unwrap();
            let planned = steps::dry_run(
                &steps::Ctx {
                    host: &host,
                    root: root.path(),
                    sha: &sha,
                    args: &args(),
                },
                &steps,
            )
            .unwrap();
            let recorder = Recorder::default();
            let log = recorder.log.clone();
            let mut p = Pipeline::on(env, host, root.path(), sha.clone(), args()).unwrap();
            p.audit.remote = None;
            p.exec = Box::new(recorder);
            assert_eq!(p.run(&steps).unwrap(), ExitCode::Ok, "{name}");
            let (commands, calls) = log.borrow().clone();
            let want: Vec<String> = planned.iter().flat_map(|s| s.commands.clone()).collect();
            let want_calls: Vec<String> = planned.iter().flat_map(|s| s.calls.clone()).collect();
            // Sync's commands get the file on stdin; the plan shows it as `< file`.
            let want: Vec<String> = want
                .into_iter()
                .map(|c| match c.rsplit_once(" < ") {
                    Some((cmd, _)) => cmd.to_string(),
                    None => c,
                })
                .collect();
            assert!(!want.is_empty() && !want_calls.is_empty(), "{name}");
            assert_eq!(commands, want, "{name}");
            assert_eq!(calls, want_calls, "{name}");
        }
    }
}
