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
}
