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
//!
//! A linear layer `y = x·W` seen by N rows (tokens) has the gradient `G = xᵀ·∂L/∂y`, of rank at
//! most N. Where N·(m + n) < m·n (a T5 decoder's few target tokens against 512-wide weights),
//! a backward pass that leaves the weight's gradient as its two factors ([`FactoredGradient`])
//! skips the `2·N·m·n` product that forms it, and
//! [`GemsOptimizer::condense_factored`] projects the factors, `(B·xᵀ)·∂L/∂y`, in
//! `2·r·N·(m + n)` operations instead of `2·r·m·n`. Factors of a weight that is not condensed
//! this step (its bases are due for a refresh, or it is not projected) are multiplied out into
//! its full gradient.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;

use crate::optimizer::{GemsOptimizer, TaskGradients, Treatment, frobenius_dot, matrix_view};
use crate::projector::Side;
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
    /// The task whose bases the coordinates are on (its place in the step's tasks).
    pub(crate) for_task: usize,
    /// Factored gradients that fit no parameter (the step rejects them).
    pub(crate) problems: Vec<String>,
}

/// A weight's gradient held as two factors, `G = leftᵀ·right`: for a linear layer `y = x·W`
/// (Burn's `[d_in, d_out]` weight) over N rows, `left` the inputs `x` (`[N, d_in]`) and `right`
/// the output gradients `∂L/∂y` (`[N, d_out]`). See the [module docs](crate::condense).
#[derive(Clone, Debug)]
pub struct FactoredGradient {
    /// `[N, rows of the weight]`.
    pub left: Tensor<2>,
    /// `[N, columns of the weight]`.
    pub right: Tensor<2>,
}

impl FactoredGradient {
    /// The factors of the sum of the parts' gradients: their rows stacked
    /// (`Σ_k leftₖᵀ·rightₖ = [left₁; left₂; …]ᵀ·[right₁; right₂; …]`). `None` for no part.
    pub fn sum(parts: Vec<FactoredGradient>) -> Option<Self> {
        if parts.len() <= 1 {
            return parts.into_iter().next();
        }
        let (left, right) = parts.into_iter().map(|p| (p.left, p.right)).unzip();
        Some(Self {
            left: Tensor::cat(left, 0),
            right: Tensor::cat(right, 0),
        })
    }

    /// The shape of the gradient, `[left columns, right columns]`.
    pub fn shape(&self) -> [usize; 2] {
        [self.left.dims()[1], self.right.dims()[1]]
    }

    /// Why the factors cannot stand for the gradient of a weight of shape `weight`, if they
    /// cannot.
    fn mismatch(&self, weight: &[usize]) -> Option<String> {
        let (rows, other_rows) = (self.left.dims()[0], self.right.dims()[0]);
        if rows != other_rows {
            return Some(format!(
                "its factors have {rows} and {other_rows} rows, which must agree"
            ));
        }
        (weight != self.shape()).then(|| {
            format!(
                "its factors make a {:?} gradient for a weight of shape {weight:?}",
                self.shape()
            )
        })
    }

    /// The gradient itself, `leftᵀ·right`.
    pub fn expand(&self) -> Tensor<2> {
        self.left.clone().transpose().matmul(self.right.clone())
    }

    /// `‖leftᵀ·right‖²` through the factors' Gram matrices,
    /// `Σ (left·leftᵀ)∘(right·rightᵀ)` (`2·N²·(m + n)` operations), or through the gradient
    /// where that costs less (`2·N·m·n`).
    pub fn squared_norm(&self) -> Tensor<1> {
        let rows = self.left.dims()[0];
        let [m, n] = self.shape();
        if rows * (m + n) <= m * n {
            let gram = |f: &Tensor<2>| f.clone().matmul(f.clone().transpose());
            frobenius_dot(gram(&self.left), gram(&self.right))
        } else {
            let gradient = self.expand();
            frobenius_dot(gradient.clone(), gradient)
        }
    }

