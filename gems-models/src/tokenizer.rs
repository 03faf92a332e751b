//! Tokenizers from `tokenizer.json`, through the `tokenizers` crate.

use std::path::Path;

use tokenizers::Tokenizer;

use crate::error::ModelError;

/// Loads `tokenizer.json` from a model directory, or from a path to a `.json` file.
pub fn load_tokenizer(path: impl AsRef<Path>) -> Result<Tokenizer, ModelError> {
    let path = path.as_ref();
    let file = match path.extension().is_some_and(|e| e == "json") {
        true => path.to_path_buf(),
        false => path.join("tokenizer.json"),
    };
    Tokenizer::from_file(&file).map_err(|e| ModelError::Tokenizer {
        path: file,
        message: e.to_string(),
    })
}
