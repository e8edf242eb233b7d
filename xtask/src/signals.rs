//! The process's one signal handler: Ctrl-C, and with ctrlc's `termination` feature SIGTERM (a
//! cancelled CI job) and SIGHUP, which it cannot tell apart.
//!
//! ctrlc takes one handler per process and refuses a second (`Error::MultipleHandlers`). A command
//! that runs another in the same process (`deploy --rollback-on-failure` runs a rollback, which
//! runs a restore) therefore cannot install its own: here the handler is installed once, sets one
//! flag ([`interrupted`]) and then calls what the command registered for the phase it is in now
//! ([`on_signal`]: the innermost registration still alive): the deploy's words while it runs its
//! steps, the restore's (phase note, replay stopped, its session ended) while a restore runs,
//! inside a rollback inside a deploy too, the drill's, the e2e's cleanup. A handler that cannot be
//! installed is an error: without it a signal kills xtask with its lock held and nothing cleaned
//! up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::{Error, Result};

/// What a phase does on a signal; `again`: the flag was already set (an earlier signal).
type Behaviour = Arc<dyn Fn(bool) + Send + Sync>;

/// What an interrupt says of its cause: the handler runs alike on SIGINT, SIGTERM and SIGHUP.
pub(crate) const INTERRUPTED_BY: &str = "interrupted (Ctrl-C, SIGTERM or SIGHUP)";

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static CURRENT: Mutex<Stack> = Mutex::new(Stack::new());
static INSTALLED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
/// The command this process runs (`backup drill`), for what a signal says when nothing is
/// registered.
static COMMAND: OnceLock<String> = OnceLock::new();

/// Name the command this process runs (the CLI does, once, before it runs it).
pub(crate) fn set_command(name: String) {
    let _ = COMMAND.set(name);
}

/// Whether a signal came (since the process started: the flag is never cleared).
pub(crate) fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// The check between a command's steps: when a signal came, exit 1 saying [`INTERRUPTED_BY`]
/// then `then`, what the phase says of where it stopped (`" before the swap: ..."`).
pub(crate) fn check(then: &str) -> Result<()> {
    if interrupted() {
        Err(Error::failed(format!("{INTERRUPTED_BY}{then}")))
    } else {
        Ok(())
    }
}

/// What this phase does on a signal, for as long as the returned guard lives (the flag is set
/// before it runs). Registrations nest: the innermost alive one runs, and when its guard drops the
/// one around it is current again. Installs the handler on the first call; the error (exit 1)
/// when it cannot be installed, having registered nothing.
pub(crate) fn on_signal(f: impl Fn(bool) + Send + Sync + 'static) -> Result<OnSignal> {
    let guard = OnSignal {
        id: lock().push(Arc::new(f)),
    };
    // Registered first: a signal right after the installation finds this phase's behaviour.
    install()?;
    Ok(guard)
}

/// A registration of [`on_signal`]; dropping it unregisters it.
#[must_use = "the registration ends when this guard is dropped"]
pub(crate) struct OnSignal {
    id: u64,
}

impl OnSignal {
    /// Keep the registration until the process exits.
    pub(crate) fn forever(self) {
        std::mem::forget(self);
    }
}

impl Drop for OnSignal {
    fn drop(&mut self) {
        lock().remove(self.id);
    }
}

fn lock() -> std::sync::MutexGuard<'static, Stack> {
    CURRENT.lock().unwrap_or_else(|e| e.into_inner())
}

fn install() -> Result<()> {
    INSTALLED
        .get_or_init(|| ctrlc::set_handler(handle).map_err(|e| e.to_string()))
        .clone()
        .map_err(|e| {
            Error::failed(format!(
                "cannot install the handler for Ctrl-C, SIGTERM and SIGHUP ({e}): refusing to \
                 start, since a signal would then kill xtask without releasing its lock or \
                 cleaning up; nothing was changed"
            ))
        })
}

/// The handler (ctrlc runs it on a thread of its own, one signal after the other).
fn handle() {
    let again = INTERRUPTED.swap(true, Ordering::SeqCst);
    // Not under the lock: a behaviour may take a while (restore's ends a session) and a phase
    // may register or unregister meanwhile.
    let current = lock().top();
    match current {
        Some(f) => f(again),
        None => eprintln!("{}", unregistered_note(COMMAND.get().map(String::as_str))),
    }
}

