//! `gems train`: trains a model for both tasks, evaluates it and writes a run directory.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

use burn::module::Module;
use clap::Args;
use gems_models::Backbone;
use serde::Serialize;

use crate::error::{CliError, Result};
use crate::evaluation::{Evaluation, RunMetrics};
use crate::experiment::{Experiment, new_backbone, pretrained_backbone};
use crate::knowledge;
use crate::run_dir::{self, RunDir};
use crate::settings::{TrainArgs, TrainMethod, TrainSettings};
use crate::training::{self, INTERRUPTED, Progress, Training};

/// Arguments of `gems train`.
#[derive(Args, Debug)]
pub struct TrainCommand {
    /// Every training setting (see also `--config`).
    #[command(flatten)]
    pub settings: TrainArgs,
    /// Run directory (default: `runs/<data>-<model>-<method>`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint, with its own settings.
    #[arg(long, conflicts_with = "out")]
    pub resume: Option<PathBuf>,
    /// Stop after this many steps of this invocation, with a checkpoint (continue with
    /// `--resume`): splits a long run into sessions.
    #[arg(long)]
    pub stop_after: Option<u64>,
}

/// What a finished run reports (`manifest.json`).
#[derive(Serialize)]
struct Manifest<'a> {
    gems_version: &'static str,
    status: &'static str,
    settings: &'a TrainSettings,
    data: &'a str,
    data_fingerprint: &'a str,
    model_parameters: usize,
    optimizer_state_bytes: usize,
    knowledge_basis_bytes: usize,
    steps: u64,
    stopped_early: bool,
    best_validation: Option<(f64, u64)>,
    training_seconds: f64,
}

impl TrainCommand {
    /// Runs the command.
    pub fn run(self) -> Result<()> {
        let Some(directory) = &self.resume else {
            return self.start();
        };
        if !self.settings.flags()?.is_empty() || self.settings.config.is_some() {
            return Err(CliError::Settings(
                "--resume continues a run with the settings in its config.toml; drop the other flags".into(),
            ));
        }
        let (run, _lock) = RunDir::resume(directory)?;
        let settings = TrainArgs {
            config: Some(run.path(run_dir::CONFIG)),
            ..TrainArgs::default()
        }
        .resolve()?;
        train(&settings, &run, true, self.stop_after).map(|_| ())
    }

    /// A new run in a new or empty directory; one that fails before its first checkpoint leaves
    /// the directory as it found it, so that the same command can be run again.
    fn start(&self) -> Result<()> {
        let settings = self.settings.resolve()?;
        let out = self
            .out
            .clone()
            .unwrap_or_else(|| default_run_directory(&settings));
        let created = !out.exists();
        let (run, _lock) = RunDir::create_new(&out)?;
        let trained = run
            .write_text(run_dir::CONFIG, &settings.to_toml())
            .and_then(|()| train(&settings, &run, false, self.stop_after));
        if let Err(error) = trained {
            if let Err(cleanup) = run.discard_unstarted(created) {
                tracing::warn!("{cleanup}");
            }
            return Err(error);
        }
        Ok(())
    }
}

fn default_run_directory(settings: &TrainSettings) -> PathBuf {
    let data = Path::new(&settings.data)
        .file_name()
        .map_or("data".into(), |n| n.to_string_lossy().into_owned());
    let model = settings.model;
    PathBuf::from("runs").join(format!("{data}-{model}-{}", settings.method))
}

