//! General-domain text for the null-space statistics and the retention analysis.
//!
//! Without `--general-corpus`, a short embedded English corpus (everyday prose on many topics,
//! written for this project) stands in. For a pre-trained checkpoint, pass text close to what
//! the model was trained on (a few megabytes of web or encyclopedic text): the knowledge bases
//! are only as good as the inputs they are estimated from.

use std::path::PathBuf;

use crate::error::{CliError, Result};

/// The embedded default corpus, one paragraph per line.
pub const EMBEDDED: &str = include_str!("../assets/general_corpus.txt");

/// The paragraphs of the given files (blank lines dropped), or of the embedded corpus when
/// none is given.
pub fn load(files: &[PathBuf]) -> Result<Vec<String>> {
    if files.is_empty() {
        return Ok(paragraphs(EMBEDDED));
    }
    let mut all = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::io(path, "cannot read the general corpus", e))?;
        let found = paragraphs(&text);
        if found.is_empty() {
            return Err(CliError::Settings(format!(
                "{}: the general corpus file has no text",
                path.display()
            )));
        }
        all.extend(found);
    }
    Ok(all)
}

/// Splits paragraphs into those that estimate the knowledge bases and every fifth one, held
/// out for the retention analysis.
pub fn split_held_out(paragraphs: Vec<String>) -> (Vec<String>, Vec<String>) {
    let (held_out, statistics): (Vec<_>, Vec<_>) = paragraphs
        .into_iter()
        .enumerate()
        .partition(|(index, _)| index % 5 == 4);
    let strip = |pairs: Vec<(usize, String)>| pairs.into_iter().map(|(_, p)| p).collect();
    (strip(statistics), strip(held_out))
}

fn paragraphs(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(String::from)
        .collect()
}
