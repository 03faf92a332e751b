//! `gems eval`: test metrics of a trained run, both protocols, as a table and JSON.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use gems_data::Protocol;

use crate::error::{CliError, Result};
use crate::evaluation::Evaluation;
use crate::report::{comparison_table, sampled_candidates};
use crate::run_dir;
use crate::saved_run::RunArgs;

/// Which requests to evaluate on.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Split {
    /// The test split.
    Test,
    /// The validation split.
    Valid,
}

/// Arguments of `gems eval`.
#[derive(Args, Debug)]
pub struct EvalCommand {
    /// The run (and which of its models).
    #[command(flatten)]
    pub run: RunArgs,
    /// Requests to rank.
    #[arg(long, value_enum, default_value = "test")]
    pub split: Split,
    /// Beam width (default: the run's).
    #[arg(long)]
    pub beam_width: Option<usize>,
    /// Also write the metrics as JSON to this file (`-` for standard output only).
    #[arg(long)]
    pub json: Option<PathBuf>,
}

impl EvalCommand {
    /// Runs the command.
    pub fn run(self) -> Result<()> {
        let saved = self.run.open()?;
        let requests = match self.split {
            Split::Test => &saved.experiment.dataset.test,
            Split::Valid => &saved.experiment.dataset.valid,
        };
        let beam_width = self.beam_width.unwrap_or(saved.settings.beam_width);
        if beam_width == 0 {
            return Err(CliError::Settings("--beam-width must be at least 1".into()));
        }
        crate::evaluation::warn_if_shallow(beam_width);
        let negatives = saved.experiment.negatives_per_request();
        let evaluation = Evaluation::new(&saved.experiment, beam_width);
        let name = saved.settings.method.name();
        let sampled =
            evaluation.ranking_metrics(&saved.model, requests, Protocol::Sampled, name)?;
        let full =
            evaluation.ranking_metrics(&saved.model, requests, Protocol::FullRanking, name)?;
        let json = serde_json::json!({ "sampled": sampled, "full_ranking": full });
        match &self.json {
            Some(path) if path.as_os_str() == "-" => println!(
                "{}",
                serde_json::to_string_pretty(&json).expect("metrics serialise")
            ),
            Some(path) => {
                run_dir::write_json(path, &json)?;
                print_tables(&sampled, &full, negatives);
            }
            None => print_tables(&sampled, &full, negatives),
        }
        Ok(())
    }
}

fn print_tables(
    sampled: &gems_data::MetricsReport,
    full: &gems_data::MetricsReport,
    negatives: Option<usize>,
) {
    let title = format!("Sampled protocol ({})", sampled_candidates(negatives));
    println!("{}", comparison_table(&title, &[sampled]));
    println!(
        "{}",
        comparison_table("Full ranking (whole catalogue)", &[full])
    );
}
