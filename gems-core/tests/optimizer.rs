//! The optimizer against float64 references and its guarantees.

mod common;

use burn::module::Param;
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use common::{ToyModel, device, max_abs_cross, orthonormality_error, seeded_gradients};
use faer::Mat;
use gems_core::host::{thin_svd, to_host};
use gems_core::projector::Side;
use gems_core::subspace::{SubspacePlan, WeightSubspaces};
use gems_core::{
    CovarianceAccumulator, FactoredGradient, GateConfig, GemsConfig, GemsError, KnowledgeBasis,
    KnowledgeSelection, Method, MomentTransfer, SvdMethod, TaskGradients,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn host_of(values: &[f32], rows: usize, cols: usize) -> Mat<f64> {
    Mat::from_fn(rows, cols, |i, j| values[i * cols + j] as f64)
}

fn gradient_values(gradients: &GradientsParams, param: &Param<Tensor<2>>) -> Vec<f32> {
    gradients
        .get::<2>(param.id)
        .unwrap()
        .into_data()
        .try_into_vec_as::<f32>()
        .unwrap()
}

fn bias_gradient_values(gradients: &GradientsParams, param: &Param<Tensor<1>>) -> Vec<f32> {
    gradients
        .get::<1>(param.id)
        .unwrap()
        .into_data()
        .try_into_vec_as::<f32>()
        .unwrap()
}

/// Float64 Adam state of one matrix, written from the textbook formulas.
struct ReferenceAdam {
    first: Mat<f64>,
    second: Mat<f64>,
    steps: i32,
}

impl ReferenceAdam {
    fn new(rows: usize, cols: usize) -> Self {
        Self {
            first: Mat::zeros(rows, cols),
            second: Mat::zeros(rows, cols),
            steps: 0,
        }
    }

    fn direction(&mut self, gradient: &Mat<f64>, config: &GemsConfig) -> Mat<f64> {
        self.steps += 1;
        let (b1, b2) = (config.beta1, config.beta2);
        let c1 = 1.0 - b1.powi(self.steps);
        let c2 = 1.0 - b2.powi(self.steps);
        Mat::from_fn(gradient.nrows(), gradient.ncols(), |i, j| {
            let g = gradient[(i, j)];
            self.first[(i, j)] = b1 * self.first[(i, j)] + (1.0 - b1) * g;
            self.second[(i, j)] = b2 * self.second[(i, j)] + (1.0 - b2) * g * g;
            (self.first[(i, j)] / c1) / ((self.second[(i, j)] / c2).sqrt() + config.epsilon)
        })
    }

    /// One AdamW step of `weight` on the gradient `0.75·search + 0.25·rec` (the two tasks'
    /// samples, 6 and 2, of [`search_and_rec`]), with decoupled weight decay.
    fn step(
        &mut self,
        weight: &mut Mat<f64>,
        search: &Mat<f64>,
        rec: &Mat<f64>,
        lr: f64,
        config: &GemsConfig,
    ) {
        let (rows, cols) = (weight.nrows(), weight.ncols());
        let merged = Mat::from_fn(rows, cols, |i, j| {
            0.75 * search[(i, j)] + 0.25 * rec[(i, j)]
        });
        let direction = self.direction(&merged, config);
        *weight = Mat::from_fn(rows, cols, |i, j| {
            weight[(i, j)] - lr * (direction[(i, j)] + config.weight_decay * weight[(i, j)])
        });
    }
}

/// The search task's and the rec task's gradients of one step, with 6 and 2 samples.
fn search_and_rec(search: GradientsParams, rec: GradientsParams) -> Vec<TaskGradients> {
    vec![
        TaskGradients {
            gradients: search,
            loss: 1.0,
            samples: 6,
        },
        TaskGradients {
            gradients: rec,
            loss: 2.0,
            samples: 2,
        },
    ]
}

/// One projected weight under GaLore, in float64: basis from the exact SVD of the first
/// gradient on the smaller side, Adam in the subspace, scale, decoupled weight decay.
struct ReferenceGalore {
    weight: Mat<f64>,
    basis: Option<Mat<f64>>,
    adam: Option<ReferenceAdam>,
    transposed: bool,
}

impl ReferenceGalore {
    fn step(&mut self, gradient: &Mat<f64>, lr: f64, config: &GemsConfig) {
        let canonical = if self.transposed {
            gradient.transpose().to_owned()
        } else {
            gradient.clone()
        };
        let basis = self.basis.get_or_insert_with(|| {
            let (left, _) = thin_svd(&canonical).unwrap();
            Mat::from_fn(left.nrows(), config.shared_rank, |i, j| left[(i, j)])
        });
        let coordinates = basis.transpose() * &canonical;
        let adam = self
            .adam
            .get_or_insert_with(|| ReferenceAdam::new(coordinates.nrows(), coordinates.ncols()));
        let normalized = adam.direction(&coordinates, config);
        let back = &*basis * &normalized;
        let back = if self.transposed {
            back.transpose().to_owned()
        } else {
            back
        };
        let weight = &self.weight;
        self.weight = Mat::from_fn(weight.nrows(), weight.ncols(), |i, j| {
            let delta = config.scale * back[(i, j)] + config.weight_decay * weight[(i, j)];
            weight[(i, j)] - lr * delta
        });
    }
}

fn max_abs_difference(reference: &Mat<f64>, values: &[f32]) -> f64 {
    let cols = reference.ncols();
    (0..reference.nrows())
        .flat_map(|i| (0..cols).map(move |j| (i, j)))
        .map(|(i, j)| (reference[(i, j)] - values[i * cols + j] as f64).abs())
        .fold(0.0, f64::max)
}

fn weight_values(param: &Param<Tensor<2>>) -> Vec<f32> {
    param.val().into_data().try_into_vec_as::<f32>().unwrap()
}

#[test]
fn galore_matches_a_float64_reference_over_three_steps() {
    let device = device();
    let config = GemsConfig {
        method: Method::Galore,
        shared_rank: 8,
        svd: SvdMethod::Exact,
        weight_decay: 0.1,
        diagnostics: false,
        ..GemsConfig::default()
    };
    let lr = 0.05;
    let mut model = ToyModel::new(&device);
    let mut optimizer = config.clone().init().unwrap();

    let values = |p: &Param<Tensor<2>>| weight_values(p);
    let mut q_ref = ReferenceGalore {
        weight: host_of(&values(&model.q.weight), 32, 48),
        basis: None,
        adam: None,
        transposed: false, // [32, 48]: rows are the smaller side
    };
    let mut o_ref = ReferenceGalore {
        weight: host_of(&values(&model.o.weight), 48, 24),
        basis: None,
        adam: None,
        transposed: true, // [48, 24]: columns are the smaller side
    };
    let bias = model.q.bias.as_ref().unwrap();
    let mut bias_ref = host_of(
        &bias.val().into_data().try_into_vec_as::<f32>().unwrap(),
        1,
        48,
    );
    let mut bias_adam = ReferenceAdam::new(1, 48);

    for step in 0..3 {
        let gradients = seeded_gradients(&model, 100 + step, 1.0);
        let q_gradient = host_of(&gradient_values(&gradients, &model.q.weight), 32, 48);
        let o_gradient = host_of(&gradient_values(&gradients, &model.o.weight), 48, 24);
        let bias_gradient = host_of(
            &bias_gradient_values(&gradients, model.q.bias.as_ref().unwrap()),
            1,
            48,
        );
        q_ref.step(&q_gradient, lr, &config);
        o_ref.step(&o_gradient, lr, &config);
        let direction = bias_adam.direction(&bias_gradient, &config);
        bias_ref = Mat::from_fn(1, 48, |i, j| {
            bias_ref[(i, j)] - lr * (direction[(i, j)] + config.weight_decay * bias_ref[(i, j)])
        });
        model = optimizer.step_single(lr, model, gradients).unwrap().0;
    }

    let q_error = max_abs_difference(&q_ref.weight, &values(&model.q.weight));
    let o_error = max_abs_difference(&o_ref.weight, &values(&model.o.weight));
    let bias_values = model
        .q
        .bias
        .as_ref()
        .unwrap()
        .val()
        .into_data()
        .try_into_vec_as::<f32>()
        .unwrap();
    let bias_error = max_abs_difference(&bias_ref, &bias_values);
    assert!(
        q_error <= 1e-5,
        "q differs from the reference by {q_error:e}"
    );
    assert!(
        o_error <= 1e-5,
        "o differs from the reference by {o_error:e}"
    );
    assert!(
        bias_error <= 1e-5,
        "bias (AdamW) differs from the reference by {bias_error:e}"
    );
    // And the steps did move the weights: the comparison is not vacuous.
    let moved = max_abs_difference(
        &q_ref.weight,
        &weight_values(&ToyModel::new(&device).q.weight),
    );
    assert!(moved > 1e-2, "weights moved by only {moved:e}");
}

#[test]
fn task_bases_are_orthogonal_to_the_shared_basis() {
    let device = burn::tensor::Device::flex();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut gradient =
        |rows, cols| common::tensor(&common::gaussian(rows, cols, &mut rng), &device);
    for shape in [[64, 96], [96, 64]] {
        let tasks = [
            gradient(shape[0], shape[1]),
            gradient(shape[0], shape[1]),
            gradient(shape[0], shape[1]),
        ];
        let merged = tasks
            .iter()
            .cloned()
            .reduce(|a, b| a + b)
            .unwrap()
            .div_scalar(3.0);
        // A fourth task whose gradient is the merged one: its residual is what is left outside
        // the shared subspace, so its basis still must avoid it.
        let mut all: Vec<Option<Tensor<2>>> = tasks.iter().cloned().map(Some).collect();
        all.push(Some(merged.clone()));
        let plan = SubspacePlan::new(
            shape,
            Side::smaller_of(shape),
            16,
            8,
            0,
            SvdMethod::default(),
            MomentTransfer::Rotate,
        );
        let mut sketch_rng = ChaCha8Rng::seed_from_u64(0);
        let (subspaces, failures) = WeightSubspaces::refresh(
            None,
            &merged,
            &all,
            &plan,
            0,
            Default::default(),
            &mut sketch_rng,
        );
        assert!(failures.is_empty(), "{failures:?}");
        let shared = &subspaces.shared.projector.basis;
        assert_eq!(shared.dims(), [64, 16]);
        assert!(orthonormality_error(shared) <= 1e-5);
        assert_eq!(subspaces.tasks.len(), 4);
        for task in &subspaces.tasks {
            let basis = &task.projector.basis;
            assert_eq!(basis.dims(), [64, 8]);
            let overlap = max_abs_cross(shared, basis);
            assert!(overlap <= 1e-5, "‖Q_sᵀQ_t‖ = {overlap:e}");
            assert!(orthonormality_error(basis) <= 1e-5);
        }
    }
}

#[test]
fn task_bases_stay_orthogonal_after_refreshes_in_a_run() {
    let device = device();
    let config = GemsConfig {
        method: Method::GemsNoNsp,
        shared_rank: 8,
        task_rank: Some(4),
        refresh_every: 3,
        ..GemsConfig::default()
    };
    let mut optimizer = config.init().unwrap();
    let mut model = ToyModel::new(&device);
    for step in 0..7 {
        let tasks = (0..2)
            .map(|t| TaskGradients {
                gradients: seeded_gradients(&model, 10 * step + t, 1.0),
                loss: 1.0,
                samples: 4,
            })
            .collect();
        model = optimizer.step(0.01, model, tasks).unwrap().0;
    }
    for path in ["q.weight", "o.weight"] {
        let subspaces = optimizer.subspaces(path).unwrap();
        assert_eq!(subspaces.refreshes, 3);
        for task in &subspaces.tasks {
            let overlap = max_abs_cross(&subspaces.shared.projector.basis, &task.projector.basis);
            assert!(overlap <= 1e-5, "{path}: ‖Q_sᵀQ_t‖ = {overlap:e}");
        }
    }
}

/// `count` inputs of dimension `dim` confined (up to 1e-3 noise) to `signal` random directions.
fn knowledge_inputs(
    dim: usize,
    signal: usize,
    seed: u64,
    device: &burn::tensor::Device,
) -> Tensor<2> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let directions = common::random_orthonormal(dim, signal, &mut rng);
    let codes = common::gaussian(400, signal, &mut rng);
    let noise = common::gaussian(400, dim, &mut rng);
    let inputs = Mat::from_fn(400, dim, |i, j| {
        (0..signal)
            .map(|k| codes[(i, k)] * directions[(j, k)])
            .sum::<f64>()
            + 1e-3 * noise[(i, j)]
    });
    common::tensor(&inputs, device)
}

