//! SIGTERM and SIGINT as requests to save and stop: the handler only sets a flag, which the
//! next hook reads. A second SIGINT while the first is being handled ends the process at
//! once, as a second Ctrl-C should. The handlers act so only while a callback holds the
//! signals (`hold_signals`, from its `on_train_begin` to its `on_train_end` or its drop):
//! otherwise a signal whose disposition was the default when they were installed does what
//! the default does (ends the process), and one the program handled reaches its handler.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use crate::Error;

struct Flags {
    term: Arc<AtomicBool>,
    int: Arc<AtomicBool>,
    /// No callback holds the signals.
    idle: Arc<AtomicBool>,
}

static FLAGS: OnceLock<Flags> = OnceLock::new();

/// How many callbacks hold the signals.
static HOLDERS: Mutex<usize> = Mutex::new(0);

fn flags() -> &'static Flags {
    FLAGS.get_or_init(|| Flags {
        term: Arc::new(AtomicBool::new(false)),
        int: Arc::new(AtomicBool::new(false)),
        idle: Arc::new(AtomicBool::new(true)),
    })
}

/// Installs the handlers (once per process).
#[cfg(unix)]
fn install() -> Result<(), Error> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    static INSTALLED: Mutex<bool> = Mutex::new(false);
    let mut installed = INSTALLED.lock().unwrap_or_else(PoisonError::into_inner);
    if *installed {
        return Ok(());
    }
    let flags = flags();
    let fail = Error::Signals;
    for signal in [SIGINT, SIGTERM] {
        // The handlers below take the signal for good: where nothing but the default
        // handled it, the default's effect is kept for when no callback holds the signals.
        // (A handler of the program's is called by the registry after them, as before.)
        if default_disposition(signal) {
            signal_hook::flag::register_conditional_default(signal, Arc::clone(&flags.idle))
                .map_err(fail)?;
        }
    }
    // Registered first, so that it sees the flag before the second registration sets it.
    signal_hook::flag::register_conditional_shutdown(SIGINT, 130, Arc::clone(&flags.int))
        .map_err(fail)?;
    signal_hook::flag::register(SIGINT, Arc::clone(&flags.int)).map_err(fail)?;
    signal_hook::flag::register(SIGTERM, Arc::clone(&flags.term)).map_err(fail)?;
    *installed = true;
    Ok(())
}

/// Whether `signal`'s disposition is the default one (no handler, not ignored).
#[cfg(unix)]
fn default_disposition(signal: libc::c_int) -> bool {
    // SAFETY: with a null new action, sigaction only reads the current one into `old`, a
    // zeroed value of its own type.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    let read = unsafe { libc::sigaction(signal, std::ptr::null(), &mut old) };
    read == 0 && old.sa_sigaction == libc::SIG_DFL
}

/// Signals are a Unix notion; elsewhere nothing is installed.
#[cfg(not(unix))]
fn install() -> Result<(), Error> {
    Ok(())
}

/// Holds SIGTERM and SIGINT for a callback with `save_on_interrupt`, until
/// [`release_signals`]: installs this crate's handlers (once per process), which from now on
/// turn the signals into requests the next hook acts on, rather than their usual effect.
/// [`crate::ModelCheckpoint`] does it from `on_train_begin` to `on_train_end` unless
/// [`crate::ModelCheckpoint::signals_from_host`]; a host calls it where it cannot deliver the
/// signals itself (Python, outside its main thread).
///
/// # Errors
///
/// [`Error::Signals`] when a handler cannot be installed.
pub fn hold_signals() -> Result<(), Error> {
    install()?;
    let mut holders = HOLDERS.lock().unwrap_or_else(PoisonError::into_inner);
    *holders += 1;
    flags().idle.store(false, Ordering::SeqCst);
    Ok(())
}

/// Ends a [`hold_signals`]. When no callback holds them any more, the signals do again what
/// they did before, and one received that no hook acted on is forgotten (it does not stop the
/// next `fit` at its first hook).
pub fn release_signals() {
    let mut holders = HOLDERS.lock().unwrap_or_else(PoisonError::into_inner);
    *holders = holders.saturating_sub(1);
    if *holders == 0 {
        flags().idle.store(true, Ordering::SeqCst);
        let _ = take_interrupt_request();
    }
}

/// Asks for what a SIGTERM (`sigterm`) or a SIGINT asks for: the next hook of a
/// [`crate::ModelCheckpoint`] with `save_on_interrupt` saves a full checkpoint and stops
/// training. For a host that handles the signals itself, before this crate's handlers can:
/// Python's handler of SIGINT raises `KeyboardInterrupt` at once, and a Python program that
/// sets a handler of its own replaces this crate's; the Python package's handler calls this.
pub fn request_interrupt(sigterm: bool) {
    let flags = flags();
    let flag = if sigterm { &flags.term } else { &flags.int };
    flag.store(true, Ordering::SeqCst);
}

/// Forgets the signals received and not yet acted on (by a hook of a callback with
/// `save_on_interrupt`), returning the first: for a host that learns a signal came too late
/// for any hook, and delivers it itself.
pub fn take_interrupt_request() -> Option<&'static str> {
    let first = take();
    while take().is_some() {}
    first
}

/// The signal received since the last call, if any (and clears it).
pub(crate) fn take() -> Option<&'static str> {
    let flags = flags();
    if flags.term.swap(false, Ordering::SeqCst) {
        return Some("SIGTERM");
    }
    if flags.int.swap(false, Ordering::SeqCst) {
        return Some("SIGINT");
    }
    None
}
