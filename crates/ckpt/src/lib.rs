//! `ckpt`: train with Keras-style checkpoints, and inspect and verify checkpoint files.
//!
//! The command line is this library's [`main`], so that the binary (`src/main.rs`) and the
//! Python package's console script (`model-checkpoint-python`) are one program. Training
//! (`ckpt train`, and the benchmarks that train) needs a tensor framework: candle behind the
//! `train` feature (on by default), burn behind `burn` (off by default); a build without
//! one names what it lacks and exits 2.

/// One line on standard output, through [`output::line`]: made printable (control
/// characters from names read out of files escaped, so that no file can move the cursor,
/// clear the screen or fake a line of output), and never a panic, whatever became of
/// standard output (see [`output`] for what a failed write does to the exit status).
macro_rules! out {
    () => {
        $crate::output::line("")
    };
    ($($arg:tt)*) => {
        $crate::output::line(&format!($($arg)*))
    };
}

mod bench;
mod diff;
mod du;
mod export;
mod folder;
#[cfg(feature = "train")]
mod framework;
mod inspect;
mod location;
mod output;
mod report;
mod sharded;
#[cfg(feature = "train")]
mod train;
#[cfg(not(feature = "train"))]
mod train {
    //! `ckpt train` in a build without the frameworks: its arguments taken as they come,
    //! and refused by name.

    /// Train on the bundled digits (not in this build: see `ckpt train --help` of the full
    /// `ckpt`).
    #[derive(clap::Args, Debug)]
    pub(crate) struct TrainArgs {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        _rest: Vec<std::ffi::OsString>,
    }

    pub(crate) fn run(_: TrainArgs) -> Result<(), crate::Failure> {
        Err(crate::without_training("ckpt train").into())
    }
}

/// The key under which `ckpt train` records its options in a full checkpoint's callback
/// states (read back by `--resume` and by the report).
pub(crate) const RECORD_KEY: &str = "ckpt train";

/// Why a command that trains cannot run in a build without the `train` feature.
#[cfg_attr(feature = "train", allow(dead_code))]
pub(crate) fn without_training(what: &str) -> String {
    format!(
        "{what} trains with candle or burn, which this ckpt is built without (the Python \
         package's ckpt): build the full one with `cargo install --path crates/ckpt --features \
         burn` from the repository, or train from Python with model_checkpoint.keras"
    )
}

use clap::{Parser, Subcommand};

/// The longest message in an error line, in characters (the line stays under 600 with its
/// prefix and the note of what was left out).
const MAX_MESSAGE: usize = 540;

/// Exit status: success.
const OK: u8 = 0;
/// Exit status: `verify` found a damaged or unreadable checkpoint.
const VERIFY_FAILED: u8 = 1;
/// Exit status: bad usage, bad input, or an I/O error.
const ERROR: u8 = 2;
/// Exit status: `train` was interrupted by SIGTERM/SIGINT and saved a resumable checkpoint.
#[cfg_attr(not(feature = "train"), allow(dead_code))]
const INTERRUPTED: u8 = 3;

/// Train with Keras-style checkpoints, and inspect and verify checkpoint files.
#[derive(Parser, Debug)]
#[command(
    name = "ckpt",
    version,
    about,
    after_help = "Exit status: 0 success; 1 a checkpoint did not verify (verify, whose files not found count so, or show's check of the tensors), or diff found differences; 2 bad usage, bad input or an I/O error; 3 train was interrupted by SIGTERM/SIGINT after saving a resumable checkpoint. A failed write never turns a failure into 0: with standard output's reader gone (a closed pipe) the status is the command's verdict; any other failed write to standard output turns a success into 2."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    #[command(visible_alias = "t")]
    Train(Box<train::TrainArgs>),
    Show(inspect::ShowArgs),
    Verify(inspect::VerifyArgs),
    Ls(folder::LsArgs),
    Best(folder::BestArgs),
    Unlock(folder::UnlockArgs),
    Consolidate(sharded::ConsolidateArgs),
    Export(export::ExportArgs),
    Diff(diff::DiffArgs),
    Du(du::DuArgs),
    Report(report::ReportArgs),
    Bench(bench::BenchArgs),
    /// One rank of `ckpt bench --only sharded` (run by the benchmark).
    #[command(hide = true)]
    BenchRank(bench::RankArgs),
}

/// Prints warnings from the library (Keras's `WARNING:tensorflow:` lines) on stderr, one
/// line each, made printable and bounded like error lines: a warning quotes names read from
/// files.
struct StderrLog;

/// The longest warning message, in characters.
const MAX_WARNING: usize = 2000;

impl log::Log for StderrLog {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Warn
    }
    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            print_warning(&record.args().to_string());
        }
    }
    fn flush(&self) {}
}

/// Whether [`printable`] writes `c` as an escape: control characters but tab, the
/// characters that reorder text or break lines without being controls (bidirectional
/// overrides and isolates, the Unicode line and paragraph separators), and the two
/// non-characters XML forbids.
pub(crate) fn needs_escape(c: char) -> bool {
    (c.is_control() && c != '\t')
        || matches!(
            c,
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}' | '\u{fffe}' | '\u{ffff}'
        )
}

