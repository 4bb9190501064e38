//! What a report shows, gathered from a checkpoint folder: the history (`history.csv`, as
//! Keras's `CSVLogger` writes it), every save the run's journal records, the files there
//! now (each verified), and the run's options.
//!
//! The files there now are the truth: the best and latest badges, the values and epochs of
//! the checkpoints that are there, and the run each belongs to come from their headers. The
//! journal only explains history (saves deleted by retention or replaced since); a journal
//! row is taken to describe a file there only if the file's header agrees with it (the same
//! run id, epoch and step).
//!
//! Memory and the page stay bounded for any input within the limits: both CSV files are
//! streamed (the history twice: once to count its rows and epochs, once to draw them), no
//! row may exceed [`MAX_ROW_BYTES`], a long history's curves are drawn from the lowest and
//! highest value of each of [`BUCKETS`] spans of epochs, and at most [`MAX_SHOWN`]
//! checkpoints are shown (the newest, and the best and latest whatever their age).

use std::cell::Cell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Read;
use std::path::Path;
use std::rc::Rc;

use model_checkpoint::store::{self, Name, ObjectReader, Storage, JOURNAL_FILE};
use model_checkpoint::{Direction, Mode};

use crate::folder::Entry;
use crate::location::Location;
use crate::Failure;

/// The most history (or journal) rows a report reads (a run of a million epochs is
/// refused by name).
pub(crate) const MAX_ROWS: u64 = 1_000_000;
/// The most metric columns a history may have: a chart each, on one page.
pub(crate) const MAX_COLUMNS: usize = 256;
/// The longest row of the history or the journal, in bytes.
pub(crate) const MAX_ROW_BYTES: u64 = 1 << 20;
/// A history of more rows than twice this is drawn from the lowest and the highest value
/// of each metric in each of this many equal spans of its epochs: at most twice this many
/// points per curve, at about the chart's resolution, so that spikes stay visible.
pub(crate) const BUCKETS: usize = 1000;
/// The most checkpoints a report shows (table rows and markers): the newest, and the best
/// and the latest whatever their age. How many were left out is said.
pub(crate) const MAX_SHOWN: usize = 1000;
/// The most runs told apart by their ids; saves of runs beyond count as of an unknown run.
const MAX_RUNS: usize = 10_000;
/// The largest magnitude a chart draws. Beyond it a chart's range (with its margins)
/// would overflow to infinity.
const MAX_PLOTTED: f64 = 1e300;
/// How many bytes of each CSV file are read at a time.
const READ_CHUNK: usize = 1 << 20;
/// The most options shown.
const MAX_OPTIONS: usize = 64;

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
    /// Saved over later: this save's contents are gone (the file there now holds another
    /// save).
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
    /// Why it does not verify, or what the file there now is instead.
    pub problem: Option<String>,
    pub best: bool,
    pub latest: bool,
    /// The run that saved it: an index into [`Report::runs`].
    pub run: Option<usize>,
    /// Saved by a run other than the newest file's.
    pub other_run: bool,
}

/// Everything a report shows.
pub(crate) struct Report {
    pub folder: String,
    /// Metric name → its values, in the history's column order.
    pub metrics: Vec<(String, Series)>,
    /// How many history rows have an epoch.
    pub history_rows: u64,
    pub monitor: Option<String>,
    pub direction: Direction,
    /// The checkpoints shown (at most [`MAX_SHOWN`]), by run, then in training order.
    pub checkpoints: Vec<Checkpoint>,
    /// Every save the journal records and every file there it does not.
    pub total_checkpoints: u64,
    /// How many files there verify.
    pub verified_files: usize,
    /// The run ids, in the order they first appear (the journal's, then the files').
    pub runs: Vec<String>,
    /// The run of the newest file there that verifies.
    pub newest_run: Option<usize>,
    /// The run's options, as recorded (name, value).
    pub options: Vec<(String, String)>,
    /// Notes on what could not be read (a missing history, no journal), and on what was
    /// left out.
    pub notes: Vec<String>,
    /// The names the report read (the history, the journal, every file listed), and the
    /// sharded checkpoints' folders: an output may be none of them.
    pub inputs: Vec<String>,
    pub sharded: Vec<String>,
}

