//! The multi-subspace decomposition of one weight's gradient.
//!
//! A projected weight owns a *shared* subspace (rank r_s, top singular directions of the merged
//! gradient G) and, with two or more tasks, one *task* subspace per task (rank r_t, top singular
//! directions of the residual (I − Q_sQ_sᵀ)G_t, hence orthogonal to the shared one). Each
//! subspace keeps Adam moments in its low-rank coordinates. With a single task there is nothing
//! task-specific to separate and the decomposition is the shared subspace alone, i.e. GaLore.

use std::ops::Range;

use burn::tensor::Tensor;
use rand_chacha::ChaCha8Rng;

use crate::adam::{AdamHyper, AdamMoments};
use crate::condense::FactoredGradient;
use crate::config::MomentTransfer;
use crate::null_space::ColumnRemoval;
use crate::projector::{Projector, Side};
use crate::rsvd::{ProjectedMatrix, SvdMethod, fallback_basis, top_left_singular_vectors};

/// The knowledge directions of one weight in its canonical orientation (rows: the side that
/// carries the bases), which a refresh takes out of the gradients.
#[derive(Clone, Copy, Debug, Default)]
pub struct KnowledgeSides<'a> {
    /// Orthonormal directions of the basis side (`[basis side, k]`): every basis avoids them.
    pub basis_side: Option<&'a Tensor<2>>,
    /// Orthonormal directions of the coordinate side (`[coordinate side, k]`).
    pub coordinate_side: Option<&'a Tensor<2>>,
}

/// One subspace: a basis and the Adam moments of the coordinates in it.
#[derive(Clone, Debug)]
pub struct Subspace {
    /// The basis.
    pub projector: Projector,
    /// Adam moments of the low-rank coordinates (`[rank, coordinate side]`).
    pub moments: AdamMoments,
}

impl Subspace {
    /// A subspace with zero moments.
    fn fresh(projector: Projector, weight_shape: [usize; 2]) -> Self {
        let width = projector.side.coordinate_dim(weight_shape);
        let coordinates = Tensor::zeros([projector.rank(), width], &projector.basis.device());
        Self {
            moments: AdamMoments::zeros_like(&coordinates),
            projector,
        }
    }

    /// This subspace's moments carried into a new basis.
    fn rebased(
        self,
        projector: Projector,
        transfer: MomentTransfer,
        weight_shape: [usize; 2],
    ) -> Self {
        match transfer {
            MomentTransfer::Rotate => Self {
                moments: self
                    .moments
                    .rotate(projector.transition_from(&self.projector)),
                projector,
            },
            // Kept as they are while the rank is; a new rank (other knowledge directions) has
            // no moments to keep.
            MomentTransfer::Keep if self.moments.first.dims()[0] == projector.rank() => Self {
                moments: self.moments,
                projector,
            },
            MomentTransfer::Keep => Self::fresh(projector, weight_shape),
            MomentTransfer::Reset => Self::fresh(projector, weight_shape),
        }
    }

    /// Bytes held by the basis and the moments (float32).
    pub fn bytes(&self) -> usize {
        4 * self.projector.basis.shape().num_elements() + self.moments.bytes()
    }
}

/// Ranks and rules for the subspaces of one weight.
#[derive(Clone, Debug)]
pub struct SubspacePlan {
    /// Shape of the weight.
    pub weight_shape: [usize; 2],
    /// The side of the weight that carries the bases.
    pub side: Side,
    /// Effective shared rank (at most the basis side minus the knowledge directions on it;
    /// 0 when those fill it and the weight cannot move).
    pub shared_rank: usize,
    /// Effective task rank, 0 when the weight has no task subspaces.
    pub task_rank: usize,
    /// Basis computation.
    pub svd: SvdMethod,
    /// Moment handling on refresh.
    pub transfer: MomentTransfer,
}

