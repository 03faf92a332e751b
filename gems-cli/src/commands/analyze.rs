//! `gems analyze conflict` and `gems analyze retention`: where the two tasks' gradients fight,
//! and how much each method moved the model on general text.

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};
use clap::{Args, Subcommand};
use gems_models::{Backbone, LinearInputObserver};
use serde::Serialize;

use crate::error::{CliError, Result};
use crate::experiment::Experiment;
use crate::general_corpus;
use crate::plots::{Series, line_chart};
use crate::run_dir::{self, RunDir};
use crate::saved_run::RunArgs;
use crate::training::Curves;

/// The analyses.
#[derive(Subcommand, Debug)]
pub enum AnalyzeCommand {
    /// Per-layer cosine between the search and rec gradients over training (mean, fraction
    /// negative), for each run given (e.g. a GEMS run and an AdamW run), with a plot.
    Conflict(ConflictArgs),
    /// Per-layer relative output drift ‖ΔW·x‖/‖W·x‖ on held-out general text and the general
    /// LM loss before and after training, for each run given, with a plot.
    Retention(RetentionArgs),
}

/// Arguments of `gems analyze conflict`.
#[derive(Args, Debug)]
pub struct ConflictArgs {
    /// Run directories written by `gems train`.
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Where to write `conflict.json` and `conflict.svg`.
    #[arg(long, default_value = "runs/analysis")]
    pub out: PathBuf,
}

/// Arguments of `gems analyze retention`.
#[derive(Args, Debug)]
pub struct RetentionArgs {
    /// Run directories written by `gems train`.
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// General-domain text files (default: the runs' general corpus); every fifth paragraph,
    /// the part never used for the knowledge bases, is analysed.
    #[arg(long, num_args = 1..)]
    pub general_corpus: Option<Vec<PathBuf>>,
    /// Where to write `retention.json` and `retention.svg`.
    #[arg(long, default_value = "runs/analysis")]
    pub out: PathBuf,
}

impl AnalyzeCommand {
    /// Runs the command.
    pub fn run(self) -> Result<()> {
        match self {
            AnalyzeCommand::Conflict(args) => conflict(args),
            AnalyzeCommand::Retention(args) => retention(args),
        }
    }
}

/// Conflict statistics of one layer in one run.
#[derive(Serialize)]
struct LayerConflict {
    layer: String,
    mean_cosine: f64,
    fraction_negative: f64,
    samples: usize,
}

fn conflict(args: ConflictArgs) -> Result<()> {
    let out = RunDir::create(&args.out)?;
    let mut report: BTreeMap<String, Vec<LayerConflict>> = BTreeMap::new();
    let mut over_layers = Vec::new();
    let mut over_time = Vec::new();
    for (path, name) in args.runs.iter().zip(run_names(&args.runs)?) {
        let run = RunDir::open(path)?;
        let curves: Curves = run_dir::read_json(&run.path(run_dir::CURVES))?;
        if curves.conflict.is_empty() {
            return Err(CliError::run(
                run.root(),
                "recorded no task-gradient cosines (a LoRA run, or a run without diagnostics)",
            ));
        }
        if let Some(empty) = curves.conflict.iter().find(|r| r.layers.is_empty()) {
            return Err(CliError::run(
                run.root(),
                format!(
                    "{}: the task-gradient cosines of step {} name no layer",
                    run_dir::CURVES,
                    empty.step
                ),
            ));
        }
        let mut by_layer: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        // Layers in model order (the order the optimizer reported them), each from the first
        // record that has it.
        let mut order: Vec<String> = Vec::new();
        for record in &curves.conflict {
            for (layer, cosine) in &record.layers {
                if !by_layer.contains_key(layer) {
                    order.push(layer.clone());
                }
                by_layer.entry(layer.clone()).or_default().push(*cosine);
            }
        }
        let layers: Vec<LayerConflict> = order
            .iter()
            .map(|layer| {
                let values = &by_layer[layer];
                LayerConflict {
                    layer: layer.clone(),
                    mean_cosine: values.iter().sum::<f64>() / values.len() as f64,
                    fraction_negative: values.iter().filter(|c| **c < 0.0).count() as f64
                        / values.len() as f64,
                    samples: values.len(),
                }
            })
            .collect();
        println!("{name}: {} layers", layers.len());
        println!("  {:<55} {:>12} {:>10}", "layer", "mean cosine", "negative");
        for layer in &layers {
            println!(
                "  {:<55} {:>12.4} {:>9.1}%",
                layer.layer,
                layer.mean_cosine,
                100.0 * layer.fraction_negative
            );
        }
        let overall = layers.iter().map(|l| l.mean_cosine).sum::<f64>() / layers.len() as f64;
        let negative =
            layers.iter().map(|l| l.fraction_negative).sum::<f64>() / layers.len() as f64;
        println!(
            "  mean over layers: cosine {overall:.4}, negative {:.1}% of the time\n",
            100.0 * negative
        );
        over_layers.push(Series {
            name: name.clone(),
            points: layers
                .iter()
                .enumerate()
                .map(|(i, l)| (i as f64, l.mean_cosine))
                .collect(),
        });
        over_time.push(Series {
            name: name.clone(),
            points: curves
                .conflict
                .iter()
                .map(|r| {
                    (
                        r.step as f64,
                        r.layers.iter().map(|(_, c)| c).sum::<f64>() / r.layers.len() as f64,
                    )
                })
                .collect(),
        });
        report.insert(name, layers);
    }
    line_chart(
        &out.path("conflict.svg"),
        "Search vs rec gradient cosine per layer",
        "layer (model order)",
        "mean cosine",
        &over_layers,
    )?;
    line_chart(
        &out.path("conflict_over_training.svg"),
        "Search vs rec gradient cosine, mean over layers",
        "step",
        "cosine",
        &over_time,
    )?;
    out.write_json("conflict.json", &report)?;
    println!("wrote {}", out.path("conflict.json").display());
    Ok(())
}

