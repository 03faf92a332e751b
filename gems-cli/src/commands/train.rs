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
        let (settings, run) = match &self.resume {
            Some(directory) => {
                if toml::Table::try_from(&self.settings).is_ok_and(|t| !t.is_empty())
                    || self.settings.config.is_some()
                {
                    return Err(CliError::Settings(
                        "--resume continues a run with the settings in its config.toml; drop the other flags".into(),
                    ));
                }
                let run = RunDir::open(directory)?;
                let settings = TrainArgs {
                    config: Some(run.path(run_dir::CONFIG)),
                    ..TrainArgs::default()
                }
                .resolve()?;
                (settings, run)
            }
            None => {
                let settings = self.settings.resolve()?;
                let out = self
                    .out
                    .clone()
                    .unwrap_or_else(|| default_run_directory(&settings));
                if out.join(run_dir::CHECKPOINT).exists() {
                    return Err(CliError::run(
                        &out,
                        "already holds a run; continue it with --resume or choose another --out",
                    ));
                }
                let run = RunDir::create(&out)?;
                run.write_text(run_dir::CONFIG, &settings.to_toml())?;
                (settings, run)
            }
        };
        train(&settings, &run, self.resume.is_some(), self.stop_after).map(|_| ())
    }
}

fn default_run_directory(settings: &TrainSettings) -> PathBuf {
    let data = Path::new(&settings.data)
        .file_name()
        .map_or("data".into(), |n| n.to_string_lossy().into_owned());
    let model = format!("{:?}", settings.model).to_lowercase();
    PathBuf::from("runs").join(format!("{data}-{model}-{}", settings.method))
}

/// Trains (or resumes) the run and evaluates it; returns its test metrics, or `None` when it
/// paused after `stop_after` steps.
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
        run_dir::replace_directory(&run.path(crate::commands::analyze::BASE_MODEL), |folder| {
            Ok(initial.save(folder)?)
        })?;
    }
    let null_space = if settings.method.needs_null_space() && !resume {
        Some(knowledge::collect(
            &model,
            &experiment,
            &settings.general_corpus,
            settings.general_corpus_tokens,
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
        ),
        TrainMethod::Optimizer(_) => model,
    };
    let (model, progress) = if resume {
        training::restore(run, settings, model, &mut optimizer, &device, &fingerprint)?
    } else {
        (model, Progress::start(fingerprint.clone()))
    };
    let examples = training::training_examples(&experiment)?;
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
        steps = training.total_steps(examples.len()),
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
    let best = run.path("best");
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
    println!(
        "{}: learning rate {:e}, seed {}, one run, untuned\n\n{}",
        settings.method,
        settings.learning_rate,
        settings.seed,
        crate::report::metrics_table(&metrics)
    );
    println!(
        "popularity and bm25 are floors: model-free reference rows that any trained model should clear, not tuned baselines.\nFor a real comparison (every method tuned on validation, several seeds, significance tests): gems compare --tune --seeds 3"
    );
    println!(
        "run: {} ({:.0} s)",
        run.root().display(),
        started.elapsed().as_secs_f64()
    );
    Ok(Some(metrics))
}
