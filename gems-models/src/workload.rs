//! Fixed-shape synthetic workloads for throughput measurements, shared by
//! `cargo bench -p gems-models` and `gems bench`: pseudo-random token ids (the same stream as
//! `scripts/bench_torch_models.py`), training batches, prompts, per-request tries of
//! semantic identifiers, and a median timer that synchronises the device.

use std::time::{Duration, Instant};

use burn::tensor::Device;

use crate::backbone::{Backbone, IGNORE_INDEX, LmBatch};
use crate::config::ModelKind;
use crate::error::ModelError;
use crate::generation::PrefixTrie;

/// `count` pseudo-random token ids in `1..vocab` (xorshift64 from `seed`).
pub fn random_tokens(count: usize, vocab: usize, seed: u64) -> Vec<u32> {
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

/// `rows` prompts of `length` random tokens; row `r` uses seed `seed + r`.
pub fn random_prompts(rows: usize, length: usize, vocab: usize, seed: u64) -> Vec<Vec<u32>> {
    (0..rows)
        .map(|r| random_tokens(length, vocab, seed + r as u64))
        .collect()
}

/// A training batch of `rows` rows for `model`, without padding: T5 gets `source` input and
/// `target` label tokens, Qwen2 one row of `source + target` tokens with labels on the last
/// `target`. Returns the batch and its number of tokens, `rows · (source + target)`.
pub fn training_batch(
    model: &Backbone,
    rows: usize,
    source: usize,
    target: usize,
    device: &Device,
) -> Result<(LmBatch, usize), ModelError> {
    let vocab = model.vocab_size();
    let ids = |length: usize, seed: u64| -> Vec<Vec<i64>> {
        random_prompts(rows, length, vocab, seed)
            .into_iter()
            .map(|row| row.into_iter().map(i64::from).collect())
            .collect()
    };
    let tokens = rows * (source + target);
    let batch = match model.kind() {
        ModelKind::T5 => {
            let mask = vec![vec![1; source]; rows];
            LmBatch::from_rows(&ids(source, 1), &mask, &ids(target, 99), device)?
        }
        ModelKind::Qwen2 => {
            let input = ids(source + target, 1);
            let mask = vec![vec![1; source + target]; rows];
            let labels: Vec<Vec<i64>> = input
                .iter()
                .map(|row| {
                    row.iter()
                        .enumerate()
                        .map(|(i, &t)| if i < source { IGNORE_INDEX } else { t })
                        .collect()
                })
                .collect();
            LmBatch::from_rows(&input, &mask, &labels, device)?
        }
    };
    Ok((batch, tokens))
}

/// Smallest vocabulary [`semantic_id_tries`] needs.
pub const SEMANTIC_ID_VOCAB: usize = 2 + 3 * 256;

/// One trie per request over `candidates` semantic identifiers of 4 tokens each (three codes
/// from codebooks of 256, at token offsets 2, 258 and 514, then the end-of-sequence token 1),
/// as TIGER-style identifiers look. Request `r` uses seed `seed + r`.
pub fn semantic_id_tries(
    requests: usize,
    candidates: usize,
    seed: u64,
) -> Result<Vec<PrefixTrie>, ModelError> {
    (0..requests)
        .map(|r| {
            let codes = random_tokens(3 * candidates, 256, seed + r as u64);
            PrefixTrie::from_sequences(
                codes
                    .chunks(3)
                    .map(|c| vec![c[0] + 2, c[1] + 258, c[2] + 514, 1]),
            )
        })
        .collect()
}

/// Median wall time of `repeats` runs of `run` after one warm-up run, `device` synchronised
/// after each run so that queued GPU work is counted.
pub fn median_time(repeats: usize, device: &Device, mut run: impl FnMut()) -> Duration {
    let mut timed = || {
        let start = Instant::now();
        run();
        device
            .sync()
            .expect("the device synchronises after a workload");
        start.elapsed()
    };
    timed();
    let mut times: Vec<Duration> = (0..repeats.max(1)).map(|_| timed()).collect();
    times.sort();
    times[times.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_follow_the_python_stream() {
        // `tokens(6, 32128, 7)` printed by scripts/bench_torch_models.py's own function: both
        // benchmarks must feed the models the same ids.
        assert_eq!(
            random_tokens(6, 32128, 7),
            [4794, 15918, 25588, 19039, 13977, 23969]
        );
        assert!(
            random_tokens(1000, 10, 3)
                .iter()
                .all(|&t| (1..10).contains(&t))
        );
    }

    #[test]
    fn tries_hold_every_candidate_once() {
        let tries = semantic_id_tries(2, 50, 500).unwrap();
        assert_eq!(tries.len(), 2);
        for trie in &tries {
            let sequences = trie.sequences();
            assert_eq!(sequences.len(), 50);
            assert!(sequences.iter().all(|(s, _)| s.len() == 4
                && s[3] == 1
                && (2..258).contains(&s[0])
                && (258..514).contains(&s[1])
                && (514..770).contains(&s[2])));
        }
    }
}
