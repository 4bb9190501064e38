//! The tensor framework `ckpt train` trains with: candle (the default) or burn. Both train
//! the same MLP (same names, layouts and initial weights for a seed) through the same `fit`
//! loop, and write the same files.
//!
//! burn is the `burn` feature, not in the default build: it is two fifths of what a clean
//! `cargo build --release -p ckpt` compiles (README, "The first build"). A `ckpt` built
//! without it still parses `--framework burn` (and a resumed burn checkpoint's record), and
//! refuses it by name.

use model_checkpoint::Logs;
#[cfg(feature = "burn")]
use model_checkpoint_burn::{cpu, cpu_autodiff, BurnStep, Mlp};
use model_checkpoint_candle::{Adam, CandleStep, Model, ParamsAdam};
use model_checkpoint_fit::{Dataset, Step};

use crate::Failure;

/// Which framework trains.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Framework {
    /// candle (Hugging Face).
    Candle,
    /// burn (Tracel), Flex CPU backend.
    Burn,
}

impl Framework {
    /// The name `--framework` takes.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Framework::Candle => "candle",
            Framework::Burn => "burn",
        }
    }
}

/// Whether this `ckpt` trains burn (the `burn` feature).
pub(crate) const HAS_BURN: bool = cfg!(feature = "burn");

/// Why `what` cannot run in a `ckpt` built without burn.
#[cfg(not(feature = "burn"))]
fn without_burn(what: &str) -> Failure {
    format!(
        "{what}: this ckpt is built without burn (the `burn` feature, left out of the default \
         build to keep it small): build it with `--features burn` (`cargo build --release -p ckpt \
         --features burn`, or `cargo install --path crates/ckpt --features burn`), or train \
         with --framework candle"
    )
    .into()
}

/// `ckpt train` trains burn on Flex, on the CPU. burn itself reads `BURN_DEVICE` where
/// it makes tensors on its default device (restored optimizer state), and panics on a
/// backend this build lacks: any value but `flex` is refused up front, by name.
#[cfg(feature = "burn")]
fn check_burn_device() -> Result<(), Failure> {
    match std::env::var_os("BURN_DEVICE") {
        None => Ok(()),
        Some(v) if v.eq_ignore_ascii_case("flex") => Ok(()),
        Some(v) => Err(format!(
            "BURN_DEVICE={v:?}: ckpt trains burn on its Flex CPU backend; unset it or set it to flex"
        )
        .into()),
    }
}

/// A step of either framework that `ckpt train` can also tell its learning rate (read back
/// from a resumed checkpoint, and set from `--learning-rate`).
pub(crate) trait MlpStep: Step {
    fn learning_rate(&self) -> f64;
    fn set_learning_rate(&mut self, lr: f64);
}

impl MlpStep for CandleStep {
    fn learning_rate(&self) -> f64 {
        CandleStep::learning_rate(self)
    }
    fn set_learning_rate(&mut self, lr: f64) {
        CandleStep::set_learning_rate(self, lr);
    }
}

#[cfg(feature = "burn")]
impl MlpStep for BurnStep<Mlp> {
    fn learning_rate(&self) -> f64 {
        BurnStep::learning_rate(self)
    }
    fn set_learning_rate(&mut self, lr: f64) {
        BurnStep::set_learning_rate(self, lr);
    }
}

/// An MLP with Adam, in either framework, over the shared `fit`: one trainer type, the
/// framework only in the step it holds.
pub(crate) type Trainer = model_checkpoint_fit::Trainer<Box<dyn MlpStep>>;

/// An MLP of `sizes` initialised from `seed`, trained by Adam at `learning_rate`.
pub(crate) fn trainer(
    framework: Framework,
    sizes: &[usize],
    seed: u64,
    learning_rate: f64,
) -> Result<Trainer, Failure> {
    let step: Box<dyn MlpStep> = match framework {
        Framework::Candle => {
            let model = Model::mlp(sizes, seed)?;
            let optimizer = Adam::new(model.named_vars(), ParamsAdam::default().lr(learning_rate))?;
            Box::new(CandleStep::new(model, optimizer))
        }
        #[cfg(not(feature = "burn"))]
        Framework::Burn => return Err(without_burn("--framework burn")),
        #[cfg(feature = "burn")]
        Framework::Burn => {
            check_burn_device()?;
            let device = cpu_autodiff();
            let model = Mlp::new(sizes, seed, &device)?;
            let optimizer = burn::optim::AdamConfig::new().init();
            Box::new(BurnStep::new(model, optimizer, learning_rate, device))
        }
    };
    Ok(model_checkpoint_fit::Trainer::new(step))
}

/// The loss and accuracy on `data` of an MLP of `sizes` holding the weights of `file`.
pub(crate) fn evaluate_weights(
    framework: Framework,
    sizes: &[usize],
    seed: u64,
    weights: &model_checkpoint::restore::Stored<'_>,
    data: &Dataset,
    batch_size: usize,
) -> Result<Logs, Failure> {
    Ok(match framework {
        Framework::Candle => {
            let fresh = Model::mlp(sizes, seed)?;
            fresh.load_weights_from(weights, model_checkpoint::load::LoadOptions::default())?;
            let step = CandleStep::new(fresh, Adam::new(vec![], ParamsAdam::default())?);
            model_checkpoint_fit::Trainer::new(step).evaluate(data, batch_size)?
        }
        #[cfg(not(feature = "burn"))]
        Framework::Burn => return Err(without_burn("weights written by burn")),
        #[cfg(feature = "burn")]
        Framework::Burn => {
            let fresh =
                model_checkpoint_burn::load_weights_from(Mlp::new(sizes, seed, &cpu())?, weights)?;
            let step = BurnStep::new(fresh, burn::optim::AdamConfig::new().init(), 0.0, cpu());
            model_checkpoint_fit::Trainer::new(step).evaluate(data, batch_size)?
        }
    })
}
