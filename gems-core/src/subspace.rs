//! The multi-subspace decomposition of one weight's gradient.
//!
//! A projected weight owns a *shared* subspace (rank r_s, top singular directions of the merged
//! gradient G) and, with two or more tasks, one *task* subspace per task (rank r_t, top singular
//! directions of the residual (I − Q_sQ_sᵀ)G_t, hence orthogonal to the shared one). Each
//! subspace keeps Adam moments in its low-rank coordinates. With a single task there is nothing
//! task-specific to separate and the decomposition is the shared subspace alone, i.e. GaLore.

use burn::tensor::Tensor;
use rand_chacha::ChaCha8Rng;

use crate::adam::{AdamHyper, AdamMoments};
use crate::config::MomentTransfer;
use crate::projector::{Projector, Side};
use crate::rsvd::{SvdMethod, fallback_basis, remove_component, top_left_singular_vectors};

/// One subspace: a basis and the Adam moments of the coordinates in it.
#[derive(Clone, Debug)]
pub struct Subspace {
    /// The basis.
    pub projector: Projector,
    /// Adam moments of the low-rank coordinates (`[rank, larger side]`).
    pub moments: AdamMoments,
}

impl Subspace {
    /// A subspace with zero moments.
    fn fresh(projector: Projector, weight_shape: [usize; 2]) -> Self {
        let larger = weight_shape[0].max(weight_shape[1]);
        let coordinates = Tensor::zeros([projector.rank(), larger], &projector.basis.device());
        Self {
            moments: AdamMoments::zeros_like(&coordinates),
            projector,
        }
    }

    /// The Adam step for `gradient` (shaped like the weight), projected into the subspace,
    /// normalised there and brought back to full size.
    pub fn direction(&mut self, gradient: Tensor<2>, hyper: &AdamHyper) -> Tensor<2> {
        let coordinates = self.projector.project(gradient);
        let step = self.moments.update(coordinates, hyper);
        self.projector.project_back(step)
    }

    /// This subspace's moments carried into a new basis.
    fn rebased(self, projector: Projector, transfer: MomentTransfer, weight_shape: [usize; 2]) -> Self {
        match transfer {
            MomentTransfer::Rotate => Self {
                moments: self.moments.rotate(projector.transition_from(&self.projector)),
                projector,
            },
            MomentTransfer::Keep => Self {
                moments: self.moments,
                projector,
            },
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
    /// Effective shared rank (at most the smaller side).
    pub shared_rank: usize,
    /// Effective task rank, 0 when the weight has no task subspaces.
    pub task_rank: usize,
    /// Basis computation.
    pub svd: SvdMethod,
    /// Moment handling on refresh.
    pub transfer: MomentTransfer,
}

impl SubspacePlan {
    /// Ranks clipped to what the weight can hold: r_s ≤ min side, r_t ≤ min side − r_s.
    pub fn new(
        weight_shape: [usize; 2],
        shared_rank: usize,
        task_rank: usize,
        svd: SvdMethod,
        transfer: MomentTransfer,
    ) -> Self {
        let side = weight_shape[0].min(weight_shape[1]);
        let shared_rank = shared_rank.min(side);
        Self {
            weight_shape,
            shared_rank,
            task_rank: task_rank.min(side - shared_rank),
            svd,
            transfer,
        }
    }

    /// Float32 bytes of the state this plan creates for `tasks` task subspaces.
    pub fn state_bytes(&self, tasks: usize) -> usize {
        let side = self.weight_shape[0].min(self.weight_shape[1]);
        let larger = self.weight_shape[0].max(self.weight_shape[1]);
        let per_rank = side + 2 * larger; // basis column + two moment rows
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
    /// Computes the bases from the merged gradient and the task gradients (shaped like the
    /// weight, null-space projected already), carrying moments over from `previous`.
    ///
    /// A basis whose decomposition fails keeps its previous value (a task basis is re-made
    /// orthogonal to a new shared basis); with no previous value, random orthonormal directions
    /// stand in until the next refresh. Failures are returned, never hidden.
    pub fn refresh(
        previous: Option<WeightSubspaces>,
        merged: &Tensor<2>,
        task_gradients: &[Tensor<2>],
        plan: &SubspacePlan,
        refresh_offset: u64,
        rng: &mut ChaCha8Rng,
    ) -> (WeightSubspaces, Vec<RefreshFailure>) {
        let side = Side::smaller_of(plan.weight_shape);
        let rows = side.basis_dim(plan.weight_shape);
        let device = merged.device();
        let mut failures = Vec::new();
        let (previous_shared, mut previous_tasks, refreshes) = match previous {
            Some(p) => (Some(p.shared), p.tasks.into_iter().map(Some).collect(), p.refreshes),
            None => (None, Vec::new(), 0),
        };
        previous_tasks.resize_with(task_gradients.len(), || None);

        let computed = top_left_singular_vectors(
            side.canonical(merged.clone()),
            plan.shared_rank,
            &plan.svd,
            None,
            rng,
        );
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
                        let basis = fallback_basis(None, rows, plan.shared_rank, None, rng, &device)
                            .expect("random directions always complete a basis");
                        (Subspace::fresh(Projector { basis, side }, plan.weight_shape), false)
                    }
                }
            }
        };

        let mut tasks = Vec::new();
        if plan.task_rank > 0 && task_gradients.len() > 1 {
            let shared_basis = &shared.projector.basis;
            for (task, (gradient, previous)) in
                task_gradients.iter().zip(previous_tasks).enumerate()
            {
                let residual = remove_component(side.canonical(gradient.clone()), shared_basis);
                let computed = top_left_singular_vectors(
                    residual,
                    plan.task_rank,
                    &plan.svd,
                    Some(shared_basis),
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
                        fallback_basis(start, rows, plan.task_rank, Some(shared_basis), rng, &device)
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

        let subspaces = WeightSubspaces {
            shared,
            tasks,
            refreshes: refreshes + 1,
            refresh_offset,
        };
        (subspaces, failures)
    }

    /// Bytes held by every basis and moment (float32).
    pub fn bytes(&self) -> usize {
        self.shared.bytes() + self.tasks.iter().map(Subspace::bytes).sum::<usize>()
    }
}
