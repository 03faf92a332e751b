//! The one error type of gems-models.

use std::path::PathBuf;

/// A tensor whose shape in the checkpoint differs from the model's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeMismatch {
    /// Hugging Face name of the tensor.
    pub name: String,
    /// Shape the model expects, in the checkpoint's (PyTorch) layout.
    pub expected: Vec<usize>,
    /// Shape found in the checkpoint.
    pub found: Vec<usize>,
}

/// Everything that can go wrong while reading, building, running or writing a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A JSON file (config, index, reference) is not what we expect.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: serde_json::Error,
    },
    /// `config.json` names a model family we do not implement.
    #[error(
        "{path}: unsupported architecture {found:?}; gems-models runs T5 (model_type \"t5\") and Qwen2 / Qwen2.5 (model_type \"qwen2\")"
    )]
    UnsupportedArchitecture {
        /// The config file.
        path: PathBuf,
        /// The `model_type` (or `architectures`) found.
        found: String,
    },
    /// A config key names an activation or feature we do not implement.
    #[error("{path}: unsupported {key} {found:?}: {supported}")]
    Unsupported {
        /// The config file.
        path: PathBuf,
        /// The config key.
        key: String,
        /// The value found.
        found: String,
        /// What is supported instead.
        supported: String,
    },
    /// A config value is out of range or inconsistent with another.
    #[error("{path}: invalid config: {message}")]
    InvalidConfig {
        /// The config file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A safetensors file cannot be parsed, or holds a tensor of a dtype we cannot read.
    #[error("{path}: {message}")]
    Safetensors {
        /// The safetensors (or index) file.
        path: PathBuf,
        /// What went wrong, naming the tensor where there is one.
        message: String,
    },
    /// The checkpoint does not hold exactly the model's tensors.
    #[error("{}", describe_mismatch(.directory, .missing, .unexpected, .mis_shaped))]
    TensorMismatch {
        /// The model directory.
        directory: PathBuf,
        /// Tensors the model needs that the checkpoint lacks.
        missing: Vec<String>,
        /// Tensors in the checkpoint the model has no place for.
        unexpected: Vec<String>,
        /// Tensors present with the wrong shape.
        mis_shaped: Vec<ShapeMismatch>,
    },
    /// `tokenizer.json` cannot be read by the `tokenizers` crate, or its token ids have gaps.
    #[error("{path}: cannot load tokenizer: {message}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What is wrong (the tokenizer library's message, if it refused the file).
        message: String,
    },
    /// Inputs handed to a model do not fit together (shapes, empty batch, bad token ids).
    #[error("invalid input: {0}")]
    InvalidInput(String),
}

fn describe_mismatch(
    directory: &std::path::Path,
    missing: &[String],
    unexpected: &[String],
    mis_shaped: &[ShapeMismatch],
) -> String {
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("missing tensors: {}", missing.join(", ")));
    }
    if !unexpected.is_empty() {
        parts.push(format!("unexpected tensors: {}", unexpected.join(", ")));
    }
    if !mis_shaped.is_empty() {
        let shapes: Vec<String> = mis_shaped
            .iter()
            .map(|m| {
                format!(
                    "{} (expected {:?}, found {:?})",
                    m.name, m.expected, m.found
                )
            })
            .collect();
        parts.push(format!("mis-shaped tensors: {}", shapes.join(", ")));
    }
    format!(
        "{}: the checkpoint does not match config.json; {}",
        directory.display(),
        parts.join("; ")
    )
}

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn json(path: impl Into<PathBuf>, source: serde_json::Error) -> Self {
        Self::Json {
            path: path.into(),
            source,
        }
    }
}
