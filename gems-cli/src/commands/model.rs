//! `gems model ...`: commands on a backbone model. `gems model logits` prints the logits of a
//! Hugging Face model directory for given token ids, to check the port against PyTorch;
//! `gems model info` shows its parameters, which of them the optimizer projects, and the
//! optimizer state each method would hold.

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::tensor::{Device, Int, Tensor, TensorData};
use clap::{Args, Subcommand};
use gems_core::{EffectiveRanks, GemsConfig, Method, Treatment};
use gems_models::t5::T5Config;
use gems_models::{Backbone, ModelConfig};
use serde::Serialize;
use serde_json::{Value, json};

use crate::error::{CliError, Result};
use crate::memory::{self, BatchShape, MemoryEstimate, human_bytes};
use crate::settings::{TrainMethod, VocabularyTraining};

/// Commands on a backbone model.
#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Print `{"shape": [1, positions, vocab], "logits": [...]}` (row-major) for one input.
    Logits(LogitsArgs),
    /// Parameters, the matrices the optimizer projects, and optimizer state per method.
    Info(InfoArgs),
}

/// Arguments of `gems model logits`.
#[derive(Debug, Args)]
pub struct LogitsArgs {
    /// Hugging Face model directory (config.json and model.safetensors or its sharded index),
    /// or a Hub id (`t5-small`, `Qwen/Qwen2.5-0.5B-Instruct`) resolved through the Hub cache.
    #[arg(long)]
    model_dir: PathBuf,
    /// Token ids of the input (the encoder input for T5), comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    input_ids: Vec<i64>,
    /// T5 only: decoder input ids, comma-separated (default: the decoder start token alone).
    #[arg(long, value_delimiter = ',')]
    decoder_input_ids: Option<Vec<i64>>,
    /// Compute backend.
    #[arg(long, default_value = "flex")]
    backend: String,
}

/// Arguments of `gems model info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Hugging Face model directory or Hub id (only `config.json` is read).
    #[arg(long, conflicts_with = "model_config")]
    model_dir: Option<PathBuf>,
    /// A `config.json` (default: the compact from-scratch T5 of `gems train`).
    #[arg(long)]
    model_config: Option<PathBuf>,
    /// Vocabulary of the default compact T5.
    #[arg(long, default_value_t = 2000)]
    vocab_size: usize,
    /// Shared rank r_s (also the LoRA rank); default d_model / 4, at most 128.
    #[arg(long)]
    shared_rank: Option<usize>,
    /// Task rank r_t; default r_s / 2.
    #[arg(long)]
    task_rank: Option<usize>,
    /// Number of tasks.
    #[arg(long, default_value_t = 2)]
    tasks: usize,
    /// Requests per micro-batch, for the memory estimate.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Longest prompt in tokens, for the memory estimate.
    #[arg(long, default_value_t = 128)]
    prompt_tokens: usize,
    /// Longest target in tokens, for the memory estimate.
    #[arg(long, default_value_t = 8)]
    target_tokens: usize,
    /// Tokens a fine-tune adds to the model's vocabulary (item identifiers; `gems train` adds
    /// one per item with atomic identifiers).
    #[arg(long, default_value_t = 0)]
    new_tokens: usize,
    /// Vocabulary rows trained, as `gems train --train-vocabulary`: `new` (of a pre-trained
    /// `--model-dir`, the added tokens only) or `all`.
    #[arg(long, value_enum, default_value = "new")]
    train_vocabulary: VocabularyTraining,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

impl ModelCommand {
    /// Runs the command, printing its result on standard output.
    pub fn run(self) -> Result<()> {
        match self {
            Self::Logits(args) => println!("{}", logits(&args)?),
            Self::Info(args) => info(&args)?,
        }
        Ok(())
    }
}

fn row(ids: &[i64], device: &Device) -> Tensor<2, Int> {
    Tensor::from_data(TensorData::new(ids.to_vec(), [1, ids.len()]), device)
}

/// What `gems model info` reports.
#[derive(Serialize)]
struct Info {
    architecture: String,
    hidden_size: usize,
    vocab_size: usize,
    parameters: usize,
    projected_matrices: Vec<(String, Vec<usize>)>,
    projected_parameters: usize,
    /// The ranks each projected matrix gets under GEMS (no knowledge basis: none is computed
    /// here; `gems train` reports them with the knowledge bases in its manifest).
    effective_ranks: BTreeMap<String, EffectiveRanks>,
    /// The frozen parameters: the pre-trained rows of the vocabulary matrices, when only the
    /// new tokens' rows are trained (those rows are then parameters `….added`).
    frozen_parameters: Vec<String>,
    /// Float32 bytes of optimizer state per method (knowledge bases not included).
    optimizer_state_bytes: Vec<(String, u64)>,
    /// Expected memory of training per method at the batch shape given; knowledge bases at
    /// their upper bound (every input direction of every projected matrix).
    memory: Vec<(String, MemoryEstimate)>,
}

