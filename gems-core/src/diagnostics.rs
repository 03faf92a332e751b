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
