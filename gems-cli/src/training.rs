//! The training loop: per-task backward passes, the optimizer step, learning-rate schedule,
//! validation with early stopping, checkpoints that resume bit for bit, and Ctrl-C.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::module::{Lora, Module, ParamGroup};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::Device;
use gems_core::{FactoredGradient, GemsError, GemsOptimizer, NullSpace, StepReport, TaskGradients};
use gems_data::batch::EncodedExample;
use gems_data::{Protocol, Task};
use gems_models::{Backbone, GradientFactoring};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{CliError, Result};
use crate::evaluation::{self, Evaluation};
use crate::experiment::Experiment;
use crate::progress;
use crate::run_dir::{self, RunDir};
use crate::schedule;
use crate::settings::{TrainMethod, TrainSettings};

/// Set by the Ctrl-C handler: the loop saves a checkpoint and stops at the end of the step.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Per-layer task-gradient cosines are recorded every this many steps.
const CONFLICT_EVERY: u64 = 5;

/// Whether step `number` (1-based) records the per-layer task-gradient cosines, which need
/// every task's full gradients.
fn records_conflict(number: u64) -> bool {
    number % CONFLICT_EVERY == 1
}

/// One optimizer step, as recorded.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StepRecord {
    /// Step number (1-based).
    pub step: u64,
    /// Epoch (0-based).
    pub epoch: usize,
    /// Learning rate used.
    pub learning_rate: f64,
    /// Loss of each task [search, rec] over the step's window (NaN-free: 0 when absent).
    pub losses: [f64; 2],
    /// Samples of each task in the window.
    pub samples: [usize; 2],
    /// Gate value of each task.
    pub gate: Vec<f64>,
}

/// One validation.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ValidationRecord {
    /// After this step.
    pub step: u64,
    /// NDCG@10 (sampled protocol) of each task [search, rec].
    pub ndcg_at_10: [f64; 2],
}

/// Task-gradient cosines per projected layer at one step.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ConflictRecord {
    /// Step number.
    pub step: u64,
    /// (parameter path, cosine between the search and rec gradients).
    pub layers: Vec<(String, f64)>,
}

/// Everything recorded along training (`curves.json`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Curves {
    /// Every step.
    pub steps: Vec<StepRecord>,
    /// Every validation.
    pub validations: Vec<ValidationRecord>,
    /// Task conflict, every few steps.
    pub conflict: Vec<ConflictRecord>,
    /// Steps skipped because a task's loss or gradient was not finite (their numbers).
    #[serde(default)]
    pub skipped_steps: Vec<u64>,
}

/// Where training stands; saved in every checkpoint (`progress.json`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Progress {
    /// Steps taken, the skipped ones ([`Curves::skipped_steps`]) included.
    pub step: u64,
    /// Current epoch.
    pub epoch: usize,
    /// Next position in the epoch's example order.
    pub position: usize,
    /// Best mean validation NDCG@10 so far, and its step.
    pub best: Option<(f64, u64)>,
    /// Validations since the best one.
    pub stale_validations: usize,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
    /// Fingerprint of the data the run trains on.
    pub data_fingerprint: String,
    /// Curves so far.
    pub curves: Curves,
    /// Skipped steps since the last applied one.
    #[serde(default)]
    pub consecutive_skips: usize,
    /// Seconds spent in training steps and validations so far, over every session of the run
    /// (a paused run's later sessions add theirs).
    #[serde(default)]
    pub training_seconds: f64,
    /// The settings the run started with, which a resumed run must still have (an edited
    /// `config.toml` is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<TrainSettings>,
}

impl Progress {
    /// The state before the first step.
    pub fn start(data_fingerprint: String) -> Self {
        Self {
            step: 0,
            epoch: 0,
            position: 0,
            best: None,
            stale_validations: 0,
            stopped_early: false,
            data_fingerprint,
            curves: Curves::default(),
            consecutive_skips: 0,
            training_seconds: 0.0,
            settings: None,
        }
    }

