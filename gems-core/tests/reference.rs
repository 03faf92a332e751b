//! The whole GEMS step against a float64 reference written from the method's definition
//! (DESIGN.md §2), with its own SVD (one-sided Jacobi, `common::jacobi_svd`), over refreshes with
//! every moment transfer, weights of both orientations and a square one, null space on and off
//! on either input axis, weight decay on.
//!
//! The reference, for every projected weight W and tasks t with gradients G_t, n_t samples:
//! - merged gradient G = Σ_t (n_t/n)·G_t; gate g_t = (α·L_t/ΣL + β·‖G_t‖/Σ‖G‖ + γ·n_t/Σn)/(α+β+γ);
//! - the bases lie on the side of W's knowledge basis U when the d − k directions left there
//!   hold every subspace and are no more than the other side's, else on the smaller side of W
//!   (a square W: the side away from U); without U on the smaller side; P removes U from the
//!   input side;
//! - every T steps: Q_s = top-r_s left singular vectors of P·G (canonical orientation),
//!   Q_t = top-r_t of (I − Q_sQ_sᵀ)·P·G_t; moments carried over by the transfer policy
//!   (rotate: C = Q_newᵀQ_old, m ← diag(ρ)·C·m with ρᵢ = ‖Cᵢ‖, v ← (C∘C)·v, masses ← (C∘C)·masses);
//! - Adam per subspace on the coordinates Qᵀ·G (U removed from them when it lies on the other
//!   side, and from the normalised step), per-row masses for the bias correction;
//! - W ← W − lr·scale·(Q_s·N_s + Σ_t g_t·Q_t·N_t) − P(lr·wd·W).

mod common;

use std::collections::BTreeMap;

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};
use common::{device, jacobi_svd};
use faer::Mat;
use gems_core::adam::AdamMoments;
use gems_core::host::{to_device, to_host};
use gems_core::projector::{Projector, Side};
use gems_core::{
    CondensedTask, FactoredGradient, GemsConfig, GemsOptimizer, KnowledgeBasis, Method,
    MomentTransfer, NullSpace, SvdMethod, TaskGradients,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Three weights named like T5's: `q` wide (`[16, 24]`), `o` tall (`[24, 12]`), `v` square.
#[derive(Module, Debug)]
struct ThreeWeights {
    q: Linear,
    o: Linear,
    v: Linear,
}

const SHAPES: [(&str, [usize; 2]); 3] = [
    ("q.weight", [16, 24]),
    ("o.weight", [24, 12]),
    ("v.weight", [12, 12]),
];

fn linear(shape: [usize; 2], rng: &mut ChaCha8Rng, device: &Device) -> Linear {
    let values: Vec<f32> = (0..shape[0] * shape[1])
        .map(|_| rng.random_range(-0.3f32..0.3))
        .collect();
    Linear {
        weight: Param::from_tensor(Tensor::from_data(TensorData::new(values, shape), device)),
        bias: None,
    }
}

impl ThreeWeights {
    fn new(device: &Device) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(21);
        Self {
            q: linear(SHAPES[0].1, &mut rng, device),
            o: linear(SHAPES[1].1, &mut rng, device),
            v: linear(SHAPES[2].1, &mut rng, device),
        }
    }

    fn weights(&self) -> [&Param<Tensor<2>>; 3] {
        [&self.q.weight, &self.o.weight, &self.v.weight]
    }
}

fn host(tensor: Tensor<2>) -> Mat<f64> {
    to_host(tensor)
}

/// The weight's side that carries the bases (true for rows) for subspaces of `needed`
/// directions in all, its knowledge basis (if any) being `(axis, k)`.
fn basis_on_rows(shape: [usize; 2], knowledge: Option<(usize, usize)>, needed: usize) -> bool {
    let smaller_is_rows = shape[0] <= shape[1];
    match knowledge {
        // The knowledge side, when the directions left there hold every subspace and are no
        // more than the other side's.
        Some((axis, k)) if k + needed <= shape[axis] && shape[axis] - k <= shape[1 - axis] => {
            axis == 0
        }
        // Else a square weight's side away from the knowledge, another's smaller side.
        Some((axis, _)) if shape[0] == shape[1] => axis == 1,
        _ => smaller_is_rows,
    }
}

