//! The subcommands of `gems`, one module each.
pub mod data;
