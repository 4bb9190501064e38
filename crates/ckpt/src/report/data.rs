//! What a report shows, gathered from a checkpoint folder: the history (`history.csv`, as
//! Keras's `CSVLogger` writes it), every save the run's journal records, the files there
//! now (each verified), and the run's options.

use std::collections::BTreeMap;
use std::path::Path;

use model_checkpoint::store::{self, JOURNAL_FILE, MAX_SIDE_FILE_BYTES};
use model_checkpoint::{Direction, Mode};

use crate::folder::Entry;
use crate::location::Location;
use crate::Failure;

/// The most history rows a report reads (a run of a million epochs is refused by name).
const MAX_ROWS: usize = 1_000_000;
/// The most metric columns a history may have: a chart each, on one page.
const MAX_COLUMNS: usize = 256;
/// The largest magnitude a chart draws. Beyond it a chart's range (with its margins)
/// would overflow to infinity.
const MAX_PLOTTED: f64 = 1e300;

/// One metric over epochs: `(epoch (1-based), value)`, plottable values only.
pub(crate) type Series = Vec<(f64, f64)>;

/// Whether a chart draws `value`: finite, and within ±1e300. Others (Keras writes `nan`)
/// are left out of the curves, as a missing value is.
pub(crate) fn plottable(value: f64) -> bool {
    value.is_finite() && value.abs() <= MAX_PLOTTED
}

/// What became of a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// There, and every checksum verifies.
    Kept,
    /// There, and it does not verify.
    Damaged,
    /// Deleted by the run's retention.
    Deleted,
    /// Deleted, but not by the run (by hand, say): shown as deleted.
    Missing,
    /// Saved again under the same name later: this save's contents are gone.
    Replaced,
}

impl Status {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Kept => "kept",
            Status::Damaged => "damaged",
            Status::Deleted | Status::Missing => "deleted",
            Status::Replaced => "replaced",
        }
    }
}

/// One save.
#[derive(Clone, Debug)]
pub(crate) struct Checkpoint {
    pub path: String,
    /// 1-based, as in file names.
    pub epoch: u64,
    pub batch: Option<u64>,
    pub step: Option<u64>,
    pub value: Option<f64>,
    pub kind: String,
    pub size: Option<u64>,
    pub status: Status,
    /// Why it does not verify.
    pub problem: Option<String>,
    pub best: bool,
    pub latest: bool,
}

/// Everything a report shows.
pub(crate) struct Report {
    pub folder: String,
    /// Metric name → its values, in the history's column order.
    pub metrics: Vec<(String, Series)>,
    pub monitor: Option<String>,
    pub direction: Direction,
    pub checkpoints: Vec<Checkpoint>,
    /// The run's options, as recorded (name, value).
    pub options: Vec<(String, String)>,
    /// Notes on what could not be read (a missing history, no journal).
    pub notes: Vec<String>,
}

/// Reads the report of the checkpoint folder `dir` (local or `s3://`).
pub(crate) fn gather(dir: &Path, monitor: Option<&str>, mode: Mode) -> Result<Report, Failure> {
    let folder = Location::of(dir)?;
    if !folder.is_folder()? {
        return Err(format!("{} is not a folder", dir.display()).into());
    }
    let side = |name: &str| {
        if folder.name.is_empty() || folder.name == "." {
            name.to_owned()
        } else {
            format!("{}/{name}", folder.name.trim_end_matches('/'))
        }
    };
    let mut notes = Vec::new();
    let history = store::read_small(
        &*folder.storage,
        &side(store::HISTORY_FILE),
        MAX_SIDE_FILE_BYTES,
        "a history",
    )?;
    let metrics = match history {
        Some(bytes) => parse_history(&bytes, &side(store::HISTORY_FILE))?,
        None => {
            notes.push(format!(
                "no {} in this folder: no curves",
                store::HISTORY_FILE
            ));
            Vec::new()
        }
    };
    let present = crate::folder::entries(dir)?;
    let journal = store::read_small(
        &*folder.storage,
        &side(JOURNAL_FILE),
        MAX_SIDE_FILE_BYTES,
        "a journal",
    )?;
    let saves = match journal {
        Some(bytes) => parse_journal(&bytes, &side(JOURNAL_FILE))?,
        None => {
            notes.push(
                "no journal in this folder (ModelCheckpoint::journal): only the files there now are shown"
                    .to_owned(),
            );
            Vec::new()
        }
    };
    let monitor = monitor
        .map(str::to_owned)
        .or_else(|| saves.iter().find_map(|s| s.monitor.clone()))
        .or_else(|| present.iter().find_map(|e| e.meta.monitor.clone()));
    let direction = mode.direction_for(monitor.as_deref().unwrap_or("loss"));
    let mut checkpoints = merge(&saves, &present);
    mark_best_and_latest(&mut checkpoints, direction);
    let options = options(&folder, &present);
    Ok(Report {
        folder: folder.name.clone(),
        metrics,
        monitor,
        direction,
        checkpoints,
        options,
        notes,
    })
}

