//! The backend's own tokio runtime, which the core's synchronous calls block on.

use std::future::Future;

/// A small multi-threaded runtime: uploads of parts run on it while the caller keeps
/// producing bytes.
pub(crate) struct Runtime(tokio::runtime::Runtime);

impl Runtime {
    pub fn new() -> std::io::Result<Self> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ckpt-object-store")
            .enable_all()
            .build()
            .map(Runtime)
    }

    pub fn handle(&self) -> &tokio::runtime::Handle {
        self.0.handle()
    }

    /// Runs `future` to completion. Called from inside another tokio runtime (a user's
    /// async program calling a synchronous hook), it runs on a scoped thread instead, as
    /// tokio does not allow blocking a runtime's own threads.
    pub fn block_on<F: Future + Send>(&self, future: F) -> F::Output
    where
        F::Output: Send,
    {
        if tokio::runtime::Handle::try_current().is_err() {
            return self.0.block_on(future);
        }
        std::thread::scope(|scope| {
            let handle = self.0.handle();
            match scope.spawn(move || handle.block_on(future)).join() {
                Ok(output) => output,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Runtime")
    }
}