impl SubspacePlan {
    /// Ranks clipped to what the weight can hold: with `reserved` knowledge directions on the
    /// basis side, r_s ≤ basis side − reserved and r_t ≤ basis side − reserved − r_s.
    pub fn new(
        weight_shape: [usize; 2],
        side: Side,
        shared_rank: usize,
        task_rank: usize,
        reserved: usize,
        svd: SvdMethod,
        transfer: MomentTransfer,
    ) -> Self {
        let free = side.basis_dim(weight_shape).saturating_sub(reserved);
        let shared_rank = shared_rank.min(free);
        Self {
            weight_shape,
            side,
            shared_rank,
            task_rank: task_rank.min(free - shared_rank),
            svd,
            transfer,
        }
    }

    /// Float32 bytes of the state this plan creates for `tasks` task subspaces.
    pub fn state_bytes(&self, tasks: usize) -> usize {
        let basis = self.side.basis_dim(self.weight_shape);
        let width = self.side.coordinate_dim(self.weight_shape);
        // basis column + two moment rows + the two bias-correction masses of those rows
        let per_rank = basis + 2 * width + 2;
        4 * per_rank * (self.shared_rank + tasks * self.task_rank)
    }
}

/// Every subspace of one weight.
#[derive(Clone, Debug)]
pub struct WeightSubspaces {
    /// The shared subspace.
    pub shared: Subspace,
    /// One subspace per task (empty with a single task or no multi-subspace decomposition).
    pub tasks: Vec<Subspace>,
    /// How many times the bases were computed (seeds the next sketch).
    pub refreshes: u64,
    /// Step offset of this weight's refreshes when they are staggered.
    pub refresh_offset: u64,
    /// Every basis vector as a row, `[Q_1, Q_s, Q_2, …, Q_T]ᵀ` (`[r_s + T·r_t, basis side]`),
    /// built when the bases change rather than at every step. The first task's rows come
    /// before the shared ones and the second's after them, so that `[Q_s, Q_t]ᵀ` is one
    /// contiguous block for either of two tasks: a task's gradient is projected onto both its
    /// bases with one product.
    stacked_rows: Tensor<2>,
    /// The rows of `stacked_rows` that hold each subspace (index 0: the shared one, t + 1:
    /// task t's).
    block_rows: Vec<Range<usize>>,
}

/// One task's gradient of a projected weight in low-rank coordinates
/// ([`WeightSubspaces::task_coordinates`]): what a step needs of it when the bases are not
/// recomputed.
#[derive(Clone, Debug)]
pub struct TaskCoordinates {
    /// `Q_sᵀG_t` (`[r_s, coordinate side]`).
    pub shared: Tensor<2>,
    /// `Q_tᵀG_t` (`[r_t, coordinate side]`), `None` without task subspaces.
    pub own: Option<Tensor<2>>,
}

/// The low-rank coordinates one update is made from ([`WeightSubspaces::update`]).
#[derive(Clone, Debug)]
pub struct Coordinates {
    /// The merged gradient's on the shared basis, `Q_sᵀ·Σ_t w_t·G_t`.
    pub shared: Tensor<2>,
    /// Each task's on its own basis, `Q_tᵀG_t` (`None`: the task is absent); empty without
    /// task subspaces.
    pub tasks: Vec<Option<Tensor<2>>>,
}

/// A basis that could not be recomputed on a refresh, and why.
#[derive(Clone, Debug)]
pub struct RefreshFailure {
    /// `shared` or `task N`.
    pub subspace: String,
    /// The decomposition's error.
    pub reason: String,
}

impl WeightSubspaces {
    /// The subspaces of one weight from their parts.
    pub fn new(
        shared: Subspace,
        tasks: Vec<Subspace>,
        refreshes: u64,
        refresh_offset: u64,
    ) -> Self {
        let mut block_rows = vec![0..0; tasks.len() + 1];
        let mut rows = Vec::with_capacity(tasks.len() + 1);
        let mut start = 0;
        for index in stacking_order(tasks.len()) {
            let subspace = match index {
                0 => &shared,
                task => &tasks[task - 1],
            };
            block_rows[index] = start..start + subspace.projector.rank();
            start += subspace.projector.rank();
            rows.push(subspace.projector.basis.clone().transpose());
        }
        Self {
            shared,
            tasks,
            refreshes,
            refresh_offset,
            stacked_rows: Tensor::cat(rows, 0),
            block_rows,
        }
    }

