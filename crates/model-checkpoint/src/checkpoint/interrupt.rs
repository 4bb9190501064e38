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

/// Installs the handlers (once per process).
#[cfg(unix)]
pub(crate) fn install() -> Result<(), Error> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    if FLAGS.get().is_some() {
        return Ok(());
    }
    let flags = Flags {
        term: Arc::new(AtomicBool::new(false)),
        int: Arc::new(AtomicBool::new(false)),
    };
    let fail = Error::Signals;
    // Registered first, so that it sees the flag before the second registration sets it.
    signal_hook::flag::register_conditional_shutdown(SIGINT, 130, Arc::clone(&flags.int))
        .map_err(fail)?;
    signal_hook::flag::register(SIGINT, Arc::clone(&flags.int)).map_err(fail)?;
    signal_hook::flag::register(SIGTERM, Arc::clone(&flags.term)).map_err(fail)?;
    let _ = FLAGS.set(flags);
    Ok(())
}

/// Signals are a Unix notion; elsewhere nothing is installed.
#[cfg(not(unix))]
pub(crate) fn install() -> Result<(), Error> {
    Ok(())
}

/// The signal received since the last call, if any (and clears it).
pub(crate) fn take() -> Option<&'static str> {
    let flags = FLAGS.get()?;
    if flags.term.swap(false, Ordering::SeqCst) {
        return Some("SIGTERM");
    }
    if flags.int.swap(false, Ordering::SeqCst) {
        return Some("SIGINT");
    }
    None
}
