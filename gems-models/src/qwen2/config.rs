//! `Qwen2Config`: the keys of HF `Qwen2Config`, read from `config.json` as it is.
//!
//! Transformers-4 files (the hub's Qwen2.5 checkpoints) hold the rotary base in `rope_theta` and
//! a `sliding_window` that `use_sliding_window: false` switches off; transformers 5 writes
//! `rope_parameters: {rope_type, rope_theta}` and `layer_types`. Both are read; sliding-window
//! attention and scaled rotary embeddings are refused with a clear error rather than run wrongly.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::{
    TokenIds, checked_width, deserialize, in_memory, invalid, require_layer_counts, require_number,
    require_positive, require_token_ids, string_key,
};
use crate::error::ModelError;

/// Transformers 5's `rope_parameters`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RopeParameters {
    /// Only `"default"` is supported.
    #[serde(default)]
    pub rope_type: Option<String>,
    /// Base of the rotary frequencies.
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// Other keys (scaling factors of other rope types).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Configuration of a Qwen2 / Qwen2.5 model; field names are HF's `config.json` keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Qwen2Config {
    /// Rows of the token embedding.
    #[serde(default = "defaults::vocab_size")]
    pub vocab_size: usize,
    /// Width of the hidden states.
    #[serde(default = "defaults::hidden_size")]
    pub hidden_size: usize,
    /// Inner width of the SwiGLU MLP.
    #[serde(default = "defaults::intermediate_size")]
    pub intermediate_size: usize,
    /// Decoder layers.
    #[serde(default = "defaults::num_hidden_layers")]
    pub num_hidden_layers: usize,
    /// Query heads.
    #[serde(default = "defaults::num_attention_heads")]
    pub num_attention_heads: usize,
    /// Key-value heads (grouped-query attention); `num_attention_heads` when absent.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Width of one head; `hidden_size / num_attention_heads` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    /// MLP activation; only `"silu"` is supported.
    #[serde(default = "defaults::hidden_act")]
    pub hidden_act: String,
    /// Longest sequence the rotary embedding was trained for.
    #[serde(default = "defaults::max_position_embeddings")]
    pub max_position_embeddings: usize,
    /// Standard deviation of HF's normal initialisation.
    #[serde(default = "defaults::initializer_range")]
    pub initializer_range: f64,
    /// Epsilon of the RMS norms.
    #[serde(default = "defaults::rms_norm_eps")]
    pub rms_norm_eps: f64,
    /// Use the token embedding as `lm_head` (also when `lm_head.weight` is absent from the checkpoint).
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Transformers 4: base of the rotary frequencies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    /// Transformers 5: rotary parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_parameters: Option<RopeParameters>,
    /// Transformers 4: rotary scaling; only `null` or the default type is supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<Value>,
    /// Sliding-window attention; only `false` is supported (`sliding_window` is then ignored).
    #[serde(default)]
    pub use_sliding_window: bool,
    /// Padding token id, often absent.
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    /// Beginning-of-sequence token id.
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token id(s).
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,
    /// Every other key of the file, written back unchanged on save.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

mod defaults {
    pub fn vocab_size() -> usize {
        151936
    }
    pub fn hidden_size() -> usize {
        4096
    }
    pub fn intermediate_size() -> usize {
        22016
    }
    pub fn num_hidden_layers() -> usize {
        32
    }
    pub fn num_attention_heads() -> usize {
        32
    }
    pub fn hidden_act() -> String {
        "silu".into()
    }
    pub fn max_position_embeddings() -> usize {
        32768
    }
    pub fn initializer_range() -> f64 {
        0.02
    }
    pub fn rms_norm_eps() -> f64 {
        1e-6
    }
}

/// Rotary base when the config names none (HF's default).
const DEFAULT_ROPE_THETA: f64 = 10000.0;

impl Qwen2Config {
    /// The shape of Qwen2.5-0.5B (24 layers of width 896, 14 query and 2 key-value heads, tied),
    /// with `num_hidden_layers` layers.
    pub fn qwen2_5_0_5b(num_hidden_layers: usize) -> Self {
        Self::new(151936, 896, 4864, num_hidden_layers, 14, 2)
    }

    /// The project's default from-scratch decoder-only model: width 128, feed-forward 512,
    /// 2 layers, 4 query and 2 key-value heads, quick to train on two CPU cores.
    pub fn compact(vocab_size: usize) -> Self {
        Self::new(vocab_size, 128, 512, 2, 4, 2)
    }

    /// A configuration with Qwen2.5 defaults (tied embeddings, rotary base 10^6) for everything
    /// but the given sizes.
    pub fn new(
        vocab_size: usize,
        hidden_size: usize,
        intermediate_size: usize,
        num_hidden_layers: usize,
        num_attention_heads: usize,
        num_key_value_heads: usize,
    ) -> Self {
        Self {
            vocab_size,
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads: Some(num_key_value_heads),
            head_dim: None,
            hidden_act: defaults::hidden_act(),
            max_position_embeddings: defaults::max_position_embeddings(),
            initializer_range: defaults::initializer_range(),
            rms_norm_eps: defaults::rms_norm_eps(),
            tie_word_embeddings: true,
            rope_theta: Some(1_000_000.0),
            rope_parameters: None,
            rope_scaling: None,
            use_sliding_window: false,
            pad_token_id: None,
            bos_token_id: None,
            eos_token_id: None,
            extra: Map::new(),
        }
    }

