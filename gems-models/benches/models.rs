//! Throughput of the backbones on the CPU (flex): training step, decoding with and without the
//! key-value cache, and trie-constrained beam search. Random weights; layer counts reduced where
//! noted. Compare with `scripts/bench_torch_models.py`, which runs the same shapes in PyTorch.
//!
//! `cargo bench -p gems-models --bench models` (`-- quick` for fewer repetitions).

use std::time::Duration;

use burn::tensor::Device;
use gems_models::qwen2::Qwen2Config;
use gems_models::t5::T5Config;
use gems_models::workload::{median_time, random_prompts, semantic_id_tries, training_batch};
use gems_models::{
    Backbone, ModelConfig, StepDecoder, Tries, Uncached, constrained_beam_search, greedy,
};

fn row(name: &str, what: &str, amount: f64, unit: &str, elapsed: Duration) {
    println!(
        "| {name:<28} | {what:<34} | {:>10.1} {unit:<10} | {:>8.1} ms |",
        amount / elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e3
    );
}

fn bench_training(name: &str, config: &ModelConfig, repeats: usize) {
    let device = Device::flex().autodiff();
    let model = Backbone::new(config, &device).unwrap();
    let (batch, tokens) = training_batch(&model, 8, 64, 8, &device).unwrap();
    let elapsed = median_time(repeats, &device, || {
        let loss = model.loss(&batch).unwrap();
        let _ = loss.backward();
    });
    row(
        name,
        "forward+backward, 8 x (64+8) tokens",
        tokens as f64,
        "tokens/s",
        elapsed,
    );
}

/// Greedy decoding of 64 tokens after `batch` prompts of 32 tokens, with and without the cache.
fn bench_decoding(name: &str, model: &Backbone, batch: usize, repeats: usize) {
    let prompts = random_prompts(batch, 32, model.vocab_size(), 7);
    let steps = 64;
    let generated = (prompts.len() * steps) as f64;
    let device = model.device();
    let cached = median_time(repeats, &device, || {
        greedy(model, &prompts, steps).unwrap();
    });
    row(
        name,
        &format!("greedy {batch} x 64 tokens, cache"),
        generated,
        "tokens/s",
        cached,
    );
    let uncached = median_time(repeats.min(2), &device, || {
        greedy(&Uncached(model), &prompts, steps).unwrap();
    });
    row(
        name,
        &format!("greedy {batch} x 64 tokens, no cache"),
        generated,
        "tokens/s",
        uncached,
    );
    println!(
        "| {name:<28} | {:<34} | {:>10.1}x {:<9} | {:>11} |",
        "cache speed-up",
        uncached.as_secs_f64() / cached.as_secs_f64(),
        "",
        ""
    );
}

/// Beam search over 100 candidates per request, each a 4-token semantic identifier (3 codes and
/// end-of-sequence, as with TIGER-style ids), beam width 20.
fn bench_beam_search<D: StepDecoder>(
    name: &str,
    what: &str,
    decoder: &D,
    vocab: usize,
    repeats: usize,
) {
    let requests = 4;
    let prompts = random_prompts(requests, 64, vocab, 100);
    let tries = semantic_id_tries(requests, 100, 500).unwrap();
    let elapsed = median_time(repeats, &Device::flex(), || {
        constrained_beam_search(decoder, &prompts, Tries::PerRequest(&tries), 20).unwrap();
    });
    row(name, what, requests as f64, "requests/s", elapsed);
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let repeats = if quick { 1 } else { 3 };
    println!(
        "| model                        | measure                            | throughput            | median      |"
    );
    println!(
        "|------------------------------|------------------------------------|-----------------------|-------------|"
    );

    let t5_small = ModelConfig::T5(T5Config::t5_small(32128));
    let qwen = ModelConfig::Qwen2(Qwen2Config::qwen2_5_0_5b(4));
    bench_training("T5-small (6+6 layers)", &t5_small, repeats);
    bench_training("Qwen2.5-0.5B shape, 4 layers", &qwen, repeats);

    let device = Device::flex();
    let t5 = Backbone::new(&t5_small, &device).unwrap();
    bench_decoding("T5-small (6+6 layers)", &t5, 4, repeats);
    bench_decoding("T5-small (6+6 layers)", &t5, 16, repeats);
    let qwen_model = Backbone::new(&qwen, &device).unwrap();
    bench_decoding("Qwen2.5-0.5B shape, 4 layers", &qwen_model, 4, repeats);

    bench_beam_search(
        "T5-small (6+6 layers)",
        "beam 20, 100 candidates, cache",
        &t5,
        32128,
        repeats,
    );
    bench_beam_search(
        "T5-small (6+6 layers)",
        "beam 20, 100 candidates, no cache",
        &Uncached(&t5),
        32128,
        repeats.min(2),
    );
}
