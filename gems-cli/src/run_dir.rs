//! The layout of a run directory, the name of everything in it, and atomic writes into it.
//!
//! ```text
//! RUN/config.toml             CONFIG: the resolved settings
//!     manifest.json           MANIFEST: version, settings, data fingerprint, status, timing
//!     base/                   BASE_MODEL: a from-scratch run's initial weights (for
//!                             `gems analyze retention`)
//!     best/                   BEST_MODEL: the best model on validation so far
//!     checkpoint/             CHECKPOINT: the latest training checkpoint
//!         model/                  MODEL: the model (LoRA adapters merged)
//!         optimizer.safetensors   OPTIMIZER_STATE: every basis, moment and counter
//!         progress.json           PROGRESS: step, epoch, position, best validation, curves
//!         lora.bpk                LORA_RECORD: LoRA runs only, the unmerged adapters
//!     model/                  MODEL: the final model (the best on validation, else the last)
//!     metrics.json            METRICS: test metrics, both protocols, with the popularity / BM25 floor
//!     curves.json             CURVES: losses, learning rate, gate, validation, per-layer conflict
//!     plots/                  PLOTS: LOSS_PLOT, GATE_PLOT, VALIDATION_PLOT (SVG)
//! ```
//!
//! Every model folder (`base/`, `best/`, `model/`, `checkpoint/model/`) is a Hugging Face
//! directory (`model.safetensors`, `config.json`) with the run's tokenizer (TOKENIZER) and item
//! identifiers (IDENTIFIERS) beside the weights. Folders are replaced whole (see
//! [`replace_directory`]): `X.partial` is a new copy being written, `X.old` the previous one
//! while it is moved aside.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{CliError, Result};

/// A run directory.
#[derive(Clone, Debug)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// The run at `root` (created if missing).
    pub fn create(root: &Path) -> Result<Self> {
        fs::create_dir_all(root.join(PLOTS))
            .map_err(|e| CliError::io(root, "cannot create the run directory", e))?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// An existing run at `root`.
    pub fn open(root: &Path) -> Result<Self> {
        if !root.join(CONFIG).is_file() {
            return Err(CliError::run(
                root,
                "not a run directory (no config.toml); give the --out directory of `gems train`",
            ));
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A file or folder of the run.
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Writes `value` as pretty JSON to `name`, atomically.
    pub fn write_json(&self, name: &str, value: &impl Serialize) -> Result<()> {
        write_json(&self.path(name), value)
    }

    /// Writes `text` to `name`, atomically.
    pub fn write_text(&self, name: &str, text: &str) -> Result<()> {
        gems_core::checkpoint::write_file_atomically(&self.path(name), text.as_bytes())?;
        Ok(())
    }
}

/// Settings file of a run.
pub const CONFIG: &str = "config.toml";
/// Manifest of a run.
pub const MANIFEST: &str = "manifest.json";
/// Test metrics of a run.
pub const METRICS: &str = "metrics.json";
/// Curves of a run.
pub const CURVES: &str = "curves.json";
/// Folder of a run's plots.
pub const PLOTS: &str = "plots";
/// Training loss per task.
pub const LOSS_PLOT: &str = "plots/loss.svg";
/// Gate value per task.
pub const GATE_PLOT: &str = "plots/gate.svg";
/// Validation NDCG@10 per task.
pub const VALIDATION_PLOT: &str = "plots/validation.svg";
/// Final model folder of a run; also the model folder inside a checkpoint.
pub const MODEL: &str = "model";
/// Folder of the best model on validation so far.
pub const BEST_MODEL: &str = "best";
/// Folder of a from-scratch run's initial weights.
pub const BASE_MODEL: &str = "base";
/// Latest checkpoint folder of a run.
pub const CHECKPOINT: &str = "checkpoint";
/// Optimizer state file of a checkpoint.
pub const OPTIMIZER_STATE: &str = "optimizer.safetensors";
/// Progress file of a checkpoint.
pub const PROGRESS: &str = "progress.json";
/// Unmerged model record of a LoRA checkpoint.
pub const LORA_RECORD: &str = "lora.bpk";
/// Tokenizer file beside a run's model weights.
pub const TOKENIZER: &str = "tokenizer.json";
/// Item identifiers file beside a run's model weights.
pub const IDENTIFIERS: &str = "identifiers.json";
/// Hugging Face configuration file of a model folder.
pub use gems_models::CONFIG_FILE as MODEL_CONFIG;

/// Writes `value` as pretty JSON to `path`, atomically.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("values serialise to JSON");
    gems_core::checkpoint::write_file_atomically(path, text.as_bytes())?;
    Ok(())
}

/// Reads JSON from `path`, naming the file (and line) on failure.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = fs::read_to_string(path).map_err(|e| CliError::io(path, "cannot read", e))?;
    serde_json::from_str(&text).map_err(|e| CliError::run(path, format!("line {}: {e}", e.line())))
}

/// Replaces the directory `target` by what `fill` writes, so that `target` is always either the
/// old complete directory or the new complete one: `fill` writes into `target.partial`, which
/// is renamed into place after the old one is moved aside.
pub fn replace_directory(target: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let partial = sibling(target, "partial");
    let old = sibling(target, "old");
    for leftover in [&partial, &old] {
        if leftover.exists() {
            fs::remove_dir_all(leftover)
                .map_err(|e| CliError::io(leftover, "cannot remove a leftover", e))?;
        }
    }
    fs::create_dir_all(&partial).map_err(|e| CliError::io(&partial, "cannot create", e))?;
    fill(&partial)?;
    if target.exists() {
        fs::rename(target, &old).map_err(|e| CliError::io(target, "cannot move aside", e))?;
    }
    fs::rename(&partial, target).map_err(|e| CliError::io(target, "cannot move into place", e))?;
    if old.exists() {
        fs::remove_dir_all(&old).map_err(|e| CliError::io(&old, "cannot remove", e))?;
    }
    Ok(())
}

/// `target` if complete, else the copy a crash between the two renames of
/// [`replace_directory`] left aside.
pub fn complete_directory(target: &Path) -> Option<PathBuf> {
    [target.to_path_buf(), sibling(target, "old")]
        .into_iter()
        .find(|p| p.is_dir())
}

fn sibling(target: &Path, suffix: &str) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!("{name}.{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_replaced_whole() {
        let folder = tempfile::tempdir().unwrap();
        let target = folder.path().join("checkpoint");
        replace_directory(&target, |p| Ok(fs::write(p.join("a"), "1").unwrap())).unwrap();
        replace_directory(&target, |p| Ok(fs::write(p.join("b"), "2").unwrap())).unwrap();
        assert!(!target.join("a").exists() && target.join("b").exists());
        // A failing fill leaves the previous directory untouched.
        let failed = replace_directory(&target, |_| Err(CliError::Settings("boom".into())));
        assert!(failed.is_err() && target.join("b").exists());
        assert_eq!(complete_directory(&target), Some(target));
    }
}
