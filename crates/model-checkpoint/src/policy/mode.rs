use std::fmt;
use std::str::FromStr;

use crate::Error;

/// Which way the monitored value should move (Keras's `mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Decide from the monitor's name, as tf.keras 2 does (see [`Mode::direction_for`]).
    #[default]
    Auto,
    /// Lower is better.
    Min,
    /// Higher is better.
    Max,
}

/// The resolved comparison: Keras's `monitor_op` (`np.less` or `np.greater`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// `np.less`: a strictly lower value improves.
    Minimize,
    /// `np.greater`: a strictly higher value improves.
    Maximize,
}

impl Mode {
    /// The direction this mode gives for `monitor`.
    ///
    /// `Auto` follows tf.keras 2 exactly (KERAS-SPEC.md §1.2): maximise when the name contains
    /// `"acc"` anywhere (so `val_accuracy`, but also `accumulated_loss`) or starts with
    /// `"fmeasure"`; minimise otherwise (so `auc`, `val_fmeasure` and `val_ACC`).
    ///
    /// ```
    /// use model_checkpoint::{Direction, Mode};
    ///
    /// assert_eq!(Mode::Auto.direction_for("val_accuracy"), Direction::Maximize);
    /// assert_eq!(Mode::Auto.direction_for("val_auc"), Direction::Minimize);
    /// assert_eq!(Mode::Min.direction_for("val_acc"), Direction::Minimize);
    /// ```
    pub fn direction_for(self, monitor: &str) -> Direction {
        match self {
            Mode::Min => Direction::Minimize,
            Mode::Max => Direction::Maximize,
            Mode::Auto if monitor.contains("acc") || monitor.starts_with("fmeasure") => {
                Direction::Maximize
            }
            Mode::Auto => Direction::Minimize,
        }
    }
}

impl FromStr for Mode {
    type Err = Error;

    /// Strict parsing for Rust callers and the CLI: `auto`, `min` or `max`.
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "auto" => Ok(Mode::Auto),
            "min" => Ok(Mode::Min),
            "max" => Ok(Mode::Max),
            _ => Err(Error::UnknownMode {
                value: s.to_owned(),
            }),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Auto => "auto",
            Mode::Min => "min",
            Mode::Max => "max",
        })
    }
}

impl Direction {
    /// Keras's starting `best` when no threshold is given: `inf` to minimise, `-inf` to
    /// maximise.
    pub fn initial_best(self) -> f64 {
        match self {
            Direction::Minimize => f64::INFINITY,
            Direction::Maximize => f64::NEG_INFINITY,
        }
    }

    /// Whether `current` strictly improves on `best`. A tie never improves, NaN on either
    /// side never improves (it compares false, as in numpy), and nothing improves on a best
    /// of `-inf` when minimising (KERAS-SPEC.md §10).
    pub fn improves(self, current: f64, best: f64) -> bool {
        match self {
            Direction::Minimize => current < best,
            Direction::Maximize => current > best,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_rule_matches_the_oracle_table() {
        let max = [
            "acc",
            "val_acc",
            "accuracy",
            "val_accuracy",
            "my_acc_metric",
            "accumulated_loss",
            "fmeasure",
            "fmeasure_x",
        ];
        let min = [
            "val_loss",
            "loss",
            "val_fmeasure",
            "auc",
            "val_auc",
            "val_ACC",
        ];
        for m in max {
            assert_eq!(Mode::Auto.direction_for(m), Direction::Maximize, "{m}");
        }
        for m in min {
            assert_eq!(Mode::Auto.direction_for(m), Direction::Minimize, "{m}");
        }
    }

    #[test]
    fn modes_parse_strictly() {
        assert_eq!("max".parse::<Mode>().ok(), Some(Mode::Max));
        assert!("MAX".parse::<Mode>().is_err());
        let err = "maxx".parse::<Mode>().unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"unknown mode "maxx" (expected "auto", "min" or "max")"#
        );
    }

    #[test]
    fn issue_2_nan_never_improves_and_ties_do_not_either() {
        for d in [Direction::Minimize, Direction::Maximize] {
            assert!(!d.improves(f64::NAN, d.initial_best()));
            assert!(!d.improves(0.5, f64::NAN));
            assert!(!d.improves(0.5, 0.5));
        }
        assert!(!Direction::Minimize.improves(f64::INFINITY, f64::INFINITY));
        assert!(!Direction::Maximize.improves(f64::NEG_INFINITY, f64::NEG_INFINITY));
        assert!(Direction::Minimize.improves(0.4, 0.5));
        assert!(Direction::Maximize.improves(0.6, 0.5));
    }
}
