//! `cargo xtask backup schedule` for real: the systemd units checked by `systemd-analyze verify`,
//! the crontab path installed through a `crontab` stand-in on PATH (same `-l` / `-` / `-r`
//! interface, a file instead of /var/spool/cron), the installed line run once by hand like cron runs
//! it (a real backup of a real cluster), a local HTTP monitor recording start/success/fail, dead
//! monitors that do not fail the backup, and the job removed again.

#[path = "backup_support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;

/// A healthchecks.io-like endpoint: records `METHOD PATH BODY` of every request, answers 200.
struct Monitor {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Monitor {
    fn start() -> Monitor {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                if let Some(r) = read_request(conn) {
                    s.lock().unwrap().push(r);
                }
            }
        });
        Monitor { port, seen }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/ping/abc-123", self.port)
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

fn read_request(mut conn: TcpStream) -> Option<String> {
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut r = BufReader::new(conn.try_clone().ok()?);
    let mut first = String::new();
    r.read_line(&mut first).ok()?;
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        if h.trim().is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).ok()?;
    conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK")
        .ok()?;
    let mut w = first.split_whitespace();
    Some(format!(
        "{} {} {}",
        w.next()?,
        w.next()?,
        String::from_utf8_lossy(&body)
    ))
}

/// A `crontab` with cron's interface over a plain file.
const FAKE_CRONTAB: &str = r#"#!/bin/sh
f="$FAKE_CRONTAB_FILE"
case "$1" in
  -l) if [ -f "$f" ]; then cat "$f"; else echo "no crontab for $(id -un)" >&2; exit 1; fi ;;
  -r) rm -f "$f" ;;
  -) cat > "$f" ;;
  *) echo "usage" >&2; exit 2 ;;
esac
"#;

struct Cron {
    bin: PathBuf,
    file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Cron {
    fn new() -> Cron {
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let c = bin.join("crontab");
        std::fs::write(&c, FAKE_CRONTAB).unwrap();
        std::fs::set_permissions(&c, std::fs::Permissions::from_mode(0o755)).unwrap();
        Cron {
            file: d.path().join("spool"),
            bin,
            _dir: d,
        }
    }

    fn path_env(&self) -> String {
        format!("{}:{}", self.bin.display(), std::env::var("PATH").unwrap())
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.file).unwrap_or_default()
    }
}

fn xtask(f: &Fixture, cron: &Cron, args: &[&str]) -> (i32, String, String) {
    let mut c = f.xtask(args);
    c.env("PATH", cron.path_env())
        .env("FAKE_CRONTAB_FILE", &cron.file);
    let o = c.output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        text(&o.stdout),
        text(&o.stderr),
    )
}

/// Run the installed crontab line the way cron does: its command part through `sh -c`, in $HOME,
/// with a minimal environment.
/// Sleep into the next wall-clock second.
fn next_second() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    std::thread::sleep(
        Duration::from_nanos(1_000_000_000 - u64::from(now.subsec_nanos()))
            + Duration::from_millis(20),
    );
}

fn run_line(line: &str, extra: &[(&str, &str)]) -> (i32, Duration) {
    let cmd: String = line.splitn(6, ' ').nth(5).unwrap().to_string();
    let start = Instant::now();
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(&cmd)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .env("HOME", std::env::var("HOME").unwrap_or("/root".into()))
        .env("SHELL", "/bin/sh")
        .current_dir("/");
    for (k, v) in extra {
        c.env(k, v);
    }
    let st = c.status().unwrap();
    (st.code().unwrap_or(-1), start.elapsed())
}

fn our_line(cron: &Cron) -> String {
    cron.text()
        .lines()
        .find(|l| l.ends_with("# station-backup:t"))
        .unwrap_or_else(|| panic!("no line of ours in {:?}", cron.text()))
        .to_string()
}

fn status(f: &Fixture, cron: &Cron) -> (i32, serde_json::Value) {
    let (code, out, err) = xtask(f, cron, &["backup", "status", "--env", "t", "--json"]);
    (
        code,
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}\n{err}")),
    )
}

fn nightlies(f: &Fixture) -> usize {
    files(&f.objects())
        .iter()
        .filter(|p| p.ends_with("_nightly.sql.gz"))
        .count()
}