/// Trains (or resumes) the run, which the caller has locked, and evaluates it; returns its test
/// metrics, or `None` when it paused after `stop_after` steps.
pub fn train(
    settings: &TrainSettings,
    run: &RunDir,
    resume: bool,
    stop_after: Option<u64>,
) -> Result<Option<RunMetrics>> {
    let started = Instant::now();
    let device = gems_core::device_from_name(&settings.backend)?.autodiff();
    tracing::info!(run = %run.root().display(), method = %settings.method, "preparing data and model");
    let pretrained = pretrained_backbone(settings, &device)?;
    let experiment = Experiment::prepare(settings, pretrained.as_ref())?;
    let fingerprint = experiment.data_fingerprint();
    let model = new_backbone(settings, pretrained, &experiment.tokenizer, &device)?;
    let d_model = model.config().hidden_size();
    if settings.model_dir.is_none() && !resume {
        // The initial weights of a from-scratch model, for the retention analysis.
        let initial = model.valid();
        run_dir::replace_directory(&run.path(run_dir::BASE_MODEL), |folder| {
            Ok(initial.save(folder)?)
        })?;
    }
    let null_space = if settings.method.needs_null_space() && !resume {
        Some(knowledge::collect(
            &model,
            &experiment,
            &settings.general_corpus,
            &settings.optimizer_config(d_model).knowledge,
            &device,
        )?)
    } else {
        None
    };
    let mut optimizer = training::optimizer_for(settings, d_model, null_space)?;
    let model = match settings.method {
        TrainMethod::Lora => training::attach_lora(
            model,
            &optimizer,
            settings.shared_rank(d_model),
            settings.scale,
        )?,
        TrainMethod::Optimizer(_) => model,
    };
    let examples = training::training_examples(&experiment)?;
    let (model, progress) = if resume {
        let checkpoint = training::Checkpoint {
            run,
            settings,
            data_fingerprint: &fingerprint,
            examples: examples.len(),
        };
        checkpoint.restore(model, &mut optimizer, &device)?
    } else {
        (model, Progress::start(fingerprint.clone()))
    };
    let mut training = Training {
        settings,
        experiment: &experiment,
        run,
        device,
        model,
        optimizer,
        progress,
    };
    tracing::info!(
        examples = examples.len(),
        parameters = training.model.num_params(),
        steps = training::total_steps(settings, examples.len()),
        "training"
    );
    INTERRUPTED.store(false, Ordering::SeqCst);
    // A second Ctrl-C during the checkpoint write kills the process the usual way.
    let _ = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
    });
    if !training.run(&examples, stop_after)? {
        println!(
            "paused after step {} with a checkpoint; continue with: gems train --resume {}",
            training.progress.step,
            run.root().display()
        );
        return Ok(None);
    }
    let training_seconds = started.elapsed().as_secs_f64();

    // The final model: the best on validation when validation ran, else the last.
    let best = run.path(run_dir::BEST_MODEL);
    let final_model = if best.is_dir() {
        Backbone::load(&best, &training.device.clone().without_autodiff())?
    } else {
        training.inference_model()
    };
    run_dir::replace_directory(&run.path(run_dir::MODEL), |folder| {
        final_model.save(folder)?;
        experiment.save_beside_model(folder)
    })?;
    tracing::info!("evaluating on the test split");
    let metrics = Evaluation::new(&experiment, settings.beam_width)
        .test_metrics(&final_model, settings.method.name())?;
    run.write_json(run_dir::METRICS, &metrics)?;
    crate::report::training_plots(run, &training.progress.curves)?;
    run.write_json(
        run_dir::MANIFEST,
        &Manifest {
            gems_version: env!("CARGO_PKG_VERSION"),
            status: if training.progress.stopped_early {
                "stopped early"
            } else {
                "finished"
            },
            settings,
            data: &experiment.dataset.manifest.name,
            data_fingerprint: &fingerprint,
            model_parameters: final_model.num_params(),
            optimizer_state_bytes: training.optimizer.state_bytes(),
            knowledge_basis_bytes: training.optimizer.null_space_bytes(),
            steps: training.progress.step,
            stopped_early: training.progress.stopped_early,
            best_validation: training.progress.best,
            training_seconds,
        },
    )?;
    println!("{}", crate::report::metrics_table(&metrics));
    println!(
        "run: {} ({:.0} s)",
        run.root().display(),
        started.elapsed().as_secs_f64()
    );
    Ok(Some(metrics))
}
