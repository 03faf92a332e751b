//! Task gradients condensed to low-rank coordinates as soon as their backward pass ends.
//!
//! A step from full task gradients holds every task's gradient of every parameter at once:
//! with two tasks, two full copies of the model's size. Between refreshes a projected weight
//! needs far less of a task's gradient: its coordinates on the shared basis (`Q_sᵀG_t`, which
//! the step sums over the tasks, weighted by samples, into the merged gradient's) and on the
//! task's own basis (`Q_tᵀG_t`), and its norm for the gate. [`GemsOptimizer::condense`] keeps
//! just that, so a caller can drop one task's full gradients before the next task's backward
//! pass and hold one full copy at most.
//!
//! The step from condensed tasks equals the step from full ones up to rounding (the shared
//! coordinates of a sum are the sum of the coordinates). It costs one more product with the
//! shared basis per condensed task (`2·r_s·m·n` operations on an m×n weight, against the step's
//! `4·(r_s + T·r_t)·m·n`). Weights due for a refresh, which need the full gradients, and
//! parameters updated by AdamW keep their full gradients. The per-layer task cosines of the
//! step's diagnostics need full gradients too: they are reported for the layers that have them.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;

use crate::optimizer::{
    GemsOptimizer, TaskGradients, Treatment, WeightState, frobenius_dot, matrix_view,
};
use crate::subspace::TaskCoordinates;

/// One task's contribution to a step, its projected weights possibly condensed to low-rank
/// coordinates by [`GemsOptimizer::condense`]. Every [`TaskGradients`] converts into one (with
/// nothing condensed), so [`GemsOptimizer::step`] takes either.
pub struct CondensedTask {
    /// The gradients still in full, the loss and the number of samples.
    pub(crate) task: TaskGradients,
    /// The condensed weights, by path.
    pub(crate) condensed: BTreeMap<String, CondensedWeight>,
    /// The optimizer step the coordinates belong to (the bases of that step).
    pub(crate) for_step: u64,
}

/// One condensed weight of one task.
pub(crate) struct CondensedWeight {
    /// The gradient's coordinates.
    pub coordinates: TaskCoordinates,
    /// The gradient's squared Frobenius norm (for the gate and the finiteness check).
    pub squared_norm: Tensor<1>,
}

impl CondensedTask {
    /// The task's loss.
    pub fn loss(&self) -> f64 {
        self.task.loss
    }

    /// The task's number of samples.
    pub fn samples(&self) -> usize {
        self.task.samples
    }

    /// How many weights are held as coordinates rather than full gradients.
    pub fn condensed_weights(&self) -> usize {
        self.condensed.len()
    }

    /// How many parameters' gradients are still held in full.
    pub fn full_gradients(&self) -> usize {
        self.task.gradients.len()
    }
}

impl From<TaskGradients> for CondensedTask {
    fn from(task: TaskGradients) -> Self {
        Self {
            task,
            condensed: BTreeMap::new(),
            for_step: 0,
        }
    }
}

impl GemsOptimizer {
    /// Condenses task `task`'s gradients for the next [`step`](Self::step): every projected
    /// weight whose bases that step keeps (no refresh due) is replaced by its coordinates on
    /// the shared basis and on the task's own (`[r_s + r_t, coordinate side]` instead of the full
    /// matrix), with its squared norm. See the [module docs](crate::condense) for what this
    /// saves and costs.
    ///
    /// Nothing is checked or changed here: a gradient that does not fit its parameter is left
    /// in full for the step to reject, as is every gradient of a task the state has no
    /// subspace for. The optimizer must not step between this call and the step that takes
    /// the result (that step rejects coordinates made for another one).
    pub fn condense<M: Module>(
        &self,
        module: &M,
        task: usize,
        gradients: TaskGradients,
    ) -> CondensedTask {
        let mut condenser = Condenser {
            optimizer: self,
            task,
            gradients,
            path: Vec::new(),
            condensed: BTreeMap::new(),
        };
        module.visit(&mut condenser);
        CondensedTask {
            task: condenser.gradients,
            condensed: condenser.condensed,
            for_step: self.state.step,
        }
    }
}

/// Walks the module, condensing the gradients of the weights that qualify.
struct Condenser<'a> {
    optimizer: &'a GemsOptimizer,
    task: usize,
    gradients: TaskGradients,
    path: Vec<String>,
    condensed: BTreeMap<String, CondensedWeight>,
}

impl ModuleVisitor for Condenser<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let path = self.path.join(".");
        let shape = param.val().dims();
        let optimizer = self.optimizer;
        if D != 2 || optimizer.treatment(&path, &shape) != Treatment::Projected {
            return;
        }
        let Some(WeightState::LowRank(subspaces)) = optimizer.state.weights.get(&path) else {
            return;
        };
        let refresh_due = optimizer.refresh_due(subspaces.refresh_offset);
        let has_own_basis = subspaces.tasks.is_empty() || self.task < subspaces.tasks.len();
        if refresh_due || !has_own_basis {
            return;
        }
        let gradients = &mut self.gradients.gradients;
        let Some(gradient) = gradients.remove::<D>(param.id) else {
            return;
        };
        if gradient.dims() != shape {
            gradients.register(param.id, gradient);
            return;
        }
        let gradient = matrix_view(gradient);
        let squared_norm = frobenius_dot(gradient.clone(), gradient.clone());
        let coordinates = subspaces.task_coordinates(self.task, gradient);
        self.condensed.insert(
            path,
            CondensedWeight {
                coordinates,
                squared_norm,
            },
        );
    }
}
