//! Training settings: one flat set of keys, read from a TOML file (`--config`) and overridden
//! by command-line flags of the same names.
//!
//! `TrainArgs` (flags, all optional) and `TrainSettings` (resolved, with defaults) share their
//! field names; merging goes through TOML tables, so a key is written once per struct and never
//! copied by hand.

use std::path::{Path, PathBuf};

use clap::Args;
use gems_core::{GateConfig, GemsConfig, Method, MomentTransfer, SvdMethod};
use gems_models::{DEFAULT_BEAM_WIDTH, ModelKind};
use serde::{Deserialize, Serialize};

use crate::error::{CliError, Result};

/// How the projected weights are trained: an optimizer method of gems-core, or LoRA adapters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum TrainMethod {
    /// One of gems-core's methods (gems, galore, adamw, gems-no-msd, gems-no-nsp).
    Optimizer(Method),
    /// LoRA adapters on the projected matrices, trained with AdamW and merged on save.
    Lora,
}

impl TrainMethod {
    /// Every method, in the order of the paper's tables.
    pub const ALL: [TrainMethod; 6] = [
        TrainMethod::Optimizer(Method::Gems),
        TrainMethod::Optimizer(Method::Galore),
        TrainMethod::Lora,
        TrainMethod::Optimizer(Method::Adamw),
        TrainMethod::Optimizer(Method::GemsNoMsd),
        TrainMethod::Optimizer(Method::GemsNoNsp),
    ];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            TrainMethod::Optimizer(method) => method.name(),
            TrainMethod::Lora => "lora",
        }
    }

    /// Whether knowledge bases must be collected before training.
    pub fn needs_null_space(self) -> bool {
        matches!(self, TrainMethod::Optimizer(m) if m.null_space())
    }

    /// The training settings (their keys) that change nothing under this method: the ranks,
    /// refresh and scale of low-rank updates under AdamW, the task subspaces and their gate
    /// without task subspaces, the knowledge energy without null-space projection. (How a run
    /// is carried out, such as the knowledge cache, is not counted.)
    pub fn inert_settings(self) -> Vec<&'static str> {
        let (low_rank, refreshes, task_subspaces) = match self {
            TrainMethod::Lora => (true, false, false),
            TrainMethod::Optimizer(m) => (m.low_rank(), m.low_rank(), m.multi_subspace()),
        };
        let mut inert = Vec::new();
        if !low_rank {
            inert.extend(["shared_rank", "scale"]);
        }
        if !refreshes {
            inert.push("refresh_every");
        }
        if !task_subspaces {
            inert.extend(["task_rank", "gate_weights", "fixed_gate"]);
        }
        if !self.needs_null_space() {
            inert.push("knowledge_energy");
        }
        inert
    }
}

impl std::fmt::Display for TrainMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for TrainMethod {
    type Err = String;

    fn from_str(name: &str) -> std::result::Result<Self, String> {
        if name == "lora" {
            return Ok(TrainMethod::Lora);
        }
        name.parse::<Method>()
            .map(TrainMethod::Optimizer)
            .map_err(|_| {
                let known: Vec<&str> = TrainMethod::ALL.iter().map(|m| m.name()).collect();
                format!("unknown method `{name}`; known: {}", known.join(", "))
            })
    }
}

impl TryFrom<String> for TrainMethod {
    type Error = String;
    fn try_from(name: String) -> std::result::Result<Self, String> {
        name.parse()
    }
}

impl From<TrainMethod> for String {
    fn from(method: TrainMethod) -> String {
        method.name().to_string()
    }
}

/// Item identifier scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum IdScheme {
    /// One new token per item (`<item_N>`).
    Atomic,
    /// Hierarchical k-means codes over item embeddings (the pre-trained backbone's own with
    /// `--model-dir`, else hashed TF-IDF of the item text), plus a collision suffix.
    Semantic,
    /// The item title.
    Title,
}

/// Which tokens' entries of the vocabulary matrices (token embedding, untied output head) are
/// trained; see `crate::vocabulary`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum VocabularyTraining {
    /// The tokens the run adds to a pre-trained model (item identifiers), the pre-trained
    /// tokens frozen; every token of a model trained from scratch.
    New,
    /// Every token.
    All,
}