fn canonical(matrix: &Mat<f64>, rows: bool) -> Mat<f64> {
    if rows {
        matrix.clone()
    } else {
        matrix.transpose().to_owned()
    }
}

/// `A − A·U·Uᵀ`: removes span(U) from the rows of A.
fn remove_from_columns(a: &Mat<f64>, u: &Mat<f64>) -> Mat<f64> {
    a - &(a * u) * u.transpose()
}

/// `s·M`.
fn scaled(matrix: &Mat<f64>, s: f64) -> Mat<f64> {
    Mat::from_fn(matrix.nrows(), matrix.ncols(), |i, j| s * matrix[(i, j)])
}

fn remove_from_rows(a: &Mat<f64>, u: &Mat<f64>) -> Mat<f64> {
    a - u * (u.transpose() * a)
}

/// Knowledge directions of one weight: `U` (`[d_in, k]`) on axis `axis`.
#[derive(Clone)]
struct Knowledge {
    basis: Mat<f64>,
    axis: usize,
}

impl Knowledge {
    fn project_out(&self, matrix: &Mat<f64>) -> Mat<f64> {
        if self.axis == 0 {
            remove_from_rows(matrix, &self.basis)
        } else {
            remove_from_columns(matrix, &self.basis)
        }
    }
}

struct ReferenceSubspace {
    basis: Mat<f64>,
    first: Mat<f64>,
    second: Mat<f64>,
    first_mass: Vec<f64>,
    second_mass: Vec<f64>,
}

impl ReferenceSubspace {
    fn fresh(basis: Mat<f64>, cols: usize) -> Self {
        let rank = basis.ncols();
        Self {
            basis,
            first: Mat::zeros(rank, cols),
            second: Mat::zeros(rank, cols),
            first_mass: vec![0.0; rank],
            second_mass: vec![0.0; rank],
        }
    }

    fn rebased(self, basis: Mat<f64>, transfer: MomentTransfer) -> Self {
        let cols = self.first.ncols();
        match transfer {
            MomentTransfer::Reset => Self::fresh(basis, cols),
            MomentTransfer::Keep => Self { basis, ..self },
            MomentTransfer::Rotate => {
                let c = basis.transpose() * &self.basis;
                let (new, old) = (c.nrows(), c.ncols());
                let reach: Vec<f64> = (0..new)
                    .map(|i| (0..old).map(|k| c[(i, k)].powi(2)).sum::<f64>().sqrt())
                    .collect();
                let rotated = &c * &self.first;
                let first = Mat::from_fn(new, cols, |i, j| reach[i] * rotated[(i, j)]);
                let second = Mat::from_fn(new, cols, |i, j| {
                    (0..old)
                        .map(|k| c[(i, k)].powi(2) * self.second[(k, j)])
                        .sum()
                });
                let mass = |masses: &[f64]| -> Vec<f64> {
                    (0..new)
                        .map(|i| (0..old).map(|k| c[(i, k)].powi(2) * masses[k]).sum())
                        .collect()
                };
                Self {
                    first_mass: mass(&self.first_mass),
                    second_mass: mass(&self.second_mass),
                    basis,
                    first,
                    second,
                }
            }
        }
    }

