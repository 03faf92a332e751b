//! Throughput of the backbones on the CPU (flex): training step, decoding with and without the
//! key-value cache, and trie-constrained beam search. Random weights; layer counts reduced where
//! noted. Compare with `scripts/bench_torch_models.py`, which runs the same shapes in PyTorch.
//!
//! `cargo bench -p gems-models --bench models` (`-- quick` for fewer repetitions).

use std::time::{Duration, Instant};

use burn::tensor::Device;
use gems_models::qwen2::Qwen2Config;
use gems_models::t5::T5Config;
use gems_models::{
    Backbone, LmBatch, ModelConfig, PrefixTrie, StepDecoder, Tries, Uncached,
    constrained_beam_search, greedy,
};

/// Deterministic pseudo-random token ids in `1..vocab`.
fn tokens(count: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            1 + (state % (vocab as u64 - 1)) as u32
        })
        .collect()
}

/// Median wall time of `repeats` runs of `run`, after one warm-up run.
fn time(repeats: usize, mut run: impl FnMut()) -> Duration {
    run();
    let mut times: Vec<Duration> = (0..repeats)
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn row(name: &str, what: &str, amount: f64, unit: &str, elapsed: Duration) {
    println!(
        "| {name:<28} | {what:<34} | {:>10.1} {unit:<10} | {:>8.1} ms |",
        amount / elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e3
    );
}

/// A training batch: `batch` rows of `source` tokens; T5 targets of `target` tokens, Qwen2
/// prompt + target in one row with labels on the target.
fn training_batch(
    model: &Backbone,
    batch: usize,
    source: usize,
    target: usize,
    device: &Device,
) -> (LmBatch, usize) {
    let vocab = model.vocab_size();
    let ids = |length: usize, seed: u64| -> Vec<Vec<i64>> {
        (0..batch)
            .map(|r| {
                tokens(length, vocab, seed + r as u64)
                    .into_iter()
                    .map(i64::from)
                    .collect()
            })
            .collect()
    };
    match model.kind() {
        gems_models::ModelKind::T5 => {
            let input = ids(source, 1);
            let mask = vec![vec![1; source]; batch];
            let batch = LmBatch::from_rows(&input, &mask, &ids(target, 99), device).unwrap();
            (batch, input.len() * (source + target))
        }
        gems_models::ModelKind::Qwen2 => {
            let input = ids(source + target, 1);
            let mask = vec![vec![1; source + target]; batch];
            let labels: Vec<Vec<i64>> = input
                .iter()
                .map(|r| {
                    r.iter()
                        .enumerate()
                        .map(|(i, &t)| if i < source { -100 } else { t })
                        .collect()
                })
                .collect();
            let rows = input.len();
            (
                LmBatch::from_rows(&input, &mask, &labels, device).unwrap(),
                rows * (source + target),
            )
        }
    }
}

fn bench_training(name: &str, config: &ModelConfig, repeats: usize) {
    let device = Device::flex().autodiff();
    let model = Backbone::new(config, &device).unwrap();
    let (batch, tokens) = training_batch(&model, 8, 64, 8, &device);
    let elapsed = time(repeats, || {
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
    let prompts: Vec<Vec<u32>> = (0..batch)
        .map(|r| tokens(32, model.vocab_size(), 7 + r as u64))
        .collect();
    let steps = 64;
    let generated = (prompts.len() * steps) as f64;
    let cached = time(repeats, || {
        greedy(model, &prompts, steps).unwrap();
    });
    row(
        name,
        &format!("greedy {batch} x 64 tokens, cache"),
        generated,
        "tokens/s",
        cached,
    );
    let uncached = time(repeats.min(2), || {
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
    let prompts: Vec<Vec<u32>> = (0..requests)
        .map(|r| tokens(64, vocab, 100 + r as u64))
        .collect();
    let tries: Vec<PrefixTrie> = (0..requests)
        .map(|r| {
            let codes = tokens(300, 256, 500 + r as u64);
            PrefixTrie::from_sequences(
                codes
                    .chunks(3)
                    .map(|c| vec![c[0] + 2, c[1] + 258, c[2] + 514, 1]),
            )
            .unwrap()
        })
        .collect();
    let elapsed = time(repeats, || {
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
