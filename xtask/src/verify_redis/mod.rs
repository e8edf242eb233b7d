//! `cargo xtask verify-redis`: ask a live Redis whether its data survives a crash.
//!
//! Layout: [`info`] parses INFO text (pure), [`checks`] turns what we learned into verdicts (pure),
//! [`transport`] does the I/O (direct connection, `docker compose exec` locally or over SSH, the
//! AOF directory), [`render`] prints. This file wires them: [`collect`] asks the questions within a
//! deadline, [`run`] / [`verify_environment`] print and choose the exit code.
//!
//! Exit codes: 0 healthy (warnings printed), 1 a check failed (`--strict`: also a warning), 2 bad
//! input (unparseable INFO text, bad URL or flags), 3 no answer (refused, timeout, NOAUTH/WRONGPASS,
//! NOPERM on INFO).
//!
//! Time: `--timeout` (default 5 s) bounds every question and the whole run. With `--wait W` and
//! `--samples N --interval I` the whole run is bounded by `timeout + W + (N-1)·I`: a watchdog
//! returns exit 3 when that passes, whatever the server does (e.g. accept and never answer).
//!
//! # JSON schema (`--json`), stable: `"schema": "verify-redis/1"`
//!
//! Fields are only ever added, never renamed or removed, within `verify-redis/1`.
//!
//! ```text
//! {
//!   "schema":    "verify-redis/1",
//!   "target":    string,   // "redis://host:port[/db]" (never a password), "redis+unix:///path",
//!                          // "env:local (redis://127.0.0.1:PORT)", "env:NAME (docker compose exec
//!                          // SERVICE)", "env:NAME (ssh user@host docker compose exec SERVICE)",
//!                          // "file:PATH" or "file:-"
//!   "transport": "url" | "local" | "docker" | "ssh" | "file" | "shell",
//!   "server":    {"server": "redis" | "valkey", "version": "7.0.15"} | null,
//!   "status":    "ok" | "warn" | "fail" | "unreachable",
//!   "exit_code": 0 | 1 | 3,
//!   "strict":    bool,
//!   "samples":   int,            // INFO persistence samples taken (0 when unreachable)
//!   "waited_seconds": number | null,  // time spent waiting for a load (--wait)
//!   "verdict":   string,         // one sentence in plain words
//!   "error":     string | null,  // why there was no answer (status "unreachable" only)
//!   "checks": [                  // fixed order; "aof_files" only for local and exec transports
//!     {"id": "aof_enabled" | "aof_rewrite" | "aof_write" | "aof_rewrite_failures" | "appendfsync"
//!            | "no_appendfsync_on_rewrite" | "fsync_delays" | "rdb_bgsave" | "aof_files",
//!      "title":   string,        // human title, e.g. "AOF on and live"
//!      "status":  "ok" | "warn" | "fail",
//!      "value":   string,        // what we saw, e.g. "aof_enabled:1, appendonly=yes"
//!      "message": string,        // one line: why this status
//!      "action":  string | null} // what to do (null when nothing)
//!   ]
//! }
//! ```

pub mod checks;
pub mod info;
pub mod render;
pub mod transport;

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use checks::{Config, Facts};
use render::Report;
use transport::{Direct, Exec, Gathered};

use crate::environments::{Environment, Environments};
use crate::error::{Error, ExitCode, Result};
use crate::host::Host;

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["url", "env", "info_file"])))]
pub struct Args {
    /// Connect directly: redis://host:port[/db] or redis+unix:///path. The password comes from
    /// REDISCLI_AUTH or REDIS_PASSWORD (one in the URL works but shows in `ps`; it is never printed).
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// An environment from infra/environments.toml: local (direct, plus the AOF directory), docker
    /// (`docker compose exec`), ssh (the same over SSH).
    #[arg(long, value_name = "NAME")]
    pub env: Option<String>,
    /// Parse captured INFO text instead (`-` for stdin). Repeated `# Persistence` sections are samples.
    #[arg(long = "info-file", value_name = "PATH|-")]
    pub info_file: Option<PathBuf>,
    /// Print the JSON document (schema verify-redis/1) instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Exit 1 on warnings too.
    #[arg(long)]
    pub strict: bool,
    /// Bound on every question, in seconds; the whole run is bounded by
    /// timeout + wait + (samples - 1) × interval.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs)]
    pub timeout: Duration,
    /// While Redis loads its data (aof_enabled reads 0 then), wait up to SECS with progress, then verify.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub wait: Option<Duration>,
    /// INFO persistence samples (2+ shows whether delayed fsyncs are rising).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub samples: u32,
    /// Milliseconds between samples.
    #[arg(long, value_name = "MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub interval: u64,
}