/// Both orientations: `q` (`[32, 48]`) has its basis on the input side, so its bases must avoid
/// the knowledge directions; `o` (`[48, 24]`) has it on the output side, so its coordinates must.
#[test]
fn updates_leave_knowledge_inputs_unchanged() {
    let device = device();
    let inner = device.clone().without_autodiff();
    let mut accumulator = CovarianceAccumulator::new();
    // Streamed in four batches, as a corpus would be.
    let q_inputs = knowledge_inputs(32, 8, 3, &inner);
    for batch in 0..4 {
        accumulator.observe(
            "q.weight",
            q_inputs
                .clone()
                .slice([batch * 100..(batch + 1) * 100, 0..32]),
        );
    }
    accumulator.observe("o.weight", knowledge_inputs(48, 12, 4, &inner));
    assert_eq!(accumulator.observations("q.weight"), 400);
    let selection = KnowledgeSelection::EnergyFraction { fraction: 0.99 };
    let null_space = accumulator.into_null_space(&selection, 0).unwrap();
    assert_eq!(
        null_space.get("q.weight").unwrap().rank(),
        8,
        "the 8 signal directions hold 99%"
    );
    assert_eq!(null_space.get("o.weight").unwrap().rank(), 12);

    let relative_leaks = |method: Method| {
        let config = GemsConfig {
            method,
            shared_rank: 8,
            task_rank: Some(4),
            refresh_every: 10,
            weight_decay: 0.1,
            ..GemsConfig::default()
        };
        let mut optimizer = config.init().unwrap().with_null_space(null_space.clone());
        let mut model = ToyModel::new(&device);
        let start = [model.q.weight.val().inner(), model.o.weight.val().inner()];
        for step in 0..60 {
            let tasks = (0..2)
                .map(|t| TaskGradients {
                    gradients: seeded_gradients(&model, 1000 + 2 * step + t, 1.0),
                    loss: 1.0 + t as f64,
                    samples: 4 + 4 * t as usize,
                })
                .collect();
            model = optimizer.step(0.02, model, tasks).unwrap().0;
        }
        let end = [model.q.weight.val().inner(), model.o.weight.val().inner()];
        ["q.weight", "o.weight"]
            .iter()
            .zip(start.into_iter().zip(end))
            .map(|(path, (start, end))| {
                let change = end - start;
                let basis = null_space.get(path).unwrap().basis.clone().unwrap();
                // ‖Uᵀ·ΔW‖ / ‖ΔW‖: how much of the change acts on knowledge inputs.
                let leak = to_host(basis.transpose().matmul(change.clone())).norm_l2();
                leak / to_host(change).norm_l2()
            })
            .collect::<Vec<f64>>()
    };
    for method in [Method::Gems, Method::GemsNoMsd] {
        for (path, leak) in ["q", "o"].iter().zip(relative_leaks(method)) {
            assert!(
                leak <= 1e-4,
                "{method}: {path} leaks {leak:e} into the knowledge space"
            );
        }
    }
    for (path, leak) in ["q", "o"].iter().zip(relative_leaks(Method::GemsNoNsp)) {
        assert!(
            leak > 0.1,
            "without projection {path} should leak, got {leak}"
        );
    }
}

