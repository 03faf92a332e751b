//! What one optimizer step reports.

use serde::{Deserialize, Serialize};

/// Cosine similarity between task gradients of one projected weight.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerCosine {
    /// Parameter path.
    pub path: String,
    /// One cosine per task pair, pairs in order (0,1), (0,2), …, (1,2), …
    pub cosine: Vec<f64>,
}

/// Diagnostics of one optimizer step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// Number of the step just taken (1 for the first).
    pub step: u64,
    /// Gate value of each task.
    pub gate: Vec<f64>,
    /// Frobenius norm of each task's gradient over the updated parameters.
    pub task_gradient_norms: Vec<f64>,
    /// Per target weight (projected, or updated fully by AdamW), the cosine between task
    /// gradients (empty with a single task or diagnostics off).
    pub layer_cosines: Vec<LayerCosine>,
    /// Weights whose bases were recomputed this step.
    pub refreshed: usize,
    /// Bases that could not be recomputed (parameter and subspace, reason); they kept their
    /// previous value.
    pub failed_refreshes: Vec<(String, String)>,
    /// Wall-clock seconds spent computing bases.
    pub svd_seconds: f64,
    /// Times the step read values back from the device (each one a synchronisation point on a
    /// GPU): once for its statistics, plus the small host problems of the bases it recomputed.
    pub device_reads: u64,
}

/// The ranks one projected weight really gets: its knowledge directions, when they lie on the
/// side that carries the bases, take their share of that side first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectiveRanks {
    /// Rank r_s of the shared subspace (0: the weight gets no subspace).
    pub shared: usize,
    /// Rank r_t of each task subspace (0 without task subspaces).
    pub task: usize,
    /// Number k of protected knowledge directions.
    pub knowledge: usize,
    /// Whether the knowledge directions lie on the side that carries the bases, where they
    /// reduce the ranks.
    pub knowledge_on_basis_side: bool,
    /// The task rank the configuration asks for (0 when the method or the task count has no
    /// task subspaces).
    pub requested_task: usize,
}

impl EffectiveRanks {
    /// Why the weight trains less than configured, when its knowledge directions leave it
    /// without task subspaces or without any subspace.
    pub fn warning(&self) -> Option<String> {
        if self.shared == 0 {
            Some(format!(
                "its {} knowledge directions fill the side its bases would span: it has no \
                 subspace and only weight decay changes it",
                self.knowledge
            ))
        } else if self.requested_task > 0 && self.task == 0 {
            Some(format!(
                "its {} knowledge directions leave room for the shared subspace only (rank {}): \
                 it has no task subspaces and trains as GaLore",
                self.knowledge, self.shared
            ))
        } else {
            None
        }
    }
}

/// Floating-point operations (a multiply-add counts two) of the matrix products one parameter
/// costs in a step that recomputes no basis, by what they do. Element-wise work (Adam's
/// moments, norms, the update's subtraction) is not counted, nor is the forward and backward
/// pass; AdamW's updates have no products.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProductCost {
    /// The task gradients onto the bases when some task's is condensed
    /// ([`GemsOptimizer::condense`](crate::GemsOptimizer::condense), as `gems train` does):
    /// every task's onto the shared basis and onto its own.
    pub projection_condensed: f64,
    /// The task gradients onto the bases when every task's is held in full: their merge onto
    /// the shared basis, each one onto its own.
    pub projection_full: f64,
    /// The update's low-rank steps brought back to the weight's size.
    pub expansion: f64,
    /// Knowledge directions removed from the coordinates and from the normalised steps, when
    /// they lie on the side opposite the bases.
    pub knowledge_removal: f64,
    /// Decoupled weight decay of the weight less its knowledge part.
    pub weight_decay: f64,
}

impl ProductCost {
    /// Every product of a step, with the tasks' gradients `condensed` or held in full.
    pub fn total(&self, condensed: bool) -> f64 {
        let projection = match condensed {
            true => self.projection_condensed,
            false => self.projection_full,
        };
        projection + self.expansion + self.knowledge_removal + self.weight_decay
    }
}
