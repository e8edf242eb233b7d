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
//! Several nodes ([`set`]) are asked in parallel, each under that bound, after one discovery round
//! (the primary's `INFO replication`, or the Sentinels' round, itself bounded by `timeout`).
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
//!   "role":      "primary" | "replica" | null,  // from INFO replication (direct transports)
//!   "checks": [                  // fixed order; "aof_files" only for local and exec transports;
//!                                // replication checks only on a replica or a primary with replicas
//!                                // (or min-replicas-to-write > 0); a set's own checks (below)
//!     {"id": "aof_enabled" | "aof_rewrite" | "aof_write" | "aof_rewrite_failures" | "appendfsync"
//!            | "no_appendfsync_on_rewrite" | "fsync_delays" | "rdb_bgsave" | "aof_files"
//!            | "replicas" | "min_replicas" | "replica_link"       // replication
//!            | "sentinels" | "sentinel_master" | "sentinels_agree" | "sentinel_quorum"
//!            | "roles" | "node",                                 // a set's own checks
//!      "title":   string,        // human title, e.g. "AOF on and live"
//!      "status":  "ok" | "warn" | "fail",
//!      "value":   string,        // what we saw, e.g. "aof_enabled:1, appendonly=yes"
//!      "message": string,        // one line: why this status
//!      "action":  string | null} // what to do (null when nothing)
//!   ],
//!   // Only when several nodes were verified (--replicas, --replica-url, --sentinel, an environment
//!   // with redis_replication). The top level is then the set: "target" names it ("sentinel:NAME
//!   // (LIST)", the primary's URL, "env:NAME (+N replicas)"), "status"/"exit_code"/"verdict" are the
//!   // set's, "server"/"samples"/"waited_seconds" the primary's, "role" null, and "checks" the set's
//!   // own checks followed by one "node" check per node (value "ROLE TARGET", status that node's).
//!   "nodes": [
//!     {"target": string, "expected_role": "primary" | "replica", "role": "primary" | "replica" | null,
//!      "transport": string, "server": {...} | null, "status": "ok" | "warn" | "fail" | "unreachable",
//!      "samples": int, "waited_seconds": number | null, "verdict": string, "error": string | null,
//!      "checks": [ ... as above ... ]}
//!   ]
//! }
//! ```

pub mod checks;
pub mod declared;
pub mod info;
pub mod input;
pub mod prometheus;
pub mod render;
pub mod replication;
pub mod resp;
pub mod sentinel;
pub mod set;
pub mod transport;

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use checks::{Config, Facts};
use render::Report;
use transport::{Direct, Exec, Gathered};