#[test]
fn crontab_job_installs_idempotently_runs_by_hand_pings_and_is_removed() {
    let f = Fixture::new();
    let cron = Cron::new();
    let monitor = Monitor::start();
    // Someone else's line is there already and must survive everything.
    let theirs = "0 1 * * * /usr/bin/true # not ours";
    std::fs::write(&cron.file, format!("{theirs}\n")).unwrap();
    let jobdir = f.state_dir.join("nightly-backup");

    let (code, v) = status(&f, &cron);
    assert_eq!(code, 1, "{v}");
    assert!(v["schedule"].is_null(), "{v}");

    // The dry run prints the line and the files, and changes nothing.
    let url = monitor.url();
    let args = [
        "backup",
        "schedule",
        "--env",
        "t",
        "--at",
        "03:07",
        "--via",
        "cron",
        "--ping-url",
        &url,
    ];
    let mut dry = args.to_vec();
    dry.push("--dry-run");
    let (code, planned, err) = xtask(&f, &cron, &dry);
    assert_eq!(code, 0, "{err}");
    assert!(!planned.contains(PASSWORD), "{planned}");
    assert!(planned.contains("PGPASSWORD=***"), "{planned}");
    assert_eq!(cron.text(), format!("{theirs}\n"));
    assert!(!jobdir.exists());

    // Installed: our tagged line beside theirs, the job's files private; the local password (in the
    // 0600 environment file) never on an argv while it is written.
    let mut c = f.xtask(&args);
    c.env("PATH", cron.path_env())
        .env("FAKE_CRONTAB_FILE", &cron.file);
    let (o, hits, _) = run_watching_argv(c, PASSWORD);
    let (code, out, err) = (
        o.status.code().unwrap_or(-1),
        text(&o.stdout),
        text(&o.stderr),
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(hits.is_empty(), "password on an argv: {hits:?}");
    assert!(!err.contains(PASSWORD));
    let line = our_line(&cron);
    assert!(line.starts_with("7 3 * * * /bin/bash "), "{line}");
    assert!(
        planned.contains(&format!("{line}\n")),
        "dry run:\n{planned}\ninstalled: {line}"
    );
    assert_eq!(cron.text(), format!("{theirs}\n{line}\n"));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&jobdir.join("nightly.env")), 0o600);
    assert_eq!(mode(&jobdir.join("nightly.sh")), 0o700);
    let envf = std::fs::read_to_string(jobdir.join("nightly.env")).unwrap();
    assert!(envf.contains("\nLABEL=nightly\n"), "{envf}");
    assert!(!line.contains(PASSWORD) && !out.contains(PASSWORD));

    // A second run changes nothing.
    let (code, out, _) = xtask(&f, &cron, &args);
    assert_eq!(code, 0);
    assert!(out.contains("(nothing changed)"), "{out}");
    assert_eq!(cron.text(), format!("{theirs}\n{line}\n"));

    // Run once by hand through the installed line: a real nightly, pinged start then success.
    let (code, _) = run_line(&line, &[]);
    assert_eq!(
        code,
        0,
        "{}",
        std::fs::read_to_string(jobdir.join("nightly.log")).unwrap()
    );
    assert_eq!(nightlies(&f), 1);
    assert_eq!(
        monitor.take(),
        ["POST /ping/abc-123/start ", "POST /ping/abc-123 "]
    );
    let last = std::fs::read_to_string(jobdir.join("nightly.last")).unwrap();
    assert!(last.starts_with("result=ok\nrc=0\n"), "{last}");
    let log = std::fs::read_to_string(jobdir.join("nightly.log")).unwrap();
    assert!(
        log.contains("BACKUP_OK path=b2:station-backups/postgres/"),
        "{log}"
    );
    // The status is now 0 and shows the job.
    let (code, v) = status(&f, &cron);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["schedule"]["via"], "cron");
    assert_eq!(v["schedule"]["last_result"], "ok");
    assert!(
        v["schedule"]["next"]
            .as_str()
            .unwrap()
            .contains("T03:07:00Z"),
        "{v}"
    );

    // A failing backup: pinged /fail with the stage; the status warns about the job.
    let broken = envf.replace("\nPGDATABASE=station\n", "\nPGDATABASE=no_such_db\n");
    assert_ne!(broken, envf);
    std::fs::write(jobdir.join("nightly.env"), broken).unwrap();
    let (code, _) = run_line(&line, &[]);
    assert_ne!(code, 0);
    let pings = monitor.take();
    assert_eq!(pings.len(), 2, "{pings:?}");
    assert_eq!(pings[0], "POST /ping/abc-123/start ");
    assert!(
        pings[1].starts_with("POST /ping/abc-123/fail stage="),
        "{pings:?}"
    );
    let stage = pings[1].rsplit('=').next().unwrap().to_string();
    assert!(!stage.is_empty() && stage != "unknown", "{pings:?}");
    let last = std::fs::read_to_string(jobdir.join("nightly.last")).unwrap();
    assert!(last.contains(&format!("stage={stage}\n")), "{last}");
    let (_, v) = status(&f, &cron);
    assert_eq!(v["schedule"]["last_result"], "failed");
    assert!(v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w.as_str().unwrap().contains("last scheduled run failed")));

    // Dead monitors never fail the backup: one refusing connections, one that never answers.
    let refused = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let hole = TcpListener::bind("127.0.0.1:0").unwrap();
    let hole_port = hole.local_addr().unwrap().port();
    let held = Arc::new(Mutex::new(Vec::new()));
    let h = held.clone();
    std::thread::spawn(move || {
        for c in hole.incoming().flatten() {
            h.lock().unwrap().push(c);
        }
    });
    for port in [refused, hole_port] {
        let dead = format!("http://127.0.0.1:{port}/ping/dead");
        let mut a = args.to_vec();
        a[9] = &dead;
        let (code, _, err) = xtask(&f, &cron, &a);
        assert_eq!(code, 0, "{err}");
        let before = nightlies(&f);
        // Backups are named to the second, and an existing name is refused: not the second of
        // the nightly before (a fast machine gets here within it).
        next_second();
        let (code, took) = run_line(&our_line(&cron), &[("BACKUP_PING_TIMEOUT", "2")]);
        assert_eq!(code, 0, "port {port}");
        assert_eq!(nightlies(&f), before + 1);
        assert!(took < Duration::from_secs(60), "{took:?}");
        let log = std::fs::read_to_string(jobdir.join("nightly.log")).unwrap();
        assert!(log.contains("to the monitor failed (the backup is not affected)"));
    }
    assert!(
        !held.lock().unwrap().is_empty(),
        "the black hole was never pinged"
    );

    // Removed: their line stays, our files go, the log stays; removing again is a no-op.
    let (code, out, err) = xtask(&f, &cron, &["backup", "schedule", "--env", "t", "--remove"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("removed crontab line"), "{out}");
    assert_eq!(cron.text(), format!("{theirs}\n"));
    assert!(!jobdir.join("nightly.sh").exists() && !jobdir.join("nightly.env").exists());
    assert!(jobdir.join("nightly.log").exists());
    let (code, out, _) = xtask(&f, &cron, &["backup", "schedule", "--env", "t", "--remove"]);
    assert_eq!(code, 0);
    assert!(out.contains("no nightly job of `t` was installed"), "{out}");
    let (_, v) = status(&f, &cron);
    assert!(v["schedule"].is_null(), "{v}");
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    let f = Fixture::new();
    let cron = Cron::new();
    let (code, out, err) = xtask(
        &f,
        &cron,
        &[
            "backup",
            "schedule",
            "--env",
            "t",
            "--via",
            "systemd",
            "--at",
            "23:59",
            "--ping-url",
            "https://hc-ping.example/p?a=1&b=2",
            "--dry-run",
        ],
    );
    assert_eq!(code, 0, "{err}");
    // `# name` headers, then the file's text.
    let mut units: Vec<(String, String)> = Vec::new();
    for l in out.lines() {
        if let Some(name) = l.strip_prefix("# ") {
            units.push((name.to_string(), String::new()));
        } else if let Some((_, body)) = units.last_mut() {
            body.push_str(l);
            body.push('\n');
        }
    }
    let d = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for (name, body) in &units {
        if name.ends_with(".service") || name.ends_with(".timer") {
            let p = d.path().join(name);
            std::fs::write(&p, body.trim_end().to_string() + "\n").unwrap();
            paths.push(p);
        }
    }
    assert_eq!(paths.len(), 2, "{out}");
    let timer = std::fs::read_to_string(d.path().join("station-backup-t.timer")).unwrap();
    assert!(
        timer.contains("\nPersistent=true\n") && timer.contains("OnCalendar=*-*-* 23:59:00 UTC")
    );
    let service = std::fs::read_to_string(d.path().join("station-backup-t.service")).unwrap();
    assert!(
        service.contains("'https://hc-ping.example/p?a=1&b=2'"),
        "{service}"
    );
    let o = Command::new("systemd-analyze")
        .arg("verify")
        .args(&paths)
        .output()
        .expect("systemd-analyze (Debian package systemd) is needed for this test");
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stderr).trim().is_empty(), "{}", text(&o.stderr));
    // The check is real: a broken calendar spec fails it.
    std::fs::write(&paths[1], timer.replace("23:59:00", "24:61:00")).unwrap();
    let o = Command::new("systemd-analyze")
        .arg("verify")
        .args(&paths)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        !f.state_dir.join("nightly-backup").exists(),
        "the dry run wrote files"
    );
}

#[test]
fn the_job_scripts_are_shellcheck_clean() {
    let src = repo_root().join("xtask/src/backup");
    let out = Command::new("shellcheck")
        .arg(src.join("nightly.sh"))
        .arg(src.join("schedule.sh"))
        .output()
        .expect("shellcheck (Debian package shellcheck)");
    assert!(out.status.success(), "{}", text(&out.stdout));
}
