//! Data-parallel GEMS equals single-device GEMS: replicas that each run part of a window's
//! micro-batches, with each task's gradients summed across them, end with the weights one device
//! reaches on the whole window, null space (from covariances collected per replica) and basis
//! refreshes included.
//!
//! The reference is the plain single-device loop (Burn's `GradientsAccumulator` over every
//! micro-batch, one `GemsOptimizer::step`), not the distributed code run once.
//!
//! On flex the replicas share the one device (flex has a single device and no collectives):
//! this proves the split, the weighting, the sum and that seeded bases agree. With the `wgpu`
//! feature the same runs over two logical WGPU devices created over one adapter (lavapipe
//! included), through Burn's device transfer; skipped without an adapter unless
//! `GEMS_REQUIRE_WGPU` is set. With `cuda` and two or more CUDA devices it runs through Burn's
//! collective `all_reduce`.

mod common;

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{Device, Tensor, TensorData};
use common::ToyModel;
use gems_core::{
    CovarianceAccumulator, DataParallel, Exchange, GemsConfig, KnowledgeSelection, Method,
    NullSpace, Replica, TaskGradients,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Every parameter's values, path-ordered.
type Weights = Vec<(String, Vec<f32>)>;

/// Optimizer steps; refreshes at steps 1, 4 and 7.
const STEPS: u64 = 7;
/// Micro-batches per window.
const MICRO_BATCHES: usize = 4;
/// Rows of each task in each micro-batch (task 1 has none in micro-batches 1 and 3, so its
/// gradients are absent on the second of two replicas).
const ROWS: [[usize; MICRO_BATCHES]; 2] = [[2, 3, 1, 2], [3, 0, 2, 0]];

fn config() -> GemsConfig {
    GemsConfig {
        method: Method::Gems,
        shared_rank: 6,
        task_rank: Some(3),
        refresh_every: 3,
        ..GemsConfig::default()
    }
}

/// Host values, seeded by their purpose.
fn values(count: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..count).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn matrix(rows: usize, cols: usize, seed: u64, device: &Device) -> Tensor<2> {
    Tensor::from_data(
        TensorData::new(values(rows * cols, seed), [rows, cols]),
        device,
    )
}

/// Task `task`'s loss on micro-batch `micro` of step `step`, weighted by its rows over the
/// window's rows of the task, as the training loop weighs it. `None` without rows.
fn weighted_loss(
    model: &ToyModel,
    step: u64,
    micro: usize,
    task: usize,
    device: &Device,
) -> Option<Tensor<1>> {
    let rows = ROWS[task][micro];
    if rows == 0 {
        return None;
    }
    let seed = (step << 16) ^ ((micro as u64) << 4) ^ task as u64;
    let inputs = matrix(rows, 32, seed, device);
    let targets = matrix(rows, 24, seed ^ 0xabc, device);
    let outputs = model.o.forward(model.q.forward(inputs).tanh());
    let window: usize = ROWS[task].iter().sum();
    Some(
        (outputs - targets)
            .powi_scalar(2)
            .mean()
            .mul_scalar(rows as f64 / window as f64),
    )
}

/// Knowledge covariances from the corpus rows `rows` (of 40).
fn covariances(rows: std::ops::Range<usize>, device: &Device) -> CovarianceAccumulator {
    let inner = device.clone().without_autodiff();
    let q_inputs = matrix(40, 32, 11, &inner).slice([rows.clone(), 0..32]);
    let o_inputs = matrix(40, 48, 12, &inner).slice([rows, 0..48]);
    let mut accumulator = CovarianceAccumulator::new();
    accumulator.observe("q.weight", q_inputs);
    accumulator.observe("o.weight", o_inputs);
    accumulator
}

fn null_space(accumulator: CovarianceAccumulator) -> NullSpace {
    accumulator
        .into_null_space(&KnowledgeSelection::EnergyFraction { fraction: 0.5 }, 0)
        .unwrap()
}

/// The reference: one device, the whole window, Burn's gradient accumulator.
fn single_device(device: &Device) -> Weights {
    let mut model = ToyModel::new(device);
    let mut optimizer = config()
        .init()
        .unwrap()
        .with_null_space(null_space(covariances(0..40, device)));
    for step in 0..STEPS {
        let tasks = (0..2)
            .map(|task| {
                let mut accumulator = GradientsAccumulator::<ToyModel>::new();
                let mut loss = 0.0;
                for micro in 0..MICRO_BATCHES {
                    if let Some(part) = weighted_loss(&model, step, micro, task, device) {
                        loss += part.clone().into_scalar::<f32>() as f64;
                        let gradients = GradientsParams::from_grads(part.backward(), &model);
                        accumulator.accumulate(&model, gradients);
                    }
                }
                TaskGradients {
                    gradients: accumulator.grads(),
                    loss,
                    samples: ROWS[task].iter().sum(),
                }
            })
            .collect();
        model = optimizer.step(0.02, model, tasks).unwrap().0;
    }
    model.values()
}

/// Data-parallel training, one replica per device (devices may repeat with the copy
/// exchange). Returns every replica's final weights, and how many refreshes happened.
fn data_parallel(devices: &[Device], exchange: Exchange) -> (Vec<Weights>, usize) {
    let parallel = DataParallel::new(devices.to_vec(), exchange).unwrap();
    // The corpus split in contiguous parts, one per replica, summed once before training.
    let n = devices.len();
    let shares = devices
        .iter()
        .enumerate()
        .map(|(r, device)| covariances(40 * r / n..40 * (r + 1) / n, device))
        .collect();
    let summed = parallel.sum_covariances(shares).unwrap();
    let first = ToyModel::new(&devices[0]);
    let mut replicas: Vec<Replica<ToyModel>> = devices
        .iter()
        .zip(summed)
        .map(|(device, covariances)| Replica {
            model: first.clone().fork(device),
            optimizer: config()
                .init()
                .unwrap()
                .with_null_space(null_space(covariances)),
        })
        .collect();
    let assignment = parallel.assign(MICRO_BATCHES);
    let mut refreshed = 0;
    for step in 0..STEPS {
        let shares = replicas
            .iter()
            .zip(devices)
            .zip(&assignment)
            .map(|((replica, device), micros)| {
                (0..2)
                    .map(|task| {
                        let mut accumulator = GradientsAccumulator::<ToyModel>::new();
                        let mut loss = 0.0;
                        let mut samples = 0;
                        for &micro in micros {
                            if let Some(part) =
                                weighted_loss(&replica.model, step, micro, task, device)
                            {
                                loss += part.clone().into_scalar::<f32>() as f64;
                                samples += ROWS[task][micro];
                                let gradients =
                                    GradientsParams::from_grads(part.backward(), &replica.model);
                                accumulator.accumulate(&replica.model, gradients);
                            }
                        }
                        TaskGradients {
                            gradients: accumulator.grads(),
                            loss,
                            samples,
                        }
                    })
                    .collect()
            })
            .collect();
        refreshed += parallel
            .step(
                0.02,
                replicas.iter_mut().map(Replica::parts).collect(),
                shares,
            )
            .unwrap()
            .refreshed;
    }
    (
        replicas.iter().map(|r| r.model.values()).collect(),
        refreshed,
    )
}

fn worst_difference(a: &Weights, b: &Weights) -> (String, f32) {
    a.iter()
        .zip(b)
        .map(|((path, x), (other, y))| {
            assert_eq!(path, other);
            let worst = x
                .iter()
                .zip(y)
                .map(|(u, v)| (u - v).abs())
                .fold(0.0f32, f32::max);
            (path.clone(), worst)
        })
        .fold((String::new(), 0.0), |best, item| {
            if item.1 > best.1 { item } else { best }
        })
}

/// Every replica matches the first to `between_replicas` (0: bit for bit) and the single
/// device to 1e-5.
fn assert_equivalent(devices: &[Device], exchange: Exchange, between_replicas: f32) {
    let reference = single_device(&devices[0]);
    let (replicas, refreshed) = data_parallel(devices, exchange);
    assert!(refreshed > 0, "the run must include basis refreshes");
    for (r, weights) in replicas.iter().enumerate() {
        let (path, apart) = worst_difference(&replicas[0], weights);
        let (worst_path, worst) = worst_difference(&reference, weights);
        eprintln!(
            "replica {r}: {apart:e} from replica 0 ({path}), {worst:e} from one device ({worst_path})"
        );
        assert!(
            apart <= between_replicas,
            "replica {r}: {path} differs from replica 0 by {apart:e}"
        );
        assert!(
            worst <= 1e-5,
            "replica {r}: {worst_path} differs from the single-device run by {worst:e}"
        );
    }
    // The run moved the weights: a no-op step would also match a no-op reference.
    let (_, moved) = worst_difference(&ToyModel::new(&devices[0]).values(), &reference);
    assert!(
        moved > 1e-3,
        "training barely moved the weights ({moved:e})"
    );
}

#[test]
fn one_replica_through_the_data_parallel_path_equals_the_plain_loop() {
    let device = Device::flex().autodiff();
    let reference = single_device(&device);
    let (replicas, _) = data_parallel(std::slice::from_ref(&device), Exchange::DeviceCopy);
    assert_eq!(replicas[0], reference);
}

#[test]
fn two_replicas_with_the_window_split_equal_one_device_on_flex() {
    let device = Device::flex().autodiff();
    assert_equivalent(&[device.clone(), device], Exchange::DeviceCopy, 0.0);
}

#[test]
fn three_replicas_with_uneven_shares_equal_one_device_on_flex() {
    let device = Device::flex().autodiff();
    assert_equivalent(
        &[device.clone(), device.clone(), device],
        Exchange::DeviceCopy,
        0.0,
    );
}

#[test]
fn micro_batches_are_dealt_round_robin() {
    let device = Device::flex();
    let parallel = DataParallel::new(vec![device.clone(), device], Exchange::DeviceCopy).unwrap();
    assert_eq!(parallel.assign(5), vec![vec![0, 2, 4], vec![1, 3]]);
    assert_eq!(parallel.assign(1), vec![vec![0], vec![]]);
}

#[test]
fn backends_without_collectives_and_empty_device_lists_are_refused() {
    for backend in ["flex", "ndarray", "cpu"] {
        let error = Exchange::for_backend(backend).unwrap_err().to_string();
        assert!(error.contains(&format!("`{backend}`")), "{error}");
        assert!(error.contains("GPU backend"), "{error}");
    }
    assert_eq!(Exchange::for_backend("cuda").unwrap(), Exchange::Collective);
    assert_eq!(Exchange::for_backend("wgpu").unwrap(), Exchange::DeviceCopy);
    let error = DataParallel::new(Vec::new(), Exchange::DeviceCopy)
        .unwrap_err()
        .to_string();
    assert!(error.contains("at least one device"), "{error}");
}

#[test]
fn shares_that_do_not_fit_the_replicas_are_refused() {
    let device = Device::flex().autodiff();
    let parallel =
        DataParallel::new(vec![device.clone(), device.clone()], Exchange::DeviceCopy).unwrap();
    let model = ToyModel::new(&device);
    let task = || TaskGradients {
        gradients: GradientsParams::new(),
        loss: 0.0,
        samples: 1,
    };
    let error = parallel
        .sum_tasks(&model, vec![vec![task()]])
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("2 replica(s) but 1 share(s)"), "{error}");
    let error = parallel
        .sum_tasks(&model, vec![vec![task(), task()], vec![task()]])
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("replica 1 has 1"), "{error}");
    let mut replica = Replica {
        model,
        optimizer: config().init().unwrap(),
    };
    let error = parallel
        .step(0.1, vec![replica.parts()], vec![vec![task()], vec![task()]])
        .unwrap_err()
        .to_string();
    assert!(error.contains("2 device(s) but 1 replica(s)"), "{error}");
}

