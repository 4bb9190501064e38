use serde::{Deserialize, Serialize};

use super::Direction;
use crate::Value;

/// Which checkpoints to keep (beyond Keras, which never deletes anything). A checkpoint
/// kept by any rule stays; the newest and the best are always kept. All rules off (the
/// default) keeps everything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// Keep the `k` best by the monitored value (Lightning's `save_top_k`).
    pub keep_best: Option<usize>,
    /// Keep the `n` newest.
    pub keep_last: Option<usize>,
    /// Keep every checkpoint saved in an epoch that is a multiple of `m` (1-based).
    pub keep_every_epochs: Option<u64>,
}

impl Retention {
    /// Whether any rule is on (otherwise nothing is ever deleted).
    pub fn is_on(&self) -> bool {
        self.keep_best.is_some() || self.keep_last.is_some() || self.keep_every_epochs.is_some()
    }
}

/// A checkpoint file the callback wrote and still tracks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavedFile {
    /// Its path, as formatted.
    pub path: crate::name::Name,
    /// The 1-based epoch it was saved in.
    pub epoch: i64,
    /// The monitored value at the save (`None` when not logged).
    pub value: Value,
    /// Save order: larger is newer.
    pub seq: u64,
}

impl SavedFile {
    fn score(&self) -> Option<f64> {
        self.value.as_f64().filter(|v| !v.is_nan())
    }
}

/// Ranks `a` before `b` when it is better (see [`super::better_first`]), the older first on
/// equal values.
fn better_first(direction: Direction, a: &SavedFile, b: &SavedFile) -> std::cmp::Ordering {
    super::better_first(direction, a.score(), b.score()).then(a.seq.cmp(&b.seq))
}

/// The best file: the best value, the older on ties, never NaN (see [`super::best_index`]).
pub fn best_file(files: &[SavedFile], direction: Direction) -> Option<&SavedFile> {
    let mut by_age: Vec<&SavedFile> = files.iter().collect();
    by_age.sort_by_key(|f| f.seq);
    super::best_index(direction, by_age.iter().map(|f| f.score())).map(|i| by_age[i])
}

/// For each file, whether the rules keep it.
///
/// ```
/// use model_checkpoint::policy::{files_to_keep, Retention, SavedFile};
/// use model_checkpoint::{Direction, Value};
///
/// let file = |seq: u64, v: f64| SavedFile { path: format!("w{seq}").into(), epoch: seq as i64, value: Value::Float(v), seq };
/// let files = [file(1, 0.5), file(2, 0.3), file(3, f64::NAN), file(4, 0.3), file(5, 0.9)];
/// let rules = Retention { keep_best: Some(1), ..Retention::default() };
/// // The best (0.3, the older of the tie) and the newest stay.
/// assert_eq!(files_to_keep(&files, &rules, Direction::Minimize), [false, true, false, false, true]);
/// ```
pub fn files_to_keep(files: &[SavedFile], rules: &Retention, direction: Direction) -> Vec<bool> {
    if !rules.is_on() {
        return vec![true; files.len()];
    }
    let mut keep = vec![false; files.len()];
    let mut by_age: Vec<usize> = (0..files.len()).collect();
    by_age.sort_by(|&a, &b| files[b].seq.cmp(&files[a].seq));
    if let Some(&newest) = by_age.first() {
        keep[newest] = true;
    }
    let mut ranked: Vec<usize> = (0..files.len())
        .filter(|&i| files[i].score().is_some())
        .collect();
    ranked.sort_by(|&a, &b| better_first(direction, &files[a], &files[b]));
    if let Some(&best) = ranked.first() {
        keep[best] = true;
    }
    for &i in ranked.iter().take(rules.keep_best.unwrap_or(0)) {
        keep[i] = true;
    }
    for &i in by_age.iter().take(rules.keep_last.unwrap_or(0)) {
        keep[i] = true;
    }
    if let Some(m) = rules.keep_every_epochs.filter(|&m| m > 0) {
        for (i, f) in files.iter().enumerate() {
            if f.epoch > 0 && (f.epoch as u64).is_multiple_of(m) {
                keep[i] = true;
            }
        }
    }
    keep
}