/// Reads the report of the checkpoint folder `dir` (local or `s3://`).
pub(crate) fn gather(dir: &Path, monitor: Option<&str>, mode: Mode) -> Result<Report, Failure> {
    let folder = Location::of(dir)?;
    if !folder.is_folder()? {
        return Err(format!("{} is not a folder", dir.display()).into());
    }
    let side = |name: &str| folder.name.join(name);
    let mut notes = Vec::new();
    let history_name = side(store::HISTORY_FILE);
    let history = read_history(&*folder.storage, &history_name)?;
    let (metrics, history_rows) = match history {
        Some(h) => {
            if h.downsampled {
                notes.push(format!(
                    "{} has {} rows: each curve is drawn from the lowest and highest value in each of {BUCKETS} spans of epochs",
                    store::HISTORY_FILE,
                    h.rows
                ));
            }
            (h.metrics, h.rows)
        }
        None => {
            notes.push(format!(
                "no {} in this folder: no curves (a CSV logger writes it there: ckpt train \
                 does, and from Keras, keras.callbacks.CSVLogger(\"<folder>/{}\"))",
                store::HISTORY_FILE,
                store::HISTORY_FILE
            ));
            (Vec::new(), 0)
        }
    };
    let present = crate::folder::entries(dir)?;
    let journal_name = side(JOURNAL_FILE);
    let journal = read_journal(&*folder.storage, &journal_name, &present)?;
    if journal.is_none() {
        notes.push(
            "no journal in this folder (ckpt train writes one; from Python, \
             ModelCheckpoint(..., journal=True); in Rust, ModelCheckpoint::journal): only the \
             files there now are shown"
                .to_owned(),
        );
    }
    let journal = journal.unwrap_or_else(|| Journal::of(&present));

    // The monitor: the one asked for, else the one the newest verified file records.
    let latest = present.iter().rposition(|e| e.verified.is_ok());
    let monitor = monitor
        .map(str::to_owned)
        .or_else(|| latest.and_then(|i| present[i].meta.monitor.clone()))
        .or_else(|| present.iter().rev().find_map(|e| e.meta.monitor.clone()))
        .or_else(|| journal.monitor.clone());
    let direction = crate::folder::direction(&present, monitor.as_deref().unwrap_or("loss"), mode);
    let best = crate::folder::best_of(&present, monitor.as_deref(), mode).map(|(i, ..)| i);

    let mut runs = journal.runs.clone();
    let mut run_index: HashMap<String, usize> = runs
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), i))
        .collect();
    let mut run_of = |id: Option<&str>| -> Option<usize> {
        let id = id.filter(|id| is_run_id(id))?;
        if let Some(&i) = run_index.get(id) {
            return Some(i);
        }
        (runs.len() < MAX_RUNS).then(|| {
            runs.push(id.to_owned());
            run_index.insert(id.to_owned(), runs.len() - 1);
            runs.len() - 1
        })
    };
    let present_runs: Vec<Option<usize>> = present
        .iter()
        .map(|e| run_of(e.meta.run_id.as_deref()))
        .collect();
    let newest_run = latest.and_then(|i| present_runs[i]);

    let mut checkpoints = Vec::new();
    let mut represented = vec![false; present.len()];
    let value_of = |e: &Entry| {
        e.meta
            .value(monitor.as_deref().or(e.meta.monitor.as_deref()))
            .and_then(|(_, v)| v.as_f64())
            .filter(|v| v.is_finite())
    };
    // The file `i` there now, as a row (with the journal's save that wrote it, if known).
    let file_row = |i: usize, save: Option<&Save>| {
        let e = &present[i];
        Checkpoint {
            path: e.path.to_string(),
            epoch: e.meta.epoch.or(save.map(|s| s.epoch)).unwrap_or(0),
            batch: e.meta.batch.or(save.and_then(|s| s.batch)),
            step: e.meta.global_step.or(save.and_then(|s| s.step)),
            value: value_of(e),
            kind: e
                .kind
                .clone()
                .or_else(|| save.map(|s| s.kind.clone()))
                .unwrap_or_else(|| "unreadable".to_owned()),
            size: Some(e.size),
            status: if e.verified.is_ok() {
                Status::Kept
            } else {
                Status::Damaged
            },
            problem: e.verified.clone().err(),
            best: best == Some(i),
            latest: latest == Some(i),
            run: present_runs[i],
            other_run: false,
        }
    };
    for (k, save) in journal.shown.iter().enumerate() {
        let file = save
            .key
            .as_ref()
            .and_then(|key| journal.present_by_key.get(key));
        let later_same_name = || {
            journal
                .shown
                .iter()
                .skip(k + 1)
                .any(|s| s.key.is_some() && s.key == save.key)
        };
        let row = match file {
            Some(&i) if journal.matched[i].as_ref().is_some_and(|m| m.n == save.n) => {
                represented[i] = true;
                file_row(i, Some(save))
            }
            // A file whose header cannot be read: the last save to its name, damaged.
            Some(&i)
                if present[i].kind.is_none()
                    && journal.matched[i].is_none()
                    && journal.last_naming[i] == Some(save.n) =>
            {
                represented[i] = true;
                Checkpoint {
                    run: run_of(Some(&save.run)),
                    ..file_row(i, Some(save))
                }
            }
            // Deleted by retention; the file there now is another save.
            Some(_) if save.deleted => {
                journal_row(save, Status::Deleted, None, run_of(Some(&save.run)))
            }
            Some(&i) => {
                let e = &present[i];
                let why = match &journal.matched[i] {
                    Some(m) if m.n > save.n && m.run != save.run => match run_of(Some(&m.run)) {
                        Some(r) => format!("saved over by a later save of run {}", r + 1),
                        None => "saved over by a later save of another run".to_owned(),
                    },
                    Some(m) if m.n > save.n => "saved over by a later save".to_owned(),
                    Some(_) => "the file there now holds an earlier save".to_owned(),
                    None => format!(
                        "the file there now holds another save (run {}, epoch {})",
                        e.meta.run_id.as_deref().map_or("-".to_owned(), short_id),
                        e.meta
                            .epoch
                            .map_or("-".to_owned(), |epoch| epoch.to_string())
                    ),
                };
                journal_row(save, Status::Replaced, Some(why), run_of(Some(&save.run)))
            }
            None if save.deleted => {
                journal_row(save, Status::Deleted, None, run_of(Some(&save.run)))
            }
            None if later_same_name() => journal_row(
                save,
                Status::Replaced,
                Some("saved over by a later save".to_owned()),
                run_of(Some(&save.run)),
            ),
            None => journal_row(save, Status::Missing, None, run_of(Some(&save.run))),
        };
        checkpoints.push(row);
    }
    // Files there the rows shown do not stand for: their journal row is older than those
    // shown, or there is none (another tool's file, a run without a journal).
    let mut files_without_journal = 0u64;
    for (i, _) in represented.iter().enumerate().filter(|(_, done)| !**done) {
        if crate::folder::is_last_of_another(&present[i], &present) {
            // `last.safetensors`, standing for a save listed already: not a save of its own.
            continue;
        }
        let save = journal.matched[i].as_ref();
        if save.is_none() {
            files_without_journal += 1;
        }
        checkpoints.push(file_row(i, save));
    }
    let total_checkpoints = journal.saved.saturating_add(files_without_journal);

    // By run (in the order the runs appear), then in training order.
    let run_rank = |run: Option<usize>| run.map_or(0, |r| r + 1);
    checkpoints.sort_by_key(|c| {
        (
            run_rank(c.run),
            c.epoch,
            c.step.unwrap_or(0),
            c.batch.unwrap_or(u64::MAX),
        )
    });
    if newest_run.is_some() {
        for c in &mut checkpoints {
            c.other_run = c.run != newest_run;
        }
    }
    // The newest rows, and the best and latest whatever their age.
    if checkpoints.len() > MAX_SHOWN {
        let keep_anyway = checkpoints
            .iter()
            .take(checkpoints.len() - MAX_SHOWN)
            .filter(|c| c.best || c.latest)
            .count();
        let cut = checkpoints.len() - MAX_SHOWN + keep_anyway;
        let mut k = 0;
        checkpoints.retain(|c| {
            k += 1;
            k > cut || c.best || c.latest
        });
    }
    let shown = checkpoints.len() as u64;
    if total_checkpoints > shown {
        notes.push(format!(
            "showing {shown} of {total_checkpoints} checkpoints: the newest, the best and the latest ({} older left out)",
            total_checkpoints - shown
        ));
    }
    if runs.len() > 1 {
        notes.push(format!(
            "this folder holds the saves of {} runs; the newest file is of run {}: saves of other runs are marked (history.csv holds the curves of the run that wrote it last)",
            runs.len(),
            newest_run.map_or("-".to_owned(), |r| (r + 1).to_string())
        ));
    }

    let options = options(&folder, &present);
    let mut inputs = vec![history_name.to_string(), journal_name.to_string()];
    let mut sharded = Vec::new();
    for e in &present {
        let name = e.path.to_string();
        if e.kind.as_deref().is_some_and(|k| k.starts_with("sharded")) {
            sharded.push(name.clone());
        }
        inputs.push(name);
    }
    Ok(Report {
        folder: folder.name.to_string(),
        metrics,
        history_rows,
        monitor,
        direction,
        checkpoints,
        total_checkpoints,
        verified_files: present
            .iter()
            .filter(|e| e.verified.is_ok() && !crate::folder::is_last_of_another(e, &present))
            .count(),
        runs,
        newest_run,
        options,
        notes,
        inputs,
        sharded,
    })
}

