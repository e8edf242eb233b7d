//! A SIGKILLed xtask leaves no child running (issue 12 item 9: a deploy killed during migrate left
//! its `psql` migrating). This file is its own test harness (`harness = false`): run plainly it is the
//! test; run with `XTASK_ORPHAN_PIDFILE` set it is the "xtask" being killed, which runs a long child
//! through `process::Cmd`, as the migrate step does, from its main thread or from a worker thread.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use xtask::process::Cmd;

const PIDFILE: &str = "XTASK_ORPHAN_PIDFILE";
const THREAD: &str = "XTASK_ORPHAN_FROM_THREAD";
const GROUP: &str = "XTASK_ORPHAN_OWN_GROUP";

fn main() {
    if let Ok(pidfile) = std::env::var(PIDFILE) {
        return holder(pidfile);
    }
    for (from_thread, own_group) in [(false, false), (true, false), (false, true)] {
        the_child_dies_with_its_sigkilled_parent(from_thread, own_group);
        println!(
            "test child_dies_with_sigkilled_parent (from_thread={from_thread}, own_group={own_group}) ... ok"
        );
    }
}

/// The process that gets SIGKILLed: a child that records its pid and sleeps for a minute.
fn holder(pidfile: String) {
    let own_group = std::env::var_os(GROUP).is_some();
    let run = move || {
        let c = Cmd::new("sh")
            .args(["-c", r#"echo $$ > "$1"; exec sleep 60"#, "sh", &pidfile])
            .timeout(Duration::from_secs(120));
        if own_group { c.own_process_group() } else { c }.status()
    };
    let r = if std::env::var_os(THREAD).is_some() {
        std::thread::spawn(run).join().unwrap()
    } else {
        run()
    };
    eprintln!("the child ended on its own: {r:?}");
    std::process::exit(1);
}

/// `Some(state)` from /proc/PID/stat ("S", "R", "Z"...), `None` when there is no such process.
fn state(pid: &str) -> Option<String> {
    stat_field(pid, 0)
}

/// The process group of `pid` (the 5th field of /proc/PID/stat).
fn pgrp(pid: &str) -> Option<String> {
    stat_field(pid, 2)
}

/// Field `i` after the command name of /proc/PID/stat (0: state, 1: ppid, 2: pgrp).
fn stat_field(pid: &str, i: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(i).map(str::to_string)
}

fn the_child_dies_with_its_sigkilled_parent(from_thread: bool, own_group: bool) {
    let d = tempfile::tempdir().unwrap();
    let pidfile = d.path().join("child.pid");
    let mut holder = Command::new(std::env::current_exe().unwrap());
    holder.env(PIDFILE, &pidfile).stdin(Stdio::null());
    if from_thread {
        holder.env(THREAD, "1");
    }
    if own_group {
        holder.env(GROUP, "1");
    }
    let mut holder = holder.spawn().unwrap();
    let pid = wait_for_pid(&pidfile);
    // With `own_process_group` the child leads a group of its own (Ctrl-C at the terminal does
    // not reach it); without, it shares the holder's (which shares ours).
    let holder_group = pgrp(&holder.id().to_string()).unwrap();
    let child_group = pgrp(&pid).unwrap();
    if own_group {
        assert_eq!(child_group, pid, "the child should lead its own group");
    } else {
        assert_eq!(child_group, holder_group);
    }
    assert!(
        matches!(state(&pid).as_deref(), Some("S" | "R")),
        "child {pid} should be running: {:?}",
        state(&pid)
    );
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(cmdline.starts_with(b"sleep\0"), "{cmdline:?}");

    holder.kill().unwrap(); // SIGKILL: no handler, no cleanup of ours runs
    holder.wait().unwrap();

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match state(&pid).as_deref() {
            None | Some("Z" | "X") => break, // gone, or dead and waiting for init to reap it
            s if Instant::now() > deadline => {
                let _ = Command::new("kill").args(["-9", &pid]).status();
                panic!("child {pid} outlived its SIGKILLed parent (state {s:?})");
            }
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn wait_for_pid(pidfile: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(s) = std::fs::read_to_string(pidfile) {
            if s.ends_with('\n') {
                return s.trim().to_string();
            }
        }
        assert!(
            Instant::now() < deadline,
            "the holder never started its child"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
