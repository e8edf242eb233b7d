//! Cleanup that runs however the e2e ends: on return, on error, on panic (Drop) and on Ctrl-C
//! (registered with the process's one signal handler, [`crate::signals`]: it cleans up and exits
//! 130). Idempotent: the first run wins.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::images;
use super::stack::Stack;
use crate::process::Cmd;

#[derive(Default)]
struct State {
    /// Every project/file set we brought up, in order.
    stacks: Vec<Stack>,
    /// Volumes created outside `compose up` (the old layout's, the carried one).
    volumes: Vec<String>,
    /// Images to remove (only with `--remove-images`).
    images: Vec<String>,
    /// Temporary directories (the old-layout copy) kept alive until the stacks are down.
    dirs: Vec<tempfile::TempDir>,
    keep: bool,
    done: bool,
}

/// The cleanup guard of one e2e run.
pub struct Cleanup {
    state: Arc<Mutex<State>>,
}

/// Whether Ctrl-C was pressed (the handler then owns the exit code: 130).
pub fn interrupted() -> bool {
    crate::signals::interrupted()
}

static ACTIVE: OnceLock<Mutex<Option<Arc<Mutex<State>>>>> = OnceLock::new();

fn active() -> &'static Mutex<Option<Arc<Mutex<State>>>> {
    ACTIVE.get_or_init(|| Mutex::new(None))
}

impl Cleanup {
    /// A guard; installs the Ctrl-C handler once per process.
    pub fn new(keep: bool, remove_images: bool) -> Cleanup {
        let state = Arc::new(Mutex::new(State {
            keep,
            images: if remove_images {
                images::IMAGES.iter().map(|i| i.tag.to_string()).collect()
            } else {
                Vec::new()
            },
            ..State::default()
        }));
        *active().lock().unwrap_or_else(|e| e.into_inner()) = Some(state.clone());
        static HANDLER: OnceLock<()> = OnceLock::new();
        HANDLER.get_or_init(|| {
            // The process's one handler (`crate::signals`), with this behaviour until exit.
            let registered = crate::signals::on_signal(|_again| {
                eprintln!("\ne2e: interrupted, cleaning up");
                let st = active().lock().unwrap_or_else(|e| e.into_inner()).clone();
                if let Some(st) = st {
                    // Exit while still holding the state: the main thread, blocked on it in
                    // `finish`, must not exit first with its own (failed-step) code.
                    let mut st = st.lock().unwrap_or_else(|e| e.into_inner());
                    for p in cleanup(&mut st) {
                        eprintln!("e2e cleanup: {p}");
                    }
                    std::process::exit(130);
                }
                std::process::exit(130);
            });
            match registered {
                Ok(r) => r.forever(),
                // Loud: a Ctrl-C then kills the e2e without its cleanup (Drop still runs on
                // every other way out).
                Err(e) => {
                    crate::gha::warning("e2e: no signal handler", &e.to_string());
                    eprintln!("warning: e2e: {e}");
                }
            }
        });
        Cleanup { state }
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Register a stack before bringing it up.
    pub fn stack(&self, s: &Stack) {
        self.with(|st| {
            if !st.stacks.iter().any(|x| x.args == s.args) {
                st.stacks.push(s.clone());
            }
        });
    }

    pub fn volume(&self, name: &str) {
        self.with(|st| {
            if !st.volumes.iter().any(|v| v == name) {
                st.volumes.push(name.to_string());
            }
        });
    }

    pub fn dir(&self, d: tempfile::TempDir) {
        self.with(|st| st.dirs.push(d));
    }

    /// Clean up now (also what Drop does). Returns the problems, if any.
    pub fn finish(&self) -> Vec<String> {
        run_cleanup(&self.state)
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in run_cleanup(&self.state) {
            eprintln!("e2e cleanup: {p}");
        }
    }
}

fn run_cleanup(state: &Mutex<State>) -> Vec<String> {
    cleanup(&mut state.lock().unwrap_or_else(|e| e.into_inner()))
}

fn cleanup(st: &mut State) -> Vec<String> {
    if st.done {
        return Vec::new();
    }
    st.done = true;
    let mut problems = Vec::new();
    if st.keep {
        println!("==> --keep: left running for debugging; remove with:");
        for s in &st.stacks {
            println!("    {} down -v --remove-orphans", s.cmd().display());
        }
        for v in &st.volumes {
            println!("    docker volume rm {v}");
        }
        // The temporary copies are kept too, or the printed commands would not work.
        for d in std::mem::take(&mut st.dirs) {
            let _ = d.keep();
        }
        return problems;
    }
    println!(
        "==> cleanup: compose down -v, volumes{}",
        if st.images.is_empty() { "" } else { ", images" }
    );
    for s in st.stacks.iter().rev() {
        let out = s
            .cmd()
            .args(["down", "-v", "--remove-orphans", "--timeout", "5"])
            .timeout(Duration::from_secs(120))
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => problems.push(format!(
                "`{} down -v`: {}",
                s.cmd().display(),
                o.stderr_str().trim()
            )),
            Err(e) => problems.push(e.to_string()),
        }
    }
    // Whatever else carries a project's label (a command interrupted half-way, an `up` that
    // raced the `down`): containers first, then networks and volumes.
    let mut projects: Vec<&str> = st.stacks.iter().filter_map(Stack::project).collect();
    projects.dedup();
    for p in projects {
        problems.extend(sweep_until_clean(p));
    }
    for v in &st.volumes {
        match Cmd::new("docker")
            .args(["volume", "rm", "--force", v])
            .timeout(Duration::from_secs(60))
            .output()
        {
            Ok(o) if o.status.success() => {}
            Ok(o) => problems.push(format!("docker volume rm {v}: {}", o.stderr_str().trim())),
            Err(e) => problems.push(e.to_string()),
        }
    }
    for i in &st.images {
        if let Err(e) = images::remove(i) {
            problems.push(e.to_string());
        }
    }
    st.dirs.clear();
    problems
}