/// Learning-rate schedule after warm-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// Cosine decay to zero at the last step.
    Cosine,
    /// Constant after warm-up.
    Constant,
}

/// Every setting of a training run, with its default. Keys are the same in the TOML file
/// (`--config`) and on the command line (`--learning-rate` ↔ `learning_rate`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainSettings {
    /// `synthetic` (the embedded default) or a data directory in the unified format.
    pub data: String,
    /// Backbone family (`t5` or `qwen2`).
    pub model: ModelKind,
    /// Hugging Face model directory with pre-trained weights and tokenizer (a Hub id given on
    /// the command line is stored as its local snapshot).
    pub model_dir: Option<PathBuf>,
    /// HF `config.json` of a model trained from scratch.
    pub model_config: Option<PathBuf>,
    /// Training method.
    pub method: TrainMethod,
    /// Item identifier scheme.
    pub id_scheme: IdScheme,
    /// History items in a prompt (the most recent ones).
    pub max_history: usize,
    /// Which tokens' rows of the vocabulary matrices are trained (every method alike).
    pub train_vocabulary: VocabularyTraining,
    /// Shared subspace rank r_s (or LoRA rank for `lora`); default: d_model / 4, at most 128.
    pub shared_rank: Option<usize>,
    /// Task subspace rank r_t; default r_s / 2.
    pub task_rank: Option<usize>,
    /// Steps between basis refreshes (T).
    pub refresh_every: u64,
    /// Scale of low-rank updates (GaLore's α); for LoRA, alpha / rank.
    pub scale: f64,
    /// Adaptive gate weights [α (loss), β (gradient norm), γ (samples)].
    pub gate_weights: Vec<f64>,
    /// Fixed per-task gate [search, rec] instead of the adaptive one.
    pub fixed_gate: Option<Vec<f64>>,
    /// Fraction of the input covariance energy the knowledge bases keep.
    pub knowledge_energy: f64,
    /// Text files of general-domain text for the null-space statistics (default: a short
    /// embedded English corpus).
    pub general_corpus: Vec<PathBuf>,
    /// Tokens (whitespace-separated words) read from the general corpus at most; all when unset.
    pub general_corpus_tokens: Option<usize>,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Warm-up steps (linear from 0).
    pub warmup_steps: u64,
    /// Schedule after warm-up.
    pub schedule: Schedule,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Requests per micro-batch (both tasks mixed).
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub gradient_accumulation: usize,
    /// Passes over the training requests.
    pub epochs: usize,
    /// Stop after this many optimizer steps (0: no limit).
    pub max_steps: u64,
    /// Stop when validation NDCG@10 has not improved for this many evaluations (0: never).
    pub early_stopping_patience: usize,
    /// Validation requests per task used for early stopping (0: all).
    pub validation_requests: usize,
    /// Beam width of constrained decoding.
    pub beam_width: usize,
    /// Compute backend.
    pub backend: String,
    /// Seed of everything random.
    pub seed: u64,
    /// Save a checkpoint every this many optimizer steps (0: only at the end of each epoch).
    pub checkpoint_every: u64,
    /// Folder of cached knowledge bases (default: `knowledge-cache/` in the user's cache
    /// directory, `$XDG_CACHE_HOME/gems-rs` or `~/.cache/gems-rs` on Linux).
    pub knowledge_cache: Option<PathBuf>,
    /// Compute knowledge bases every time, without reading or writing the cache.
    pub no_knowledge_cache: bool,
    /// Memory, in bytes, the run may use (default: `MemAvailable` of `/proc/meminfo`).
    pub memory_limit: Option<u64>,
    /// Start even when the memory estimate exceeds the memory available.
    pub ignore_memory_estimate: bool,
    /// Hold every task's full gradients until the step, instead of cutting each task's
    /// gradients of the projected weights to low-rank coordinates after its backward pass
    /// (gems-core's `condense`, from factors the backward pass leaves where a layer sees few
    /// tokens): one more copy of the trained parameters' gradients, and a dearer step where
    /// factors would have been used; otherwise one product with the shared basis less per task.
    pub full_task_gradients: bool,
    /// Stop after this many consecutive steps skipped for a non-finite loss or gradient.
    pub max_consecutive_skips: usize,
}