/// What a signal says while no phase is registered. The handler is installed by the first
/// registration, so that is only after one ended: the command's steps are over (restore, rollback
/// and the drill unregister as they return, the deploy once its steps ended), and what they
/// changed stays changed; the flag stops anything it would start next (a rollback after a failed
/// deploy checks it before its restore). So it says which command, and that nothing is stopped or
/// undone: not "nothing was changed", which is not known here. The exit code stays the command's
/// (as restore's after its swap): its report already says how its steps ended.
fn unregistered_note(command: Option<&str>) -> String {
    let which = command.map_or_else(
        || "the command".to_string(),
        |c| format!("`cargo xtask {c}`"),
    );
    format!(
        "{INTERRUPTED_BY}: {which} had no step running that a signal stops (its steps had ended): \
         nothing is stopped or undone, it starts nothing more and ends as its report says"
    )
}

/// The registrations alive, innermost last.
struct Stack {
    next: u64,
    entries: Vec<(u64, Behaviour)>,
}

impl Stack {
    const fn new() -> Self {
        Stack {
            next: 0,
            entries: Vec::new(),
        }
    }

    fn push(&mut self, f: Behaviour) -> u64 {
        let id = self.next;
        self.next += 1;
        self.entries.push((id, f));
        id
    }

    /// Remove one registration wherever it is (guards may drop out of order).
    fn remove(&mut self, id: u64) {
        self.entries.retain(|(i, _)| *i != id);
    }

    fn top(&self) -> Option<Behaviour> {
        self.entries.last().map(|(_, f)| f.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn counter(n: &Arc<AtomicUsize>, add: usize) -> Behaviour {
        let n = n.clone();
        Arc::new(move |_| {
            n.fetch_add(add, Ordering::SeqCst);
        })
    }

    /// The innermost registration alive runs; unregistering one (in any order) makes the one
    /// around it current again.
    #[test]
    fn the_innermost_registration_alive_is_the_current_phase() {
        let n = Arc::new(AtomicUsize::new(0));
        let mut s = Stack::new();
        assert!(s.top().is_none());
        let deploy = s.push(counter(&n, 1));
        let rollback = s.push(counter(&n, 10));
        let restore = s.push(counter(&n, 100));
        s.top().unwrap()(false);
        assert_eq!(n.load(Ordering::SeqCst), 100);
        s.remove(restore);
        s.top().unwrap()(false);
        assert_eq!(n.load(Ordering::SeqCst), 110);
        // Out of order: the deploy's goes first, the rollback's is still current.
        s.remove(deploy);
        s.top().unwrap()(false);
        assert_eq!(n.load(Ordering::SeqCst), 120);
        s.remove(rollback);
        assert!(s.top().is_none());
    }

    /// With nothing registered, a signal names the command and says nothing is stopped or
    /// undone (it does not claim nothing was changed: the command's steps had ended).
    #[test]
    fn a_signal_with_nothing_registered_names_the_command() {
        let n = unregistered_note(Some("backup drill"));
        assert!(n.starts_with(INTERRUPTED_BY), "{n}");
        assert!(
            n.contains("`cargo xtask backup drill` had no step running"),
            "{n}"
        );
        assert!(n.contains("nothing is stopped or undone"), "{n}");
        assert!(!n.contains("nothing was changed"), "{n}");
        assert!(unregistered_note(None).contains("the command had no step running"));
    }

    /// Registering installs the handler once; every later registration (a rollback's inside a
    /// deploy's) succeeds too, where a second `ctrlc::set_handler` is refused.
    #[test]
    fn the_handler_is_installed_once_and_registrations_after_it_succeed() {
        let a = on_signal(|_| {}).expect("installed");
        let b = on_signal(|_| {}).expect("a second registration");
        assert!(matches!(INSTALLED.get(), Some(Ok(()))));
        assert!(matches!(
            ctrlc::set_handler(|| {}),
            Err(ctrlc::Error::MultipleHandlers)
        ));
        drop(b);
        drop(a);
    }
}
