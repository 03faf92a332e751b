//! Opening a trained run (or one of its checkpoints) for evaluation and inference.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use clap::Args;
use gems_models::{Backbone, ModelConfig};

use crate::error::{CliError, Result};
use crate::experiment::Experiment;
use crate::run_dir::{self, RunDir};
use crate::settings::{TrainArgs, TrainSettings};

/// Which model of a run to open.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Run directory written by `gems train`.
    pub run: PathBuf,
    /// Use the latest training checkpoint instead of the final model.
    #[arg(long)]
    pub checkpoint: bool,
    /// Compute backend (default: the run's).
    #[arg(long)]
    pub backend: Option<String>,
}

/// A trained model with everything needed to use it.
pub struct SavedRun {
    /// The run's settings.
    pub settings: TrainSettings,
    /// Data, tokenizer, identifiers.
    pub experiment: Experiment,
    /// The model (no autodiff).
    pub model: Backbone,
}

impl RunArgs {
    /// Opens the run; fails if the data it names is not the data it was trained on.
    pub fn open(&self) -> Result<SavedRun> {
        let run = RunDir::open(&self.run)?;
        let mut settings = TrainArgs {
            config: Some(run.path(run_dir::CONFIG)),
            ..TrainArgs::default()
        }
        .resolve()?;
        if let Some(backend) = &self.backend {
            settings.backend = backend.clone();
        }
        let folder = self.model_folder(&run)?;
        let config = ModelConfig::from_file(folder.join(run_dir::MODEL_CONFIG))?;
        let experiment = Experiment::reopen(&settings, &folder, config.kind())?;
        if let Some(expected) = trained_fingerprint(&run, &folder)? {
            let found = experiment.data_fingerprint();
            if found != expected {
                return Err(CliError::run(
                    run.root(),
                    format!(
                        "the run was trained on other data than `{}` gives now (fingerprint {expected}, found {found})",
                        settings.data
                    ),
                ));
            }
        }
        let device: Device = gems_core::device_from_name(&settings.backend)?;
        let model = crate::memory::load_backbone(&folder, &device)?;
        let tokens = experiment.tokenizer.get_vocab_size(true);
        if tokens > model.vocab_size() {
            return Err(CliError::run(
                &folder.join(run_dir::TOKENIZER),
                format!(
                    "has {tokens} tokens, more than the {} rows of the model's vocabulary",
                    model.vocab_size()
                ),
            ));
        }
        Ok(SavedRun {
            settings,
            experiment,
            model,
        })
    }

    fn model_folder(&self, run: &RunDir) -> Result<PathBuf> {
        let folder = if self.checkpoint {
            run_dir::complete_directory(&run.path(run_dir::CHECKPOINT))
                .map(|c| c.join(run_dir::MODEL))
        } else {
            Some(run.path(run_dir::MODEL))
        };
        folder.filter(|f| f.join(run_dir::MODEL_CONFIG).is_file()).ok_or_else(|| {
            CliError::run(
                run.root(),
                if self.checkpoint {
                    "has no checkpoint yet"
                } else {
                    "has no final model (training did not finish; use --checkpoint for the latest checkpoint)"
                },
            )
        })
    }
}

/// The data fingerprint the run recorded: in the manifest of a finished run, else beside the
/// model folder read (a checkpoint's), else in the run's checkpoint (a run stopped between
/// writing its final model and its manifest). A record without the fingerprint is an error.
fn trained_fingerprint(run: &RunDir, folder: &Path) -> Result<Option<String>> {
    let beside = folder.parent().map(|parent| parent.join(run_dir::PROGRESS));
    let checkpoint = run_dir::complete_directory(&run.path(run_dir::CHECKPOINT))
        .map(|checkpoint| checkpoint.join(run_dir::PROGRESS));
    let Some(source) = [Some(run.path(run_dir::MANIFEST)), beside, checkpoint]
        .into_iter()
        .flatten()
        .find(|path| path.is_file())
    else {
        return Ok(None);
    };
    let value: serde_json::Value = run_dir::read_json(&source)?;
    match value.get("data_fingerprint").and_then(|f| f.as_str()) {
        Some(fingerprint) => Ok(Some(fingerprint.to_string())),
        None => Err(CliError::run(
            &source,
            "has no data_fingerprint (a string): which data the run was trained on cannot be checked",
        )),
    }
}