fn parse_secs(s: &str) -> std::result::Result<Duration, String> {
    let v: f64 = s
        .trim()
        .trim_end_matches('s')
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(v.is_finite() && v > 0.0 && v <= 86_400.0) {
        return Err(format!("{s:?}: expected seconds between 0 and 86400"));
    }
    Ok(Duration::from_secs_f64(v))
}

/// How to run the checks.
#[derive(Clone, Debug)]
pub struct Options {
    pub timeout: Duration,
    pub wait: Option<Duration>,
    pub samples: u32,
    pub interval: Duration,
    pub strict: bool,
}

impl Options {
    pub fn new(timeout: Duration) -> Self {
        Options {
            timeout,
            wait: None,
            samples: 1,
            interval: Duration::from_secs(1),
            strict: false,
        }
    }

    /// The bound on the whole run.
    pub fn budget(&self) -> Duration {
        self.timeout
            + self.wait.unwrap_or_default()
            + self.interval * self.samples.saturating_sub(1)
    }
}

/// Where the answer comes from.
#[derive(Debug)]
pub enum Source {
    Direct {
        conn: Box<Direct>,
        transport: &'static str,
    },
    Exec {
        exec: Exec,
        transport: &'static str,
    },
    /// Captured INFO text (`--info-file`): no questions asked.
    Text {
        name: String,
        text: String,
    },
}

impl Source {
    pub fn target(&self) -> String {
        match self {
            Source::Direct { conn, .. } => conn.target().to_string(),
            Source::Exec { exec, .. } => exec.target.clone(),
            Source::Text { name, .. } => format!("file:{name}"),
        }
    }

    pub fn transport(&self) -> &'static str {
        match self {
            Source::Direct { transport, .. } | Source::Exec { transport, .. } => transport,
            Source::Text { .. } => "file",
        }
    }

    /// The source for an environment: local → direct + AOF dir; docker → compose exec; ssh → the
    /// same over SSH.
    pub fn for_environment(env: &Environment) -> Result<Self> {
        let host = Host::of(env)?;
        match host.local_paths() {
            Some(paths) => {
                let state = crate::local::state::LocalState::load(env)?;
                Ok(Source::Direct {
                    conn: Box::new(Direct::local(
                        &env.name,
                        state.redis_port,
                        &state.redis_password,
                        &paths.redis_dir,
                    )?),
                    transport: host.transport(),
                })
            }
            None => Ok(Source::Exec {
                transport: host.transport(),
                exec: Exec::on(host),
            }),
        }
    }

    fn gather(&mut self, budget: impl Fn() -> Duration) -> Result<Gathered> {
        match self {
            Source::Direct { conn, .. } => conn.gather(budget),
            Source::Exec { exec, .. } => exec.gather(budget()),
            Source::Text { .. } => unreachable!("text sources are parsed, not gathered"),
        }
    }

    fn sample(&mut self, budget: Duration) -> Result<String> {
        match self {
            Source::Direct { conn, .. } => conn.sample(budget),
            Source::Exec { exec, .. } => exec.sample(budget),
            Source::Text { .. } => unreachable!("text sources are parsed, not sampled"),
        }
    }
}

/// An INFO reply from a live server that does not parse: the server is not what we expect (exit 3).
fn live_parse(target: &str, text: &str) -> Result<Vec<info::Persistence>> {
    info::parse(text)
        .and_then(|i| i.persistence())
        .map_err(|e| {
            Error::unavailable(format!(
                "{target}: unexpected INFO reply (line {}: {}): is this Redis?",
                e.line, e.message
            ))
        })
}