    /// Computes the bases from the merged gradient and the task gradients (shaped like the
    /// weight), carrying moments over from `previous`: the shared basis from the merged
    /// gradient, each task's from its gradient with the shared basis taken out, every one of
    /// them with the `knowledge` directions taken out (on the basis side, which the bases then
    /// avoid, and on the other). The projections are applied to the randomized SVD's sketches,
    /// never to the full-size gradients.
    ///
    /// A task absent from this step (`None`: no samples, or no gradient for this weight) keeps
    /// its subspace untouched, basis and moments, until a refresh it takes part in; on the first
    /// refresh it gets random directions outside the shared basis and zero moments.
    ///
    /// A basis whose decomposition fails keeps its previous value (a task basis is re-made
    /// orthogonal to a new shared basis); with no previous value, random orthonormal directions
    /// stand in until the next refresh. Failures are returned, never hidden.
    pub fn refresh(
        previous: Option<WeightSubspaces>,
        merged: &Tensor<2>,
        task_gradients: &[Option<Tensor<2>>],
        plan: &SubspacePlan,
        refresh_offset: u64,
        knowledge: KnowledgeSides<'_>,
        rng: &mut ChaCha8Rng,
    ) -> (WeightSubspaces, Vec<RefreshFailure>) {
        let side = plan.side;
        let exclude = knowledge.basis_side;
        let projected = |gradient: &Tensor<2>| ProjectedMatrix {
            matrix: side.canonical(gradient.clone()),
            columns_outside: knowledge.coordinate_side.cloned(),
        };
        let rows = side.basis_dim(plan.weight_shape);
        let device = merged.device();
        let mut failures = Vec::new();
        let (previous_shared, mut previous_tasks, refreshes) = match previous {
            Some(p) => (
                Some(p.shared),
                p.tasks.into_iter().map(Some).collect(),
                p.refreshes,
            ),
            None => (None, Vec::new(), 0),
        };
        previous_tasks.resize_with(task_gradients.len(), || None);

        let computed =
            top_left_singular_vectors(projected(merged), plan.shared_rank, &plan.svd, exclude, rng);
        let (shared, shared_kept) = match (computed, previous_shared) {
            (Ok(basis), previous) => {
                let projector = Projector { basis, side };
                let subspace = match previous {
                    Some(old) => old.rebased(projector, plan.transfer, plan.weight_shape),
                    None => Subspace::fresh(projector, plan.weight_shape),
                };
                (subspace, false)
            }
            (Err(error), previous) => {
                failures.push(RefreshFailure {
                    subspace: "shared".into(),
                    reason: error.to_string(),
                });
                match previous {
                    Some(old) => (old, true),
                    None => {
                        let basis =
                            fallback_basis(None, rows, plan.shared_rank, exclude, rng, &device)
                                .expect("random directions always complete a basis");
                        (
                            Subspace::fresh(Projector { basis, side }, plan.weight_shape),
                            false,
                        )
                    }
                }
            }
        };

        let mut tasks = Vec::new();
        if plan.task_rank > 0 && task_gradients.len() > 1 {
            let shared_basis = &shared.projector.basis;
            let avoided = match exclude {
                Some(knowledge) => Tensor::cat(vec![knowledge.clone(), shared_basis.clone()], 1),
                None => shared_basis.clone(),
            };
            for (task, (gradient, previous)) in
                task_gradients.iter().zip(previous_tasks).enumerate()
            {
                let Some(gradient) = gradient else {
                    tasks.push(match previous {
                        Some(old) => old,
                        None => {
                            let basis = fallback_basis(
                                None,
                                rows,
                                plan.task_rank,
                                Some(&avoided),
                                rng,
                                &device,
                            )
                            .expect("random directions always complete a basis");
                            Subspace::fresh(Projector { basis, side }, plan.weight_shape)
                        }
                    });
                    continue;
                };
                let computed = top_left_singular_vectors(
                    projected(gradient),
                    plan.task_rank,
                    &plan.svd,
                    Some(&avoided),
                    rng,
                );
                let basis = match computed {
                    Ok(basis) => basis,
                    Err(error) => {
                        failures.push(RefreshFailure {
                            subspace: format!("task {task}"),
                            reason: error.to_string(),
                        });
                        if let (true, Some(old)) = (shared_kept, &previous) {
                            tasks.push(old.clone());
                            continue;
                        }
                        let start = previous.as_ref().map(|old| old.projector.basis.clone());
                        fallback_basis(start, rows, plan.task_rank, Some(&avoided), rng, &device)
                            .expect("random directions always complete a basis")
                    }
                };
                let projector = Projector { basis, side };
                tasks.push(match previous {
                    Some(old) => old.rebased(projector, plan.transfer, plan.weight_shape),
                    None => Subspace::fresh(projector, plan.weight_shape),
                });
            }
        }

        let subspaces = WeightSubspaces::new(shared, tasks, refreshes + 1, refresh_offset);
        (subspaces, failures)
    }

