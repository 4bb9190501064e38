//! `ckpt report`: a checkpoint folder's training history as a picture, with every
//! checkpoint the run saved on it (kept or deleted, best, latest, verified or damaged) and a
//! table of the files, as one self-contained HTML page, or as one SVG picture.

mod data;
mod html;
mod svg;

use std::path::{Path, PathBuf};

use clap::Args;
use model_checkpoint::store::{self, gate};
use model_checkpoint::Mode;

use crate::location::{self, Location};
use crate::Failure;

/// Draw a checkpoint folder's training history with every checkpoint on it.
///
/// One self-contained HTML page (no network, no external scripts or fonts): a chart per
/// metric family (loss and val_loss, accuracy and val_accuracy, …) over epochs from the
/// folder's history.csv, with a marker for every checkpoint saved (from the run's journal,
/// which ckpt train keeps: kept, deleted by retention, replaced, damaged), a table of the
/// files whose rows link to their points, and the run's options. The best and latest
/// badges come from the files there now that verify, never from the journal; saves are
/// told apart by run id (saves of runs other than the newest file's are marked). Local
/// folders and s3:// prefixes.
///
/// Bounds: history.csv of at most 1,000,000 rows and 256 metric columns, no row over
/// 1 MiB (the same for the journal). Both are streamed, so memory does not grow with them:
/// a history of more than 2,000 rows is drawn from the lowest and highest value of each
/// metric in each of 1,000 spans of epochs (spikes stay visible), and at most 1,000
/// checkpoints are shown (the newest, the best and the latest; the page says how many
/// were left out). Names and paths are shortened to 200 characters. The page (and the
/// SVG) stays under 16 MiB whatever the input within these bounds.
///
/// The output is never one of the report's inputs (its folder, history, journal or
/// files), and an existing file there is replaced only if it is a page or picture ckpt
/// wrote, unedited (it ends with ckpt's signature): otherwise exit 2, file untouched.
#[derive(Args, Debug)]
#[command(after_help = r#"Examples:
  ckpt report checkpoints
  ckpt report checkpoints -o run.html
  ckpt report s3://bucket/run --svg run.svg"#)]
pub(crate) struct ReportArgs {
    /// The checkpoint folder (a path, or s3://bucket/prefix).
    dir: PathBuf,
    /// Where to write the page.
    #[arg(short, long, default_value = "report.html", conflicts_with = "svg")]
    output: PathBuf,
    /// Write the charts as one SVG picture here instead of the page (for a terminal user).
    #[arg(long)]
    svg: Option<PathBuf>,
    /// The metric the checkpoints are ranked by [default: the one they record].
    #[arg(long)]
    monitor: Option<String>,
    /// Which way the monitor improves: auto, min or max.
    #[arg(long, default_value = "auto", value_parser = parse_mode)]
    mode: Mode,
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    s.parse()
        .map_err(|e: model_checkpoint::Error| e.to_string())
}

pub(crate) fn run(args: ReportArgs) -> Result<(), Failure> {
    let report = data::gather(&args.dir, args.monitor.as_deref(), args.mode)?;
    let path = args.svg.as_ref().unwrap_or(&args.output);
    let target = Location::of(path)?;
    // An output never replaces an input (refused by name), and an existing file is
    // replaced only if it is a page or picture ckpt wrote and nobody edited since (the
    // core's gate checks the signature every page and picture ends with).
    refuse_inputs(&report, &target, path)?;
    gate::check_replace(&*target.storage, &target.name, gate::Claim::Signed)?;
    let mut bytes = match &args.svg {
        Some(_) => svg::render(&report)?.into_bytes(),
        None => html::render(&report).into_bytes(),
    };
    gate::sign(&mut bytes);
    model_checkpoint::store::write_whole(&*target.storage, &target.name, &bytes)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    out!(
        "wrote {}: {} metric(s) over {} epoch(s), {} checkpoint(s) saved ({} there and verified){}",
        path.display(),
        report.metrics.len(),
        report.history_rows,
        report.total_checkpoints,
        report.verified_files,
        if report.runs.len() > 1 {
            format!(", {} runs", report.runs.len())
        } else {
            String::new()
        }
    );
    Ok(())
}

/// Refuses an output that names what the report reads: the folder, its history, its
/// journal, a file it lists, anything inside a sharded checkpoint it reads, or a name the
/// folder reserves (its lock, markers, temporary files). Compared as normalised names with
/// links resolved, so `./run/../run/history.csv` or a link to it is the history too.
fn refuse_inputs(report: &data::Report, target: &Location, path: &Path) -> Result<(), Failure> {
    let out = target.identity();
    let refuse = |what: String| -> Result<(), Failure> {
        Err(format!(
            "refusing to write {}: it is {what}, which this report reads; an output never replaces an input: choose another -o or --svg",
            path.display()
        )
        .into())
    };
    let folder = location::identity(&report.folder);
    if out == folder {
        return refuse(format!("the checkpoint folder {}", report.folder));
    }
    for input in &report.inputs {
        if location::identity(input) == out {
            return refuse(input.clone());
        }
    }
    for dir in &report.sharded {
        if location::within(&out, &location::identity(dir)) {
            return refuse(format!("inside the sharded checkpoint {dir}"));
        }
    }
    let (parent, file) = out.rsplit_once('/').unwrap_or(("", out.as_str()));
    let reserved = file == store::LOCK_FILE
        || file.starts_with(store::MARKER_PREFIX)
        || store::is_temp_file(Path::new(file));
    if reserved && (parent == folder || (parent.is_empty() && folder == ".")) {
        return refuse(format!("a name the folder {} reserves", report.folder));
    }
    Ok(())
}
