//! `CsvLogger`: Keras's `CSVLogger`, one row per epoch with every logged metric, through
//! any [`Storage`] (a local file, or an object on S3).
//!
//! As Keras writes it: the header is `epoch` and the first epoch's log keys sorted; `epoch`
//! is 0-based; values are Python's `str` of each (`0.1` as `0.1`, integers as integers, a
//! missing key as `NA`); rows end in `\r\n` (Python's `csv.excel` dialect); fields holding
//! the separator, a quote or a line break are quoted. With `append`, an existing file is
//! continued (its header kept). Beyond Keras: a run resumed from a full checkpoint (which
//! carries the logger's state) continues the file, and at its first epoch drops the rows of
//! that epoch and later ones that an earlier attempt logged, so the file never holds an
//! epoch twice.

use std::sync::Arc;

use super::{Callback, Context, Control, HookResult};
use crate::store::{LocalFolder, Storage};
use crate::{Error, Logs};

/// The largest history file continued in `append` mode.
const MAX_HISTORY_BYTES: u64 = crate::store::MAX_SIDE_FILE_BYTES;

/// Streams epoch results to a CSV file (Keras's `CSVLogger`).
///
/// ```
/// use model_checkpoint::{Callback, Context, CsvLogger, Logs};
/// # use model_checkpoint::{Checkpointable, Error, HostTensor, NamedTensor};
/// # struct Toy;
/// # impl Checkpointable for Toy {
/// #     fn weights(&self) -> Result<Vec<NamedTensor<'_>>, Error> { Ok(vec![]) }
/// # }
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("history.csv");
/// let mut logger = CsvLogger::new(&path);
/// let toy = Toy;
/// let mut ctx = Context::new(&toy);
/// logger.on_train_begin(&Logs::new(), &mut ctx)?;
/// logger.on_epoch_end(0, &Logs::from([("loss", 0.5), ("val_loss", 0.25)]), &mut ctx)?;
/// assert_eq!(std::fs::read_to_string(&path)?, "epoch,loss,val_loss\r\n0,0.5,0.25\r\n");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct CsvLogger {
    name: crate::store::Name,
    separator: char,
    append: bool,
    storage: Arc<dyn Storage>,
    keys: Option<Vec<String>>,
    content: Vec<u8>,
    /// Data rows in `content` (the header not counted).
    rows: u64,
    /// Whether this run resumed from a checkpoint, and has not logged an epoch yet.
    resumed: bool,
    /// Whether the file is rewritten on a thread of its own.
    background: bool,
    writer: Option<crate::store::SideWriter>,
    /// Lines of `content` known to be on storage (all of them, except in the background).
    written_lines: usize,
    /// In the background: the lines of each rewrite handed over and not yet known written.
    handed: std::collections::VecDeque<usize>,
    /// From a resumed checkpoint: lines the file may lack (from this line on), which a
    /// background write had not finished when the checkpoint was taken.
    carried: Option<(usize, Vec<String>)>,
}