impl Default for TrainSettings {
    fn default() -> Self {
        Self {
            data: "synthetic".into(),
            model: ModelKind::T5,
            model_dir: None,
            model_config: None,
            method: TrainMethod::Optimizer(Method::Gems),
            id_scheme: IdScheme::Atomic,
            max_history: 10,
            train_vocabulary: VocabularyTraining::New,
            shared_rank: None,
            task_rank: None,
            refresh_every: 200,
            scale: 0.25,
            gate_weights: vec![0.4, 0.4, 0.2],
            fixed_gate: None,
            knowledge_energy: 0.99,
            general_corpus: Vec::new(),
            general_corpus_tokens: None,
            learning_rate: 6e-3,
            warmup_steps: 20,
            schedule: Schedule::Cosine,
            weight_decay: 0.0,
            batch_size: 32,
            gradient_accumulation: 1,
            epochs: 8,
            max_steps: 0,
            early_stopping_patience: 0,
            validation_requests: 200,
            beam_width: DEFAULT_BEAM_WIDTH,
            backend: "flex".into(),
            seed: 42,
            checkpoint_every: 0,
            knowledge_cache: None,
            no_knowledge_cache: false,
            memory_limit: None,
            ignore_memory_estimate: false,
            full_task_gradients: false,
            max_consecutive_skips: 10,
        }
    }
}

/// The default shared rank r_s (and LoRA rank) of a backbone of width `d_model`: d_model / 4,
/// between 1 and 128.
pub fn default_shared_rank(d_model: usize) -> usize {
    (d_model / 4).clamp(1, 128)
}

