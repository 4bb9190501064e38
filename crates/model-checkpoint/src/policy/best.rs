//! The one definition of "the best" among values seen in order (epochs, saves, files in
//! training order): used by retention, `ckpt best`, `ckpt ls`, the end-of-run report and
//! `History::best`, so that they never disagree.

use super::Direction;

/// The index of the best value: the direction's strict comparison (Keras's `monitor_op`),
/// NaN and missing values never rank, and among equal values the first (the older) wins.
///
/// ```
/// use model_checkpoint::policy::best_index;
/// use model_checkpoint::Direction;
///
/// let values = [Some(0.5), Some(f64::NAN), Some(0.3), None, Some(0.3)];
/// assert_eq!(best_index(Direction::Minimize, values), Some(2));
/// assert_eq!(best_index(Direction::Maximize, values), Some(0));
/// assert_eq!(best_index(Direction::Minimize, [None, Some(f64::NAN)]), None);
/// ```
pub fn best_index(
    direction: Direction,
    values: impl IntoIterator<Item = Option<f64>>,
) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, value) in values.into_iter().enumerate() {
        let Some(v) = value.filter(|v| !v.is_nan()) else {
            continue;
        };
        if best.is_none_or(|(_, b)| direction.improves(v, b)) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i)
}

/// Orders `a` before `b` when it is better by the same rule (ties keep the given order,
/// NaN and missing values last): for ranking, as retention's `keep_best` does.
pub fn better_first(direction: Direction, a: Option<f64>, b: Option<f64>) -> std::cmp::Ordering {
    let key = |v: Option<f64>| v.filter(|v| !v.is_nan());
    match (key(a), key(b)) {
        (Some(x), Some(y)) => match direction {
            Direction::Minimize => x.total_cmp(&y),
            Direction::Maximize => y.total_cmp(&x),
        },
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    }
}
