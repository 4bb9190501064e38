//! A list of callbacks, called in order.

use super::{Callback, Context, Control, HookResult};
use crate::Logs;

/// Callbacks called in order, as Keras's `CallbackList` calls them.
///
/// Each hook goes to every callback in turn; the first `Err` stops the round and is
/// returned; `StopTraining` from any callback is returned once all have run.
#[derive(Default)]
pub struct CallbackList<'a> {
    callbacks: Vec<Box<dyn Callback + 'a>>,
}

macro_rules! dispatch {
    ($(#[$doc:meta] $name:ident($($arg:ident: $ty:ty),*);)*) => {
        $(
            #[$doc]
            ///
            /// Then, once every callback has had the hook, calls
            /// [`Callback::on_round_end`] on each: saves decided in the hook are written
            /// there, with every callback's state as of the end of the round.
            ///
            /// # Errors
            ///
            /// The first callback's error; later callbacks are not called.
            pub fn $name(&mut self, $($arg: $ty,)* logs: &Logs, ctx: &mut Context<'_>) -> HookResult {
                let control = self.each(ctx, |callback, ctx| callback.$name($($arg,)* logs, ctx))?;
                Ok(control.and(self.each(ctx, |callback, ctx| callback.on_round_end(ctx))?))
            }
        )*
    };
}

impl<'a> CallbackList<'a> {
    /// A list of callbacks.
    pub fn new(callbacks: Vec<Box<dyn Callback + 'a>>) -> Self {
        CallbackList { callbacks }
    }

    /// A list of borrowed callbacks, which stay with their owner.
    pub fn borrowed(callbacks: &'a mut [&mut dyn Callback]) -> Self {
        CallbackList {
            callbacks: callbacks
                .iter_mut()
                .map(|c| Box::new(&mut **c) as Box<dyn Callback + 'a>)
                .collect(),
        }
    }

    /// Adds a callback at the end.
    pub fn push(&mut self, callback: Box<dyn Callback + 'a>) {
        self.callbacks.push(callback);
    }

    /// The callbacks.
    pub fn iter(&self) -> impl Iterator<Item = &(dyn Callback + 'a)> {
        self.callbacks.iter().map(|c| c.as_ref())
    }

    /// The callbacks, mutably (to restore their state on resume).
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Box<dyn Callback + 'a>> {
        self.callbacks.iter_mut()
    }

    /// Number of callbacks.
    pub fn len(&self) -> usize {
        self.callbacks.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.callbacks.is_empty()
    }

    /// Takes the callbacks back.
    pub fn into_inner(self) -> Vec<Box<dyn Callback + 'a>> {
        self.callbacks
    }

    /// Calls `hook` on every callback in order, each seeing the others as its peers.
    fn each(
        &mut self,
        ctx: &Context<'_>,
        mut hook: impl FnMut(&mut (dyn Callback + 'a), &mut Context<'_>) -> HookResult,
    ) -> HookResult {
        let mut control = Control::Continue;
        for i in 0..self.callbacks.len() {
            let (before, rest) = self.callbacks.split_at_mut(i);
            let Some((current, after)) = rest.split_first_mut() else {
                break;
            };
            let mut inner = Context {
                model: ctx.model,
                global_step: ctx.global_step,
                peers: [&*before, &*after],
                fence: ctx.fence,
                in_round: true,
            };
            match hook(current.as_mut(), &mut inner) {
                Ok(c) => control = control.and(c),
                Err(e) => {
                    // The callbacks before this one have had the hook: what they decided
                    // happens, as it would in Keras, where each acts inside its hook.
                    self.finish_round(ctx, i);
                    return Err(e);
                }
            }
        }
        Ok(control)
    }

    /// Calls [`Callback::on_round_end`] on the first `n` callbacks after a callback failed
    /// (their own failures are logged: the first error is the one returned).
    fn finish_round(&mut self, ctx: &Context<'_>, n: usize) {
        for i in 0..n.min(self.callbacks.len()) {
            let (before, rest) = self.callbacks.split_at_mut(i);
            let Some((current, after)) = rest.split_first_mut() else {
                break;
            };
            let mut inner = Context {
                model: ctx.model,
                global_step: ctx.global_step,
                peers: [&*before, &*after],
                fence: ctx.fence,
                in_round: true,
            };
            if let Err(e) = current.on_round_end(&mut inner) {
                log::error!(target: "model_checkpoint", "after another callback failed: {e}");
            }
        }
    }

    dispatch! {
        /// Calls `on_train_begin` on every callback.
        on_train_begin();
        /// Calls `on_train_end` on every callback.
        on_train_end();
        /// Calls `on_epoch_begin` on every callback.
        on_epoch_begin(epoch: usize);
        /// Calls `on_epoch_end` on every callback.
        on_epoch_end(epoch: usize);
        /// Calls `on_train_batch_begin` on every callback.
        on_train_batch_begin(batch: usize);
        /// Calls `on_train_batch_end` on every callback.
        on_train_batch_end(batch: usize);
        /// Calls `on_test_begin` on every callback.
        on_test_begin();
        /// Calls `on_test_end` on every callback.
        on_test_end();
        /// Calls `on_test_batch_begin` on every callback.
        on_test_batch_begin(batch: usize);
        /// Calls `on_test_batch_end` on every callback.
        on_test_batch_end(batch: usize);
        /// Calls `on_predict_begin` on every callback.
        on_predict_begin();
        /// Calls `on_predict_end` on every callback.
        on_predict_end();
        /// Calls `on_predict_batch_begin` on every callback.
        on_predict_batch_begin(batch: usize);
        /// Calls `on_predict_batch_end` on every callback.
        on_predict_batch_end(batch: usize);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    struct Recorder {
        id: u8,
        seen: std::rc::Rc<std::cell::RefCell<Vec<u8>>>,
        result: fn() -> HookResult,
    }

    impl Callback for Recorder {
        fn on_epoch_end(&mut self, _: usize, _: &Logs, _: &mut Context<'_>) -> HookResult {
            self.seen.borrow_mut().push(self.id);
            (self.result)()
        }
    }

    fn list(
        results: &[fn() -> HookResult],
    ) -> (
        CallbackList<'static>,
        std::rc::Rc<std::cell::RefCell<Vec<u8>>>,
    ) {
        let seen = std::rc::Rc::default();
        let callbacks = results
            .iter()
            .enumerate()
            .map(|(i, &result)| {
                Box::new(Recorder {
                    id: i as u8,
                    seen: std::rc::Rc::clone(&seen),
                    result,
                }) as Box<dyn Callback>
            })
            .collect();
        (CallbackList::new(callbacks), seen)
    }

    #[test]
    fn stop_training_lets_the_others_run() {
        let (mut cbs, seen) = list(&[|| Ok(Control::StopTraining), || Ok(Control::Continue)]);
        let control = cbs.on_epoch_end(0, &Logs::new(), &mut Context::without_model());
        assert_eq!(control.ok(), Some(Control::StopTraining));
        assert_eq!(*seen.borrow(), [0, 1]);
    }

    #[test]
    fn an_error_stops_the_round() {
        let (mut cbs, seen) = list(&[|| Err(Error::NoModel), || Ok(Control::Continue)]);
        let result = cbs.on_epoch_end(0, &Logs::new(), &mut Context::without_model());
        assert!(matches!(result, Err(Error::NoModel)));
        assert_eq!(*seen.borrow(), [0]);
    }
}