    /// The steps the optimizer applied: those taken less those skipped.
    pub fn applied_steps(&self) -> u64 {
        self.step
            .saturating_sub(self.curves.skipped_steps.len() as u64)
    }
}

/// A model being trained, with its optimizer and progress.
pub struct Training<'a> {
    /// Settings of the run.
    pub settings: &'a TrainSettings,
    /// Data and tokenization.
    pub experiment: &'a Experiment,
    /// The run directory.
    pub run: &'a RunDir,
    /// The autodiff device.
    pub device: Device,
    /// The model (LoRA adapters attached for `lora`).
    pub model: Backbone,
    /// The optimizer.
    pub optimizer: GemsOptimizer,
    /// Progress so far.
    pub progress: Progress,
    /// The other replicas of a data-parallel run (`--devices`); `model`, `optimizer` and
    /// `device` are the first replica's.
    pub replicas: Option<crate::distributed::Replicas>,
}

/// Encoded training examples, one per (request, target).
pub fn training_examples(experiment: &Experiment) -> Result<Vec<EncodedExample>> {
    gems_data::batch::training_targets(&experiment.dataset.train)
        .into_iter()
        .map(|(index, target)| experiment.encode(&experiment.dataset.train[index], Some(target)))
        .collect()
}

/// Attaches LoRA adapters (rank, α = scale·rank) to the projected matrices; the rest of the
/// model (embeddings, norms) stays trainable, as GEMS trains it, but for the frozen pre-trained
/// vocabulary rows. Adapters that would not fit in
/// memory are refused before any is allocated.
pub fn attach_lora(
    model: Backbone,
    optimizer: &GemsOptimizer,
    rank: usize,
    scale: f64,
) -> Result<Backbone> {
    let (targets, shapes): (Vec<String>, Vec<[usize; 2]>) = gems_models::parameter_paths(&model)
        .into_iter()
        .filter(|(path, shape)| optimizer.config().targets(path, shape))
        .map(|(path, shape)| (path, [shape[0], shape[1]]))
        .unzip();
    crate::memory::check_size_fits(
        crate::memory::lora_bytes(rank, &shapes),
        &format!(
            "LoRA adapters of rank {rank} on {} matrices (with gradients and Adam moments)",
            shapes.len()
        ),
        "lower shared_rank (the LoRA rank)",
    )?;
    let bases = ParamGroup::from_paths(targets);
    let frozen = ParamGroup::from_paths(model.frozen_parameters());
    Ok(model
        .apply_lora(Lora::new(rank, scale * rank as f64).set_param_group(bases.clone()))
        .unfreeze_group(ParamGroup::all().exclude(bases).exclude(frozen)))
}

/// Training examples one step takes: one window of the epoch's order (the epoch's last window
/// takes what is left).
fn window(settings: &TrainSettings) -> usize {
    // Validated settings: the window does not overflow.
    settings.batch_size * settings.gradient_accumulation
}

/// Steps of one epoch over `examples` training examples.
fn steps_per_epoch(settings: &TrainSettings, examples: usize) -> u64 {
    (examples as u64).div_ceil(window(settings) as u64)
}

/// Optimizer steps of a whole run over `examples` training examples.
pub fn total_steps(settings: &TrainSettings, examples: usize) -> u64 {
    let all = steps_per_epoch(settings, examples).saturating_mul(settings.epochs as u64);
    if settings.max_steps > 0 {
        all.min(settings.max_steps)
    } else {
        all
    }
}