#[test]
fn knowledge_directions_on_the_basis_side_reduce_the_available_ranks() {
    let device = device();
    let inner = device.clone().without_autodiff();
    let mut accumulator = CovarianceAccumulator::new();
    accumulator.observe("q.weight", knowledge_inputs(32, 20, 6, &inner));
    accumulator.observe("o.weight", knowledge_inputs(48, 12, 7, &inner));
    let null_space = accumulator
        .into_null_space(&KnowledgeSelection::EnergyFraction { fraction: 0.99 }, 0)
        .unwrap();
    let config = GemsConfig {
        shared_rank: 8,
        task_rank: Some(4),
        ..GemsConfig::default()
    };
    let mut optimizer = config.init().unwrap().with_null_space(null_space);
    let model = ToyModel::new(&device);
    let tasks = (0..2)
        .map(|t| TaskGradients {
            gradients: seeded_gradients(&model, t, 1.0),
            loss: 1.0,
            samples: 1,
        })
        .collect();
    optimizer.step(0.01, model, tasks).unwrap();
    // q: 32 inputs − 20 knowledge directions = 12 free: shared 8, tasks 4 each.
    let q = optimizer.subspaces("q.weight").unwrap();
    assert_eq!(q.shared.projector.rank(), 8);
    assert!(q.tasks.iter().all(|t| t.projector.rank() == 4));
    let knowledge = optimizer
        .null_space()
        .get("q.weight")
        .unwrap()
        .basis
        .clone()
        .unwrap();
    assert!(max_abs_cross(&knowledge, &q.shared.projector.basis) <= 1e-5);
    for task in &q.tasks {
        assert!(max_abs_cross(&knowledge, &task.projector.basis) <= 1e-5);
    }
}

/// Step `step`'s gradients of two tasks, seeded by the step.
fn two_tasks(model: &ToyModel, step: u64) -> Vec<TaskGradients> {
    (0..2)
        .map(|t| TaskGradients {
            gradients: seeded_gradients(model, 500 + 2 * step + t, 1.0 + t as f32),
            loss: 2.0 - t as f64,
            samples: 3 + t as usize,
        })
        .collect()
}

fn run_two_tasks(
    model: ToyModel,
    optimizer: &mut gems_core::GemsOptimizer,
    steps: std::ops::Range<u64>,
) -> ToyModel {
    let mut model = model;
    for step in steps {
        let tasks = two_tasks(&model, step);
        model = optimizer.step(0.01, model, tasks).unwrap().0;
    }
    model
}

/// Resuming from a saved state continues exactly as the uninterrupted run, weight decay on;
/// with knowledge bases too: a narrow one (4 of 32 input directions), whose knowledge part
/// weight decay keeps from the first step (saved), and one wide enough (30 of 48) to be
/// removed from coordinates and from the decay through its complement (recomputed, not
/// saved).
#[test]
fn saved_state_resumes_bit_identically() {
    let device = device();
    let inner = device.clone().without_autodiff();
    let knowledge = [("q.weight", 32, 4), ("o.weight", 48, 30)];
    for method in [Method::GemsNoNsp, Method::Gems] {
        let config = GemsConfig {
            method,
            shared_rank: 6,
            refresh_every: 3,
            stagger_refresh: true,
            weight_decay: 0.01,
            ..GemsConfig::default()
        };
        let mut null_space = gems_core::NullSpace::new();
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        for (path, d_in, k) in knowledge {
            let basis = common::random_orthonormal(d_in, k, &mut rng);
            null_space.insert(
                path,
                KnowledgeBasis {
                    basis: Some(common::tensor(&basis, &inner)),
                    input_axis: 0,
                    retained_energy: 0.99,
                },
            );
        }
        let optimizer = || {
            let optimizer = config.clone().init().unwrap();
            match method.null_space() {
                true => optimizer.with_null_space(null_space.clone()),
                false => optimizer,
            }
        };
        let folder = tempfile::tempdir().unwrap();
        let straight = {
            let mut optimizer = optimizer();
            let model = run_two_tasks(ToyModel::new(&device), &mut optimizer, 0..8);
            optimizer
                .save_state(&folder.path().join("straight.safetensors"))
                .unwrap();
            model.values()
        };
        let path = folder.path().join("optimizer.safetensors");
        let halfway = {
            let mut optimizer = optimizer();
            let model = run_two_tasks(ToyModel::new(&device), &mut optimizer, 0..4);
            optimizer.save_state(&path).unwrap();
            model
        };
        let mut resumed = config.clone().init().unwrap();
        resumed.load_state(&path, &inner).unwrap();
        resumed.check_state_fits(&halfway, &path).unwrap();
        assert_eq!(resumed.steps(), 4);
        let resumed_model = run_two_tasks(halfway, &mut resumed, 4..8);
        assert_eq!(straight, resumed_model.values(), "{method}");
        // Every piece of state, floats of the header included, is the same to the bit.
        resumed
            .save_state(&folder.path().join("resumed.safetensors"))
            .unwrap();
        assert!(
            std::fs::read(folder.path().join("straight.safetensors")).unwrap()
                == std::fs::read(folder.path().join("resumed.safetensors")).unwrap(),
            "{method}: the resumed optimizer's state file differs from the uninterrupted one's"
        );
    }
}