/// `text` with every character [`needs_escape`] names escaped (`\n`, `\u{1b}` …); tabs
/// kept. The one spelling of untrusted text on the terminal, in the report's page and in
/// its SVG (where XML 1.0 forbids these control characters even as references).
pub(crate) fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if needs_escape(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

pub(crate) use model_checkpoint::text::shorten;

/// An error for the user: one line, and the exit status.
pub(crate) struct Failure {
    message: String,
    code: u8,
    /// A finding (a file that does not verify, tensors that differ) rather than an error.
    finding: bool,
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure {
            message: e.to_string(),
            code: ERROR,
            finding: false,
        }
    }
}

impl Failure {
    #[cfg_attr(not(feature = "train"), allow(dead_code))]
    pub(crate) fn interrupted() -> Self {
        Failure {
            message: String::new(),
            code: INTERRUPTED,
            finding: true,
        }
    }

    pub(crate) fn verify(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            code: VERIFY_FAILED,
            finding: true,
        }
    }
}

/// Runs `ckpt` with these arguments (the first is the program's name) and returns its exit
/// status. Warnings go to standard error through the `log` crate: this installs a logger
/// that prints them unless the process has one already (which then receives them; see
/// [`print_warning`]).
pub fn main<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let _ = log::set_logger(&StderrLog).map(|()| log::set_max_level(log::LevelFilter::Warn));
    output::status(run(args))
}

/// Prints a warning on standard error as `ckpt` prints the library's: one line, made
/// printable and bounded. For a process whose logger is not `ckpt`'s (the Python package's).
pub fn print_warning(message: &str) {
    output::diagnostic("WARNING: ", message, MAX_WARNING);
}

/// Runs the command line; returns the command's verdict as an exit status.
fn run<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                output::text(&e.render().to_string());
                return OK;
            }
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                output::diagnostic(
                    "ckpt: ",
                    "a command is missing (ckpt --help lists them)",
                    MAX_MESSAGE,
                );
                return ERROR;
            }
            // clap's text is several paragraphs (what is wrong, usage, tips); the first says
            // what is wrong, sometimes over several lines (the missing arguments, one per
            // line): joined into one.
            let text = e.to_string();
            let first: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.is_empty())
                .collect();
            let first = if first.is_empty() {
                "invalid arguments".to_owned()
            } else {
                first.join(" ")
            };
            output::diagnostic("ckpt: ", &first, MAX_MESSAGE);
            return ERROR;
        }
    };
    let result = match cli.command {
        Command::Train(args) => train::run(*args),
        Command::Show(args) => inspect::show(args),
        Command::Verify(args) => inspect::verify(args),
        Command::Ls(args) => folder::ls(args),
        Command::Best(args) => folder::best(args),
        Command::Unlock(args) => folder::unlock(args),
        Command::Consolidate(args) => sharded::consolidate(args),
        Command::Export(args) => export::export(args),
        Command::Diff(args) => diff::diff(args),
        Command::Du(args) => du::du(args),
        Command::Report(args) => report::run(args),
        Command::Bench(args) => bench::run(args),
        Command::BenchRank(args) => bench::rank(args),
    };
    match result {
        Ok(()) => OK,
        Err(failure) => {
            if failure.message.is_empty() {
                // The command has said what happened.
            } else if failure.finding {
                output::diagnostic("ckpt: ", &failure.message, MAX_MESSAGE);
            } else {
                output::diagnostic("ckpt: error: ", &failure.message, MAX_MESSAGE);
            }
            failure.code
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::{Cli, Command};

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn command_lines_parse_or_fail_as_documented() {
        let ok = [
            "ckpt train",
            "ckpt t --epochs 3 --save-freq 10 --mode max --async",
            "ckpt train --save-freq epoch --resume latest --keep-best 2 --save-last",
            "ckpt verify a.safetensors b/",
            "ckpt ls ck --json",
            "ckpt best ck --monitor val_loss --mode min",
            "ckpt diff a b --changed-only",
            "ckpt bench --only save-vs-raw --runs 3",
        ];
        for line in ok {
            assert!(Cli::try_parse_from(line.split(' ')).is_ok(), "{line}");
        }
        let bad = [
            "ckpt train --save-freq banana",
            "ckpt train --mode maxx",
            "ckpt train --epochs 0",
            "ckpt train --progress 3",
            "ckpt verify",
            "ckpt best",
            "ckpt bench --only nothing",
        ];
        for line in bad {
            assert!(Cli::try_parse_from(line.split(' ')).is_err(), "{line}");
        }
        match Cli::try_parse_from(["ckpt", "train", "--resume", "latest"]).map(|c| c.command) {
            Ok(Command::Train(_)) => {}
            other => panic!("{other:?}"),
        }
    }
}