/// Command-line flags for every training setting; a flag given overrides the config file.
#[derive(Args, Debug, Default, Serialize)]
pub struct TrainArgs {
    /// TOML file with any of the settings below (flags override it).
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// `synthetic` (embedded default) or a data directory in the unified format.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// Backbone family: t5 or qwen2.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelKind>,
    /// Hugging Face model directory (pre-trained weights, config, tokenizer), or a Hub id
    /// (`t5-small`, `google/flan-t5-base`) downloaded once into the Hub cache.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_dir: Option<PathBuf>,
    /// HF config.json of a model trained from scratch.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_config: Option<PathBuf>,
    /// gems, galore, lora, adamw, gems-no-msd or gems-no-nsp.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<TrainMethod>,
    /// Item identifier scheme.
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_scheme: Option<IdScheme>,
    /// History items in a prompt.
    #[arg(long, value_parser = toml_integer::<usize>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_history: Option<usize>,
    /// Vocabulary rows trained: `new` (default; the tokens added to a pre-trained model, the
    /// pre-trained ones frozen; all tokens from scratch) or `all`.
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_vocabulary: Option<VocabularyTraining>,
    /// Shared subspace rank r_s (LoRA rank for `lora`).
    #[arg(long, value_parser = toml_integer::<usize>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_rank: Option<usize>,
    /// Task subspace rank r_t.
    #[arg(long, value_parser = toml_integer::<usize>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_rank: Option<usize>,
    /// Steps between basis refreshes.
    #[arg(long, value_parser = toml_integer::<u64>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_every: Option<u64>,
    /// Scale of low-rank updates.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale: Option<f64>,
    /// Adaptive gate weights α,β,γ (loss, gradient norm, samples): `0.4,0.4,0.2` or
    /// `0.4 0.4 0.2`.
    #[arg(long, value_delimiter = ',', num_args = 1..=3)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate_weights: Option<Vec<f64>>,
    /// Fixed gate per task: `search,rec` or `search rec`.
    #[arg(long, value_delimiter = ',', num_args = 1..=2)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed_gate: Option<Vec<f64>>,
    /// Fraction of input covariance energy kept by the knowledge bases.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub knowledge_energy: Option<f64>,
    /// General-domain text for the null-space statistics: text files (a paragraph per line),
    /// JSONL files with a `text` field, or directories of both.
    #[arg(long, num_args = 1..)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub general_corpus: Option<Vec<PathBuf>>,
    /// Read at most this many tokens (whitespace-separated words) of the general corpus.
    #[arg(long, value_parser = toml_integer::<usize>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub general_corpus_tokens: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub learning_rate: Option<f64>,
    /// Warm-up steps.
    #[arg(long, value_parser = toml_integer::<u64>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warmup_steps: Option<u64>,
    /// Schedule after warm-up.
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    /// Decoupled weight decay.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
    /// Requests per micro-batch.
    #[arg(long, value_parser = toml_integer::<usize>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    /// Micro-batches per optimizer step.
    #[arg(long, value_parser = toml_integer::<usize>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gradient_accumulation: Option<usize>,
    /// Passes over the training requests.
    #[arg(long, value_parser = toml_integer::<usize>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epochs: Option<usize>,
    /// Stop after this many optimizer steps.
    #[arg(long, value_parser = toml_integer::<u64>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<u64>,
    /// Early-stopping patience in evaluations (0: never stop early).
    #[arg(long, value_parser = toml_integer::<usize>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub early_stopping_patience: Option<usize>,
    /// Validation requests per task for early stopping (0: all).
    #[arg(long, value_parser = toml_integer::<usize>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation_requests: Option<usize>,
    /// Beam width of constrained decoding.
    #[arg(long, value_parser = toml_integer::<usize>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beam_width: Option<usize>,
    /// Compute backend (`flex`, and `wgpu`, `vulkan`, `cuda`, `ndarray` where compiled in).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// Seed of everything random.
    #[arg(long, value_parser = toml_integer::<u64>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Checkpoint every this many steps (0: end of each epoch only).
    #[arg(long, value_parser = toml_integer::<u64>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_every: Option<u64>,
    /// Folder of cached knowledge bases (default: knowledge-cache/ in the user cache directory).
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub knowledge_cache: Option<PathBuf>,
    /// Neither read nor write cached knowledge bases.
    #[arg(long, conflicts_with = "knowledge_cache")]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub no_knowledge_cache: bool,
    /// Memory in bytes the run may use (default: MemAvailable of /proc/meminfo).
    #[arg(long, value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<u64>,
    /// Start even when the memory estimate exceeds the memory available.
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ignore_memory_estimate: bool,
    /// Hold every task's full gradients until the step (faster optimizer step, more memory)
    /// instead of cutting them to low-rank coordinates after each task's backward pass.
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub full_task_gradients: bool,
    /// Stop after this many consecutive steps skipped for a non-finite loss or gradient.
    #[arg(long, value_parser = toml_integer::<usize>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_consecutive_skips: Option<usize>,
}

/// Parses a whole number that a TOML file can hold (at most 2^63 - 1), as settings files and
/// `config.toml` of a run hold every setting.
fn toml_integer<T: TryFrom<u64>>(text: &str) -> std::result::Result<T, String> {
    let value: u64 = text
        .trim()
        .parse()
        .map_err(|_| format!("expected a whole number of at least 0, got {text:?}"))?;
    if value > i64::MAX as u64 {
        return Err(format!(
            "{value} is too large: at most {} (the largest integer a TOML settings file holds)",
            i64::MAX
        ));
    }
    T::try_from(value).map_err(|_| format!("{value} is too large for this machine"))
}

impl TrainArgs {
    /// The flags given, as a TOML table of settings.
    pub fn flags(&self) -> Result<toml::Table> {
        toml::Table::try_from(self)
            .map_err(|e| CliError::Settings(format!("the command-line flags: {e}")))
    }

    /// The flags given that change nothing under `method` ([`TrainMethod::inert_settings`]),
    /// as written on the command line (`--shared-rank`).
    pub fn inert_flags(&self, method: TrainMethod) -> Result<Vec<String>> {
        let given = self.flags()?;
        Ok(method
            .inert_settings()
            .into_iter()
            .filter(|key| given.contains_key(*key))
            .map(|key| format!("--{}", key.replace('_', "-")))
            .collect())
    }