/// Whether `id` can be a run id (1 to 64 lowercase hex digits, as the library makes them).
fn is_run_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A run id as a page shows it in passing.
pub(crate) fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}

/// A journal row that no file there stands for.
fn journal_row(
    save: &Save,
    status: Status,
    problem: Option<String>,
    run: Option<usize>,
) -> Checkpoint {
    Checkpoint {
        path: save.path.clone(),
        epoch: save.epoch,
        batch: save.batch,
        step: save.step,
        value: save.value,
        kind: save.kind.clone(),
        size: None,
        status,
        problem,
        best: false,
        latest: false,
        run,
        other_run: false,
    }
}

/// An object of a storage read in chunks, as `std::io::Read`, that refuses to read on once
/// the row being read is longer than [`MAX_ROW_BYTES`]: no row can make the CSV reader's
/// buffers grow without bound. (The CSV reader asks for more only once it has parsed every
/// byte it holds, so what was handed out past the end of the last complete row is the row
/// being read.)
struct Chunks {
    reader: Box<dyn ObjectReader>,
    name: String,
    at: u64,
    /// Where the last complete row ends (set by the loop that reads the rows).
    row_end: Rc<Cell<u64>>,
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.at.saturating_sub(self.row_end.get()) > MAX_ROW_BYTES {
            return Err(std::io::Error::other(too_long(self.row_end.get())));
        }
        let left = self.reader.len().saturating_sub(self.at);
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if n == 0 {
            return Ok(0);
        }
        self.reader
            .read_exact_at(&mut buf[..n], self.at)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", self.name)))?;
        self.at += n as u64;
        Ok(n)
    }
}

