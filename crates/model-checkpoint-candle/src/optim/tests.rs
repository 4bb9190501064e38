//! Our optimizers against candle-nn's on the same inputs: the same bits after several steps.

use candle_core::{DType, Device, Tensor, Var};

use super::*;

/// A small least-squares problem: two variables, a loss with real gradients.
struct Problem {
    x: Tensor,
    y: Tensor,
}

impl Problem {
    fn new() -> Self {
        let dev = Device::Cpu;
        let x: Vec<f32> = (0..24).map(|i| ((i * 7 % 11) as f32 - 5.0) / 4.0).collect();
        let y: Vec<f32> = (0..8).map(|i| ((i * 3 % 5) as f32 - 2.0) / 3.0).collect();
        Problem {
            x: Tensor::from_vec(x, (8, 3), &dev).expect("x"),
            y: Tensor::from_vec(y, (8, 1), &dev).expect("y"),
        }
    }

    fn vars(&self) -> (Var, Var) {
        let dev = Device::Cpu;
        let w = Var::from_tensor(&Tensor::new(&[[0.3f32], [-0.2], [0.5]], &dev).expect("w"))
            .expect("var");
        let b = Var::zeros(1, DType::F32, &dev).expect("b");
        (w, b)
    }

    fn loss(&self, w: &Var, b: &Var) -> Tensor {
        let pred = self
            .x
            .matmul(w.as_tensor())
            .expect("matmul")
            .broadcast_add(b.as_tensor())
            .expect("add");
        (pred - &self.y)
            .expect("sub")
            .sqr()
            .expect("sqr")
            .mean_all()
            .expect("mean")
    }
}

fn bits(v: &Var) -> Vec<u32> {
    v.as_tensor()
        .flatten_all()
        .expect("flat")
        .to_vec1::<f32>()
        .expect("f32")
        .iter()
        .map(|x| x.to_bits())
        .collect()
}

fn run_ours(make: impl Fn(Vec<(String, Var)>) -> Box<dyn Optimizer>) -> (Vec<u32>, Vec<u32>) {
    let p = Problem::new();
    let (w, b) = p.vars();
    let mut opt = make(vec![("w".into(), w.clone()), ("b".into(), b.clone())]);
    for _ in 0..6 {
        let grads = p.loss(&w, &b).backward().expect("backward");
        opt.step(&grads).expect("step");
    }
    (bits(&w), bits(&b))
}

fn run_candle<O: candle_nn::Optimizer>(config: O::Config) -> (Vec<u32>, Vec<u32>) {
    let p = Problem::new();
    let (w, b) = p.vars();
    let mut opt = O::new(vec![w.clone(), b.clone()], config).expect("an optimizer");
    for _ in 0..6 {
        opt.backward_step(&p.loss(&w, &b)).expect("step");
    }
    (bits(&w), bits(&b))
}

#[test]
fn sgd_without_momentum_equals_candle_sgd() {
    let ours = run_ours(|vars| {
        Box::new(
            Sgd::new(
                vars,
                ParamsSgd {
                    lr: 0.05,
                    ..ParamsSgd::default()
                },
            )
            .expect("sgd"),
        )
    });
    assert_eq!(ours, run_candle::<candle_nn::SGD>(0.05));
}

#[test]
fn adamw_equals_candle_adamw() {
    let ours =
        run_ours(|vars| Box::new(Adam::new(vars, ParamsAdam::adamw().lr(0.01)).expect("adamw")));
    let theirs = run_candle::<candle_nn::AdamW>(candle_nn::ParamsAdamW {
        lr: 0.01,
        ..Default::default()
    });
    assert_eq!(ours, theirs);
}

#[test]
fn adam_equals_candle_adamw_without_decay() {
    let ours =
        run_ours(|vars| Box::new(Adam::new(vars, ParamsAdam::default().lr(0.01)).expect("adam")));
    let theirs = run_candle::<candle_nn::AdamW>(candle_nn::ParamsAdamW {
        lr: 0.01,
        weight_decay: 0.0,
        ..Default::default()
    });
    assert_eq!(ours, theirs);
}

#[test]
fn momentum_changes_the_path() {
    let plain = run_ours(|vars| {
        Box::new(
            Sgd::new(
                vars,
                ParamsSgd {
                    lr: 0.05,
                    ..ParamsSgd::default()
                },
            )
            .expect("sgd"),
        )
    });
    let heavy = run_ours(|vars| {
        Box::new(
            Sgd::new(
                vars,
                ParamsSgd {
                    lr: 0.05,
                    momentum: 0.9,
                    nesterov: false,
                },
            )
            .expect("sgd"),
        )
    });
    assert_ne!(plain, heavy);
}
