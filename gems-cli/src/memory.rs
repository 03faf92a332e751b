//! What a training run will hold in memory, before it starts: weights, optimizer state, the
//! tasks' gradients, activations at the batch size, knowledge bases; the memory available to
//! it; and the peak resident memory it reached. Also the checks that refuse an absurd size
//! (a LoRA rank of 10¹², a model config of width 200 000) before it is allocated.
//!
//! Optimizer state comes from the optimizer's own plan (exact: it is what
//! `optimizer.safetensors` holds once every parameter has state). Activations are an estimate:
//! the float32 tensors one backward pass keeps per token (projections, norms, MLP, attention
//! probabilities, the logits and their gradient); the other parts are exact counts.

use std::path::Path;

use burn::module::Module;
use burn::tensor::Device;
use gems_core::{GemsOptimizer, Treatment};
use gems_models::{Backbone, ModelConfig};
use serde::Serialize;

use crate::error::{CliError, Result};
use crate::settings::TrainMethod;

/// Float32 bytes.
const FLOAT: u64 = 4;

/// Expected memory of a training run, by part, in bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemoryEstimate {
    /// Model weights (with LoRA adapters).
    pub weights: u64,
    /// Optimizer state: bases and moments (knowledge bases not included).
    pub optimizer_state: u64,
    /// The tasks' gradients held at an ordinary step: one gradient of every trained parameter
    /// (of the new tokens' rows only, for a vocabulary matrix whose pre-trained rows are frozen)
    /// per task, or, where every task is condensed after its backward pass (gems-core's
    /// `condense`), one task's in full and the others' projected weights as low-rank
    /// coordinates (during the last task's backward pass).
    pub gradients: u64,
    /// The tasks' gradients held at the first step, which computes the first bases from full
    /// gradients of every task (and has no optimizer state yet).
    pub first_step_gradients: u64,
    /// Tensors kept for one backward pass at this batch size (estimate).
    pub activations: u64,
    /// Knowledge bases of null-space projection.
    pub knowledge_bases: u64,
}

impl MemoryEstimate {
    /// The peak: weights, activations and knowledge bases, plus the larger of an ordinary
    /// step's optimizer state and gradients and the first step's gradients.
    pub fn total(&self) -> u64 {
        self.weights
            .saturating_add(self.activations)
            .saturating_add(self.knowledge_bases)
            .saturating_add(
                (self.optimizer_state.saturating_add(self.gradients))
                    .max(self.first_step_gradients),
            )
    }