/// Retention of one run.
#[derive(Serialize)]
struct RunRetention {
    general_loss_before: f64,
    general_loss_after: f64,
    /// Tokens of the model before the fine-tune added its own (item tokens): its tokenizer's.
    pretrained_tokens: usize,
    /// The losses with the softmax over those tokens only: what is left of language modelling
    /// when the added tokens take no probability.
    general_loss_before_within_pretrained_tokens: f64,
    general_loss_after_within_pretrained_tokens: f64,
    /// (layer, ‖ΔW·x‖/‖W·x‖ over the held-out tokens).
    layers: Vec<(String, f64)>,
}

/// Inputs every target layer saw, stacked over batches.
#[derive(Default)]
struct InputCollector(BTreeMap<String, Vec<Tensor<2>>>);

impl LinearInputObserver for InputCollector {
    fn observe(&mut self, path: &str, inputs: Tensor<2>) {
        self.0
            .entry(format!("{path}.weight"))
            .or_default()
            .push(inputs);
    }
}

/// The 2-D weights of a model by path.
#[derive(Default)]
struct Weights {
    path: Vec<String>,
    weights: BTreeMap<String, Tensor<2>>,
}

impl ModuleVisitor for Weights {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if D == 2 {
            let value = param.val();
            let dims = value.dims();
            self.weights
                .insert(self.path.join("."), value.reshape([dims[0], dims[1]]));
        }
    }
}

fn weights_of(model: &Backbone) -> BTreeMap<String, Tensor<2>> {
    let mut visitor = Weights::default();
    model.visit(&mut visitor);
    visitor.weights
}

fn retention(args: RetentionArgs) -> Result<()> {
    let out = RunDir::create(&args.out)?;
    let mut report = BTreeMap::new();
    let mut series = Vec::new();
    for (path, name) in args.runs.iter().zip(run_names(&args.runs)?) {
        let run_args = RunArgs {
            run: path.clone(),
            checkpoint: false,
            backend: None,
        };
        let saved = run_args.open()?;
        let run = RunDir::open(path)?;
        let device: Device = saved.model.device();
        let base_folder = saved
            .settings
            .model_dir
            .clone()
            .unwrap_or_else(|| run.path(run_dir::BASE_MODEL));
        let base = load_base(&base_folder, &saved.model, &device)?;
        // A pre-trained model's own tokens are its tokenizer's; a model from scratch has no
        // tokens added to a vocabulary of its own.
        let pretrained_tokens = match &saved.settings.model_dir {
            Some(_) => gems_models::load_tokenizer(base_folder.join(run_dir::TOKENIZER))?
                .get_vocab_size(true),
            None => saved.model.vocab_size(),
        };
        let files = args
            .general_corpus
            .clone()
            .unwrap_or_else(|| saved.settings.general_corpus.clone());
        let (_, held_out) = general_corpus::split_held_out(general_corpus::load(
            &files,
            saved.settings.general_corpus_tokens,
        )?);
        let examples = saved.experiment.lm_examples(&held_out, 128)?;
        let models = Models {
            base: &base,
            trained: &saved.model,
            pretrained_tokens,
        };
        let retention = measure_retention(&saved.experiment, &models, &examples, &device)?;
        println!(
            "{name}: general-text LM loss {:.4} before, {:.4} after; over the {} pre-trained \
             tokens only (the added ones left out of the softmax): {:.4} before, {:.4} after",
            retention.general_loss_before,
            retention.general_loss_after,
            pretrained_tokens,
            retention.general_loss_before_within_pretrained_tokens,
            retention.general_loss_after_within_pretrained_tokens
        );
        let mean = retention.layers.iter().map(|(_, d)| d).sum::<f64>()
            / retention.layers.len().max(1) as f64;
        println!(
            "  mean relative output drift over {} layers: {mean:.4}",
            retention.layers.len()
        );
        for (layer, drift) in &retention.layers {
            println!("  {layer:<55} {drift:>10.4}");
        }
        series.push(Series {
            name: name.clone(),
            points: retention
                .layers
                .iter()
                .enumerate()
                .map(|(i, (_, d))| (i as f64, *d))
                .collect(),
        });
        report.insert(name, retention);
    }
    line_chart(
        &out.path("retention.svg"),
        "Relative output drift on held-out general text",
        "layer (model order)",
        "‖ΔW·x‖ / ‖W·x‖",
        &series,
    )?;
    out.write_json("retention.json", &report)?;
    println!("wrote {}", out.path("retention.json").display());
    Ok(())
}

