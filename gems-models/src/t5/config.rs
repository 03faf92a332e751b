//! `T5Config`: the keys of HF `T5Config`, read from `config.json` as it is.
//!
//! Two styles exist. Transformers 4 (the hub's files) uses `tie_word_embeddings` both to tie
//! `lm_head` to `shared` and to scale the decoder output by `d_model^-0.5` (v1.0: true; v1.1 /
//! FLAN: false). Transformers 5 writes `scale_decoder_outputs` for the scaling and always sets
//! `tie_word_embeddings: true`; whether `lm_head` is tied is then decided by the checkpoint (a
//! `lm_head.weight` different from `shared.weight` unties it), which the loader reproduces.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::{
    TokenIds, checked_width, deserialize, in_memory, invalid, require_layer_counts, require_number,
    require_positive, require_token_ids, string_key,
};
use crate::error::ModelError;

/// Activation of the feed-forward block, parsed from `feed_forward_proj`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `relu`.
    Relu,
    /// `gelu`: the exact (erf) GELU.
    Gelu,
    /// `gelu_new`: the tanh approximation of GELU (what `gated-gelu` means in HF).
    GeluNew,
    /// `silu`.
    Silu,
}

/// The feed-forward variant: `"relu"` (v1.0: `wi`, `wo`) or `"gated-gelu"` (v1.1: `wi_0`, `wi_1`, `wo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FeedForwardProj {
    /// Gated (`act(wi_0 x) * wi_1 x`) rather than plain (`act(wi x)`).
    pub gated: bool,
    /// The activation.
    pub activation: Activation,
}

impl FeedForwardProj {
    /// T5 v1.0: `relu`.
    pub const RELU: Self = Self {
        gated: false,
        activation: Activation::Relu,
    };
    /// T5 v1.1 / FLAN: `gated-gelu`, whose activation HF maps to `gelu_new`.
    pub const GATED_GELU: Self = Self {
        gated: true,
        activation: Activation::GeluNew,
    };

    /// Parses HF's `feed_forward_proj` (`"{act}"` or `"gated-{act}"`) as `T5Config.__post_init__` does.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text == "gated-gelu" {
            return Ok(Self::GATED_GELU);
        }
        let (gated, name) = match text.strip_prefix("gated-") {
            Some(name) => (true, name),
            None => (false, text),
        };
        let activation = match name {
            "relu" => Activation::Relu,
            "gelu" => Activation::Gelu,
            "gelu_new" => Activation::GeluNew,
            "silu" | "swish" => Activation::Silu,
            _ => {
                return Err(format!(
                    "unsupported feed_forward_proj {text:?}: expected \"relu\", \"gated-gelu\", or \
                     [gated-]relu|gelu|gelu_new|silu"
                ));
            }
        };
        Ok(Self { gated, activation })
    }
}

impl TryFrom<String> for FeedForwardProj {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        Self::parse(&text)
    }
}

impl From<FeedForwardProj> for String {
    fn from(proj: FeedForwardProj) -> String {
        if proj == FeedForwardProj::GATED_GELU {
            return "gated-gelu".to_string();
        }
        let name = match proj.activation {
            Activation::Relu => "relu",
            Activation::Gelu => "gelu",
            Activation::GeluNew => "gelu_new",
            Activation::Silu => "silu",
        };
        if proj.gated {
            format!("gated-{name}")
        } else {
            name.to_string()
        }
    }
}