#[cfg(feature = "wgpu")]
mod wgpu {
    use super::*;

    /// Two logical WGPU devices over the same adapter: the adapter's own device, and the same
    /// wgpu setup registered again (cubecl then runs it as a second device, `Existing(0)`).
    fn two_devices() -> Option<[Device; 2]> {
        common::wgpu::found_or_skipped("two WGPU devices", || {
            let (first, setup) = Device::wgpu_options().init_with_setup().ok()?;
            let second = Device::wgpu_options().setup(setup).init().ok()?;
            let ones = Tensor::<1>::ones([4], &first).to_device(&second);
            (ones.sum().into_scalar::<f32>() == 4.0 && first != second).then_some([first, second])
        })
    }

    #[test]
    fn two_wgpu_replicas_with_the_window_split_equal_one_device() {
        let Some([first, second]) = two_devices() else {
            return;
        };
        assert_equivalent(
            &[first.autodiff(), second.autodiff()],
            Exchange::DeviceCopy,
            1e-6,
        );
    }
}

#[cfg(feature = "cuda")]
#[test]
fn cuda_replicas_through_the_collective_equal_one_device() {
    let devices = burn::tensor::Device::enumerate(burn::tensor::DeviceType::Cuda).into_vec();
    if devices.len() < 2 {
        eprintln!("skipped: {} CUDA device(s), 2 needed", devices.len());
        return;
    }
    let devices: Vec<Device> = devices.into_iter().take(2).map(Device::autodiff).collect();
    assert_equivalent(&devices, Exchange::Collective, 1e-6);
}
