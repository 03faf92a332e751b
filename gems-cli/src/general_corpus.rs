//! General-domain text for the null-space statistics and the retention analysis.
//!
//! Without `--general-corpus`, a short embedded English corpus (everyday prose on many topics,
//! written for this project) stands in. For a pre-trained checkpoint, pass text close to what
//! the model was trained on (a few megabytes of web or encyclopedic text): the knowledge bases
//! are only as good as the inputs they are estimated from.
//!
//! Sources: text files (one paragraph per non-blank line), JSONL files (`.jsonl`: one JSON object
//! per line with a string field `text`, whose non-blank lines are paragraphs) and directories of
//! both (every `.txt` and `.jsonl` file below it, in name order). Files are read line by line and
//! reading stops at the token budget, so a corpus of any size can be pointed to.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::error::{CliError, Result};

/// The embedded default corpus, one paragraph per line.
pub const EMBEDDED: &str = include_str!("../assets/general_corpus.txt");

/// The paragraphs of the given sources, in order, until `token_budget` tokens (counted as
/// whitespace-separated words, as the corpus is read before any tokenizer exists) are reached;
/// the embedded corpus when no source is given.
pub fn load(sources: &[PathBuf], token_budget: Option<usize>) -> Result<Vec<String>> {
    let mut reader = Reader {
        budget: token_budget.unwrap_or(usize::MAX),
        tokens: 0,
        paragraphs: Vec::new(),
    };
    if sources.is_empty() {
        EMBEDDED.lines().for_each(|line| reader.push(line));
        return Ok(reader.paragraphs);
    }
    for source in sources {
        let files = files_of(source)?;
        let before = reader.paragraphs.len();
        for file in &files {
            if reader.full() {
                break;
            }
            reader.read(file)?;
        }
        if reader.paragraphs.len() == before && !reader.full() {
            return Err(CliError::Settings(format!(
                "{}: the general corpus has no text",
                source.display()
            )));
        }
    }
    tracing::info!(
        paragraphs = reader.paragraphs.len(),
        "general corpus: {} tokens (words){}",
        reader.tokens,
        if reader.full() {
            ", budget reached"
        } else {
            ""
        }
    );
    Ok(reader.paragraphs)
}

/// Paragraphs read so far against the budget.
struct Reader {
    budget: usize,
    tokens: usize,
    paragraphs: Vec<String>,
}

impl Reader {
    fn full(&self) -> bool {
        self.tokens >= self.budget
    }

    /// Adds `line` as a paragraph unless it is blank or the budget is spent; a paragraph that
    /// crosses the budget is cut at it.
    fn push(&mut self, line: &str) {
        let line = line.trim();
        if line.is_empty() || self.full() {
            return;
        }
        let words = line.split_whitespace().count();
        let left = self.budget - self.tokens;
        if words <= left {
            self.tokens += words;
            self.paragraphs.push(line.to_string());
        } else {
            self.tokens += left;
            self.paragraphs.push(
                line.split_whitespace()
                    .take(left)
                    .collect::<Vec<_>>()
                    .join(" "),
            );
        }
    }

    /// Streams one text or JSONL file.
    fn read(&mut self, path: &Path) -> Result<()> {
        let file = File::open(path)
            .map_err(|e| CliError::io(path, "cannot read the general corpus", e))?;
        let jsonl = path.extension().is_some_and(|e| e == "jsonl");
        for (index, line) in BufReader::new(file).lines().enumerate() {
            if self.full() {
                break;
            }
            let number = index + 1;
            let line = line.map_err(|e| {
                CliError::io(
                    path,
                    &format!("line {number}: cannot read the general corpus"),
                    e,
                )
            })?;
            if !jsonl {
                self.push(&line);
                continue;
            }
            if line.trim().is_empty() {
                continue;
            }
            let at = |message: String| {
                CliError::Settings(format!("{}:{number}: {message}", path.display()))
            };
            let record: serde_json::Value =
                serde_json::from_str(&line).map_err(|e| at(format!("not a JSON object: {e}")))?;
            let text = match record.get("text") {
                Some(serde_json::Value::String(text)) => text,
                Some(other) => {
                    return Err(at(format!("field `text` must be a string, found {other}")));
                }
                None if record.is_object() => return Err(at("no field `text`".into())),
                None => return Err(at("not a JSON object".into())),
            };
            text.lines().for_each(|paragraph| self.push(paragraph));
        }
        Ok(())
    }
}