/// Configuration of a T5 model; field names are HF's `config.json` keys, defaults HF's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct T5Config {
    /// Rows of the shared embedding.
    #[serde(default = "defaults::vocab_size")]
    pub vocab_size: usize,
    /// Width of the hidden states.
    #[serde(default = "defaults::d_model")]
    pub d_model: usize,
    /// Width of one attention head.
    #[serde(default = "defaults::d_kv")]
    pub d_kv: usize,
    /// Inner width of the feed-forward block.
    #[serde(default = "defaults::d_ff")]
    pub d_ff: usize,
    /// Encoder blocks.
    #[serde(default = "defaults::num_layers")]
    pub num_layers: usize,
    /// Decoder blocks (`num_layers` when absent).
    #[serde(default)]
    pub num_decoder_layers: Option<usize>,
    /// Attention heads.
    #[serde(default = "defaults::num_heads")]
    pub num_heads: usize,
    /// Buckets of the relative position bias.
    #[serde(default = "defaults::relative_attention_num_buckets")]
    pub relative_attention_num_buckets: usize,
    /// Distance from which all relative positions share the last bucket.
    #[serde(default = "defaults::relative_attention_max_distance")]
    pub relative_attention_max_distance: usize,
    /// Dropout probability (training only).
    #[serde(default = "defaults::dropout_rate")]
    pub dropout_rate: f64,
    /// Epsilon of the RMS layer norms.
    #[serde(default = "defaults::layer_norm_epsilon")]
    pub layer_norm_epsilon: f64,
    /// Scale of HF's initialisation (1.0 for real models).
    #[serde(default = "defaults::initializer_factor")]
    pub initializer_factor: f64,
    /// Feed-forward variant.
    #[serde(default = "defaults::feed_forward_proj")]
    pub feed_forward_proj: FeedForwardProj,
    /// Padding token id (also replaces -100 in shifted labels).
    #[serde(default)]
    pub pad_token_id: u32,
    /// End-of-sequence token id(s).
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,
    /// First decoder input token.
    #[serde(default)]
    pub decoder_start_token_id: u32,
    /// Transformers 4: tie `lm_head` to `shared` and scale the decoder output.
    #[serde(default = "defaults::yes")]
    pub tie_word_embeddings: bool,
    /// Transformers 5: scale the decoder output by `d_model^-0.5` before `lm_head`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_decoder_outputs: Option<bool>,
    /// Every other key of the file, written back unchanged on save.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

mod defaults {
    use super::FeedForwardProj;
    pub fn vocab_size() -> usize {
        32128
    }
    pub fn d_model() -> usize {
        512
    }
    pub fn d_kv() -> usize {
        64
    }
    pub fn d_ff() -> usize {
        2048
    }
    pub fn num_layers() -> usize {
        6
    }
    pub fn num_heads() -> usize {
        8
    }
    pub fn relative_attention_num_buckets() -> usize {
        32
    }
    pub fn relative_attention_max_distance() -> usize {
        128
    }
    pub fn dropout_rate() -> f64 {
        0.1
    }
    pub fn layer_norm_epsilon() -> f64 {
        1e-6
    }
    pub fn initializer_factor() -> f64 {
        1.0
    }
    pub fn feed_forward_proj() -> FeedForwardProj {
        FeedForwardProj::RELU
    }
    pub fn yes() -> bool {
        true
    }
}

impl T5Config {
    /// The shape of `t5-small` (v1.0: ReLU, tied, 6 + 6 blocks of width 512) with the given vocabulary.
    pub fn t5_small(vocab_size: usize) -> Self {
        Self::new(vocab_size, 512, 64, 2048, 6, 8, FeedForwardProj::RELU)
    }

    /// The project's default from-scratch model: a small T5 v1.0 (width 128, 2 + 2 blocks, 4 heads,
    /// feed-forward 512), quick to train on two CPU cores.
    pub fn compact(vocab_size: usize) -> Self {
        Self::new(vocab_size, 128, 32, 512, 2, 4, FeedForwardProj::RELU)
    }