impl Training<'_> {
    /// Trains until the last step, early stopping, `stop_after` steps of this call (returns
    /// `false`: paused, a checkpoint saved) or Ctrl-C (which saves a checkpoint and returns
    /// [`CliError::Interrupted`]). Returns `true` when training is complete.
    pub fn run(&mut self, examples: &[EncodedExample], stop_after: Option<u64>) -> Result<bool> {
        let total = total_steps(self.settings, examples.len());
        let bar = progress::bar(total, "train");
        bar.set_position(self.progress.step);
        let window = window(self.settings);
        let pause_at = stop_after.map(|steps| self.progress.step.saturating_add(steps));
        while self.progress.step < total && !self.progress.stopped_early {
            if pause_at.is_some_and(|at| self.progress.step >= at) {
                self.save_checkpoint()?;
                bar.abandon_with_message("paused");
                return Ok(false);
            }
            let order = epoch_order(self.settings.seed, self.progress.epoch, examples.len());
            let end = (self.progress.position + window).min(examples.len());
            let chosen: Vec<&EncodedExample> = order[self.progress.position..end]
                .iter()
                .map(|&i| &examples[i])
                .collect();
            let started = std::time::Instant::now();
            let report = self.step(&chosen, total)?;
            // Samples of the whole window (every device's) per second.
            let throughput = chosen.len() as f64 / started.elapsed().as_secs_f64();
            self.progress.position = end;
            let skipped = match self.progress.curves.skipped_steps.len() {
                0 => String::new(),
                n => format!("  skipped {n}"),
            };
            match (report, self.progress.curves.steps.last()) {
                (Some(report), Some(record)) => bar.set_message(format!(
                    "search {:.3}  rec {:.3}  lr {:.1e}  {throughput:.1} samples/s{}{skipped}",
                    record.losses[0],
                    record.losses[1],
                    record.learning_rate,
                    if report.refreshed > 0 {
                        "  (bases refreshed)"
                    } else {
                        ""
                    }
                )),
                _ => bar.set_message(format!("non-finite step skipped{skipped}")),
            }
            bar.inc(1);
            let epoch_done = self.progress.position >= examples.len();
            if epoch_done {
                self.progress.epoch += 1;
                self.progress.position = 0;
                bar.suspend(|| self.validate())?;
            }
            self.progress.training_seconds += started.elapsed().as_secs_f64();
            let checkpoint_due = epoch_done
                || (self.settings.checkpoint_every > 0
                    && self
                        .progress
                        .step
                        .is_multiple_of(self.settings.checkpoint_every));
            if checkpoint_due || INTERRUPTED.load(Ordering::SeqCst) {
                self.save_checkpoint()?;
                // Data-parallel hook: the other replicas restart from the checkpoint.
                if let Some(replicas) = &mut self.replicas {
                    replicas.resync(&self.model, self.run)?;
                }
            }
            if INTERRUPTED.load(Ordering::SeqCst) {
                bar.abandon_with_message("interrupted");
                return Err(CliError::Interrupted(self.run.path(run_dir::CHECKPOINT)));
            }
        }
        bar.finish_with_message(if self.progress.stopped_early {
            "stopped early"
        } else {
            "done"
        });
        self.save_checkpoint()?;
        Ok(true)
    }

    /// One optimizer step over the examples of one window (several micro-batches); `None` when
    /// a task's loss or gradient was not finite and the step was skipped (nothing changed but
    /// the counters), an error after `max_consecutive_skips` skips in a row.
    pub(crate) fn step(
        &mut self,
        window: &[&EncodedExample],
        total: u64,
    ) -> Result<Option<StepReport>> {
        let samples = Task::ALL.map(|task| window.iter().filter(|e| e.task == task).count());
        let micro_batches: Vec<&[&EncodedExample]> =
            window.chunks(self.settings.batch_size).collect();
        let learning_rate = schedule::learning_rate(
            self.settings.learning_rate,
            self.progress.step,
            self.settings.warmup_steps,
            total,
            self.settings.schedule,
        );
        let (experiment, settings, step) = (self.experiment, self.settings, self.progress.step);
        let window = Window { step, samples };
        // The per-layer task cosines cost a pass over the full task gradients: only on the
        // steps that record them.
        let records_cosines = records_conflict(step + 1);
        self.optimizer.set_diagnostics(records_cosines);
        let stepped = match &mut self.replicas {
            // Data-parallel hook (`--devices`, crate::distributed): every replica steps.
            Some(replicas) => replicas.step(
                learning_rate,
                (&mut self.model, &mut self.optimizer),
                micro_batches.len(),
                |model: &Backbone, device: &Device, micros: &[usize]| {
                    let chosen = micros.iter().map(|&m| (m, micro_batches[m]));
                    window_gradients(
                        experiment,
                        settings,
                        &window,
                        model,
                        device,
                        chosen,
                        |_| Vec::new(),
                        |_, t, _| t,
                    )
                },
            ),
            None => {
                // Every task is condensed once its backward passes end, so that one task's full
                // gradients are held at a time, the weights it condenses factored by the backward
                // pass where that pays; not on the steps that record the per-layer task cosines,
                // which need the full gradients.
                let condense = !settings.full_task_gradients && !records_cosines;
                let (model, optimizer) = (&self.model, &self.optimizer);
                let chosen = micro_batches.iter().copied().enumerate();
                let tasks = window_gradients(
                    experiment,
                    settings,
                    &window,
                    model,
                    &self.device,
                    chosen,
                    |t| match condense {
                        true => optimizer.condensable_weights(t),
                        false => Vec::new(),
                    },
                    |t, gradients, factored| match condense {
                        true => optimizer.condense_factored(model, t, gradients, factored),
                        false => gradients.into(),
                    },
                )?;
                let losses: Vec<f64> = tasks.iter().map(|t| t.loss()).collect();
                let model = self.model.clone();
                match self.optimizer.step(learning_rate, model, tasks) {
                    Ok((model, report)) => {
                        self.model = model;
                        Ok((report, losses))
                    }
                    Err(rejected) => Err(CliError::from(rejected.error)),
                }
            }
        };
        // A non-finite loss or gradient is rejected before anything changes: skip the window.
        let (report, losses) = match stepped {
            Err(CliError::Optimizer(GemsError::NonFinite { task, what, value })) => {
                self.progress.step += 1;
                self.progress.curves.skipped_steps.push(self.progress.step);
                self.progress.consecutive_skips += 1;
                tracing::warn!(
                    step = self.progress.step,
                    "skipped: {} task's {what} is {value}",
                    Task::ALL[task]
                );
                let limit = self.settings.max_consecutive_skips;
                if self.progress.consecutive_skips >= limit {
                    let checkpoint = self.run.path(run_dir::CHECKPOINT);
                    let then = match run_dir::complete_directory(&checkpoint) {
                        Some(_) => "and resume from the last checkpoint",
                        // A run that fails before its first checkpoint leaves no directory.
                        None => "and start the run again (it had no checkpoint yet)",
                    };
                    return Err(CliError::run(
                        self.run.root(),
                        format!(
                            "{limit} steps in a row had a non-finite loss or gradient (the last, \
                             step {}: the {} task's {what} was {value}); lower the learning rate \
                             or raise max_consecutive_skips, {then}",
                            self.progress.step,
                            Task::ALL[task]
                        ),
                    ));
                }
                return Ok(None);
            }
            other => other?,
        };
        self.progress.consecutive_skips = 0;
        let losses: [f64; 2] = [losses[0], losses[1]];
        self.progress.step += 1;
        self.progress.curves.steps.push(StepRecord {
            step: self.progress.step,
            epoch: self.progress.epoch,
            learning_rate,
            losses,
            samples,
            gate: report.gate.clone(),
        });
        if records_conflict(self.progress.step) && !report.layer_cosines.is_empty() {
            self.progress.curves.conflict.push(ConflictRecord {
                step: self.progress.step,
                layers: report
                    .layer_cosines
                    .iter()
                    .map(|l| (l.path.clone(), l.cosine[0]))
                    .collect(),
            });
        }
        Ok(Some(report))
    }

    /// Validation NDCG@10 (sampled protocol) after an epoch; keeps the best model and decides
    /// early stopping.
    fn validate(&mut self) -> Result<()> {
        let requests = evaluation::subset(
            &self.experiment.dataset.valid,
            self.settings.validation_requests,
        );
        let report = Evaluation::new(self.experiment, self.settings.beam_width).ranking_metrics(
            &self.inference_model(),
            &requests,
            Protocol::Sampled,
            "validation",
        )?;
        let ndcg = Task::ALL.map(|task| report.ndcg(task, 10).unwrap_or(0.0));
        let mean = (ndcg[0] + ndcg[1]) / 2.0;
        tracing::info!(
            step = self.progress.step,
            "validation NDCG@10: search {:.4}, rec {:.4}",
            ndcg[0],
            ndcg[1]
        );
        self.progress.curves.validations.push(ValidationRecord {
            step: self.progress.step,
            ndcg_at_10: ndcg,
        });
        if self.progress.best.is_none_or(|(best, _)| mean > best) {
            self.progress.best = Some((mean, self.progress.step));
            self.progress.stale_validations = 0;
            let best = self.run.path(run_dir::BEST_MODEL);
            let model = self.inference_model();
            run_dir::replace_directory(&best, |folder| {
                model.save(folder)?;
                self.experiment.save_beside_model(folder)
            })?;
        } else {
            self.progress.stale_validations += 1;
            let patience = self.settings.early_stopping_patience;
            if patience > 0 && self.progress.stale_validations >= patience {
                tracing::info!("no improvement in {patience} validations: stopping early");
                self.progress.stopped_early = true;
            }
        }
        Ok(())
    }

    /// The model without autodiff, LoRA adapters merged: what is saved and evaluated.
    pub fn inference_model(&self) -> Backbone {
        let model = self.model.valid();
        match self.settings.method {
            TrainMethod::Lora => model.materialize(),
            TrainMethod::Optimizer(_) => model,
        }
    }

    /// Writes the checkpoint: model (HF safetensors, adapters merged; plus the unmerged
    /// adapters for LoRA), optimizer state, progress. Atomic as a whole.
    pub fn save_checkpoint(&self) -> Result<()> {
        let model = self.inference_model();
        check_finite(&model, self.run, self.progress.step)?;
        run_dir::replace_directory(&self.run.path(run_dir::CHECKPOINT), |folder| {
            let model_folder = folder.join(run_dir::MODEL);
            model.save(&model_folder)?;
            self.experiment.save_beside_model(&model_folder)?;
            if self.settings.method == TrainMethod::Lora {
                self.model
                    .clone()
                    .into_record()
                    .save(folder.join(run_dir::LORA_RECORD))
                    .map_err(|e| {
                        CliError::run(folder, format!("cannot save the LoRA adapters: {e}"))
                    })?;
            }
            self.optimizer
                .save_state(&folder.join(run_dir::OPTIMIZER_STATE))?;
            run_dir::write_json(&folder.join(run_dir::PROGRESS), &self.progress)
        })?;
        self.run.write_json(run_dir::CURVES, &self.progress.curves)
    }
}

