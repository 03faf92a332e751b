//! # gems-rs
//!
//! GEMS (Gradient Multi-Subspace Tuning) for unified generative search and recommendation,
//! on [Burn](https://burn.dev). This umbrella crate re-exports the workspace's libraries and
//! holds the examples (`examples/`):
//!
//! - [`gems_core`]: the optimizer (embeddable in any Burn project);
//! - [`gems_models`]: T5 and Qwen2 with Hugging Face checkpoint loading and constrained decoding;
//! - [`gems_data`]: datasets, prompts, item identifiers and metrics.

#![warn(missing_docs)]

pub use gems_core;
pub use gems_data;
pub use gems_models;