fn info(args: &InfoArgs) -> Result<()> {
    let directory = args
        .model_dir
        .as_deref()
        .map(crate::hub::model_directory)
        .transpose()?;
    let mut config = match (&directory, &args.model_config) {
        (Some(directory), _) => ModelConfig::from_file(directory.join(gems_models::CONFIG_FILE))?,
        (None, Some(path)) => ModelConfig::from_file(path)?,
        (None, None) => ModelConfig::T5(T5Config::compact(args.vocab_size)),
    };
    if args.shared_rank == Some(0) || args.task_rank == Some(0) || args.tasks == 0 {
        return Err(CliError::Settings(
            "--shared-rank, --task-rank and --tasks must be at least 1".into(),
        ));
    }
    // The vocabulary after the fine-tune's tokens are added, as `gems train` adds them: after
    // the pre-trained tokenizer's tokens, taking first any rows the config reserves beyond them
    // (Qwen2.5's vocabulary is padded); with a pre-trained model, those are the new tokens
    // whose rows `--train-vocabulary new` trains.
    let tokenizer = directory
        .as_ref()
        .map(|d| d.join(crate::run_dir::TOKENIZER))
        .filter(|path| path.is_file());
    let pretrained_tokens = match tokenizer {
        Some(path) => gems_models::load_tokenizer(path)?.get_vocab_size(true),
        None => config.vocab_size(),
    };
    let vocab_size = pretrained_tokens
        .checked_add(args.new_tokens)
        .ok_or_else(|| CliError::Settings("--new-tokens is too large".into()))?
        .max(config.vocab_size());
    match &mut config {
        ModelConfig::T5(config) => config.vocab_size = vocab_size,
        ModelConfig::Qwen2(config) => config.vocab_size = vocab_size,
    }
    // Shapes only: a model on the CPU whose parameters are never initialised (Burn does so
    // lazily), so that any size can be described.
    let model = crate::vocabulary::train_rows(
        args.train_vocabulary,
        Backbone::new(&config, &Device::flex())?,
        directory.as_ref().map(|_| pretrained_tokens),
    )?;
    let overflow = || {
        CliError::Settings(
            "the sizes overflow 64-bit arithmetic (more than 2^64 values); choose smaller sizes"
                .into(),
        )
    };
    let parameters = crate::memory::parameter_count(&model).ok_or_else(overflow)?;
    let d_model = config.hidden_size();
    let shared_rank = args
        .shared_rank
        .unwrap_or_else(|| crate::settings::default_shared_rank(d_model));
    let optimizer = |method| {
        let optimizer = GemsConfig {
            method,
            shared_rank,
            task_rank: args.task_rank,
            ..GemsConfig::default()
        }
        .init()?;
        Ok::<_, gems_core::GemsError>(crate::vocabulary::restrict(optimizer, &model))
    };
    let gems = optimizer(Method::Gems)?;
    let plan = gems.plan(&model, args.tasks);
    let projected: Vec<(String, Vec<usize>)> = plan
        .iter()
        .filter(|p| p.treatment == Treatment::Projected)
        .map(|p| (p.path.clone(), p.shape.clone()))
        .collect();
    // The most the knowledge bases can hold: every input direction of every projected matrix
    // (Burn layout `[d_in, d_out]`).
    let knowledge_bound: u64 = projected
        .iter()
        .try_fold(0u64, |sum, (_, s)| {
            sum.checked_add((s[0] as u64).checked_mul(s[0] as u64)?.checked_mul(4)?)
        })
        .ok_or_else(overflow)?;
    // Every estimate below counts in 64 bits: refuse sizes whose LoRA adapters (the largest
    // rank-proportional state) or optimizer state would overflow that.
    let shapes: Vec<[usize; 2]> = projected.iter().map(|(_, s)| [s[0], s[1]]).collect();
    crate::memory::lora_bytes(shared_rank, &shapes).ok_or_else(overflow)?;
    for method in Method::ALL {
        optimizer(method)?
            .plan(&model, args.tasks)
            .iter()
            .try_fold(0u64, |sum, p| sum.checked_add(p.state_bytes as u64))
            .ok_or_else(overflow)?;
    }
    let batch = BatchShape {
        batch_size: args.batch_size,
        prompt_tokens: args.prompt_tokens,
        target_tokens: args.target_tokens,
    };
    let mut estimates = Vec::new();
    for method in TrainMethod::ALL {
        let core = match method {
            TrainMethod::Optimizer(method) => method,
            TrainMethod::Lora => Method::Adamw,
        };
        // As `gems train` on one device: every task's gradients condensed.
        let mut estimate =
            memory::estimate(&model, method, &optimizer(core)?, args.tasks, batch, true);
        if method.needs_null_space() {
            estimate.knowledge_bases = knowledge_bound;
        }
        estimates.push((method.name().to_string(), estimate));
    }
    let state = estimates
        .iter()
        .map(|(method, estimate)| (method.clone(), estimate.optimizer_state))
        .collect();
    let info = Info {
        architecture: format!("{:?}", config.kind()),
        hidden_size: d_model,
        vocab_size: config.vocab_size(),
        parameters: usize::try_from(parameters).map_err(|_| overflow())?,
        projected_parameters: projected
            .iter()
            .try_fold(0usize, |sum, (_, s)| {
                sum.checked_add(s.iter().try_fold(1usize, |n, &d| n.checked_mul(d))?)
            })
            .ok_or_else(overflow)?,
        projected_matrices: projected,
        effective_ranks: gems
            .effective_ranks(&model, args.tasks)
            .into_iter()
            .collect(),
        frozen_parameters: model.frozen_parameters(),
        optimizer_state_bytes: state,
        memory: estimates,
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&info).expect("info serialises")
        );
        return Ok(());
    }
    println!(
        "{} (hidden size {}, vocabulary {}): {} parameters, {} of them in {} projected matrices",
        info.architecture,
        info.hidden_size,
        info.vocab_size,
        info.parameters,
        info.projected_parameters,
        info.projected_matrices.len()
    );
    for (path, shape) in &info.projected_matrices {
        let ranks = &info.effective_ranks[path];
        println!(
            "  {path:<60} {shape:?}  r_s = {}, r_t = {}",
            ranks.shared, ranks.task
        );
    }
    let adamw = info
        .optimizer_state_bytes
        .iter()
        .find(|(m, _)| m == "adamw")
        .map_or(1, |(_, b)| *b);
    if let Some(first) = model.first_added_token() {
        for path in &info.frozen_parameters {
            println!(
                "  {path:<60} frozen (the pre-trained tokens 0..{first}; the rows of the new \
                 tokens are trained apart)"
            );
        }
    }
    println!(
        "optimizer state (float32; r_s = {shared_rank}, {} tasks; knowledge bases not included):",
        args.tasks
    );
    for (method, bytes) in &info.optimizer_state_bytes {
        println!(
            "  {method:<12} {:>10.2} MB  {:>6.1}% of AdamW",
            *bytes as f64 / 1e6,
            100.0 * *bytes as f64 / adamw as f64
        );
    }
    println!(
        "expected training memory (batch size {}, prompts of {} and targets of {} tokens; \
         knowledge bases at most):",
        args.batch_size, args.prompt_tokens, args.target_tokens
    );
    println!(
        "  {:<12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "method", "weights", "state", "grads", "activ.", "knowl. ≤", "total"
    );
    for (method, estimate) in &info.memory {
        println!(
            "  {method:<12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            human_bytes(estimate.weights),
            human_bytes(estimate.optimizer_state),
            human_bytes(estimate.gradients),
            human_bytes(estimate.activations),
            human_bytes(estimate.knowledge_bases),
            human_bytes(estimate.total())
        );
    }
    Ok(())
}

