//! The subcommands of `gems`, one module each.
pub mod analyze;
pub mod bench;
pub mod compare;
pub mod data;
pub mod eval;
pub mod infer;
pub mod model;
pub mod saved_run;
pub mod train;