#[test]
fn a_state_from_another_configuration_is_refused() {
    let device = device();
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("state.safetensors");
    let mut optimizer = GemsConfig::for_method(Method::Galore).init().unwrap();
    run_two_tasks(ToyModel::new(&device), &mut optimizer, 0..1);
    optimizer.save_state(&path).unwrap();
    let mut other = GemsConfig {
        method: Method::Galore,
        shared_rank: 64,
        ..GemsConfig::default()
    }
    .init()
    .unwrap();
    let error = other.load_state(&path, &device).unwrap_err().to_string();
    assert!(error.contains("shared_rank"), "{error}");
    std::fs::write(&path, b"not a state").unwrap();
    let error = other.load_state(&path, &device).unwrap_err().to_string();
    assert!(error.contains("state.safetensors"), "{error}");
}

/// The per-layer cosines can be turned off between steps: the steps without them report none,
/// the weights move exactly as with them, and a state saved without them resumes an optimizer
/// configured with them.
#[test]
fn diagnostics_turned_off_between_steps_change_no_update() {
    let device = device();
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("state.safetensors");
    let config = GemsConfig::for_method(Method::GemsNoNsp);
    assert!(config.diagnostics);
    let mut with = config.clone().init().unwrap();
    let mut without = config.clone().init().unwrap();
    without.set_diagnostics(false);
    let mut with_model = ToyModel::new(&device);
    let mut without_model = ToyModel::new(&device);
    for step in 0..3 {
        let with_tasks = two_tasks(&with_model, step);
        let (model, report) = with.step(0.01, with_model, with_tasks).unwrap();
        assert_eq!(report.layer_cosines.len(), 2, "step {step}");
        with_model = model;
        let without_tasks = two_tasks(&without_model, step);
        let (model, report) = without.step(0.01, without_model, without_tasks).unwrap();
        assert!(report.layer_cosines.is_empty(), "step {step}");
        without_model = model;
        assert_eq!(with_model.values(), without_model.values(), "step {step}");
    }
    without.save_state(&path).unwrap();
    let mut resumed = config.init().unwrap();
    resumed.load_state(&path, &device).unwrap();
    assert_eq!(resumed.steps(), 3);
}

