//! Step-by-step decoding of a [`Backbone`]: with its key-value cache ([`Backbone`] as a
//! [`StepDecoder`]) or by recomputing the whole sequence every step ([`Uncached`], the baseline
//! the cache is measured and checked against).
//!
//! Prompts are padded by the model's convention: T5 encoder inputs on the right, Qwen2 prompts on
//! the left so that every row's next token lands in the same column.

use burn::tensor::{Device, Int, Tensor};

use crate::backbone::Backbone;
use crate::cache::row_index;
use crate::error::ModelError;
use crate::generation::StepDecoder;
use crate::padding::{Side, int_matrix, pad};
use crate::qwen2::Qwen2Cache;
use crate::t5::T5Cache;

/// `[rows, 1]` column of one token per row.
fn column(tokens: &[u32], device: &Device) -> Tensor<2, Int> {
    let rows: Vec<Vec<i64>> = tokens.iter().map(|&t| vec![t as i64]).collect();
    int_matrix(&rows, "tokens", device).expect("one token per row")
}

/// The last position of `[batch, length, width]` logits or hidden states, `[batch, width]`.
fn last(logits: Tensor<3>) -> Tensor<2> {
    let [batch, length, width] = logits.dims();
    logits.narrow(1, length - 1, 1).reshape([batch, width])
}

/// The cached decoding state of a [`Backbone`].
// Tensor handles: the size difference is a few hundred bytes, moved once per step.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum DecodingCache {
    /// T5: encoder side once, decoder self-attention per step.
    T5(T5Cache),
    /// Qwen2: every layer's keys and values.
    Qwen2(Qwen2Cache),
}

impl StepDecoder for Backbone {
    type State = DecodingCache;

    fn start(&self, prompts: &[Vec<u32>]) -> Result<(DecodingCache, Tensor<2>), ModelError> {
        let device = self.device();
        match self {
            Self::T5(model) => {
                let (ids, mask) = pad(prompts, model.config().pad_token_id, Side::Right, &device)?;
                let mut cache = model.start_cache(ids, mask);
                let start = vec![model.config().decoder_start_token_id; prompts.len()];
                let logits = model.forward_cached(column(&start, &device), &mut cache);
                Ok((DecodingCache::T5(cache), last(logits)))
            }
            Self::Qwen2(model) => {
                let (ids, mask) = pad(prompts, model.config().pad_token_id(), Side::Left, &device)?;
                let (logits, cache) = model.start_cache(ids, mask);
                Ok((DecodingCache::Qwen2(cache), last(logits)))
            }
        }
    }

    fn step(&self, state: &mut DecodingCache, tokens: &[u32]) -> Tensor<2> {
        let tokens = column(tokens, &self.device());
        match (self, state) {
            (Self::T5(model), DecodingCache::T5(cache)) => {
                last(model.forward_cached(tokens, cache))
            }
            (Self::Qwen2(model), DecodingCache::Qwen2(cache)) => {
                last(model.forward_cached(tokens, cache))
            }
            _ => panic!("a decoding cache is used with the model that started it"),
        }
    }

    fn select(&self, state: DecodingCache, rows: &[usize]) -> DecodingCache {
        match state {
            DecodingCache::T5(cache) => DecodingCache::T5(cache.select_rows(rows)),
            DecodingCache::Qwen2(cache) => DecodingCache::Qwen2(cache.select_rows(rows)),
        }
    }
}

/// Decoding without a key-value cache: every step recomputes the decoder (T5; the encoder output
/// is kept, as HF does with `use_cache=False`) or the whole sequence (Qwen2), and runs the output
/// head on the last position only. For benchmarks and for checking the cache.
#[derive(Debug, Clone, Copy)]
pub struct Uncached<'a>(pub &'a Backbone);

/// The state of [`Uncached`]: the prompts and the tokens generated so far, per row.
#[derive(Debug, Clone)]
pub struct UncachedState {
    prompts: Vec<Vec<u32>>,
    generated: Vec<Vec<u32>>,
    /// T5 only: encoder output and mask, computed once.
    encoded: Option<(Tensor<3>, Tensor<2, Int>)>,
}

impl Uncached<'_> {
    fn logits(&self, state: &UncachedState) -> Tensor<2> {
        let device = self.0.device();
        match self.0 {
            Backbone::T5(model) => {
                let (encoder_hidden, mask) = state
                    .encoded
                    .clone()
                    .expect("T5 state holds the encoder output");
                let start = model.config().decoder_start_token_id;
                let decoder: Vec<Vec<u32>> = state
                    .generated
                    .iter()
                    .map(|g| std::iter::once(start).chain(g.iter().copied()).collect())
                    .collect();
                let (decoder_ids, _) = pad(&decoder, 0, Side::Right, &device)
                    .expect("decoder rows are non-empty and equal");
                model.lm_logits(last(model.decode_probed(
                    decoder_ids,
                    encoder_hidden,
                    mask,
                    None,
                )))
            }
            Backbone::Qwen2(model) => {
                let rows: Vec<Vec<u32>> = state
                    .prompts
                    .iter()
                    .zip(&state.generated)
                    .map(|(p, g)| p.iter().chain(g).copied().collect())
                    .collect();
                let (ids, mask) = pad(&rows, model.config().pad_token_id(), Side::Left, &device)
                    .expect("prompts are non-empty");
                model.lm_logits(last(model.hidden_states(ids, mask, None)))
            }
        }
    }
}

impl StepDecoder for Uncached<'_> {
    type State = UncachedState;

    fn start(&self, prompts: &[Vec<u32>]) -> Result<(UncachedState, Tensor<2>), ModelError> {
        let device = self.0.device();
        let encoded = match self.0 {
            Backbone::T5(model) => {
                let (ids, mask) = pad(prompts, model.config().pad_token_id, Side::Right, &device)?;
                Some((model.encode(ids, mask.clone()), mask))
            }
            Backbone::Qwen2(model) => {
                pad(prompts, model.config().pad_token_id(), Side::Left, &device)?;
                None
            }
        };
        let state = UncachedState {
            prompts: prompts.to_vec(),
            generated: vec![Vec::new(); prompts.len()],
            encoded,
        };
        let logits = self.logits(&state);
        Ok((state, logits))
    }

    fn step(&self, state: &mut UncachedState, tokens: &[u32]) -> Tensor<2> {
        for (generated, &token) in state.generated.iter_mut().zip(tokens) {
            generated.push(token);
        }
        self.logits(state)
    }

    fn select(&self, state: UncachedState, rows: &[usize]) -> UncachedState {
        let index = row_index(rows, &self.0.device());
        UncachedState {
            prompts: rows.iter().map(|&r| state.prompts[r].clone()).collect(),
            generated: rows.iter().map(|&r| state.generated[r].clone()).collect(),
            encoded: state
                .encoded
                .map(|(hidden, mask)| (hidden.select(0, index.clone()), mask.select(0, index))),
        }
    }
}
