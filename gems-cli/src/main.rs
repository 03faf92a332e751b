//! `gems`: the command line of gems-rs.

mod model_command;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// GEMS (Gradient Multi-Subspace Tuning) for unified search and recommendation.
#[derive(Parser)]
#[command(name = "gems", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect a backbone model (T5 or Qwen2) from a Hugging Face directory.
    #[command(subcommand)]
    Model(model_command::ModelCommand),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Model(command) => command.run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
