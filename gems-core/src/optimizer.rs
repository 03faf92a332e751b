//! The optimizer: walks a Burn module, updates every parameter from per-task gradients.
//!
//! One `step` makes two passes over the module. The first (a visitor) checks the gradients
//! against the parameters and the state, plans each parameter's treatment, and computes on the
//! device the statistics the gate and the diagnostics need (squared norms, per-layer dot
//! products), read back in a single transfer. The second (a mapper) updates the parameters.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{GradientCheckpointingStrategy, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::adam::AdamMoments;
use crate::condense::{CondensedTask, CondensedWeight};
use crate::config::{GemsConfig, OtherParams, default_target_modules};
use crate::diagnostics::{EffectiveRanks, LayerCosine, ProductCost, StepReport};
use crate::error::{GemsError, Result};
use crate::gate::TaskSignal;
use crate::null_space::{ColumnRemoval, KnowledgeBasis, NullSpace};
use crate::projector::Side;
use crate::subspace::{
    Coordinates, KnowledgeSides, SubspacePlan, TaskCoordinates, WeightSubspaces,
};

/// One task's contribution to a step: the gradients of its own backward pass, its loss and
/// its number of samples, all over the accumulation window.
pub struct TaskGradients {
    /// Gradients of the task's loss (`GradientsParams::from_grads(loss.backward(), &model)`).
    pub gradients: GradientsParams,
    /// The task's loss (mean over its target tokens).
    pub loss: f64,
    /// The task's number of samples.
    pub samples: usize,
}

/// How the optimizer treats one parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Treatment {
    /// Updated in low-rank subspaces.
    Projected,
    /// Updated with full AdamW.
    Adamw,
    /// Left unchanged.
    Frozen,
}

/// A parameter of a module and what the optimizer does with it.
#[derive(Clone, Debug)]
pub struct ParamPlan {
    /// Dotted module path (`encoder.block.0.layer.0.SelfAttention.q.weight`).
    pub path: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Treatment.
    pub treatment: Treatment,
    /// Float32 bytes of optimizer state it will hold (bases and moments, and the knowledge part
    /// that weight decay keeps) with `tasks` tasks.
    pub state_bytes: usize,
    /// Values trained: the whole parameter, or 0 when frozen.
    pub trained_values: usize,
    /// The ranks a projected weight really gets (`None` for the other treatments).
    pub ranks: Option<EffectiveRanks>,
    /// Values a task's gradient of this weight keeps once condensed: its coordinates on the
    /// shared basis and on its own, `(r_s + r_t) × coordinate side` (0 unless projected).
    pub condensed_values: usize,
    /// The operations of the matrix products this parameter costs in a step that recomputes no
    /// basis (all zero unless projected).
    pub products: ProductCost,
}

/// A rejected step: why, and the module, handed back unchanged (the optimizer's state is
/// unchanged too), so that the caller can skip the step and go on.
pub struct StepError<M> {
    /// The module passed to `step`, as it was.
    pub module: M,
    /// Why the step was rejected.
    pub error: GemsError,
}

impl<M> StepError<M> {
    /// The module and the error.
    pub fn into_parts(self) -> (M, GemsError) {
        (self.module, self.error)
    }
}

impl<M> fmt::Debug for StepError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StepError")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<M> fmt::Display for StepError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl<M> std::error::Error for StepError<M> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl<M> From<StepError<M>> for GemsError {
    fn from(rejected: StepError<M>) -> Self {
        rejected.error
    }
}

/// What `step` returns: the updated module and the step's report, or the module back with the
/// reason the step was rejected.
pub type StepResult<M> = std::result::Result<(M, StepReport), StepError<M>>;

/// A predicate over (parameter path, shape) choosing the projected weights.
pub type ParamFilter = Arc<dyn Fn(&str, &[usize]) -> bool + Send + Sync>;

/// Optimizer state of one parameter.
#[derive(Clone, Debug)]
// Few values (one per parameter), matched often: boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum WeightState {
    /// Full AdamW moments (in the parameter's matrix view).
    Full(AdamMoments),
    /// Low-rank subspaces.
    LowRank(WeightSubspaces),
}

/// Everything that changes from step to step.
#[derive(Clone, Debug, Default)]
pub(crate) struct OptimizerState {
    /// Steps taken.
    pub step: u64,
    /// Number of tasks, fixed by the first step.
    pub num_tasks: Option<usize>,
    /// Sum of every step's gate values (mean gate = sums / steps).
    pub gate_sums: Vec<f64>,
    /// Per-parameter state, by path.
    pub weights: BTreeMap<String, WeightState>,
    /// The knowledge part of each projected weight that weight decay has met, by path
    /// ([`KnowledgeBasis::knowledge_part`], taken at its first decay): what decay subtracts
    /// before shrinking the weight, so that it never touches the knowledge directions.
    pub knowledge_parts: BTreeMap<String, Tensor<2>>,
}

/// The GEMS optimizer (and, by [`crate::Method`], its baselines). Build it with
/// [`GemsConfig::init`].
pub struct GemsOptimizer {
    pub(crate) config: GemsConfig,
    filter: Option<ParamFilter>,
    /// Parameters left frozen, by path ([`GemsOptimizer::with_frozen`]).
    frozen: BTreeSet<String>,
    pub(crate) null_space: NullSpace,
    pub(crate) state: OptimizerState,
    /// Complements of the knowledge bases with more than half their side protected, computed on
    /// first use (deterministically, so not saved) for the removal from low-rank coordinates.
    pub(crate) complements: BTreeMap<String, Tensor<2>>,
    /// Weights whose bases the next step recomputes whatever the schedule: those whose knowledge
    /// directions changed after their bases were made ([`GemsOptimizer::with_null_space`]).
    pub(crate) refresh_pending: BTreeSet<String>,
}

impl GemsOptimizer {
    pub(crate) fn new(config: GemsConfig) -> Self {
        Self {
            config,
            filter: None,
            frozen: BTreeSet::new(),
            null_space: NullSpace::new(),
            state: OptimizerState::default(),
            complements: BTreeMap::new(),
            refresh_pending: BTreeSet::new(),
        }
    }

    /// Uses these knowledge bases for null-space projection. Given after steps (or after
    /// [`load_state`](Self::load_state)), the bases of every weight that the old or the new
    /// knowledge bases cover are recomputed at the next step, whatever the refresh schedule,
    /// so that they avoid the new directions from then on (bases made before would not).
    pub fn with_null_space(mut self, null_space: NullSpace) -> Self {
        let covered: BTreeSet<&String> = self
            .null_space
            .iter()
            .chain(null_space.iter())
            .map(|(path, _)| path)
            .collect();
        let stale: Vec<String> = self
            .state
            .weights
            .iter()
            .filter(|(path, state)| {
                matches!(state, WeightState::LowRank(_)) && covered.contains(path)
            })
            .map(|(path, _)| path.clone())
            .collect();
        self.refresh_pending.extend(stale);
        self.null_space = null_space;
        self.complements.clear();
        self.state.knowledge_parts.clear();
        self
    }

    /// Chooses the projected weights with a predicate over (path, shape) instead of the
    /// configuration's `target_modules`. Only 2-D parameters can be projected.
    pub fn with_param_filter(
        mut self,
        filter: impl Fn(&str, &[usize]) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.filter = Some(Arc::new(filter));
        self
    }

