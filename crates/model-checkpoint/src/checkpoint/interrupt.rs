//! SIGTERM and SIGINT as requests to save and stop: the handler only sets a flag, which the
//! next hook reads. A second SIGINT while the first is being handled ends the process at
//! once, as a second Ctrl-C should. The handlers act so only while a callback holds the
//! signals (`hold_signals`, from its `on_train_begin` to its `on_train_end` or its drop):
//! otherwise a signal whose disposition was the default when they were installed does what
//! the default does (ends the process), and one the program handled reaches its handler.
//!
//! Each signal is one request, and every callback acts on it once ([`Seen`]): two
//! callbacks with `save_on_interrupt` in one `fit` both save, whichever hook sees it first.
//! A request that no hook acted on by the time the last callback lets the signals go (one
//! that came after the last hook, or during the final saves) is not forgotten: where the
//! signal's disposition was the default, it then does what the default does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use crate::Error;

struct Flags {
    term: Arc<AtomicBool>,
    int: Arc<AtomicBool>,
    /// No callback holds the signals.
    idle: Arc<AtomicBool>,
    /// The flags set since they were last looked at were set by the host
    /// ([`request_interrupt`]), which has delivered the signal already.
    hosted: AtomicBool,
}

static FLAGS: OnceLock<Flags> = OnceLock::new();

/// How many callbacks hold the signals.
static HOLDERS: Mutex<usize> = Mutex::new(0);

/// The signals received, counted.
struct Requests {
    /// Requests so far (signals received, and `request_interrupt` calls).
    count: u64,
    /// The signal of the latest.
    last: &'static str,
    /// The latest came from the host ([`request_interrupt`]), not from a handler here.
    last_hosted: bool,
    /// Requests up to this one have been acted on by a hook.
    served: u64,
    /// Requests up to this one are forgotten: no hook acts on them any more.
    forgotten: u64,
}

impl Requests {
    /// Requests up to this one are no callback's to act on, whatever it has seen.
    fn done(&self) -> u64 {
        self.served.max(self.forgotten)
    }
}

static REQUESTS: Mutex<Requests> = Mutex::new(Requests {
    count: 0,
    last: "SIGTERM",
    last_hosted: false,
    served: 0,
    forgotten: 0,
});

/// The requests up to which one callback has acted (or that came before it began to look).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Seen(u64);

/// The signals whose disposition was the default when the handlers were installed.
#[cfg(unix)]
static DEFAULT_DISPOSITION: Mutex<Vec<libc::c_int>> = Mutex::new(Vec::new());

/// The requests, with the flags the handlers set since the last look counted in. SIGTERM
/// is counted last when both came, so that it is the one reported (it is what a scheduler
/// sends, and a SIGINT would have ended the process at its second coming anyway).
fn requests() -> std::sync::MutexGuard<'static, Requests> {
    let mut requests = REQUESTS.lock().unwrap_or_else(PoisonError::into_inner);
    let flags = flags();
    let hosted = flags.hosted.swap(false, Ordering::SeqCst);
    for (flag, name) in [(&flags.int, "SIGINT"), (&flags.term, "SIGTERM")] {
        if flag.swap(false, Ordering::SeqCst) {
            requests.count += 1;
            requests.last = name;
            requests.last_hosted = hosted;
        }
    }
    requests
}

fn flags() -> &'static Flags {
    FLAGS.get_or_init(|| Flags {
        term: Arc::new(AtomicBool::new(false)),
        int: Arc::new(AtomicBool::new(false)),
        idle: Arc::new(AtomicBool::new(true)),
        hosted: AtomicBool::new(false),
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
            DEFAULT_DISPOSITION
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(signal);
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
    if *holders == 0 {
        // What came while no callback held the signals did then what it does without
        // them: it is no request of this hold's.
        let _ = take_interrupt_request();
    }
    *holders += 1;
    flags().idle.store(false, Ordering::SeqCst);
    Ok(())
}

/// Ends a [`hold_signals`]. When no callback holds them any more, the signals do again what
/// they did before, and one received that no hook acted on does now what it would have done
/// then: where its disposition was the default, it ends the process; otherwise (the
/// program's handler has had it already) it is forgotten, and does not stop the next `fit`
/// at its first hook.
pub fn release_signals() {
    let mut holders = HOLDERS.lock().unwrap_or_else(PoisonError::into_inner);
    *holders = holders.saturating_sub(1);
    if *holders == 0 {
        flags().idle.store(true, Ordering::SeqCst);
        let unserved = forget_pending();
        drop(holders);
        if let Some((signal, false)) = unserved {
            deliver(signal);
        }
    }
}

/// Raises `signal` again, now that the handlers let it do what its default does, where the
/// default was its disposition.
#[cfg(unix)]
fn deliver(signal: &'static str) {
    let number = if signal == "SIGINT" {
        libc::SIGINT
    } else {
        libc::SIGTERM
    };
    let default = DEFAULT_DISPOSITION
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .contains(&number);
    if default {
        // SAFETY: raising a signal on this thread; with no callback holding the signals,
        // the handler installed for it does what the default does.
        unsafe {
            libc::raise(number);
        }
    }
}

#[cfg(not(unix))]
fn deliver(_signal: &'static str) {}

/// Asks for what a SIGTERM (`sigterm`) or a SIGINT asks for: the next hook of a
/// [`crate::ModelCheckpoint`] with `save_on_interrupt` saves a full checkpoint and stops
/// training. For a host that handles the signals itself, before this crate's handlers can:
/// Python's handler of SIGINT raises `KeyboardInterrupt` at once, and a Python program that
/// sets a handler of its own replaces this crate's; the Python package's handler calls this.
pub fn request_interrupt(sigterm: bool) {
    let flags = flags();
    let flag = if sigterm { &flags.term } else { &flags.int };
    flags.hosted.store(true, Ordering::SeqCst);
    flag.store(true, Ordering::SeqCst);
}

/// Forgets the signals received and not yet acted on (by a hook of a callback with
/// `save_on_interrupt`), returning the latest (SIGTERM where both came at once): for a host
/// that learns a signal came too late for any hook, and delivers it itself.
pub fn take_interrupt_request() -> Option<&'static str> {
    forget_pending().map(|(signal, _)| signal)
}

/// Forgets the requests no hook acted on; returns the latest one's signal, and whether the
/// host sent it ([`request_interrupt`]), if there was one.
fn forget_pending() -> Option<(&'static str, bool)> {
    let mut requests = requests();
    let unserved = requests.count > requests.done();
    requests.forgotten = requests.count;
    unserved.then_some((requests.last, requests.last_hosted))
}

/// Where a callback that begins to look for requests now starts: those that no hook has
/// acted on yet are its too.
pub(crate) fn seen_now() -> Seen {
    Seen(requests().done())
}

/// The signal of the latest request this callback has not acted on, if any (a request is
/// every callback's: each acts on it once). Requests forgotten meanwhile are not.
pub(crate) fn take(seen: &mut Seen) -> Option<&'static str> {
    let mut requests = requests();
    let after = seen.0.max(requests.forgotten);
    seen.0 = requests.count;
    if requests.count > after {
        requests.served = requests.count;
        return Some(requests.last);
    }
    None
}
