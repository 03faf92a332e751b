//! The one error type of gems-core.

use std::path::PathBuf;

/// Everything that can go wrong when configuring, running or persisting the optimizer.
#[derive(Debug, thiserror::Error)]
pub enum GemsError {
    /// A configuration value is out of range or inconsistent with another one.
    #[error("invalid optimizer configuration: {0}")]
    InvalidConfig(String),

    /// The backend named at run time is unknown or was not compiled into this binary.
    #[error("backend `{requested}` is not available in this build; available: {available}")]
    UnknownBackend {
        /// What the user asked for.
        requested: String,
        /// The backends compiled in, comma separated.
        available: String,
    },

    /// A `step` call does not fit the optimizer's state (task count, shapes, missing bases).
    #[error("optimizer step rejected: {0}")]
    InvalidStep(String),

    /// A present task's loss or gradient holds NaN or infinite values. The step was not
    /// applied: the module comes back unchanged and the caller can skip it.
    #[error(
        "task {task}: the {what} is {value}, not finite; the step was not applied (skip it, or \
         lower the learning rate if this repeats)"
    )]
    NonFinite {
        /// The task's position in the step.
        task: usize,
        /// `loss` or `gradient norm`.
        what: &'static str,
        /// The offending value.
        value: f64,
    },

    /// Null-space projection is enabled but some projected weights have no knowledge basis.
    #[error(
        "null-space projection is enabled but {count} projected weight(s) have no knowledge basis \
         (first: `{first}`); collect input covariances for them or disable null-space projection"
    )]
    MissingKnowledgeBasis {
        /// How many projected weights lack a basis.
        count: usize,
        /// The first such parameter path.
        first: String,
    },

    /// A host-side decomposition (eigen-decomposition, SVD) failed.
    #[error("decomposition failed: {0}")]
    Decomposition(String),

    /// Reading or writing a state file failed.
    #[error("{path}: {message}")]
    State {
        /// The state file.
        path: PathBuf,
        /// What went wrong, and what to do.
        message: String,
    },
}

/// Result alias for gems-core.
pub type Result<T> = std::result::Result<T, GemsError>;
