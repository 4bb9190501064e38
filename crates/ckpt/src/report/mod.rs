//! `ckpt report`: a checkpoint folder's training history as a picture, with every
//! checkpoint the run saved on it (kept or deleted, best, latest, verified or damaged) and a
//! table of the files, as one self-contained HTML page, or as one SVG picture.

mod data;
mod html;
mod svg;

use std::path::PathBuf;

use clap::Args;
use model_checkpoint::Mode;

use crate::Failure;

/// Draw a checkpoint folder's training history with every checkpoint on it.
///
/// One self-contained HTML page (no network, no external scripts or fonts): a chart per
/// metric family (loss and val_loss, accuracy and val_accuracy, …) over epochs from the
/// folder's history.csv, with a marker for every checkpoint saved (from the run's journal,
/// which ckpt train keeps: kept, deleted by retention, replaced, damaged; the best and the
/// latest marked), a table of the files whose rows link to their points (every file there
/// is verified), and the run's options. Local folders and s3:// prefixes.
///
/// Examples:
///   ckpt report checkpoints
///   ckpt report checkpoints -o run.html
///   ckpt report s3://bucket/run --svg run.svg
#[derive(Args, Debug)]
pub(crate) struct ReportArgs {
    /// The checkpoint folder (a path, or s3://bucket/prefix).
    dir: PathBuf,
    /// Where to write the page.
    #[arg(short, long, default_value = "report.html")]
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
    let (path, bytes) = match &args.svg {
        Some(path) => (path, svg::render(&report)?.into_bytes()),
        None => (&args.output, html::render(&report).into_bytes()),
    };
    let target = crate::location::Location::of(path)?;
    refuse_to_replace_other_files(&target, path)?;
    model_checkpoint::store::write_whole(&*target.storage, &target.name, &bytes)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let kept = report
        .checkpoints
        .iter()
        .filter(|c| c.status == data::Status::Kept)
        .count();
    out!(
        "wrote {}: {} metric(s) over {} epoch(s), {} checkpoint(s) saved ({kept} there and verified)",
        path.display(),
        report.metrics.len(),
        report.metrics.iter().map(|(_, s)| s.len()).max().unwrap_or(0),
        report.checkpoints.len()
    );
    Ok(())
}

/// An existing file at the output is replaced only if it is what `ckpt report` writes
/// there (a page, or an SVG picture): `-o` pointed at a checkpoint or at the history by
/// mistake must not destroy it.
fn refuse_to_replace_other_files(
    target: &crate::location::Location,
    path: &std::path::Path,
) -> Result<(), Failure> {
    let reader = match target.storage.open(&target.name) {
        Ok(reader) => reader,
        Err(model_checkpoint::Error::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            return Ok(())
        }
        Err(e) => return Err(e.into()),
    };
    // Both kinds begin with a fixed opening: the page's `<!doctype html>`, plotters' `<svg `.
    const OPENINGS: [&[u8]; 2] = [b"<!doctype html>", b"<svg "];
    let mut start = [0; 15];
    let n = reader.len().min(start.len() as u64) as usize;
    let ours = reader.read_exact_at(&mut start[..n], 0).is_ok()
        && OPENINGS.iter().any(|o| start[..n].starts_with(o));
    if ours {
        Ok(())
    } else {
        Err(format!(
            "{} exists and is not a report: refusing to overwrite it",
            path.display()
        )
        .into())
    }
}