#[test]
fn gate_and_diagnostics_follow_the_gradients() {
    let device = device();
    let mut optimizer = GemsConfig::for_method(Method::GemsNoNsp).init().unwrap();
    let model = ToyModel::new(&device);
    let first = seeded_gradients(&model, 1, 1.0);
    let second = seeded_gradients(&model, 2, 3.0);
    let norm = |g: &GradientsParams| {
        let parts = [
            gradient_values(g, &model.q.weight),
            gradient_values(g, &model.o.weight),
            bias_gradient_values(g, model.q.bias.as_ref().unwrap()),
            bias_gradient_values(g, model.o.bias.as_ref().unwrap()),
        ];
        parts
            .iter()
            .flatten()
            .map(|v| (*v as f64).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    let (n1, n2) = (norm(&first), norm(&second));
    let q1 = gradient_values(&first, &model.q.weight);
    let q2 = gradient_values(&second, &model.q.weight);
    let dot: f64 = q1.iter().zip(&q2).map(|(a, b)| *a as f64 * *b as f64).sum();
    let cosine = dot
        / (q1.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt()
            * q2.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt());
    let tasks = vec![
        TaskGradients {
            gradients: first,
            loss: 3.0,
            samples: 6,
        },
        TaskGradients {
            gradients: second,
            loss: 1.0,
            samples: 2,
        },
    ];
    let (_, report) = optimizer.step(0.01, model, tasks).unwrap();
    assert!((report.task_gradient_norms[0] - n1).abs() < 1e-3 * n1);
    assert!((report.task_gradient_norms[1] - n2).abs() < 1e-3 * n2);
    let expected = |t: usize| {
        let losses = [0.75, 0.25];
        let norms = [n1 / (n1 + n2), n2 / (n1 + n2)];
        let samples = [0.75, 0.25];
        0.4 * losses[t] + 0.4 * norms[t] + 0.2 * samples[t]
    };
    assert!(
        (report.gate[0] - expected(0)).abs() < 1e-4,
        "{:?}",
        report.gate
    );
    assert!(
        (report.gate[1] - expected(1)).abs() < 1e-4,
        "{:?}",
        report.gate
    );
    let q = report
        .layer_cosines
        .iter()
        .find(|l| l.path == "q.weight")
        .unwrap();
    assert!(
        (q.cosine[0] - cosine).abs() < 1e-4,
        "{} vs {cosine}",
        q.cosine[0]
    );
    assert_eq!(
        report.layer_cosines.len(),
        2,
        "one entry per projected weight"
    );
    assert_eq!(report.refreshed, 2);
    assert!(report.svd_seconds > 0.0);
}

#[test]
fn fixed_gate_weights_are_used_as_given() {
    let device = device();
    let config = GemsConfig {
        method: Method::GemsNoNsp,
        gate: GateConfig::Fixed {
            weights: vec![0.9, 0.1],
        },
        ..GemsConfig::default()
    };
    let mut optimizer = config.init().unwrap();
    let model = ToyModel::new(&device);
    let tasks = (0..2)
        .map(|t| TaskGradients {
            gradients: seeded_gradients(&model, t, 1.0),
            loss: 1.0,
            samples: 1,
        })
        .collect();
    let (_, report) = optimizer.step(0.01, model, tasks).unwrap();
    assert_eq!(report.gate, vec![0.9, 0.1]);
}

#[test]
fn staggered_refreshes_spread_over_the_period() {
    let device = device();
    let refreshes_per_step = |stagger: bool| {
        let config = GemsConfig {
            method: Method::Galore,
            shared_rank: 4,
            refresh_every: 4,
            stagger_refresh: stagger,
            ..GemsConfig::default()
        };
        let mut optimizer = config.init().unwrap();
        let mut model = ToyModel::new(&device);
        let mut counts = Vec::new();
        for step in 0..6 {
            let gradients = seeded_gradients(&model, step, 1.0);
            let (next, report) = optimizer.step_single(0.01, model, gradients).unwrap();
            model = next;
            counts.push(report.refreshed);
        }
        counts
    };
    assert_eq!(refreshes_per_step(false), vec![2, 0, 0, 0, 2, 0]);
    // Offsets 0 and 2 (two weights over a period of 4): `o` refreshes at step 2, `q` at 4.
    assert_eq!(refreshes_per_step(true), vec![2, 0, 1, 0, 1, 0]);
}

/// Staggered offsets stay where they are when a weight has no gradient in a step: its place
/// among the projected weights does not move the others. (They were counted over the weights
/// with a gradient, so at step 4 below `o` moved from offset 2 to 0: it refreshed out of turn,
/// and its gradient, condensed under offset 2, was rejected by the step.)
#[test]
fn staggered_offsets_hold_when_a_weight_has_no_gradient() {
    let device = device();
    let config = GemsConfig {
        method: Method::GemsNoNsp,
        shared_rank: 4,
        refresh_every: 4,
        stagger_refresh: true,
        ..GemsConfig::default()
    };
    let mut optimizer = config.init().unwrap();
    let mut model = ToyModel::new(&device);
    let mut refreshed = Vec::new();
    for step in 0..8u64 {
        let mut tasks = search_and_rec(
            seeded_gradients(&model, 2 * step, 1.0),
            seeded_gradients(&model, 2 * step + 1, 1.0),
        );
        if step == 4 {
            for task in &mut tasks {
                task.gradients.remove::<2>(model.q.weight.id);
            }
        }
        let rec = tasks.pop().unwrap();
        let search = optimizer.condense(&model, 0, tasks.pop().unwrap());
        let (next, report) = optimizer
            .step(0.01, model, vec![search, rec.into()])
            .unwrap_or_else(|e| panic!("step {step}: {e}"));
        model = next;
        refreshed.push(report.refreshed);
    }
    // `q` (offset 0) at steps 0 and 4, but it has no gradient at 4; `o` (offset 2) at 0, 2, 6.
    assert_eq!(refreshed, vec![2, 0, 1, 0, 0, 0, 1, 0]);
}

#[test]
fn a_failed_refresh_keeps_the_previous_basis() {
    let device = device();
    let config = GemsConfig {
        method: Method::Galore,
        shared_rank: 4,
        refresh_every: 1,
        ..GemsConfig::default()
    };
    let mut optimizer = config.init().unwrap();
    let model = ToyModel::new(&device);
    let gradients = seeded_gradients(&model, 0, 1.0);
    let (model, _) = optimizer.step_single(0.01, model, gradients).unwrap();
    let before = optimizer
        .subspaces("q.weight")
        .unwrap()
        .shared
        .projector
        .basis
        .to_data();
    let mut zero = seeded_gradients(&model, 1, 1.0);
    let zeros = Tensor::<2>::zeros([32, 48], &device.clone().without_autodiff());
    zero.register(model.q.weight.id, zeros);
    let (_, report) = optimizer.step_single(0.01, model, zero).unwrap();
    assert_eq!(
        report.failed_refreshes.len(),
        1,
        "{:?}",
        report.failed_refreshes
    );
    assert!(report.failed_refreshes[0].0.starts_with("q.weight"));
    let after = optimizer
        .subspaces("q.weight")
        .unwrap()
        .shared
        .projector
        .basis
        .to_data();
    assert_eq!(before, after);
}

#[test]
fn inconsistent_steps_are_rejected_before_any_change() {
    let device = device();
    let mut optimizer = GemsConfig::for_method(Method::GemsNoNsp).init().unwrap();
    let model = ToyModel::new(&device);
    let two = (0..2)
        .map(|t| TaskGradients {
            gradients: seeded_gradients(&model, t, 1.0),
            loss: 1.0,
            samples: 1,
        })
        .collect();
    let (model, _) = optimizer.step(0.01, model, two).unwrap();
    let one = vec![TaskGradients {
        gradients: seeded_gradients(&model, 9, 1.0),
        loss: 1.0,
        samples: 1,
    }];
    let (model, error) = optimizer.step(0.01, model, one).unwrap_err().into_parts();
    assert!(matches!(error, GemsError::InvalidStep(_)), "{error}");
    assert_eq!(optimizer.steps(), 1);

    let mut wrong_shape = seeded_gradients(&model, 3, 1.0);
    wrong_shape.register(
        model.q.weight.id,
        Tensor::<2>::zeros([4, 4], &device.clone().without_autodiff()),
    );
    let tasks = vec![
        TaskGradients {
            gradients: wrong_shape,
            loss: 1.0,
            samples: 1,
        },
        TaskGradients {
            gradients: seeded_gradients(&model, 4, 1.0),
            loss: 1.0,
            samples: 1,
        },
    ];
    let error = optimizer
        .step(0.01, model.clone(), tasks)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("q.weight") && error.contains("[4, 4]"),
        "{error}"
    );

    let mut gems = GemsConfig::new().init().unwrap();
    let error = gems
        .step_single(0.01, model.clone(), seeded_gradients(&model, 0, 1.0))
        .map_err(GemsError::from);
    assert!(matches!(
        error,
        Err(GemsError::MissingKnowledgeBasis { count: 2, .. })
    ));

    let foreign = seeded_gradients(&ToyModel::new(&device), 0, 1.0);
    let error = optimizer
        .step_single(0.01, model, foreign)
        .map_err(GemsError::from);
    assert!(matches!(error, Err(GemsError::InvalidStep(_))));
}

/// `condense` keeps coordinates only for the projected weights whose bases the next step keeps
/// (nothing before the first bases, nothing on a refresh step), leaves the other gradients in
/// full, and the step refuses coordinates made for another step and non-finite condensed
/// gradients before any change.
#[test]
fn condensed_gradients_hold_coordinates_between_refreshes_and_are_checked() {
    let device = device();
    let mut optimizer = GemsConfig {
        shared_rank: 8,
        task_rank: Some(4),
        refresh_every: 3,
        ..GemsConfig::for_method(Method::GemsNoNsp)
    }
    .init()
    .unwrap();
    let mut model = ToyModel::new(&device);
    let parameters = 4; // two weights (projected) and their biases (AdamW)
    for step in 0..4u64 {
        let mut tasks = search_and_rec(
            seeded_gradients(&model, 2 * step, 1.0),
            seeded_gradients(&model, 2 * step + 1, 1.0),
        );
        let rec = tasks.pop().unwrap();
        let search = optimizer.condense(&model, 0, tasks.pop().unwrap());
        let expected = if step % 3 == 0 { 0 } else { 2 };
        assert_eq!(search.condensed_weights(), expected, "step {step}");
        assert_eq!(
            search.full_gradients(),
            parameters - expected,
            "step {step}"
        );
        model = optimizer
            .step(0.01, model, vec![search, rec.into()])
            .unwrap()
            .0;
    }

    // Coordinates made for step 5, offered after step 5 was taken without them.
    let stale = optimizer.condense(
        &model,
        0,
        search_and_rec(
            seeded_gradients(&model, 20, 1.0),
            seeded_gradients(&model, 21, 1.0),
        )
        .remove(0),
    );
    assert_eq!(stale.condensed_weights(), 2);
    let fresh = search_and_rec(
        seeded_gradients(&model, 22, 1.0),
        seeded_gradients(&model, 23, 1.0),
    );
    model = optimizer.step(0.01, model, fresh).unwrap().0;
    let before = model.values();
    let rec = search_and_rec(
        seeded_gradients(&model, 24, 1.0),
        seeded_gradients(&model, 25, 1.0),
    )
    .remove(1);
    let (model, error) = optimizer
        .step(0.01, model, vec![stale, rec.into()])
        .unwrap_err()
        .into_parts();
    assert!(
        matches!(&error, GemsError::InvalidStep(m) if m.contains("condensed for step 5")),
        "{error}"
    );
    assert_eq!(optimizer.steps(), 5);
    assert_eq!(model.values(), before);

    // Coordinates condensed for task 1 given in task 0's place (the tasks swapped): both tasks
    // have bases of the same rank, so only the recorded task can tell.
    let mut tasks = search_and_rec(
        seeded_gradients(&model, 30, 1.0),
        seeded_gradients(&model, 31, 1.0),
    );
    let rec = optimizer.condense(&model, 1, tasks.pop().unwrap());
    assert_eq!(rec.condensed_weights(), 2);
    let search = tasks.pop().unwrap();
    let (model, error) = optimizer
        .step(0.01, model, vec![rec, search.into()])
        .unwrap_err()
        .into_parts();
    assert!(
        matches!(&error, GemsError::InvalidStep(m) if m.contains("in place 0 were condensed for task 1")),
        "{error}"
    );
    assert_eq!(model.values(), before);

    // A NaN in a condensed weight's gradient shows in its norm: the step is refused.
    let mut poisoned = seeded_gradients(&model, 26, 1.0);
    let mut values = gradient_values(&poisoned, &model.q.weight);
    values[7] = f32::NAN;
    poisoned.register(
        model.q.weight.id,
        Tensor::<2>::from_data(
            burn::tensor::TensorData::new(values, [32, 48]),
            &device.clone().without_autodiff(),
        ),
    );
    let mut tasks = search_and_rec(poisoned, seeded_gradients(&model, 27, 1.0));
    let rec = tasks.pop().unwrap();
    let search = optimizer.condense(&model, 0, tasks.pop().unwrap());
    assert_eq!(search.condensed_weights(), 2);
    let (model, error) = optimizer
        .step(0.01, model, vec![search, rec.into()])
        .unwrap_err()
        .into_parts();
    assert!(
        matches!(error, GemsError::NonFinite { task: 0, .. }),
        "{error}"
    );
    assert_eq!(optimizer.steps(), 5);
    assert_eq!(model.values(), before);
}

/// Factored gradients that cannot stand for a parameter's gradient (no such parameter, factors
/// of another shape, factors whose row counts differ, a bias) make the step refuse the task
/// before any change, naming each; none is dropped silently.
#[test]
fn factored_gradients_that_fit_no_parameter_are_refused() {
    let device = device();
    let inner = device.clone().without_autodiff();
    let mut optimizer = GemsConfig {
        shared_rank: 8,
        task_rank: Some(4),
        ..GemsConfig::for_method(Method::GemsNoNsp)
    }
    .init()
    .unwrap();
    let model = ToyModel::new(&device);
    let model = optimizer
        .step(0.01, model.clone(), two_tasks(&model, 0))
        .unwrap()
        .0;
    assert_eq!(
        optimizer.condensable_weights(0),
        ["o.weight".to_string(), "q.weight".to_string()]
    );
    let factors = |rows: usize, cols: usize| FactoredGradient {
        left: Tensor::ones([3, rows], &inner),
        right: Tensor::ones([3, cols], &inner),
    };
    let cases = [
        ("nope.weight", factors(32, 48), "it is no parameter"),
        (
            "q.weight",
            factors(48, 32),
            "[48, 32] gradient for a weight of shape [32, 48]",
        ),
        (
            "o.weight",
            FactoredGradient {
                left: Tensor::ones([3, 48], &inner),
                right: Tensor::ones([2, 24], &inner),
            },
            "3 and 2 rows",
        ),
        ("q.bias", factors(1, 48), "1 axes, not 2"),
    ];
    let before = model.values();
    let mut model = model;
    for (path, factored, message) in cases {
        let mut tasks = two_tasks(&model, 1);
        let rec = tasks.pop().unwrap();
        let search = optimizer.condense_factored(
            &model,
            0,
            tasks.pop().unwrap(),
            [(path.to_string(), factored)].into(),
        );
        let (back, error) = optimizer
            .step(0.01, model, vec![search, rec.into()])
            .unwrap_err()
            .into_parts();
        assert!(
            matches!(&error, GemsError::InvalidStep(m) if m.contains(path) && m.contains(message)),
            "{path}: {error}"
        );
        assert_eq!(optimizer.steps(), 1);
        assert_eq!(back.values(), before);
        model = back;
    }
}

#[test]
fn parameter_filters_choose_the_projected_weights() {
    let device = device();
    let model = ToyModel::new(&device);
    let optimizer = GemsConfig::for_method(Method::Galore)
        .init()
        .unwrap()
        .with_param_filter(|path, _| path.starts_with("o."));
    let plan = optimizer.plan(&model, 2);
    let projected: Vec<&str> = plan
        .iter()
        .filter(|p| p.treatment == gems_core::Treatment::Projected)
        .map(|p| p.path.as_str())
        .collect();
    assert_eq!(projected, vec!["o.weight"]);
    let config = GemsConfig::default();
    assert!(config.targets(
        "encoder.block.0.layer.0.SelfAttention.q.weight",
        &[512, 512]
    ));
    assert!(config.targets("model.layers.3.self_attn.q_proj.weight", &[896, 896]));
    assert!(!config.targets("model.layers.3.self_attn.q_proj.bias", &[896]));
    assert!(!config.targets("shared.weight", &[32128, 512]));
}

#[test]
fn adamw_method_updates_every_parameter_fully() {
    let device = device();
    let optimizer = GemsConfig::for_method(Method::Adamw).init().unwrap();
    let model = ToyModel::new(&device);
    let plan = optimizer.plan(&model, 2);
    assert!(
        plan.iter()
            .all(|p| p.treatment == gems_core::Treatment::Adamw)
    );
    let gems = GemsConfig::new().init().unwrap();
    let gems_bytes: usize = gems.plan(&model, 2).iter().map(|p| p.state_bytes).sum();
    let adamw_bytes: usize = plan.iter().map(|p| p.state_bytes).sum();
    assert!(
        gems_bytes < adamw_bytes * 2,
        "{gems_bytes} vs {adamw_bytes}"
    );
}

/// The AdamW baseline with two tasks is textbook AdamW on the sample-weighted sum of the task
/// gradients, every matrix updated in full.
#[test]
fn adamw_matches_a_float64_reference_on_the_sample_weighted_gradient() {
    let device = device();
    let config = GemsConfig {
        method: Method::Adamw,
        weight_decay: 0.1,
        ..GemsConfig::default()
    };
    let lr = 0.02;
    let mut model = ToyModel::new(&device);
    let mut optimizer = config.clone().init().unwrap();
    let mut references = [
        (
            host_of(&weight_values(&model.q.weight), 32, 48),
            ReferenceAdam::new(32, 48),
        ),
        (
            host_of(&weight_values(&model.o.weight), 48, 24),
            ReferenceAdam::new(48, 24),
        ),
    ];
    for step in 0..3 {
        let search = seeded_gradients(&model, 200 + step, 1.0);
        let rec = seeded_gradients(&model, 300 + step, 0.5);
        for ((weight, adam), param) in references
            .iter_mut()
            .zip([&model.q.weight, &model.o.weight])
        {
            let (rows, cols) = (weight.nrows(), weight.ncols());
            let first = host_of(&gradient_values(&search, param), rows, cols);
            let second = host_of(&gradient_values(&rec, param), rows, cols);
            adam.step(weight, &first, &second, lr, &config);
        }
        model = optimizer
            .step(lr, model, search_and_rec(search, rec))
            .unwrap()
            .0;
    }
    for ((reference, _), param) in references.iter().zip([&model.q.weight, &model.o.weight]) {
        let error = max_abs_difference(reference, &weight_values(param));
        assert!(
            error <= 1e-5,
            "AdamW differs from the reference by {error:e}"
        );
    }
    let moved = max_abs_difference(
        &references[0].0,
        &weight_values(&ToyModel::new(&device).q.weight),
    );
    assert!(moved > 1e-2, "weights moved by only {moved:e}");
}

/// Reading values back waits for the device (a synchronisation on a GPU): an ordinary step
/// reads once, for its statistics; a refresh adds only the small host problems of each basis.
#[test]
fn an_ordinary_step_reads_back_from_the_device_once() {
    let device = device();
    let mut optimizer = GemsConfig {
        refresh_every: 2,
        ..GemsConfig::for_method(Method::GemsNoNsp)
    }
    .init()
    .unwrap();
    let mut model = ToyModel::new(&device);
    let mut reads = Vec::new();
    for step in 0..4u64 {
        let tasks = (0..2)
            .map(|t| TaskGradients {
                gradients: seeded_gradients(&model, 900 + 2 * step + t, 1.0 + t as f32),
                loss: 2.0 - t as f64,
                samples: 3,
            })
            .collect();
        let (stepped, report) = optimizer.step(0.01, model, tasks).unwrap();
        model = stepped;
        reads.push((report.refreshed, report.device_reads));
    }
    // Steps 0 and 2 refresh both projected weights, steps 1 and 3 do not.
    assert_eq!(reads[1], (0, 1), "{reads:?}");
    assert_eq!(reads[3], (0, 1), "{reads:?}");
    for (refreshed, count) in [reads[0], reads[2]] {
        assert_eq!(refreshed, 2, "{reads:?}");
        // Per weight: three bases (shared and two tasks), each a randomized SVD with one power
        // iteration (four orthonormalisations of one or two reads, one small eigen-problem) and
        // the task bases' removal of the shared directions (two orthonormalisations).
        assert!(count > 1 && count <= 1 + 2 * 26, "{reads:?}");
    }
}

/// A frozen parameter never changes (no weight decay either) and holds no state, under AdamW
/// and under GEMS without null space (where it would be projected), while the others train; the
/// plans count it out.
#[test]
fn a_frozen_parameter_is_left_alone_and_holds_no_state() {
    let device = device();
    for method in [Method::Adamw, Method::GemsNoNsp] {
        let config = GemsConfig {
            method,
            weight_decay: 0.1,
            ..GemsConfig::for_method(method)
        };
        let mut optimizer = config.clone().init().unwrap().with_frozen("q.weight");
        let mut plain = config.init().unwrap();
        assert_eq!(
            optimizer.treatment("q.weight", &[32, 48]),
            gems_core::Treatment::Frozen
        );
        let model = run_two_tasks(ToyModel::new(&device), &mut optimizer, 0..3);
        let trained = run_two_tasks(ToyModel::new(&device), &mut plain, 0..3);
        let initial = ToyModel::new(&device);
        assert_eq!(
            weight_values(&model.q.weight),
            weight_values(&initial.q.weight),
            "{method:?}: the frozen weight changed"
        );
        assert_ne!(
            weight_values(&model.o.weight),
            weight_values(&initial.o.weight),
            "{method:?}: the other weights train"
        );
        let plan = optimizer.plan(&model, 2);
        let frozen = plan.iter().find(|p| p.path == "q.weight").unwrap();
        assert_eq!((frozen.state_bytes, frozen.trained_values), (0, 0));
        let q_state = plain
            .plan(&trained, 2)
            .into_iter()
            .find(|p| p.path == "q.weight")
            .unwrap()
            .state_bytes;
        assert!(q_state > 0);
        assert_eq!(
            optimizer.state_bytes() + q_state,
            plain.state_bytes(),
            "{method:?}: the state is the plain one's less the frozen weight's"
        );
    }
}

/// One parameter at two paths (a weight tied by cloning its `Param`) is refused by name and
/// the module handed back unchanged: the update took its one gradient for the first path and
/// panicked at the second.
#[test]
fn a_parameter_at_two_paths_is_refused() {
    let device = device();
    for method in [Method::Adamw, Method::GemsNoNsp] {
        let mut model = ToyModel::new(&device);
        model.o = model.q.clone();
        let before = model.values();
        let tasks = search_and_rec(
            seeded_gradients(&model, 1, 1.0),
            seeded_gradients(&model, 2, 1.0),
        );
        let mut optimizer = GemsConfig::for_method(method).init().unwrap();
        let error = optimizer.step(0.1, model, tasks).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("`o.weight` is the parameter `q.weight` again"),
            "{method:?}: {error}"
        );
        assert_eq!(error.module.values(), before);
        assert_eq!(optimizer.steps(), 0);
    }
}

