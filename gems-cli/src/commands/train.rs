//! `gems train`: trains a model for both tasks, evaluates it and writes a run directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

use burn::module::Module;
use clap::Args;
use gems_core::EffectiveRanks;
use gems_data::Task;
use gems_models::Backbone;
use serde::Serialize;

use crate::distributed::{self, DeviceSet, Replicas};
use crate::error::{CliError, Result};
use crate::evaluation::{Evaluation, RunMetrics};
use crate::experiment::{Experiment, new_backbone, pretrained_backbone};
use crate::knowledge;
use crate::memory::{self, BatchShape, MemoryEstimate};
use crate::run_dir::{self, RunDir};
use crate::settings::{TrainArgs, TrainMethod, TrainSettings};
use crate::training::{self, INTERRUPTED, Progress, Training};
use gems_data::batch::EncodedExample;

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
    /// Train data-parallel on several devices of the backend: a count (`4`) or device indices
    /// (`0,2`). Not a setting of the run: a resumed run may use any number of devices.
    #[arg(long)]
    pub devices: Option<DeviceSet>,
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
    /// Seconds of the session that finished the run, and of earlier sessions' steps.
    training_seconds: f64,
    /// The devices of the invocation that finished the run (one replica each).
    devices: Vec<String>,
    memory_estimate: &'a MemoryEstimate,
    /// Peak resident memory of the process in bytes (`VmHWM`), or "n/a" where not reported.
    peak_resident_bytes: serde_json::Value,
    /// Steps skipped for a non-finite loss or gradient.
    skipped_steps: usize,
    /// The ranks each projected weight gets (r_s, r_t) beside its knowledge directions (k).
    effective_ranks: BTreeMap<String, EffectiveRanks>,
    /// The frozen parameters: the pre-trained rows of the vocabulary matrices, when only the
    /// new tokens' rows are trained.
    frozen_parameters: Vec<String>,
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
        train(
            &settings,
            &run,
            true,
            self.stop_after,
            self.devices.as_ref(),
        )
        .map(|_| ())
    }

    /// A new run in a new or empty directory; one that fails before its first checkpoint leaves
    /// the directory as it found it, so that the same command can be run again.
    fn start(&self) -> Result<()> {
        let settings = self.settings.resolve()?.with_absolute_paths()?;
        let inert = self.settings.inert_flags(settings.method)?;
        if !inert.is_empty() {
            let them = if inert.len() == 1 { "it" } else { "them" };
            return Err(CliError::Settings(format!(
                "{} would change nothing with method `{}`: drop {them}, or choose a method that uses {them}",
                inert.join(", "),
                settings.method
            )));
        }
        let out = self
            .out
            .clone()
            .unwrap_or_else(|| default_run_directory(&settings));
        let created = !out.exists();
        let (run, _lock) = RunDir::create_new(&out)?;
        let trained = run
            .write_text(run_dir::CONFIG, &settings.to_toml())
            .and_then(|()| {
                train(
                    &settings,
                    &run,
                    false,
                    self.stop_after,
                    self.devices.as_ref(),
                )
            });
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

/// Trains (or resumes) the run, which the caller has locked, and evaluates it, data-parallel
/// over `devices` when given; returns its test metrics, or `None` when it paused after
/// `stop_after` steps.
pub fn train(
    settings: &TrainSettings,
    run: &RunDir,
    resume: bool,
    stop_after: Option<u64>,
    devices: Option<&DeviceSet>,
) -> Result<Option<RunMetrics>> {
    let started = Instant::now();
    // Data-parallel hook: the first replica's device is the run's device.
    let parallel = devices.map(|set| set.open(&settings.backend)).transpose()?;
    let device = match &parallel {
        Some(parallel) => parallel.devices()[0].clone().autodiff(),
        None => gems_core::device_from_name(&settings.backend)?.autodiff(),
    };
    tracing::info!(run = %run.root().display(), method = %settings.method, "preparing data and model");
    let pretrained = pretrained_backbone(settings, &device)?;
    let experiment = Experiment::prepare(settings, pretrained.as_ref())?;
    if resume && let Some(checkpoint) = run_dir::complete_directory(&run.path(run_dir::CHECKPOINT))
    {
        experiment.check_saved(&checkpoint.join(run_dir::MODEL))?;
    }
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
    let collect_knowledge = settings.method.needs_null_space() && !resume;
    let optimizers = match &parallel {
        Some(parallel) => {
            distributed::optimizers(settings, &experiment, &model, parallel, collect_knowledge)?
        }
        None => {
            let null_space = collect_knowledge
                .then(|| {
                    knowledge::collect(
                        &model,
                        &experiment,
                        &settings.general_corpus,
                        settings.general_corpus_tokens,
                        &settings.optimizer_config(d_model).knowledge,
                        knowledge::cache_directory(settings).as_deref(),
                        &device,
                    )
                })
                .transpose()?;
            vec![training::optimizer_for(settings, d_model, null_space)?]
        }
    };
    // Every method trains the same vocabulary entries (see crate::vocabulary).
    let model = crate::vocabulary::train_rows(
        settings.train_vocabulary,
        model,
        experiment.first_new_token,
    )?;
    let mut optimizers: Vec<_> = optimizers
        .into_iter()
        .map(|optimizer| crate::vocabulary::restrict(optimizer, &model))
        .collect();
    let mut optimizer = optimizers.remove(0);
    let base_model = model.clone();
    let model = training::with_method(model, &optimizer, settings)?;
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
        let progress = Progress {
            settings: Some(settings.clone()),
            ..Progress::start(fingerprint.clone())
        };
        (model, progress)
    };
    let used_devices = match &parallel {
        Some(parallel) => parallel
            .devices()
            .iter()
            .map(|d| format!("{d:?}"))
            .collect(),
        None => vec![format!("{:?}", device.clone().without_autodiff())],
    };
    let replicas = match parallel {
        Some(parallel) => {
            if resume {
                // Every replica starts from the one saved state (written by the first).
                for (optimizer, replica_device) in
                    optimizers.iter_mut().zip(&parallel.devices()[1..])
                {
                    training::restore_optimizer(run, optimizer, replica_device)?;
                }
            }
            Some(Replicas::new(
                parallel,
                &model,
                optimizers,
                run.path(run_dir::CHECKPOINT),
            ))
        }
        None => None,
    };
    let single_device = replicas.is_none();
    let memory_estimate = check_memory(
        settings,
        run,
        &base_model,
        &optimizer,
        &examples,
        single_device,
    )?;
    drop(base_model);
    // The steps of earlier sessions, up to the checkpoint this one resumes from.
    let earlier_seconds = progress.training_seconds;
    let mut training = Training {
        settings,
        experiment: &experiment,
        run,
        device,
        model,
        optimizer,
        progress,
        replicas,
    };
    tracing::info!(
        examples = examples.len(),
        parameters = training.model.num_params(),
        steps = training::total_steps(settings, examples.len()),
        "training"
    );
    let effective_ranks: BTreeMap<String, EffectiveRanks> = training
        .optimizer
        .effective_ranks(&training.model, Task::ALL.len())
        .into_iter()
        .collect();
    if let Some(summary) = ranks_summary(&effective_ranks) {
        println!("{summary}");
    }
    crate::evaluation::warn_if_shallow(settings.beam_width);
    INTERRUPTED.store(false, Ordering::SeqCst);
    // A second Ctrl-C during the checkpoint write kills the process the usual way.
    let _ = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
    });
    if !training.run(&examples, stop_after)? {
        println!(
            "paused after step {} with a checkpoint (peak resident memory {}); continue with: gems train --resume {}",
            training.progress.step,
            memory::peak_resident().map_or("n/a".into(), memory::human_bytes),
            run.root().display()
        );
        return Ok(None);
    }
    // This session's whole time (set-up, steps, evaluation) and earlier sessions' steps.
    let training_seconds = earlier_seconds + started.elapsed().as_secs_f64();

    // The final model: the best on validation when validation ran, else the last.
    let best = run.path(run_dir::BEST_MODEL);
    let final_model = if best.is_dir() {
        Backbone::load(&best, &training.device.clone().without_autodiff())?
    } else {
        training.inference_model()
    };
    training::check_finite(&final_model, run, training.progress.step)?;
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
            devices: used_devices,
            memory_estimate: &memory_estimate,
            peak_resident_bytes: memory::peak_resident().map_or("n/a".into(), Into::into),
            skipped_steps: training.progress.curves.skipped_steps.len(),
            effective_ranks,
            frozen_parameters: training.model.frozen_parameters(),
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

