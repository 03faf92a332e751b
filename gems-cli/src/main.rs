//! `gems`: the command line of gems-rs.

mod commands;
mod error;
mod experiment;
mod general_corpus;
mod model_command;
mod plots;
mod progress;
mod schedule;
mod settings;

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
    /// Convert, split and describe datasets in the unified format.
    #[command(subcommand)]
    Data(commands::data::DataCommand),
}

fn run(cli: Cli) -> error::Result<()> {
    match cli.command {
        Command::Model(command) => Ok(command.run()?),
        Command::Data(command) => command.run(),
    }
}

fn main() -> ExitCode {
    let result = run(Cli::parse());
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
