//! GEMS inside your own Burn project: a toy two-task model, no language model involved.
//!
//! A shared trunk feeds two heads, one per task. Each step runs one backward pass per task,
//! hands both gradients to the optimizer with the tasks' losses and sample counts, and prints
//! the losses and the gate. Before training, the trunk's and heads' input covariances on
//! "general" data (confined to a few directions) give the knowledge bases that null-space
//! projection protects: the example checks at the end that the model's outputs on general data
//! did not move, while both task losses fell.
//!
//! ```text
//! cargo run --release --example embed_optimizer -- --steps 300 --method gems
//! ```

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::tensor::activation::tanh;
use burn::tensor::{Device, Distribution, Tensor};
use clap::Parser;
use gems_core::{CovarianceAccumulator, GemsConfig, GemsError, Method, TaskGradients};

const INPUTS: usize = 32;
const HIDDEN: usize = 64;
const OUTPUTS: usize = 8;
/// General inputs live in the first few input directions only.
const GENERAL_DIRECTIONS: usize = 6;

/// Command-line options.
#[derive(Parser)]
struct Args {
    /// Optimizer steps.
    #[arg(long, default_value_t = 300)]
    steps: usize,
    /// gems, galore, adamw, gems-no-msd or gems-no-nsp.
    #[arg(long, default_value = "gems")]
    method: Method,
    /// Learning rate.
    #[arg(long, default_value_t = 0.02)]
    learning_rate: f64,
    /// Compute backend (see `gems_core::available_backends`).
    #[arg(long, default_value = "flex")]
    backend: String,
}

/// A shared trunk and one head per task. Bias-free like T5's layers: biases are trained with
/// plain AdamW (as in the paper), so they would shift outputs on general data too.
#[derive(Module, Debug)]
struct TwoTaskModel {
    trunk: Linear,
    search_head: Linear,
    rec_head: Linear,
}

impl TwoTaskModel {
    fn new(device: &Device) -> Self {
        Self {
            trunk: LinearConfig::new(INPUTS, HIDDEN)
                .with_bias(false)
                .init(device),
            search_head: LinearConfig::new(HIDDEN, OUTPUTS)
                .with_bias(false)
                .init(device),
            rec_head: LinearConfig::new(HIDDEN, OUTPUTS)
                .with_bias(false)
                .init(device),
        }
    }

    fn hidden(&self, inputs: Tensor<2>) -> Tensor<2> {
        tanh(self.trunk.forward(inputs))
    }

    fn forward(&self, inputs: Tensor<2>, task: usize) -> Tensor<2> {
        let head = if task == 0 {
            &self.search_head
        } else {
            &self.rec_head
        };
        head.forward(self.hidden(inputs))
    }
}

/// A fixed random "teacher" per task that the model must learn to imitate.
struct Teacher {
    first: Tensor<2>,
    second: Tensor<2>,
}

impl Teacher {
    fn new(device: &Device) -> Self {
        let normal = Distribution::Normal(0.0, 1.0);
        Self {
            first: Tensor::random([INPUTS, HIDDEN], normal, device)
                .div_scalar((INPUTS as f64).sqrt()),
            second: Tensor::random([HIDDEN, OUTPUTS], normal, device)
                .div_scalar((HIDDEN as f64).sqrt()),
        }
    }

    fn targets(&self, inputs: Tensor<2>) -> Tensor<2> {
        tanh(inputs.matmul(self.first.clone())).matmul(self.second.clone())
    }
}

fn task_inputs(batch: usize, device: &Device) -> Tensor<2> {
    Tensor::random([batch, INPUTS], Distribution::Normal(0.0, 1.0), device)
}

/// General data: only the first GENERAL_DIRECTIONS input coordinates vary.
fn general_inputs(batch: usize, device: &Device) -> Tensor<2> {
    let varying = Tensor::random(
        [batch, GENERAL_DIRECTIONS],
        Distribution::Normal(0.0, 1.0),
        device,
    );
    let fixed = Tensor::zeros([batch, INPUTS - GENERAL_DIRECTIONS], device);
    Tensor::cat(vec![varying, fixed], 1)
}

