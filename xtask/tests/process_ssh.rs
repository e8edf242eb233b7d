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

/// restore's streamed replay (`replay.sh object`) run over a real ssh session with a
/// [`Lifeline`] on its stdin, as `Target::replay` runs it on a server: a slow `rclone cat`
/// stand-in and a psql stand-in that keeps what it is sent. The session dying (the ssh client
/// SIGKILLed, as PR_SET_PDEATHSIG does when xtask is killed) stops every process of the replay on
/// the server within seconds, removes its temp dir and sends no COMMIT; `Lifeline::stop` (the
/// Ctrl-C handler) stops it at once with the verdict `stopped`.
#[test]
fn a_streamed_replay_over_ssh_dies_with_its_session_and_stops_when_asked() {
    use std::os::unix::fs::PermissionsExt;
    use xtask::process::Lifeline;
    let d = tempfile::tempdir().unwrap();
    let bin = d.path().join("bin");
    let tmp = d.path().join("tmp");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&tmp).unwrap();
    // 4 MB that do not compress: some 20 s to stream past its first MiB.
    let mut noise = vec![0u8; 4_000_000];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").unwrap(),
        &mut noise,
    )
    .unwrap();
    let obj = d.path().join("obj.gz");
    let mut gz = std::process::Command::new("gzip")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::fs::File::create(&obj).unwrap())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut w = gz.stdin.take().unwrap();
        for chunk in noise.chunks(48) {
            let line: String = chunk.iter().map(|b| format!("{b:02x}")).collect();
            writeln!(w, "-- {line}").unwrap();
        }
    }
    assert!(gz.wait().unwrap().success());
    let sum = Cmd::new("sha256sum")
        .arg(obj.to_str().unwrap())
        .read()
        .unwrap()[..64]
        .to_string();
    let rclone = format!(
        "#!/bin/sh\nf='{}'\nsize=$(wc -c <\"$f\")\nhead -c 1048576 \"$f\" || exit 1\noff=1048576\n\
         while [ \"$off\" -lt \"$size\" ]; do\n  tail -c +\"$((off + 1))\" \"$f\" | head -c 65536 || exit 1\n  \
         off=$((off + 65536))\n  sleep 0.5\ndone\n",
        obj.display()
    );
    let psql = format!(
        "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'psql (PostgreSQL) 17.6'; exit 0; fi\n\
         cat >>'{}'\n",
        d.path().join("psql-input").display()
    );
    for (name, text) in [("rclone", rclone), ("psql", psql)] {
        std::fs::write(bin.join(name), text).unwrap();
        std::fs::set_permissions(bin.join(name), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mark = format!("XTASK_TEST_MARK={}", d.path().display());
    let sshd = Sshd::start(SshdOptions {
        set_env: vec![
            (
                "PATH".into(),
                format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
            ),
            ("TMPDIR".into(), tmp.display().to_string()),
            ("XTASK_TEST_MARK".into(), d.path().display().to_string()),
        ],
    })
    .unwrap();
    let t = target(&sshd);
    let script = format!(
        "set -Eeuo pipefail\n{}",
        include_str!("../src/restore/replay.sh")
    );
    // PATH again on the command line, and SHLVL: bash started under sshd reads ~/.bashrc unless
    // it is a nested shell, and a .bashrc may put its own PATH first (pyenv's rclone).
    let path = format!("PATH={}:{}", bin.display(), std::env::var("PATH").unwrap());
    let words: Vec<String> = [
        "env",
        &path,
        "SHLVL=2",
        "bash",
        "-c",
        &script,
        "xtask",
        "object",
        "b2:x/obj.gz",
        &sum,
        "5",
        "0",
        "psql",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // The server's processes of the replay: their environment has the session's mark.
    let remote = || -> Vec<String> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                std::fs::read(e.path().join("environ"))
                    .is_ok_and(|env| env.split(|&b| b == 0).any(|v| v == mark.as_bytes()))
            })
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    };
    let streaming = || {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !d.path().join("psql-input").exists() || remote().len() < 5 {
            assert!(Instant::now() < deadline, "the replay never started");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(1000));
    };
    let gone_within = |what: &str, within: Duration| {
        let deadline = Instant::now() + within;
        while !remote().is_empty() {
            if Instant::now() > deadline {
                let left = remote();
                for pid in &left {
                    let _ = Cmd::new("kill").args(["-9", pid]).output();
                }
                panic!("{what}: the replay's processes outlived it: {left:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().flatten().collect();
        assert!(left.is_empty(), "{what}: temp dir left: {left:?}");
        let sent = std::fs::read_to_string(d.path().join("psql-input")).unwrap();
        assert!(sent.starts_with("\\restrict "), "{what}");
        assert!(!sent.contains("COMMIT"), "{what}: COMMIT sent");
    };

    // The session dies: the ssh client is SIGKILLed.
    // The check (none here) is the first line on its stdin.
    let line = Lifeline::with_first(b"\n".to_vec());
    let cmd = ssh::command(&t, None, &words).lifeline(&line);
    let run = std::thread::spawn(move || cmd.output());
    streaming();
    let me = std::process::id().to_string();
    let client: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let (comm, rest) = stat.rsplit_once(')')?;
            let ppid = rest.split_whitespace().nth(1)?;
            // This test's client (another test's may run beside it): its argv names our dir.
            let argv = std::fs::read(e.path().join("cmdline")).ok()?;
            let ours = String::from_utf8_lossy(&argv).contains(&*d.path().to_string_lossy());
            (comm.ends_with("(ssh") && ppid == me && ours)
                .then(|| e.file_name().to_string_lossy().into())
        })
        .collect();
    if client.len() != 1 {
        for pid in remote() {
            let _ = Cmd::new("kill").args(["-9", &pid]).output();
        }
        let r = run.join().unwrap();
        panic!("not one ssh client ({client:?}): {r:?}");
    }
    Cmd::new("kill").args(["-9", &client[0]]).read().unwrap();
    let _ = run.join().unwrap();
    gone_within("the session died", Duration::from_secs(5));

    // xtask asks it to stop.
    std::fs::remove_file(d.path().join("psql-input")).unwrap();
    // The check (none here) is the first line on its stdin.
    let line = Lifeline::with_first(b"\n".to_vec());
    let cmd = ssh::command(&t, None, &words).lifeline(&line);
    let run = std::thread::spawn(move || cmd.output());
    streaming();
    let asked = Instant::now();
    line.stop();
    let out = run.join().unwrap().unwrap();
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(out.stdout_str().trim(), "stopped 0", "{}", out.stderr_str());
    gone_within("asked to stop", Duration::from_secs(2));
}