/// Refuses weights that hold a NaN or an infinite value after step `step` (a learning rate or
/// weight decay so large that an update overflowed), before they replace a checkpoint or
/// become the run's model: the last checkpoint stays as it was.
pub(crate) fn check_finite(model: &Backbone, run: &RunDir, step: u64) -> Result<()> {
    match gems_models::first_non_finite_parameter(model) {
        None => Ok(()),
        Some(path) => Err(CliError::run(
            run.root(),
            format!(
                "after step {step} the weights are no longer finite (`{path}` holds NaN or infinity): \
                 lower the learning rate or the weight decay; the last checkpoint, if any, is kept"
            ),
        )),
    }
}

/// The run a checkpoint is restored into: every field of the checkpoint is checked against it
/// before use.
pub struct Checkpoint<'a> {
    /// The run directory.
    pub run: &'a RunDir,
    /// Its settings.
    pub settings: &'a TrainSettings,
    /// Fingerprint of the data it trains on now.
    pub data_fingerprint: &'a str,
    /// Training examples of that data.
    pub examples: usize,
}

impl Checkpoint<'_> {
    /// Restores model, optimizer state and progress from the run's checkpoint onto a freshly
    /// built model and optimizer of the same settings.
    pub fn restore(
        &self,
        model: Backbone,
        optimizer: &mut GemsOptimizer,
        device: &Device,
    ) -> Result<(Backbone, Progress)> {
        let folder = self.run.path(run_dir::CHECKPOINT);
        if !folder.is_dir() {
            return Err(CliError::run(
                self.run.root(),
                "no checkpoint to resume from (the run stopped before its first one); remove the directory and start the run again",
            ));
        }
        let progress: Progress = run_dir::read_json(&folder.join(run_dir::PROGRESS))?;
        self.check_progress(&progress, &folder.join(run_dir::PROGRESS))?;
        let state = folder.join(run_dir::OPTIMIZER_STATE);
        optimizer.load_state(&state, &device.clone().without_autodiff())?;
        if optimizer.steps() != progress.applied_steps() {
            return Err(CliError::run(
                &state,
                format!(
                    "holds {} optimizer steps but progress.json {} ({} taken, {} skipped): the checkpoint is inconsistent",
                    optimizer.steps(),
                    progress.applied_steps(),
                    progress.step,
                    progress.curves.skipped_steps.len()
                ),
            ));
        }
        optimizer.check_state_fits(&model, &state)?;
        let model = match self.settings.method {
            TrainMethod::Lora => {
                let record = burn::store::ModuleRecord::load(folder.join(run_dir::LORA_RECORD))
                    .map_err(|e| {
                        CliError::run(&folder, format!("cannot read the LoRA adapters: {e}"))
                    })?;
                model.try_load_record(record).map_err(|e| {
                    CliError::run(
                        &folder,
                        format!("the LoRA adapters do not fit the model: {e}"),
                    )
                })?
            }
            TrainMethod::Optimizer(_) => load_weights(model, &folder.join(run_dir::MODEL), device)?,
        };
        Ok((model, progress))
    }

    /// Every field of `progress.json` against the run: the data, the position, the step count and
    /// the records.
    fn check_progress(&self, progress: &Progress, path: &Path) -> Result<()> {
        let fail = |message: String| Err(CliError::run(path, message));
        if let Some(started_with) = &progress.settings {
            let changed = changed_settings(started_with, self.settings);
            if !changed.is_empty() {
                return Err(CliError::run(
                    &self.run.path(run_dir::CONFIG),
                    format!(
                        "differs from the settings the run started with ({}); a run resumes with its own settings: restore them (here, or in the flags of the `gems compare` that made the run), or start a new run",
                        changed.join(", ")
                    ),
                ));
            }
        }
        if progress.data_fingerprint != self.data_fingerprint {
            return fail(format!(
                "the checkpoint was trained on other data (fingerprint {} here, {} now)",
                progress.data_fingerprint, self.data_fingerprint
            ));
        }
        let total = total_steps(self.settings, self.examples);
        if progress.step > total {
            return fail(format!(
                "step {} is past the run's {total} steps",
                progress.step
            ));
        }
        if progress.epoch > self.settings.epochs {
            return fail(format!(
                "epoch {} is past the run's {} epochs",
                progress.epoch, self.settings.epochs
            ));
        }
        if progress.position > 0 && progress.position >= self.examples {
            return fail(format!(
                "position {} is past the {} training examples",
                progress.position, self.examples
            ));
        }
        // Every step takes one window, so the step number says where in which epoch the run
        // stands.
        let window = window(self.settings) as u64;
        let per_epoch = steps_per_epoch(self.settings, self.examples);
        if let Some(epoch) = progress.step.checked_div(per_epoch) {
            let position = (progress.step % per_epoch) * window;
            if (progress.epoch as u64, progress.position as u64) != (epoch, position) {
                return fail(format!(
                    "epoch {} and position {} do not follow from step {} ({per_epoch} steps of {window} examples per epoch): expected epoch {epoch} and position {position}",
                    progress.epoch, progress.position, progress.step
                ));
            }
        }
        let skipped = &progress.curves.skipped_steps;
        if skipped.windows(2).any(|pair| pair[0] >= pair[1])
            || skipped
                .iter()
                .any(|&step| step == 0 || step > progress.step)
        {
            return fail(format!(
                "its skipped steps {skipped:?} are not increasing step numbers from 1 to step {}",
                progress.step
            ));
        }
        if progress.consecutive_skips > skipped.len() {
            return fail(format!(
                "counts {} skipped steps in a row but records {} skipped steps",
                progress.consecutive_skips,
                skipped.len()
            ));
        }
        if progress.curves.steps.len() as u64 != progress.applied_steps() {
            return fail(format!(
                "records {} applied and {} skipped steps in its curves but is at step {}",
                progress.curves.steps.len(),
                skipped.len(),
                progress.step
            ));
        }
        if let Some((value, step)) = progress.best
            && (!value.is_finite() || step > progress.step)
        {
            return fail(format!(
                "best validation ({value}, step {step}) is not a finite value of a step taken"
            ));
        }
        if progress.stale_validations > progress.curves.validations.len() {
            return fail(format!(
                "counts {} validations without improvement but records {}",
                progress.stale_validations,
                progress.curves.validations.len()
            ));
        }
        Ok(())
    }
}