    /// One task's gradient `gradient` (shaped like the weight) in this weight's coordinates:
    /// on the shared basis and on task `task`'s own basis (none without task subspaces).
    pub fn task_coordinates(&self, task: usize, gradient: Tensor<2>) -> TaskCoordinates {
        let gradient = self.shared.projector.side.canonical(gradient);
        self.coordinates_by(task, |basis_rows| basis_rows.matmul(gradient.clone()))
    }

    /// [`task_coordinates`](Self::task_coordinates) of a gradient held as two factors,
    /// `B·G = (B·aᵀ)·b` for `canonical(G) = aᵀ·b`: `2·r·N·(m + n)` operations for N factor rows
    /// instead of `2·r·m·n`, and the gradient is never formed.
    pub fn factored_task_coordinates(
        &self,
        task: usize,
        gradient: &FactoredGradient,
    ) -> TaskCoordinates {
        let (a, b) = gradient.canonical(self.shared.projector.side);
        self.coordinates_by(task, |basis_rows| {
            basis_rows.matmul(a.clone().transpose()).matmul(b.clone())
        })
    }

    /// The coordinates of one task's gradient on the shared basis and on task `task`'s own,
    /// `project(B)` giving `B·canonical(G)` for a block `B` of the stacked basis rows. With the
    /// two bases' rows adjacent in the stack (the first two tasks), one product gives both.
    fn coordinates_by(
        &self,
        task: usize,
        project: impl Fn(Tensor<2>) -> Tensor<2>,
    ) -> TaskCoordinates {
        let project_rows = |rows: Range<usize>| {
            let basis_dim = self.stacked_rows.dims()[1];
            project(self.stacked_rows.clone().slice([rows, 0..basis_dim]))
        };
        let shared = self.block_rows[0].clone();
        let Some(own) = self.block_rows.get(task + 1).cloned() else {
            return TaskCoordinates {
                shared: project_rows(shared),
                own: None,
            };
        };
        if own.end != shared.start && shared.end != own.start {
            return TaskCoordinates {
                shared: project_rows(shared),
                own: Some(project_rows(own)),
            };
        }
        let both = own.start.min(shared.start)..own.end.max(shared.end);
        let coordinates = project_rows(both.clone());
        let width = coordinates.dims()[1];
        let rows_of = |block: Range<usize>| {
            let rows = block.start - both.start..block.end - both.start;
            coordinates.clone().slice([rows, 0..width])
        };
        TaskCoordinates {
            shared: rows_of(shared),
            own: Some(rows_of(own)),
        }
    }

    /// Each task's full gradient on its own basis, `Q_tᵀG_t` (`None` for an absent task).
    pub fn own_coordinates(&self, task_gradients: &[Option<Tensor<2>>]) -> Vec<Option<Tensor<2>>> {
        self.tasks
            .iter()
            .zip(task_gradients)
            .map(|(subspace, gradient)| {
                gradient
                    .as_ref()
                    .map(|g| subspace.projector.project(g.clone()))
            })
            .collect()
    }

