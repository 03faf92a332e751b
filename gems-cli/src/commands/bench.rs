//! `gems bench`: what to expect on this machine, on any compiled-in backend.
//!
//! - `train`: per method, training steps of `gems train` (its own step: per-task backward
//!   passes and the optimizer) on fixed-shape batches: the median step, the refresh step and its
//!   cost amortised over the run's T, samples and tokens per second, optimizer state, peak
//!   device memory where the backend reports it, and the ratios to AdamW of the same run
//!   (the methods take their steps in turn, so that the machine's load falls on all alike);
//!   with `--devices`, the same through the data-parallel path of `gems train --devices` on
//!   1, 2, 4, … devices: samples/s, scaling efficiency, and the path's cost on one device;
//! - `decode`: greedy decoding with and without the key-value cache, trie-constrained beam
//!   search, in requests per second;
//! - `svd`: randomized against exact bases at the shapes of the model's projected matrices,
//!   with the energy the randomized basis captures.
//!
//! Presets build random weights of the real shapes (no download); `--model-dir` benchmarks a
//! real checkpoint. A table for people, `--json` for scripts, the machine in both.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use burn::tensor::{Device, Distribution, Tensor};
use clap::{Args, Subcommand, ValueEnum};
use gems_core::rsvd::{SvdMethod, captured_energy, power_law_matrix, top_left_singular_vectors};
use gems_core::{DataParallel, Exchange, GemsConfig, Treatment};
use gems_data::batch::{EncodedExample, ModelLayout, collate_training};
use gems_models::qwen2::Qwen2Config;
use gems_models::t5::{FeedForwardProj, T5Config};
use gems_models::workload::{SEMANTIC_ID_VOCAB, median_time, random_prompts, semantic_id_tries};
use gems_models::{Backbone, ModelConfig, ModelKind, Tries, Uncached};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::distributed::{self, DeviceSet, Replicas};
use crate::error::{CliError, Result};
use crate::experiment::{Experiment, new_backbone, pretrained_backbone};
use crate::run_dir::{self, RunDir};
use crate::settings::{TrainMethod, TrainSettings};
use crate::training::{self, Progress, Training};

/// Benchmarks of training, decoding and basis computation.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Training steps per method: step time, refresh cost, throughput, state and memory.
    Train(TrainBenchArgs),
    /// Greedy decoding with and without the cache, and constrained beam search.
    Decode(DecodeBenchArgs),
    /// Randomized against exact SVD at the shapes of the model's projected matrices.
    Svd(SvdBenchArgs),
}

/// Model shapes with random weights, no download.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// The compact T5 `gems train` trains from scratch by default (width 128, 2 + 2 blocks).
    #[value(name = "compact")]
    Compact,
    /// T5-small (60 M parameters).
    #[value(name = "t5-small")]
    T5Small,
    /// T5-base (220 M parameters).
    #[value(name = "t5-base")]
    T5Base,
    /// Qwen2.5-0.5B (494 M parameters).
    #[value(name = "qwen2.5-0.5b")]
    Qwen25Half,
}

/// Vocabulary of the compact preset (grown to the tokenizer's when training).
const COMPACT_VOCAB: usize = 2000;

impl Preset {
    /// The preset's configuration, with `layers` blocks (per stack) instead of the real count.
    fn config(self, layers: Option<usize>) -> ModelConfig {
        let t5 = |mut config: T5Config| {
            config.dropout_rate = 0.0;
            if let Some(layers) = layers {
                config.num_layers = layers;
            }
            ModelConfig::T5(config)
        };
        match self {
            Preset::Compact => t5(T5Config::compact(COMPACT_VOCAB)),
            Preset::T5Small => t5(T5Config::t5_small(32128)),
            Preset::T5Base => t5(T5Config::new(
                32128,
                768,
                64,
                3072,
                12,
                12,
                FeedForwardProj::RELU,
            )),
            Preset::Qwen25Half => {
                ModelConfig::Qwen2(Qwen2Config::qwen2_5_0_5b(layers.unwrap_or(24)))
            }
        }
    }

    /// The name on the command line.
    fn name(self) -> &'static str {
        match self {
            Preset::Compact => "compact",
            Preset::T5Small => "t5-small",
            Preset::T5Base => "t5-base",
            Preset::Qwen25Half => "qwen2.5-0.5b",
        }
    }
}