/// The refusal of a row that starts at byte `start` and is longer than [`MAX_ROW_BYTES`].
fn too_long(start: u64) -> String {
    format!("a row longer than {MAX_ROW_BYTES} bytes at byte {start}")
}

/// A CSV file of the folder, streamed; `None` when there is none.
struct CsvFile {
    reader: csv::Reader<Chunks>,
    row_end: Rc<Cell<u64>>,
    name: String,
    record: csv::ByteRecord,
    /// Rows read so far.
    rows: u64,
}

impl CsvFile {
    fn open(storage: &dyn Storage, name: &Name) -> Result<Option<CsvFile>, Failure> {
        let reader = match storage.open(name) {
            Ok(reader) => reader,
            Err(model_checkpoint::Error::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e.into()),
        };
        let row_end = Rc::new(Cell::new(0));
        let chunks = Chunks {
            reader,
            name: name.to_string(),
            at: 0,
            row_end: Rc::clone(&row_end),
        };
        let reader = csv::ReaderBuilder::new()
            .flexible(true)
            .has_headers(true)
            .buffer_capacity(READ_CHUNK)
            .from_reader(chunks);
        Ok(Some(CsvFile {
            reader,
            row_end,
            name: name.to_owned().to_string(),
            record: csv::ByteRecord::new(),
            rows: 0,
        }))
    }

