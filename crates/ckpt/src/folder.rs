//! `ckpt ls` and `ckpt best`: checkpoint folders at a glance.

use std::path::{Path, PathBuf};

use clap::Args;
use model_checkpoint::store::{Listed, Meta, Name, Verify};
use model_checkpoint::Mode;
use serde_json::json;

use crate::location::Location;
use crate::Failure;

/// List the checkpoints in a folder: path, kind, epoch, step, monitored value, size, and
/// whether it verifies.
#[derive(Args, Debug)]
#[command(after_help = r#"Examples:
  ckpt ls checkpoints
  ckpt ls --json checkpoints | python3 -m json.tool"#)]
pub(crate) struct LsArgs {
    /// The folder.
    dir: PathBuf,
    /// Print JSON (one array) instead of a table.
    #[arg(long)]
    json: bool,
}

/// Print the path of the best checkpoint in a folder by a logged metric.
///
/// The metric defaults to the one each file was saved monitoring; the direction follows
/// --mode (auto applies Keras's rule to the metric's name). Files that do not verify, and
/// NaN values, never count; ties go to the older (lower epoch and step) file.
#[derive(Args, Debug)]
#[command(after_help = r#"Examples:
  ckpt best checkpoints
  ckpt best checkpoints --monitor val_loss --mode min
  ckpt train --resume "$(ckpt best checkpoints)""#)]
pub(crate) struct BestArgs {
    /// The folder.
    dir: PathBuf,
    /// The metric to rank by.
    #[arg(long)]
    monitor: Option<String>,
    /// min, max, or auto (Keras's rule on the metric's name).
    #[arg(long, default_value = "auto", value_parser = parse_mode)]
    mode: Mode,
    /// Print JSON with the value instead of the bare path.
    #[arg(long)]
    json: bool,
}

/// Break the lock of a checkpoint folder whose trainer died.
///
/// On S3 the lock is an object, `.ckpt.lock`, naming its holder (host, process, start);
/// it stays after a crash, and a new trainer refuses to start until it is broken. A holder
/// on this host whose process still runs is not broken without --force (a process started
/// after the lock was taken, which got the same pid, does not count); one on another host
/// cannot be checked, so break it only once that process is surely gone. A local folder's
/// lock is released by the operating system when its process ends: there is nothing to
/// break.
#[derive(Args, Debug)]
#[command(after_help = r#"Examples:
  ckpt unlock s3://bucket/run-7
  ckpt unlock --force s3://bucket/run-7"#)]
pub(crate) struct UnlockArgs {
    /// The folder (or s3:// prefix).
    dir: PathBuf,
    /// Break it even if its holder is a process running on this host.
    #[arg(long)]
    force: bool,
}

pub(crate) fn unlock(args: UnlockArgs) -> Result<(), Failure> {
    let name = args.dir.to_string_lossy();
    if !model_checkpoint_object_store::is_remote(&name) {
        // What was given must be a folder: a file or a typo is said, not answered as if
        // it were one.
        if !args.dir.is_dir() {
            return Err(format!("{} is not a folder", args.dir.display()).into());
        }
        out!(
            "{}: a local folder's lock is released when its process ends; nothing to break",
            args.dir.display()
        );
        return Ok(());
    }
    let storage = model_checkpoint_object_store::ObjectStorage::from_env(&name)?;
    let broken = if args.force {
        storage.force_break_lock(&name)?
    } else {
        storage.break_lock(&name)?
    };
    match broken {
        Some(holder) => out!("broke the lock of {name}, held by {holder}"),
        None => out!("{name} was not locked"),
    }
    Ok(())
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    s.parse()
        .map_err(|e: model_checkpoint::Error| e.to_string())
}

/// What a listing shows of one file.
pub(crate) struct Entry {
    pub path: Name,
    pub kind: Option<String>,
    pub meta: Meta,
    pub size: u64,
    pub verified: Result<(), String>,
    /// It could not be read (the storage failed: an endpoint's error, a disk's), which says
    /// nothing of the file itself.
    pub unreadable: bool,
}

fn entry(folder: &Location, listed: Listed) -> Entry {
    let Listed { path, size, header } = listed;
    let mut unreadable = false;
    let mut failed = |e: model_checkpoint::Error| {
        unreadable |= e.is_read_failure();
        Err(e.to_string())
    };
    let (kind, meta, verified) = match header {
        Ok(h) => {
            // The header verified; now every tensor.
            let verified = match folder.open_other(&path, Verify::Full) {
                Ok(_) if h.has_checksums => Ok(()),
                Ok(_) => Err("no checksums".to_owned()),
                Err(e) => failed(e),
            };
            (Some(h.kind.to_string()), h.meta, verified)
        }
        Err(e) => (None, Meta::default(), failed(e)),
    };
    Entry {
        path,
        kind,
        meta,
        size,
        verified,
        unreadable,
    }
}