    /// Folds the coordinates Qᵀ·G into the moments and returns the normalised step.
    fn step(
        &mut self,
        gradient: &Mat<f64>,
        coordinate_knowledge: Option<&Mat<f64>>,
        config: &GemsConfig,
    ) -> Mat<f64> {
        let mut coordinates = self.basis.transpose() * gradient;
        if let Some(u) = coordinate_knowledge {
            coordinates = remove_from_columns(&coordinates, u);
        }
        let (b1, b2) = (config.beta1, config.beta2);
        let (rows, cols) = (coordinates.nrows(), coordinates.ncols());
        for i in 0..rows {
            self.first_mass[i] = b1 * self.first_mass[i] + (1.0 - b1);
            self.second_mass[i] = b2 * self.second_mass[i] + (1.0 - b2);
        }
        let step = Mat::from_fn(rows, cols, |i, j| {
            let g = coordinates[(i, j)];
            self.first[(i, j)] = b1 * self.first[(i, j)] + (1.0 - b1) * g;
            self.second[(i, j)] = b2 * self.second[(i, j)] + (1.0 - b2) * g * g;
            (self.first[(i, j)] / self.first_mass[i])
                / ((self.second[(i, j)] / self.second_mass[i]).sqrt() + config.epsilon)
        });
        match coordinate_knowledge {
            Some(u) => remove_from_columns(&step, u),
            None => step,
        }
    }
}

/// The top-`rank` left singular vectors by Jacobi, after checking that the singular values up
/// to the cut are separated enough for the basis to be defined (up to sign) in float32.
fn top_directions(matrix: &Mat<f64>, rank: usize, what: &str) -> Mat<f64> {
    let (left, values) = jacobi_svd(matrix);
    for j in 0..rank {
        let gap = (values[j] - values[j + 1]) / values[0];
        assert!(
            gap > 1e-3,
            "{what}: singular values {j} and {} are too close ({values:?}); pick other seeds",
            j + 1
        );
    }
    Mat::from_fn(left.nrows(), rank, |i, j| left[(i, j)])
}

/// Gives each reference column the sign of the optimizer's (singular vectors are defined up to
/// sign, which `keep` exposes), after checking the two span the same direction.
fn align_signs(reference: &mut Mat<f64>, ours: &Mat<f64>, what: &str) {
    for j in 0..reference.ncols() {
        let dot: f64 = (0..reference.nrows())
            .map(|i| reference[(i, j)] * ours[(i, j)])
            .sum();
        let sign = dot.signum();
        let worst = (0..reference.nrows())
            .map(|i| (sign * reference[(i, j)] - ours[(i, j)]).abs())
            .fold(0.0, f64::max);
        assert!(
            worst < 1e-4,
            "{what}: basis column {j} differs by {worst:e}"
        );
        for i in 0..reference.nrows() {
            reference[(i, j)] *= sign;
        }
    }
}

struct ReferenceWeight {
    path: &'static str,
    weight: Mat<f64>,
    rows: bool,
    knowledge: Option<Knowledge>,
    shared: Option<ReferenceSubspace>,
    tasks: Vec<ReferenceSubspace>,
}

struct Case {
    method: Method,
    transfer: MomentTransfer,
    input_axis: usize,
    tasks: usize,
    /// Two thirds of every input side protected (the optimizer then removes the knowledge
    /// from low-rank coordinates through its complement), instead of a few directions.
    wide_knowledge: bool,
    /// Which tasks' gradients go through `GemsOptimizer::condense` before the step.
    condensed: Condensed,
}

/// Which tasks are condensed to low-rank coordinates before each step.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Condensed {
    None,
    /// Every task but the last (the step projects the last one's full gradients).
    AllButLast,
    All,
    /// Every task, its gradients given as factors `leftᵀ·right` of 10 rows
    /// (`GemsOptimizer::condense_factored`); `o`'s as factors plus a full part.
    Factored,
}

impl Condensed {
    fn applies_to(self, task: usize, tasks: usize) -> bool {
        match self {
            Condensed::None => false,
            Condensed::AllButLast => task + 1 < tasks,
            Condensed::All | Condensed::Factored => true,
        }
    }
}

impl Case {
    fn config(&self) -> GemsConfig {
        GemsConfig {
            method: self.method,
            shared_rank: 4,
            task_rank: Some(2),
            refresh_every: 3,
            moment_transfer: self.transfer,
            svd: SvdMethod::Exact,
            weight_decay: 0.1,
            diagnostics: false,
            ..GemsConfig::default()
        }
    }

    fn name(&self) -> String {
        format!(
            "{} / {:?} / input axis {} / {} task(s){} / condensed: {:?}",
            self.method,
            self.transfer,
            self.input_axis,
            self.tasks,
            if self.wide_knowledge {
                " / wide knowledge"
            } else {
                ""
            },
            self.condensed
        )
    }
}