    /// The settings: defaults, then the config file, then the flags given.
    pub fn resolve(&self) -> Result<TrainSettings> {
        let mut table = match &self.config {
            Some(path) => read_table(path)?,
            None => toml::Table::new(),
        };
        table.extend(self.flags()?);
        let source = self.config.as_ref().map_or_else(
            || "command-line flags".to_string(),
            |p| p.display().to_string(),
        );
        let mut settings: TrainSettings =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| {
                    CliError::Settings(format!("{source}: {}", e.message()))
                })?;
        settings.validate().map_err(|error| match error {
            CliError::Settings(message) => CliError::Settings(format!("{source}: {message}")),
            other => other,
        })?;
        if let Some(directory) = &settings.model_dir {
            settings.model_dir = Some(crate::hub::model_directory(directory)?);
        }
        Ok(settings)
    }
}

/// The file's table, after checking that the file alone is a valid set of settings, so that
/// any error names its line and key.
fn read_table(path: &Path) -> Result<toml::Table> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::io(path, "cannot read the config file", e))?;
    let located = |e: toml::de::Error| {
        let Some(span) = e.span() else {
            return CliError::Settings(format!("{}: {}", path.display(), e.message()));
        };
        let line_start = text[..span.start].rfind('\n').map_or(0, |i| i + 1);
        let line_text = text[line_start..].lines().next().unwrap_or_default().trim();
        let line = text[..line_start].lines().count() + 1;
        CliError::Settings(format!(
            "{}:{line}: `{line_text}`: {}",
            path.display(),
            e.message()
        ))
    };
    toml::from_str::<TrainSettings>(&text).map_err(located)?;
    text.parse::<toml::Table>().map_err(located)
}

impl TrainSettings {
    /// Checks values a run would otherwise fail on late (sizes that depend on the model, such as
    /// the memory of LoRA adapters, are checked once the model is built).
    pub fn validate(&self) -> Result<()> {
        let fail = |message: String| Err(CliError::Settings(message));
        if self.batch_size == 0 || self.gradient_accumulation == 0 || self.epochs == 0 {
            return fail("batch_size, gradient_accumulation and epochs must be at least 1".into());
        }
        if self
            .batch_size
            .checked_mul(self.gradient_accumulation)
            .is_none()
        {
            return fail(format!(
                "batch_size × gradient_accumulation ({} × {}) is beyond any machine's memory",
                self.batch_size, self.gradient_accumulation
            ));
        }
        if self.shared_rank == Some(0) {
            return fail(format!(
                "shared_rank ({}) must be at least 1",
                if self.method == TrainMethod::Lora {
                    "the LoRA rank"
                } else {
                    "r_s"
                }
            ));
        }
        if self.task_rank == Some(0) {
            return fail(
                "task_rank (r_t) must be at least 1; gems-no-msd trains without task subspaces"
                    .into(),
            );
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return fail(format!(
                "learning_rate must be positive, got {}",
                self.learning_rate
            ));
        }
        if self.gate_weights.len() != 3 {
            return fail(format!(
                "gate_weights takes 3 values (α, β, γ), got {:?}",
                self.gate_weights
            ));
        }
        if self.fixed_gate.as_ref().is_some_and(|g| g.len() != 2) {
            return fail("fixed_gate takes 2 values (search, rec)".into());
        }
        if self.max_consecutive_skips == 0 {
            return fail("max_consecutive_skips must be at least 1".into());
        }
        if self.general_corpus_tokens == Some(0) {
            return fail("general_corpus_tokens must be at least 1".into());
        }
        if self.beam_width == 0 {
            return fail("beam_width must be at least 1".into());
        }
        if self.model_dir.is_some() && self.model_config.is_some() {
            return fail(
                "give either model_dir (pre-trained) or model_config (from scratch), not both"
                    .into(),
            );
        }
        // As settings errors, so that they name the file (or flags) the values came from.
        let named = |error: gems_core::GemsError| CliError::Settings(error.to_string());
        gems_core::device_from_name(&self.backend).map_err(named)?;
        // The width, hence the default rank, is known once the model is built; any default rank
        // is at least 1, so a rank of 1 stands for it here: everything else does not depend on it.
        self.gems_config(self.shared_rank.unwrap_or(1))
            .validate()
            .map_err(named)?;
        Ok(())
    }

