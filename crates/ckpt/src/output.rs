//! The one place that writes to standard output and standard error. Nothing here panics,
//! whatever the descriptors are (closed, a pipe whose reader left, a full disk), and every
//! line is made printable first: text read from files (tensor names, metadata, file names,
//! error messages quoting them, the library's warnings) can neither move the cursor, clear
//! the screen nor fake a line of output.
//!
//! What a failed write does to the exit status ([`status`]):
//!
//! - The command's verdict always stands when it is a failure (1 for a file that does not
//!   verify or a difference, 2 for an error, 3 for an interrupted run): a failed write never
//!   turns a failure into 0.
//! - Standard output whose reader went away (`EPIPE`: `ckpt ls DIR | head -1`) ends the
//!   output quietly and the command keeps its verdict, as ripgrep does: the reader had what
//!   it wanted. The command still runs to its end, so that `verify` and `diff` return the
//!   verdict on everything they were given.
//! - Any other failed write to standard output (closed when `ckpt` started, `EBADF`, `ENOSPC`,
//!   `EIO`) turns a success into 2 with one line on standard error, as coreutils does: the
//!   output the user asked for was lost, so the command did not do what it says.
//! - A failed write to standard error never changes the exit status: there is nowhere left
//!   to say anything, and the status already carries the verdict.

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

/// Nothing failed.
const FINE: u8 = 0;
/// The reader went away (`EPIPE`).
const READER_GONE: u8 = 1;
/// Any other failure.
const FAILED: u8 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stream {
    Out = 0,
    Err = 1,
}

/// What became of each stream: [`FINE`], [`READER_GONE`] or [`FAILED`]. Once not fine,
/// nothing more is written to it.
static STATE: [AtomicU8; 2] = [AtomicU8::new(FINE), AtomicU8::new(FINE)];
/// Why standard output failed, for the line [`status`] prints.
static WHY: Mutex<Option<String>> = Mutex::new(None);

/// Whether descriptors 1 and 2 were closed when the process started, recorded before Rust's
/// runtime opens `/dev/null` in their place (after which writes to them succeed and go
/// nowhere, so a closed standard output could not be told from one that works).
#[cfg(target_os = "linux")]
mod at_start {
    use std::sync::atomic::{AtomicBool, Ordering};

    pub(super) static CLOSED: [AtomicBool; 3] = [
        AtomicBool::new(false),
        AtomicBool::new(false),
        AtomicBool::new(false),
    ];

    extern "C" fn record() {
        for (fd, closed) in CLOSED.iter().enumerate() {
            // SAFETY: F_GETFD only reads the descriptor's flags; an invalid descriptor
            // returns -1 (EBADF) and changes nothing.
            if unsafe { libc::fcntl(fd as libc::c_int, libc::F_GETFD) } == -1 {
                closed.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Run by the dynamic loader with the program's other initialisers, before `main` and
    /// so before the runtime's check of the standard descriptors.
    #[used]
    #[link_section = ".init_array"]
    static RECORD: extern "C" fn() = record;
}

fn closed_at_start(stream: Stream) -> bool {
    #[cfg(target_os = "linux")]
    {
        at_start::CLOSED[stream as usize + 1].load(Ordering::Relaxed)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = stream;
        false
    }
}

fn write(stream: Stream, bytes: &[u8]) {
    let state = &STATE[stream as usize];
    if state.load(Ordering::Relaxed) != FINE {
        return;
    }
    let result = if closed_at_start(stream) {
        Err(std::io::Error::from_raw_os_error(libc::EBADF))
    } else {
        match stream {
            Stream::Out => {
                let mut out = std::io::stdout().lock();
                out.write_all(bytes).and_then(|()| out.flush())
            }
            Stream::Err => {
                let mut err = std::io::stderr().lock();
                err.write_all(bytes).and_then(|()| err.flush())
            }
        }
    };
    let Err(e) = result else { return };
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        state.store(READER_GONE, Ordering::Relaxed);
        return;
    }
    state.store(FAILED, Ordering::Relaxed);
    if stream == Stream::Out {
        let why = if closed_at_start(stream) {
            "it was closed when ckpt started".to_owned()
        } else {
            e.to_string()
        };
        if let Ok(mut slot) = WHY.lock() {
            slot.get_or_insert(why);
        }
    }
}

/// One line of output on standard output, made printable.
pub(crate) fn line(text: &str) {
    let mut bytes = crate::printable(text).into_owned().into_bytes();
    bytes.push(b'\n');
    write(Stream::Out, &bytes);
}

/// One JSON document on one line of standard output. Control characters serde_json leaves
/// as they are (DEL and the C1 controls) and the others [`crate::printable`] escapes are
/// written as JSON escapes (`\u009b`): they can only be inside strings, so the document
/// means the same and stays valid JSON.
pub(crate) fn json(value: &serde_json::Value) {
    let text = value.to_string();
    let mut out = String::with_capacity(text.len() + 1);
    for c in text.chars() {
        if crate::needs_escape(c) {
            use std::fmt::Write as _;
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        } else {
            out.push(c);
        }
    }
    out.push('\n');
    write(Stream::Out, out.as_bytes());
}

/// Standard output for the library's messages (Keras's "saving model to …" lines): each
/// message, written at once, is printed with its leading and trailing line breaks as they
/// are and everything between made printable, so that a template's control characters
/// reach the terminal escaped like every other text ckpt prints.
#[cfg_attr(not(feature = "train"), allow(dead_code))]
pub(crate) struct Messages;

impl Write for Messages {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let body = text.trim_start_matches('\n');
        let lead = text.len() - body.len();
        let (body, trail) = match body.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (body, ""),
        };
        let line = format!("{}{}{trail}", &text[..lead], crate::printable(body));
        write(Stream::Out, line.as_bytes());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Text of ckpt's own (help, version) on standard output, as it is.
pub(crate) fn text(text: &str) {
    write(Stream::Out, text.as_bytes());
}

/// One line on standard error: `prefix` (ckpt's own text) and `message`, made printable and
/// shortened to `max` characters.
pub(crate) fn diagnostic(prefix: &str, message: &str, max: usize) {
    let line = format!(
        "{prefix}{}\n",
        crate::shorten(&crate::printable(message), max)
    );
    write(Stream::Err, line.as_bytes());
}

/// The exit status for a command whose verdict is `verdict`, given what became of its
/// output (see the module's documentation).
pub(crate) fn status(verdict: u8) -> u8 {
    if verdict != crate::OK || STATE[Stream::Out as usize].load(Ordering::Relaxed) != FAILED {
        return verdict;
    }
    let why = WHY
        .lock()
        .ok()
        .and_then(|slot| slot.clone())
        .unwrap_or_else(|| "unknown error".to_owned());
    diagnostic(
        "ckpt: error: ",
        &format!("cannot write to standard output: {why}"),
        crate::MAX_MESSAGE,
    );
    crate::ERROR
}
