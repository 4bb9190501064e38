//! The snapshot fence: lets a background save copy while training computes.

use std::sync::{Arc, Condvar, Mutex};

/// Lets a background save copy the weights while training goes on: a training loop that
/// passes a fence in its [`Context`](crate::Context) promises to call [`SnapshotFence::wait`] before it
/// changes any weight or optimizer tensor (before each optimizer step); the save's copy holds
/// the fence until it is done. Without a fence, a background save copies before its hook
/// returns.
///
/// ```
/// use model_checkpoint::SnapshotFence;
///
/// let fence = SnapshotFence::new();
/// fence.wait(); // returns at once: no copy in progress
/// ```
#[derive(Clone, Debug, Default)]
pub struct SnapshotFence(Arc<(Mutex<usize>, Condvar)>);

/// Held while a copy is in progress; dropping it releases the fence.
#[derive(Debug)]
pub struct FenceGuard(SnapshotFence);

impl SnapshotFence {
    /// A fence with no copy in progress.
    pub fn new() -> Self {
        Self::default()
    }

    /// Blocks until no copy holds the fence.
    pub fn wait(&self) {
        let (count, cond) = &*self.0;
        let mut n = count
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while *n > 0 {
            n = cond
                .wait(n)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Marks a copy in progress until the guard is dropped.
    pub fn enter(&self) -> FenceGuard {
        let (count, _) = &*self.0;
        *count
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) += 1;
        FenceGuard(self.clone())
    }
}

impl Drop for FenceGuard {
    fn drop(&mut self) {
        let (count, cond) = &*(self.0).0;
        let mut n = count
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *n = n.saturating_sub(1);
        cond.notify_all();
    }
}
