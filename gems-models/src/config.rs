//! Model configurations read from (and written to) Hugging Face `config.json`.
//!
//! The structs of [`crate::t5::T5Config`] and [`crate::qwen2::Qwen2Config`] name their fields
//! exactly like the HF keys; unknown keys are kept aside (and written back on save), missing
//! optional keys take HF's defaults. Both styles found in the wild are read: the hub's
//! transformers-4 files and transformers-5 saves (see each config for the differences).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ModelError;
use crate::qwen2::Qwen2Config;
use crate::t5::T5Config;

/// The model families gems-models implements; named `t5` and `qwen2` in text (serde,
/// [`std::str::FromStr`], [`std::fmt::Display`]), as in `config.json`'s `model_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Encoder-decoder T5 (v1.0 and v1.1 / FLAN).
    T5,
    /// Decoder-only Qwen2 / Qwen2.5.
    Qwen2,
}

impl ModelKind {
    /// Every family.
    pub const ALL: [ModelKind; 2] = [ModelKind::T5, ModelKind::Qwen2];

    /// The family's name (`config.json`'s `model_type`).
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::T5 => "t5",
            ModelKind::Qwen2 => "qwen2",
        }
    }
}

impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ModelKind {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        ModelKind::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| format!("unknown model family `{name}`; known: t5, qwen2"))
    }
}

/// The configuration of either backbone, as read from `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelConfig {
    /// A T5 configuration.
    T5(T5Config),
    /// A Qwen2 configuration.
    Qwen2(Qwen2Config),
}

/// `eos_token_id` is an integer in most configs and a list in some.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    /// One token id.
    One(u32),
    /// Several token ids.
    Many(Vec<u32>),
}

impl TokenIds {
    /// The ids as a list.
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            Self::One(id) => vec![*id],
            Self::Many(ids) => ids.clone(),
        }
    }
}

/// Path used in error messages for configurations built in code rather than read from a file.
pub(crate) const IN_MEMORY: &str = "<config built in code>";

impl ModelConfig {
    /// Reads `config.json` (or any HF config file).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ModelError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        Self::from_json(&text, path)
    }

    /// Parses the text of a config file; `path` names it in error messages.
    pub fn from_json(text: &str, path: &Path) -> Result<Self, ModelError> {
        let value: Value = serde_json::from_str(text).map_err(|e| ModelError::json(path, e))?;
        let model_type = value
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        match model_type {
            "t5" => T5Config::from_value(value, path).map(Self::T5),
            "qwen2" => Qwen2Config::from_value(value, path).map(Self::Qwen2),
            _ => {
                let architectures = value.get("architectures").map(Value::to_string);
                let found = match (model_type, architectures) {
                    ("", Some(architectures)) => architectures,
                    ("", None) => "(no model_type)".to_string(),
                    (model_type, _) => model_type.to_string(),
                };
                Err(ModelError::UnsupportedArchitecture {
                    path: path.to_path_buf(),
                    found,
                })
            }
        }
    }

    /// The config as HF `config.json` content (with `model_type` and `architectures`).
    pub fn to_json(&self) -> Value {
        match self {
            Self::T5(config) => to_hf_json(config, "t5", "T5ForConditionalGeneration"),
            Self::Qwen2(config) => to_hf_json(config, "qwen2", "Qwen2ForCausalLM"),
        }
    }

    /// Writes `config.json`-style content to `path`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), ModelError> {
        let path = path.as_ref();
        let text =
            serde_json::to_string_pretty(&self.to_json()).map_err(|e| ModelError::json(path, e))?;
        std::fs::write(path, text + "\n").map_err(|e| ModelError::io(path, e))
    }

    /// Which family this configures.
    pub fn kind(&self) -> ModelKind {
        match self {
            Self::T5(_) => ModelKind::T5,
            Self::Qwen2(_) => ModelKind::Qwen2,
        }
    }

    /// Size of the vocabulary (rows of the embedding matrix).
    pub fn vocab_size(&self) -> usize {
        match self {
            Self::T5(config) => config.vocab_size,
            Self::Qwen2(config) => config.vocab_size,
        }
    }

    /// The same architecture with a vocabulary of `vocab_size` tokens.
    pub fn with_vocab_size(self, vocab_size: usize) -> Self {
        match self {
            Self::T5(config) => Self::T5(T5Config {
                vocab_size,
                ..config
            }),
            Self::Qwen2(config) => Self::Qwen2(Qwen2Config {
                vocab_size,
                ..config
            }),
        }
    }

    /// Width of the hidden states.
    pub fn hidden_size(&self) -> usize {
        match self {
            Self::T5(config) => config.d_model,
            Self::Qwen2(config) => config.hidden_size,
        }
    }

    /// The padding token id (Qwen2 configs often have none: then the end-of-text token, 0 if absent).
    pub fn pad_token_id(&self) -> u32 {
        match self {
            Self::T5(config) => config.pad_token_id,
            Self::Qwen2(config) => config.pad_token_id(),
        }
    }

    /// The end-of-sequence token ids.
    pub fn eos_token_ids(&self) -> Vec<u32> {
        let ids = match self {
            Self::T5(config) => &config.eos_token_id,
            Self::Qwen2(config) => &config.eos_token_id,
        };
        ids.as_ref().map(TokenIds::to_vec).unwrap_or_default()
    }
}

