//! The optimizer on the WGPU backend must give what it gives on flex.
//!
//! Runs where a WGPU adapter exists (a GPU, or Mesa's software Vulkan driver lavapipe:
//! `apt-get install mesa-vulkan-drivers libvulkan1`). Without one the test says it is skipped,
//! unless `GEMS_REQUIRE_WGPU` is set (CI sets it), which makes a missing adapter a failure.
#![cfg(feature = "wgpu")]

mod common;

use burn::module::Module;
use burn::tensor::Device;
use common::wgpu::wgpu_device;
use common::{ToyModel, seeded_gradients};
use gems_core::{CovarianceAccumulator, GemsConfig, KnowledgeSelection, Method, TaskGradients};

/// Eight GEMS steps (null space, two tasks, a refresh) on `device`, from the same initial
/// weights and gradients whatever the device.
fn train(device: &Device) -> Vec<(String, Vec<f32>)> {
    let mut model = ToyModel::new(&Device::flex().autodiff()).fork(device);
    let inner = device.clone().without_autodiff();
    let mut covariances = CovarianceAccumulator::new();
    let inputs = common::tensor(
        &common::gaussian(
            64,
            32,
            &mut <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1),
        ),
        &inner,
    );
    covariances.observe("q.weight", inputs.slice([0..64, 0..32]));
    covariances.observe(
        "o.weight",
        common::tensor(
            &common::gaussian(
                64,
                48,
                &mut <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(2),
            ),
            &inner,
        ),
    );
    let null_space = covariances
        .into_null_space(&KnowledgeSelection::EnergyFraction { fraction: 0.5 }, 0)
        .unwrap();
    let config = GemsConfig {
        method: Method::Gems,
        shared_rank: 6,
        task_rank: Some(3),
        refresh_every: 4,
        ..GemsConfig::default()
    };
    let mut optimizer = config.init().unwrap().with_null_space(null_space);
    for step in 0..8 {
        let tasks = (0..2)
            .map(|t| TaskGradients {
                gradients: seeded_gradients(&model, 50 + 2 * step + t, 1.0),
                loss: 1.0 + t as f64,
                samples: 2 + t as usize,
            })
            .collect();
        model = optimizer.step(0.01, model, tasks).unwrap().0;
    }
    model.values()
}

#[test]
fn gems_steps_on_wgpu_match_flex() {
    let Some(device) = wgpu_device() else { return };
    let on_flex = train(&Device::flex().autodiff());
    let on_wgpu = train(&device.autodiff());
    let paths = |params: &[(String, Vec<f32>)]| -> Vec<(String, usize)> {
        params
            .iter()
            .map(|(path, values)| (path.clone(), values.len()))
            .collect()
    };
    assert_eq!(
        paths(&on_flex),
        paths(&on_wgpu),
        "the same parameters, in the same order, with the same sizes"
    );
    for ((path, expected), (_, actual)) in on_flex.iter().zip(&on_wgpu) {
        let worst = expected
            .iter()
            .zip(actual)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst <= 1e-4, "{path}: WGPU differs from flex by {worst:e}");
    }
}
