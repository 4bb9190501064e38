//! Pure decisions, no I/O: when a save is due, whether a value improves, and how Keras's
//! loose arguments resolve. `ModelCheckpoint` acts on what these functions return.
//!
//! Everything here matches tf.keras 2.x (`tf_keras/src/callbacks.py`), as recorded in
//! docs/KERAS-SPEC.md; the section numbers below refer to that file.

mod best;
mod improvement;
mod mode;
mod retention;
mod save_freq;

pub use best::{best_index, better_first};
pub use improvement::{judge, Verdict};
pub use mode::{Direction, Mode};
pub use retention::{best_file, files_to_keep, Retention, SavedFile};
pub use save_freq::{SaveFreq, SaveSchedule};