/// Ask the questions (within `opts.budget()`), then evaluate. Progress goes to stderr.
pub fn collect(mut source: Source, opts: &Options) -> Result<Report> {
    let target = source.target();
    let transport = source.transport();
    let facts = if let Source::Text { name, text } = &source {
        from_text(name, text)?
    } else {
        let (tx, rx) = mpsc::channel();
        let worker_opts = opts.clone();
        let deadline = Instant::now() + opts.budget();
        std::thread::spawn(move || {
            let _ = tx.send(ask(&mut source, &worker_opts, deadline));
        });
        // The watchdog: a little grace so that the worker's own timeout error (more precise) wins.
        let limit = opts.budget() + Duration::from_millis(500);
        match rx.recv_timeout(limit) {
            Ok(r) => r?,
            Err(_) => {
                return Err(Error::unavailable(format!(
                    "{target}: no complete answer within {:.1}s",
                    opts.budget().as_secs_f64()
                )))
            }
        }
    };
    Ok(Report {
        target,
        transport,
        server: facts.server.clone(),
        samples: facts.samples.len(),
        waited_secs: facts.waited_secs,
        strict: opts.strict,
        checks: checks::evaluate(&facts),
    })
}

fn ask(source: &mut Source, opts: &Options, deadline: Instant) -> Result<Facts> {
    let target = source.target();
    let budget = || {
        opts.timeout
            .min(deadline.saturating_duration_since(Instant::now()))
            .max(Duration::from_millis(1))
    };
    let start = Instant::now();
    let mut g = source.gather(budget)?;
    let mut samples = live_parse(&target, &g.persistence)?;
    let mut waited = None;
    if let Some(wait) = opts.wait {
        let wait_until = start + wait;
        let mut last_note = None::<Instant>;
        let mut reloaded = false;
        while samples.last().is_some_and(|p| p.is_loading()) && Instant::now() < wait_until {
            let p = samples.last().expect("one sample");
            if last_note.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                eprintln!(
                    "verify-redis: {target} is loading its data{}{}; waiting (up to {:.0}s more)",
                    p.loading_loaded_perc
                        .map(|pc| format!(": {pc:.0}%"))
                        .unwrap_or_default(),
                    p.loading_eta_seconds
                        .filter(|e| *e >= 0)
                        .map(|e| format!(", about {e}s left"))
                        .unwrap_or_default(),
                    wait_until
                        .saturating_duration_since(Instant::now())
                        .as_secs_f64()
                );
                last_note = Some(Instant::now());
            }
            std::thread::sleep(Duration::from_millis(200));
            reloaded = true;
            // A loading server serves clients only between chunks (every 2 MB by default), so
            // one question can go unanswered: keep asking until the wait is over.
            match source.sample(budget()) {
                Ok(text) => samples = live_parse(&target, &text)?,
                Err(e) if Instant::now() < wait_until => {
                    eprintln!("verify-redis: {e}; still waiting");
                }
                Err(e) => return Err(e),
            }
        }
        if reloaded {
            waited = Some(start.elapsed().as_secs_f64());
            if !samples.last().is_some_and(|p| p.is_loading()) {
                // Loaded: ask everything again (CONFIG, files) about the server as it is now.
                g = source.gather(budget)?;
                samples = live_parse(&target, &g.persistence)?;
            }
        }
    }
    for _ in 1..opts.samples {
        std::thread::sleep(opts.interval);
        let text = source.sample(budget())?;
        samples.extend(live_parse(&target, &text)?);
    }
    let server = g
        .server
        .as_deref()
        .and_then(|t| info::parse(t).ok())
        .and_then(|i| i.server());
    Ok(Facts {
        samples,
        server,
        config: g.config,
        aof_files: g.aof_files,
        waited_secs: waited,
        interval_ms: opts.interval.as_millis() as u64,
    })
}