    fn error(&self, e: impl std::fmt::Display) -> Failure {
        Failure::from(format!("{}: {e}", self.name))
    }

    /// The header row, each name as text (invalid UTF-8 replaced).
    fn headers(&mut self) -> Result<Vec<String>, Failure> {
        let headers = match self.reader.byte_headers() {
            Ok(h) => h.clone(),
            Err(e) => return Err(self.error(e)),
        };
        self.finish_row()?;
        Ok(headers
            .iter()
            .map(|h| String::from_utf8_lossy(h).into_owned())
            .collect())
    }

    /// Marks the end of the row just read; refuses it if it is too long.
    fn finish_row(&mut self) -> Result<(), Failure> {
        let (start, end) = (self.row_end.get(), self.reader.position().byte());
        if end.saturating_sub(start) > MAX_ROW_BYTES {
            return Err(self.error(too_long(start)));
        }
        self.row_end.set(end);
        Ok(())
    }

    /// Reads the next row into `self.record`; `false` at the end. More than [`MAX_ROWS`]
    /// rows are refused.
    fn next(&mut self) -> Result<bool, Failure> {
        match self.reader.read_byte_record(&mut self.record) {
            Ok(false) => return Ok(false),
            Ok(true) => {}
            Err(e) => return Err(self.error(e)),
        }
        self.finish_row()?;
        if self.rows >= MAX_ROWS {
            return Err(self.error(format!("more than {MAX_ROWS} rows")));
        }
        self.rows += 1;
        Ok(true)
    }
}