/// The keys whose values differ between two sets of settings.
fn changed_settings(before: &TrainSettings, now: &TrainSettings) -> Vec<String> {
    let table = |settings: &TrainSettings| {
        toml::Table::try_from(settings).expect("settings serialise to a TOML table")
    };
    let (before, now) = (table(before), table(now));
    let mut keys: Vec<&String> = before.keys().chain(now.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|key| before.get(*key) != now.get(*key))
        .map(|key| key.to_string())
        .collect()
}

/// The complete checkpoint directory of `run`.
fn checkpoint_folder(run: &RunDir) -> Result<std::path::PathBuf> {
    let target = run.path(run_dir::CHECKPOINT);
    run_dir::complete_directory(&target).ok_or_else(|| {
        CliError::run(
            run.root(),
            "no checkpoint to resume from (checkpoint/ is missing)",
        )
    })
}

/// Loads the optimizer state of `run`'s checkpoint onto `device` (also each further replica's,
/// in a data-parallel run).
pub fn restore_optimizer(
    run: &RunDir,
    optimizer: &mut GemsOptimizer,
    device: &Device,
) -> Result<()> {
    let folder = checkpoint_folder(run)?;
    optimizer.load_state(
        &folder.join(run_dir::OPTIMIZER_STATE),
        &device.clone().without_autodiff(),
    )?;
    Ok(())
}