    /// One line per part, and the total.
    pub fn table(&self) -> String {
        let first_step = (self.first_step_gradients != self.gradients)
            .then_some(("(step 1)", self.first_step_gradients));
        let rows = [
            Some(("weights", self.weights)),
            Some(("optimizer state", self.optimizer_state)),
            Some(("task gradients", self.gradients)),
            first_step,
            Some(("activations", self.activations)),
            Some(("knowledge bases", self.knowledge_bases)),
            Some(("total", self.total())),
        ];
        rows.iter()
            .flatten()
            .map(|(part, bytes)| format!("  {part:<16} {:>9}", human_bytes(*bytes)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// `bytes` as "1.23 GB", or in MB below a gigabyte.
pub fn human_bytes(bytes: u64) -> String {
    if bytes >= 1_000_000_000 {
        format!("{:.2} GB", bytes as f64 / 1e9)
    } else {
        format!("{:.1} MB", bytes as f64 / 1e6)
    }
}

/// The shape of one training micro-batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct BatchShape {
    /// Requests per micro-batch.
    pub batch_size: usize,
    /// Longest prompt, in tokens.
    pub prompt_tokens: usize,
    /// Longest target, in tokens (with its end token).
    pub target_tokens: usize,
}

/// The expected memory of training `model` (before LoRA adapters are attached) with
/// `optimizer` (its knowledge bases, if any, counted) on `tasks` tasks; `condensed` when every
/// task's gradients are condensed after their backward pass (`gems train` on one device, unless
/// `--full-task-gradients`). Weights whose gradients the backward pass leaves factored
/// (gems-core's `condense_factored`) hold less than counted here.
pub fn estimate(
    model: &Backbone,
    method: TrainMethod,
    optimizer: &GemsOptimizer,
    tasks: usize,
    batch: BatchShape,
    condensed: bool,
) -> MemoryEstimate {
    let plan = optimizer.plan(model, tasks);
    // What a condensed task keeps of its projected weights' gradients: their coordinates
    // instead of the whole matrices.
    let (projected_values, coordinate_values) = plan
        .iter()
        .filter(|p| p.ranks.as_ref().is_some_and(|ranks| ranks.shared > 0))
        .fold((0u64, 0u64), |(full, coordinates), p| {
            (
                full + p.trained_values as u64,
                coordinates + p.condensed_values as u64,
            )
        });
    let trained = plan.iter().filter(|p| p.treatment != Treatment::Frozen);
    let (trainable, adapters, optimizer_state) = match method {
        TrainMethod::Optimizer(_) => (
            trained.map(|p| p.trained_values as u64).sum(),
            0,
            plan.iter().map(|p| p.state_bytes as u64).sum(),
        ),
        // Adapters A (d_in × r) and B (r × d_out) replace the matrices they adapt, which are
        // frozen; AdamW on everything else trained, as the plan says (frozen vocabulary rows excluded).
        TrainMethod::Lora => {
            let rank = optimizer.config().shared_rank;
            let (mut trainable, mut adapters, mut adapter_rows, mut other_state) = (0, 0, 0, 0);
            for p in trained {
                if optimizer.is_target(&p.path, &p.shape) {
                    adapters += (rank * (p.shape[0] + p.shape[1])) as u64;
                    adapter_rows += (p.shape[0] + rank) as u64; // A: [d_in, r], B: [r, d_out]
                } else {
                    trainable += p.trained_values as u64;
                    other_state += p.state_bytes as u64;
                }
            }
            trainable += adapters;
            // Two moments and, per row, two bias-correction masses of each adapter.
            let adapter_state = 2 * FLOAT * (adapters + adapter_rows);
            (trainable, adapters, adapter_state + other_state)
        }
    };
    let first_step_gradients = FLOAT * trainable * tasks as u64;
    let condenses = condensed && tasks > 1 && matches!(method, TrainMethod::Optimizer(_));
    let gradients = match condenses {
        true => {
            let condensed_task = trainable - projected_values + coordinate_values;
            FLOAT * (trainable + condensed_task * (tasks as u64 - 1))
        }
        false => first_step_gradients,
    };
    MemoryEstimate {
        weights: FLOAT * (model.num_params() as u64 + adapters),
        optimizer_state,
        gradients,
        first_step_gradients,
        activations: activations(&model.config(), batch),
        knowledge_bases: optimizer.null_space_bytes() as u64,
    }
}

/// Float32 bytes one backward pass keeps for a micro-batch of `batch` (estimate). Counted in
/// floating point (exact below 2⁵³ bytes), so that absurd sizes give `u64::MAX` rather than a
/// figure wrapped around to a small one.
fn activations(config: &ModelConfig, batch: BatchShape) -> u64 {
    let rows = batch.batch_size as f64;
    let (prompt, target) = (batch.prompt_tokens as f64, batch.target_tokens as f64);
    let per_row = match config {
        ModelConfig::T5(c) => {
            let (d, inner, heads) = (
                c.d_model as f64,
                (c.num_heads * c.d_kv) as f64,
                c.num_heads as f64,
            );
            let mlp = if c.feed_forward_proj.gated { 4.0 } else { 2.0 } * c.d_ff as f64;
            let encoder = prompt * (6.0 * d + 4.0 * inner + mlp + 3.0 * heads * prompt);
            let decoder = target * (9.0 * d + 8.0 * inner + mlp + 3.0 * heads * (target + prompt));
            c.num_layers as f64 * encoder
                + c.decoder_layers() as f64 * decoder
                + target * 3.0 * c.vocab_size as f64
        }
        ModelConfig::Qwen2(c) => {
            let tokens = prompt + target;
            let (d, heads) = (c.hidden_size as f64, c.num_attention_heads as f64);
            let head = c.head_size() as f64;
            let layer = tokens
                * (6.0 * d
                    + 2.0 * heads * head
                    + 2.0 * c.key_value_heads() as f64 * head
                    + 4.0 * c.intermediate_size as f64
                    + 3.0 * heads * tokens);
            c.num_hidden_layers as f64 * layer + tokens * 3.0 * c.vocab_size as f64
        }
    };
    // A float-to-integer cast saturates.
    (FLOAT as f64 * rows * per_row) as u64
}

/// Memory the run may use: `limit` when given, else `MemAvailable` of `/proc/meminfo`
/// (`None` where there is no such file).
pub fn available(limit: Option<u64>) -> Option<u64> {
    limit.or_else(|| proc_field(Path::new("/proc/meminfo"), "MemAvailable:"))
}

/// The peak resident memory of this process (`VmHWM`), where the system reports it (Linux).
pub fn peak_resident() -> Option<u64> {
    proc_field(Path::new("/proc/self/status"), "VmHWM:")
}

/// A `kB` field of a `/proc` file, in bytes.
fn proc_field(path: &Path, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kilobytes: u64 = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kilobytes * 1024)
}

/// Refuses a run whose `estimate` exceeds `available`, saying what would fit: a batch size, or
/// the methods of `alternatives` (name, estimate at this batch size) that fit.
pub fn check_fits(
    estimate: &MemoryEstimate,
    batch_size: usize,
    available: u64,
    alternatives: &[(String, MemoryEstimate)],
) -> Result<()> {
    if estimate.total() <= available {
        return Ok(());
    }
    let mut advice = Vec::new();
    let fixed = estimate.total() - estimate.activations;
    let per_row = estimate.activations / batch_size.max(1) as u64;
    if fixed < available && per_row > 0 {
        let rows = (available - fixed) / per_row;
        if rows >= 1 {
            advice.push(format!(
                "--batch-size {rows} (with --gradient-accumulation to keep the step size)"
            ));
        }
    }
    let fitting: Vec<&str> = alternatives
        .iter()
        .filter(|(_, e)| e.total() <= available)
        .map(|(name, _)| name.as_str())
        .collect();
    if !fitting.is_empty() {
        advice.push(format!("--method {}", fitting.join(" / ")));
    }
    advice.push("--memory-limit BYTES to state the memory yourself".into());
    advice.push("--ignore-memory-estimate to run anyway".into());
    Err(CliError::Settings(format!(
        "the run is expected to need {} (weights {}, optimizer state {}, task gradients {}, \
         activations {} at batch size {batch_size}, knowledge bases {}) but {} is available; \
         try {}",
        human_bytes(estimate.total()),
        human_bytes(estimate.weights),
        human_bytes(estimate.optimizer_state),
        human_bytes(estimate.gradients),
        human_bytes(estimate.activations),
        human_bytes(estimate.knowledge_bases),
        human_bytes(available),
        advice.join(", or ")
    )))
}

/// Refuses `needed` bytes (`None`: beyond 2⁶⁴) for `what` when the system has less available.
pub fn check_size_fits(needed: Option<u64>, what: &str, remedy: &str) -> Result<()> {
    let available = available(None);
    let too_much = match (needed, available) {
        (None, _) => true,
        (Some(needed), Some(available)) => needed > available,
        (Some(_), None) => false,
    };
    if !too_much {
        return Ok(());
    }
    let needed = needed.map_or_else(|| "more than 2^64 bytes".to_string(), human_bytes);
    let available = available.map_or_else(|| "unknown".to_string(), human_bytes);
    Err(CliError::Settings(format!(
        "{what} would need {needed} of memory, and {available} is available; {remedy}"
    )))
}

/// Float parameters of `model` from its shapes alone (Burn initialises parameters lazily, so a
/// model just built has allocated nothing yet); `None` when the count overflows.
pub fn parameter_count(model: &Backbone) -> Option<u64> {
    gems_models::parameter_paths(model)
        .iter()
        .try_fold(0u64, |total, (_, shape)| {
            let count = shape
                .iter()
                .try_fold(1u64, |n, &d| n.checked_mul(d as u64))?;
            total.checked_add(count)
        })
}

/// Refuses a model (built, not yet used) whose training would not fit in memory: its weights and
/// one gradient of each, in float32, are the least that training holds.
pub fn check_model_fits(model: &Backbone, source: &str) -> Result<()> {
    let parameters = parameter_count(model);
    let needed = parameters.and_then(|n| n.checked_mul(2 * FLOAT));
    check_size_fits(
        needed,
        &format!(
            "the model of {source} ({} parameters; weights and gradients in float32)",
            parameters.map_or_else(|| "more than 2^64".to_string(), |n| n.to_string())
        ),
        "choose smaller sizes (hidden size, layers, vocabulary)",
    )
}

/// The Hugging Face model of `directory`, after checking from its `config.json` alone that it
/// fits in memory.
pub fn load_backbone(directory: &Path, device: &Device) -> Result<Backbone> {
    let config = ModelConfig::from_file(directory.join(gems_models::CONFIG_FILE))?;
    check_model_fits(
        &Backbone::new(&config, device)?,
        &directory.display().to_string(),
    )?;
    Ok(Backbone::load(directory, device)?)
}

/// Float32 bytes of LoRA adapters of `rank` on matrices of the given `[d_in, d_out]` shapes,
/// with their gradients and two Adam moments (`None` when the count overflows).
pub fn lora_bytes(rank: usize, shapes: &[[usize; 2]]) -> Option<u64> {
    shapes.iter().try_fold(0u64, |total, [rows, cols]| {
        let values = (*rows as u64)
            .checked_add(*cols as u64)?
            .checked_mul(rank as u64)?;
        total.checked_add(values.checked_mul(4 * FLOAT)?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_beyond_memory_or_arithmetic_are_refused_with_what_they_need() {
        // 10¹² × (128 + 512) values × 16 bytes: far beyond any machine.
        let needed = lora_bytes(1_000_000_000_000, &[[128, 512]]);
        assert_eq!(needed, Some(1_000_000_000_000 * 640 * 16));
        let error = check_size_fits(needed, "LoRA adapters of rank 10^12", "lower the rank")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("10240000.00 GB") && error.contains("lower the rank"),
            "{error}"
        );
        assert_eq!(lora_bytes(usize::MAX, &[[128, 512]]), None);
        let error = check_size_fits(None, "it", "no").unwrap_err().to_string();
        assert!(error.contains("more than 2^64 bytes"), "{error}");
        assert!(check_size_fits(Some(1024), "a small thing", "none").is_ok());
    }
}