/// `source` itself, or the `.txt` and `.jsonl` files below the directory `source`, in name order.
fn files_of(source: &Path) -> Result<Vec<PathBuf>> {
    if !source.is_dir() {
        if !source.is_file() {
            return Err(CliError::run(
                source,
                "no such general corpus file or directory",
            ));
        }
        return Ok(vec![source.to_path_buf()]);
    }
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    let mut pending = vec![source.to_path_buf()];
    while let Some(directory) = pending.pop() {
        let entries = std::fs::read_dir(&directory)
            .map_err(|e| CliError::io(&directory, "cannot list the general corpus", e))?;
        for entry in entries {
            let path = entry
                .map_err(|e| CliError::io(&directory, "cannot list the general corpus", e))?
                .path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "txt" || e == "jsonl") {
                files.push(path);
            } else {
                skipped.push(path);
            }
        }
    }
    if !skipped.is_empty() {
        tracing::warn!(
            "{}: {} file(s) neither .txt nor .jsonl skipped, e.g. {}",
            source.display(),
            skipped.len(),
            skipped[0].display()
        );
    }
    files.sort();
    if files.is_empty() {
        return Err(CliError::run(
            source,
            "the general corpus directory holds no .txt or .jsonl file",
        ));
    }
    Ok(files)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn text_files_give_one_paragraph_per_non_blank_line() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("wiki.txt");
        write(&path, "  first paragraph here \n\n\nsecond one\n");
        assert_eq!(
            load(&[path], None).unwrap(),
            vec!["first paragraph here", "second one"]
        );
    }

    #[test]
    fn jsonl_records_give_the_lines_of_their_text_field() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("web.jsonl");
        write(
            &path,
            "{\"text\": \"one two\\nthree\", \"url\": \"x\"}\n\n{\"text\": \"four\"}\n",
        );
        assert_eq!(
            load(&[path], None).unwrap(),
            vec!["one two", "three", "four"]
        );
    }

    #[test]
    fn directories_are_read_in_name_order_below_them() {
        let folder = tempfile::tempdir().unwrap();
        let corpus = folder.path().join("corpus");
        write(&corpus.join("b.txt"), "from b\n");
        write(&corpus.join("a/nested.jsonl"), "{\"text\": \"from a\"}\n");
        write(&corpus.join("c.txt"), "from c\n");
        write(&corpus.join("notes.csv"), "skipped,with,a,warning\n");
        assert_eq!(
            load(&[corpus], None).unwrap(),
            vec!["from a", "from b", "from c"]
        );
    }

    #[test]
    fn the_token_budget_stops_reading_and_cuts_the_last_paragraph() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("long.txt");
        write(&path, "a b c\nd e f\ng h i\n");
        let second = folder.path().join("second.txt");
        write(&second, "never read\n");
        assert_eq!(
            load(&[path.clone(), second], Some(5)).unwrap(),
            vec!["a b c", "d e"]
        );
        assert_eq!(load(&[path], Some(3)).unwrap(), vec!["a b c"]);
        // The embedded corpus too.
        let embedded = load(&[], Some(10)).unwrap();
        let words: usize = embedded.iter().map(|p| p.split_whitespace().count()).sum();
        assert_eq!(words, 10);
    }

    #[test]
    fn bad_input_names_the_file_line_and_field() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("bad.jsonl");
        let error = |text: &str| {
            write(&path, text);
            load(std::slice::from_ref(&path), None)
                .unwrap_err()
                .to_string()
        };
        let message = error("{\"text\": \"ok\"}\n{\"body\": \"no text\"}\n");
        assert!(
            message.contains("bad.jsonl:2") && message.contains("no field `text`"),
            "{message}"
        );
        let message = error("{\"text\": 3}\n");
        assert!(
            message.contains("bad.jsonl:1") && message.contains("`text` must be a string"),
            "{message}"
        );
        let message = error("\n\n{\"text\": \"unterminated}\n");
        assert!(
            message.contains("bad.jsonl:3") && message.contains("not a JSON object"),
            "{message}"
        );
        let message = error("[\"text\"]\n");
        assert!(
            message.contains("bad.jsonl:1: not a JSON object"),
            "{message}"
        );
        let message = error("\n  \n");
        assert!(message.contains("has no text"), "{message}");
        let missing = folder.path().join("missing.txt");
        let message = load(&[missing], None).unwrap_err().to_string();
        assert!(message.contains("missing.txt"), "{message}");
        let empty = folder.path().join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        let message = load(&[empty], None).unwrap_err().to_string();
        assert!(message.contains("no .txt or .jsonl"), "{message}");
    }
}