/// The weights of the HF directory `folder` in place of `model`'s (same architecture), keeping
/// the module's parameter identities and autodiff settings.
fn load_weights(model: Backbone, folder: &Path, device: &Device) -> Result<Backbone> {
    let saved = Backbone::load(folder, device)?;
    // The checkpoint holds whole vocabulary matrices: hold their added rows apart as `model` does.
    let saved = match model.first_added_token() {
        Some(first) => saved.freeze_pretrained_tokens(first)?,
        None => saved,
    };
    let (expected, found) = (
        gems_models::parameter_paths(&model),
        gems_models::parameter_paths(&saved),
    );
    if expected != found {
        let differing = expected
            .iter()
            .zip(&found)
            .find(|(a, b)| a != b)
            .map(|(a, b)| format!("{a:?} vs {b:?}"));
        return Err(CliError::run(
            folder,
            format!(
                "the checkpoint's parameters do not match the run's model ({})",
                differing.unwrap_or_else(|| format!(
                    "{} vs {} tensors",
                    expected.len(),
                    found.len()
                ))
            ),
        ));
    }
    Ok(model.load_record(saved.into_record()))
}

/// One optimizer step's window of examples, as its gradients need it.
pub(crate) struct Window {
    /// The step.
    pub step: u64,
    /// Samples of each task in the whole window.
    pub samples: [usize; 2],
}