    /// A configuration with HF defaults for everything but the given sizes. ReLU models are tied
    /// with output scaling (v1.0), gated ones untied without (v1.1).
    pub fn new(
        vocab_size: usize,
        d_model: usize,
        d_kv: usize,
        d_ff: usize,
        num_layers: usize,
        num_heads: usize,
        feed_forward_proj: FeedForwardProj,
    ) -> Self {
        Self {
            vocab_size,
            d_model,
            d_kv,
            d_ff,
            num_layers,
            num_decoder_layers: None,
            num_heads,
            relative_attention_num_buckets: defaults::relative_attention_num_buckets(),
            relative_attention_max_distance: defaults::relative_attention_max_distance(),
            dropout_rate: defaults::dropout_rate(),
            layer_norm_epsilon: defaults::layer_norm_epsilon(),
            initializer_factor: defaults::initializer_factor(),
            feed_forward_proj,
            pad_token_id: 0,
            eos_token_id: Some(TokenIds::One(1)),
            decoder_start_token_id: 0,
            tie_word_embeddings: !feed_forward_proj.gated,
            scale_decoder_outputs: None,
            extra: Map::new(),
        }
    }

    /// Number of decoder blocks.
    pub fn decoder_layers(&self) -> usize {
        self.num_decoder_layers.unwrap_or(self.num_layers)
    }

    /// Whether the decoder output is scaled by `d_model^-0.5` before `lm_head`.
    pub fn scales_decoder_outputs(&self) -> bool {
        self.scale_decoder_outputs
            .unwrap_or(self.tie_word_embeddings)
    }

    /// Parses and checks a `config.json` value with `model_type: "t5"`.
    pub(crate) fn from_value(mut value: Value, path: &Path) -> Result<Self, ModelError> {
        if let Some(text) = string_key(&value, "feed_forward_proj") {
            FeedForwardProj::parse(text).map_err(|supported| ModelError::Unsupported {
                path: path.to_path_buf(),
                key: "feed_forward_proj".into(),
                found: text.to_string(),
                supported,
            })?;
        }
        // Written by transformers 5 from `feed_forward_proj`; recomputed, never read.
        if let Some(object) = value.as_object_mut() {
            object.remove("dense_act_fn");
            object.remove("is_gated_act");
        }
        let config: Self = deserialize(value, path)?;
        config.validate(path)?;
        Ok(config)
    }

    /// Checks sizes that the model code relies on.
    pub fn check(&self) -> Result<(), ModelError> {
        self.validate(&in_memory())
    }

    fn validate(&self, path: &Path) -> Result<(), ModelError> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("d_kv", self.d_kv),
            ("d_ff", self.d_ff),
            ("num_heads", self.num_heads),
            ("num_layers", self.num_layers),
            ("num_decoder_layers", self.decoder_layers()),
        ];
        require_positive(path, &positive)?;
        require_layer_counts(
            path,
            &[
                ("num_layers", self.num_layers),
                ("num_decoder_layers", self.decoder_layers()),
            ],
        )?;
        checked_width(path, ("num_heads", self.num_heads), ("d_kv", self.d_kv))?;
        let mut ids = vec![
            ("pad_token_id", self.pad_token_id),
            ("decoder_start_token_id", self.decoder_start_token_id),
        ];
        let eos = self.eos_token_id.as_ref().map(TokenIds::to_vec);
        ids.extend(eos.iter().flatten().map(|&id| ("eos_token_id", id)));
        require_token_ids(path, self.vocab_size, &ids)?;
        let epsilon = self.layer_norm_epsilon;
        require_number(
            path,
            "layer_norm_epsilon",
            epsilon,
            epsilon >= 0.0,
            "at least 0",
        )?;
        let dropout = self.dropout_rate;
        let probability = (0.0..1.0).contains(&dropout);
        require_number(path, "dropout_rate", dropout, probability, "in [0, 1)")?;
        let factor = self.initializer_factor;
        require_number(
            path,
            "initializer_factor",
            factor,
            factor >= 0.0,
            "at least 0",
        )?;
        if self.relative_attention_num_buckets < 4 {
            return Err(invalid(
                path,
                "relative_attention_num_buckets must be at least 4".into(),
            ));
        }
        // Below half the buckets, the logarithmic buckets of far positions would be negative.
        if self.relative_attention_max_distance < self.relative_attention_num_buckets / 2 {
            return Err(invalid(
                path,
                "relative_attention_max_distance must be at least half of relative_attention_num_buckets".into(),
            ));
        }
        Ok(())
    }
}