/// Seeded gradients of the three weights for one task and step, with well-spread spectra: in
/// full, or (`factored`) as factors of 10 rows, `o`'s with a full part added. Also each weight's
/// whole gradient on the host, as the optimizer receives it (float32 values, multiplied out in
/// float64).
fn task_gradients(
    model: &ThreeWeights,
    task: usize,
    step: u64,
    inner: &Device,
    factored: bool,
) -> (
    GradientsParams,
    BTreeMap<String, FactoredGradient>,
    Vec<Mat<f64>>,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(1000 * task as u64 + step);
    let mut gradients = GradientsParams::new();
    let mut factors = BTreeMap::new();
    let mut whole = Vec::new();
    let scale = (1.0 + task as f64) * 0.5;
    for (param, (path, shape)) in model.weights().into_iter().zip(SHAPES) {
        let mut sum = Mat::<f64>::zeros(shape[0], shape[1]);
        if factored {
            let rows = 10;
            let left = to_device(&common::gaussian(rows, shape[0], &mut rng), inner);
            let right = common::gaussian(rows, shape[1], &mut rng);
            let right = to_device(&scaled(&right, scale / 3.0), inner);
            sum = host(left.clone()).transpose() * host(right.clone());
            factors.insert(path.to_string(), FactoredGradient { left, right });
        }
        if !factored || path == "o.weight" {
            let matrix = common::gaussian(shape[0], shape[1], &mut rng);
            let full = to_device(&scaled(&matrix, scale), inner);
            sum += host(full.clone());
            gradients.register(param.id, full);
        }
        whole.push(sum);
    }
    (gradients, factors, whole)
}

