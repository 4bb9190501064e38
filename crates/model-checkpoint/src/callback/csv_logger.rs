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
    /// From a resumed checkpoint: lines the file may lack, which a background write had
    /// not finished when the checkpoint was taken.
    carried: Vec<String>,
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
            carried: Vec::new(),
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
    /// pays no storage round trip at each epoch: the rewrite is handed over, and a failure
    /// surfaces at a later epoch's hook (stopping `fit`, as a failed write in the hook would)
    /// or at `on_train_end`, which waits for the file to be written. A full checkpoint
    /// taken while rows are still on their way carries them (the logger's state), so that a
    /// run killed then and resumed from it still has every row; a killed run that is not
    /// resumed (or resumed from a weights-only checkpoint) may lack its last rows, as a
    /// Keras `CSVLogger` killed before its buffer is flushed does. Default: `false` (written
    /// in the hook, as Keras does).
    pub fn background(mut self, yes: bool) -> Self {
        self.background = yes;
        self
    }

    /// Refuses a file at the logger's name that is not a history, or a link, which training
    /// would replace. A history's first line begins with the field `epoch` (quoted or not,
    /// after a byte-order mark or not), then its end or a separator, as this logger and
    /// Keras's `CSVLogger` write it whatever their separator. For a caller that picks the
    /// name itself, as `ckpt train` does beside its checkpoints: a name the user gives is
    /// the user's to overwrite, as Keras overwrites it.
    ///
    /// ```
    /// use model_checkpoint::CsvLogger;
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("history.csv");
    /// std::fs::write(&path, "my,own,notes\n")?;
    /// assert!(CsvLogger::new(&path).check_replaceable().is_err());
    /// std::fs::write(&path, "epoch;loss\r\n0;0.5\r\n")?;
    /// CsvLogger::new(&path).check_replaceable()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::NotOurs`] naming the file; the storage's errors.
    pub fn check_replaceable(&self) -> Result<(), Error> {
        let check = |bytes: &[u8]| -> Result<(), String> {
            let first = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
            let field = first.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(first);
            let field = field.strip_prefix(b"\"").unwrap_or(field);
            let rest = field
                .strip_prefix(b"epoch")
                .map(|r| r.strip_prefix(b"\"").unwrap_or(r));
            match rest {
                _ if bytes.is_empty() => Ok(()),
                // The field ends: the line does, or a separator (never a letter, digit or
                // `_`, which would make another name such as `epochs`).
                Some(rest)
                    if !rest
                        .first()
                        .is_some_and(|&b| b.is_ascii_alphanumeric() || b == b'_') =>
                {
                    Ok(())
                }
                _ => Err(format!(
                    "its first line does not begin with the field `epoch` ({:?})",
                    crate::text::shorten(&String::from_utf8_lossy(first), 60)
                )),
            }
        };
        crate::store::gate::check_replace(
            &*self.storage,
            &self.name,
            crate::store::gate::Claim::Document {
                what: "a history",
                limit: MAX_HISTORY_BYTES,
                check: &check,
            },
        )
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
        if let Err(e) = writer.write(&self.name, self.content.clone()) {
            // Which content reached the file is unknown now: none is taken as written.
            self.forget_written();
            return Err(e);
        }
        self.handed.push_back(lines);
        // The oldest rewrites handed over are done once fewer are in flight: on storage (or
        // replaced by a later one that is).
        while self.handed.len() > writer.in_flight() {
            if let Some(done) = self.handed.pop_front() {
                self.written_lines = done;
            }
        }
        Ok(())
    }

    /// Takes no line of the content as written (after a failure: a checkpoint then carries
    /// every line).
    fn forget_written(&mut self) {
        self.written_lines = 0;
        self.handed.clear();
    }

    /// The content was rewritten and only its first `unchanged` lines are as before: no
    /// later line is known written, whatever was handed over.
    fn rewritten(&mut self, unchanged: usize) {
        self.written_lines = self.written_lines.min(unchanged);
        for lines in &mut self.handed {
            *lines = (*lines).min(unchanged);
        }
    }

    /// Waits for the rewrites handed over.
    fn wait(&mut self) -> Result<(), Error> {
        if let Some(writer) = &mut self.writer {
            if let Err(e) = writer.flush() {
                self.forget_written();
                return Err(e);
            }
        }
        if let Some(&last) = self.handed.back() {
            self.written_lines = last;
        }
        self.handed.clear();
        Ok(())
    }

    /// Adds the carried rows whose epoch the file lacks, each in its place among the rows
    /// (and the carried header to a file without one). See [`CsvLogger::background`].
    ///
    /// The carried rows come from a checkpoint, which may hold millions: they are placed in
    /// one pass over the file, not one pass per row.
    fn restore_carried(&mut self) {
        let carried = std::mem::take(&mut self.carried);
        if carried.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.content).into_owned();
        // The carried rows by epoch (a later one of an epoch replaces an earlier one), and
        // the first carried line of no epoch: the header, used by a file without lines.
        let mut rows = std::collections::BTreeMap::new();
        let mut carried_header = None;
        for line in carried {
            match self.epoch_of(&line) {
                Some(epoch) => {
                    rows.insert(epoch, line);
                }
                None => {
                    carried_header.get_or_insert(line);
                }
            }
        }
        let mut lines = text.split_inclusive('\n');
        let header = match (lines.next(), &carried_header) {
            (Some(header), _) => header,
            (None, Some(header)) => header.as_str(),
            // No header to put rows under.
            (None, None) => return,
        };
        // The file's rows but those of a carried epoch, with their epochs.
        let kept: Vec<(&str, Option<usize>)> = lines
            .map(|line| (line, self.epoch_of(line)))
            .filter(|(_, epoch)| epoch.is_none_or(|e| !rows.contains_key(&e)))
            .collect();
        // A carried row goes after every kept row of an earlier epoch: before the kept row
        // at `after[k]`, where `after[k]` is one past the last kept row among those of the
        // k smallest epochs.
        let mut by_epoch: Vec<(usize, usize)> = kept
            .iter()
            .enumerate()
            .filter_map(|(i, (_, epoch))| epoch.map(|e| (e, i)))
            .collect();
        by_epoch.sort_unstable();
        let after: Vec<usize> = by_epoch
            .iter()
            .scan(0, |last, &(_, i)| {
                *last = (*last).max(i + 1);
                Some(*last)
            })
            .collect();
        let place = |epoch: usize| match by_epoch.partition_point(|&(e, _)| e < epoch) {
            0 => 0,
            k => after[k - 1],
        };
        let mut restored = String::with_capacity(text.len());
        restored.push_str(header);
        let mut placed = rows
            .into_iter()
            .map(|(e, line)| (place(e), line))
            .peekable();
        for (i, (line, _)) in kept.iter().enumerate() {
            while let Some((_, row)) = placed.next_if(|(at, _)| *at <= i) {
                restored.push_str(&row);
            }
            restored.push_str(line);
        }
        for (_, row) in placed {
            restored.push_str(&row);
        }
        let restored = restored.into_bytes();
        // The lines from the first one that changed are not on storage.
        let unchanged = self
            .content
            .split_inclusive(|b| *b == b'\n')
            .zip(restored.split_inclusive(|b| *b == b'\n'))
            .take_while(|(old, new)| old == new)
            .count();
        self.content = restored;
        self.rewritten(unchanged);
    }

    /// The epoch a data row is of (its first field, as this logger writes it).
    fn epoch_of(&self, line: &str) -> Option<usize> {
        line.split(self.separator)
            .next()
            .and_then(|f| f.trim().parse::<usize>().ok())
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
        // The lines before the first one dropped are unchanged.
        let mut unchanged = None;
        for (i, line) in text.split_inclusive('\n').enumerate() {
            let keep = i == 0 || self.epoch_of(line).is_none_or(|e| e < from);
            if keep {
                kept.push_str(line);
                rows += u64::from(i > 0);
            } else {
                unchanged.get_or_insert(i);
            }
        }
        self.content = kept.into_bytes();
        self.rows = rows;
        if let Some(unchanged) = unchanged {
            self.rewritten(unchanged);
        }
    }
}

/// The lines in `content` (a last line without its line break counted too).
fn lines(content: &[u8]) -> usize {
    content.split_inclusive(|b| *b == b'\n').count()
}

/// The carried lines of a checkpoint's state (untrusted): each must end its line and hold
/// no other line break; `None` when malformed or beyond the history's size limit.
fn carried_lines(unwritten: &serde_json::Value) -> Option<Vec<String>> {
    let mut total = 0u64;
    let mut lines = Vec::new();
    for line in unwritten.as_array()? {
        let line = line.as_str()?;
        total = total.saturating_add(line.len() as u64);
        let one_line = line.ends_with('\n') && line.matches('\n').count() == 1;
        if !one_line || total > MAX_HISTORY_BYTES {
            return None;
        }
        lines.push(line.to_owned());
    }
    Some(lines)
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
        // What was just read is on storage; a file replaced by an empty one is not.
        self.written_lines = lines(&self.content);
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
            state["unwritten"] = serde_json::json!(unwritten);
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
            None => Vec::new(),
            Some(unwritten) => carried_lines(unwritten).ok_or_else(|| {
                bad("unwritten is not a list of lines within the history's size limit")
            })?,
        };
        self.resumed = true;
        Ok(())
    }
}