/// The history's columns (`epoch` first, 0-based, as Keras writes it), each as a series
/// over 1-based epochs; values Keras writes as `nan` or text are skipped.
fn parse_history(bytes: &[u8], name: &str) -> Result<Vec<(String, Series)>, Failure> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(bytes);
    let headers = reader
        .headers()
        .map_err(|e| format!("{name}: {e}"))?
        .clone();
    let epoch_col = headers
        .iter()
        .position(|h| h == "epoch")
        .ok_or_else(|| format!("{name}: no epoch column"))?;
    if headers.len() > MAX_COLUMNS + 1 {
        return Err(format!(
            "{name}: {} metric columns, more than a report draws ({MAX_COLUMNS})",
            headers.len() - 1
        )
        .into());
    }
    let mut metrics: Vec<(String, Series)> = headers
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != epoch_col)
        .map(|(_, h)| (h.to_owned(), Vec::new()))
        .collect();
    for (row, record) in reader.records().enumerate() {
        if row >= MAX_ROWS {
            return Err(format!("{name}: more than {MAX_ROWS} rows").into());
        }
        let record = record.map_err(|e| format!("{name}: {e}"))?;
        let text = record.get(epoch_col).unwrap_or("").trim();
        let Ok(epoch) = text.parse::<f64>() else {
            continue;
        };
        if !(0.0..=store::MAX_COUNTER as f64).contains(&epoch) {
            return Err(format!(
                "{name}: row {}: epoch {text} is not from 0 to {}",
                row + 1,
                store::MAX_COUNTER
            )
            .into());
        }
        let mut k = 0;
        for (i, field) in record.iter().enumerate() {
            if i == epoch_col {
                continue;
            }
            if let (Some((_, series)), Ok(v)) = (metrics.get_mut(k), field.trim().parse::<f64>()) {
                if plottable(v) {
                    series.push((epoch + 1.0, v));
                }
            }
            k += 1;
        }
    }
    Ok(metrics)
}

/// One row of the journal.
#[derive(Clone, Debug)]
struct Save {
    seq: u64,
    deleted: bool,
    epoch: u64,
    batch: Option<u64>,
    step: Option<u64>,
    kind: String,
    path: String,
    monitor: Option<String>,
    value: Option<f64>,
}

fn parse_journal(bytes: &[u8], name: &str) -> Result<Vec<Save>, Failure> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(bytes);
    let headers = reader
        .headers()
        .map_err(|e| format!("{name}: {e}"))?
        .clone();
    let col = |c: &str| headers.iter().position(|h| h == c);
    let (Some(seq), Some(event), Some(epoch), Some(path)) =
        (col("seq"), col("event"), col("epoch"), col("path"))
    else {
        return Err(format!(
            "{name}: not a journal (columns {:?})",
            headers.iter().collect::<Vec<_>>()
        )
        .into());
    };
    let (batch, step, kind, monitor, value) = (
        col("batch"),
        col("global_step"),
        col("kind"),
        col("monitor"),
        col("value"),
    );
    let mut saves = Vec::new();
    for (row, record) in reader.records().enumerate() {
        if row >= MAX_ROWS {
            return Err(format!("{name}: more than {MAX_ROWS} rows").into());
        }
        let record = record.map_err(|e| format!("{name}: {e}"))?;
        let get = |i: Option<usize>| {
            i.and_then(|i| record.get(i))
                .map(str::trim)
                .filter(|s| !s.is_empty())
        };
        // Counters as the core bounds them; a number past that is refused by name.
        let number = |i: Option<usize>| -> Result<Option<u64>, Failure> {
            let Some(n) = get(i).and_then(|s| s.parse::<u64>().ok()) else {
                return Ok(None);
            };
            if n > store::MAX_COUNTER {
                let column = i.and_then(|i| headers.get(i)).unwrap_or("?");
                return Err(format!(
                    "{name}: row {}: {column} {n} is more than {}",
                    row + 1,
                    store::MAX_COUNTER
                )
                .into());
            }
            Ok(Some(n))
        };
        let (Some(seq), Some(epoch), Some(path)) =
            (number(Some(seq))?, number(Some(epoch))?, get(Some(path)))
        else {
            continue;
        };
        saves.push(Save {
            seq,
            deleted: get(Some(event)) == Some("deleted"),
            epoch,
            batch: number(batch)?,
            step: number(step)?,
            kind: get(kind).unwrap_or("").to_owned(),
            path: path.to_owned(),
            monitor: get(monitor).map(str::to_owned),
            value: get(value)
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| v.is_finite()),
        });
    }
    Ok(saves)
}