/// Runs the optimizer and the reference side by side for 10 steps (refreshes at steps 0, 3,
/// 6 and 9), comparing every weight after every step; returns how far the weights moved.
fn compare(case: &Case) -> f64 {
    let device = device();
    let inner = device.clone().without_autodiff();
    let config = case.config();
    let lr = 0.02;
    let samples = [6usize, 2, 4];
    let losses = [1.5f64, 0.7, 1.1];
    let mut rng = ChaCha8Rng::seed_from_u64(77);
    let task_subspaces = case.method.multi_subspace() && case.tasks > 1;
    let needed = config.shared_rank
        + if task_subspaces {
            config.effective_task_rank() * case.tasks
        } else {
            0
        };
    let mut null_space = NullSpace::new();
    let mut model = ThreeWeights::new(&device);
    let start: Vec<Mat<f64>> = model
        .weights()
        .iter()
        .map(|p| host(p.val().inner()))
        .collect();
    let mut references: Vec<ReferenceWeight> = SHAPES
        .iter()
        .zip(&start)
        .map(|((path, shape), weight)| {
            let knowledge = case.method.null_space().then(|| {
                let d_in = shape[case.input_axis];
                // Wide knowledge only where the bases keep their full ranks: on the larger side
                // of a wide or tall weight (the optimizer removes it from coordinates), or on a
                // square one (whose bases go to the side where they fit).
                let square = shape[0] == shape[1];
                let fits = square || basis_on_rows(*shape, None, needed) == (case.input_axis == 1);
                // Sizes that make every layout occur: bases on the knowledge side (the smaller
                // side, the larger, a square weight's), and away from it with U removed from the
                // coordinates, as protected directions (the square weight on axis 0, the 24-wide
                // input side on axis 1) or through
                // their complement (wide knowledge: k > d/2, and d − k below the 8 directions
                // every subspace needs, so that a wide or tall weight's bases leave the
                // knowledge side).
                // On axis 0 the 24-wide input side keeps 10 of its directions free (no more
                // than the other side's 12, at least the 8 every subspace needs): the bases lie
                // there. On axis 1 it keeps 19 free, more than the other side's 16: the bases lie
                // on the smaller side and U is removed from the coordinates.
                let k = match (case.wide_knowledge && fits, d_in > 16) {
                    (true, _) if square => 2 * d_in / 3,
                    (true, _) => 3 * d_in / 4,
                    (false, true) if case.input_axis == 0 => 14,
                    (false, true) => 5,
                    (false, false) if square && case.input_axis == 0 => 5,
                    (false, false) => 3,
                };
                let basis = common::random_orthonormal(d_in, k, &mut rng);
                null_space.insert(
                    *path,
                    KnowledgeBasis {
                        basis: Some(to_device(&basis, &inner)),
                        input_axis: case.input_axis,
                        retained_energy: 0.99,
                    },
                );
                Knowledge {
                    basis,
                    axis: case.input_axis,
                }
            });
            ReferenceWeight {
                path,
                weight: weight.clone(),
                rows: basis_on_rows(
                    *shape,
                    knowledge.as_ref().map(|k| (k.axis, k.basis.ncols())),
                    needed,
                ),
                knowledge,
                shared: None,
                tasks: Vec::new(),
            }
        })
        .collect();
    let mut optimizer: GemsOptimizer = config.clone().init().unwrap().with_null_space(null_space);

    for step in 0..10u64 {
        let factored = case.condensed == Condensed::Factored;
        let mut host_gradients: Vec<Vec<Mat<f64>>> = Vec::new();
        let tasks: Vec<CondensedTask> = (0..case.tasks)
            .map(|t| {
                let (gradients, factors, whole) = task_gradients(&model, t, step, &inner, factored);
                host_gradients.push(whole);
                let task = TaskGradients {
                    gradients,
                    loss: losses[t],
                    samples: samples[t],
                };
                match case.condensed.applies_to(t, case.tasks) {
                    true => optimizer.condense_factored(&model, t, task, factors),
                    false => task.into(),
                }
            })
            .collect();
        // Nothing to condense before the first bases exist; afterwards every weight whose
        // bases the step keeps.
        for (t, task) in tasks.iter().enumerate() {
            let refreshing = step % config.refresh_every == 0;
            let expected = match case.condensed.applies_to(t, case.tasks) && !refreshing {
                true => SHAPES.len(),
                false => 0,
            };
            assert_eq!(
                task.condensed_weights(),
                expected,
                "{}: step {step}",
                case.name()
            );
        }
        let (next, report) = optimizer.step(lr, model, tasks).unwrap();
        model = next;

        // The gate, from the definition.
        let total_samples: usize = samples[..case.tasks].iter().sum();
        let norms: Vec<f64> = host_gradients
            .iter()
            .map(|per_weight| {
                per_weight
                    .iter()
                    .map(|g| g.squared_norm_l2())
                    .sum::<f64>()
                    .sqrt()
            })
            .collect();
        let gate: Vec<f64> = if case.tasks == 1 {
            vec![1.0]
        } else {
            let loss_total: f64 = losses[..case.tasks].iter().sum();
            let norm_total: f64 = norms.iter().sum();
            (0..case.tasks)
                .map(|t| {
                    (0.4 * losses[t] / loss_total
                        + 0.4 * norms[t] / norm_total
                        + 0.2 * samples[t] as f64 / total_samples as f64)
                        / (0.4 + 0.4 + 0.2)
                })
                .collect()
        };
        for (t, value) in gate.iter().enumerate() {
            assert!(
                (report.gate[t] - value).abs() < 1e-6,
                "{}: gate {:?} vs {gate:?}",
                case.name(),
                report.gate
            );
        }

        for (w, reference) in references.iter_mut().enumerate() {
            let task_grads: Vec<&Mat<f64>> = host_gradients.iter().map(|g| &g[w]).collect();
            let merged = task_grads
                .iter()
                .zip(&samples)
                .map(|(g, n)| scaled(g, *n as f64 / total_samples as f64))
                .reduce(|a, b| a + b)
                .unwrap();
            let project = |g: &Mat<f64>| match &reference.knowledge {
                Some(k) => k.project_out(g),
                None => g.clone(),
            };
            let rows = reference.rows;
            let coordinate_knowledge = reference
                .knowledge
                .as_ref()
                .filter(|k| (k.axis == 0) != rows)
                .map(|k| k.basis.clone());
            let ours = optimizer.subspaces(reference.path).unwrap();
            let what = format!("{} step {step} {}", case.name(), reference.path);

            if step % config.refresh_every == 0 {
                let mut shared_basis = top_directions(
                    &canonical(&project(&merged), rows),
                    4,
                    &format!("{what} shared"),
                );
                align_signs(
                    &mut shared_basis,
                    &host(ours.shared.projector.basis.clone()),
                    &format!("{what} shared"),
                );
                let cols = canonical(&merged, rows).ncols();
                reference.shared = Some(match reference.shared.take() {
                    Some(old) => old.rebased(shared_basis.clone(), case.transfer),
                    None => ReferenceSubspace::fresh(shared_basis.clone(), cols),
                });
                if task_subspaces {
                    let mut previous: Vec<Option<ReferenceSubspace>> =
                        std::mem::take(&mut reference.tasks)
                            .into_iter()
                            .map(Some)
                            .collect();
                    previous.resize_with(case.tasks, || None);
                    for (t, old) in previous.into_iter().enumerate() {
                        let residual = remove_from_rows(
                            &canonical(&project(task_grads[t]), rows),
                            &shared_basis,
                        );
                        let mut basis = top_directions(&residual, 2, &format!("{what} task {t}"));
                        align_signs(
                            &mut basis,
                            &host(ours.tasks[t].projector.basis.clone()),
                            &format!("{what} task {t}"),
                        );
                        reference.tasks.push(match old {
                            Some(old) => old.rebased(basis, case.transfer),
                            None => ReferenceSubspace::fresh(basis, cols),
                        });
                    }
                }
            }

            let shared = reference.shared.as_mut().unwrap();
            let shared_step = shared.step(
                &canonical(&merged, rows),
                coordinate_knowledge.as_ref(),
                &config,
            );
            let mut update = &shared.basis * &shared_step;
            for (t, subspace) in reference.tasks.iter_mut().enumerate() {
                let task_step = subspace.step(
                    &canonical(task_grads[t], rows),
                    coordinate_knowledge.as_ref(),
                    &config,
                );
                update += scaled(&(&subspace.basis * &task_step), gate[t]);
            }
            let update = canonical(&update, rows); // back to the weight's orientation
            let decay = project(&scaled(&reference.weight, lr * config.weight_decay));
            reference.weight = &reference.weight - scaled(&update, lr * config.scale) - decay;

            let actual = host(model.weights()[w].val().inner());
            let error = (&actual - &reference.weight).norm_max();
            assert!(error <= 1e-5, "{what}: weight differs by {error:e}");
        }
    }
    references
        .iter()
        .zip(&start)
        .map(|(r, s)| (&r.weight - s).norm_max())
        .fold(0.0, f64::max)
}