/// Each task's gradients, loss and samples over the given micro-batches `(index, examples)` of
/// `window`, on `device`: every micro-batch's loss weighted by its rows over the window's samples
/// of the task, so that the parts of a window (one per device) add up to the whole window's.
///
/// The tasks are taken one after the other, and each task's gradients go through
/// `finish(task, gradients, factored)` as soon as its last backward pass ends, before the next
/// task's first: that is where a caller condenses them ([`GemsOptimizer::condense_factored`])
/// to hold one task's full gradients at a time. The weights `factor(task)` names are left to
/// the backward pass to factor where that pays ([`GradientFactoring`]): their gradients come
/// in `factored`, the micro-batches' factors stacked, instead of in `gradients`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn window_gradients<'a, T>(
    experiment: &Experiment,
    settings: &TrainSettings,
    window: &Window,
    model: &Backbone,
    device: &Device,
    micro_batches: impl Iterator<Item = (usize, &'a [&'a EncodedExample])>,
    factor: impl Fn(usize) -> Vec<String>,
    mut finish: impl FnMut(usize, TaskGradients, BTreeMap<String, FactoredGradient>) -> T,
) -> Result<Vec<T>> {
    let Window { step, samples } = *window;
    let micro_batches: Vec<_> = micro_batches.collect();
    let mut finished = Vec::with_capacity(Task::ALL.len());
    for (t, task) in Task::ALL.iter().enumerate() {
        let mut accumulator = GradientsAccumulator::<Backbone>::default();
        let mut factoring = GradientFactoring::new(factor(t));
        let mut factor_parts: BTreeMap<String, Vec<FactoredGradient>> = BTreeMap::new();
        let (mut loss_sum, mut count) = (0.0f64, 0usize);
        for &(micro, batch) in &micro_batches {
            let rows: Vec<EncodedExample> = batch
                .iter()
                .filter(|e| e.task == *task)
                .map(|e| (*e).clone())
                .collect();
            if rows.is_empty() {
                continue;
            }
            // Reproducible randomness (dropout) for every pass, so that a resumed run repeats
            // the uninterrupted one, on any number of devices.
            device.seed(settings.seed ^ (step << 8) ^ ((micro as u64) << 2) ^ t as u64);
            let weight = rows.len() as f64 / samples[t] as f64;
            count += rows.len();
            let batch = experiment.training_batch(&rows, device)?;
            let loss = model
                .loss_factored(&batch, &mut factoring)?
                .mul_scalar(weight);
            loss_sum += loss.clone().into_scalar::<f32>() as f64;
            let mut grads = loss.backward();
            for factors in factoring.take_factors(&mut grads) {
                factor_parts
                    .entry(factors.weight_path)
                    .or_default()
                    .push(FactoredGradient {
                        left: factors.inputs,
                        right: factors.output_gradients,
                    });
            }
            accumulator.accumulate(model, GradientsParams::from_grads(grads, model));
        }
        let gradients = TaskGradients {
            gradients: accumulator.grads(),
            loss: loss_sum,
            samples: count,
        };
        let factored = factor_parts
            .into_iter()
            .filter_map(|(path, parts)| FactoredGradient::sum(parts).map(|sum| (path, sum)))
            .collect();
        finished.push(finish(t, gradients, factored));
    }
    Ok(finished)
}

/// The example order of `epoch`: a permutation seeded by the run's seed and the epoch.
pub(crate) fn epoch_order(seed: u64, epoch: usize, count: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..count).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(
        seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ epoch as u64,
    ));
    order
}

/// `model` ready for `settings.method`: LoRA adapters attached for `lora`.
pub(crate) fn with_method(
    model: Backbone,
    optimizer: &GemsOptimizer,
    settings: &TrainSettings,
) -> Result<Backbone> {
    match settings.method {
        TrainMethod::Lora => {
            let rank = settings.shared_rank(model.config().hidden_size());
            attach_lora(model, optimizer, rank, settings.scale)
        }
        TrainMethod::Optimizer(_) => Ok(model),
    }
}

/// The run's optimizer for a backbone of width `d_model`, with the knowledge bases of
/// null-space projection when the method uses them.
pub fn optimizer_for(
    settings: &TrainSettings,
    d_model: usize,
    null_space: Option<NullSpace>,
) -> Result<GemsOptimizer> {
    let optimizer = settings.optimizer_config(d_model).init()?;
    Ok(match null_space {
        Some(null_space) => optimizer.with_null_space(null_space),
        None => optimizer,
    })
}