impl std::fmt::Debug for CsvLogger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsvLogger")
            .field("name", &self.name)
            .field("separator", &self.separator)
            .field("append", &self.append)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl CsvLogger {
    /// A logger writing `path` (Keras's `filename`), with Keras's defaults: separator `,`,
    /// no append, the local file system.
    pub fn new(path: impl AsRef<std::path::Path>) -> Self {
        CsvLogger {
            name: crate::store::Name::from(path.as_ref()),
            separator: ',',
            append: false,
            storage: Arc::new(LocalFolder::default()),
            keys: None,
            content: Vec::new(),
            rows: 0,
            resumed: false,
            background: false,
            writer: None,
            written_lines: 0,
            handed: std::collections::VecDeque::new(),
            carried: None,
        }
    }

    /// The field separator (Keras's `separator`). Default: `,`.
    pub fn separator(mut self, separator: char) -> Self {
        self.separator = separator;
        self
    }

    /// Continue an existing file instead of replacing it (Keras's `append`). Default:
    /// `false`.
    pub fn append(mut self, yes: bool) -> Self {
        self.append = yes;
        self
    }

    /// Where the file is written (beyond Keras). Default: the local file system.
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = storage;
        self
    }

    /// Rewrite the file on a thread of its own (beyond Keras), so that the training thread
    /// pays no storage round trip at each epoch: the rewrite is handed over, a failure
    /// surfaces at the next epoch's hook or at `on_train_end`, which waits for the file to
    /// be written. A full checkpoint taken while rows are still on their way carries them
    /// (the logger's state), so that a run killed then and resumed from it still has every
    /// row. Default: `false` (written in the hook, as Keras does).
    pub fn background(mut self, yes: bool) -> Self {
        self.background = yes;
        self
    }

    fn field(&self, text: &str) -> String {
        crate::store::csv_field(text, self.separator)
    }

    fn write_row(&mut self, fields: &[String]) {
        let sep = self.separator.to_string();
        let row: Vec<String> = fields.iter().map(|f| self.field(f)).collect();
        self.content.extend_from_slice(row.join(&sep).as_bytes());
        self.content.extend_from_slice(b"\r\n");
    }

    /// Writes the whole file again (an object store cannot append), replacing it
    /// atomically; in the background, hands the rewrite over.
    fn flush(&mut self) -> Result<(), Error> {
        let lines = lines(&self.content);
        if !self.background {
            crate::store::write_whole(&*self.storage, &self.name, &self.content)?;
            self.written_lines = lines;
            return Ok(());
        }
        let writer = match &mut self.writer {
            Some(writer) => writer,
            None => self
                .writer
                .insert(crate::store::SideWriter::start(self.storage.clone())?),
        };
        let handed = writer.write(&self.name, self.content.clone());
        self.handed.push_back(lines);
        // The rewrites whose results came back are on storage (or were replaced by a later
        // one that is).
        while self.handed.len() > writer.in_flight() {
            if let Some(done) = self.handed.pop_front() {
                self.written_lines = done;
            }
        }
        handed
    }

    /// Waits for the rewrites handed over.
    fn wait(&mut self) -> Result<(), Error> {
        if let Some(writer) = &mut self.writer {
            writer.flush()?;
        }
        if let Some(&last) = self.handed.back() {
            self.written_lines = last;
        }
        self.handed.clear();
        Ok(())
    }

    /// Adds the carried lines the file lacks (see [`CsvLogger::background`]).
    fn restore_carried(&mut self) {
        let Some((from, carried)) = self.carried.take() else {
            return;
        };
        let have = lines(&self.content);
        let Some(skip) = have.checked_sub(from) else {
            // The file lost lines it had before the checkpoint: not this logger's doing,
            // and not for it to guess.
            return;
        };
        for line in carried.iter().skip(skip) {
            self.content.extend_from_slice(line.as_bytes());
        }
    }

    /// The existing file.
    fn existing(&self) -> Result<Vec<u8>, Error> {
        Ok(crate::store::read_small(
            &*self.storage,
            &self.name,
            MAX_HISTORY_BYTES,
            "a history appended to",
        )?
        .unwrap_or_default())
    }

    /// Drops the data rows of epoch `from` and later (the first field of a row is its
    /// epoch, as this logger writes it).
    fn drop_rows_from(&mut self, from: usize) {
        let text = String::from_utf8_lossy(&self.content).into_owned();
        let mut kept = String::with_capacity(text.len());
        let mut rows = 0u64;
        for (i, line) in text.split_inclusive('\n').enumerate() {
            let epoch = line
                .split(self.separator)
                .next()
                .and_then(|f| f.trim().parse::<usize>().ok());
            let keep = i == 0 || epoch.is_none_or(|e| e < from);
            if keep {
                kept.push_str(line);
                rows += u64::from(i > 0);
            }
        }
        self.content = kept.into_bytes();
        self.rows = rows;
    }
}

/// The lines in `content` (a last line without its line break counted too).
fn lines(content: &[u8]) -> usize {
    content.split_inclusive(|b| *b == b'\n').count()
}