/// The folder's checkpoints in training order (by the epoch and step stored in them, then
/// by name; never by modification time).
pub(crate) fn entries(dir: &Path) -> Result<Vec<Entry>, Failure> {
    let folder = Location::of(dir)?;
    if !folder.is_folder()? {
        return Err(format!("{} is not a folder", dir.display()).into());
    }
    let mut list: Vec<Entry> = folder
        .listed()?
        .into_iter()
        .map(|l| entry(&folder, l))
        .collect();
    // Sharded checkpoints one level down, each one row; a folder of shards without its
    // index is an interrupted save, never a checkpoint.
    for (sub, committed) in crate::sharded::folders_in(&*folder.storage, &folder.name)? {
        let row = if committed {
            let s = crate::sharded::summarize(&*folder.storage, &sub);
            Entry {
                path: sub.clone(),
                kind: Some(s.kind),
                meta: s.meta,
                size: s.bytes,
                verified: s.verified,
                unreadable: s.unreadable,
            }
        } else {
            Entry {
                path: sub.clone(),
                kind: Some("sharded".to_owned()),
                meta: Meta::default(),
                size: 0,
                verified: Err("interrupted save: no index, not a checkpoint".to_owned()),
                unreadable: false,
            }
        };
        list.push(row);
    }
    // Training order, as `Location::listed` orders files: unreadable first, then by the
    // epoch and step inside, then by name.
    list.sort_by(|a, b| {
        let key = |e: &Entry| (e.kind.is_some(), e.meta.position());
        key(a).cmp(&key(b)).then_with(|| a.path.cmp(&b.path))
    });
    Ok(list)
}

fn monitored(e: &Entry, monitor: Option<&str>) -> Option<(String, f64)> {
    let (name, value) = e.meta.value(monitor)?;
    Some((name, value.as_f64()?))
}

/// Whether `e` is `save_last`'s `last.safetensors` (or `last/`) and the save it stands for
/// is in `list` too: the same run, the same place in training, the same logs.
pub(crate) fn is_last_of_another(e: &Entry, list: &[Entry]) -> bool {
    e.path
        .file_name()
        .is_some_and(model_checkpoint::store::is_last_name)
        && list.iter().any(|o| {
            o.path != e.path
                && o.verified.is_ok()
                && o.meta.run_id.is_some()
                && o.meta.run_id == e.meta.run_id
                && o.meta.position() == e.meta.position()
                && o.meta.logs == e.meta.logs
        })
}

/// Which way `metric` improves: `mode` where it is `min` or `max`; for `auto`, the way
/// the callback that saved the files resolved it (`monitor_mode`, from the first file that
/// verifies, monitored `metric` and carries a run id, as a callback's saves do: Keras 3's
/// `auto` maximises `val_auc`, and a run may have asked for `max`), else the metric's name
/// by tf.keras 2's rule.
pub(crate) fn direction(list: &[Entry], metric: &str, mode: Mode) -> model_checkpoint::Direction {
    let recorded = || {
        list.iter()
            .filter(|e| {
                e.verified.is_ok()
                    && e.meta.run_id.is_some()
                    && e.meta.monitor.as_deref() == Some(metric)
            })
            .find_map(|e| e.meta.mode)
    };
    match mode {
        Mode::Auto => recorded().unwrap_or_else(|| mode.direction_for(metric)),
        _ => mode.direction_for(metric),
    }
}

/// The best file that verifies, by one rule, the one retention keeps by
/// (`policy::best_index`): the metric's direction, NaN never ranks, ties go to the older
/// file (earlier in training order). Returns its index, the metric and the value.
pub(crate) fn best_of(
    list: &[Entry],
    monitor: Option<&str>,
    mode: Mode,
) -> Option<(usize, String, f64)> {
    // A save on a signal is a point to resume from, not a model a run chose: never best
    // (it would tie with the save of the same epoch). Nor is `last.safetensors` where the
    // save it stands for is listed too: its name moves on as training does.
    let values: Vec<Option<(String, f64)>> = list
        .iter()
        .map(|e| {
            let interrupt = e
                .path
                .file_name()
                .is_some_and(model_checkpoint::store::is_interrupt_name);
            (e.verified.is_ok() && !interrupt && !is_last_of_another(e, list))
                .then(|| monitored(e, monitor))
                .flatten()
        })
        .collect();
    // Files monitoring different metrics are ranked by the first one's.
    let direction = values
        .iter()
        .flatten()
        .next()
        .map(|(name, _)| direction(list, name, mode))
        .unwrap_or(model_checkpoint::Direction::Minimize);
    let i = model_checkpoint::policy::best_index(
        direction,
        values.iter().map(|m| m.as_ref().map(|(_, v)| *v)),
    )?;
    let (name, value) = values[i].clone()?;
    Some((i, name, value))
}

