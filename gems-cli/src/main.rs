//! `gems`: the command line of gems-rs.

mod commands;
mod comparison;
mod distributed;
mod error;
mod evaluation;
mod experiment;
mod general_corpus;
mod hub;
mod item_embeddings;
mod knowledge;
mod memory;
mod plots;
mod progress;
mod report;
mod run_dir;
mod saved_run;
mod schedule;
mod settings;
mod statistics;
mod training;
mod tuning;
mod vocabulary;

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
    /// Train a model for search and recommendation (with no arguments: the embedded synthetic
    /// data, a small T5 from scratch, GEMS, on the CPU), then evaluate it.
    Train(commands::train::TrainCommand),
    /// Evaluate a trained run: both protocols, per task, as a table and JSON.
    Eval(commands::eval::EvalCommand),
    /// The top items to recommend for one user's history, from a trained run.
    Recommend(commands::infer::RecommendCommand),
    /// The top items for one user's history and a search query, from a trained run.
    Search(commands::infer::SearchCommand),
    /// Train several methods on the same data, model and budget; one table like the paper's.
    Compare(commands::compare::CompareCommand),
    /// Analyses of trained runs: task-gradient conflict, knowledge retention.
    #[command(subcommand)]
    Analyze(commands::analyze::AnalyzeCommand),
    /// Inspect a backbone model (T5 or Qwen2): its logits, parameters and optimizer state.
    #[command(subcommand)]
    Model(commands::model::ModelCommand),
    /// Convert, split and describe datasets in the unified format.
    #[command(subcommand)]
    Data(commands::data::DataCommand),
    /// What to expect on this machine: training steps per method, decoding, SVD.
    #[command(subcommand)]
    Bench(commands::bench::BenchCommand),
}

fn run(cli: Cli) -> error::Result<()> {
    match cli.command {
        Command::Train(command) => command.run(),
        Command::Eval(command) => command.run(),
        Command::Recommend(command) => command.run(),
        Command::Search(command) => command.run(),
        Command::Compare(command) => command.run(),
        Command::Analyze(command) => command.run(),
        Command::Model(command) => command.run(),
        Command::Data(command) => command.run(),
        Command::Bench(command) => command.run(),
    }
}

/// Logs on standard error: `info` for gems' own crates unless `RUST_LOG` says otherwise.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "warn,gems=info,gems_core=info,gems_models=info,gems_data=info",
        )
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

/// Has glibc's allocator keep the memory a training step frees for the next step: blocks below
/// 1 GiB come from its heap instead of a fresh mapping each, and the free top of the heap goes
/// back to the kernel only beyond 1 GiB instead of 128 KiB. A step frees and allocates tensors
/// of the model's sizes by the hundred, and the kernel zeroes every page it hands out afresh,
/// on first touch. On the CPU backend the mapping threshold takes 15–20% off a step. The trim
/// threshold then took a run of
/// `gems bench train --preset t5-small --batch-size 32 --methods adamw,gems --steps 4` from
/// 1.9–2.1 M page faults to 0.76–0.78 M (mostly the heap's first growth), 3.6–4.4 s less
/// system time and 6–13% less wall time, in three alternating pairs of runs.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn reuse_freed_memory() {
    for (parameter, name) in [
        (libc::M_MMAP_THRESHOLD, "mmap threshold"),
        (libc::M_TRIM_THRESHOLD, "trim threshold"),
    ] {
        // SAFETY: mallopt only changes the allocator's parameters; it runs first thing in
        // main, before any other thread exists.
        let accepted = unsafe { libc::mallopt(parameter, 1 << 30) };
        debug_assert_eq!(accepted, 1, "glibc refused the {name}");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn reuse_freed_memory() {}

/// Ends the process quietly, as Unix tools do, when its output's reader goes away
/// (`gems model info … | head`), instead of panicking at the next print. Rust ignores SIGPIPE
/// by default, which turns that into an error at every `println!`. Files are written
/// atomically, so nothing is left half-written.
#[cfg(unix)]
fn end_quietly_on_closed_output() {
    // SAFETY: restores the default disposition of one signal, first thing in main, before
    // any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
fn end_quietly_on_closed_output() {}

fn main() -> ExitCode {
    end_quietly_on_closed_output();
    reuse_freed_memory();
    init_logging();
    let result = run(Cli::parse());
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `flags` parsed as one command's arguments, with clap's rules between them (tests of those
/// rules); the error's text when they are refused.
#[cfg(test)]
fn parse_args<A: clap::Args>(flags: &[&str]) -> std::result::Result<A, String> {
    #[derive(Parser)]
    struct Flags<A: clap::Args> {
        #[command(flatten)]
        args: A,
    }
    Flags::<A>::try_parse_from(std::iter::once("gems").chain(flags.iter().copied()))
        .map(|f| f.args)
        .map_err(|e| e.to_string())
}
