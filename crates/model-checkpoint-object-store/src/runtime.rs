//! The backend's own tokio runtime, which the core's synchronous calls block on.

use std::future::Future;

/// A small multi-threaded runtime: uploads of parts run on it while the caller keeps
/// producing bytes.
pub(crate) struct Runtime(Option<tokio::runtime::Runtime>);

impl Runtime {
    pub fn new() -> std::io::Result<Self> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ckpt-object-store")
            .enable_all()
            .build()
            .map(|rt| Runtime(Some(rt)))
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        // Some until dropped.
        self.0
            .as_ref()
            .expect("the runtime lives as long as its owner")
    }

    pub fn handle(&self) -> &tokio::runtime::Handle {
        self.runtime().handle()
    }

    /// Runs `future` to completion. Called from inside another tokio runtime (a user's
    /// async program calling a synchronous hook), it runs on a scoped thread instead, as
    /// tokio does not allow blocking a runtime's own threads.
    pub fn block_on<F: Future + Send>(&self, future: F) -> F::Output
    where
        F::Output: Send,
    {
        if tokio::runtime::Handle::try_current().is_err() {
            return self.runtime().block_on(future);
        }
        std::thread::scope(|scope| {
            let handle = self.runtime().handle();
            match scope.spawn(move || handle.block_on(future)).join() {
                Ok(output) => output,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

impl Drop for Runtime {
    /// Dropped inside a user's async code, a runtime may not block its thread waiting for its
    /// workers: it is shut down in the background instead.
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                rt.shutdown_background();
            }
        }
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Runtime")
    }
}
