//! Issue 12 (hardening), the verify-redis items: every read capped and bounded in time (7), and
//! messages that say what is wrong (11). Each runs the built binary under a 1 GiB address-space
//! limit and a kill timer, so the old behaviour (reading /dev/zero forever, blocking on a FIFO,
//! growing to a 2 GB "reply") fails the test instead of the machine.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use xtask::services::free_port;

struct Run {
    code: i32,
    stderr: String,
    took: Duration,
    /// Peak resident set size in KiB (GNU time).
    max_rss_kib: u64,
}

/// `xtask verify-redis ARGS` under `ulimit -v 1 GiB`, killed after `kill_after`; stdin from `stdin`.
fn run(args: &[&str], stdin: Stdio, kill_after: Duration) -> Run {
    let d = tempfile::tempdir().unwrap();
    let rss = d.path().join("rss");
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(r#"ulimit -v 1048576; out=$1; shift; exec /usr/bin/time -q -f %M -o "$out" "$@""#)
        .arg("sh")
        .arg(&rss)
        .arg(env!("CARGO_BIN_EXE_xtask"))
        .arg("verify-redis")
        .args(args)
        .env_remove("REDISCLI_AUTH")
        .env_remove("REDIS_PASSWORD")
        .env_remove("GITHUB_ACTIONS")
        .stdin(stdin)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    let t = Instant::now();
    let mut child = c.spawn().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > kill_after {
            // Its own process group (below): the whole group, by id.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = t.elapsed();
    let stderr = reader.join().unwrap();
    let max_rss_kib = std::fs::read_to_string(&rss)
        .ok()
        .and_then(|s| s.lines().last()?.trim().parse().ok())
        .unwrap_or(u64::MAX);
    Run {
        code: status.code().unwrap_or(-1),
        stderr,
        took,
        max_rss_kib,
    }
}

fn assert_refused_fast(r: &Run, code: i32, needle: &str) {
    assert_eq!(r.code, code, "took {:?}: {}", r.took, r.stderr);
    assert!(
        r.stderr.contains(needle),
        "{:?} not in: {}",
        needle,
        r.stderr
    );
    assert!(r.took < Duration::from_secs(3), "took {:?}", r.took);
}

// ---------------------------------------------------------------------------------------------
// 7: --info-file reads are capped and never block
// ---------------------------------------------------------------------------------------------

#[test]
fn info_file_dev_zero_and_a_directory_are_refused_at_once() {
    let r = run(
        &["--info-file", "/dev/zero"],
        Stdio::null(),
        Duration::from_secs(10),
    );
    assert_refused_fast(&r, 2, "character device, not a regular file");
    let d = tempfile::tempdir().unwrap();
    let r = run(
        &["--info-file", d.path().to_str().unwrap()],
        Stdio::null(),
        Duration::from_secs(10),
    );
    assert_refused_fast(&r, 2, "a directory, not a regular file");
}

#[test]
fn info_file_fifo_without_writer_does_not_block() {
    let d = tempfile::tempdir().unwrap();
    let fifo = d.path().join("info.fifo");
    let ok = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(ok.success());
    let r = run(
        &["--info-file", fifo.to_str().unwrap()],
        Stdio::null(),
        Duration::from_secs(10),
    );
    assert_refused_fast(&r, 2, "a FIFO, not a regular file");
}

fn big_info(bytes: usize) -> Vec<u8> {
    let mut s = b"# Persistence\r\nloading:0\r\naof_enabled:1\r\n".to_vec();
    while s.len() < bytes {
        s.extend_from_slice(b"padding_field_for_the_cap:0123456789abcdef0123456789\r\n");
    }
    s
}

#[test]
fn info_file_larger_than_the_cap_is_refused_with_the_reason() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("huge.txt");
    std::fs::write(&f, big_info(5 << 20)).unwrap();
    let r = run(
        &["--info-file", f.to_str().unwrap()],
        Stdio::null(),
        Duration::from_secs(10),
    );
    assert_refused_fast(&r, 2, "more than 4 MiB of input");
    // Just under the cap is accepted (the cap is not a parse error in disguise).
    std::fs::write(&f, big_info((4 << 20) - 4096)).unwrap();
    let r = run(
        &["--info-file", f.to_str().unwrap()],
        Stdio::null(),
        Duration::from_secs(20),
    );
    assert_ne!(r.code, 2, "{}", r.stderr);
}

#[test]
fn stdin_that_never_ends_is_bounded_by_the_timeout_and_too_much_stdin_is_refused() {
    // A writer that holds the pipe open and writes nothing (`sleep 30 |`).
    let mut writer = Command::new("sleep")
        .arg("30")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pipe = writer.stdout.take().unwrap();
    let r = run(
        &["--info-file", "-", "--timeout", "1"],
        Stdio::from(pipe),
        Duration::from_secs(10),
    );
    let _ = writer.kill();
    let _ = writer.wait();
    assert_refused_fast(&r, 2, "no end of input within 1.0s");

    // 6 MiB on stdin: refused after 4 MiB, with the reason.
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("big");
    std::fs::write(&f, big_info(6 << 20)).unwrap();
    let r = run(
        &["--info-file", "-"],
        Stdio::from(std::fs::File::open(&f).unwrap()),
        Duration::from_secs(10),
    );
    assert_refused_fast(&r, 2, "more than 4 MiB of input");
}

// ---------------------------------------------------------------------------------------------
// 7: replies from --url are capped
// ---------------------------------------------------------------------------------------------

/// A server that answers every request with a bulk string announced as 2 GB, and streams zeros.
fn huge_bulk_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                if s.write_all(b"$2000000000\r\n").is_err() {
                    return;
                }
                let zeros = vec![b'0'; 1 << 16];
                let t = Instant::now();
                while t.elapsed() < Duration::from_secs(20) {
                    if s.write_all(&zeros).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

#[test]
fn a_huge_announced_reply_fails_fast_with_bounded_memory() {
    let port = huge_bulk_server();
    let url = format!("redis://127.0.0.1:{port}");
    let r = run(&["--url", &url], Stdio::null(), Duration::from_secs(15));
    assert_refused_fast(&r, 3, "is larger than 1 MiB");
    assert!(
        r.max_rss_kib < 100 * 1024,
        "peak RSS {} KiB: the reply was not capped",
        r.max_rss_kib
    );
    // The same through the AUTH that a password causes first.
    let r = {
        let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
        c.args(["verify-redis", "--url", &url])
            .env("REDISCLI_AUTH", "Some-Secret-pw")
            .stdin(Stdio::null());
        let t = Instant::now();
        let o = c.output().unwrap();
        (o, t.elapsed())
    };
    let err = String::from_utf8_lossy(&r.0.stderr);
    assert_eq!(r.0.status.code(), Some(3), "{err}");
    assert!(err.contains("is larger than 1 MiB"), "{err}");
    assert!(!err.contains("Some-Secret-pw"));
    assert!(r.1 < Duration::from_secs(3), "took {:?}", r.1);
}

// ---------------------------------------------------------------------------------------------
// 11: messages that say what is wrong
// ---------------------------------------------------------------------------------------------

struct Http(std::process::Child);
impl Drop for Http {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn an_http_server_is_not_a_redis_server() {
    let d = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let _http = Http(
        Command::new("python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
            ])
            .current_dir(d.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 (install-deps.sh installs it)"),
    );
    xtask::services::wait_for_port(port, Duration::from_secs(10)).unwrap();
    let url = format!("redis://127.0.0.1:{port}");
    let r = run(&["--url", &url], Stdio::null(), Duration::from_secs(15));
    assert_refused_fast(&r, 3, "this is not a Redis server (it answered `");
    assert!(!r.stderr.contains("Parse error"), "{}", r.stderr);
    assert!(
        r.stderr.contains("HTML") || r.stderr.contains("HTTP"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_missing_unix_socket_says_so_with_its_path() {
    let d = tempfile::tempdir().unwrap();
    let sock = d.path().join("redis.sock");
    let url = format!("redis+unix://{}", sock.display());
    let r = run(&["--url", &url], Stdio::null(), Duration::from_secs(10));
    assert_refused_fast(&r, 3, "does not exist");
    assert!(
        r.stderr.contains(&sock.display().to_string()),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("refused"), "{}", r.stderr);
    // A socket file nobody listens on is "refused", and says which socket.
    let stale = d.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(Path::new(&stale).exists());
    let r = run(
        &["--url", &format!("redis+unix://{}", stale.display())],
        Stdio::null(),
        Duration::from_secs(10),
    );
    assert_refused_fast(&r, 3, "nothing listens on that socket");
}
