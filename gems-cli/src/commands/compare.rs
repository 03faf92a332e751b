//! `gems compare`: the same data, model and budget for several methods, in one table like the
//! paper's, with the popularity / BM25 floor as reference rows.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use gems_data::MetricsReport;
use serde::Serialize;

use crate::commands::train::train;
use crate::error::{CliError, Result};
use crate::evaluation::RunMetrics;
use crate::report::{comparison_table, sampled_candidates};
use crate::run_dir::RunDir;
use crate::settings::{TrainArgs, TrainMethod};

/// Arguments of `gems compare`.
#[derive(Args, Debug)]
pub struct CompareCommand {
    /// Settings shared by every method (`--method` is ignored: see `--methods`).
    #[command(flatten)]
    pub settings: TrainArgs,
    /// Methods to compare, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "gems,galore,lora,adamw,gems-no-msd,gems-no-nsp"
    )]
    pub methods: Vec<TrainMethod>,
    /// Learning rates of single methods, comma-separated `METHOD=LR` (e.g. `adamw=1e-3`):
    /// full fine-tuning usually wants a smaller rate than the low-rank methods. The others use
    /// `--learning-rate`; the table names every rate that differs from it.
    #[arg(long, value_delimiter = ',')]
    pub method_learning_rates: Vec<MethodRate>,
    /// Directory of the comparison; each method's run goes in a sub-directory.
    #[arg(long, default_value = "runs/compare")]
    pub out: PathBuf,
}

/// A learning rate for one method (`METHOD=LR`).
#[derive(Clone, Copy, Debug)]
pub struct MethodRate {
    method: TrainMethod,
    rate: f64,
}

impl std::str::FromStr for MethodRate {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        let (method, rate) = text
            .split_once('=')
            .ok_or_else(|| format!("`{text}`: expected METHOD=LR, e.g. adamw=1e-3"))?;
        let method = method.trim().parse()?;
        let rate = rate
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|rate| *rate > 0.0 && rate.is_finite())
            .ok_or_else(|| format!("`{text}`: the learning rate must be a positive number"))?;
        Ok(Self { method, rate })
    }
}

/// One method's outcome (`comparison.json`).
#[derive(Serialize)]
struct Entry {
    method: String,
    seconds: f64,
    metrics: RunMetrics,
}

impl CompareCommand {
    /// Runs the command.
    pub fn run(self) -> Result<()> {
        if self.settings.method.is_some() {
            return Err(CliError::Settings(
                "gems compare takes --methods, not --method".into(),
            ));
        }
        let base = self.settings.resolve()?;
        if let Some(extra) = self
            .method_learning_rates
            .iter()
            .find(|rate| !self.methods.contains(&rate.method))
        {
            return Err(CliError::Settings(format!(
                "--method-learning-rates names {}, which is not in --methods",
                extra.method
            )));
        }
        let root = RunDir::create(&self.out)?;
        let mut entries = Vec::new();
        for method in &self.methods {
            let mut settings = base.clone();
            settings.method = *method;
            if let Some(rate) = self
                .method_learning_rates
                .iter()
                .rev()
                .find(|rate| rate.method == *method)
            {
                settings.learning_rate = rate.rate;
            }
            let run = RunDir::create(&root.path(method.name()))?;
            if run.path(crate::run_dir::CHECKPOINT).exists() {
                return Err(CliError::run(
                    run.root(),
                    "already holds a run; remove it or choose another --out",
                ));
            }
            run.write_text(crate::run_dir::CONFIG, &settings.to_toml())?;
            eprintln!("== {method} ==");
            let started = Instant::now();
            let mut metrics =
                train(&settings, &run, false, None, None)?.expect("runs without stop_after finish");
            let name = if settings.learning_rate == base.learning_rate {
                method.name().to_string()
            } else {
                format!("{method} (lr {:e})", settings.learning_rate)
            };
            metrics.sampled.name.clone_from(&name);
            metrics.full_ranking.name.clone_from(&name);
            entries.push(Entry {
                method: name,
                seconds: started.elapsed().as_secs_f64(),
                metrics,
            });
        }
        let table = |pick: &dyn Fn(&RunMetrics) -> (&MetricsReport, &Vec<MetricsReport>),
                     title: &str| {
            let mut rows: Vec<&MetricsReport> =
                entries.iter().map(|e| pick(&e.metrics).0).collect();
            if let Some(first) = entries.first() {
                rows.extend(pick(&first.metrics).1);
            }
            comparison_table(title, &rows)
        };
        let text = format!(
            "{}\n{}\nWall time per method: {}\n",
            table(
                &|m| (&m.sampled, &m.floor_sampled),
                &format!(
                    "Test, sampled protocol ({})",
                    sampled_candidates(entries.first().and_then(|e| e.metrics.sampled_negatives))
                )
            ),
            table(
                &|m| (&m.full_ranking, &m.floor_full_ranking),
                "Test, full ranking (whole catalogue)"
            ),
            entries
                .iter()
                .map(|e| format!("{} {:.0} s", e.method, e.seconds))
                .collect::<Vec<_>>()
                .join(", ")
        );
        root.write_text("comparison.md", &text)?;
        root.write_json("comparison.json", &entries)?;
        println!("{text}");
        Ok(())
    }
}