    /// Leaves the parameter at `path` frozen: never changed, no state, its gradient (if one is
    /// given) ignored. In Burn a frozen parameter is one that requires no gradient (such as the
    /// pre-trained vocabulary rows of a `gems_models::TokenMatrix`); the optimizer is told its
    /// path so that its plans and memory figures count it out. A step refuses a path that names
    /// no parameter of the model.
    pub fn with_frozen(mut self, path: impl Into<String>) -> Self {
        self.frozen.insert(path.into());
        self
    }

    /// The paths given to [`GemsOptimizer::with_frozen`].
    pub fn frozen(&self) -> &BTreeSet<String> {
        &self.frozen
    }

    /// The configuration.
    pub fn config(&self) -> &GemsConfig {
        &self.config
    }

    /// Turns the per-layer task cosines of the following steps on or off (the configuration's
    /// `diagnostics`): a caller that records them every few steps turns them on for those
    /// steps only, since each costs a pass over every task's full gradient of every target
    /// weight. They change no update, so a saved state loads whatever this flag was.
    pub fn set_diagnostics(&mut self, on: bool) {
        self.config.diagnostics = on;
    }

    /// The knowledge bases in use.
    pub fn null_space(&self) -> &NullSpace {
        &self.null_space
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.state.step
    }

    /// The subspaces of the projected weight at `path`, once it has been stepped.
    pub fn subspaces(&self, path: &str) -> Option<&WeightSubspaces> {
        match self.state.weights.get(path) {
            Some(WeightState::LowRank(subspaces)) => Some(subspaces),
            _ => None,
        }
    }

    /// Float32 bytes currently held by the optimizer's bases and moments, and by the knowledge
    /// parts weight decay keeps (knowledge bases excluded: see
    /// [`GemsOptimizer::null_space_bytes`]).
    pub fn state_bytes(&self) -> usize {
        self.state
            .weights
            .values()
            .map(|w| match w {
                WeightState::Full(moments) => moments.bytes(),
                WeightState::LowRank(subspaces) => subspaces.bytes(),
            })
            .chain(
                self.state
                    .knowledge_parts
                    .values()
                    .map(|part| 4 * part.shape().num_elements()),
            )
            .sum()
    }

    /// Float32 bytes held by the knowledge bases.
    pub fn null_space_bytes(&self) -> usize {
        self.null_space.iter().map(|(_, b)| b.bytes()).sum()
    }

    /// How every parameter of `module` is treated, with the state it will hold for `tasks`
    /// tasks.
    pub fn plan<M: Module>(&self, module: &M, tasks: usize) -> Vec<ParamPlan> {
        let mut lister = ParamLister::default();
        module.visit(&mut lister);
        lister
            .params
            .into_iter()
            .map(|(path, shape)| {
                let treatment = self.treatment(&path, &shape);
                let (state_bytes, ranks, condensed_values, products) = match treatment {
                    Treatment::Frozen => (0, None, 0, ProductCost::default()),
                    Treatment::Adamw => {
                        // Two moments, and the two bias-correction masses of each row of the
                        // parameter's matrix view.
                        let [rows, cols] = matrix_shape(&shape);
                        (8 * rows * cols + 8 * rows, None, 0, ProductCost::default())
                    }
                    Treatment::Projected => {
                        let subspace_tasks = if self.has_task_subspaces(tasks) {
                            tasks
                        } else {
                            0
                        };
                        let layout = self.layout(&path, [shape[0], shape[1]], tasks);
                        let plan = &layout.plan;
                        let width = plan.side.coordinate_dim(plan.weight_shape);
                        // The knowledge part weight decay keeps: k values per output.
                        let knowledge_part = match layout.knowledge {
                            Some(k)
                                if self.config.weight_decay > 0.0
                                    && !k.decays_through_complement() =>
                            {
                                k.knowledge_part_shape(plan.weight_shape)
                                    .map_or(0, |[rows, cols]| 4 * rows * cols)
                            }
                            _ => 0,
                        };
                        (
                            plan.state_bytes(subspace_tasks) + knowledge_part,
                            Some(layout.ranks()),
                            (plan.shared_rank + plan.task_rank) * width,
                            layout.products(tasks, self.config.weight_decay > 0.0),
                        )
                    }
                };
                let trained_values = match treatment {
                    Treatment::Frozen => 0,
                    Treatment::Adamw | Treatment::Projected => shape.iter().product(),
                };
                ParamPlan {
                    path,
                    shape,
                    treatment,
                    state_bytes,
                    trained_values,
                    ranks,
                    condensed_values,
                    products,
                }
            })
            .collect()
    }

    /// The effective ranks of every projected weight of `module` with `tasks` tasks, in path
    /// order, each with a warning when the knowledge basis leaves it without task subspaces or
    /// without any rank (see [`EffectiveRanks::warning`]).
    pub fn effective_ranks<M: Module>(
        &self,
        module: &M,
        tasks: usize,
    ) -> Vec<(String, EffectiveRanks)> {
        self.plan(module, tasks)
            .into_iter()
            .filter_map(|p| p.ranks.map(|ranks| (p.path, ranks)))
            .collect()
    }

    /// Whether the parameter at `path` with `shape` is one of the target matrices (projected by
    /// the low-rank methods, updated fully by AdamW).
    pub fn is_target(&self, path: &str, shape: &[usize]) -> bool {
        shape.len() == 2
            && match &self.filter {
                Some(filter) => filter(path, shape),
                None => self.config.targets(path, shape),
            }
    }

    /// The treatment of a parameter at `path` with `shape`.
    pub fn treatment(&self, path: &str, shape: &[usize]) -> Treatment {
        if self.frozen.contains(path) {
            return Treatment::Frozen;
        }
        let targeted = self.is_target(path, shape);
        match (
            targeted,
            self.config.method.low_rank(),
            self.config.other_params,
        ) {
            (true, true, _) => Treatment::Projected,
            (true, false, _) | (false, _, OtherParams::Adamw) => Treatment::Adamw,
            (false, _, OtherParams::Frozen) => Treatment::Frozen,
        }
    }

    /// Whether the next step recomputes the bases of a weight whose refreshes are offset by
    /// `refresh_offset` steps (the rule of the step, of the survey and of `condense`).
    pub(crate) fn refresh_due(&self, refresh_offset: u64) -> bool {
        (self.state.step + refresh_offset).is_multiple_of(self.config.refresh_every)
    }

    /// Whether the next step recomputes the bases of the weight at `path`: by the schedule, or
    /// because its knowledge directions changed since ([`with_null_space`](Self::with_null_space)).
    pub(crate) fn refresh_due_at(&self, path: &str, refresh_offset: u64) -> bool {
        self.refresh_pending.contains(path) || self.refresh_due(refresh_offset)
    }

    /// The subspaces of the weight at `path` if [`condense`](Self::condense) replaces task
    /// `task`'s gradient of it by coordinates for the next step: it has them, no refresh is
    /// due, and the task has a basis of its own (or no task has one).
    pub(crate) fn condensing(&self, path: &str, task: usize) -> Option<&WeightSubspaces> {
        let Some(WeightState::LowRank(subspaces)) = self.state.weights.get(path) else {
            return None;
        };
        let has_own_basis = subspaces.tasks.is_empty() || task < subspaces.tasks.len();
        (has_own_basis && !self.refresh_due_at(path, subspaces.refresh_offset)).then_some(subspaces)
    }