#[test]
fn the_gems_step_matches_a_float64_reference_over_refreshes() {
    for method in [Method::Gems, Method::GemsNoNsp] {
        for transfer in [
            MomentTransfer::Rotate,
            MomentTransfer::Keep,
            MomentTransfer::Reset,
        ] {
            let axes: &[usize] = if method.null_space() { &[0, 1] } else { &[0] };
            let widths: &[bool] = if method.null_space() {
                &[false, true]
            } else {
                &[false]
            };
            for &input_axis in axes {
                for &wide_knowledge in widths {
                    let case = Case {
                        method,
                        transfer,
                        input_axis,
                        tasks: 2,
                        wide_knowledge,
                        condensed: Condensed::None,
                    };
                    let moved = compare(&case);
                    assert!(
                        moved > 1e-2,
                        "{}: weights moved by only {moved:e}",
                        case.name()
                    );
                }
            }
        }
    }
}

/// With one task, GEMS without null space is GaLore: the shared subspace alone, against the
/// same reference (which has then no task subspaces and no gate).
#[test]
fn with_one_task_gems_without_null_space_matches_the_galore_reference() {
    for method in [Method::GemsNoNsp, Method::Galore] {
        let case = Case {
            method,
            transfer: MomentTransfer::Rotate,
            input_axis: 0,
            tasks: 1,
            wide_knowledge: false,
            condensed: Condensed::None,
        };
        assert!(compare(&case) > 1e-2);
    }
}