    /// `(a, b)` with `aᵀ·b` the gradient in the canonical orientation of `side`
    /// ([`Side::canonical`]).
    pub(crate) fn canonical(&self, side: Side) -> (Tensor<2>, Tensor<2>) {
        match side {
            Side::Rows => (self.left.clone(), self.right.clone()),
            Side::Columns => (self.right.clone(), self.left.clone()),
        }
    }
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
            for_task: 0,
            problems: Vec::new(),
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
        self.condense_factored(module, task, gradients, BTreeMap::new())
    }

    /// [`condense`](Self::condense) with some weights' gradients held as factors instead of in
    /// `gradients` (`factored`, by parameter path; see [`FactoredGradient`]). A weight that is
    /// condensed gets its coordinates from the factors; any other gets them multiplied out
    /// into its full gradient (added to the one in `gradients`, if it has one). Factors that
    /// fit no 2-D parameter of `module` make the step reject the task.
    pub fn condense_factored<M: Module>(
        &self,
        module: &M,
        task: usize,
        gradients: TaskGradients,
        factored: BTreeMap<String, FactoredGradient>,
    ) -> CondensedTask {
        let mut condenser = Condenser {
            optimizer: self,
            task,
            gradients,
            factored,
            path: Vec::new(),
            condensed: BTreeMap::new(),
            problems: Vec::new(),
        };
        module.visit(&mut condenser);
        let mut problems = condenser.problems;
        problems.extend(condenser.factored.keys().map(|path| {
            format!("`{path}`: a factored gradient was given for it, but it is no parameter")
        }));
        CondensedTask {
            task: condenser.gradients,
            condensed: condenser.condensed,
            for_step: self.state.step,
            for_task: task,
            problems,
        }
    }
}

/// Walks the module, condensing the gradients of the weights that qualify.
struct Condenser<'a> {
    optimizer: &'a GemsOptimizer,
    task: usize,
    gradients: TaskGradients,
    factored: BTreeMap<String, FactoredGradient>,
    path: Vec<String>,
    condensed: BTreeMap<String, CondensedWeight>,
    problems: Vec<String>,
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
        let factors = self.factored.remove(&path);
        if let Some(factors) = &factors {
            let problem = match D {
                2 => factors.mismatch(&shape),
                _ => Some(format!("its parameter has {D} axes, not 2")),
            };
            if let Some(problem) = problem {
                self.problems.push(format!("`{path}`: {problem}"));
                return;
            }
        }
        let optimizer = self.optimizer;
        let subspaces = match D == 2 && optimizer.treatment(&path, &shape) == Treatment::Projected {
            true => optimizer.condensing(&path, self.task),
            false => None,
        };
        let gradients = &mut self.gradients.gradients;
        let full = gradients.remove::<D>(param.id);
        // Factors that are the whole gradient of a condensed weight are projected as they are.
        if let (Some(subspaces), None, Some(factors)) = (subspaces, &full, &factors) {
            let weight = CondensedWeight {
                coordinates: subspaces.factored_task_coordinates(self.task, factors),
                squared_norm: factors.squared_norm(),
            };
            self.condensed.insert(path, weight);
            return;
        }
        let expanded = factors.map(|factors| factors.expand().reshape(shape));
        let gradient = match (full, expanded) {
            (Some(full), Some(expanded)) => full + expanded,
            (full, expanded) => match full.or(expanded) {
                Some(gradient) => gradient,
                None => return,
            },
        };
        match subspaces {
            Some(subspaces) if gradient.dims() == shape => {
                let gradient = matrix_view(gradient);
                let weight = CondensedWeight {
                    squared_norm: frobenius_dot(gradient.clone(), gradient.clone()),
                    coordinates: subspaces.task_coordinates(self.task, gradient),
                };
                self.condensed.insert(path, weight);
            }
            _ => gradients.register(param.id, gradient),
        }
    }
}