fn mse(prediction: Tensor<2>, target: Tensor<2>) -> Tensor<1> {
    (prediction - target).square().mean()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let device = gems_core::device_from_name(&args.backend)?.autodiff();
    device.seed(42);
    let mut model = TwoTaskModel::new(&device);
    let teachers = [Teacher::new(&device), Teacher::new(&device)];

    // Knowledge bases: the inputs each projected layer sees on general data, streamed batch by
    // batch. Paths are the weights' module paths.
    let mut covariances = CovarianceAccumulator::new();
    let frozen = model.valid();
    for _ in 0..8 {
        let inputs = general_inputs(128, &device.clone().without_autodiff());
        let hidden = frozen.hidden(inputs.clone());
        covariances.observe("trunk.weight", inputs);
        covariances.observe("search_head.weight", hidden.clone());
        covariances.observe("rec_head.weight", hidden);
    }
    let config = GemsConfig {
        method: args.method,
        shared_rank: 8,
        task_rank: Some(4),
        refresh_every: 50,
        scale: 1.0,
        target_modules: vec!["trunk".into(), "search_head".into(), "rec_head".into()],
        ..GemsConfig::default()
    };
    let null_space = covariances.into_null_space(&config.knowledge, 0)?;
    for (path, basis) in null_space.iter() {
        println!("knowledge basis of {path}: {} directions", basis.rank());
    }
    let probe = general_inputs(256, &device.clone().without_autodiff());
    let general_before = frozen.forward(probe.clone(), 0);
    let mut optimizer = config.init()?.with_null_space(null_space);

    let evaluate = |model: &TwoTaskModel| -> [f32; 2] {
        let model = model.valid();
        let inputs = task_inputs(512, &device.clone().without_autodiff());
        [0, 1].map(|task| {
            mse(
                model.forward(inputs.clone(), task),
                teachers[task].targets(inputs.clone()),
            )
            .into_scalar::<f32>()
        })
    };
    let start = evaluate(&model);
    println!(
        "step     0  search loss {:.4}  rec loss {:.4}",
        start[0], start[1]
    );
    let started = std::time::Instant::now();
    let mut refreshes = 0;
    for step in 1..=args.steps {
        let mut tasks = Vec::with_capacity(2);
        for (task, batch) in [(0, 48), (1, 16)] {
            let inputs = task_inputs(batch, &device);
            let loss = mse(
                model.forward(inputs.clone(), task),
                teachers[task].targets(inputs),
            );
            let value = loss.clone().into_scalar::<f32>() as f64;
            let gradients = GradientsParams::from_grads(loss.backward(), &model);
            tasks.push(TaskGradients {
                gradients,
                loss: value,
                samples: batch,
            });
        }
        let (next, report) = optimizer
            .step(args.learning_rate, model, tasks)
            .map_err(GemsError::from)?;
        model = next;
        refreshes += report.refreshed;
        if step % 50 == 0 || step == args.steps {
            let losses = evaluate(&model);
            println!(
                "step {step:>5}  search loss {:.4}  rec loss {:.4}  gate [{:.2}, {:.2}]  basis refreshes so far {refreshes}",
                losses[0], losses[1], report.gate[0], report.gate[1]
            );
        }
    }
    let end = evaluate(&model);
    let drift = (model.valid().forward(probe, 0) - general_before.clone())
        .square()
        .sum()
        .sqrt()
        / general_before.square().sum().sqrt();
    let drift = drift.into_scalar::<f32>();
    println!(
        "{} steps in {:.1} s; relative output drift on general data: {drift:.2e}",
        args.steps,
        started.elapsed().as_secs_f64()
    );
    if !(end[0] < 0.5 * start[0] && end[1] < 0.5 * start[1]) {
        return Err(format!("task losses did not fall enough: {start:?} -> {end:?}").into());
    }
    Ok(())
}
