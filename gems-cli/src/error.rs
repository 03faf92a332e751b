//! The one error type of the `gems` command: every failure ends as one clear line.

use std::path::{Path, PathBuf};

/// Everything a `gems` command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A setting (config file or flag) is invalid.
    #[error("{0}")]
    Settings(String),
    /// Reading or writing a file failed.
    #[error("{path}: {context}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        context: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A run directory or checkpoint is missing something or does not match.
    #[error("{path}: {message}")]
    Run {
        /// The run directory or checkpoint.
        path: PathBuf,
        /// What is wrong and what to do.
        message: String,
    },
    /// The optimizer refused something.
    #[error(transparent)]
    Optimizer(#[from] gems_core::GemsError),
    /// A model failed to load, save or run.
    #[error(transparent)]
    Model(#[from] gems_models::ModelError),
    /// Data failed to load, convert or validate.
    #[error(transparent)]
    Data(#[from] gems_data::DataError),
    /// A Hugging Face Hub model could not be resolved.
    #[error("{repo}: {message}")]
    Hub {
        /// The repository id.
        repo: String,
        /// What went wrong and what to do.
        message: String,
    },
    /// The run was interrupted (Ctrl-C) after saving a checkpoint.
    #[error("interrupted; a checkpoint was saved in {0} (continue with --resume)")]
    Interrupted(PathBuf),
}

impl CliError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, context: &str, source: std::io::Error) -> Self {
        CliError::Io {
            path: path.to_path_buf(),
            context: context.to_string(),
            source,
        }
    }

    /// A problem with a run directory or checkpoint.
    pub fn run(path: &Path, message: impl Into<String>) -> Self {
        CliError::Run {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// Result alias for the command.
pub type Result<T> = std::result::Result<T, CliError>;

/// Turns a strict-validation failure (a multi-line report) into one line naming its first
/// problem and `remedy`; the whole report goes to standard error first.
pub fn one_line<T>(directory: &Path, result: gems_data::Result<T>, remedy: &str) -> Result<T> {
    use gems_data::DataError;
    match result {
        Err(DataError::Validation { report }) => {
            eprint!("validation report:\n{report}");
            let problems: usize = report
                .issues
                .values()
                .map(|summary| summary.occurrences)
                .sum();
            let first = report
                .issues
                .values()
                .flat_map(|summary| &summary.examples)
                .next()
                .cloned()
                .unwrap_or_default();
            Err(CliError::Data(DataError::file(
                &directory.display().to_string(),
                format!(
                    "{problems} validation problem{} under the strict policy, the first: {first}; {remedy}",
                    if problems == 1 { "" } else { "s" }
                ),
            )))
        }
        other => Ok(other?),
    }
}