/// Prints the expected memory of the run (and writes it to the run's `memory.json`), and refuses to start one that will not fit the
/// memory available (unless `ignore_memory_estimate`).
fn check_memory(
    settings: &TrainSettings,
    run: &RunDir,
    model: &Backbone,
    optimizer: &gems_core::GemsOptimizer,
    examples: &[EncodedExample],
    single_device: bool,
) -> Result<MemoryEstimate> {
    let batch = BatchShape {
        batch_size: settings.batch_size,
        prompt_tokens: examples.iter().map(|e| e.prompt.len()).max().unwrap_or(0),
        target_tokens: examples
            .iter()
            .map(|e| e.target.len() + 1)
            .max()
            .unwrap_or(0),
    };
    let condensed = !settings.full_task_gradients && single_device;
    let estimate = memory::estimate(
        model,
        settings.method,
        optimizer,
        Task::ALL.len(),
        batch,
        condensed,
    );
    let available = memory::available(settings.memory_limit);
    run.write_json(run_dir::MEMORY_ESTIMATE, &estimate)?;
    println!(
        "expected memory ({}, batch size {}; available {}):\n{}",
        settings.method,
        settings.batch_size,
        available.map_or("unknown".into(), memory::human_bytes),
        estimate.table()
    );
    if let Some(available) = available.filter(|_| !settings.ignore_memory_estimate) {
        let d_model = model.config().hidden_size();
        let mut alternatives = Vec::new();
        for method in TrainMethod::ALL
            .into_iter()
            .filter(|m| *m != settings.method)
        {
            let other = TrainSettings {
                method,
                ..settings.clone()
            };
            let mut optimizer_of =
                crate::vocabulary::restrict(other.optimizer_config(d_model).init()?, model);
            if method.needs_null_space() {
                optimizer_of = optimizer_of.with_null_space(optimizer.null_space().clone());
            }
            let estimate = memory::estimate(
                model,
                method,
                &optimizer_of,
                Task::ALL.len(),
                batch,
                condensed,
            );
            alternatives.push((method.name().to_string(), estimate));
        }
        memory::check_fits(&estimate, settings.batch_size, available, &alternatives)?;
    }
    Ok(estimate)
}

/// One line on the ranks the projected weights get: the range of r_s and r_t, the knowledge
/// directions protected, and how many layers lost their task subspaces or all rank (each of
/// which gems-core also names in a warning). `None` when nothing is projected.
fn ranks_summary(ranks: &BTreeMap<String, EffectiveRanks>) -> Option<String> {
    let range = |values: Vec<usize>| {
        let (low, high) = (values.iter().min()?, values.iter().max()?);
        Some(if low == high {
            low.to_string()
        } else {
            format!("{low}–{high}")
        })
    };
    let shared = range(ranks.values().map(|r| r.shared).collect())?;
    let task = range(ranks.values().map(|r| r.task).collect())?;
    let protected: usize = ranks.values().map(|r| r.knowledge).sum();
    let without_tasks = ranks
        .values()
        .filter(|r| r.requested_task > 0 && r.task == 0 && r.shared > 0)
        .count();
    let frozen = ranks.values().filter(|r| r.shared == 0).count();
    Some(format!(
        "effective ranks over {} projected weights: r_s {shared}, r_t {task}; {protected} knowledge \
         directions protected; {without_tasks} weight(s) without task subspaces, {frozen} without \
         any subspace (table in manifest.json)",
        ranks.len()
    ))
}
