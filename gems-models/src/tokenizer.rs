//! Tokenizers from `tokenizer.json`, through the `tokenizers` crate.

use std::path::Path;

use tokenizers::Tokenizer;

use crate::error::ModelError;

/// Loads `tokenizer.json` from a model directory (or a path to the file itself).
pub fn load_tokenizer(path: impl AsRef<Path>) -> Result<Tokenizer, ModelError> {
    let path = path.as_ref();
    let file = if path.is_dir() {
        path.join("tokenizer.json")
    } else {
        path.to_path_buf()
    };
    Tokenizer::from_file(&file).map_err(|e| ModelError::Tokenizer {
        path: file,
        message: e.to_string(),
    })
}
