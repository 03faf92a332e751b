//! Generation: a step-by-step decoding interface ([`StepDecoder`]), trie-constrained beam search
//! and greedy decoding.

mod beam_search;
mod greedy;
mod trie;

use burn::tensor::Tensor;

use crate::error::ModelError;

pub use beam_search::{DEFAULT_BEAM_WIDTH, RankedItem, Tries, constrained_beam_search};
pub use greedy::greedy;
pub use trie::{NodeId, PrefixTrie};

/// A model decoded one token per row at a time, which generation drives.
///
/// Rows start as one per prompt; [`StepDecoder::select`] reorders them (beam search keeps,
/// drops and duplicates rows). Implemented by [`crate::Backbone`] (with its key-value cache) and
/// [`crate::Uncached`] (recomputing the whole sequence every step).
pub trait StepDecoder {
    /// Everything the decoder keeps between steps (the cache).
    type State;

    /// Starts decoding one row per prompt (token ids); returns the state and the logits
    /// `[prompts, vocab]` of the first generated token.
    fn start(&self, prompts: &[Vec<u32>]) -> Result<(Self::State, Tensor<2>), ModelError>;

    /// Appends `tokens` (one per row) and returns the logits `[rows, vocab]` of the next token.
    fn step(&self, state: &mut Self::State, tokens: &[u32]) -> Tensor<2>;

    /// Keeps the rows `rows` of the state, in that order (a row may repeat).
    fn select(&self, state: Self::State, rows: &[usize]) -> Self::State;
}