/// The run's initial model, grown to the trained model's vocabulary.
fn load_base(folder: &std::path::Path, trained: &Backbone, device: &Device) -> Result<Backbone> {
    if !folder.join(run_dir::MODEL_CONFIG).is_file() {
        return Err(CliError::run(
            folder,
            "the run's initial weights are missing (runs made before this analysis existed did not keep them)",
        ));
    }
    let base = Backbone::load(folder, device)?;
    // The trained model's vocabulary includes the item tokens.
    Ok(if base.vocab_size() < trained.vocab_size() {
        base.resize_token_embeddings(trained.vocab_size())
    } else {
        base
    })
}

/// The models a retention analysis compares.
struct Models<'a> {
    base: &'a Backbone,
    trained: &'a Backbone,
    /// Tokens of the base's tokenizer, before the fine-tune's were added.
    pretrained_tokens: usize,
}

fn measure_retention(
    experiment: &Experiment,
    models: &Models,
    examples: &[gems_data::batch::EncodedExample],
    device: &Device,
) -> Result<RunRetention> {
    let Models {
        base,
        trained,
        pretrained_tokens,
    } = *models;
    let mut inputs = InputCollector::default();
    // Loss sums: before, after, and both within the pre-trained tokens.
    let mut sums = [0.0f64; 4];
    for chunk in examples.chunks(8) {
        let batch = experiment.training_batch(chunk, device)?;
        let losses = [
            base.forward_observed(&batch, &mut inputs)?,
            trained.loss(&batch)?,
            base.loss_within_first_tokens(&batch, pretrained_tokens)?,
            trained.loss_within_first_tokens(&batch, pretrained_tokens)?,
        ];
        for (sum, loss) in sums.iter_mut().zip(losses) {
            *sum += loss.into_scalar::<f32>() as f64 * chunk.len() as f64;
        }
    }
    let [before, after, before_within, after_within] = sums;
    let count = examples.len() as f64;
    let base_weights = weights_of(base);
    let trained_weights = weights_of(trained);
    let mut layers = Vec::new();
    for (path, batches) in inputs.0 {
        let (Some(w), Some(w_new)) = (base_weights.get(&path), trained_weights.get(&path)) else {
            continue;
        };
        let x = Tensor::cat(batches, 0);
        let norm = |t: Tensor<2>| t.square().sum().sqrt().into_scalar::<f32>() as f64;
        let reference = norm(x.clone().matmul(w.clone()));
        let drift = norm(x.matmul(w_new.clone() - w.clone()));
        layers.push((
            path,
            if reference > 0.0 {
                drift / reference
            } else {
                0.0
            },
        ));
    }
    Ok(RunRetention {
        general_loss_before: before / count,
        general_loss_after: after / count,
        pretrained_tokens,
        general_loss_before_within_pretrained_tokens: before_within / count,
        general_loss_after_within_pretrained_tokens: after_within / count,
        layers,
    })
}

/// The name of each run in the reports: its folder's name, or the path as given where two runs'
/// folders share a name (`a/run`, `b/run`); a run given twice is refused.
fn run_names(runs: &[PathBuf]) -> Result<Vec<String>> {
    let folder = |path: &PathBuf| {
        path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    };
    let mut names = Vec::with_capacity(runs.len());
    for (index, path) in runs.iter().enumerate() {
        if runs[..index].contains(path) {
            return Err(CliError::Settings(format!(
                "{} is given twice",
                path.display()
            )));
        }
        let shared = runs
            .iter()
            .enumerate()
            .any(|(other, p)| other != index && folder(p) == folder(path));
        names.push(match shared {
            true => path.display().to_string(),
            false => folder(path),
        });
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_named_by_their_folder_unless_two_folders_share_a_name() {
        let paths = |p: &[&str]| p.iter().map(PathBuf::from).collect::<Vec<_>>();
        assert_eq!(
            run_names(&paths(&["a/gems", "b/galore"])).unwrap(),
            ["gems", "galore"]
        );
        assert_eq!(
            run_names(&paths(&["a/run", "b/run", "c/x"])).unwrap(),
            ["a/run", "b/run", "x"]
        );
        let error = run_names(&paths(&["a/run", "a/run"])).unwrap_err();
        assert!(
            error.to_string().contains("a/run is given twice"),
            "{error}"
        );
    }
}