    /// The paths of the weights whose gradient of task `task`
    /// [`condense_factored`](Self::condense_factored) would project from factors for the next
    /// step (any other weight's factors are multiplied out): what a training loop should have
    /// its backward pass leave factored.
    pub fn condensable_weights(&self, task: usize) -> Vec<String> {
        self.state
            .weights
            .keys()
            .filter(|path| self.condensing(path, task).is_some())
            .cloned()
            .collect()
    }

    fn has_task_subspaces(&self, tasks: usize) -> bool {
        self.config.method.multi_subspace() && tasks > 1
    }

    /// The knowledge basis of the weight at `path`, when the method projects against one.
    fn knowledge_of(&self, path: &str) -> Option<&KnowledgeBasis> {
        self.config
            .method
            .null_space()
            .then(|| self.null_space.get(path))
            .flatten()
    }

    /// The removal of the knowledge directions from the low-rank coordinates of the weight at
    /// `path` (whose knowledge lies on the side opposite its bases): with the protected
    /// directions, or with their complement when that is the thinner (k > d/2).
    fn column_removal(&mut self, path: &str, knowledge: &KnowledgeBasis) -> Option<ColumnRemoval> {
        let basis = knowledge.basis.as_ref()?;
        let [d, k] = basis.dims();
        if 2 * k <= d {
            return Some(ColumnRemoval::Protected(basis.clone()));
        }
        Some(match self.complement(path, knowledge) {
            Some(complement) => ColumnRemoval::Complement(complement),
            None => ColumnRemoval::Protected(basis.clone()),
        })
    }

    /// The orthonormal complement of the knowledge directions of the weight at `path`, made on
    /// first use from the seed (so never saved); `None` if it could not be completed.
    fn complement(&mut self, path: &str, knowledge: &KnowledgeBasis) -> Option<Tensor<2>> {
        if !self.complements.contains_key(path) {
            let mut rng = sketch_rng(self.config.seed, path, COMPLEMENT_STREAM);
            self.complements
                .insert(path.to_string(), knowledge.complement(&mut rng)?);
        }
        self.complements.get(path).cloned()
    }

    /// What decoupled weight decay shrinks of the projected weight at `path`: the weight
    /// without its components along the knowledge directions, `(I − UUᵀ)W` on the input side.
    /// Null-space updates leave `UᵀW` as it was, so it is taken at the weight's first decay
    /// and kept, and each step subtracts `U·(UᵀW₀)`: one product (2·k·d·n operations) instead
    /// of two. When most of the side is protected (k > d/2), the complement V does it with
    /// nothing kept, `V(VᵀW)` (4·(d − k)·d·n).
    fn decayed_part(
        &mut self,
        path: &str,
        knowledge: &KnowledgeBasis,
        weight: Tensor<2>,
    ) -> Tensor<2> {
        if knowledge.decays_through_complement()
            && let Some(complement) = self.complement(path, knowledge)
        {
            return knowledge.within_complement(weight, &complement);
        }
        let part = match self.state.knowledge_parts.get(path) {
            Some(part) => part.clone(),
            None => {
                let Some(part) = knowledge.knowledge_part(weight.clone()) else {
                    return weight;
                };
                self.state
                    .knowledge_parts
                    .insert(path.to_string(), part.clone());
                part
            }
        };
        knowledge.without_knowledge_part(weight, part)
    }