    /// Key-value heads.
    pub fn key_value_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Width of one attention head.
    pub fn head_size(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// Base of the rotary frequencies, from either config style.
    pub fn rope_base(&self) -> f64 {
        self.rope_parameters
            .as_ref()
            .and_then(|p| p.rope_theta)
            .or(self.rope_theta)
            .unwrap_or(DEFAULT_ROPE_THETA)
    }

    /// Padding id: `pad_token_id`, else the first end-of-sequence id, else 0.
    pub fn pad_token_id(&self) -> u32 {
        self.pad_token_id
            .or_else(|| {
                self.eos_token_id
                    .as_ref()
                    .and_then(|ids| ids.to_vec().first().copied())
            })
            .unwrap_or(0)
    }

    /// Parses and checks a `config.json` value with `model_type: "qwen2"`.
    pub(crate) fn from_value(value: Value, path: &Path) -> Result<Self, ModelError> {
        if let Some(act) = string_key(&value, "hidden_act").filter(|act| *act != "silu") {
            return Err(unsupported(path, "hidden_act", act, "Qwen2 uses \"silu\""));
        }
        let config: Self = deserialize(value, path)?;
        config.validate(path)?;
        Ok(config)
    }

    /// Checks sizes and features that the model code relies on.
    pub fn check(&self) -> Result<(), ModelError> {
        self.validate(&in_memory())
    }

    fn validate(&self, path: &Path) -> Result<(), ModelError> {
        if self.hidden_act != "silu" {
            return Err(unsupported(
                path,
                "hidden_act",
                &self.hidden_act,
                "Qwen2 uses \"silu\"",
            ));
        }
        if self.use_sliding_window {
            return Err(unsupported(
                path,
                "use_sliding_window",
                "true",
                "only full attention (use_sliding_window: false) is implemented",
            ));
        }
        let rope_type = self
            .rope_parameters
            .as_ref()
            .and_then(|p| p.rope_type.clone())
            .or_else(|| {
                let scaling = self.rope_scaling.as_ref().filter(|s| !s.is_null())?;
                let kind = scaling.get("rope_type").or_else(|| scaling.get("type"));
                Some(
                    kind.and_then(Value::as_str)
                        .unwrap_or("unknown")
                        .to_string(),
                )
            });
        if let Some(rope_type) = rope_type.filter(|t| t != "default") {
            return Err(unsupported(
                path,
                "rope type",
                &rope_type,
                "only the default rotary embedding is implemented",
            ));
        }
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.key_value_heads()),
        ];
        require_positive(path, &positive)?;
        require_positive(path, &[("head_dim", self.head_size())])?;
        require_layer_counts(path, &[("num_hidden_layers", self.num_hidden_layers)])?;
        let head_dim = ("head_dim", self.head_size());
        checked_width(
            path,
            ("num_attention_heads", self.num_attention_heads),
            head_dim,
        )?;
        checked_width(
            path,
            ("num_key_value_heads", self.key_value_heads()),
            head_dim,
        )?;
        let mut ids: Vec<(&str, u32)> = [
            ("pad_token_id", self.pad_token_id),
            ("bos_token_id", self.bos_token_id),
        ]
        .into_iter()
        .filter_map(|(key, id)| id.map(|id| (key, id)))
        .collect();
        let eos = self.eos_token_id.as_ref().map(TokenIds::to_vec);
        ids.extend(eos.iter().flatten().map(|&id| ("eos_token_id", id)));
        require_token_ids(path, self.vocab_size, &ids)?;
        let epsilon = self.rms_norm_eps;
        require_number(path, "rms_norm_eps", epsilon, epsilon >= 0.0, "at least 0")?;
        let base = self.rope_base();
        require_number(path, "rope_theta", base, base > 0.0, "positive")?;
        let range = self.initializer_range;
        require_number(path, "initializer_range", range, range >= 0.0, "at least 0")?;
        if self.head_dim.is_none() && !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(invalid(
                path,
                "hidden_size must be a multiple of num_attention_heads".into(),
            ));
        }
        if !self.head_size().is_multiple_of(2) {
            return Err(invalid(
                path,
                "the head width must be even for rotary embeddings".into(),
            ));
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.key_value_heads())
        {
            return Err(invalid(
                path,
                "num_attention_heads must be a multiple of num_key_value_heads".into(),
            ));
        }
        Ok(())
    }
}

fn unsupported(path: &Path, key: &str, found: &str, supported: &str) -> ModelError {
    ModelError::Unsupported {
        path: path.to_path_buf(),
        key: key.into(),
        found: found.into(),
        supported: supported.into(),
    }
}