    /// The optimizer configuration for a backbone of width `d_model`.
    pub fn optimizer_config(&self, d_model: usize) -> GemsConfig {
        self.gems_config(self.shared_rank(d_model))
    }

    fn gems_config(&self, shared_rank: usize) -> GemsConfig {
        let method = match self.method {
            TrainMethod::Optimizer(method) => method,
            // LoRA trains its adapters (and nothing else) with AdamW.
            TrainMethod::Lora => Method::Adamw,
        };
        GemsConfig {
            method,
            shared_rank,
            task_rank: self.task_rank,
            refresh_every: self.refresh_every,
            scale: self.scale,
            weight_decay: self.weight_decay,
            moment_transfer: MomentTransfer::Rotate,
            svd: SvdMethod::default(),
            gate: match &self.fixed_gate {
                Some(weights) => GateConfig::Fixed {
                    weights: weights.clone(),
                },
                None => GateConfig::Adaptive {
                    loss_weight: self.gate_weights[0],
                    grad_norm_weight: self.gate_weights[1],
                    sample_weight: self.gate_weights[2],
                },
            },
            knowledge: gems_core::KnowledgeSelection::EnergyFraction {
                fraction: self.knowledge_energy,
            },
            seed: self.seed,
            ..GemsConfig::default()
        }
    }

    /// r_s (or the LoRA rank): the setting, or [`default_shared_rank`].
    pub fn shared_rank(&self, d_model: usize) -> usize {
        self.shared_rank
            .unwrap_or_else(|| default_shared_rank(d_model))
    }

    /// The settings with every path made absolute against the working directory, so that a
    /// run's `config.toml` names the same files wherever the run is later resumed or read.
    pub fn with_absolute_paths(mut self) -> Result<Self> {
        let absolute = |path: &Path| {
            std::path::absolute(path).map_err(|e| CliError::io(path, "cannot resolve the path", e))
        };
        if self.data != "synthetic" {
            self.data = absolute(Path::new(&self.data))?.display().to_string();
        }
        for path in [
            &mut self.model_dir,
            &mut self.model_config,
            &mut self.knowledge_cache,
        ]
        .into_iter()
        .flatten()
        {
            *path = absolute(path)?;
        }
        for path in &mut self.general_corpus {
            *path = absolute(path)?;
        }
        Ok(self)
    }