/// Reads a typed config from the JSON value, naming the file in errors.
pub(crate) fn deserialize<T: serde::de::DeserializeOwned>(
    value: Value,
    path: &Path,
) -> Result<T, ModelError> {
    serde_json::from_value(value).map_err(|e| ModelError::json(path, e))
}

/// The string value of `key`, if the config has one.
pub(crate) fn string_key<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

/// Errors naming the first of `sizes` that is zero.
pub(crate) fn require_positive(path: &Path, sizes: &[(&str, usize)]) -> Result<(), ModelError> {
    match sizes.iter().find(|(_, size)| *size == 0) {
        Some((key, _)) => Err(invalid(path, format!("{key} must be positive"))),
        None => Ok(()),
    }
}

/// The most blocks a stack may have: far beyond any real model's (a few hundred at most), and
/// few enough that a model's skeleton is built in moments, before its size is checked against
/// the memory.
pub(crate) const MAX_LAYERS: usize = 1024;

/// Errors naming the first of `counts` (blocks of a stack) above [`MAX_LAYERS`].
pub(crate) fn require_layer_counts(
    path: &Path,
    counts: &[(&str, usize)],
) -> Result<(), ModelError> {
    match counts.iter().find(|(_, count)| *count > MAX_LAYERS) {
        Some((key, count)) => Err(invalid(
            path,
            format!("{key} is {count}, more than the {MAX_LAYERS} blocks a model may have here"),
        )),
        None => Ok(()),
    }
}

/// Errors naming the first of `ids` (special token ids) that is not below `vocab_size`: such
/// an id has no embedding row.
pub(crate) fn require_token_ids(
    path: &Path,
    vocab_size: usize,
    ids: &[(&str, u32)],
) -> Result<(), ModelError> {
    match ids.iter().find(|(_, id)| *id as usize >= vocab_size) {
        Some((key, id)) => Err(invalid(
            path,
            format!("{key} {id} is not below vocab_size {vocab_size}"),
        )),
        None => Ok(()),
    }
}

/// Errors naming `key` unless `value` is finite and `valid` (which `what` describes).
pub(crate) fn require_number(
    path: &Path,
    key: &str,
    value: f64,
    valid: bool,
    what: &str,
) -> Result<(), ModelError> {
    match value.is_finite() && valid {
        true => Ok(()),
        false => Err(invalid(path, format!("{key} must be {what}, not {value}"))),
    }
}

/// `a·b` for the sizes named `names`, or an error naming them when the product overflows.
pub(crate) fn checked_width(
    path: &Path,
    (name_a, a): (&str, usize),
    (name_b, b): (&str, usize),
) -> Result<usize, ModelError> {
    a.checked_mul(b).ok_or_else(|| {
        invalid(
            path,
            format!("{name_a} × {name_b} ({a} × {b}) is beyond this machine's sizes"),
        )
    })
}

/// A typed config as `config.json` content, with its `model_type` and `architectures`.
pub(crate) fn to_hf_json(config: &impl Serialize, model_type: &str, architecture: &str) -> Value {
    let mut value = serde_json::to_value(config).expect("a config serializes");
    let object = value
        .as_object_mut()
        .expect("a config serializes to an object");
    object.insert("model_type".into(), model_type.into());
    object.insert("architectures".into(), serde_json::json!([architecture]));
    value
}

pub(crate) fn invalid(path: &Path, message: String) -> ModelError {
    ModelError::InvalidConfig {
        path: path.to_path_buf(),
        message,
    }
}

pub(crate) fn in_memory() -> PathBuf {
    PathBuf::from(IN_MEMORY)
}