/// The facts in captured INFO text (`--info-file`): no questions asked.
fn from_text(name: &str, text: &str) -> Result<Facts> {
    let file = std::path::Path::new(if name == "-" { "<stdin>" } else { name });
    let parsed = info::parse(text).map_err(|e| Error::input(file, e.line, e.col, e.message))?;
    let samples = parsed
        .persistence()
        .map_err(|e| Error::input(file, e.line, e.col, e.message))?;
    Ok(Facts {
        samples,
        server: parsed.server(),
        config: Config::Unknown(
            "only INFO text was given (--info-file); CONFIG GET was not asked".into(),
        ),
        aof_files: None,
        waited_secs: None,
        interval_ms: 0,
    })
}

/// Print a report (table or JSON, plus GitHub Actions output) and return its exit code; for an
/// error, print what applies (JSON `unreachable` document, annotation) and return it.
pub fn report(
    result: Result<Report>,
    target: &str,
    transport: &str,
    opts: &Options,
    json: bool,
    to_stderr: bool,
) -> Result<ExitCode> {
    match result {
        Ok(r) => {
            let text = if json {
                format!("{}\n", render::json(&r))
            } else {
                render::human(&r)
            };
            if to_stderr {
                eprint!("{text}");
            } else {
                print!("{text}");
            }
            render::github(&r, json || to_stderr);
            Ok(r.exit_code())
        }
        Err(e) => {
            if e.exit_code() == ExitCode::Unavailable {
                let msg = e.to_string();
                if json {
                    println!(
                        "{}",
                        render::json_unreachable(target, transport, opts.strict, &msg)
                    );
                }
                render::github_unreachable(target, &msg, json || to_stderr);
            }
            Err(e)
        }
    }
}

pub fn run(args: Args) -> Result<ExitCode> {
    let opts = Options {
        timeout: args.timeout,
        wait: args.wait,
        samples: args.samples,
        interval: Duration::from_millis(args.interval),
        strict: args.strict,
    };
    let source = if let Some(url) = &args.url {
        Source::Direct {
            conn: Box::new(Direct::from_url(url, transport::env_password())?),
            transport: "url",
        }
    } else if let Some(name) = &args.env {
        let envs = Environments::load()?;
        Source::for_environment(envs.get(name)?)?
    } else if let Some(path) = &args.info_file {
        let name = path.display().to_string();
        let text = if name == "-" {
            let mut b = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut b)
                .map_err(|e| Error::usage(format!("<stdin>: cannot read: {e}")))?;
            String::from_utf8_lossy(&b).into_owned()
        } else {
            let b = std::fs::read(path).map_err(|e| Error::read(path, e))?;
            String::from_utf8_lossy(&b).into_owned()
        };
        Source::Text { name, text }
    } else {
        return Err(Error::usage(
            "say where to ask: --url, --env or --info-file",
        ));
    };
    verify_and_report(source, &opts, args.json, false)
}

/// Collect from `source`, then [`report`] (on stdout, or on stderr for callers that own stdout).
fn verify_and_report(
    source: Source,
    opts: &Options,
    json: bool,
    to_stderr: bool,
) -> Result<ExitCode> {
    let target = source.target();
    let transport = source.transport();
    report(
        collect(source, opts),
        &target,
        transport,
        opts,
        json,
        to_stderr,
    )
}

/// Verify the Redis of an environment (local: direct connection; docker: `docker compose exec`;
/// ssh: exec over SSH), print the human report, and return the exit code it implies
/// (Ok, Failed; unreachable is `Err` with exit 3).
///
/// A server still loading its data is waited for, up to `timeout` (a deploy has just restarted it).
pub fn verify_environment(env: &Environment, timeout: Duration) -> Result<ExitCode> {
    let opts = Options {
        wait: Some(timeout),
        ..Options::new(timeout)
    };
    // Called as a step of other commands (deploy, e2e): the report goes to stderr so their stdout
    // (e.g. `deploy --json`) stays theirs.
    verify_and_report(Source::for_environment(env)?, &opts, false, true)
}
