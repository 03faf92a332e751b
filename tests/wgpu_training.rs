//! Training steps of real models on the WGPU backend (kernel fusion and autotune on, as the
//! `wgpu` feature builds it) must give what they give on flex.
//!
//! A tiny T5 and a tiny Qwen2 take two GEMS steps (knowledge bases, two tasks, a basis refresh
//! on the first step) from the same seeded weights and batches on both backends; every
//! parameter is then compared by path. Runs where a WGPU adapter exists (a GPU, or Mesa's
//! software Vulkan driver lavapipe: `apt-get install mesa-vulkan-drivers libvulkan1`). Without
//! one the test says it is skipped, unless `GEMS_REQUIRE_WGPU` is set (CI sets it), which makes
//! a missing adapter a failure.
#![cfg(feature = "wgpu")]

// Shared with gems-core's tests, which use all of it.
#[allow(dead_code)]
#[path = "../gems-core/tests/common/wgpu.rs"]
mod wgpu_adapter;

use std::sync::Mutex;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor};
use gems_core::{
    CovarianceAccumulator, GemsConfig, KnowledgeBasis, KnowledgeSelection, Method, NullSpace,
    TaskGradients,
};
use gems_models::qwen2::Qwen2Config;
use gems_models::t5::{FeedForwardProj, T5Config};
use gems_models::{Backbone, LinearInputObserver, LmBatch, ModelConfig};

const VOCAB: usize = 48;
const STEPS: usize = 2;

/// Token ids in `2..VOCAB` from a fixed linear congruential stream.
fn ids(rows: usize, columns: usize, seed: u64) -> Vec<Vec<i64>> {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..rows)
        .map(|_| {
            (0..columns)
                .map(|_| {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    2 + ((state >> 33) % (VOCAB as u64 - 2)) as i64
                })
                .collect()
        })
        .collect()
}

/// One task's batch: T5 gets 3 rows of 6 source and 3 target tokens, the second row padded;
/// Qwen2 gets 3 rows of 8 tokens with labels on the last 3 and the second row left-padded.
fn batch(model: &ModelConfig, task: u64, device: &Device) -> LmBatch {
    let mut mask = vec![vec![1i64; 8]; 3];
    match model {
        ModelConfig::T5(_) => {
            let mut mask: Vec<Vec<i64>> = mask.iter().map(|r| r[..6].to_vec()).collect();
            mask[1][4..].fill(0);
            let mut input = ids(3, 6, 10 + task);
            input[1][4..].fill(0);
            LmBatch::from_rows(&input, &mask, &ids(3, 3, 20 + task), device).unwrap()
        }
        ModelConfig::Qwen2(_) => {
            mask[1][..2].fill(0);
            let mut input = ids(3, 8, 30 + task);
            input[1][..2].fill(0);
            let labels: Vec<Vec<i64>> = input
                .iter()
                .map(|row| {
                    row.iter()
                        .enumerate()
                        .map(|(i, &t)| if i < 5 { -100 } else { t })
                        .collect()
                })
                .collect();
            LmBatch::from_rows(&input, &mask, &labels, device).unwrap()
        }
    }
}

/// Feeds every projected layer's inputs to the accumulator.
struct Observer<'a>(&'a mut CovarianceAccumulator);

impl LinearInputObserver for Observer<'_> {
    fn observe(&mut self, path: &str, inputs: Tensor<2>) {
        self.0.observe(&format!("{path}.weight"), inputs);
    }
}

/// Knowledge bases from the initial model's inputs on flex (so that both backends project
/// against the very same bases), copied to `device`.
fn null_space(model: &Backbone, config: &ModelConfig, device: &Device) -> NullSpace {
    let mut covariances = CovarianceAccumulator::new();
    model
        .valid()
        .forward_observed(
            &batch(config, 7, &Device::flex()),
            &mut Observer(&mut covariances),
        )
        .unwrap();
    let on_flex = covariances
        .into_null_space(&KnowledgeSelection::EnergyFraction { fraction: 0.5 }, 0)
        .unwrap();
    let mut copied = NullSpace::new();
    for (path, basis) in on_flex.iter() {
        copied.insert(
            path.clone(),
            KnowledgeBasis {
                basis: basis
                    .basis
                    .as_ref()
                    .map(|b| Tensor::from_data(b.to_data(), device)),
                input_axis: basis.input_axis,
                retained_energy: basis.retained_energy,
            },
        );
    }
    assert!(!copied.is_empty(), "no knowledge bases were collected");
    copied
}

/// What a run leaves: the losses of every step and task, and every parameter by path.
struct Trained {
    losses: Vec<f32>,
    parameters: Vec<(String, Vec<f32>)>,
}