    /// Where the bases of the weight at `path` lie, where its knowledge directions lie, and its
    /// ranks with `tasks` tasks.
    fn layout(&self, path: &str, weight_shape: [usize; 2], tasks: usize) -> Layout<'_> {
        let knowledge = self.knowledge_of(path).filter(|k| k.basis.is_some());
        let task_rank = if self.has_task_subspaces(tasks) {
            self.config.effective_task_rank()
        } else {
            0
        };
        // Subspaces made already keep their side (a state saved before the rule changed).
        let side = match self.state.weights.get(path) {
            Some(WeightState::LowRank(subspaces)) => subspaces.shared.projector.side,
            _ => Side::for_weight(
                weight_shape,
                knowledge.map(|k| (k.input_axis, k.rank())),
                self.config.shared_rank + tasks * task_rank,
            ),
        };
        let (basis_side, coordinate_side) = match knowledge {
            Some(k) if k.input_axis == side.axis() => (Some(k), None),
            Some(k) => (None, Some(k)),
            None => (None, None),
        };
        let plan = SubspacePlan::new(
            weight_shape,
            side,
            self.config.shared_rank,
            task_rank,
            basis_side.map_or(0, KnowledgeBasis::rank),
            self.config.svd.clone(),
            self.config.moment_transfer,
        );
        Layout {
            plan,
            knowledge,
            basis_side,
            coordinate_side,
            requested_task_rank: task_rank,
        }
    }

    /// One step with a single gradient (no tasks): GaLore's update for the low-rank methods.
    pub fn step_single<M: Module>(
        &mut self,
        learning_rate: f64,
        module: M,
        gradients: GradientsParams,
    ) -> StepResult<M> {
        let task = TaskGradients {
            gradients,
            loss: 0.0,
            samples: 1,
        };
        self.step(learning_rate, module, vec![task])
    }

    /// One optimizer step from per-task gradients ([`TaskGradients`], or [`CondensedTask`]s
    /// from [`condense`](Self::condense)). Tasks are identified by their position, which must
    /// stay the same from step to step.
    ///
    /// A task with no samples is absent from the step: its subspaces, moments and counters are
    /// left as they are, and the gate is shared by the others. A task without a gradient for
    /// some parameter is absent for that parameter only.
    ///
    /// On error nothing changes and the module is handed back in the [`StepError`]: the checks
    /// (consistent tasks, gradient shapes and state, knowledge bases, finite losses and
    /// gradients) all run before any update. A NaN or infinite loss or gradient of a present
    /// task is [`GemsError::NonFinite`], after which the caller can skip the step.
    pub fn step<M: Module, T: Into<CondensedTask>>(
        &mut self,
        learning_rate: f64,
        module: M,
        tasks: Vec<T>,
    ) -> StepResult<M> {
        let tasks: Vec<CondensedTask> = tasks.into_iter().map(Into::into).collect();
        let reads_before = crate::host::device_reads();
        match self.prepare(learning_rate, &module, &tasks) {
            Ok(prepared) => {
                let (module, mut report) = self.apply(learning_rate, module, tasks, prepared);
                report.device_reads = crate::host::device_reads() - reads_before;
                Ok((module, report))
            }
            Err(error) => Err(StepError { module, error }),
        }
    }

    /// Every check of a step, and what the update needs; changes nothing.
    fn prepare<M: Module>(
        &self,
        learning_rate: f64,
        module: &M,
        tasks: &[CondensedTask],
    ) -> Result<Prepared> {
        if tasks.is_empty() {
            return Err(GemsError::InvalidStep(
                "a step needs at least one task".into(),
            ));
        }
        if let Some(expected) = self.state.num_tasks
            && expected != tasks.len()
        {
            return Err(GemsError::InvalidStep(format!(
                "this optimizer was stepped with {expected} task(s) before, now {}",
                tasks.len()
            )));
        }
        let total_samples: usize = tasks.iter().map(CondensedTask::samples).sum();
        if total_samples == 0 {
            return Err(GemsError::InvalidStep("the tasks hold no samples".into()));
        }
        if !learning_rate.is_finite() || learning_rate < 0.0 {
            return Err(GemsError::InvalidStep(format!(
                "learning rate must be finite and non-negative, got {learning_rate}"
            )));
        }
        let present: Vec<bool> = tasks.iter().map(|t| t.samples() > 0).collect();
        for (task, gradients) in tasks.iter().enumerate() {
            if present[task] && !gradients.loss().is_finite() {
                return Err(GemsError::NonFinite {
                    task,
                    what: "loss",
                    value: gradients.loss(),
                });
            }
            if let Some(problem) = gradients.problems.first() {
                return Err(GemsError::InvalidStep(format!(
                    "task {task}'s gradients: {problem}{}",
                    match gradients.problems.len() {
                        1 => String::new(),
                        n => format!(" (and {} more)", n - 1),
                    }
                )));
            }
            if !gradients.condensed.is_empty() && gradients.for_task != task {
                return Err(GemsError::InvalidStep(format!(
                    "the gradients in place {task} were condensed for task {}: give the tasks \
                     in the order they were condensed for",
                    gradients.for_task
                )));
            }
            if !gradients.condensed.is_empty() && gradients.for_step != self.state.step {
                return Err(GemsError::InvalidStep(format!(
                    "task {task}'s gradients were condensed for step {} of this optimizer, \
                     which is at step {}: condense them again after the step in between",
                    gradients.for_step + 1,
                    self.state.step + 1
                )));
            }
        }

        let mut survey = Survey::new(self, tasks, &present);
        module.visit(&mut survey);
        let survey = survey.finish()?;
        let statistics = survey.read_statistics();
        for (task, norm) in statistics.task_norms.iter().enumerate() {
            if present[task] && !norm.is_finite() {
                return Err(GemsError::NonFinite {
                    task,
                    what: "gradient norm",
                    value: *norm,
                });
            }
        }

        let signals: Vec<Option<TaskSignal>> = tasks
            .iter()
            .zip(&statistics.task_norms)
            .zip(&present)
            .map(|((task, norm), present)| {
                present.then_some(TaskSignal {
                    loss: task.loss(),
                    grad_norm: *norm,
                    samples: task.samples(),
                })
            })
            .collect();
        let gate = if tasks.len() == 1 {
            vec![1.0]
        } else {
            self.config.gate.values(&signals)?
        };
        let merge_weights: Vec<f64> = tasks
            .iter()
            .map(|t| t.samples() as f64 / total_samples as f64)
            .collect();
        Ok(Prepared {
            plans: survey.plans,
            statistics,
            gate,
            merge_weights,
            present,
        })
    }

    /// Applies a prepared step: cannot fail.
    fn apply<M: Module>(
        &mut self,
        learning_rate: f64,
        module: M,
        tasks: Vec<CondensedTask>,
        prepared: Prepared,
    ) -> (M, StepReport) {
        let Prepared {
            plans,
            statistics,
            gate,
            merge_weights,
            present,
        } = prepared;
        let num_tasks = tasks.len();
        let (gradients, condensed) = tasks
            .into_iter()
            .map(|t| (t.task.gradients, t.condensed))
            .unzip();
        let mut mapper = UpdateMapper {
            optimizer: self,
            plans,
            gradients,
            condensed,
            present,
            merge_weights,
            gate: gate.clone(),
            learning_rate,
            path: Vec::new(),
            refreshed: 0,
            failed_refreshes: Vec::new(),
            svd_seconds: 0.0,
        };
        let module = module.map(&mut mapper);
        let UpdateMapper {
            refreshed,
            failed_refreshes,
            svd_seconds,
            ..
        } = mapper;

        self.state.num_tasks = Some(num_tasks);
        self.state.gate_sums.resize(num_tasks, 0.0);
        for (sum, value) in self.state.gate_sums.iter_mut().zip(&gate) {
            *sum += value;
        }
        self.state.step += 1;

        let report = StepReport {
            step: self.state.step,
            gate,
            task_gradient_norms: statistics.task_norms,
            layer_cosines: statistics.layer_cosines,
            refreshed,
            failed_refreshes,
            svd_seconds,
            device_reads: 0,
        };
        (module, report)
    }
}

/// Where one projected weight's bases and knowledge directions lie, and its ranks.
struct Layout<'a> {
    plan: SubspacePlan,
    /// The weight's knowledge basis, if it has directions.
    knowledge: Option<&'a KnowledgeBasis>,
    /// The knowledge basis when it lies on the basis side (the bases must avoid it).
    basis_side: Option<&'a KnowledgeBasis>,
    /// The knowledge basis when it lies on the other side (the coordinates must avoid it).
    coordinate_side: Option<&'a KnowledgeBasis>,
    requested_task_rank: usize,
}

impl Layout<'_> {
    fn ranks(&self) -> EffectiveRanks {
        EffectiveRanks {
            shared: self.plan.shared_rank,
            task: self.plan.task_rank,
            knowledge: self.knowledge.map_or(0, KnowledgeBasis::rank),
            knowledge_on_basis_side: self.basis_side.is_some(),
            requested_task: self.requested_task_rank,
        }
    }

    /// The products of a step of `tasks` tasks without a refresh ([`ProductCost`]), with weight
    /// decay if it `decays`. On an m×n weight with R = r_s + T·r_t subspace directions: each
    /// projection onto r basis directions and the expansion take 2·r·m·n operations, and
    /// removing the knowledge from the R-row coordinates and steps takes 8·R·w·k' on a
    /// coordinate side of width w, through the thinner of the k protected directions and their
    /// complement (k' = min(k, w − k)); see [`UpdateMapper::low_rank`].
    fn products(&self, tasks: usize, decays: bool) -> ProductCost {
        let plan = &self.plan;
        let size = plan.weight_shape.iter().product::<usize>() as f64;
        let mut cost = ProductCost::default();
        if plan.shared_rank > 0 {
            let subspace_tasks = if plan.task_rank > 0 { tasks } else { 0 };
            let rank = (plan.shared_rank + subspace_tasks * plan.task_rank) as f64;
            let per_task = (plan.shared_rank + plan.task_rank) as f64;
            cost.projection_condensed = tasks.max(1) as f64 * 2.0 * per_task * size;
            cost.projection_full = 2.0 * rank * size;
            cost.expansion = 2.0 * rank * size;
            if let Some(knowledge) = self.coordinate_side {
                let width = plan.side.coordinate_dim(plan.weight_shape);
                let k = knowledge.rank();
                cost.knowledge_removal =
                    8.0 * rank * (width * k.min(width.saturating_sub(k))) as f64;
            }
        }
        if let (true, Some(knowledge)) = (decays, self.knowledge) {
            let k = knowledge.rank();
            let d = plan.weight_shape[knowledge.input_axis];
            cost.weight_decay = match knowledge.decays_through_complement() {
                true => 4.0 * d.saturating_sub(k) as f64 * size,
                false => 2.0 * k as f64 * size,
            };
        }
        cost
    }
}