use crate::environments::{Environment, Environments, Transport};
use crate::error::{Error, ExitCode, Result};

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["url", "env", "info_file", "sentinel"])))]
pub struct Args {
    /// Connect directly: redis://host:port[/db], rediss://host:port (TLS) or redis+unix:///path.
    /// The password comes from REDISCLI_AUTH or REDIS_PASSWORD (one in the URL works but shows in
    /// `ps`; it is never printed).
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// rediss://: trust only the CA certificates in this PEM file (default: the system's roots).
    #[arg(long = "ca-file", value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
    /// rediss://: accept any certificate and name. Anyone on the path can then read the session
    /// (password included): for a first look only, never in CI.
    #[arg(long = "tls-insecure")]
    pub tls_insecure: bool,
    /// An environment from infra/environments.toml: local (direct, plus the AOF directory), docker
    /// (`docker compose exec`), ssh (the same over SSH).
    #[arg(long, value_name = "NAME")]
    pub env: Option<String>,
    /// Parse captured INFO text instead (`-` for stdin). Repeated `# Persistence` sections are samples.
    #[arg(long = "info-file", value_name = "PATH|-")]
    pub info_file: Option<PathBuf>,
    /// With --url (a primary): also verify every replica it lists in INFO replication, at the
    /// addresses the primary sees (override with --replica-url).
    #[arg(long, value_name = "discover", value_parser = ["discover"], requires = "url")]
    pub replicas: Option<String>,
    /// With --url: a replica to verify too (repeatable), instead of the discovered addresses.
    #[arg(long = "replica-url", value_name = "URL", requires = "url")]
    pub replica_url: Vec<String>,
    /// Ask these Sentinels for the current primary and its replicas, then verify every node.
    /// Sentinel password: REDIS_SENTINEL_PASSWORD; data nodes: REDISCLI_AUTH / REDIS_PASSWORD.
    #[arg(long, value_name = "HOST:PORT[,HOST:PORT...]", requires = "master")]
    pub sentinel: Option<String>,
    /// The master name the Sentinels monitor (with --sentinel).
    #[arg(long, value_name = "NAME", requires = "sentinel")]
    pub master: Option<String>,
    /// Also write every check as a gauge to FILE (node_exporter textfile format, atomically).
    #[arg(long, value_name = "FILE")]
    pub prometheus: Option<PathBuf>,
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
        match env.transport {
            Transport::Local => {
                let state = crate::local::state::LocalState::load(env)?;
                let paths = crate::local::state::LocalPaths::of(env)?;
                Ok(Source::Direct {
                    conn: Box::new(Direct::local(
                        &env.name,
                        state.redis_port,
                        &state.redis_password,
                        &paths.redis_dir,
                    )?),
                    transport: "local",
                })
            }
            Transport::Docker => Ok(Source::Exec {
                exec: Exec::compose(env),
                transport: "docker",
            }),
            Transport::Ssh => Ok(Source::Exec {
                exec: Exec::ssh(env)?,
                transport: "ssh",
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
        replication: facts.replication.clone(),
        last_persistence: facts.samples.last().cloned(),
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
    let replication = g
        .replication
        .as_deref()
        .map(|t| {
            replication::parse(t).map_err(|e| {
                Error::unavailable(format!(
                    "{target}: unexpected INFO replication reply ({e}): is this Redis?"
                ))
            })
        })
        .transpose()?;
    Ok(Facts {
        samples,
        server,
        config: g.config,
        aof_files: g.aof_files,
        waited_secs: waited,
        interval_ms: opts.interval.as_millis() as u64,
        replication,
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
        replication: parsed
            .sections
            .iter()
            .any(|s| s.name == "replication")
            .then(|| replication::parse(text).ok())
            .flatten(),
    })
}

/// Where and how a run's result goes.
#[derive(Clone, Debug, Default)]
pub struct Output {
    pub json: bool,
    /// The report on stderr (callers that own stdout: deploy, e2e).
    pub to_stderr: bool,
    /// `--prometheus FILE`.
    pub prometheus: Option<PathBuf>,
}

impl Output {
    fn print(&self, text: &str) {
        if self.to_stderr {
            eprint!("{text}");
        } else {
            print!("{text}");
        }
    }
}

/// Print a report (table or JSON, plus GitHub Actions output, plus `--prometheus`) and return its
/// exit code; for an error, print what applies (JSON `unreachable` document, annotation) and return it.
pub fn report(
    result: Result<Report>,
    target: &str,
    transport: &str,
    opts: &Options,
    out: &Output,
) -> Result<ExitCode> {
    match result {
        Ok(r) => {
            let text = if out.json {
                format!("{}\n", render::json(&r))
            } else {
                render::human(&r)
            };
            out.print(&text);
            render::github(&r, out.json || out.to_stderr);
            if let Some(file) = &out.prometheus {
                let node = prometheus::Node {
                    target: &r.target,
                    role: r.role(),
                    report: Ok(&r),
                };
                let overall = match r.status() {
                    checks::Status::Ok => 0,
                    checks::Status::Warn => 1,
                    checks::Status::Fail => 2,
                };
                prometheus::write(
                    file,
                    &prometheus::render(&r.target, &[node], &[], overall, prometheus::now()),
                )?;
            }
            Ok(r.exit_code())
        }
        Err(e) => Err(report_error(e, target, transport, opts, out)),
    }
}

/// The output of a run that got no answer (exit 3): JSON document, annotation, Prometheus file.
fn report_error(e: Error, target: &str, transport: &str, opts: &Options, out: &Output) -> Error {
    if e.exit_code() != ExitCode::Unavailable {
        return e;
    }
    let msg = e.to_string();
    if out.json {
        println!(
            "{}",
            render::json_unreachable(target, transport, opts.strict, &msg)
        );
    }
    render::github_unreachable(target, &msg, out.json || out.to_stderr);
    if let Some(file) = &out.prometheus {
        let node = prometheus::Node {
            target,
            role: None,
            report: Err(&msg),
        };
        if let Err(w) = prometheus::write(
            file,
            &prometheus::render(target, &[node], &[], 3, prometheus::now()),
        ) {
            eprintln!("verify-redis: {w}");
        }
    }
    e
}

/// Print a set's report (table or JSON, GitHub Actions, `--prometheus`) and return its exit code.
pub fn report_set(
    result: Result<set::SetReport>,
    target: &str,
    transport: &str,
    opts: &Options,
    out: &Output,
) -> Result<ExitCode> {
    let s = match result {
        Ok(s) => s,
        Err(e) => return Err(report_error(e, target, transport, opts, out)),
    };
    let text = if out.json {
        format!("{}\n", set::json(&s))
    } else {
        set::human(&s)
    };
    out.print(&text);
    set::github(&s, out.json || out.to_stderr);
    if let Some(file) = &out.prometheus {
        let nodes: Vec<prometheus::Node> = s
            .nodes
            .iter()
            .map(|n| prometheus::Node {
                target: &n.target,
                role: Some(n.expect.as_str()),
                report: n.result.as_ref().map_err(String::as_str),
            })
            .collect();
        let overall = match s.status() {
            checks::Status::Ok => 0,
            checks::Status::Warn => 1,
            checks::Status::Fail => 2,
        };
        prometheus::write(
            file,
            &prometheus::render(&s.target, &nodes, &s.checks, overall, prometheus::now()),
        )?;
    }
    Ok(s.exit_code())
}

/// `--url PRIMARY --replicas discover` / `--replica-url`: the primary and its replicas.
fn verify_replicated(
    primary: resp::Endpoint,
    replica_urls: &[String],
    tls: Option<resp::Tls>,
    opts: &Options,
    out: &Output,
) -> Result<ExitCode> {
    let target = primary.display();
    let result = (|| {
        let replicas: Vec<resp::Endpoint> = if !replica_urls.is_empty() {
            replica_urls
                .iter()
                .map(|u| transport::parse_url(u, transport::env_password(), tls.clone()))
                .collect::<Result<_>>()?
        } else {
            let mut d = Direct::new(primary.clone());
            let text = d.info("replication", opts.timeout)?;
            let r = replication::parse(&text).map_err(|e| {
                Error::unavailable(format!(
                    "{target}: unexpected INFO replication reply ({e}): is this Redis?"
                ))
            })?;
            if r.role != replication::Role::Primary {
                return Err(Error::usage(format!(
                    "--replicas discover: {target} is a replica (of {}:{}), not a primary: point --url at the primary, or use --sentinel",
                    r.master_host.as_deref().unwrap_or("?"),
                    r.master_port.unwrap_or(0)
                )));
            }
            r.replicas
                .iter()
                .map(|e| primary.with_addr(&e.ip, e.port))
                .collect()
        };
        let mut members = vec![set::Member {
            expect: replication::Role::Primary,
            source: Source::Direct {
                conn: Box::new(Direct::new(primary.clone())),
                transport: "url",
            },
        }];
        members.extend(replicas.into_iter().map(|ep| set::Member {
            expect: replication::Role::Replica,
            source: Source::Direct {
                conn: Box::new(Direct::new(ep)),
                transport: "url",
            },
        }));
        let nodes = set::verify(members, opts)?;
        set::assemble(target.clone(), "url", opts.strict, nodes, Vec::new())
    })();
    report_set(result, &target, "url", opts, out)
}

/// `--sentinel LIST --master NAME`: the Sentinels' primary and replicas.
pub fn verify_sentinel(
    list: &str,
    master: &str,
    tls: Option<resp::Tls>,
    passwords: (Option<String>, Option<String>),
    opts: &Options,
    out: &Output,
) -> Result<ExitCode> {
    let sentinels = sentinel::parse_list(list)?;
    let target = format!("sentinel:{master} ({list})");
    let (pw, data_pw) = passwords;
    let result = (|| {
        let answers = sentinel::ask(&sentinels, master, &tls, &pw, opts.timeout);
        let (checks, agreed) = sentinel::evaluate(master, &answers)
            .map_err(|e| Error::unavailable(format!("{target}: {e}")))?;
        let mut members = Vec::new();
        if let Some(a) = agreed {
            let base = resp::Endpoint {
                addr: resp::Addr::Tcp {
                    host: a.primary.0.clone(),
                    port: a.primary.1,
                },
                tls: tls.clone(),
                username: None,
                password: data_pw.clone(),
                db: 0,
            };
            for r in &a.replicas {
                members.push(set::Member {
                    expect: replication::Role::Replica,
                    source: Source::Direct {
                        conn: Box::new(Direct::new(base.with_addr(&r.0, r.1))),
                        transport: "url",
                    },
                });
            }
            members.insert(
                0,
                set::Member {
                    expect: replication::Role::Primary,
                    source: Source::Direct {
                        conn: Box::new(Direct::new(base)),
                        transport: "url",
                    },
                },
            );
        }
        let nodes = set::verify(members, opts)?;
        set::assemble(target.clone(), "sentinel", opts.strict, nodes, checks)
    })();
    report_set(result, &target, "sentinel", opts, out)
}

pub fn run(args: Args) -> Result<ExitCode> {
    let opts = Options {
        timeout: args.timeout,
        wait: args.wait,
        samples: args.samples,
        interval: Duration::from_millis(args.interval),
        strict: args.strict,
    };
    let out = Output {
        json: args.json,
        to_stderr: false,
        prometheus: args.prometheus.clone(),
    };
    let tls = tls_options(&args)?;
    if let Some(list) = &args.sentinel {
        let master = args.master.as_deref().unwrap_or_default();
        let sentinel_pw = std::env::var("REDIS_SENTINEL_PASSWORD")
            .ok()
            .filter(|v| !v.is_empty());
        return verify_sentinel(
            list,
            master,
            tls,
            (sentinel_pw, transport::env_password()),
            &opts,
            &out,
        );
    }
    let source = if let Some(url) = &args.url {
        let ep = transport::parse_url(url, transport::env_password(), tls.clone())?;
        if ep.tls.is_none() && tls.is_some() {
            return Err(Error::usage(
                "--ca-file and --tls-insecure apply to rediss:// URLs only",
            ));
        }
        if args.replicas.is_some() || !args.replica_url.is_empty() {
            return verify_replicated(ep, &args.replica_url, tls, &opts, &out);
        }
        Source::Direct {
            conn: Box::new(Direct::new(ep)),
            transport: "url",
        }
    } else if let Some(name) = &args.env {
        let envs = Environments::load()?;
        return verify_env(envs.get(name)?, &opts, &out);
    } else if let Some(path) = &args.info_file {
        let name = path.display().to_string();
        let text = if name == "-" {
            input::read_stdin(args.timeout)?
        } else {
            input::read_file(path)?
        };
        Source::Text { name, text }
    } else {
        return Err(Error::usage(
            "say where to ask: --url, --env or --info-file",
        ));
    };
    verify_and_report(source, &opts, &out)
}

/// `--ca-file` / `--tls-insecure` (with the warning), or `None` when neither was given.
fn tls_options(args: &Args) -> Result<Option<resp::Tls>> {
    if args.ca_file.is_none() && !args.tls_insecure {
        return Ok(None);
    }
    if args.ca_file.is_some() && args.tls_insecure {
        return Err(Error::usage(
            "--ca-file and --tls-insecure contradict each other: choose one",
        ));
    }
    if args.tls_insecure {
        let msg = "--tls-insecure: the server's certificate and name are NOT checked; \
                   anyone on the network path can read and change this session, password included. \
                   Use --ca-file PATH instead.";
        eprintln!("verify-redis: WARNING: {msg}");
        crate::gha::annotation(crate::gha::Annotation::Warning, "verify-redis", msg, true);
    }
    Ok(Some(resp::Tls {
        ca_file: args.ca_file.clone(),
        insecure: args.tls_insecure,
    }))
}

/// Collect from `source`, then [`report`] (on stdout, or on stderr for callers that own stdout).
fn verify_and_report(source: Source, opts: &Options, out: &Output) -> Result<ExitCode> {
    let target = source.target();
    let transport = source.transport();
    report(collect(source, opts), &target, transport, opts, out)
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
    let out = Output {
        to_stderr: true,
        ..Output::default()
    };
    verify_env(env, &opts, &out)
}

/// An environment's Redis through its transport and, when `redis_replication` is declared, every
/// node of the set (Sentinel's view, or the environment's Redis as primary plus `replica_urls`).
fn verify_env(env: &Environment, opts: &Options, out: &Output) -> Result<ExitCode> {
    let Some(rep) = &env.redis_replication else {
        return verify_and_report(Source::for_environment(env)?, opts, out);
    };
    // `ca_file` is repository-relative: the root is the compose file's path minus its relative form.
    let root = env
        .compose_file
        .ancestors()
        .nth(env.compose_file_rel.components().count())
        .unwrap_or(std::path::Path::new("."));
    let tls = match (&rep.ca_file, rep.tls) {
        (Some(ca), _) => Some(resp::Tls {
            ca_file: Some(if ca.is_absolute() {
                ca.clone()
            } else {
                root.join(ca)
            }),
            insecure: false,
        }),
        (None, true) => Some(resp::Tls::default()),
        (None, false) => None,
    };
    let data_pw =
        declared::RedisReplication::secret(&rep.password_env).or_else(transport::env_password);
    if !rep.sentinels.is_empty() {
        let sentinel_pw = declared::RedisReplication::secret(&rep.sentinel_password_env);
        return verify_sentinel(
            &rep.sentinels.join(","),
            rep.master.as_deref().unwrap_or_default(),
            tls,
            (sentinel_pw, data_pw),
            opts,
            out,
        );
    }
    let primary = Source::for_environment(env)?;
    let target = format!("env:{} (+{} replicas)", env.name, rep.replica_urls.len());
    let result = (|| {
        let mut members = vec![set::Member {
            expect: replication::Role::Primary,
            source: primary,
        }];
        for u in &rep.replica_urls {
            members.push(set::Member {
                expect: replication::Role::Replica,
                source: Source::Direct {
                    conn: Box::new(Direct::new(transport::parse_url(
                        u,
                        data_pw.clone(),
                        tls.clone(),
                    )?)),
                    transport: "url",
                },
            });
        }
        let nodes = set::verify(members, opts)?;
        set::assemble(
            target.clone(),
            env_transport(env),
            opts.strict,
            nodes,
            Vec::new(),
        )
    })();
    report_set(result, &target, env_transport(env), opts, out)
}

fn env_transport(env: &Environment) -> &'static str {
    match env.transport {
        Transport::Local => "local",
        Transport::Docker => "docker",
        Transport::Ssh => "ssh",
    }
}