/// Which model to benchmark, where, and how to print.
#[derive(Debug, Args)]
pub struct ModelChoice {
    /// Random weights of a real model's shapes (the default: compact).
    #[arg(long, value_enum, conflicts_with_all = ["model_config", "model_dir"])]
    preset: Option<Preset>,
    /// An HF `config.json` (random weights).
    #[arg(long, conflicts_with = "model_dir")]
    model_config: Option<PathBuf>,
    /// An HF model directory: its real weights (and, for `train`, its tokenizer).
    #[arg(long)]
    model_dir: Option<PathBuf>,
    /// Blocks per stack of a preset instead of the real count (quicker rehearsals).
    // clap waives `requires = "preset"` when an argument that conflicts with `--preset` is
    // given, so `--model-config` and `--model-dir` are refused here in so many words.
    #[arg(long, requires = "preset", conflicts_with_all = ["model_config", "model_dir"])]
    layers: Option<usize>,
    /// Compute backend (`flex`, `wgpu`, `vulkan`, `cuda`, as compiled in).
    #[arg(long, default_value = "flex")]
    backend: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Arguments of `gems bench train`.
#[derive(Debug, Args)]
pub struct TrainBenchArgs {
    #[command(flatten)]
    model: ModelChoice,
    /// Requests per step (half search, half recommendation).
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Prompt tokens of every request.
    #[arg(long, default_value_t = 64)]
    prompt_tokens: usize,
    /// Target tokens of every request, end-of-sequence included.
    #[arg(long, default_value_t = 8)]
    target_tokens: usize,
    /// Time the embedded default data's training requests, as `gems train` encodes them and in
    /// its order, instead of random ones of `--prompt-tokens` and `--target-tokens`; a preset
    /// then has the data's vocabulary. This is `gems train`'s own setting on that data (short
    /// prompts, one-token targets), where the passes cost least beside the optimizer.
    #[arg(long, conflicts_with_all = ["prompt_tokens", "target_tokens"])]
    from_data: bool,
    /// Methods to time, comma-separated (AdamW first is the reference of the ratios).
    #[arg(long, value_delimiter = ',', default_value = "adamw,galore,gems")]
    methods: Vec<TrainMethod>,
    /// Shared subspace rank r_s, also GaLore's and LoRA's rank, as `gems train --shared-rank`
    /// (default d_model / 4, at most 128). A GEMS step's extra products grow with
    /// r_s + 2·r_t.
    #[arg(long)]
    shared_rank: Option<usize>,
    /// Task subspace rank r_t, as `gems train --task-rank` (default r_s / 2).
    #[arg(long)]
    task_rank: Option<usize>,
    /// Timed steps per method (without a refresh; refresh steps are timed besides).
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Untimed steps first (the first one computes the bases).
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// The run's T (steps between basis refreshes) over which a refresh is amortised.
    #[arg(long, default_value_t = TrainSettings::default().refresh_every)]
    refresh_every: u64,
    /// Side of the square f32 matmul that measures the device's peak rate (0: skip).
    #[arg(long, default_value_t = 1024)]
    matmul_size: usize,
    /// Time one method after the other, holding one model at a time (by default every
    /// method's model is set up first and they step in turn, which compares them under the same
    /// machine load).
    #[arg(long)]
    sequential: bool,
    /// Hold every task's full gradients until the step, as `gems train --full-task-gradients`
    /// (by default each task's are condensed to low-rank coordinates after its backward pass).
    #[arg(long)]
    full_task_gradients: bool,
    /// Decoupled weight decay, as `gems train --weight-decay` (with null-space projection it
    /// costs a full-size product per projected weight and step).
    #[arg(long, default_value_t = TrainSettings::default().weight_decay)]
    weight_decay: f64,
    /// Also time each method data-parallel, as `gems train --devices` trains (same syntax): on
    /// the first 1, 2, 4, … and all of these devices, each replica running one micro-batch of
    /// `--batch-size` requests per step.
    #[arg(long)]
    devices: Option<DeviceSet>,
    /// With `--devices`: that many logical devices over the default adapter (wgpu), to rehearse
    /// the data-parallel path on one GPU; the figures then show its overhead, not a speed-up.
    #[arg(long, requires = "devices")]
    one_adapter: bool,
}

/// Arguments of `gems bench decode`.
#[derive(Debug, Args)]
pub struct DecodeBenchArgs {
    #[command(flatten)]
    model: ModelChoice,
    /// Requests decoded together.
    #[arg(long, default_value_t = 4)]
    batch_size: usize,
    /// Prompt tokens of every request.
    #[arg(long, default_value_t = 32)]
    prompt_tokens: usize,
    /// Tokens generated by greedy decoding.
    #[arg(long, default_value_t = 64)]
    new_tokens: usize,
    /// Beam width of constrained beam search.
    #[arg(long, default_value_t = 20)]
    beam_width: usize,
    /// Candidate items (4-token semantic identifiers) per request in beam search.
    #[arg(long, default_value_t = 100)]
    candidates: usize,
    /// Timed repetitions (median reported), after one warm-up.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
}

/// Arguments of `gems bench svd`.
#[derive(Debug, Args)]
pub struct SvdBenchArgs {
    #[command(flatten)]
    model: ModelChoice,
    /// Rank of the bases (default: the shared rank of `gems train`, d_model / 4, at most 128).
    #[arg(long)]
    rank: Option<usize>,
    /// Timed repetitions (median reported), after one warm-up.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
}

impl BenchCommand {
    /// Runs the benchmark, printing a table or JSON.
    pub fn run(self) -> Result<()> {
        match self {
            Self::Train(args) => bench_train(&args),
            Self::Decode(args) => bench_decode(&args),
            Self::Svd(args) => bench_svd(&args),
        }
    }
}

/// The machine a benchmark ran on.
#[derive(Debug, Serialize)]
struct Machine {
    gems_version: &'static str,
    backend: String,
    /// The adapter (GPU backends) or the CPU (flex), when known.
    device: Option<String>,
    /// CPU threads of the CPU backend's pool.
    threads: usize,
}

impl Machine {
    fn of(backend: &str, device: &Device) -> Self {
        let threads = std::env::var("RAYON_NUM_THREADS")
            .ok()
            .and_then(|n| n.parse().ok())
            .filter(|&n| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        Self {
            gems_version: env!("CARGO_PKG_VERSION"),
            backend: backend.to_string(),
            device: adapter_name(device).or_else(cpu_name),
            threads,
        }
    }

    fn line(&self) -> String {
        format!(
            "gems {} on `{}` ({}), {} CPU threads",
            self.gems_version,
            self.backend,
            self.device.as_deref().unwrap_or("device unknown"),
            self.threads
        )
    }
}

#[cfg(any(feature = "wgpu", feature = "vulkan", feature = "cuda"))]
fn adapter_name(device: &Device) -> Option<String> {
    device.identity().map(|identity| identity.name)
}

#[cfg(not(any(feature = "wgpu", feature = "vulkan", feature = "cuda")))]
fn adapter_name(_: &Device) -> Option<String> {
    None
}

/// The CPU's model name (Linux).
fn cpu_name() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map(|(_, name)| name.trim().to_string())
}

/// A scratch folder for what the benchmark writes (a preset's config, the run directory the
/// training loop needs), removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Self> {
        let path = std::env::temp_dir().join(format!("gems-bench-{}", std::process::id()));
        std::fs::create_dir_all(&path)
            .map_err(|e| CliError::io(&path, "cannot create a scratch folder", e))?;
        Ok(Self(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The model's configuration, and a name for it.
fn model_config(choice: &ModelChoice) -> Result<(ModelConfig, String)> {
    match (&choice.model_dir, &choice.model_config, choice.preset) {
        (Some(directory), _, _) => Ok((
            ModelConfig::from_file(directory.join("config.json"))?,
            directory.display().to_string(),
        )),
        (None, Some(path), _) => Ok((ModelConfig::from_file(path)?, path.display().to_string())),
        (None, None, preset) => {
            let preset = preset.unwrap_or(Preset::Compact);
            let name = match choice.layers {
                Some(layers) => format!("{} ({layers} layers)", preset.name()),
                None => preset.name().to_string(),
            };
            Ok((preset.config(choice.layers), name))
        }
    }
}

/// The model on `device`: real weights from `--model-dir`, else random ones (seeded).
fn load_model(choice: &ModelChoice, config: &ModelConfig, device: &Device) -> Result<Backbone> {
    match &choice.model_dir {
        Some(directory) => Ok(Backbone::load(directory, device)?),
        None => {
            device.seed(0);
            Ok(Backbone::new(config, device)?)
        }
    }
}

fn print_json(value: &impl Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("benchmark results serialise")
    );
}

fn positive(value: usize, flag: &str) -> Result<()> {
    if value == 0 {
        return Err(CliError::Settings(format!("{flag} must be at least 1")));
    }
    Ok(())
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    (!values.is_empty()).then(|| values[values.len() / 2])
}

// ---------------------------------------------------------------------------------------------
// train

/// What `gems bench train` reports.
#[derive(Debug, Serialize)]
struct TrainReport {
    machine: Machine,
    model: String,
    parameters: usize,
    batch_size: usize,
    /// What the timed windows hold.
    requests: String,
    /// r_s, GEMS's shared rank, also GaLore's and LoRA's rank.
    shared_rank: usize,
    /// r_t, GEMS's rank per task.
    task_rank: usize,
    tokens_per_step: usize,
    /// Estimated floating-point operations of one step's forward and backward passes
    /// (6 · weights · tokens each weight sees).
    flops_per_step: f64,
    /// Measured rate of an f32 square matmul on this device, GFLOP/s.
    matmul_gflops: Option<f64>,
    warmup: usize,
    steps: usize,
    refresh_every: u64,
    methods: Vec<MethodTiming>,
    /// The methods through the data-parallel path (`--devices`).
    scaling: Option<Scaling>,
}

/// One method's figures.
#[derive(Debug, Serialize)]
struct MethodTiming {
    method: String,
    /// Median of the timed steps without a refresh, in ms.
    step_ms: f64,
    /// Median of the timed steps with a refresh (low-rank methods), in ms.
    refresh_step_ms: Option<f64>,
    /// (refresh step − step) / T, in ms per step.
    amortised_refresh_ms: Option<f64>,
    /// Step with the refresh amortised: what a run of T steps averages, in ms.
    effective_step_ms: f64,
    samples_per_s: f64,
    tokens_per_s: f64,
    /// Achieved rate from `flops_per_step`, GFLOP/s.
    gflops: f64,
    /// Operations of the optimizer's matrix products in a step without a refresh
    /// ([`gems_core::ProductCost`]), every task's gradients condensed unless
    /// `--full-task-gradients`: what a low-rank method adds to the forward and backward passes.
    /// Counted from full gradients: where the backward pass leaves a weight's gradient factored
    /// (a T5 decoder's), its projections cost less and the pass skips the product forming it.
    optimizer_flops_per_step: f64,
    /// Optimizer state after the steps (knowledge bases excluded), bytes.
    optimizer_state_bytes: usize,
    /// Knowledge bases held for null-space projection, bytes.
    knowledge_basis_bytes: usize,
    /// Largest memory the device's allocator held after a step, where it reports it.
    peak_device_bytes: Option<u64>,
    /// Reads back from the device (synchronisation points on a GPU) by the optimizer in an
    /// ordinary step and in a refresh step (low-rank methods).
    device_reads: DeviceReads,
    /// Seconds to build the model, knowledge bases and optimizer (Burn draws weights lazily,
    /// so drawing them falls in the first step, a warm-up step unless `--warmup 0`).
    setup_s: f64,
    /// Ratios to the first method of the run when it is AdamW: effective step, state.
    vs_adamw: Option<Ratios>,
    /// The timed steps without a refresh, `(round, ms)`: the n-th step of every method.
    steps_by_round: Vec<(usize, f64)>,
}

/// The optimizer's reads back from the device, per step.
#[derive(Debug, Default, Serialize)]
struct DeviceReads {
    step: u64,
    refresh_step: Option<u64>,
}

/// The data-parallel figures of `--devices`.
#[derive(Debug, Serialize)]
struct Scaling {
    /// The devices, in the order replicas are placed on them.
    devices: Vec<String>,
    /// Whether they are logical devices over one adapter (`--one-adapter`).
    one_adapter: bool,
    /// How the replicas sum their gradients.
    exchange: String,
    /// One row per method and device count.
    rows: Vec<ScalingTiming>,
}

/// One method on one count of devices, each running a micro-batch of `batch_size` requests.
#[derive(Debug, Serialize)]
struct ScalingTiming {
    method: String,
    devices: usize,
    /// Requests of the step's window over all devices.
    samples_per_step: usize,
    /// Median of the timed steps without a refresh, in ms.
    step_ms: f64,
    /// Median of the timed steps with a refresh (low-rank methods), in ms.
    refresh_step_ms: Option<f64>,
    /// Step with the refresh amortised over the run's T, in ms.
    effective_step_ms: f64,
    /// Requests of every device per second.
    samples_per_s: f64,
    tokens_per_s: f64,
    /// samples/s ÷ (devices × samples/s of the same method on one device).
    scaling_efficiency: f64,
    /// One device: this step over the ordinary single-device step (`methods`) on the same
    /// device, the cost of the data-parallel path itself.
    vs_single_device_step: Option<f64>,
}

/// Ratios to AdamW.
#[derive(Debug, Serialize)]
struct Ratios {
    /// Median over the rounds of this method's step over AdamW's step of the same round
    /// (methods stepping in turn); the ratio of the medians with `--sequential`.
    step: f64,
    /// `step` with each method's refresh amortised over T.
    effective_step: f64,
    /// First and third quartiles of the rounds' ratios behind `effective_step` (`None` with
    /// `--sequential`): how much the machine's load moved them.
    effective_step_quartiles: Option<[f64; 2]>,
    /// An interval that holds the median of the rounds' ratios with at least 95% confidence,
    /// the rounds taken as independent ([`median_interval_ranks`]; `None` with `--sequential`
    /// or under 6 rounds): how far `effective_step` may be from what more rounds would give.
    effective_step_interval: Option<[f64; 2]>,
    optimizer_state: f64,
}

/// Low-rank methods refresh their bases every this many steps while being timed, so that
/// refresh steps are measured too; their cost is then amortised over the run's T.
const TIMING_REFRESH_PERIOD: u64 = 4;

fn bench_train(args: &TrainBenchArgs) -> Result<()> {
    positive(args.batch_size, "--batch-size")?;
    positive(args.steps, "--steps")?;
    positive(args.prompt_tokens, "--prompt-tokens")?;
    positive(args.target_tokens, "--target-tokens")?;
    if args.refresh_every == 0 {
        return Err(CliError::Settings(
            "--refresh-every must be at least 1".into(),
        ));
    }
    if args.methods.is_empty() {
        return Err(CliError::Settings("--methods names no method".into()));
    }
    // Checked before any timing, whose results a failure at the end would lose.
    if args.matmul_size > MAX_MATMUL_SIZE {
        return Err(CliError::Settings(format!(
            "--matmul-size must be at most {MAX_MATMUL_SIZE} (its product alone would take hours on a CPU)"
        )));
    }
    let matmul_bytes = 3 * 4 * (args.matmul_size as u64).pow(2);
    crate::memory::check_size_fits(
        Some(matmul_bytes),
        &format!("the --matmul-size {} product", args.matmul_size),
        "choose a smaller --matmul-size, or 0 to skip it",
    )?;
    // The devices of `--devices` first: logical devices over one adapter must be registered
    // before anything uses the backend's default device.
    let backend = &args.model.backend;
    let parallel_devices = match &args.devices {
        Some(set) if args.one_adapter => Some(set.on_one_adapter(backend)?),
        Some(set) => Some(set.resolve(backend)?),
        None => None,
    };
    let scratch = Scratch::new()?;
    let (config, model_name) = model_config(&args.model)?;
    // A preset is saved for the trainings to load once the data's vocabulary is known.
    let preset_config = match (&args.model.model_dir, &args.model.model_config) {
        (None, None) => Some(scratch.0.join("config.json")),
        _ => None,
    };
    let model_config = args.model.model_config.clone().or(preset_config.clone());
    let base = TrainSettings {
        model: config.kind(),
        model_dir: args.model.model_dir.clone(),
        model_config,
        batch_size: args.batch_size,
        backend: backend.clone(),
        refresh_every: args.refresh_every,
        full_task_gradients: args.full_task_gradients,
        weight_decay: args.weight_decay,
        shared_rank: args.shared_rank,
        task_rank: args.task_rank,
        // The bench measures the set-up itself.
        no_knowledge_cache: true,
        ..TrainSettings::default()
    };
    base.validate()?;
    let d_model = config.hidden_size();
    // With `--devices`, the single-device steps run on the first of them, so that the
    // data-parallel path's overhead on one device is measured against the same device.
    let device = match &parallel_devices {
        Some((devices, _)) => devices[0].clone().autodiff(),
        None => gems_core::device_from_name(backend)?.autodiff(),
    };
    let machine = Machine::of(backend, &device);
    let pretrained = pretrained_backbone(&base, &device)?;
    let experiment = Experiment::prepare(&base, pretrained.as_ref())?;
    let data = match args.from_data {
        true => Some(data_requests(&base, &experiment)?),
        false => None,
    };
    if let Some(path) = &preset_config {
        // With `--from-data`, the preset's embeddings take the data's vocabulary, as `gems
        // train` builds one.
        let config = match data {
            Some(_) => config.with_vocab_size(experiment.tokenizer.get_vocab_size(true)),
            None => config,
        };
        config.save(path)?;
    }
    let run = RunDir::create(&scratch.0.join("run"))?;
    let bench = TrainBench {
        args,
        base: &base,
        experiment: &experiment,
        run: &run,
        data: data.as_deref(),
    };

    // Every method's training is set up first and they then step in turn, so that the shared
    // machine's slow and fast moments fall on all of them alike; `--sequential` holds one
    // method's model at a time instead.
    let all_settings: Vec<TrainSettings> =
        args.methods.iter().map(|&m| bench.settings(m, 1)).collect();
    let mut facts = None;
    let mut timed = Vec::new();
    let mut methods = Vec::new();
    for settings in &all_settings {
        let started = Instant::now();
        let pretrained = pretrained_backbone(settings, &device)?;
        let model = new_backbone(settings, pretrained, &experiment.tokenizer, &device)?;
        let examples = bench.requests(args.batch_size, model.vocab_size())?;
        facts.get_or_insert_with(|| {
            (
                burn::module::Module::num_params(&model),
                tokens_per_step(&examples, &experiment),
                flops_per_step(&model, &examples, &experiment),
            )
        });
        let d_model = model.config().hidden_size();
        let null_space = if settings.method.needs_null_space() {
            Some(crate::knowledge::collect(
                &model,
                &experiment,
                &settings.general_corpus,
                settings.general_corpus_tokens,
                &settings.optimizer_config(d_model).knowledge,
                None, // no cache: the bench measures the set-up itself
                &device,
            )?)
        } else {
            None
        };
        let optimizer = training::optimizer_for(settings, d_model, null_space)?;
        let model = training::with_method(model, &optimizer, settings)?;
        let training = Training {
            settings,
            experiment: &experiment,
            run: &run,
            device: device.clone(),
            model,
            optimizer,
            progress: Progress::start(String::new()),
            replicas: None,
        };
        synchronise(&training)?;
        timed.push(TimedTraining {
            timer: StepTimer::new(&training),
            setup_s: started.elapsed().as_secs_f64(),
            training,
            examples,
        });
        if args.sequential {
            time_in_turn(args, &mut timed, facts.expect("set above"), &mut methods)?;
        }
    }
    time_in_turn(
        args,
        &mut timed,
        facts.expect("one method at least"),
        &mut methods,
    )?;
    if args.methods[0] == TrainMethod::Optimizer(gems_core::Method::Adamw) {
        let (adamw_step_ms, adamw_rounds, adamw_state) = (
            methods[0].step_ms,
            methods[0].steps_by_round.clone(),
            methods[0].optimizer_state_bytes as f64,
        );
        for timing in &mut methods {
            let paired = (!args.sequential)
                .then(|| paired_ratios(&timing.steps_by_round, &adamw_rounds))
                .flatten();
            let step = paired
                .as_ref()
                .map_or(timing.step_ms / adamw_step_ms, |p| p.quartiles[1]);
            let amortised = timing.effective_step_ms / timing.step_ms;
            let scaled = |[low, high]: [f64; 2]| [low * amortised, high * amortised];
            timing.vs_adamw = Some(Ratios {
                step,
                effective_step: step * amortised,
                effective_step_quartiles: paired
                    .as_ref()
                    .map(|p| scaled([p.quartiles[0], p.quartiles[2]])),
                effective_step_interval: paired.and_then(|p| p.median_interval).map(scaled),
                optimizer_state: timing.optimizer_state_bytes as f64 / adamw_state,
            });
        }
    }
    let (parameters, tokens_per_step, flops_per_step) = facts.expect("one method at least");
    let scaling = match parallel_devices {
        Some((devices, exchange)) => Some(bench.scaling(&devices, exchange, &methods)?),
        None => None,
    };
    let inner = device.clone().without_autodiff();
    let ranks = base.optimizer_config(d_model);
    let report = TrainReport {
        machine,
        model: model_name,
        parameters,
        batch_size: args.batch_size,
        shared_rank: ranks.shared_rank,
        task_rank: ranks.effective_task_rank(),
        requests: match args.from_data {
            true => "the default data's training requests, in `gems train`'s order".into(),
            false => format!(
                "random, {} prompt and {} target tokens",
                args.prompt_tokens, args.target_tokens
            ),
        },
        tokens_per_step,
        flops_per_step,
        matmul_gflops: (args.matmul_size > 0).then(|| matmul_gflops(args.matmul_size, &inner)),
        warmup: args.warmup,
        steps: args.steps,
        refresh_every: args.refresh_every,
        methods,
        scaling,
    };
    if args.model.json {
        print_json(&report);
    } else {
        print_train_table(&report);
    }
    Ok(())
}

/// The ratios of one method's steps to the reference's of the same rounds, summarised.
struct PairedRatios {
    /// First quartile, median and third quartile.
    quartiles: [f64; 3],
    /// The median's 95% interval ([`median_interval_ranks`]), from 6 rounds on.
    median_interval: Option<[f64; 2]>,
}

/// The ratios over the rounds both have of `steps`' time over `reference`'s: steps taken side
/// by side share the machine's load of the moment, which each ratio cancels in part.
fn paired_ratios(steps: &[(usize, f64)], reference: &[(usize, f64)]) -> Option<PairedRatios> {
    let mut ratios: Vec<f64> = steps
        .iter()
        .filter_map(|(round, ms)| {
            let (_, reference_ms) = reference.iter().find(|(r, _)| r == round)?;
            Some(ms / reference_ms)
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    let n = ratios.len();
    (n > 0).then(|| PairedRatios {
        quartiles: [ratios[n / 4], ratios[n / 2], ratios[3 * n / 4]],
        median_interval: median_interval_ranks(n).map(|(low, high)| [ratios[low], ratios[high]]),
    })
}

/// The 0-based ranks `(l, n − 1 − l)` of the sorted values of `n` independent draws that bound
/// their distribution's median with at least 95% confidence, whatever the distribution (the
/// sign-test interval): the median lies below the (l + 1)-th smallest value only when at most
/// l of the n values fall below it, which has probability P(B ≤ l) for B ~ Binomial(n, ½), so
/// l is the largest rank with P(B ≤ l) ≤ 2.5%, and the same holds above. `None` under 6
/// values, where even the smallest and largest leave more than 5% out.
fn median_interval_ranks(n: usize) -> Option<(usize, usize)> {
    // P(B = i) = C(n, i) / 2ⁿ, built up in logarithms so that no term underflows.
    let mut log_probability = -(n as f64) * std::f64::consts::LN_2;
    let mut at_most = 0.0;
    let mut rank = None;
    for i in 0..n {
        at_most += log_probability.exp();
        if at_most > 0.025 {
            break;
        }
        rank = Some(i);
        log_probability += ((n - i) as f64).ln() - ((i + 1) as f64).ln();
    }
    rank.map(|l| (l, n - 1 - l))
}

/// A training set up for `gems bench train`, with its window, set-up time and step times.
struct TimedTraining<'a> {
    training: Training<'a>,
    examples: Vec<EncodedExample>,
    setup_s: f64,
    timer: StepTimer,
}

/// Steps the `timed` trainings in turn until each has its steps, then appends each one's
/// figures to `methods` and drops it; `facts` are the model's (parameters, tokens,
/// operations) per step.
fn time_in_turn(
    args: &TrainBenchArgs,
    timed: &mut Vec<TimedTraining>,
    (_, tokens, flops): (usize, usize, f64),
    methods: &mut Vec<MethodTiming>,
) -> Result<()> {
    // Every training steps in every round until all are done, so that each round pairs
    // every method's step with AdamW's (the ratios are medians over rounds). Every other round
    // takes them in reverse order, so that no method always steps first or always follows a
    // given one.
    let mut forward = true;
    while timed.iter().any(|t| !t.timer.is_done(args)) {
        let mut round: Vec<&mut TimedTraining> = timed.iter_mut().collect();
        if !forward {
            round.reverse();
        }
        for t in round {
            t.timer.step(args, &mut t.training, &t.examples)?;
        }
        forward = !forward;
    }
    for TimedTraining {
        training,
        setup_s,
        timer,
        ..
    } in timed.drain(..)
    {
        let times = timer.finish();
        let method = training.settings.method.name();
        if !args.model.json {
            eprintln!("{method}: {:.1} ms per step", times.step_ms);
        }
        let effective_step_ms = times.effective_step_ms(args.refresh_every);
        methods.push(MethodTiming {
            method: method.to_string(),
            step_ms: times.step_ms,
            refresh_step_ms: times.refresh_step_ms,
            amortised_refresh_ms: times.amortised_refresh_ms(args.refresh_every),
            effective_step_ms,
            samples_per_s: args.batch_size as f64 / (effective_step_ms / 1e3),
            tokens_per_s: tokens as f64 / (effective_step_ms / 1e3),
            gflops: flops / (effective_step_ms / 1e3) / 1e9,
            optimizer_flops_per_step: training
                .optimizer
                .plan(&training.model, gems_data::Task::ALL.len())
                .iter()
                .map(|p| p.products.total(!args.full_task_gradients))
                .sum(),
            optimizer_state_bytes: training.optimizer.state_bytes(),
            knowledge_basis_bytes: training.optimizer.null_space_bytes(),
            peak_device_bytes: times.peak_device_bytes,
            device_reads: times.device_reads,
            setup_s,
            vs_adamw: None,
            steps_by_round: times.steps_by_round,
        });
    }
    Ok(())
}

/// What every timed training of `gems bench train` shares.
struct TrainBench<'a> {
    args: &'a TrainBenchArgs,
    base: &'a TrainSettings,
    experiment: &'a Experiment,
    run: &'a RunDir,
    /// The training requests of `--from-data` ([`data_requests`]).
    data: Option<&'a [EncodedExample]>,
}

/// The embedded default data's training requests in the order of `gems train`'s first epoch
/// (`--from-data`).
fn data_requests(settings: &TrainSettings, experiment: &Experiment) -> Result<Vec<EncodedExample>> {
    let examples = training::training_examples(experiment)?;
    let order = training::epoch_order(settings.seed, 0, examples.len());
    Ok(order.into_iter().map(|i| examples[i].clone()).collect())
}

/// The step times of one timed training, in ms.
struct StepTimes {
    /// Median of the steps without a refresh.
    step_ms: f64,
    /// The steps without a refresh, by round.
    steps_by_round: Vec<(usize, f64)>,
    /// Median of the steps with a refresh (low-rank methods).
    refresh_step_ms: Option<f64>,
    /// Largest memory the (first) device's allocator held after a step, where it reports it.
    peak_device_bytes: Option<u64>,
    /// The optimizer's reads back from the device in the last timed steps.
    device_reads: DeviceReads,
}

impl StepTimes {
    /// (refresh step − step) / T.
    fn amortised_refresh_ms(&self, refresh_every: u64) -> Option<f64> {
        (self.refresh_step_ms).map(|r| (r - self.step_ms).max(0.0) / refresh_every as f64)
    }

    /// The step with the refresh amortised over T.
    fn effective_step_ms(&self, refresh_every: u64) -> f64 {
        self.step_ms + self.amortised_refresh_ms(refresh_every).unwrap_or(0.0)
    }
}

/// The step times of one timed training, gathered a step at a time.
struct StepTimer {
    low_rank: bool,
    taken: usize,
    /// (round, ms) of the timed steps without a refresh.
    steady: Vec<(usize, f64)>,
    refreshes: Vec<f64>,
    peak: Option<u64>,
    device_reads: DeviceReads,
}

impl StepTimer {
    fn new(training: &Training) -> Self {
        Self {
            low_rank: matches!(training.settings.method, TrainMethod::Optimizer(m) if m.low_rank()),
            taken: 0,
            steady: Vec::new(),
            refreshes: Vec::new(),
            peak: None,
            device_reads: DeviceReads::default(),
        }
    }

    /// Whether `--steps` steps without a refresh (and, for a low-rank method, one with a
    /// refresh) followed the `--warmup` ones.
    fn is_done(&self, args: &TrainBenchArgs) -> bool {
        self.steady.len() >= args.steps && (!self.low_rank || !self.refreshes.is_empty())
    }

    /// Takes and times one step of `training` over the window `examples`.
    fn step(
        &mut self,
        args: &TrainBenchArgs,
        training: &mut Training,
        examples: &[EncodedExample],
    ) -> Result<()> {
        let window: Vec<&EncodedExample> = examples.iter().collect();
        let total = (args.warmup + 3 * args.steps) as u64 + TIMING_REFRESH_PERIOD;
        let start = Instant::now();
        let report = training.step(&window, total)?.ok_or_else(|| {
            CliError::Settings(
                "a step had a non-finite loss or gradient; the figures would be meaningless".into(),
            )
        })?;
        synchronise(training)?;
        let elapsed = ms(start.elapsed());
        if let Some(usage) = training.device.memory_pool_usage() {
            self.peak = Some(self.peak.unwrap_or(0).max(usage.bytes_reserved));
        }
        self.taken += 1;
        if self.taken <= args.warmup {
            return Ok(());
        }
        if report.refreshed > 0 {
            self.refreshes.push(elapsed);
            self.device_reads.refresh_step = Some(report.device_reads);
        } else {
            self.steady.push((self.taken, elapsed));
            self.device_reads.step = report.device_reads;
        }
        Ok(())
    }

    fn finish(self) -> StepTimes {
        StepTimes {
            step_ms: median(self.steady.iter().map(|(_, ms)| *ms).collect())
                .expect("steps were timed"),
            steps_by_round: self.steady,
            refresh_step_ms: median(self.refreshes),
            peak_device_bytes: self.peak,
            device_reads: self.device_reads,
        }
    }
}

impl TrainBench<'_> {
    /// The `count` requests of every timed window: the first of the training data with
    /// `--from-data`, else random ones for a vocabulary of `vocab` tokens.
    fn requests(&self, count: usize, vocab: usize) -> Result<Vec<EncodedExample>> {
        match self.data {
            None => Ok(requests(self.args, count, vocab)),
            Some(examples) if count <= examples.len() => Ok(examples[..count].to_vec()),
            Some(examples) => Err(CliError::Settings(format!(
                "--from-data: a window of {count} requests, but the data has {} training requests",
                examples.len()
            ))),
        }
    }

    /// The settings of a timed training of `method` whose window is `micro_batches`
    /// micro-batches of `--batch-size` requests.
    fn settings(&self, method: TrainMethod, micro_batches: usize) -> TrainSettings {
        TrainSettings {
            method,
            refresh_every: TIMING_REFRESH_PERIOD,
            gradient_accumulation: micro_batches,
            ..self.base.clone()
        }
    }

    /// Times steps of `training` over the window `examples` until `--steps` steps without a
    /// refresh (and, for low-rank methods, one with a refresh) follow the `--warmup` ones.
    fn time_steps(
        &self,
        training: &mut Training,
        examples: &[EncodedExample],
    ) -> Result<StepTimes> {
        let mut timer = StepTimer::new(training);
        while !timer.is_done(self.args) {
            timer.step(self.args, training, examples)?;
        }
        Ok(timer.finish())
    }

    /// Every method through the data-parallel path of `gems train --devices` on the first
    /// [`device_counts`] of `devices`: each replica runs one micro-batch of `--batch-size`
    /// requests per step (the window grows with the devices), the gradients are summed across
    /// them, and every replica takes the optimizer step. `single` holds the same methods'
    /// ordinary single-device steps, measured on `devices[0]`.
    fn scaling(
        &self,
        devices: &[Device],
        exchange: Exchange,
        single: &[MethodTiming],
    ) -> Result<Scaling> {
        let args = self.args;
        let mut rows = Vec::new();
        for (&method, ordinary) in args.methods.iter().zip(single) {
            let mut one_device_rate = None;
            for count in device_counts(devices.len()) {
                let settings = self.settings(method, count);
                let replica_devices = devices[..count].iter().cloned().map(Device::autodiff);
                let parallel = DataParallel::new(replica_devices.collect(), exchange)?;
                let first = parallel.devices()[0].clone().autodiff();
                let pretrained = pretrained_backbone(&settings, &first)?;
                let model =
                    new_backbone(&settings, pretrained, &self.experiment.tokenizer, &first)?;
                let examples = self.requests(count * args.batch_size, model.vocab_size())?;
                let mut optimizers = distributed::optimizers(
                    &settings,
                    self.experiment,
                    &model,
                    &parallel,
                    method.needs_null_space(),
                )?;
                let optimizer = optimizers.remove(0);
                let model = training::with_method(model, &optimizer, &settings)?;
                let checkpoint = self.run.path(run_dir::CHECKPOINT);
                let replicas = Replicas::new(parallel, &model, optimizers, checkpoint);
                let mut training = Training {
                    settings: &settings,
                    experiment: self.experiment,
                    run: self.run,
                    device: first,
                    model,
                    optimizer,
                    progress: Progress::start(String::new()),
                    replicas: Some(replicas),
                };
                synchronise(&training)?;
                let times = self.time_steps(&mut training, &examples)?;
                let effective_step_ms = times.effective_step_ms(args.refresh_every);
                let samples_per_s = examples.len() as f64 / (effective_step_ms / 1e3);
                let one_device = *one_device_rate.get_or_insert(samples_per_s);
                rows.push(ScalingTiming {
                    method: method.name().to_string(),
                    devices: count,
                    samples_per_step: examples.len(),
                    step_ms: times.step_ms,
                    refresh_step_ms: times.refresh_step_ms,
                    effective_step_ms,
                    samples_per_s,
                    tokens_per_s: tokens_per_step(&examples, self.experiment) as f64
                        / (effective_step_ms / 1e3),
                    scaling_efficiency: samples_per_s / (count as f64 * one_device),
                    vs_single_device_step: (count == 1).then(|| times.step_ms / ordinary.step_ms),
                });
                if !args.model.json {
                    eprintln!(
                        "{} on {count} device(s): {:.1} ms per step",
                        method.name(),
                        times.step_ms
                    );
                }
            }
        }
        Ok(Scaling {
            devices: devices.iter().map(|d| format!("{d:?}")).collect(),
            one_adapter: args.one_adapter,
            exchange: format!("{exchange:?}"),
            rows,
        })
    }
}

/// The device counts `--devices` with `n` devices times: 1, 2, 4, … below `n`, and `n`.
fn device_counts(n: usize) -> Vec<usize> {
    let mut counts: Vec<usize> = std::iter::successors(Some(1_usize), |c| c.checked_mul(2))
        .take_while(|&c| c < n)
        .collect();
    counts.push(n);
    counts
}

/// Waits for the work queued on every device of `training` (each replica's).
fn synchronise(training: &Training) -> Result<()> {
    let first = training.device.clone().without_autodiff();
    let others = training.replicas.iter().flat_map(|r| &r.devices()[1..]);
    for device in std::iter::once(&first).chain(others) {
        device
            .sync()
            .map_err(|e| CliError::Settings(format!("the device {device:?} failed: {e:?}")))?;
    }
    Ok(())
}

/// `count` requests of random tokens, the tasks alternating; targets end with the
/// end-of-sequence token that collation appends.
fn requests(args: &TrainBenchArgs, count: usize, vocab: usize) -> Vec<EncodedExample> {
    (0..count)
        .map(|i| {
            let row = |length: usize, seed: u64| random_prompts(1, length, vocab, seed).remove(0);
            EncodedExample {
                task: gems_data::Task::ALL[i % 2],
                prompt: row(args.prompt_tokens, 1 + i as u64),
                target: row(args.target_tokens - 1, 1000 + i as u64),
                target_item: None,
                history_items_shown: 0,
                prompt_cut: false,
            }
        })
        .collect()
}

/// Tokens the model reads per step: T5 its encoder and decoder positions, Qwen2 its positions.
fn tokens_per_step(examples: &[EncodedExample], experiment: &Experiment) -> usize {
    let (encoder, decoder) = positions(examples, experiment);
    encoder + decoder
}

/// (positions every block reads, labelled positions) of the collated batch: for T5 the
/// encoder positions and the decoder positions (all labelled), for Qwen2 every position and
/// those with a label.
fn positions(examples: &[EncodedExample], experiment: &Experiment) -> (usize, usize) {
    let batch = collate_training(examples, &experiment.batch_options);
    let rows = examples.len();
    match experiment.batch_options.layout {
        ModelLayout::EncoderDecoder => (rows * batch.input_len, rows * batch.labels_len),
        ModelLayout::DecoderOnly { .. } => (
            rows * batch.input_len,
            batch
                .labels
                .iter()
                .filter(|&&l| l != gems_models::IGNORE_INDEX)
                .count(),
        ),
    }
}

/// 6 · (weights) · (tokens each weight sees): the usual estimate of a training step's forward
/// and backward matmul work. T5's encoder matrices see the encoder positions and its decoder
/// matrices the decoder positions; Qwen2's block matrices see every position; the output head
/// (tied or not) sees the labelled positions only, the models computing logits there alone.
/// Lookups (input embeddings, T5's relative position biases) do no matmul.
fn flops_per_step(model: &Backbone, examples: &[EncodedExample], experiment: &Experiment) -> f64 {
    let (all, labelled) = positions(examples, experiment);
    let (tokens, labelled) = (all as f64, labelled as f64);
    let output_head = |path: &str| {
        path.starts_with("lm_head.")
            || (model.is_tied() && matches!(path, "shared.weight" | "model.embed_tokens.weight"))
    };
    let mut flops = 0.0;
    for (path, shape) in gems_models::parameter_paths(model) {
        if shape.len() != 2 || path.contains("relative_attention_bias") {
            continue;
        }
        let weights = (shape[0] * shape[1]) as f64;
        let seen = match model.kind() {
            _ if output_head(&path) => labelled,
            ModelKind::T5 if path.starts_with("encoder.block.") => tokens,
            ModelKind::T5 if path.starts_with("decoder.block.") => labelled,
            ModelKind::Qwen2 if path.starts_with("model.layers.") => tokens,
            _ => 0.0,
        };
        flops += 6.0 * weights * seen;
    }
    flops
}

/// GFLOP/s of an f32 `size × size` matmul on `device` (median of 5 after a warm-up).
/// The largest `--matmul-size`: 8.8 TFLOP, about a minute on a CPU of 150 GFLOP/s.
const MAX_MATMUL_SIZE: usize = 16384;

fn matmul_gflops(size: usize, device: &Device) -> f64 {
    device.seed(1);
    let a = Tensor::<2>::random([size, size], Distribution::Normal(0.0, 1.0), device);
    let b = Tensor::<2>::random([size, size], Distribution::Normal(0.0, 1.0), device);
    let elapsed = median_time(5, device, || {
        let _ = a.clone().matmul(b.clone());
    });
    2.0 * (size as f64).powi(3) / elapsed.as_secs_f64() / 1e9
}

fn print_train_table(report: &TrainReport) {
    println!("{}", report.machine.line());
    println!(
        "model {} ({:.1} M parameters), batch {} (requests: {}; {} tokens and {:.1} GFLOP of forward and backward passes per step), {} warm-up + {} timed steps, T = {}, ranks r_s = {} and r_t = {}",
        report.model,
        report.parameters as f64 / 1e6,
        report.batch_size,
        report.requests,
        report.tokens_per_step,
        report.flops_per_step / 1e9,
        report.warmup,
        report.steps,
        report.refresh_every,
        report.shared_rank,
        report.task_rank
    );
    if let Some(rate) = report.matmul_gflops {
        println!("f32 matmul on this device: {rate:.1} GFLOP/s");
    }
    println!();
    println!(
        "| method | step (ms) | refresh step (ms) | amortised at T (ms) | samples/s | tokens/s | GFLOP/s | optimizer GFLOP/step | state (MB) | peak memory (MB) | device reads: step / refresh | step vs AdamW (quartiles) | median's 95% interval | state vs AdamW |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let or_dash = |value: Option<f64>, digits: usize| {
        value.map_or("—".to_string(), |v| format!("{v:.digits$}"))
    };
    for m in &report.methods {
        println!(
            "| {} | {:.1} | {} | {} | {:.1} | {:.0} | {:.2} | {:.1} | {:.2} | {} | {} / {} | {} | {} | {} |",
            m.method,
            m.step_ms,
            or_dash(m.refresh_step_ms, 1),
            or_dash(m.amortised_refresh_ms, 2),
            m.samples_per_s,
            m.tokens_per_s,
            m.gflops,
            m.optimizer_flops_per_step / 1e9,
            m.optimizer_state_bytes as f64 / 1e6,
            m.peak_device_bytes
                .map_or("n/a".to_string(), |b| format!("{:.0}", b as f64 / 1e6)),
            m.device_reads.step,
            m.device_reads
                .refresh_step
                .map_or("—".to_string(), |r| r.to_string()),
            m.vs_adamw
                .as_ref()
                .map_or("—".to_string(), |r| match r.effective_step_quartiles {
                    Some([q1, q3]) => format!("{:.2} ({q1:.2}–{q3:.2})", r.effective_step),
                    None => format!("{:.2}", r.effective_step),
                }),
            m.vs_adamw
                .as_ref()
                .and_then(|r| r.effective_step_interval)
                .map_or("—".to_string(), |[low, high]| format!(
                    "{low:.2}–{high:.2}"
                )),
            or_dash(m.vs_adamw.as_ref().map(|r| r.optimizer_state), 3),
        );
    }
    if let Some(scaling) = &report.scaling {
        print_scaling_table(scaling, report.batch_size);
    }
}

fn print_scaling_table(scaling: &Scaling, batch_size: usize) {
    println!();
    println!(
        "data-parallel ({} exchange) over {}{}: each device runs {batch_size} requests per step",
        scaling.exchange,
        scaling.devices.join(", "),
        if scaling.one_adapter {
            " (logical devices sharing one adapter: overhead, not speed-up)"
        } else {
            ""
        }
    );
    println!();
    println!(
        "| method | devices | samples per step | step (ms) | refresh step (ms) | samples/s | tokens/s | scaling efficiency | vs single-device step |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in &scaling.rows {
        println!(
            "| {} | {} | {} | {:.1} | {} | {:.1} | {:.0} | {:.2} | {} |",
            row.method,
            row.devices,
            row.samples_per_step,
            row.step_ms,
            row.refresh_step_ms
                .map_or("—".to_string(), |v| format!("{v:.1}")),
            row.samples_per_s,
            row.tokens_per_s,
            row.scaling_efficiency,
            row.vs_single_device_step
                .map_or("—".to_string(), |v| format!("{v:.2}×")),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// decode

/// What `gems bench decode` reports.
#[derive(Debug, Serialize)]
struct DecodeReport {
    machine: Machine,
    model: String,
    batch_size: usize,
    prompt_tokens: usize,
    new_tokens: usize,
    beam_width: usize,
    candidates: usize,
    measures: Vec<DecodeTiming>,
}

/// One decoding measure.
#[derive(Debug, Serialize)]
struct DecodeTiming {
    measure: String,
    median_ms: f64,
    requests_per_s: f64,
    /// Generated tokens per second (greedy only).
    tokens_per_s: Option<f64>,
}

fn bench_decode(args: &DecodeBenchArgs) -> Result<()> {
    positive(args.batch_size, "--batch-size")?;
    positive(args.prompt_tokens, "--prompt-tokens")?;
    positive(args.new_tokens, "--new-tokens")?;
    positive(args.beam_width, "--beam-width")?;
    positive(args.candidates, "--candidates")?;
    let device = gems_core::device_from_name(&args.model.backend)?;
    let machine = Machine::of(&args.model.backend, &device);
    let (config, model_name) = model_config(&args.model)?;
    let model = load_model(&args.model, &config, &device)?;
    let vocab = model.vocab_size();
    if vocab < SEMANTIC_ID_VOCAB {
        return Err(CliError::Settings(format!(
            "{model_name}: a vocabulary of {vocab} tokens is too small for the beam-search workload \
             (semantic identifiers use token ids up to {SEMANTIC_ID_VOCAB})"
        )));
    }
    let prompts = random_prompts(args.batch_size, args.prompt_tokens, vocab, 7);
    let tries = semantic_id_tries(args.batch_size, args.candidates, 500)?;
    let requests = args.batch_size as f64;
    let generated = (args.batch_size * args.new_tokens) as f64;
    let mut failure = None;
    let mut measure = |name: String, tokens: Option<f64>, run: &mut dyn FnMut() -> Result<()>| {
        let elapsed = median_time(args.repeats, &device, || {
            if let Err(error) = run() {
                failure.get_or_insert(error);
            }
        });
        DecodeTiming {
            measure: name,
            median_ms: ms(elapsed),
            requests_per_s: requests / elapsed.as_secs_f64(),
            tokens_per_s: tokens.map(|t| t / elapsed.as_secs_f64()),
        }
    };
    let measures = vec![
        measure(
            format!("greedy {} tokens, cache", args.new_tokens),
            Some(generated),
            &mut || -> Result<()> {
                gems_models::greedy(&model, &prompts, args.new_tokens)?;
                Ok(())
            },
        ),
        measure(
            format!("greedy {} tokens, no cache", args.new_tokens),
            Some(generated),
            &mut || -> Result<()> {
                gems_models::greedy(&Uncached(&model), &prompts, args.new_tokens)?;
                Ok(())
            },
        ),
        measure(
            format!(
                "beam {} over {} candidates, cache",
                args.beam_width, args.candidates
            ),
            None,
            &mut || -> Result<()> {
                gems_models::constrained_beam_search(
                    &model,
                    &prompts,
                    Tries::PerRequest(&tries),
                    args.beam_width,
                )?;
                Ok(())
            },
        ),
    ];
    if let Some(error) = failure {
        return Err(error);
    }
    let report = DecodeReport {
        machine,
        model: model_name,
        batch_size: args.batch_size,
        prompt_tokens: args.prompt_tokens,
        new_tokens: args.new_tokens,
        beam_width: args.beam_width,
        candidates: args.candidates,
        measures,
    };
    if args.model.json {
        print_json(&report);
        return Ok(());
    }
    println!("{}", report.machine.line());
    println!(
        "model {}, {} requests of {} prompt tokens",
        report.model, report.batch_size, report.prompt_tokens
    );
    println!();
    println!("| measure | median (ms) | requests/s | tokens/s |");
    println!("|---|---:|---:|---:|");
    for m in &report.measures {
        println!(
            "| {} | {:.1} | {:.2} | {} |",
            m.measure,
            m.median_ms,
            m.requests_per_s,
            m.tokens_per_s.map_or("—".into(), |t| format!("{t:.1}"))
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// svd

/// What `gems bench svd` reports.
#[derive(Debug, Serialize)]
struct SvdReport {
    machine: Machine,
    model: String,
    rank: usize,
    shapes: Vec<SvdTiming>,
}

/// Exact against randomized at one shape.
#[derive(Debug, Serialize)]
struct SvdTiming {
    /// `[d_in, d_out]`, as Burn stores the weight.
    shape: [usize; 2],
    /// Projected matrices of the model with this shape.
    matrices: usize,
    exact_ms: f64,
    randomized_ms: f64,
    /// Energy the randomized basis captures, as a fraction of the exact basis's.
    energy_vs_exact: f64,
}

fn bench_svd(args: &SvdBenchArgs) -> Result<()> {
    positive(args.repeats, "--repeats")?;
    let device = gems_core::device_from_name(&args.model.backend)?;
    let machine = Machine::of(&args.model.backend, &device);
    let (config, model_name) = model_config(&args.model)?;
    // Shapes only: the plan reads parameter shapes, so random weights on the CPU will do.
    let shapes_model = Backbone::new(&config, &Device::flex())?;
    let rank = args
        .rank
        .unwrap_or((config.hidden_size() / 4).clamp(1, 128));
    let optimizer = GemsConfig {
        shared_rank: rank,
        ..GemsConfig::default()
    }
    .init()?;
    let mut shapes: Vec<([usize; 2], usize)> = Vec::new();
    for plan in optimizer.plan(&shapes_model, 2) {
        if plan.treatment != Treatment::Projected {
            continue;
        }
        let shape = [plan.shape[0], plan.shape[1]];
        match shapes.iter_mut().find(|(s, _)| *s == shape) {
            Some((_, count)) => *count += 1,
            None => shapes.push((shape, 1)),
        }
    }
    if shapes.is_empty() {
        return Err(CliError::Settings(format!(
            "{model_name}: the model has no projected matrix"
        )));
    }
    let mut timings = Vec::new();
    for (shape, matrices) in shapes {
        if rank > shape[0].min(shape[1]) {
            return Err(CliError::Settings(format!(
                "--rank {rank} exceeds the smaller side of the {shape:?} matrices"
            )));
        }
        let matrix = power_law_matrix(
            shape[0],
            shape[1],
            (shape[0] * 31 + shape[1]) as u64,
            &device,
        );
        let basis = |method: &SvdMethod| -> Result<(Duration, Tensor<2>)> {
            let mut rng = ChaCha8Rng::seed_from_u64(0);
            let mut found = None;
            let mut failure = None;
            let elapsed = median_time(args.repeats, &device, || {
                match top_left_singular_vectors(matrix.clone(), rank, method, None, &mut rng) {
                    Ok(basis) => found = Some(basis),
                    Err(error) => failure = Some(error),
                }
            });
            match (found, failure) {
                (_, Some(error)) => Err(error.into()),
                (Some(basis), None) => Ok((elapsed, basis)),
                (None, None) => unreachable!("median_time runs the workload"),
            }
        };
        let (exact_time, exact) = basis(&SvdMethod::Exact)?;
        let (randomized_time, randomized) = basis(&SvdMethod::default())?;
        timings.push(SvdTiming {
            shape,
            matrices,
            exact_ms: ms(exact_time),
            randomized_ms: ms(randomized_time),
            energy_vs_exact: captured_energy(&randomized, &matrix)
                / captured_energy(&exact, &matrix),
        });
    }
    let report = SvdReport {
        machine,
        model: model_name,
        rank,
        shapes: timings,
    };
    if args.model.json {
        print_json(&report);
        return Ok(());
    }
    println!("{}", report.machine.line());
    println!(
        "model {}: top {} left singular vectors of power-law matrices at its projected shapes",
        report.model, report.rank
    );
    println!();
    println!(
        "| shape [in, out] | matrices | exact (ms) | randomized (ms) | speed-up | energy vs exact |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for t in &report.shapes {
        println!(
            "| {:?} | {} | {:.1} | {:.1} | {:.1}× | {:.4} |",
            t.shape,
            t.matrices,
            t.exact_ms,
            t.randomized_ms,
            t.exact_ms / t.randomized_ms,
            t.energy_vs_exact
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_args;

    #[test]
    fn layers_is_refused_without_a_preset() {
        let args: TrainBenchArgs = parse_args(&["--preset", "t5-small", "--layers", "1"]).unwrap();
        assert_eq!(args.model.layers, Some(1));
        for model in [["--model-config", "t5.json"], ["--model-dir", "t5"]] {
            let error =
                parse_args::<TrainBenchArgs>(&[model[0], model[1], "--layers", "1"]).unwrap_err();
            assert!(
                error.contains("--layers") && error.contains(model[0]),
                "{model:?}: {error}"
            );
        }
        let error = parse_args::<TrainBenchArgs>(&["--layers", "1"]).unwrap_err();
        assert!(error.contains("--preset"), "{error}");
    }

    #[test]
    fn the_median_interval_takes_the_sign_test_ranks() {
        // The ranks of the published tables of the sign-test interval (95%, two-sided), as
        // 0-based indices: 6 values are the fewest that give one (their extremes, 96.9%).
        assert_eq!(median_interval_ranks(5), None);
        assert_eq!(median_interval_ranks(6), Some((0, 5)));
        assert_eq!(median_interval_ranks(12), Some((2, 9)));
        assert_eq!(median_interval_ranks(24), Some((6, 17)));
        assert_eq!(median_interval_ranks(100), Some((39, 60)));
        // Far past where 2⁻ⁿ underflows: symmetric around the middle, about 1.96·√n/2 wide.
        let (low, high) = median_interval_ranks(2000).unwrap();
        assert_eq!((low, high), (955, 1044));

        let steps: Vec<(usize, f64)> = (0..12).map(|i| (i, 100.0 + i as f64)).collect();
        let reference: Vec<(usize, f64)> = (0..12).map(|i| (i, 100.0)).collect();
        let paired = paired_ratios(&steps, &reference).unwrap();
        assert_eq!(paired.quartiles, [1.03, 1.06, 1.09]);
        assert_eq!(paired.median_interval, Some([1.02, 1.09]));
    }

    #[test]
    fn presets_have_the_real_shapes() {
        let count = |preset: Preset| {
            let model = Backbone::new(&preset.config(None), &Device::flex()).unwrap();
            burn::module::Module::num_params(&model)
        };
        // The parameter count of Hugging Face's t5-small; t5-base by its published sizes.
        assert_eq!(count(Preset::T5Small), 60_506_624);
        let ModelConfig::T5(base) = Preset::T5Base.config(None) else {
            panic!("not T5")
        };
        assert_eq!(
            (
                base.d_model,
                base.d_kv,
                base.d_ff,
                base.num_layers,
                base.num_heads
            ),
            (768, 64, 3072, 12, 12)
        );
        assert_eq!(Preset::T5Small.config(Some(2)).vocab_size(), 32128);
        let qwen = Preset::Qwen25Half.config(Some(1));
        let ModelConfig::Qwen2(config) = &qwen else {
            panic!("not Qwen2")
        };
        assert_eq!(
            (
                config.hidden_size,
                config.intermediate_size,
                config.num_hidden_layers
            ),
            (896, 4864, 1)
        );
        assert_eq!(Preset::Qwen25Half.config(None).vocab_size(), 151_936);
    }

    #[test]
    fn device_counts_double_up_to_every_device() {
        assert_eq!(device_counts(1), [1]);
        assert_eq!(device_counts(2), [1, 2]);
        assert_eq!(device_counts(3), [1, 2, 3]);
        assert_eq!(device_counts(4), [1, 2, 4]);
        assert_eq!(device_counts(6), [1, 2, 4, 6]);
        assert_eq!(device_counts(8), [1, 2, 4, 8]);
    }

    #[test]
    fn the_flop_estimate_counts_each_weight_once_per_token() {
        // A T5 of known sizes: 6 · (encoder weights · source tokens + decoder weights · target
        // tokens + output head · target tokens), counted here from the architecture by hand.
        let settings = TrainSettings::default();
        let experiment = Experiment::prepare(&settings, None).unwrap();
        let config = T5Config::new(100, 8, 2, 16, 1, 2, FeedForwardProj::RELU);
        let model = Backbone::new(&ModelConfig::T5(config), &Device::flex()).unwrap();
        let flags = [
            "--batch-size",
            "2",
            "--prompt-tokens",
            "5",
            "--target-tokens",
            "3",
        ];
        let args: TrainBenchArgs = parse_args(&flags).unwrap();
        let examples = requests(&args, args.batch_size, model.vocab_size());
        // Encoder block: q k v o (8×4, 8×4, 8×4, 4×8: 2 heads of 2) and the MLP (8×16, 16×8);
        // decoder block: self- and cross-attention and the same MLP; the tied head 100×8.
        let attention = 4 * 8 * 4;
        let mlp = 2 * 8 * 16;
        let encoder = attention + mlp;
        let decoder = 2 * attention + mlp;
        let head = 100 * 8;
        let expected = 6.0 * (encoder * 2 * 5 + (decoder + head) * 2 * 3) as f64;
        assert_eq!(flops_per_step(&model, &examples, &experiment), expected);
        assert_eq!(tokens_per_step(&examples, &experiment), 2 * (5 + 3));
    }
}