/// Gradients of parameters the module does not have, beside its own, are refused (they were
/// dropped silently; only gradients that were all foreign were refused).
#[test]
fn gradients_of_parameters_the_module_lacks_are_refused() {
    let device = device();
    let model = ToyModel::new(&device);
    let before = model.values();
    let other = ToyModel::new(&device);
    let mut search = seeded_gradients(&model, 1, 1.0);
    let foreign = seeded_gradients(&other, 2, 1.0);
    search.register(
        other.o.weight.id,
        foreign.get::<2>(other.o.weight.id).unwrap(),
    );
    let tasks = search_and_rec(search, seeded_gradients(&model, 3, 1.0));
    let mut optimizer = GemsConfig::for_method(Method::GemsNoNsp).init().unwrap();
    let error = optimizer.step(0.1, model, tasks).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("task 0 has gradients of 1 parameter(s) the module does not have"),
        "{error}"
    );
    assert_eq!(error.module.values(), before);
}

/// Freezing a path that is no parameter of the model is refused before anything changes, and a
/// saved state that holds moments of a parameter frozen now does not fit.
#[test]
fn frozen_paths_are_checked() {
    let device = device();
    let adamw = || GemsConfig::for_method(Method::Adamw).init().unwrap();
    let mut optimizer = adamw().with_frozen("k.weight");
    let model = ToyModel::new(&device);
    let gradients = seeded_gradients(&model, 1, 1.0);
    let error = optimizer.step_single(0.1, model, gradients).unwrap_err();
    assert_eq!(error.module.values(), ToyModel::new(&device).values());
    assert!(
        error
            .to_string()
            .contains("`k.weight`, which is no parameter of the model"),
        "{error}"
    );
    assert_eq!(optimizer.steps(), 0);

    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("optimizer.safetensors");
    let mut optimizer = adamw();
    let model = run_two_tasks(ToyModel::new(&device), &mut optimizer, 0..1);
    optimizer.save_state(&path).unwrap();
    let mut frozen = adamw().with_frozen("q.weight");
    frozen.load_state(&path, &device).unwrap();
    let error = frozen
        .check_state_fits(&model, &path)
        .unwrap_err()
        .to_string();
    assert!(error.contains("`q.weight`, which is frozen"), "{error}");
}