/// A checked step, ready to apply.
struct Prepared {
    plans: BTreeMap<String, PlannedUpdate>,
    statistics: Statistics,
    gate: Vec<f64>,
    merge_weights: Vec<f64>,
    /// Whether each task has samples in this step.
    present: Vec<bool>,
}

/// The update planned for one parameter.
struct PlannedUpdate {
    treatment: Treatment,
    /// Step offset of refreshes (projected weights).
    refresh_offset: u64,
}

/// Device-side statistics of one step, before readback.
struct Survey<'a> {
    optimizer: &'a GemsOptimizer,
    tasks: &'a [CondensedTask],
    /// Whether each task has samples (an absent task's gradients are ignored).
    present: &'a [bool],
    path: Vec<String>,
    /// Every projected weight of the module, gradient or not, with its shape.
    projected: BTreeMap<String, [usize; 2]>,
    /// The names of `target_modules` that match a 2-D parameter of the module.
    matched_modules: BTreeSet<String>,
    plans: BTreeMap<String, PlannedUpdate>,
    /// Every projected weight of the module, gradient or not, in the module's order.
    projected_order: Vec<String>,
    /// Per task: squared gradient norm of each updated parameter.
    squared_norms: Vec<Vec<Tensor<1>>>,
    /// Per projected layer (diagnostics): path, squared norm per task, dot per task pair.
    layer_products: Vec<(String, Vec<Tensor<1>>, Vec<Tensor<1>>)>,
    problems: Vec<String>,
    missing_knowledge: Vec<String>,
    /// Whether any parameter (frozen ones included) had a gradient.
    any_gradient: bool,
    /// The frozen parameters met.
    frozen_met: BTreeSet<String>,
    /// The weights some task gives as coordinates ([`GemsOptimizer::condense`]).
    condensed: BTreeSet<String>,
    /// The path each parameter was first met at.
    paths_by_id: HashMap<ParamId, String>,
    /// Per task: the parameters of the module its full gradients were found for.
    gradients_met: Vec<usize>,
}

/// What the survey read back.
struct Statistics {
    task_norms: Vec<f64>,
    layer_cosines: Vec<LayerCosine>,
}

struct SurveyResult {
    plans: BTreeMap<String, PlannedUpdate>,
    squared_norms: Vec<Vec<Tensor<1>>>,
    layer_products: Vec<(String, Vec<Tensor<1>>, Vec<Tensor<1>>)>,
}

impl<'a> Survey<'a> {
    fn new(optimizer: &'a GemsOptimizer, tasks: &'a [CondensedTask], present: &'a [bool]) -> Self {
        Self {
            optimizer,
            tasks,
            present,
            path: Vec::new(),
            projected: BTreeMap::new(),
            matched_modules: BTreeSet::new(),
            plans: BTreeMap::new(),
            projected_order: Vec::new(),
            squared_norms: vec![Vec::new(); tasks.len()],
            layer_products: Vec::new(),
            problems: Vec::new(),
            missing_knowledge: Vec::new(),
            any_gradient: false,
            frozen_met: BTreeSet::new(),
            condensed: BTreeSet::new(),
            paths_by_id: HashMap::new(),
            gradients_met: vec![0; tasks.len()],
        }
    }

    fn finish(mut self) -> Result<SurveyResult> {
        let optimizer = self.optimizer;
        let config = &optimizer.config;
        let first_step = optimizer.state.step == 0;
        let named_targets = optimizer.filter.is_none();
        if named_targets && first_step && config.target_modules != default_target_modules() {
            for name in &config.target_modules {
                if !self.matched_modules.contains(name) {
                    tracing::warn!(
                        module = name.as_str(),
                        "target module matches no 2-D parameter of the model; check its spelling \
                         against the parameter paths"
                    );
                }
            }
        }
        if config.method.low_rank() && self.projected.is_empty() {
            let chosen_by = if named_targets {
                format!("target_modules {:?}", config.target_modules)
            } else {
                "the parameter filter".to_string()
            };
            return Err(GemsError::InvalidConfig(format!(
                "{chosen_by} select(s) no 2-D parameter of the model, so no weight would be \
                 projected and {} would run as AdamW; name the model's linear modules (the \
                 segment before `.weight` in a parameter path)",
                config.method
            )));
        }
        if config.method.null_space() {
            let unused: Vec<&String> = optimizer
                .null_space
                .iter()
                .map(|(path, _)| path)
                .filter(|path| !self.projected.contains_key(*path))
                .collect();
            if let Some(first) = unused.first() {
                return Err(GemsError::InvalidConfig(format!(
                    "{} knowledge basis(es) belong to no projected weight of the model (first: \
                     `{first}`); they would be ignored: compute them for the projected weights' \
                     paths or add the modules to target_modules",
                    unused.len()
                )));
            }
        }
        if first_step {
            for (path, shape) in &self.projected {
                let ranks = optimizer.layout(path, *shape, self.tasks.len()).ranks();
                if let Some(warning) = ranks.warning() {
                    tracing::warn!(parameter = path.as_str(), "{warning}");
                }
            }
        }
        if let Some(unknown) = optimizer
            .frozen
            .iter()
            .find(|path| !self.frozen_met.contains(*path))
        {
            return Err(GemsError::InvalidConfig(format!(
                "a frozen parameter is named `{unknown}`, which is no parameter of the model"
            )));
        }
        if let Some(first) = self.missing_knowledge.first() {
            return Err(GemsError::MissingKnowledgeBasis {
                count: self.missing_knowledge.len(),
                first: first.clone(),
            });
        }
        for ((task, gradients), met) in self.tasks.iter().enumerate().zip(&self.gradients_met) {
            let foreign = gradients.task.gradients.len().saturating_sub(*met);
            if self.present[task] && foreign > 0 && *met > 0 {
                self.problems.push(format!(
                    "task {task} has gradients of {foreign} parameter(s) the module does not \
                     have (computed for another model, or for parameters dropped from this one?)"
                ));
            }
        }
        if !self.problems.is_empty() {
            return Err(GemsError::InvalidStep(self.problems.join("; ")));
        }
        if self.plans.is_empty() && !self.any_gradient {
            return Err(GemsError::InvalidStep(
                "no parameter of the module has a gradient: were the gradients computed for \
                 another instance of the model?"
                    .into(),
            ));
        }
        if self.optimizer.config.stagger_refresh {
            // Spread over the period by the weight's place among all the projected weights of
            // the module (gradient or not, so that a step where some have none moves no one),
            // and kept from the weight's last refresh: `condense` reads the same offset.
            let every = self.optimizer.config.refresh_every;
            let count = self.projected_order.len() as u64;
            for (index, path) in self.projected_order.iter().enumerate() {
                let Some(plan) = self.plans.get_mut(path) else {
                    continue;
                };
                plan.refresh_offset = match optimizer.state.weights.get(path) {
                    Some(WeightState::LowRank(subspaces)) => subspaces.refresh_offset,
                    _ => index as u64 * every / count,
                };
            }
        }
        // Coordinates stand for a gradient only where the bases stay as they are.
        for path in &self.condensed {
            let refresh_due = self
                .plans
                .get(path)
                .is_none_or(|plan| optimizer.refresh_due_at(path, plan.refresh_offset));
            if refresh_due {
                return Err(GemsError::InvalidStep(format!(
                    "`{path}`: its gradient was condensed, but this step recomputes its bases, \
                     which needs the full gradient"
                )));
            }
        }
        Ok(SurveyResult {
            plans: self.plans,
            squared_norms: self.squared_norms,
            layer_products: self.layer_products,
        })
    }
}