/// The carried lines of a checkpoint's state (untrusted): where they start, and each line,
/// which must end its line and hold no other line break; `None` when malformed or beyond
/// the history's size limit.
fn carried_lines(unwritten: &serde_json::Value) -> Option<(usize, Vec<String>)> {
    let from = usize::try_from(unwritten.get("from_line")?.as_u64()?).ok()?;
    let mut total = 0u64;
    let mut lines = Vec::new();
    for line in unwritten.get("lines")?.as_array()? {
        let line = line.as_str()?;
        total = total.saturating_add(line.len() as u64);
        let one_line = line.ends_with('\n') && line.matches('\n').count() == 1;
        if !one_line || total > MAX_HISTORY_BYTES {
            return None;
        }
        lines.push(line.to_owned());
    }
    Some((from, lines))
}

impl Callback for CsvLogger {
    /// Replaces the file with an empty one, or with `append` continues it (cut back to the
    /// rows a resumed checkpoint had logged).
    fn on_train_begin(&mut self, _logs: &Logs, _ctx: &mut Context<'_>) -> HookResult {
        // An earlier fit's rewrites first: the file read below must be the last one.
        self.wait()?;
        self.keys = None;
        self.content = if self.append || self.resumed {
            self.existing()?
        } else {
            Vec::new()
        };
        if self.resumed {
            self.restore_carried();
        }
        self.rows = (lines(&self.content) as u64).saturating_sub(1);
        self.flush()?;
        Ok(Control::Continue)
    }

    fn on_epoch_end(&mut self, epoch: usize, logs: &Logs, _ctx: &mut Context<'_>) -> HookResult {
        if std::mem::take(&mut self.resumed) {
            self.drop_rows_from(epoch);
        }
        let keys = match &self.keys {
            Some(keys) => keys.clone(),
            None => {
                let mut keys: Vec<String> = logs.iter().map(|(k, _)| k.to_owned()).collect();
                keys.sort();
                if self.content.is_empty() {
                    let mut header = vec!["epoch".to_owned()];
                    header.extend(keys.iter().cloned());
                    self.write_row(&header);
                }
                self.keys = Some(keys.clone());
                keys
            }
        };
        let mut row = vec![epoch.to_string()];
        row.extend(keys.iter().map(|k| match logs.get(k) {
            Some(crate::Value::None) => String::new(),
            Some(v) => v.to_string(),
            None => "NA".to_owned(),
        }));
        self.write_row(&row);
        self.rows += 1;
        self.flush()?;
        Ok(Control::Continue)
    }

    /// Waits for the file to be written, when it is written in the background.
    fn on_train_end(&mut self, _logs: &Logs, _ctx: &mut Context<'_>) -> HookResult {
        self.wait()?;
        Ok(Control::Continue)
    }

    fn state_key(&self) -> Option<String> {
        Some(format!("CsvLogger({})", self.name))
    }

    fn state(&self) -> Option<serde_json::Value> {
        let mut state = serde_json::json!({ "rows": self.rows });
        let text = String::from_utf8_lossy(&self.content);
        let unwritten: Vec<&str> = text
            .split_inclusive('\n')
            .skip(self.written_lines)
            .collect();
        if !unwritten.is_empty() {
            state["unwritten"] = serde_json::json!({
                "from_line": self.written_lines,
                "lines": unwritten,
            });
        }
        Some(state)
    }

    /// A resume continues the file, replacing the rows of the epochs it trains again.
    fn restore_state(&mut self, state: &serde_json::Value) -> Result<(), Error> {
        let bad = |reason: &str| Error::BadState {
            key: crate::text::shorten(&format!("CsvLogger({})", self.name), 200),
            reason: reason.to_owned(),
        };
        if !state.get("rows").is_some_and(serde_json::Value::is_u64) {
            return Err(bad("rows is missing or not a count"));
        }
        self.carried = match state.get("unwritten") {
            None => None,
            Some(unwritten) => Some(carried_lines(unwritten).ok_or_else(|| {
                bad("unwritten is not a line number and lines of text within the history's size limit")
            })?),
        };
        self.resumed = true;
        Ok(())
    }
}