/// Task gradients condensed to low-rank coordinates (`GemsOptimizer::condense`) give the
/// reference's step: one task condensed or every one, from full gradients or from factors
/// (`condense_factored`: projected as factors between refreshes, multiplied out on refresh
/// steps, added to a full part), knowledge on either side (wide, through the complement,
/// included), with and without task subspaces, and a third task (whose bases are not adjacent
/// in the optimizer's stack, unlike the first two tasks').
#[test]
fn condensed_task_gradients_give_the_reference_step() {
    for condensed in [Condensed::AllButLast, Condensed::All, Condensed::Factored] {
        for (method, input_axis, wide_knowledge, tasks) in [
            (Method::Gems, 0, false, 2),
            (Method::Gems, 1, true, 2),
            (Method::Gems, 0, false, 3),
            (Method::GemsNoNsp, 0, false, 2),
            (Method::Galore, 0, false, 1),
        ] {
            let case = Case {
                method,
                transfer: MomentTransfer::Rotate,
                input_axis,
                tasks,
                wide_knowledge,
                condensed,
            };
            assert!(compare(&case) > 1e-2, "{}", case.name());
        }
    }
}

/// The moment transition with a rotation that is not a permutation: the optimizer's
/// C = Q_newᵀ·Q_old applied to first and second moments and masses, against the definition
/// (using Cᵀ instead, or rotating the columns, fails this test).
#[test]
fn moment_rotation_follows_the_new_basis() {
    let device = Device::flex();
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    let old_basis = common::random_orthonormal(12, 4, &mut rng);
    // The new basis shares part of the old subspace and brings new directions.
    let mixed = Mat::from_fn(12, 4, |i, j| {
        old_basis[(i, (j + 1) % 4)] * 0.6 + common::gaussian(1, 1, &mut rng)[(0, 0)] * 0.3
    });
    let new_basis = mixed.qr().compute_thin_Q();
    let first = common::gaussian(4, 7, &mut rng);
    let second = Mat::from_fn(4, 7, |i, j| first[(i, j)].powi(2) + 0.1);
    let masses = [0.9, 0.5, 0.2, 0.7];
    let mass_tensor = |values: &[f64]| to_device(&Mat::from_fn(4, 1, |i, _| values[i]), &device);
    let moments = AdamMoments {
        first: to_device(&first, &device),
        second: to_device(&second, &device),
        first_mass: mass_tensor(&masses),
        second_mass: mass_tensor(&masses),
        steps: 9,
    };
    let projector = |basis: &Mat<f64>| Projector {
        basis: to_device(basis, &device),
        side: Side::Rows,
    };
    let transition = projector(&new_basis).transition_from(&projector(&old_basis));
    let rotated = moments.rotate(transition);

    let reference = ReferenceSubspace {
        basis: old_basis,
        first,
        second,
        first_mass: masses.to_vec(),
        second_mass: masses.to_vec(),
    }
    .rebased(new_basis, MomentTransfer::Rotate);
    let gram = reference.basis.transpose() * &reference.basis;
    assert!((gram - Mat::<f64>::identity(4, 4)).norm_max() < 1e-12);
    let check = |name: &str, actual: Tensor<2>, expected: &Mat<f64>| {
        let error = (host(actual) - expected).norm_max();
        assert!(error < 1e-5, "{name} differs by {error:e}");
    };
    check("first moment", rotated.first, &reference.first);
    check("second moment", rotated.second, &reference.second);
    let as_column = |values: &[f64]| Mat::from_fn(4, 1, |i, _| values[i]);
    check(
        "first mass",
        rotated.first_mass,
        &as_column(&reference.first_mass),
    );
    check(
        "second mass",
        rotated.second_mass,
        &as_column(&reference.second_mass),
    );
    assert_eq!(rotated.steps, 9);
}