/// The initial weights: drawn on flex (with autodiff, so that forks train) from a fixed seed.
///
/// The seed is the flex device's, shared by every thread: the tests of this file run in
/// parallel, so seeding and drawing happen under one lock, or one test's draws would consume
/// the other's stream. Parameters are initialised lazily, drawing when first read, so every
/// one is read before the lock is released.
fn initial(config: &ModelConfig) -> Backbone {
    static SEEDED_DRAW: Mutex<()> = Mutex::new(());
    let _draw = SEEDED_DRAW
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let flex = Device::flex().autodiff();
    flex.seed(3);
    let model = Backbone::new(config, &flex).unwrap();
    values(&model);
    model
}

fn values(model: &Backbone) -> Vec<(String, Vec<f32>)> {
    let mut collector = Collector::default();
    model.visit(&mut collector);
    collector.values
}

/// `STEPS` GEMS steps of the model of `config` on `device` (an autodiff device), from
/// [`initial`]'s weights.
fn train(config: &ModelConfig, device: &Device) -> Trained {
    let initial = initial(config);
    let mut model = initial.clone().fork(device);
    let inner = device.clone().without_autodiff();
    let mut optimizer = GemsConfig {
        method: Method::Gems,
        shared_rank: 4,
        task_rank: Some(2),
        refresh_every: 200,
        ..GemsConfig::default()
    }
    .init()
    .unwrap()
    .with_null_space(null_space(&initial, config, &inner));
    let mut losses = Vec::new();
    for _ in 0..STEPS {
        let tasks = (0..2)
            .map(|task| {
                let loss = model.loss(&batch(config, task, device)).unwrap();
                let value = loss.clone().into_scalar::<f32>();
                losses.push(value);
                TaskGradients {
                    gradients: GradientsParams::from_grads(loss.backward(), &model),
                    loss: f64::from(value),
                    samples: 3,
                }
            })
            .collect();
        let (stepped, report) = optimizer.step(1e-2, model, tasks).unwrap();
        assert!(report.failed_refreshes.is_empty(), "{report:?}");
        model = stepped;
    }
    Trained {
        losses,
        parameters: values(&model),
    }
}

#[derive(Default)]
struct Collector {
    path: Vec<String>,
    values: Vec<(String, Vec<f32>)>,
}

impl ModuleVisitor for Collector {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.into());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let values = param.val().into_data().iter::<f32>().collect();
        self.values.push((self.path.join("."), values));
    }
}

fn norm(values: impl Iterator<Item = f32>) -> f64 {
    values.map(|v| f64::from(v).powi(2)).sum::<f64>().sqrt()
}

/// Losses agree to 1e-4 (relative); every parameter's update (trained − initial) agrees with
/// flex's to 1% of its norm, which tolerates Adam's sign-like first steps flipping on a few
/// gradient entries that are zero up to rounding, but no wrong kernel.
fn assert_same_training(config: &ModelConfig, wgpu: &Device) {
    // The reference must be reproducible, or the comparison proves nothing.
    let start = values(&initial(config));
    assert_eq!(start, values(&initial(config)));
    let on_flex = train(config, &Device::flex().autodiff());
    let on_wgpu = train(config, &wgpu.clone().autodiff());
    for (expected, actual) in on_flex.losses.iter().zip(&on_wgpu.losses) {
        assert!(
            (expected - actual).abs() <= 1e-4 * expected.abs(),
            "losses differ: flex {:?}, wgpu {:?}",
            on_flex.losses,
            on_wgpu.losses
        );
    }
    assert_eq!(on_flex.parameters.len(), on_wgpu.parameters.len());
    let mut moved = 0;
    for (((path, start), (_, expected)), (wgpu_path, actual)) in start
        .iter()
        .zip(&on_flex.parameters)
        .zip(&on_wgpu.parameters)
    {
        assert_eq!(path, wgpu_path);
        let update = norm(expected.iter().zip(start).map(|(e, s)| e - s));
        let difference = norm(expected.iter().zip(actual).map(|(e, a)| e - a));
        assert!(
            difference <= 1e-2 * update + 1e-6,
            "{path}: WGPU's update differs from flex's by {difference:e} (update norm {update:e})"
        );
        moved += usize::from(update > 0.0);
    }
    assert!(
        moved * 2 > start.len(),
        "training moved only {moved} of {} parameters",
        start.len()
    );
}

#[test]
fn t5_gems_steps_on_wgpu_match_flex() {
    let Some(device) = wgpu_adapter::wgpu_device() else {
        return;
    };
    let mut config = T5Config::new(VOCAB, 16, 4, 32, 1, 4, FeedForwardProj::RELU);
    config.dropout_rate = 0.0;
    assert_same_training(&ModelConfig::T5(config), &device);
}

#[test]
fn qwen2_gems_steps_on_wgpu_match_flex() {
    let Some(device) = wgpu_adapter::wgpu_device() else {
        return;
    };
    let mut config = Qwen2Config::new(VOCAB, 16, 32, 1, 4, 2);
    config.pad_token_id = Some(0);
    assert_same_training(&ModelConfig::Qwen2(config), &device);
}