/// A field as trimmed text.
fn field(record: &csv::ByteRecord, i: usize) -> Option<&str> {
    record
        .get(i)
        .and_then(|f| std::str::from_utf8(f).ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// The history's curves.
struct History {
    metrics: Vec<(String, Series)>,
    /// Rows with an epoch.
    rows: u64,
    downsampled: bool,
}

/// The history's columns (`epoch` first, 0-based, as Keras writes it), each as a series
/// over 1-based epochs; values Keras writes as `nan` or text are skipped. Up to
/// `2 * BUCKETS` rows are drawn point by point; a longer history by the lowest and highest
/// value of each metric in each of [`BUCKETS`] spans of epochs.
fn read_history(storage: &dyn Storage, name: &Name) -> Result<Option<History>, Failure> {
    // The first pass checks every row and finds the range of epochs.
    let Some(mut file) = CsvFile::open(storage, name)? else {
        return Ok(None);
    };
    let headers = file.headers()?;
    let epoch_col = headers
        .iter()
        .position(|h| h == "epoch")
        .ok_or_else(|| file.error("no epoch column"))?;
    if headers.len() > MAX_COLUMNS + 1 {
        return Err(file.error(format!(
            "{} metric columns, more than a report draws ({MAX_COLUMNS})",
            headers.len() - 1
        )));
    }
    let epoch_of = |file: &CsvFile, record: &csv::ByteRecord| -> Result<Option<f64>, Failure> {
        let Some(text) = field(record, epoch_col) else {
            return Ok(None);
        };
        let Ok(epoch) = text.parse::<f64>() else {
            return Ok(None);
        };
        if !(0.0..=store::MAX_COUNTER as f64).contains(&epoch) {
            return Err(file.error(format!(
                "row {}: epoch {} is not from 0 to {}",
                file.rows,
                crate::shorten(text, 40),
                store::MAX_COUNTER
            )));
        }
        Ok(Some(epoch))
    };
    let (mut rows, mut lo, mut hi) = (0u64, f64::MAX, f64::MIN);
    while file.next()? {
        if let Some(epoch) = epoch_of(&file, &file.record)? {
            rows += 1;
            lo = lo.min(epoch);
            hi = hi.max(epoch);
        }
    }
    let names: Vec<String> = headers
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != epoch_col)
        .map(|(_, h)| h.clone())
        .collect();
    let downsampled = rows > 2 * BUCKETS as u64;
    // The second pass draws.
    let Some(mut file) = CsvFile::open(storage, name)? else {
        return Err(Failure::from(format!(
            "{name}: it was deleted while being read"
        )));
    };
    file.headers()?;
    let mut exact: Vec<Series> = vec![Vec::new(); if downsampled { 0 } else { names.len() }];
    let mut buckets: Vec<Vec<Bucket>> =
        vec![vec![Bucket::EMPTY; BUCKETS]; if downsampled { names.len() } else { 0 }];
    let mut drawn = 0u64;
    while file.next()? {
        let record = &file.record;
        let Some(epoch) = epoch_of(&file, record)? else {
            continue;
        };
        // Rewritten between the passes: what was counted no longer holds.
        drawn += 1;
        if drawn > rows {
            return Err(file.error("it changed while being read"));
        }
        let x = epoch + 1.0;
        let b = if hi > lo {
            (((epoch - lo) / (hi - lo)) * BUCKETS as f64) as usize
        } else {
            0
        }
        .min(BUCKETS - 1);
        let values = record
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != epoch_col)
            .map(|(_, f)| f);
        for (k, f) in values.enumerate().take(names.len()) {
            let Some(v) = std::str::from_utf8(f)
                .ok()
                .and_then(|t| t.trim().parse::<f64>().ok())
                .filter(|v| plottable(*v))
            else {
                continue;
            };
            if downsampled {
                buckets[k][b].add(x, v);
            } else {
                exact[k].push((x, v));
            }
        }
    }
    let series: Vec<Series> = if downsampled {
        buckets
            .into_iter()
            .map(|bs| bs.iter().flat_map(Bucket::points).collect())
            .collect()
    } else {
        exact
    };
    Ok(Some(History {
        metrics: names.into_iter().zip(series).collect(),
        rows,
        downsampled,
    }))
}

/// The lowest and the highest value of a metric in one span of epochs.
#[derive(Clone, Copy)]
struct Bucket {
    low: (f64, f64),
    high: (f64, f64),
}

impl Bucket {
    const EMPTY: Bucket = Bucket {
        low: (f64::NAN, f64::INFINITY),
        high: (f64::NAN, f64::NEG_INFINITY),
    };

    fn add(&mut self, x: f64, y: f64) {
        if y < self.low.1 {
            self.low = (x, y);
        }
        if y > self.high.1 {
            self.high = (x, y);
        }
    }

    /// Its points in epoch order: none, one, or the lowest and the highest.
    fn points(&self) -> impl Iterator<Item = (f64, f64)> {
        let (a, b) = if self.low.0 <= self.high.0 {
            (self.low, self.high)
        } else {
            (self.high, self.low)
        };
        let empty = self.low.0.is_nan();
        let first = (!empty).then_some(a);
        let second = (!empty && a != b).then_some(b);
        first.into_iter().chain(second)
    }
}