impl SurveyResult {
    /// Reads every statistic back in one transfer.
    fn read_statistics(&self) -> Statistics {
        let mut scalars: Vec<Tensor<1>> = Vec::new();
        for per_task in &self.squared_norms {
            scalars.extend(per_task.iter().cloned());
        }
        for (_, norms, dots) in &self.layer_products {
            scalars.extend(norms.iter().cloned());
            scalars.extend(dots.iter().cloned());
        }
        let values: Vec<f64> = if scalars.is_empty() {
            Vec::new()
        } else {
            crate::host::read_values(Tensor::cat(scalars, 0))
                .into_iter()
                .map(f64::from)
                .collect()
        };
        let mut next = values.into_iter();
        let task_norms = self
            .squared_norms
            .iter()
            .map(|per_task| {
                per_task
                    .iter()
                    .map(|_| next.next().unwrap())
                    .sum::<f64>()
                    .sqrt()
            })
            .collect();
        let layer_cosines = self
            .layer_products
            .iter()
            .map(|(path, norms, dots)| {
                let norms: Vec<f64> = norms.iter().map(|_| next.next().unwrap().sqrt()).collect();
                let dots: Vec<f64> = dots.iter().map(|_| next.next().unwrap()).collect();
                let mut cosine = Vec::with_capacity(dots.len());
                let mut pair = 0;
                for i in 0..norms.len() {
                    for j in i + 1..norms.len() {
                        let denominator = norms[i] * norms[j];
                        cosine.push(if denominator > 0.0 {
                            dots[pair] / denominator
                        } else {
                            0.0
                        });
                        pair += 1;
                    }
                }
                LayerCosine {
                    path: path.clone(),
                    cosine,
                }
            })
            .collect();
        Statistics {
            task_norms,
            layer_cosines,
        }
    }
}

impl ModuleVisitor for Survey<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let path = self.path.join(".");
        // One parameter at two paths (a weight tied by cloning its `Param`) has one gradient,
        // which the update would take for the first path and miss at the second.
        if let Some(first) = self.paths_by_id.get(&param.id) {
            self.problems.push(format!(
                "`{path}` is the parameter `{first}` again (tied by sharing one `Param`); each \
                 parameter must appear once in the module"
            ));
            return;
        }
        self.paths_by_id.insert(param.id, path.clone());
        let shape = param.val().dims().to_vec();
        let treatment = self.optimizer.treatment(&path, &shape);
        if treatment == Treatment::Projected {
            self.projected.insert(path.clone(), [shape[0], shape[1]]);
            self.projected_order.push(path.clone());
        }
        if self.optimizer.frozen.contains(&path) {
            self.frozen_met.insert(path.clone());
        }
        if shape.len() == 2
            && let Some(module) = path.rsplit('.').nth(1)
            && self
                .optimizer
                .config
                .target_modules
                .iter()
                .any(|t| t == module)
        {
            self.matched_modules.insert(module.to_string());
        }
        let gradients: Vec<Option<Tensor<D>>> = self
            .tasks
            .iter()
            .zip(self.present)
            .map(|(t, present)| {
                present
                    .then(|| t.task.gradients.get::<D>(param.id))
                    .flatten()
            })
            .collect();
        for (met, gradient) in self.gradients_met.iter_mut().zip(&gradients) {
            *met += usize::from(gradient.is_some());
        }
        let condensed: Vec<Option<&CondensedWeight>> = self
            .tasks
            .iter()
            .zip(self.present)
            .map(|(t, present)| present.then(|| t.condensed.get(&path)).flatten())
            .collect();
        if gradients.iter().all(Option::is_none) && condensed.iter().all(Option::is_none) {
            return;
        }
        if condensed.iter().any(Option::is_some) {
            if treatment != Treatment::Projected {
                self.problems.push(format!(
                    "`{path}`: condensed gradients are for projected weights only"
                ));
                return;
            }
            self.condensed.insert(path.clone());
        }
        self.any_gradient = true;
        if treatment == Treatment::Frozen {
            return;
        }
        for gradient in gradients.iter().flatten() {
            let dims = gradient.dims();
            if dims.as_slice() != shape.as_slice() {
                self.problems.push(format!(
                    "`{path}`: gradient shape {dims:?} differs from the parameter's {shape:?}"
                ));
                return;
            }
        }
        let optimizer = self.optimizer;
        match (optimizer.state.weights.get(&path), treatment) {
            (Some(WeightState::Full(_)), Treatment::Projected)
            | (Some(WeightState::LowRank(_)), Treatment::Adamw) => {
                self.problems.push(format!(
                    "`{path}`: its saved state does not match its treatment ({treatment:?}); \
                     the optimizer configuration changed since the state was made"
                ));
                return;
            }
            _ => {}
        }
        if treatment == Treatment::Projected && optimizer.config.method.null_space() {
            match optimizer.null_space.get(&path) {
                None => self.missing_knowledge.push(path.clone()),
                Some(knowledge) => {
                    let input_dim = shape.get(knowledge.input_axis).copied().unwrap_or(0);
                    if let Some(basis) = &knowledge.basis
                        && basis.dims()[0] != input_dim
                    {
                        self.problems.push(format!(
                            "`{path}`: knowledge basis has {} rows but the weight's input side \
                             (axis {}) has {input_dim}",
                            basis.dims()[0],
                            knowledge.input_axis
                        ));
                    }
                }
            }
        }

        let squared: Vec<Option<Tensor<1>>> = gradients
            .iter()
            .zip(&condensed)
            .map(|(g, c)| match (g, c) {
                (_, Some(condensed)) => Some(condensed.squared_norm.clone()),
                (Some(g), None) => Some(frobenius_dot(g.clone(), g.clone())),
                (None, None) => None,
            })
            .collect();
        for (task, value) in squared.iter().enumerate() {
            if let Some(value) = value {
                self.squared_norms[task].push(value.clone());
            }
        }
        if optimizer.is_target(&path, &shape)
            && optimizer.config.diagnostics
            && self.tasks.len() > 1
            && gradients.iter().all(Option::is_some)
        {
            let gradients: Vec<Tensor<D>> = gradients.into_iter().flatten().collect();
            let mut dots = Vec::new();
            for i in 0..gradients.len() {
                for j in i + 1..gradients.len() {
                    dots.push(frobenius_dot(gradients[i].clone(), gradients[j].clone()));
                }
            }
            let norms = squared.into_iter().flatten().collect();
            self.layer_products.push((path.clone(), norms, dots));
        }
        self.plans.insert(
            path,
            PlannedUpdate {
                treatment,
                refresh_offset: 0,
            },
        );
    }
}

/// The second pass: updates parameters.
struct UpdateMapper<'a> {
    optimizer: &'a mut GemsOptimizer,
    plans: BTreeMap<String, PlannedUpdate>,
    gradients: Vec<GradientsParams>,
    /// Per task, the weights given as coordinates.
    condensed: Vec<BTreeMap<String, CondensedWeight>>,
    /// Whether each task has samples (an absent task's gradients are ignored).
    present: Vec<bool>,
    merge_weights: Vec<f64>,
    gate: Vec<f64>,
    learning_rate: f64,
    path: Vec<String>,
    refreshed: usize,
    failed_refreshes: Vec<(String, String)>,
    svd_seconds: f64,
}

