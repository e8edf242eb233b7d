//! Commands on a remote host: `ssh` with pinned host keys and batch mode, and a remote command line
//! made of shell-quoted words (the remote sshd hands it to a shell; quoting makes it one argv again).

use std::time::Duration;

use crate::environments::SshTarget;
use crate::process::{quote, quote_words, Cmd};

/// Options every connection uses: no prompts, pinned keys only, bounded connect.
pub fn base_options(t: &SshTarget) -> Vec<String> {
    let mut o = vec![
        "-o".into(),
        "BatchMode=yes".into(),
        "-o".into(),
        "StrictHostKeyChecking=yes".into(),
        "-o".into(),
        format!("UserKnownHostsFile={}", t.known_hosts.display()),
        "-o".into(),
        "GlobalKnownHostsFile=/dev/null".into(),
        "-o".into(),
        "ConnectTimeout=10".into(),
        "-o".into(),
        "ServerAliveInterval=15".into(),
        "-o".into(),
        "LogLevel=ERROR".into(),
        "-p".into(),
        t.port.to_string(),
    ];
    if let Some(key) = &t.key {
        o.extend([
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-i".into(),
            key.display().to_string(),
        ]);
    }
    o
}

/// `ssh ... user@host -- 'cd <dir> && <words...>'`. `dir` and every word are shell-quoted.
pub fn command(t: &SshTarget, dir: Option<&str>, words: &[String]) -> Cmd {
    let remote = match dir {
        Some(d) => format!("cd {} && {}", quote(d), quote_words(words)),
        None => quote_words(words),
    };
    Cmd::new("ssh")
        .args(base_options(t))
        .arg(format!("{}@{}", t.user, t.host))
        .arg("--")
        .arg(remote)
}

/// Like [`command`] but the remote command is a fixed script (our own text, not user input) that is
/// run by `sh -c` with positional arguments `$1...` quoted: `sh -c 'SCRIPT' xtask ARG1 ARG2`.
pub fn script(t: &SshTarget, dir: Option<&str>, script: &str, args: &[String]) -> Cmd {
    let mut words = vec![
        "sh".to_string(),
        "-c".to_string(),
        script.to_string(),
        "xtask".to_string(),
    ];
    words.extend(args.iter().cloned());
    command(t, dir, &words)
}

/// The known_hosts file must exist: the host key is pinned (exit 2 otherwise).
pub fn require_known_hosts(t: &SshTarget) -> crate::error::Result<()> {
    if !t.known_hosts.is_file() {
        return Err(crate::error::Error::usage(format!(
            "known_hosts file {} does not exist: pin the host key (ssh-keyscan, then verify the fingerprint)",
            t.known_hosts.display()
        )));
    }
    Ok(())
}

/// Check that the host answers with a key in known_hosts (exit 3 otherwise).
pub fn probe(t: &SshTarget) -> crate::error::Result<()> {
    require_known_hosts(t)?;
    let out = command(t, None, &["true".to_string()])
        .timeout(Duration::from_secs(20))
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(crate::error::Error::unavailable(format!(
            "ssh {}@{}:{} failed: {}",
            t.user,
            t.host,
            t.port,
            out.stderr_str().trim()
        )))
    }
}
