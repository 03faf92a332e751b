//! Sizes checked before they are allocated: an absurd setting (a LoRA rank of 10¹², a model
//! config of width 200 000) ends in an error that says how much it would need, not in an abort.

use std::path::Path;

use burn::tensor::Device;
use gems_models::{Backbone, ModelConfig};

use crate::error::{CliError, Result};

/// Bytes of one float32 value.
const FLOAT: u64 = 4;

/// Memory the system can still give, from `/proc/meminfo` (`None` where it cannot be read).
pub fn available_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// `bytes` in the unit a person reads.
pub fn human(bytes: u64) -> String {
    const GB: f64 = 1e9;
    if bytes as f64 >= GB {
        format!("{:.1} GB", bytes as f64 / GB)
    } else {
        format!("{:.1} MB", bytes as f64 / 1e6)
    }
}

/// Refuses `needed` bytes (`None`: beyond 2⁶⁴) for `what` when the system has less available.
pub fn check_fits(needed: Option<u64>, what: &str, remedy: &str) -> Result<()> {
    let available = available_bytes();
    let too_much = match (needed, available) {
        (None, _) => true,
        (Some(needed), Some(available)) => needed > available,
        (Some(_), None) => false,
    };
    if !too_much {
        return Ok(());
    }
    let needed = needed.map_or_else(|| "more than 2^64 bytes".to_string(), human);
    let available = available.map_or_else(|| "unknown".to_string(), human);
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
    check_fits(
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
        let error = check_fits(needed, "LoRA adapters of rank 10^12", "lower the rank")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("10240000.0 GB") && error.contains("lower the rank"),
            "{error}"
        );
        assert_eq!(lora_bytes(usize::MAX, &[[128, 512]]), None);
        let error = check_fits(None, "it", "no").unwrap_err().to_string();
        assert!(error.contains("more than 2^64 bytes"), "{error}");
        assert!(check_fits(Some(1024), "a small thing", "none").is_ok());
    }
}