/// Refuses token ids outside the vocabulary `0..vocabulary` (and an empty list).
fn check_ids(flag: &str, ids: &[i64], vocabulary: usize) -> Result<()> {
    if ids.is_empty() {
        return Err(CliError::Settings(format!("{flag}: no token id given")));
    }
    match ids
        .iter()
        .find(|&&id| usize::try_from(id).map_or(true, |id| id >= vocabulary))
    {
        Some(id) => Err(CliError::Settings(format!(
            "{flag}: token id {id} is outside the model's vocabulary (0 to {})",
            vocabulary - 1
        ))),
        None => Ok(()),
    }
}

/// The logits of `args` as the JSON the command prints.
fn logits(args: &LogitsArgs) -> Result<Value> {
    let device = gems_core::device_from_name(&args.backend)?;
    let model =
        crate::memory::load_backbone(&crate::hub::model_directory(&args.model_dir)?, &device)?;
    let vocabulary = model.vocab_size();
    check_ids("--input-ids", &args.input_ids, vocabulary)?;
    if let Some(ids) = &args.decoder_input_ids {
        check_ids("--decoder-input-ids", ids, vocabulary)?;
    }
    let input = row(&args.input_ids, &device);
    let mask = Tensor::ones([1, args.input_ids.len()], &device);
    let logits = match (&model, &args.decoder_input_ids) {
        (Backbone::T5(t5), decoder) => {
            let start = [t5.config().decoder_start_token_id as i64];
            let decoder = decoder.as_deref().unwrap_or(&start);
            t5.forward(input, mask, row(decoder, &device))
        }
        (Backbone::Qwen2(qwen2), None) => qwen2.forward(input, mask),
        (Backbone::Qwen2(_), Some(_)) => {
            return Err(CliError::Settings(
                "--decoder-input-ids applies to T5 only; Qwen2 is decoder-only".into(),
            ));
        }
    };
    let shape = logits.dims().to_vec();
    let values: Vec<f32> = logits.into_data().iter::<f32>().collect();
    Ok(json!({ "shape": shape, "logits": values }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../gems-models/tests/fixtures")
            .join(name)
    }

    fn args(name: &str, input_ids: &[i64], decoder_input_ids: Option<&[i64]>) -> LogitsArgs {
        LogitsArgs {
            model_dir: fixture(name),
            input_ids: input_ids.to_vec(),
            decoder_input_ids: decoder_input_ids.map(<[i64]>::to_vec),
            backend: "flex".into(),
        }
    }

    /// The first row of the fixture's reference batch, which has no padding.
    fn reference(name: &str) -> Value {
        let text = std::fs::read_to_string(fixture(name).join("reference.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn max_error(output: &Value, expected: &[f32]) -> f32 {
        let found: Vec<f32> = serde_json::from_value(output["logits"].clone()).unwrap();
        assert_eq!(found.len(), expected.len());
        found
            .iter()
            .zip(expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max)
    }

    fn flat(value: &Value) -> Vec<f32> {
        serde_json::from_value::<Vec<Vec<f32>>>(value.clone())
            .unwrap()
            .concat()
    }

    #[test]
    fn prints_transformers_logits_for_t5_and_qwen2() {
        let t5 = reference("t5-v1_0");
        let input: Vec<i64> = serde_json::from_value(t5["input_ids"][0].clone()).unwrap();
        // Decoder input: the start token, then the first two labels (HF `_shift_right`).
        let labels: Vec<i64> = serde_json::from_value(t5["labels"][0].clone()).unwrap();
        let output = logits(&args("t5-v1_0", &input, Some(&[0, labels[0], labels[1]]))).unwrap();
        assert_eq!(output["shape"], json!([1, 3, 96]));
        let expected: Vec<f32> = flat(&t5["logits"][0]).into_iter().take(3 * 96).collect();
        assert!(max_error(&output, &expected) < 1e-4);
        // Without decoder ids: the start token alone, the first greedy step.
        let output = logits(&args("t5-v1_0", &input, None)).unwrap();
        assert!(
            max_error(
                &output,
                &serde_json::from_value::<Vec<f32>>(t5["greedy"]["logits"][0][0].clone()).unwrap()
            ) < 1e-4
        );

        let qwen2 = reference("qwen2-tied");
        let input: Vec<i64> = serde_json::from_value(qwen2["input_ids"][0].clone()).unwrap();
        let output = logits(&args("qwen2-tied", &input, None)).unwrap();
        assert_eq!(output["shape"], json!([1, 7, 96]));
        assert!(max_error(&output, &flat(&qwen2["logits"][0])) < 1e-4);
    }

    #[test]
    fn refuses_what_it_cannot_do() {
        let mut unknown = args("t5-v1_0", &[5, 1], None);
        unknown.backend = "tpu".into();
        assert!(logits(&unknown).unwrap_err().to_string().contains("`tpu`"));
        let error = logits(&args("qwen2-tied", &[5, 1], Some(&[0]))).unwrap_err();
        assert!(error.to_string().contains("T5 only"));
        let error = logits(&args("missing", &[5, 1], None)).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("missing: no such model directory")
        );
    }
}