pub(crate) fn ls(args: LsArgs) -> Result<(), Failure> {
    let list = entries(&args.dir)?;
    let best = best_of(&list, None, Mode::Auto).map(|(i, ..)| i);
    if args.json {
        let rows: Vec<_> = list
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let m = monitored(e, None);
                json!({
                    "path": e.path.as_str(), "kind": e.kind, "epoch": e.meta.epoch, "global_step": e.meta.global_step,
                    "monitor": m.as_ref().map(|(n, _)| n), "value": m.as_ref().map(|(_, v)| v),
                    "bytes": e.size, "verified": e.verified.is_ok(),
                    "problem": e.verified.as_ref().err(), "best": best == Some(i),
                })
            })
            .collect();
        crate::output::json(&serde_json::Value::Array(rows));
        return Ok(());
    }
    let dash = |o: Option<String>| o.unwrap_or_else(|| "-".to_owned());
    let rows: Vec<[String; 7]> = list
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let m = monitored(e, None);
            let mark = if best == Some(i) { " (best)" } else { "" };
            // Cells hold what files say: bounded, so that no column runs away.
            let cell = |text: String| crate::shorten(&text, 120);
            [
                cell(e.path.display().to_string()),
                dash(e.kind.clone()),
                dash(e.meta.epoch.map(|x| x.to_string())),
                dash(e.meta.global_step.map(|x| x.to_string())),
                dash(m.map(|(n, v)| cell(format!("{n}={v:.4}{mark}")))),
                e.size.to_string(),
                match &e.verified {
                    Ok(()) => "ok".to_owned(),
                    Err(why) => format!("NO: {}", crate::shorten(why, 300)),
                },
            ]
        })
        .collect();
    let header = [
        "path",
        "kind",
        "epoch",
        "step",
        "monitored",
        "bytes",
        "verified",
    ];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count()).min(120);
        }
    }
    let line = |cells: &[String]| {
        let parts: Vec<String> = cells
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (c, w))| if i == 6 { c.clone() } else { format!("{c:w$}") })
            .collect();
        parts.join("  ")
    };
    out!("{}", line(&header.map(str::to_owned)));
    for row in &rows {
        out!("{}", line(row));
    }
    Ok(())
}

pub(crate) fn best(args: BestArgs) -> Result<(), Failure> {
    let list = entries(&args.dir)?;
    // A file that could not be read may be the best: no answer rather than a wrong one.
    if let Some(e) = list.iter().find(|e| e.unreadable) {
        let why = e.verified.as_ref().err().map_or("", String::as_str);
        return Err(format!(
            "cannot rank the checkpoints in {}: {why}",
            args.dir.display()
        )
        .into());
    }
    let best = best_of(&list, args.monitor.as_deref(), args.mode);
    let Some((i, name, value)) = best else {
        return Err(no_best(&args, &list).into());
    };
    let e = &list[i];
    if args.json {
        crate::output::json(
            &json!({"path": e.path.as_str(), "monitor": name, "value": value, "epoch": e.meta.epoch, "global_step": e.meta.global_step}),
        );
    } else {
        out!("{}", e.path.display());
    }
    Ok(())
}

/// Why no checkpoint ranks, and what to try: the metrics the verified files do log.
fn no_best(args: &BestArgs, list: &[Entry]) -> String {
    let verified: Vec<&Entry> = list.iter().filter(|e| e.verified.is_ok()).collect();
    let dir = args.dir.display();
    if verified.is_empty() {
        return format!("no checkpoint in {dir} verifies ({} found)", list.len());
    }
    let what = match args.monitor.as_deref() {
        Some(metric) => format!("a value of {metric:?}"),
        None => "a value of the metric it monitored".to_owned(),
    };
    let mut logged: Vec<&str> = verified
        .iter()
        .flat_map(|e| e.meta.logs.iter().map(|(name, _)| name))
        .collect();
    logged.sort_unstable();
    logged.dedup();
    let shown: Vec<&str> = logged.iter().take(20).copied().collect();
    let hint = if shown.is_empty() {
        "they log no metrics".to_owned()
    } else {
        format!(
            "they log {}{}: pass one with --monitor",
            shown.join(", "),
            if logged.len() > shown.len() {
                ", …"
            } else {
                ""
            }
        )
    };
    crate::shorten(
        &format!(
            "none of the {} checkpoint(s) in {dir} that verify logs {what}; {hint}",
            verified.len()
        ),
        1000,
    )
}
