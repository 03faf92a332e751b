//! Qwen2 / Qwen2.5 (decoder-only), as in HF `modeling_qwen2.py`.
//!
//! RMSNorm before attention and MLP, rotary position embeddings (base `rope_theta`),
//! grouped-query attention with biased q/k/v projections, SwiGLU MLP, and `lm_head` tied to the
//! token embedding when the checkpoint has no `lm_head.weight` (Qwen2.5 up to 3B). Qwen2 has no
//! dropout besides `attention_dropout`, which is 0 in every released checkpoint and not applied.

mod config;
mod model;

pub use config::{Qwen2Config, RopeParameters};
pub use model::{Qwen2Cache, Qwen2ForCausalLM};