/// The state file `bytes` with the first tensor whose name ends in `suffix` and that has
/// several rows replaced by `edit(shape, data)`; the tensor's name and the new file.
fn edited_state(
    bytes: &[u8],
    suffix: &str,
    edit: impl FnOnce(&[usize], &[u8]) -> (Vec<usize>, Vec<u8>),
) -> (String, Vec<u8>) {
    let (_, metadata) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
    let file = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let mut tensors = file.tensors();
    let index = tensors
        .iter()
        .position(|(name, view)| name.ends_with(suffix) && view.shape()[0] > 1)
        .expect("a tensor of several rows");
    let (name, view) = &tensors[index];
    let (name, dtype) = (name.clone(), view.dtype());
    let (shape, data) = edit(view.shape(), view.data());
    tensors[index].1 = safetensors::tensor::TensorView::new(dtype, shape, &data).unwrap();
    let file = safetensors::serialize(tensors, metadata.metadata().clone()).unwrap();
    (name, file)
}

/// The `gems` header (the optimizer's JSON) of the state file `bytes`.
fn gems_header(bytes: &[u8]) -> String {
    let (_, metadata) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
    metadata.metadata().as_ref().unwrap()["gems"].clone()
}

/// The state file `bytes` with its tensors as they are and `header` as its `gems` header.
fn with_gems_header(bytes: &[u8], header: String) -> Vec<u8> {
    let file = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let metadata = std::collections::HashMap::from([("gems".to_string(), header)]);
    safetensors::serialize(file.tensors(), Some(metadata)).unwrap()
}

