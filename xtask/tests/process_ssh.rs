//! `process::Cmd`'s deadline over a real ssh session (issue 11, issue 12 item 8): a remote command
//! that exits but leaves a background child holding the session's stdout keeps the channel open, so
//! the run must end at the timeout (exit 3) instead of waiting for that child.

use std::path::Path;
use std::time::{Duration, Instant};

use xtask::environments::SshTarget;
use xtask::error::ExitCode;
use xtask::process::Cmd;
use xtask::services::sshd::{Sshd, SshdOptions};
use xtask::ssh;

/// Leaves `sleep 30` behind with the session's stdout and stderr, writes its pid to `$1`, exits 0.
const LEAVES_A_CHILD: &str = r#"sleep 30 & echo $! > "$1"; echo started; exit 0"#;

fn target(sshd: &Sshd) -> SshTarget {
    let user = Cmd::new("id").arg("-un").read().unwrap();
    SshTarget {
        host: "127.0.0.1".into(),
        user: user.trim().into(),
        port: sshd.port,
        known_hosts: sshd.known_hosts(),
        key: Some(sshd.user_key()),
    }
}

/// The background child the remote command left (it runs on this machine): alive, then killed.
fn reap_left_child(pidfile: &Path) {
    let pid = std::fs::read_to_string(pidfile).expect("the remote command ran");
    let pid = pid.trim();
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the background child {pid} should still be running: the bound, not its end, stopped the run"
    );
    Cmd::new("kill").arg(pid).read().unwrap();
}

#[test]
fn an_ssh_session_held_open_by_a_remote_background_child_ends_at_the_timeout() {
    let sshd = Sshd::start(SshdOptions::default()).unwrap();
    let t = target(&sshd);
    ssh::probe(&t).expect("the session itself works");
    let d = tempfile::tempdir().unwrap();
    let timeout = Duration::from_secs(3);
    for method in ["output", "read", "stream"] {
        let pidfile = d.path().join(format!("{method}.pid"));
        let cmd = ssh::script(&t, None, LEAVES_A_CHILD, &[pidfile.display().to_string()])
            .timeout(timeout);
        let started = Instant::now();
        let r = match method {
            "output" => cmd.output().map(drop),
            "read" => cmd.read().map(drop),
            _ => cmd.stream(true).map(drop),
        };
        let took = started.elapsed();
        let e = r.expect_err(method);
        assert_eq!(e.exit_code(), ExitCode::Unavailable, "{method}: {e}");
        assert!(e.to_string().contains("within 3.0s"), "{method}: {e}");
        assert!(
            took >= timeout && took < timeout + Duration::from_secs(2),
            "{method} took {took:?}"
        );
        reap_left_child(&pidfile);
    }
}