    /// The update of one step, shaped like the weight:
    /// `factor · (Q_s·N_s + Σ_t gate_t·Q_t·N_t)` with N the normalised Adam steps of the
    /// `coordinates`: the merged gradient's Q_sᵀG (shared subspace) and each task's Q_tᵀG_t
    /// (task subspaces). An absent task (`None`) is left out and its moments stay as they are.
    ///
    /// `knowledge`, for a weight whose knowledge directions lie on the side opposite the bases,
    /// is removed from the coordinates (the projected gradient's) and from the normalised steps
    /// (Adam's element-wise normalisation would bring it back): on r-row blocks instead of
    /// full-size matrices, and once on all the subspaces' blocks stacked. When the knowledge
    /// directions lie on the basis side, the bases themselves avoid them and nothing is needed
    /// here.
    ///
    /// The scalars multiply the small coordinate blocks, which are stacked so that a single
    /// product with the stacked bases (kept from the refresh) brings everything back to full
    /// size, in the weight's own layout ([`Side::expand`]): one full-size pass instead of one
    /// per subspace plus the additions between them.
    pub fn update(
        &mut self,
        coordinates: Coordinates,
        gates: &[f64],
        factor: f64,
        hyper: &AdamHyper,
        knowledge: Option<&ColumnRemoval>,
    ) -> Tensor<2> {
        let mut present = vec![0];
        let mut blocks = vec![coordinates.shared];
        for (task, task_coordinates) in coordinates.tasks.into_iter().enumerate() {
            if let Some(task_coordinates) = task_coordinates {
                present.push(task + 1);
                blocks.push(task_coordinates);
            }
        }
        let ranks: Vec<usize> = blocks.iter().map(|c| c.dims()[0]).collect();
        if let Some(knowledge) = knowledge {
            blocks = split_rows(knowledge.apply(Tensor::cat(blocks, 0)), &ranks);
        }
        let mut steps: Vec<Option<Tensor<2>>> = vec![None; self.tasks.len() + 1];
        for (&index, coordinates) in present.iter().zip(blocks) {
            let (subspace, scale) = match index {
                0 => (&mut self.shared, factor),
                task => (&mut self.tasks[task - 1], factor * gates[task - 1]),
            };
            steps[index] = Some(
                subspace
                    .moments
                    .update(coordinates, hyper)
                    .mul_scalar(scale),
            );
        }
        // In the order of the stacked rows; an absent task's block is zero, so that the
        // stacked bases serve every step.
        let width = self.shared.moments.first.dims()[1];
        let device = self.stacked_rows.device();
        let stacked = stacking_order(self.tasks.len())
            .into_iter()
            .map(|index| {
                steps[index].take().unwrap_or_else(|| {
                    Tensor::zeros([self.block_rows[index].len(), width], &device)
                })
            })
            .collect();
        let mut steps = Tensor::cat(stacked, 0);
        if let Some(knowledge) = knowledge {
            steps = knowledge.apply(steps);
        }
        let side = self.shared.projector.side;
        side.expand(self.stacked_rows.clone().transpose(), steps)
    }

    /// Bytes held by every basis and moment (float32).
    pub fn bytes(&self) -> usize {
        self.shared.bytes() + self.tasks.iter().map(Subspace::bytes).sum::<usize>()
    }
}

/// Subspace indices (0: the shared one, t + 1: task t's) in the order of the stacked rows:
/// the first task's, the shared one, then the other tasks'.
fn stacking_order(tasks: usize) -> Vec<usize> {
    match tasks {
        0 => vec![0],
        _ => [1, 0].into_iter().chain(2..=tasks).collect(),
    }
}

/// `matrix` cut into consecutive row blocks of the given heights.
fn split_rows(matrix: Tensor<2>, heights: &[usize]) -> Vec<Tensor<2>> {
    let columns = matrix.dims()[1];
    let mut start = 0;
    heights
        .iter()
        .map(|&height| {
            let block = matrix.clone().slice([start..start + height, 0..columns]);
            start += height;
            block
        })
        .collect()
}
