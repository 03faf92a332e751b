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
    let tokenizer = Tokenizer::from_file(&file).map_err(|e| ModelError::Tokenizer {
        path: file.clone(),
        message: e.to_string(),
    })?;
    match id_gap(&tokenizer) {
        None => Ok(tokenizer),
        Some(message) => Err(ModelError::Tokenizer {
            path: file,
            message,
        }),
    }
}

/// Why the tokenizer's ids are not 0, 1, … N − 1 for its N tokens, each once, if they are not.
/// The vocabulary's size is its number of tokens, so an id beyond it would have no embedding
/// row, and tokens added after it would take ids already in use.
fn id_gap(tokenizer: &Tokenizer) -> Option<String> {
    let mut ids: Vec<u32> = tokenizer.get_vocab(true).into_values().collect();
    ids.sort_unstable();
    let (position, id) = ids
        .iter()
        .enumerate()
        .find(|&(position, &id)| id as usize != position)?;
    Some(format!(
        "its {} token ids must be 0 to {} without gaps or repeats, but after {} ids comes id {id}",
        ids.len(),
        ids.len().saturating_sub(1),
        position
    ))
}
