//! The subcommands of `gems`, one module each.
pub mod data;
pub mod train;
pub mod eval;
pub mod infer;
pub mod saved_run;
pub mod compare;
pub mod analyze;
pub mod model;