/// [`sweep`] until nothing of the project is left, bounded: a Compose client interrupted by Ctrl-C
/// leaves the engine still removing containers, and a network cannot go while one is attached.
fn sweep_until_clean(project: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for attempt in 0..8 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(500 * attempt));
        }
        problems = sweep(project);
        if problems.is_empty() && leftovers(project) == Some(0) {
            return problems;
        }
    }
    if problems.is_empty() {
        problems.push(format!(
            "resources of project {project} are still left after cleanup"
        ));
    }
    problems
}

/// How many containers, networks and volumes still carry the project's label (`None`: cannot ask).
fn leftovers(project: &str) -> Option<usize> {
    let label = format!("label=com.docker.compose.project={project}");
    let mut n = 0;
    for kind in [
        &["ps", "-a", "-q"][..],
        &["network", "ls", "-q"][..],
        &["volume", "ls", "-q"][..],
    ] {
        let out = Cmd::new("docker")
            .args(kind)
            .args(["--filter", &label])
            .timeout(Duration::from_secs(60))
            .read()
            .ok()?;
        n += out.split_whitespace().count();
    }
    Some(n)
}

/// Remove every container, network and volume labelled with the Compose project `project`.
fn sweep(project: &str) -> Vec<String> {
    let label = format!("label=com.docker.compose.project={project}");
    let mut problems = Vec::new();
    for (kind, rm) in [
        (&["ps", "-a", "-q", "--filter"][..], &["rm", "-f", "-v"][..]),
        (
            &["network", "ls", "-q", "--filter"][..],
            &["network", "rm"][..],
        ),
        (
            &["volume", "ls", "-q", "--filter"][..],
            &["volume", "rm", "-f"][..],
        ),
    ] {
        let ids = Cmd::new("docker")
            .args(kind)
            .arg(&label)
            .timeout(Duration::from_secs(60))
            .read();
        let ids: Vec<String> = match ids {
            Ok(t) => t.split_whitespace().map(String::from).collect(),
            Err(e) => {
                problems.push(e.to_string());
                continue;
            }
        };
        if ids.is_empty() {
            continue;
        }
        if let Err(e) = Cmd::new("docker")
            .args(rm)
            .args(&ids)
            .timeout(Duration::from_secs(120))
            .read()
        {
            problems.push(e.to_string());
        }
    }
    problems
}
