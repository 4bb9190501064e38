//! SIGTERM and SIGINT as requests to save and stop: the handler only sets a flag, which the
//! next hook reads. A second SIGINT while the first is being handled ends the process at
//! once, as a second Ctrl-C should.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use crate::Error;

struct Flags {
    term: Arc<AtomicBool>,
    int: Arc<AtomicBool>,
}

static FLAGS: OnceLock<Flags> = OnceLock::new();

fn flags() -> &'static Flags {
    FLAGS.get_or_init(|| Flags {
        term: Arc::new(AtomicBool::new(false)),
        int: Arc::new(AtomicBool::new(false)),
    })
}

/// Installs the handlers (once per process).
#[cfg(unix)]
pub(crate) fn install() -> Result<(), Error> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    static INSTALLED: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut installed = INSTALLED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if *installed {
        return Ok(());
    }
    let flags = flags();
    let fail = Error::Signals;
    // Registered first, so that it sees the flag before the second registration sets it.
    signal_hook::flag::register_conditional_shutdown(SIGINT, 130, Arc::clone(&flags.int))
        .map_err(fail)?;
    signal_hook::flag::register(SIGINT, Arc::clone(&flags.int)).map_err(fail)?;
    signal_hook::flag::register(SIGTERM, Arc::clone(&flags.term)).map_err(fail)?;
    *installed = true;
    Ok(())
}

/// Signals are a Unix notion; elsewhere nothing is installed.
#[cfg(not(unix))]
pub(crate) fn install() -> Result<(), Error> {
    Ok(())
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

/// Installs this crate's handlers of SIGTERM and SIGINT (once per process), which
/// [`crate::ModelCheckpoint::save_on_interrupt`] does at `on_train_begin` unless
/// [`crate::ModelCheckpoint::signals_from_host`]: for a host that delivers the signals
/// itself on some threads and not on others.
///
/// # Errors
///
/// [`Error::Signals`] when a handler cannot be installed.
pub fn install_signal_handlers() -> Result<(), Error> {
    install()
}

/// Forgets the signals received and not yet acted on (by a hook of a callback with
/// `save_on_interrupt`), returning the first: for a host that learns a signal came too late
/// for any hook, and delivers it itself.
pub fn take_interrupt_request() -> Option<&'static str> {
    take()
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
