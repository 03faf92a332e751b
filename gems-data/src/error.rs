//! The crate's one error type.
//!
//! Every message names where the problem is (file, line, field where there is one) and says what to
//! do about it, so that the command line can print it as it is.

use std::path::{Path, PathBuf};

/// Everything that can go wrong while reading, converting, preparing or encoding data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or directory could not be opened, read, created or written.
    #[error("{}: cannot {action}: {source}; check that the path exists and is readable/writable", path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// What we were doing ("open", "read", "create", "write", ...).
        action: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// One record (a line of a JSONL or CSV file, or one pickled row) is malformed.
    #[error("{file}:{line}: {}{message}", field_prefix(field))]
    Record {
        /// The file's path as given by the caller.
        file: String,
        /// 1-based line number (for pickles: 1-based row number).
        line: usize,
        /// The offending field or column, when one can be named.
        field: Option<String>,
        /// What is wrong and what was expected.
        message: String,
    },
    /// A whole file is unusable: missing columns, unknown layout, wrong top-level structure.
    #[error("{file}: {message}")]
    File {
        /// The file or directory's path as given by the caller.
        file: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// Validation found problems and the strict policy was chosen.
    #[error(
        "validation failed (strict policy):\n{report}\nFix the input, or prepare it with the `filter` policy to drop the listed records with counts."
    )]
    Validation {
        /// The full report, with counts and the first examples of each problem.
        report: Box<crate::validation_report::ValidationReport>,
    },
    /// An option or argument is out of range or inconsistent.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// The `tokenizers` crate failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}

fn field_prefix(field: &Option<String>) -> String {
    match field {
        Some(name) => format!("field \"{name}\": "),
        None => String::new(),
    }
}

impl DataError {
    /// An I/O error on `path` while doing `action`.
    pub fn io(path: &Path, action: &'static str, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.to_path_buf(),
            action,
            source,
        }
    }

    /// A malformed record at `file:line`, optionally in `field`.
    pub fn record(
        file: &str,
        line: usize,
        field: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        DataError::Record {
            file: file.to_string(),
            line,
            field: field.map(str::to_string),
            message: message.into(),
        }
    }

    /// A file-level problem.
    pub fn file(file: &str, message: impl Into<String>) -> Self {
        DataError::File {
            file: file.to_string(),
            message: message.into(),
        }
    }
}

/// The crate's result type.
pub type Result<T, E = DataError> = std::result::Result<T, E>;