impl UpdateMapper<'_> {
    /// Σ_t w_t·G_t over the tasks with a gradient, skipping the multiplication for a single
    /// task. Gradients held nowhere else are scaled and summed in their own buffers on a backend
    /// that reuses them (flex): callers that need the gradients afterwards pass clones.
    fn merge(&self, gradients: Vec<Option<Tensor<2>>>) -> Tensor<2> {
        let single = gradients.len() == 1;
        gradients
            .into_iter()
            .zip(&self.merge_weights)
            .filter_map(|(g, &w)| g.map(|g| if single { g } else { g.mul_scalar(w) }))
            .reduce(|a, b| a + b)
            .expect("planned parameters have a gradient")
    }

    /// The coordinates of an update when some task's gradient of the weight is condensed:
    /// every task's gradient in coordinates (projected here where it is in full), the shared
    /// ones summed with the merge weights.
    fn combined_coordinates(
        &self,
        subspaces: &WeightSubspaces,
        gradients: Vec<Option<Tensor<2>>>,
        condensed: Vec<Option<TaskCoordinates>>,
        with_task_subspaces: bool,
    ) -> Coordinates {
        let per_task: Vec<Option<TaskCoordinates>> = gradients
            .into_iter()
            .zip(condensed)
            .enumerate()
            .map(|(task, (full, condensed))| {
                condensed.or_else(|| full.map(|g| subspaces.task_coordinates(task, g)))
            })
            .collect();
        let shared_per_task: Vec<Option<Tensor<2>>> = per_task
            .iter()
            .map(|c| c.as_ref().map(|c| c.shared.clone()))
            .collect();
        let shared = self.merge(shared_per_task);
        let tasks = match with_task_subspaces {
            true => per_task
                .into_iter()
                .map(|c| c.and_then(|c| c.own))
                .collect(),
            false => Vec::new(),
        };
        Coordinates { shared, tasks }
    }

    fn adamw(
        &mut self,
        path: &str,
        weight: Tensor<2>,
        gradients: Vec<Option<Tensor<2>>>,
    ) -> Tensor<2> {
        let merged = self.merge(gradients);
        let config = &self.optimizer.config;
        let hyper = config.adam();
        let state = self
            .optimizer
            .state
            .weights
            .entry(path.to_string())
            .or_insert_with(|| WeightState::Full(AdamMoments::zeros_like(&merged)));
        let WeightState::Full(moments) = state else {
            unreachable!("the survey rejects a treatment that does not match the state")
        };
        let mut delta = moments.update(merged, &hyper);
        if config.weight_decay > 0.0 {
            delta = delta + weight.clone().mul_scalar(config.weight_decay);
        }
        weight - delta.mul_scalar(self.learning_rate)
    }

    /// GEMS / GaLore update of one projected weight:
    /// W ← W − lr·(scale·(Q_s·N_s + Σ_t g_t·Q_t·N_t) + wd·P(W)).
    ///
    /// Null-space projection is exact but never applied to a full-size gradient on ordinary
    /// steps: gradients are projected only when bases are recomputed. When the knowledge
    /// directions U lie on the basis side, every basis is made orthogonal to U, so every update
    /// Q·N is too; when they lie on the other side, U is removed from the r-row coordinates and
    /// from the normalised step. Weight decay, which acts on the whole weight, shrinks the
    /// weight less its knowledge part ([`GemsOptimizer::decayed_part`]).
    fn low_rank(
        &mut self,
        path: &str,
        weight: Tensor<2>,
        gradients: Vec<Option<Tensor<2>>>,
        condensed: Vec<Option<TaskCoordinates>>,
        refresh_offset: u64,
    ) -> Tensor<2> {
        let weight_shape = weight.dims();
        let config = self.optimizer.config.clone();
        let layout = self.optimizer.layout(path, weight_shape, gradients.len());
        let plan = layout.plan.clone();
        let knowledge = layout.knowledge.cloned();
        let coordinate_knowledge = layout.coordinate_side.cloned();
        let exclude = layout.basis_side.and_then(|k| k.basis.clone());
        let coordinate_removal = coordinate_knowledge
            .as_ref()
            .and_then(|k| self.optimizer.column_removal(path, k));
        let previous_weight = weight.clone();
        let mut update = None;
        if plan.shared_rank > 0 {
            let previous = match self.optimizer.state.weights.remove(path) {
                Some(WeightState::LowRank(subspaces)) => Some(subspaces),
                Some(WeightState::Full(_)) => {
                    unreachable!("the survey rejects a treatment that does not match the state")
                }
                None => None,
            };
            let due = previous
                .as_ref()
                .is_none_or(|_| self.optimizer.refresh_due_at(path, refresh_offset));
            let with_task_subspaces = plan.task_rank > 0;
            let (mut subspaces, coordinates) = if condensed.iter().any(Option::is_some) {
                let subspaces =
                    previous.expect("the survey admits condensed weights only between refreshes");
                let coordinates = self.combined_coordinates(
                    &subspaces,
                    gradients,
                    condensed,
                    with_task_subspaces,
                );
                (subspaces, coordinates)
            } else if due {
                let merged = self.merge(gradients.clone());
                let task_gradients = match with_task_subspaces {
                    true => gradients,
                    false => Vec::new(),
                };
                let knowledge = KnowledgeSides {
                    basis_side: exclude.as_ref(),
                    coordinate_side: coordinate_knowledge.as_ref().and_then(|k| k.basis.as_ref()),
                };
                let subspaces = self.refresh(
                    path,
                    previous,
                    &merged,
                    &task_gradients,
                    &plan,
                    refresh_offset,
                    knowledge,
                );
                self.optimizer.refresh_pending.remove(path);
                let coordinates = Coordinates {
                    tasks: subspaces.own_coordinates(&task_gradients),
                    shared: subspaces.shared.projector.project(merged),
                };
                (subspaces, coordinates)
            } else {
                let subspaces = previous.expect("not due implies a previous state");
                // Each task's own coordinates first, so that the merge then scales and sums
                // the gradients in their own buffers.
                let tasks = match with_task_subspaces {
                    true => subspaces.own_coordinates(&gradients),
                    false => Vec::new(),
                };
                let coordinates = Coordinates {
                    tasks,
                    shared: subspaces.shared.projector.project(self.merge(gradients)),
                };
                (subspaces, coordinates)
            };

            // Scaled by the learning rate here, on the small coordinate blocks.
            update = Some(subspaces.update(
                coordinates,
                &self.gate,
                config.scale * self.learning_rate,
                &config.adam(),
                coordinate_removal.as_ref(),
            ));
            self.optimizer
                .state
                .weights
                .insert(path.to_string(), WeightState::LowRank(subspaces));
        }
        let mut weight = match update {
            Some(update) => weight - update,
            None => weight,
        };
        if config.weight_decay > 0.0 {
            // Decoupled decay of the weight before this step's update, projected like it.
            let decayed = match &knowledge {
                Some(knowledge) => self
                    .optimizer
                    .decayed_part(path, knowledge, previous_weight),
                None => previous_weight,
            };
            weight = weight - decayed.mul_scalar(config.weight_decay * self.learning_rate);
        }
        weight
    }

    /// Recomputes the bases of one weight, timing it and recording failures.
    #[allow(clippy::too_many_arguments)]
    fn refresh(
        &mut self,
        path: &str,
        previous: Option<WeightSubspaces>,
        merged: &Tensor<2>,
        task_gradients: &[Option<Tensor<2>>],
        plan: &SubspacePlan,
        refresh_offset: u64,
        knowledge: KnowledgeSides<'_>,
    ) -> WeightSubspaces {
        let started = Instant::now();
        let refreshes = previous.as_ref().map_or(0, |p| p.refreshes);
        let mut rng = sketch_rng(self.optimizer.config.seed, path, refreshes);
        let (subspaces, failures) = WeightSubspaces::refresh(
            previous,
            merged,
            task_gradients,
            plan,
            refresh_offset,
            knowledge,
            &mut rng,
        );
        for failure in failures {
            tracing::warn!(
                parameter = path,
                subspace = failure.subspace,
                reason = failure.reason,
                "basis refresh failed; keeping the previous basis"
            );
            self.failed_refreshes
                .push((format!("{path} ({})", failure.subspace), failure.reason));
        }
        self.refreshed += 1;
        self.svd_seconds += started.elapsed().as_secs_f64();
        subspaces
    }
}

