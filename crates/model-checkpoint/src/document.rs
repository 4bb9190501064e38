//! The training state of a full checkpoint as one typed document: the sections a framework,
//! the training loop and the callbacks hand over, and the one place their names are spelled.
//! It is stored as JSON in the header's metadata (under `training_state`) and read
//! back by [`TrainingDocument::parse`], or from an opened file with
//! [`crate::store::CheckpointFile::training_state`].
//!
//! ```
//! use model_checkpoint::document::{LoopState, TrainingDocument};
//!
//! let mut document = TrainingDocument::default();
//! document.loop_state = Some(LoopState { step: 42, epoch: 3, ..LoopState::default() });
//! document.optimizer = Some(serde_json::json!({ "kind": "adam", "step": 42 }));
//! let text = document.to_json()?;
//! assert_eq!(TrainingDocument::parse(&text)?.loop_state.map(|l| l.step), Some(42));
//! # Ok::<(), model_checkpoint::document::DocumentError>(())
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The largest counter (epoch, batch, step) read from a checkpoint: 2^53, the largest
/// integer a JSON number holds exactly. Anything above is refused rather than wrapped.
pub const MAX_COUNTER: u64 = 1 << 53;

/// The prefix of an optimizer's tensors among the training tensors (after the format's own
/// `__training__/`): `optimizer/<parameter>/<slot>`. Every adapter names them so, so that a
/// checkpoint of one framework's optimizer reads the same way in another's.
pub const OPTIMIZER_TENSORS: &str = "optimizer/";

/// A full checkpoint's training state: every section, typed where this crate knows its
/// shape. Sections written by something this version does not know are kept as read
/// ([`TrainingDocument::other`]), so that a file passes through unchanged.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TrainingDocument {
    /// The optimizer's plain values (its kind, step, learning rate, hyperparameters), as its
    /// adapter wrote them; its tensors are under [`OPTIMIZER_TENSORS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimizer: Option<serde_json::Value>,
    /// `fit`'s state: the epoch and batch reached, the generator, the running metrics, the
    /// history (`model-checkpoint-fit` owns its shape).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fit: Option<serde_json::Value>,
    /// A hand-written loop's own state.
    #[serde(default, rename = "loop", skip_serializing_if = "Option::is_none")]
    pub loop_state: Option<LoopState>,
    /// burn's `Learner` state (its epoch, its scheduler).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learner: Option<serde_json::Value>,
    /// Every callback's state, by the callback's state key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub callbacks: BTreeMap<String, serde_json::Value>,
    /// Sections this version does not know, by name, as read.
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// What a hand-written training loop keeps of its own, typed: where it stands and its
/// generator, plus any values of its own.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LoopState {
    /// Optimizer steps taken.
    #[serde(default)]
    pub step: u64,
    /// Epochs completed.
    #[serde(default)]
    pub epoch: u64,
    /// The state of the loop's generator (its words, in the generator's own order), if it
    /// has one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub generator: Vec<u64>,
    /// Anything else of the loop's own.
    #[serde(flatten)]
    pub values: serde_json::Map<String, serde_json::Value>,
}

/// A training state that is not a document of this shape.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DocumentError(String);

/// The longest training state read (it lives in the header, whose own limit is larger).
const MAX_DOCUMENT_BYTES: usize = 64 << 20;

impl TrainingDocument {
    /// Reads a training state from its JSON text.
    ///
    /// # Errors
    ///
    /// [`DocumentError`] naming what is malformed (a section of the wrong shape, a counter
    /// out of range, text that is not a JSON object).
    pub fn parse(text: &str) -> Result<TrainingDocument, DocumentError> {
        if text.len() > MAX_DOCUMENT_BYTES {
            return Err(DocumentError(format!(
                "{} bytes, more than the {MAX_DOCUMENT_BYTES} a training state may have",
                text.len()
            )));
        }
        let document: TrainingDocument = serde_json::from_str(text)
            .map_err(|e| DocumentError(format!("training state unreadable: {e}")))?;
        if let Some(l) = &document.loop_state {
            let max = MAX_COUNTER;
            if l.step > max || l.epoch > max {
                return Err(DocumentError(format!(
                    "loop state: step {} or epoch {} is beyond {max}",
                    l.step, l.epoch
                )));
            }
        }
        Ok(document)
    }

    /// The JSON text stored in a checkpoint's header.
    ///
    /// # Errors
    ///
    /// [`DocumentError`] if a section cannot be written as JSON (a non-finite float in a
    /// section of `serde_json::Value` cannot occur; a custom section's own failure).
    pub fn to_json(&self) -> Result<String, DocumentError> {
        serde_json::to_string(self).map_err(|e| DocumentError(e.to_string()))
    }

    /// Whether nothing at all is in it (a model that hands over no training state).
    pub fn is_empty(&self) -> bool {
        self.optimizer.is_none()
            && self.fit.is_none()
            && self.loop_state.is_none()
            && self.learner.is_none()
            && self.callbacks.is_empty()
            && self.other.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn todays_files_read_and_unknown_sections_pass_through() {
        let text = r#"{"optimizer":{"kind":"adam"},"fit":{"epoch":3},"loop":{"step":7,"mine":true},"callbacks":{"ModelCheckpoint(w)":{"best":0.5}},"toy":1}"#;
        let document = TrainingDocument::parse(text).expect("today's layout");
        assert_eq!(document.loop_state.as_ref().map(|l| l.step), Some(7));
        assert_eq!(
            document
                .loop_state
                .as_ref()
                .and_then(|l| l.values.get("mine")),
            Some(&serde_json::json!(true))
        );
        assert_eq!(document.other.get("toy"), Some(&serde_json::json!(1)));
        let again = TrainingDocument::parse(&document.to_json().expect("json")).expect("again");
        assert_eq!(again, document);
        assert!(TrainingDocument::parse("[1]").is_err());
        assert!(TrainingDocument::parse(r#"{"loop":{"step":-1}}"#).is_err());
        assert!(TrainingDocument::parse(r#"{"callbacks":3}"#).is_err());
    }
}
