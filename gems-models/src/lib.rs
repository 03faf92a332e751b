#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod backbone;
mod cache;
mod config;
mod decoding;
mod error;
mod factoring;
pub mod generation;
mod loading;
mod nn;
mod observer;
mod padding;
mod paths;
pub mod qwen2;
mod saving;
pub mod t5;
mod tokenizer;
mod vocab;
pub mod workload;

pub use backbone::{Backbone, IGNORE_INDEX, LmBatch};
pub use cache::KeyValue;
pub use config::{ModelConfig, ModelKind, TokenIds};
pub use decoding::{DecodingCache, Uncached, UncachedState};
pub use error::{ModelError, ShapeMismatch};
pub use factoring::{GradientFactoring, LinearGradientFactors};
pub use generation::{
    DEFAULT_BEAM_WIDTH, NodeId, PrefixTrie, RankedItem, StepDecoder, Tries,
    constrained_beam_search, greedy,
};
pub use loading::{CONFIG_FILE, WEIGHTS_FILE, WEIGHTS_INDEX_FILE};
pub use nn::RmsNorm;
pub use observer::LinearInputObserver;
pub use paths::{first_non_finite_parameter, parameter_paths};
pub use tokenizer::load_tokenizer;
pub use vocab::TokenMatrix;