impl ModuleMapper for UpdateMapper<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let path = self.path.join(".");
        let Some(plan) = self.plans.remove(&path) else {
            return param;
        };
        let (id, tensor, param_mapper) = param.consume();
        let dims = tensor.dims();
        let gradients: Vec<Option<Tensor<2>>> = self
            .gradients
            .iter_mut()
            .zip(&self.present)
            .map(|(g, present)| g.remove::<D>(id).filter(|_| *present).map(matrix_view))
            .collect();
        let condensed: Vec<Option<TaskCoordinates>> = self
            .condensed
            .iter_mut()
            .zip(&self.present)
            .map(|(c, present)| c.remove(&path).filter(|_| *present).map(|w| w.coordinates))
            .collect();
        let context = AutodiffContext::capture(&tensor);
        let weight = matrix_view(tensor.inner());
        let updated = match plan.treatment {
            Treatment::Adamw => self.adamw(&path, weight, gradients),
            Treatment::Projected => {
                self.low_rank(&path, weight, gradients, condensed, plan.refresh_offset)
            }
            Treatment::Frozen => unreachable!("frozen parameters are not planned"),
        };
        let updated: Tensor<D> = updated.reshape(dims);
        Param::from_mapped_value(id, context.restore(updated), param_mapper)
    }
}

/// A parameter's autodiff settings, taken before the update and put back after it.
struct AutodiffContext {
    require_grad: bool,
    checkpointing: Option<GradientCheckpointingStrategy>,
}

impl AutodiffContext {
    fn capture<const D: usize>(parameter: &Tensor<D>) -> Self {
        Self {
            require_grad: parameter.is_require_grad(),
            checkpointing: parameter.gradient_checkpointing_strategy(),
        }
    }

    fn restore<const D: usize>(self, updated: Tensor<D>) -> Tensor<D> {
        let mut parameter = Tensor::from_inner(updated);
        if let Some(strategy) = self.checkpointing {
            parameter = parameter.with_gradient_checkpointing_strategy(strategy);
        }
        if self.require_grad {
            parameter = parameter.require_grad();
        }
        parameter
    }
}

/// A tensor of any rank as a matrix: all leading axes folded into rows (`[1, n]` for a vector).
pub(crate) fn matrix_view<const D: usize>(tensor: Tensor<D>) -> Tensor<2> {
    let [rows, cols] = matrix_shape(&tensor.dims());
    tensor.reshape([rows, cols])
}

/// `Σ a∘b`, the inner product of two tensors of one shape, as one batched product of each row
/// of `a` (its last axis) with the same row of `b`, `[rows, 1, n]·[rows, n, 1]`: an element-wise
/// product and a sum would write a temporary the size of the tensors first (on flex, ten times
/// the time for a 512×2048 gradient).
pub(crate) fn frobenius_dot<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Tensor<1> {
    let [rows, cols] = matrix_shape(&a.dims());
    if rows * cols == 0 {
        return Tensor::zeros([1], &a.device());
    }
    let a = a.reshape([rows, 1, cols]);
    let b = b.reshape([rows, cols, 1]);
    a.matmul(b).sum()
}

/// The shape of a tensor of shape `shape` seen as a matrix (see [`matrix_view`]).
pub(crate) fn matrix_shape(shape: &[usize]) -> [usize; 2] {
    let cols = shape.last().copied().unwrap_or(1);
    let rows = shape[..shape.len().saturating_sub(1)].iter().product();
    [rows, cols]
}

/// The `refreshes` value whose random stream draws a weight's knowledge complement (no weight
/// is refreshed that many times).
const COMPLEMENT_STREAM: u64 = u64::MAX;

/// The random stream of one refresh of one weight: a function of the seed, the path and the
/// refresh count only, so bases are reproducible and resumable without saving generator state.
fn sketch_rng(seed: u64, path: &str, refreshes: u64) -> ChaCha8Rng {
    // FNV-1a over the path, then mixed with the seed and the count (SplitMix64 finaliser).
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in path.bytes() {
        hash = (hash ^ byte as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut mixed = seed ^ hash ^ refreshes.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    ChaCha8Rng::seed_from_u64(mixed ^ (mixed >> 31))
}

/// Lists (path, shape) of every float parameter.
#[derive(Default)]
struct ParamLister {
    path: Vec<String>,
    params: Vec<(String, Vec<usize>)>,
}

impl ModuleVisitor for ParamLister {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.params
            .push((self.path.join("."), param.lazy_shape().to_vec()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    /// A tensor of `shape` with entries from a fixed formula, and those entries as float64.
    fn filled<const D: usize>(shape: [usize; D], salt: usize) -> (Tensor<D>, Vec<f64>) {
        let count: usize = shape.iter().product();
        let values: Vec<f32> = (0..count)
            .map(|i| (((i * 7919 + salt * 104_729) % 1009) as f32 - 504.0) / 97.0)
            .collect();
        let exact = values.iter().map(|&v| f64::from(v)).collect();
        (
            Tensor::from_data(TensorData::new(values, shape), &Device::flex()),
            exact,
        )
    }

    #[test]
    fn frobenius_dot_is_the_sum_of_the_elementwise_products_at_any_rank() {
        fn check<const D: usize>(shape: [usize; D]) {
            let (a, a_values) = filled(shape, 1);
            let (b, b_values) = filled(shape, 2);
            let expected: f64 = a_values.iter().zip(&b_values).map(|(x, y)| x * y).sum();
            let found = f64::from(frobenius_dot(a, b).into_scalar::<f32>());
            let scale: f64 = a_values
                .iter()
                .zip(&b_values)
                .map(|(x, y)| (x * y).abs())
                .sum();
            assert!(
                (found - expected).abs() <= 1e-6 * scale.max(1.0),
                "{shape:?}: {found} against {expected}"
            );
        }
        check([7]);
        check([3, 5]);
        check([64, 300]);
        check([2, 3, 4]);
        check([0, 4]);
    }
}
