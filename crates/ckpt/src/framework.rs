//! The tensor framework `ckpt train` trains with: candle (the default) or burn. Both train
//! the same MLP (same names, layouts and initial weights for a seed) through the same `fit`
//! loop, and write the same files.

use model_checkpoint::store::CheckpointFile;
use model_checkpoint::{Callback, Logs};
use model_checkpoint_burn::{cpu, cpu_autodiff, BurnStep, Mlp};
use model_checkpoint_candle::{Adam, Model, ParamsAdam};
use model_checkpoint_fit::{Dataset, FitOptions, History, Resumed};

use crate::Failure;

/// Which framework trains.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Framework {
    /// candle (Hugging Face).
    Candle,
    /// burn (Tracel), NdArray backend.
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

/// `ckpt train` trains burn on NdArray, on the CPU. burn itself reads `BURN_DEVICE` where
/// it makes tensors on its default device (restored optimizer state), and panics on a
/// backend this build lacks: any value but `ndarray` is refused up front, by name.
fn check_burn_device() -> Result<(), Failure> {
    match std::env::var_os("BURN_DEVICE") {
        None => Ok(()),
        Some(v) if v.eq_ignore_ascii_case("ndarray") => Ok(()),
        Some(v) => Err(format!(
            "BURN_DEVICE={v:?}: ckpt trains burn on its NdArray CPU backend; unset it or set it to ndarray"
        )
        .into()),
    }
}

/// An MLP with Adam, in either framework, over the shared `fit`. (Boxed: one is built per
/// run, and the two differ much in size.)
pub(crate) enum Trainer {
    Candle(Box<model_checkpoint_candle::Trainer>),
    Burn(Box<model_checkpoint_fit::Trainer<BurnStep<Mlp>>>),
}

impl Trainer {
    /// An MLP of `sizes` initialised from `seed`, trained by Adam at `learning_rate`.
    pub(crate) fn new(
        framework: Framework,
        sizes: &[usize],
        seed: u64,
        learning_rate: f64,
    ) -> Result<Self, Failure> {
        Ok(match framework {
            Framework::Candle => {
                let model = Model::mlp(sizes, seed)?;
                let optimizer =
                    Adam::new(model.named_vars(), ParamsAdam::default().lr(learning_rate))?;
                Trainer::Candle(Box::new(model_checkpoint_candle::Trainer::new(
                    model, optimizer,
                )))
            }
            Framework::Burn => {
                check_burn_device()?;
                let device = cpu_autodiff();
                let model = Mlp::new(sizes, seed, &device)?;
                let optimizer = burn::optim::AdamConfig::new().init();
                let step = BurnStep::new(model, optimizer, learning_rate, device);
                Trainer::Burn(Box::new(model_checkpoint_fit::Trainer::new(step)))
            }
        })
    }

    pub(crate) fn resume_from(
        &mut self,
        file: &CheckpointFile,
        callbacks: &mut [&mut dyn Callback],
    ) -> Result<Resumed, Failure> {
        Ok(match self {
            Trainer::Candle(t) => t.resume_from(file, callbacks)?,
            Trainer::Burn(t) => t.resume_from(file, callbacks)?,
        })
    }

    pub(crate) fn learning_rate(&self) -> f64 {
        match self {
            Trainer::Candle(t) => t.optimizer().learning_rate(),
            Trainer::Burn(t) => t.step().learning_rate(),
        }
    }

    pub(crate) fn set_learning_rate(&mut self, lr: f64) {
        match self {
            Trainer::Candle(t) => t.set_learning_rate(lr),
            Trainer::Burn(t) => t.step_mut().set_learning_rate(lr),
        }
    }

    pub(crate) fn fit(
        &mut self,
        data: &Dataset,
        options: &FitOptions<'_>,
        callbacks: &mut [&mut dyn Callback],
    ) -> Result<History, Failure> {
        Ok(match self {
            Trainer::Candle(t) => t.fit(data, options, callbacks)?,
            Trainer::Burn(t) => t.fit(data, options, callbacks)?,
        })
    }
}

/// The loss and accuracy on `data` of an MLP of `sizes` holding the weights of `file`.
pub(crate) fn evaluate_weights(
    framework: Framework,
    sizes: &[usize],
    seed: u64,
    file: &CheckpointFile,
    data: &Dataset,
    batch_size: usize,
) -> Result<Logs, Failure> {
    Ok(match framework {
        Framework::Candle => {
            let fresh = Model::mlp(sizes, seed)?;
            fresh.load_weights_from(
                &model_checkpoint::restore::Stored::weights(file),
                model_checkpoint::load::LoadOptions::default(),
            )?;
            let evaluator = model_checkpoint_candle::Trainer::new(
                fresh,
                Adam::new(vec![], ParamsAdam::default())?,
            );
            evaluator.evaluate(data, batch_size)?
        }
        Framework::Burn => {
            let fresh = model_checkpoint_burn::load_weights(Mlp::new(sizes, seed, &cpu())?, file)?;
            let step = BurnStep::new(fresh, burn::optim::AdamConfig::new().init(), 0.0, cpu());
            model_checkpoint_fit::Trainer::new(step).evaluate(data, batch_size)?
        }
    })
}
