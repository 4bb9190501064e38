//! The run's journal (when asked for, with `ModelCheckpoint::journal`): one row per
//! committed save and per file retention deleted, kept beside the checkpoints as
//! [`store::JOURNAL_FILE`], so that a report can show every checkpoint a run saved, also
//! those deleted since or replaced by a later save under the same name. Advisory: a journal
//! that cannot be written is logged, never a failed save.

use std::sync::{Arc, Mutex, PoisonError};

use crate::store::{self, Kind, Name, Storage};
use crate::Value;

/// Held while a row is read, added and written back (see [`Journal`]).
static ROWS: Mutex<()> = Mutex::new(());

/// The journal's columns.
pub const COLUMNS: [&str; 10] = [
    "seq",
    "event",
    "epoch",
    "batch",
    "global_step",
    "kind",
    "path",
    "monitor",
    "value",
    "run_id",
];

/// One row.
#[derive(Debug)]
pub(crate) struct Row {
    pub seq: u64,
    pub event: &'static str,
    /// 1-based, as in file names.
    pub epoch: i64,
    /// 1-based, for saves in an epoch.
    pub batch: Option<i64>,
    pub global_step: Option<u64>,
    pub kind: Option<Kind>,
    pub path: String,
    pub monitor: String,
    pub value: Value,
    pub run_id: String,
}

/// The journal of one folder, rewritten whole at each row (an object store cannot
/// append). Clones share it: the engine records on the training thread, and the aftercare
/// of a background save on the writer thread (one at a time, in the order of the saves).
/// Before each row the file is read again: another callback keeping a journal in the same
/// folder (an every-epoch checkpoint beside a best-only one) writes rows too, and rewriting
/// the file from this journal's rows alone would drop them.
#[derive(Debug, Default, Clone)]
pub(crate) struct Journal {
    state: Arc<Mutex<Written>>,
}

/// What a journal wrote last, and its rows that no write has carried yet (a write failed:
/// the next one carries them).
#[derive(Debug, Default)]
struct Written {
    last: Option<Vec<u8>>,
    unwritten: Vec<u8>,
}

impl Journal {
    /// Adds `row` to the journal `name` in `storage`.
    pub fn record(&self, storage: &dyn Storage, name: &Name, row: &Row) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.unwritten.extend_from_slice(&line(row));
        if let Err(e) = Self::try_write(&mut state, storage, name) {
            log::warn!(target: "model_checkpoint", "cannot write the journal {name}: {e}");
        }
    }

    fn try_write(
        state: &mut Written,
        storage: &dyn Storage,
        name: &Name,
    ) -> Result<(), crate::Error> {
        let header = format!("{}\r\n", COLUMNS.join(","));
        // One row at a time in this process, so that two journals of one folder never
        // read the same rows and each write back only its own.
        let _one_at_a_time = ROWS.lock().unwrap_or_else(PoisonError::into_inner);
        let existing = store::read_small(storage, name, store::MAX_SIDE_FILE_BYTES, "a journal")?;
        if state.last.is_none() || existing != state.last {
            // Not what this journal last wrote (its first row, or another writer's since):
            // only a journal this tool wrote is continued and replaced (the gate checks its
            // first line); anything else at its name stays.
            store::gate::check_replace(
                storage,
                name,
                store::gate::Claim::SideFile {
                    first_line: &header,
                },
            )?;
        }
        let mut content = match existing {
            Some(bytes) if !bytes.is_empty() => bytes,
            _ => header.into_bytes(),
        };
        // A journal saved by an editor that drops the last line break.
        if !content.ends_with(b"\n") {
            content.extend_from_slice(b"\r\n");
        }
        content.extend_from_slice(&state.unwritten);
        store::write_whole(storage, name, &content)?;
        state.last = Some(content);
        state.unwritten.clear();
        Ok(())
    }
}

/// `row` as the journal's CSV line.
fn line(row: &Row) -> Vec<u8> {
    let fields = [
        row.seq.to_string(),
        row.event.to_owned(),
        row.epoch.to_string(),
        row.batch.map(|b| b.to_string()).unwrap_or_default(),
        row.global_step.map(|s| s.to_string()).unwrap_or_default(),
        row.kind.map(|k| k.as_str().to_owned()).unwrap_or_default(),
        row.path.clone(),
        row.monitor.clone(),
        match row.value.as_f64() {
            Some(v) => crate::template::float_repr(v),
            None => String::new(),
        },
        row.run_id.clone(),
    ];
    let line: Vec<String> = fields.iter().map(|f| store::csv_field(f, ',')).collect();
    let mut bytes = line.join(",").into_bytes();
    bytes.extend_from_slice(b"\r\n");
    bytes
}