/// One `saved` row of the journal.
#[derive(Clone, Debug)]
struct Save {
    /// Its place among the journal's saved rows.
    n: u64,
    seq: u64,
    epoch: u64,
    batch: Option<u64>,
    step: Option<u64>,
    kind: String,
    /// As the journal spells it (shortened when too long to be a path).
    path: String,
    /// Its last component, by which it names a file there (`None` when too long to).
    key: Option<String>,
    value: Option<f64>,
    /// The run's id ("" when not a run id).
    run: String,
    /// A later `deleted` row names this save.
    deleted: bool,
}

/// What the report takes from the journal: the newest saves, and for each file there the
/// save that wrote it.
#[derive(Default)]
struct Journal {
    /// The newest [`MAX_SHOWN`] saved rows, oldest first.
    shown: VecDeque<Save>,
    /// How many saved rows it has.
    saved: u64,
    /// Run ids in the order they first appear.
    runs: Vec<String>,
    /// The monitor of the newest row that names one.
    monitor: Option<String>,
    /// The last component of each file there → its index.
    present_by_key: HashMap<String, usize>,
    /// For each file there, the last saved row its header agrees with.
    matched: Vec<Option<Save>>,
    /// For each file there, the last saved row naming it.
    last_naming: Vec<Option<u64>>,
}

impl Journal {
    /// An empty journal of the files `present`.
    fn of(present: &[Entry]) -> Journal {
        Journal {
            present_by_key: present
                .iter()
                .enumerate()
                .filter_map(|(i, e)| Some((key_of(e.path.as_str())?, i)))
                .collect(),
            matched: vec![None; present.len()],
            last_naming: vec![None; present.len()],
            ..Journal::default()
        }
    }
}

/// The last component of a name: how a journal row and a file there are matched (the
/// journal lies in the folder it describes, and names the files as the run spelled them).
fn key_of(path: &str) -> Option<String> {
    let key = path.trim_end_matches('/').rsplit('/').next()?;
    (!key.is_empty() && key.len() <= 255).then(|| key.to_owned())
}

/// Whether file `e`'s header agrees with journal row `s`: the same run id (when the row
/// names one), epoch and step.
fn agrees(e: &Entry, s: &Save) -> bool {
    if e.kind.is_none() {
        return false;
    }
    let run_agrees = s.run.is_empty() || e.meta.run_id.as_deref() == Some(s.run.as_str());
    let epoch_agrees = e.meta.epoch == Some(s.epoch);
    let step_agrees = match (e.meta.global_step, s.step) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    };
    run_agrees && epoch_agrees && step_agrees
}

