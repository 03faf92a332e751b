//! # gems-models
//!
//! The two backbones of GEMS as Burn modules that run unchanged on every backend: **T5** (v1.0 and
//! v1.1 / FLAN, encoder-decoder) and **Qwen2 / Qwen2.5** (decoder-only), loaded from and saved to
//! Hugging Face directories, with key-value caches and trie-constrained beam search.
//!
//! - Parameter paths are the Hugging Face tensor names ([`parameter_paths`]), so optimizer
//!   predicates and checkpoints speak the same language.
//! - [`Backbone`] is the uniform surface: [`Backbone::load`], [`Backbone::save`],
//!   [`Backbone::loss`] on an [`LmBatch`], [`Backbone::logits`], [`Backbone::forward_observed`]
//!   (inputs of every attention and MLP linear layer, for the null-space statistics),
//!   [`Backbone::resize_token_embeddings`].
//! - Generation: [`PrefixTrie`], [`constrained_beam_search`], [`greedy`], driven through
//!   [`StepDecoder`], which [`Backbone`] implements with its cache and [`Uncached`] without.
//!
//! Correctness is pinned by golden tests against `transformers` (`scripts/make_fixtures.py`).

mod backbone;
mod cache;
mod config;
mod decoding;
mod error;
pub mod generation;
mod loading;
mod nn;
mod observer;
mod paths;
pub mod qwen2;
mod saving;
pub mod t5;
mod tokenizer;
mod vocab;

pub use backbone::{Backbone, IGNORE_INDEX, LmBatch};
pub use cache::KeyValue;
pub use config::{ModelConfig, ModelKind, TokenIds};
pub use decoding::{DecodingCache, Uncached, UncachedState};
pub use error::{ModelError, ShapeMismatch};
pub use generation::{
    DEFAULT_BEAM_WIDTH, NodeId, PrefixTrie, RankedItem, StepDecoder, Tries,
    constrained_beam_search, greedy,
};
pub use loading::{WEIGHTS_FILE, WEIGHTS_INDEX_FILE};
pub use nn::RmsNorm;
pub use observer::LinearInputObserver;
pub use paths::parameter_paths;
pub use tokenizer::load_tokenizer;