/// A saved correction mass (`[rows, 1]`) of another shape, say transposed, with the same values,
/// is refused by the check instead of panicking in the next step's division; a NaN anywhere in
/// the state is refused on loading, naming the tensor.
#[test]
fn a_damaged_moment_mass_or_value_is_refused() {
    let device = device();
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("optimizer.safetensors");
    for method in [Method::Adamw, Method::GemsNoNsp] {
        let fresh = || GemsConfig::for_method(method).init().unwrap();
        let mut optimizer = fresh();
        let model = run_two_tasks(ToyModel::new(&device), &mut optimizer, 0..2);
        optimizer.save_state(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();

        let (edited, file) = edited_state(&bytes, "second_mass", |shape, data| {
            (vec![1, shape[0]], data.to_vec())
        });
        std::fs::write(&path, file).unwrap();
        let mut resumed = fresh();
        resumed.load_state(&path, &device).unwrap();
        let error = resumed
            .check_state_fits(&model, &path)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("a second moment's correction mass is [1,") && error.contains(", 1]"),
            "{method:?}, {edited}: {error}"
        );

        let (edited, file) = edited_state(&bytes, "/first", |shape, data| {
            let mut data = data.to_vec();
            data[4..8].copy_from_slice(&f32::NAN.to_le_bytes());
            (shape.to_vec(), data)
        });
        std::fs::write(&path, file).unwrap();
        let error = fresh().load_state(&path, &device).unwrap_err().to_string();
        assert!(
            error.contains(&format!("tensor `{edited}` holds NaN")),
            "{method:?}: {error}"
        );
    }
}

/// A state whose header was edited within its format is refused by the check, naming the file:
/// a refresh offset beyond the refresh period (it overflowed the step's schedule), and task
/// subspaces dropped (the weight silently lost them).
#[test]
fn an_edited_state_header_does_not_fit() {
    let device = device();
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("optimizer.safetensors");
    // Ranks small enough for the toy's weights to hold task subspaces.
    let fresh = || {
        GemsConfig {
            shared_rank: 4,
            ..GemsConfig::for_method(Method::GemsNoNsp)
        }
        .init()
        .unwrap()
    };
    let mut optimizer = fresh();
    let model = run_two_tasks(ToyModel::new(&device), &mut optimizer, 0..2);
    optimizer.save_state(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let header = gems_header(&bytes);
    assert!(header.contains(r#""task_steps":[2,2]"#), "{header}");
    // `header` with the value after the first `key` (up to `end`) replaced by `value`.
    let edited = |key: &str, end: char, value: &str| {
        let start = header.find(key).expect("the key is in the header") + key.len();
        let stop = start + header[start..].find(end).unwrap();
        format!("{}{value}{}", &header[..start], &header[stop..])
    };
    for (header, expected) in [
        (
            edited(r#""refresh_offset":"#, ',', &u64::MAX.to_string()),
            "refreshes at offset 18446744073709551615, beyond refresh_every",
        ),
        (
            edited(r#""task_steps":["#, ']', ""),
            "has 0 task subspaces, expected 2",
        ),
    ] {
        std::fs::write(&path, with_gems_header(&bytes, header)).unwrap();
        let mut resumed = fresh();
        resumed.load_state(&path, &device).unwrap();
        let error = resumed
            .check_state_fits(&model, &path)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("optimizer.safetensors") && error.contains(expected),
            "{error}"
        );
    }
}

/// State files of versions 2 and 3 (before the per-weight headers could record a trained
/// slice; before the knowledge parts of weight decay) still load.
#[test]
fn version_2_and_3_states_load() {
    let device = device();
    let folder = tempfile::tempdir().unwrap();
    let adamw = || GemsConfig::for_method(Method::Adamw).init().unwrap();
    let mut optimizer = adamw();
    run_two_tasks(ToyModel::new(&device), &mut optimizer, 0..1);
    let current = folder.path().join("v4.safetensors");
    optimizer.save_state(&current).unwrap();
    let bytes = std::fs::read(&current).unwrap();
    let header = gems_header(&bytes);
    assert!(header.contains(r#""version":4"#), "{header}");
    assert!(!header.contains("slice"), "{header}");
    let with_header = |header: String| with_gems_header(&bytes, header);
    let path = folder.path().join("old.safetensors");
    // The header an older writer made: its version, no `slice` keys, no knowledge parts.
    let without_parts = header.replace(r#","knowledge_parts":[]"#, "");
    assert_ne!(without_parts, header);
    for version in [2, 3] {
        let old_header =
            without_parts.replace(r#""version":4"#, &format!(r#""version":{version}"#));
        std::fs::write(&path, with_header(old_header)).unwrap();
        let mut resumed = adamw();
        resumed.load_state(&path, &device).unwrap();
        assert_eq!(resumed.steps(), 1);
        assert_eq!(resumed.state_bytes(), optimizer.state_bytes());
    }
    // Version 1 (no per-row masses) is refused.
    let ancient = header.replace(r#""version":4"#, r#""version":1"#);
    std::fs::write(&path, with_header(ancient)).unwrap();
    let error = adamw().load_state(&path, &device).unwrap_err().to_string();
    assert!(
        error.contains("v1 is not gems-optimizer-state v2 to v4"),
        "{error}"
    );
}