/// Every save of the journal with what became of it, and every file there now that the
/// journal does not record (saved by another run, or without a journal).
fn merge(saves: &[Save], present: &[Entry]) -> Vec<Checkpoint> {
    let by_path: BTreeMap<String, &Entry> = present
        .iter()
        .map(|e| (e.path.to_string_lossy().into_owned(), e))
        .collect();
    // The last save to each path is the one a file there holds.
    let mut last_seq: BTreeMap<&str, u64> = BTreeMap::new();
    for s in saves.iter().filter(|s| !s.deleted) {
        let e = last_seq.entry(&s.path).or_insert(s.seq);
        *e = (*e).max(s.seq);
    }
    let deleted: BTreeMap<(&str, u64), ()> = saves
        .iter()
        .filter(|s| s.deleted)
        .map(|s| ((s.path.as_str(), s.seq), ()))
        .collect();
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for s in saves.iter().filter(|s| !s.deleted) {
        let file = by_path.get(&s.path);
        let (status, problem, size) = if last_seq.get(s.path.as_str()) != Some(&s.seq) {
            (Status::Replaced, None, None)
        } else if deleted.contains_key(&(s.path.as_str(), s.seq)) {
            (Status::Deleted, None, None)
        } else if let Some(e) = file {
            seen.insert(s.path.clone());
            match &e.verified {
                Ok(()) => (Status::Kept, None, Some(e.size)),
                Err(why) => (Status::Damaged, Some(why.clone()), Some(e.size)),
            }
        } else {
            (Status::Missing, None, None)
        };
        out.push(Checkpoint {
            path: s.path.clone(),
            epoch: s.epoch,
            batch: s.batch,
            step: s.step,
            value: s.value,
            kind: s.kind.clone(),
            size,
            status,
            problem,
            best: false,
            latest: false,
        });
    }
    for e in present {
        let path = e.path.to_string_lossy().into_owned();
        if seen.contains(&path) {
            continue;
        }
        let monitor = e.meta.monitor.clone();
        let value = e
            .meta
            .value(monitor.as_deref())
            .and_then(|(_, v)| v.as_f64())
            .filter(|v| v.is_finite());
        out.push(Checkpoint {
            path,
            epoch: e.meta.epoch.unwrap_or(0),
            batch: e.meta.batch,
            step: e.meta.global_step,
            value,
            kind: e.kind.clone().unwrap_or_else(|| "unreadable".to_owned()),
            size: Some(e.size),
            status: if e.verified.is_ok() {
                Status::Kept
            } else {
                Status::Damaged
            },
            problem: e.verified.clone().err(),
            best: false,
            latest: false,
        });
    }
    out.sort_by_key(|c| (c.epoch, c.batch.unwrap_or(u64::MAX)));
    out
}

/// The best save (by the one rule `ckpt best` and retention use: direction, NaN never
/// ranks, ties to the older) among those there and verifying, and the newest one there.
fn mark_best_and_latest(list: &mut [Checkpoint], direction: Direction) {
    let usable = |c: &Checkpoint| c.status == Status::Kept;
    let values = list.iter().map(|c| if usable(c) { c.value } else { None });
    if let Some(i) = model_checkpoint::policy::best_index(direction, values) {
        list[i].best = true;
    }
    if let Some(c) = list.iter_mut().rev().find(|c| usable(c)) {
        c.latest = true;
    }
}

/// The run's options: those `ckpt train` recorded in its newest full checkpoint, else the
/// monitor the files name.
fn options(folder: &Location, present: &[Entry]) -> Vec<(String, String)> {
    let newest_full = present
        .iter()
        .rev()
        .find(|e| e.kind.as_deref() == Some("full") && e.verified.is_ok());
    let mut out = Vec::new();
    if let Some(e) = newest_full {
        if let Ok(file) = folder.open_other(&e.path, model_checkpoint::store::Verify::HeaderOnly) {
            let recorded = file
                .info()
                .get(store::KEY_TRAINING_STATE)
                .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
                .and_then(|v| v.get("callbacks")?.get("ckpt train").cloned());
            if let Some(serde_json::Value::Object(map)) = recorded {
                for (k, v) in map {
                    let text = match v {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    out.push((k, text));
                }
            }
        }
    }
    if out.is_empty() {
        if let Some(m) = present.iter().find_map(|e| e.meta.monitor.clone()) {
            out.push(("monitor".to_owned(), m));
        }
    }
    out
}
