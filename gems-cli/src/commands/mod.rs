//! The subcommands of `gems`: one module per command or group of related commands
//! (`infer` holds `recommend` and `search`).
pub mod analyze;
pub mod compare;
pub mod data;
pub mod eval;
pub mod infer;
pub mod model;
pub mod train;
