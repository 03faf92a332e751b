//! The subcommands of `gems`, one module each.