    /// The settings as a TOML document (what `config.toml` of a run holds).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("settings serialise to TOML")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(flags: &[&str]) -> std::result::Result<TrainArgs, String> {
        crate::parse_args(flags)
    }

    #[test]
    fn gate_flags_take_commas_or_spaces() {
        for flags in [
            &["--gate-weights", "0.5,0.3,0.2", "--fixed-gate", "0.6,0.4"][..],
            &[
                "--gate-weights",
                "0.5",
                "0.3",
                "0.2",
                "--fixed-gate",
                "0.6",
                "0.4",
            ],
        ] {
            let settings = parse(flags).unwrap().resolve().unwrap();
            assert_eq!(settings.gate_weights, [0.5, 0.3, 0.2], "{flags:?}");
            assert_eq!(settings.fixed_gate, Some(vec![0.6, 0.4]), "{flags:?}");
        }
        let error = parse(&["--gate-weights", "0.5,0.5"])
            .unwrap()
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(error.contains("gate_weights takes 3 values"), "{error}");
        let four = parse(&["--gate-weights", "0.1,0.1,0.1,0.1"])
            .unwrap()
            .resolve();
        assert!(four.unwrap_err().to_string().contains("takes 3 values"));
    }

    #[test]
    fn integers_beyond_what_toml_holds_are_refused_at_parse_time() {
        for flag in [
            "--seed",
            "--max-steps",
            "--epochs",
            "--warmup-steps",
            "--batch-size",
        ] {
            let error = parse(&[flag, "9223372036854775808"]).unwrap_err();
            assert!(
                error.contains(flag) && error.contains("9223372036854775807"),
                "{flag}: {error}"
            );
            assert!(parse(&[flag, "-1"]).is_err(), "{flag}");
        }
        let largest = parse(&["--seed", "9223372036854775807"]).unwrap();
        assert_eq!(largest.resolve().unwrap().seed, i64::MAX as u64);
        let error = parse(&[
            "--batch-size",
            "4294967296",
            "--gradient-accumulation",
            "4294967296",
        ])
        .unwrap()
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("batch_size × gradient_accumulation"),
            "{error}"
        );
    }

    #[test]
    fn a_rank_of_zero_is_refused_up_front() {
        let error = parse(&["--method", "lora", "--shared-rank", "0"])
            .unwrap()
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("LoRA rank") && error.contains("at least 1"),
            "{error}"
        );
        assert!(parse(&["--shared-rank", "0"]).unwrap().resolve().is_err());
    }

    #[test]
    fn flags_a_method_does_not_use_are_named() {
        let args = parse(&[
            "--shared-rank",
            "8",
            "--task-rank",
            "4",
            "--scale",
            "0.5",
            "--refresh-every",
            "10",
            "--gate-weights",
            "1,0,0",
            "--knowledge-energy",
            "0.9",
            "--no-knowledge-cache",
            "--learning-rate",
            "0.01",
        ])
        .unwrap();
        let tasks = ["--task-rank", "--gate-weights"];
        let knowledge = ["--knowledge-energy"];
        for (method, expected) in [
            ("gems", vec![]),
            ("gems-no-nsp", knowledge.to_vec()),
            ("gems-no-msd", tasks.to_vec()),
            ("galore", [&tasks[..], &knowledge].concat()),
            (
                "lora",
                [&["--refresh-every"][..], &tasks, &knowledge].concat(),
            ),
            (
                "adamw",
                [
                    &["--shared-rank", "--scale", "--refresh-every"][..],
                    &tasks,
                    &knowledge,
                ]
                .concat(),
            ),
        ] {
            let inert = args.inert_flags(method.parse().unwrap()).unwrap();
            assert_eq!(inert, expected, "{method}");
        }
    }

    #[test]
    fn values_out_of_range_name_where_they_came_from() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("run.toml");
        std::fs::write(&path, "batch_size = 0\n").unwrap();
        let from_file = TrainArgs {
            config: Some(path.clone()),
            ..TrainArgs::default()
        };
        let error = from_file.resolve().unwrap_err().to_string();
        assert!(
            error.contains(&format!("{}: batch_size", path.display())),
            "{error}"
        );
        let error = parse(&["--learning-rate=-1"])
            .unwrap()
            .resolve()
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("command-line flags: learning_rate"),
            "{error}"
        );
    }

    #[test]
    fn flags_override_the_config_file_which_overrides_defaults() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("run.toml");
        std::fs::write(
            &path,
            "learning_rate = 0.01\nbatch_size = 8\nmethod = \"galore\"\n",
        )
        .unwrap();
        let args = TrainArgs {
            config: Some(path),
            batch_size: Some(4),
            ..TrainArgs::default()
        };
        let settings = args.resolve().unwrap();
        assert_eq!(settings.learning_rate, 0.01);
        assert_eq!(settings.batch_size, 4);
        assert_eq!(settings.method, TrainMethod::Optimizer(Method::Galore));
        assert_eq!(settings.epochs, TrainSettings::default().epochs);
        // The written config.toml reads back to the same settings.
        let again: TrainSettings = toml::from_str(&settings.to_toml()).unwrap();
        assert_eq!(again, settings);
    }

    #[test]
    fn bad_config_files_name_the_file_line_and_key() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("bad.toml");
        std::fs::write(&path, "epochs = 3\nlearning_rat = 0.1\n").unwrap();
        let args = TrainArgs {
            config: Some(path.clone()),
            ..TrainArgs::default()
        };
        let error = args.resolve().unwrap_err().to_string();
        assert!(
            error.contains("bad.toml") && error.contains("learning_rat"),
            "{error}"
        );
        std::fs::write(&path, "epochs = \n").unwrap();
        let error = args.resolve().unwrap_err().to_string();
        assert!(error.contains("bad.toml:1"), "{error}");
        std::fs::write(&path, "method = \"sgd\"\n").unwrap();
        let error = args.resolve().unwrap_err().to_string();
        assert!(error.contains("unknown method `sgd`"), "{error}");
    }
}