/// The journal `name` read against the files there now; `None` when there is none.
fn read_journal(
    storage: &dyn Storage,
    name: &Name,
    present: &[Entry],
) -> Result<Option<Journal>, Failure> {
    let Some(mut file) = CsvFile::open(storage, name)? else {
        return Ok(None);
    };
    let headers = file.headers()?;
    let col = |c: &str| headers.iter().position(|h| h == c);
    let (Some(seq), Some(event), Some(epoch), Some(path)) =
        (col("seq"), col("event"), col("epoch"), col("path"))
    else {
        let shown: Vec<String> = headers
            .iter()
            .take(16)
            .map(|h| crate::shorten(h, 40))
            .collect();
        return Err(file.error(format!("not a journal (columns {shown:?})")));
    };
    let (batch, step, kind, monitor, value, run_id) = (
        col("batch"),
        col("global_step"),
        col("kind"),
        col("monitor"),
        col("value"),
        col("run_id"),
    );
    let mut journal = Journal::of(present);
    // (run, seq, key) → n of the shown save, for the `deleted` rows that follow.
    let mut shown_by_id: HashMap<(String, u64, String), u64> = HashMap::new();
    let mut run_seen: HashSet<String> = HashSet::new();
    while file.next()? {
        let record = &file.record;
        let row = file.rows;
        // Counters as the core bounds them; a number past that is refused by name.
        let number = |i: Option<usize>| -> Result<Option<u64>, Failure> {
            let Some(n) = i
                .and_then(|i| field(record, i))
                .and_then(|s| s.parse::<u64>().ok())
            else {
                return Ok(None);
            };
            if n > store::MAX_COUNTER {
                let column = i.and_then(|i| headers.get(i)).map_or("?", String::as_str);
                return Err(file.error(format!(
                    "row {row}: {column} {n} is more than {}",
                    store::MAX_COUNTER
                )));
            }
            Ok(Some(n))
        };
        let (Some(seq), Some(epoch)) = (number(Some(seq))?, number(Some(epoch))?) else {
            continue;
        };
        let Some(raw_path) = record.get(path).map(String::from_utf8_lossy) else {
            continue;
        };
        let raw_path = raw_path.trim();
        if raw_path.is_empty() {
            continue;
        }
        let key = key_of(raw_path);
        let run = run_id
            .and_then(|i| field(record, i))
            .filter(|id| is_run_id(id))
            .unwrap_or("")
            .to_owned();
        if field(record, event) == Some("deleted") {
            if let Some(key) = key {
                if let Some(&n) = shown_by_id.get(&(run, seq, key)) {
                    let first = journal.shown.front().map_or(0, |s| s.n);
                    let at = n.checked_sub(first).and_then(|k| usize::try_from(k).ok());
                    if let Some(s) = at.and_then(|k| journal.shown.get_mut(k)) {
                        s.deleted = true;
                    }
                }
            }
            continue;
        }
        if !run.is_empty() && journal.runs.len() < MAX_RUNS && run_seen.insert(run.clone()) {
            journal.runs.push(run.clone());
        }
        if let Some(m) = monitor.and_then(|i| field(record, i)) {
            journal.monitor = Some(crate::shorten(m, 200));
        }
        let save = Save {
            n: journal.saved,
            seq,
            epoch,
            batch: number(batch)?,
            step: number(step)?,
            kind: crate::shorten(kind.and_then(|i| field(record, i)).unwrap_or(""), 40),
            path: crate::shorten(raw_path, 1000),
            key,
            value: value
                .and_then(|i| field(record, i))
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| v.is_finite()),
            run,
            deleted: false,
        };
        journal.saved += 1;
        if let Some(&i) = save
            .key
            .as_ref()
            .and_then(|k| journal.present_by_key.get(k))
        {
            journal.last_naming[i] = Some(save.n);
            if agrees(&present[i], &save) {
                journal.matched[i] = Some(save.clone());
            }
        }
        if journal.shown.len() == MAX_SHOWN {
            if let Some(old) = journal.shown.pop_front() {
                if let Some(key) = old.key {
                    let id = (old.run, old.seq, key);
                    if shown_by_id.get(&id) == Some(&old.n) {
                        shown_by_id.remove(&id);
                    }
                }
            }
        }
        if let Some(key) = &save.key {
            shown_by_id.insert((save.run.clone(), save.seq, key.clone()), save.n);
        }
        journal.shown.push_back(save);
    }
    Ok(Some(journal))
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
                .training_state()
                .ok()
                .flatten()
                .and_then(|state| state.callbacks.get(crate::RECORD_KEY).cloned());
            if let Some(serde_json::Value::Object(map)) = recorded {
                for (k, v) in map.into_iter().take(MAX_OPTIONS) {
                    let text = match v {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    out.push((crate::shorten(&k, 100), crate::shorten(&text, 400)));
                }
            }
        }
    }
    if out.is_empty() {
        if let Some(m) = present.iter().find_map(|e| e.meta.monitor.clone()) {
            out.push(("monitor".to_owned(), crate::shorten(&m, 200)));
        }
    }
    out
}
