//! T5 (Raffel et al., 2020), v1.0 and v1.1 / FLAN, as in HF `modeling_t5.py`.
//!
//! - v1.0: ReLU feed-forward (`wi`, `wo`), `lm_head` tied to `shared` and the decoder output scaled
//!   by `d_model^-0.5` before it.
//! - v1.1 / FLAN: `gated-gelu` feed-forward (`wi_0`, `wi_1`, `wo`, tanh GELU), untied `lm_head`, no scaling.
//! - Attention without `1/sqrt(d)` scaling; a learned relative-position bias in block 0 of each
//!   stack, reused by the later blocks; buckets bidirectional in the encoder, causal in the decoder.
//! - RMS layer norms (`T5LayerNorm`) before every sublayer and at the end of each stack.

mod attention;
mod config;
mod model;

pub use config::{Activation, FeedForwardProj, T5Config};
pub use model::{T5Cache, T5ForConditionalGeneration};
