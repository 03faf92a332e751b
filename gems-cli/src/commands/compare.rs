//! `gems compare`: the same data, model and budget for several methods, in one table like the
//! paper's, with the popularity / BM25 floor as reference rows.
//!
//! With `--tune`, each method is trained at every point of its grid (learning rates, and the
//! rank and scale grids when given) with the first seed, its best point is chosen on validation
//! NDCG@10 (mean of both tasks), and that point is trained again with the other seeds. The table
//! shows mean ± std over seeds and marks where a method's per-request test NDCG@10 differs from
//! GEMS's (paired t-test). Every run is kept under `OUT/runs/METHOD/POINT`; a run already
//! finished there is read back instead of trained again, one interrupted is resumed from its
//! checkpoint, so an interrupted comparison continues where it stopped.
//!
//! ```text
//! OUT/runs/METHOD/lr1e-3-rank16-scale0.25-seed42-epochs8/   one run (see `run_dir`)
//!     compare.md      the tables
//!     compare.json    plan, what the budget dropped, tuning points, chosen settings, means,
//!                     stds and p-values
//!     tuning.svg      validation NDCG@10 against the learning rate, per method
//! ```

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use gems_data::MetricsReport;
use serde::Serialize;

use crate::commands::train::train;
use crate::comparison::{
    MethodRow, PROTOCOLS, SeedSummary, Significance, mean_per_request, seed_table, significance,
    summarize,
};
use crate::error::{CliError, Result};
use crate::evaluation::RunMetrics;
use crate::plots::{Series, line_chart};
use crate::report::sampled_candidates;
use crate::run_dir::{self, RunDir};
use crate::settings::{TrainArgs, TrainMethod, TrainSettings};
use crate::tuning::{Candidate, Grid, Plan, Seeds};

/// Arguments of `gems compare`.
#[derive(Args, Debug)]
pub struct CompareCommand {
    /// Settings shared by every method (`--method` is ignored: see `--methods`).
    #[command(flatten)]
    pub settings: TrainArgs,
    /// Methods to compare, comma-separated. The first of them, or `gems` when listed, is the
    /// reference of the significance tests.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "gems,galore,lora,adamw,gems-no-msd,gems-no-nsp"
    )]
    pub methods: Vec<TrainMethod>,
    /// Learning rates of single methods without tuning, comma-separated `METHOD=LR` (e.g.
    /// `adamw=1e-3`). The others use `--learning-rate`; the table names every method's rate.
    #[arg(long, value_delimiter = ',', conflicts_with = "tune")]
    pub method_learning_rates: Vec<MethodRate>,
    /// Tune each method on validation: train it at every learning rate of `--lr-grid` (and
    /// every rank / scale of `--rank-grid` / `--scale-grid`), keep the point with the best
    /// validation NDCG@10 (mean of both tasks), and report that point's test metrics.
    #[arg(long)]
    pub tune: bool,
    /// Learning rates tried by `--tune`: `LOW:HIGH:POINTS` (log-spaced) or a list.
    // clap waives `requires = "tune"` when an argument that conflicts with `--tune` is given:
    // the grids name that one too, so that none of them is silently ignored.
    #[arg(
        long,
        default_value = Grid::DEFAULT_LEARNING_RATES,
        requires = "tune",
        conflicts_with = "method_learning_rates"
    )]
    pub lr_grid: Grid,
    /// Shared ranks (LoRA ranks) tried by `--tune` with low-rank methods, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        requires = "tune",
        conflicts_with = "method_learning_rates"
    )]
    pub rank_grid: Vec<usize>,
    /// Scales of low-rank updates tried by `--tune`, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        requires = "tune",
        conflicts_with = "method_learning_rates"
    )]
    pub scale_grid: Vec<f64>,
    /// Seeds of the final runs: a count (`3`: `--seed` and the next two) or a list (`1,2,3`).
    /// The first one also trains the tuning grid.
    #[arg(long, default_value = "1")]
    pub seeds: Seeds,
    /// Time budget in minutes: after the first run, the plan is shrunk to fit (scale grid,
    /// rank grid, every other learning rate, seeds, then epochs) and what was dropped is said.
    #[arg(long)]
    pub time_budget: Option<f64>,
    /// Directory of the comparison; every run goes in a sub-directory of `runs/`.
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

/// How this invocation got each run.
#[derive(Clone, Copy, Debug, Default, Serialize)]
struct RunCounts {
    /// Trained from the start.
    trained: usize,
    /// Continued from a checkpoint.
    resumed: usize,
    /// Finished before: read back.
    reused: usize,
}

/// One finished run.
struct Outcome {
    directory: PathBuf,
    validation: Option<f64>,
    metrics: RunMetrics,
    training_seconds: f64,
}

/// One point of a method's grid and its validation score (`compare.json`).
#[derive(Serialize)]
struct TuningPoint {
    learning_rate: f64,
    shared_rank: Option<usize>,
    scale: f64,
    validation_ndcg_at_10: Option<f64>,
    run: PathBuf,
}

/// One method's outcome (`compare.json`).
#[derive(Serialize)]
struct MethodResult {
    method: TrainMethod,
    name: String,
    chosen: ChosenSettings,
    tuning: Vec<TuningPoint>,
    runs: Vec<PathBuf>,
    training_seconds: f64,
    sampled: SeedSummary,
    full_ranking: SeedSummary,
    /// Paired t-tests against the reference on per-request test NDCG@10, per protocol and
    /// task; absent for the reference.
    against_reference: Option<Significance>,
}

#[derive(Serialize)]
struct ChosenSettings {
    learning_rate: f64,
    shared_rank: Option<usize>,
    scale: f64,
}

/// `compare.json`.
#[derive(Serialize)]
struct Report<'a> {
    settings: &'a TrainSettings,
    tuned: bool,
    learning_rates: &'a [f64],
    ranks: &'a [Option<usize>],
    scales: &'a [f64],
    seeds: &'a [u64],
    epochs: usize,
    dropped_by_time_budget: &'a [String],
    reference: TrainMethod,
    this_invocation: RunCounts,
    methods: &'a [MethodResult],
    floors: BTreeMap<&'static str, &'a [MetricsReport]>,
}

/// Trains, resumes or reads back the runs of a comparison.
struct Runner {
    root: RunDir,
    base: TrainSettings,
    counts: RunCounts,
    /// Wall seconds of the runs trained or resumed by this invocation.
    measured: Vec<f64>,
    /// Runs already counted by this invocation.
    seen: HashSet<PathBuf>,
}

impl Runner {
    fn directory(
        &self,
        method: TrainMethod,
        candidate: &Candidate,
        seed: u64,
        epochs: usize,
    ) -> PathBuf {
        self.root
            .path("runs")
            .join(method.name())
            .join(candidate.directory(method, seed, epochs))
    }

    fn finished(&self, directory: &Path) -> bool {
        directory.join(run_dir::METRICS).is_file() && directory.join(run_dir::MANIFEST).is_file()
    }

    /// The run of `candidate`: read back when finished, resumed when interrupted, else trained.
    fn run(
        &mut self,
        method: TrainMethod,
        candidate: &Candidate,
        seed: u64,
        epochs: usize,
    ) -> Result<Outcome> {
        let settings = candidate.settings(&self.base, method, seed, epochs);
        let directory = self.directory(method, candidate, seed, epochs);
        let config = directory.join(run_dir::CONFIG);
        let existing = config.is_file();
        if existing {
            let text = std::fs::read_to_string(&config)
                .map_err(|e| CliError::io(&config, "cannot read", e))?;
            let saved: TrainSettings = toml::from_str(&text).map_err(|e| {
                CliError::run(&config, format!("unreadable settings: {}", e.message()))
            })?;
            if saved != settings {
                return Err(CliError::run(
                    &directory,
                    "holds a run with other settings (the shared flags changed since it ran); remove it or choose another --out",
                ));
            }
        }
        let first_time = self.seen.insert(directory.clone());
        if self.finished(&directory) {
            if first_time {
                self.counts.reused += 1;
            }
        } else {
            // Locked as `gems train` locks its run; an existing run is recovered first (what a
            // crash left half done), then resumed from its checkpoint or, when it never reached
            // one, started over in its directory.
            let (run, _lock, resume) = if existing {
                let (run, lock) = RunDir::resume(&directory)?;
                let resume = run_dir::complete_directory(&run.path(run_dir::CHECKPOINT)).is_some();
                (run, lock, resume)
            } else {
                let (run, lock) = RunDir::create_new(&directory)?;
                (run, lock, false)
            };
            if !resume {
                run.write_text(run_dir::CONFIG, &settings.to_toml())?;
            }
            eprintln!(
                "== {method} {} ({}) ==",
                candidate.directory(method, seed, epochs),
                if resume { "resumed" } else { "new" }
            );
            let started = Instant::now();
            train(&settings, &run, resume, None, None)?;
            self.measured.push(started.elapsed().as_secs_f64());
            if resume {
                self.counts.resumed += 1;
            } else {
                self.counts.trained += 1;
            }
        }
        let manifest: serde_json::Value = run_dir::read_json(&directory.join(run_dir::MANIFEST))?;
        Ok(Outcome {
            validation: manifest["best_validation"][0].as_f64(),
            training_seconds: manifest["training_seconds"].as_f64().unwrap_or(0.0),
            metrics: run_dir::read_json(&directory.join(run_dir::METRICS))?,
            directory,
        })
    }
}

impl CompareCommand {
    /// The grid of `method`: the plan's with `--tune`, else the method's one learning rate.
    fn candidates(&self, plan: &Plan, base: &TrainSettings, method: TrainMethod) -> Vec<Candidate> {
        if self.tune {
            return plan.candidates(method);
        }
        let learning_rate = self
            .method_learning_rates
            .iter()
            .rev()
            .find(|rate| rate.method == method)
            .map_or(base.learning_rate, |rate| rate.rate);
        vec![Candidate {
            learning_rate,
            shared_rank: base.shared_rank,
            scale: base.scale,
        }]
    }

    fn check(&self) -> Result<()> {
        if self.settings.method.is_some() {
            return Err(CliError::Settings(
                "gems compare takes --methods, not --method".into(),
            ));
        }
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
        if self.rank_grid.contains(&0) {
            return Err(CliError::Settings(
                "--rank-grid: ranks must be at least 1".into(),
            ));
        }
        if self.scale_grid.iter().any(|s| !(*s > 0.0 && s.is_finite())) {
            return Err(CliError::Settings(
                "--scale-grid: scales must be positive numbers".into(),
            ));
        }
        if self
            .time_budget
            .is_some_and(|m| !(m > 0.0 && m.is_finite()))
        {
            return Err(CliError::Settings(
                "--time-budget: give a positive number of minutes".into(),
            ));
        }
        // A shared flag reaches every method; one that none of them uses changes nothing.
        let inert = self
            .methods
            .iter()
            .map(|&method| self.settings.inert_flags(method))
            .collect::<Result<Vec<_>>>()?;
        let unused: Vec<&String> = inert.first().map_or(Vec::new(), |first| {
            first
                .iter()
                .filter(|flag| inert.iter().all(|flags| flags.contains(flag)))
                .collect()
        });
        if !unused.is_empty() {
            let names: Vec<&str> = self.methods.iter().map(|m| m.name()).collect();
            let them = if unused.len() == 1 { "it" } else { "them" };
            return Err(CliError::Settings(format!(
                "{} would change nothing with --methods {}: drop {them}, or add a method that uses {them}",
                unused
                    .iter()
                    .map(|f| f.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                names.join(",")
            )));
        }
        let mut methods = self.methods.clone();
        methods.sort_by_key(|m| m.name());
        methods.dedup();
        if methods.len() != self.methods.len() {
            return Err(CliError::Settings(
                "--methods: a method is listed twice".into(),
            ));
        }
        Ok(())
    }

    /// Runs the command.
    pub fn run(self) -> Result<()> {
        self.check()?;
        let base = self.settings.resolve()?.with_absolute_paths()?;
        let started = Instant::now();
        let mut plan = Plan {
            learning_rates: if self.tune {
                self.lr_grid.0.clone()
            } else {
                vec![base.learning_rate]
            },
            ranks: if self.rank_grid.is_empty() {
                vec![base.shared_rank]
            } else {
                self.rank_grid.iter().map(|r| Some(*r)).collect()
            },
            scales: if self.scale_grid.is_empty() {
                vec![base.scale]
            } else {
                self.scale_grid.clone()
            },
            seeds: self.seeds.resolve(base.seed).map_err(CliError::Settings)?,
            epochs: base.epochs,
        };
        let methods = self.methods.clone();
        let mut runner = Runner {
            root: RunDir::create(&self.out)?,
            base: base.clone(),
            counts: RunCounts::default(),
            measured: Vec::new(),
            seen: HashSet::new(),
        };
        eprintln!(
            "plan: {} runs ({} methods, {} seed{})",
            plan.run_count(&methods),
            methods.len(),
            plan.seeds.len(),
            if plan.seeds.len() == 1 { "" } else { "s" }
        );
        let mut dropped = Vec::new();
        if let Some(minutes) = self.time_budget {
            // The first run of the plan measures what a run costs; thinning keeps it.
            let first = self.candidates(&plan, &base, methods[0])[0];
            let probe = runner.run(methods[0], &first, plan.seeds[0], plan.epochs)?;
            let per_run = runner
                .measured
                .first()
                .copied()
                .unwrap_or(probe.training_seconds);
            let seconds_left = minutes * 60.0 - started.elapsed().as_secs_f64();
            let pending = |plan: &Plan| -> usize {
                let grid: usize = methods
                    .iter()
                    .flat_map(|m| {
                        self.candidates(plan, &base, *m)
                            .into_iter()
                            .map(move |c| (*m, c))
                    })
                    .filter(|(m, c)| {
                        !runner.finished(&runner.directory(*m, c, plan.seeds[0], plan.epochs))
                    })
                    .count();
                grid + methods.len() * (plan.seeds.len() - 1)
            };
            dropped = plan.fit_budget(per_run, seconds_left, pending);
            for what in &dropped {
                eprintln!("time budget: dropped {what}");
            }
        }

        // Tuning: every point of every method's grid with the first seed.
        let mut tuned = Vec::new();
        for &method in &methods {
            let mut points = Vec::new();
            let mut best: Option<(f64, Candidate, Outcome)> = None;
            let candidates = self.candidates(&plan, &base, method);
            let single = candidates.len() == 1;
            for candidate in candidates {
                let outcome = runner.run(method, &candidate, plan.seeds[0], plan.epochs)?;
                points.push(TuningPoint {
                    learning_rate: candidate.learning_rate,
                    shared_rank: candidate.shared_rank,
                    scale: candidate.scale,
                    validation_ndcg_at_10: outcome.validation,
                    run: outcome.directory.clone(),
                });
                let score = match outcome.validation {
                    Some(score) => score,
                    None if single => f64::NEG_INFINITY,
                    None => {
                        return Err(CliError::run(
                            &outcome.directory,
                            "the run never validated (validation runs after each epoch); tuning needs at least one full epoch per run: raise --max-steps or drop it",
                        ));
                    }
                };
                if best.as_ref().is_none_or(|(b, _, _)| score > *b) {
                    best = Some((score, candidate, outcome));
                }
            }
            let (_, chosen, first) = best.expect("every method has a grid point");
            tuned.push((method, chosen, first, points));
        }

        // The other seeds at each method's chosen point.
        let mut results = Vec::new();
        for (method, chosen, first, tuning) in tuned {
            let mut outcomes = vec![first];
            for &seed in &plan.seeds[1..] {
                outcomes.push(runner.run(method, &chosen, seed, plan.epochs)?);
            }
            let name = self.row_name(method, &chosen, &base);
            let metrics: Vec<&RunMetrics> = outcomes.iter().map(|o| &o.metrics).collect();
            results.push((
                MethodResult {
                    method,
                    name: name.clone(),
                    chosen: ChosenSettings {
                        learning_rate: chosen.learning_rate,
                        shared_rank: chosen.shared_rank,
                        scale: chosen.scale,
                    },
                    tuning,
                    runs: outcomes.iter().map(|o| o.directory.clone()).collect(),
                    training_seconds: outcomes.iter().map(|o| o.training_seconds).sum(),
                    sampled: summarize(
                        &metrics.iter().map(|m| &m.sampled).collect::<Vec<_>>(),
                        &name,
                    ),
                    full_ranking: summarize(
                        &metrics.iter().map(|m| &m.full_ranking).collect::<Vec<_>>(),
                        &name,
                    ),
                    against_reference: None,
                },
                mean_per_request(&metrics, &name)?,
                outcomes,
            ));
        }

        // Significance against the reference.
        let reference = methods
            .iter()
            .copied()
            .find(|m| *m == TrainMethod::Optimizer(gems_core::Method::Gems))
            .unwrap_or(methods[0]);
        let reference_values = results
            .iter()
            .find(|(r, _, _)| r.method == reference)
            .map(|(_, values, _)| values.clone())
            .expect("the reference is a compared method");
        for (result, values, _) in &mut results {
            if result.method != reference {
                result.against_reference = Some(significance(&reference_values, values)?);
            }
        }

        let floors = &results[0].2[0].metrics;
        let (floor_sampled, floor_full) = (
            floors.floor_sampled.clone(),
            floors.floor_full_ranking.clone(),
        );
        let mut text = String::new();
        for (protocol, key, title) in PROTOCOLS {
            let title = match protocol {
                gems_data::Protocol::Sampled => {
                    format!("{title} ({})", sampled_candidates(floors.sampled_negatives))
                }
                gems_data::Protocol::FullRanking => title.to_string(),
            };
            let rows: Vec<MethodRow> = results
                .iter()
                .map(|(r, _, _)| MethodRow {
                    name: r.name.clone(),
                    summary: match protocol {
                        gems_data::Protocol::Sampled => &r.sampled,
                        gems_data::Protocol::FullRanking => &r.full_ranking,
                    },
                    tests: r.against_reference.as_ref().and_then(|s| s.get(key)),
                })
                .collect();
            let floor = match protocol {
                gems_data::Protocol::Sampled => &floor_sampled,
                gems_data::Protocol::FullRanking => &floor_full,
            };
            text.push_str(&seed_table(&title, &rows, floor, plan.seeds.len()));
            text.push('\n');
        }
        text.push_str(&self.notes(
            &plan,
            reference,
            &dropped,
            &results.iter().map(|r| &r.0).collect::<Vec<_>>(),
        ));
        let results: Vec<MethodResult> = results.into_iter().map(|(r, _, _)| r).collect();
        self.tuning_plot(&runner.root, &results)?;
        runner.root.write_text("compare.md", &text)?;
        runner.root.write_json(
            "compare.json",
            &Report {
                settings: &base,
                tuned: self.tune,
                learning_rates: &plan.learning_rates,
                ranks: &plan.ranks,
                scales: &plan.scales,
                seeds: &plan.seeds,
                epochs: plan.epochs,
                dropped_by_time_budget: &dropped,
                reference,
                this_invocation: runner.counts,
                methods: &results,
                floors: BTreeMap::from([
                    ("sampled", &floor_sampled[..]),
                    ("full_ranking", &floor_full[..]),
                ]),
            },
        )?;
        eprintln!(
            "runs: {} trained, {} resumed, {} reused ({:.0} s)",
            runner.counts.trained,
            runner.counts.resumed,
            runner.counts.reused,
            started.elapsed().as_secs_f64()
        );
        println!("{text}");
        Ok(())
    }

    /// The row name: the method and its chosen learning rate, rank and scale where these were
    /// tuned or differ from the shared settings.
    fn row_name(&self, method: TrainMethod, chosen: &Candidate, base: &TrainSettings) -> String {
        let mut parts = vec![format!("lr {:e}", chosen.learning_rate)];
        if crate::tuning::low_rank(method) {
            if (!self.rank_grid.is_empty() || chosen.shared_rank != base.shared_rank)
                && let Some(rank) = chosen.shared_rank
            {
                parts.push(format!("rank {rank}"));
            }
            if !self.scale_grid.is_empty() || chosen.scale != base.scale {
                parts.push(format!("scale {}", chosen.scale));
            }
        }
        format!("{method} ({})", parts.join(", "))
    }

    /// What the table shows and does not.
    fn notes(
        &self,
        plan: &Plan,
        reference: TrainMethod,
        dropped: &[String],
        results: &[&MethodResult],
    ) -> String {
        let mut notes = Vec::new();
        if self.tune {
            notes.push(format!(
                "Each method at its best point on validation NDCG@10 (mean of both tasks) over learning rates {}{}{}.",
                plan.learning_rates
                    .iter()
                    .map(|lr| format!("{lr:e}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                if plan.ranks.len() > 1 { " × the rank grid" } else { "" },
                if plan.scales.len() > 1 { " × the scale grid" } else { "" },
            ));
            let edges = [plan.learning_rates.first(), plan.learning_rates.last()];
            let at_edge: Vec<&str> = results
                .iter()
                .filter(|r| {
                    plan.learning_rates.len() > 1 && edges.contains(&Some(&r.chosen.learning_rate))
                })
                .map(|r| r.method.name())
                .collect();
            if !at_edge.is_empty() {
                notes.push(format!(
                    "Chosen learning rate at the edge of its grid for {}: the best may lie beyond it; widen --lr-grid.",
                    at_edge.join(", ")
                ));
            }
        } else {
            notes.push(
                "Untuned: each method at the learning rate named in its row; `gems compare --tune` tunes each method on validation.".into(),
            );
        }
        if plan.seeds.len() > 1 {
            notes.push(format!("Mean ± sample std over seeds {:?}.", plan.seeds));
        }
        notes.push(format!(
            "`*` p < 0.05, `**` p < 0.01: paired t-test against {reference} on per-request test NDCG@10 of the task (averaged over seeds)."
        ));
        notes.push("Floors are model-free reference rows (popularity, BM25), not baselines to beat by a margin.".into());
        for what in dropped {
            notes.push(format!("The time budget dropped {what}."));
        }
        notes.push(format!(
            "Training time per method (all its seeds): {}",
            results
                .iter()
                .map(|r| format!("{} {:.0} s", r.method, r.training_seconds))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        notes.join("\n") + "\n"
    }

    /// `tuning.svg`: validation NDCG@10 against log10(learning rate), per method (the best
    /// rank and scale at each rate).
    fn tuning_plot(&self, root: &RunDir, results: &[MethodResult]) -> Result<()> {
        if !self.tune {
            return Ok(());
        }
        let series: Vec<Series> = results
            .iter()
            .map(|r| {
                let mut best: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
                for point in &r.tuning {
                    if let Some(score) = point.validation_ndcg_at_10 {
                        let entry = best
                            .entry(point.learning_rate.to_bits())
                            .or_insert((point.learning_rate.log10(), score));
                        entry.1 = entry.1.max(score);
                    }
                }
                let mut points: Vec<(f64, f64)> = best.into_values().collect();
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                Series {
                    name: r.method.name().to_string(),
                    points,
                }
            })
            .collect();
        line_chart(
            &root.path("tuning.svg"),
            "Validation NDCG@10 (mean of both tasks) against the learning rate",
            "log10 learning rate",
            "validation NDCG@10",
            &series,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_args;

    #[test]
    fn the_tuning_grids_are_refused_without_tune() {
        let args: CompareCommand = parse_args(&["--tune", "--rank-grid", "32,64"]).unwrap();
        assert_eq!(args.rank_grid, [32, 64]);
        // `--lr-grid`'s default value is no use of the flag.
        parse_args::<CompareCommand>(&["--method-learning-rates", "adamw=1e-3"]).unwrap();
        for grid in [
            ["--lr-grid", "1e-3"],
            ["--rank-grid", "64"],
            ["--scale-grid", "0.5"],
        ] {
            let alone = parse_args::<CompareCommand>(&grid).unwrap_err();
            assert!(alone.contains("--tune"), "{grid:?}: {alone}");
            let flags = [grid[0], grid[1], "--method-learning-rates", "adamw=1e-3"];
            let with_rates = parse_args::<CompareCommand>(&flags).unwrap_err();
            assert!(
                with_rates.contains(grid[0]) && with_rates.contains("--method-learning-rates"),
                "{grid:?}: {with_rates}"
            );
        }
    }

    /// A shared flag is refused when no compared method uses it, and kept when one does.
    #[test]
    fn flags_no_compared_method_uses_are_refused() {
        let check = |flags: &[&str]| parse_args::<CompareCommand>(flags).unwrap().check();
        let error = check(&["--methods", "adamw,lora", "--task-rank", "8"])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("--task-rank") && error.contains("adamw,lora"),
            "{error}"
        );
        let error = check(&["--methods", "adamw", "--shared-rank", "8", "--scale", "0.5"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("--shared-rank, --scale"), "{error}");
        check(&["--methods", "adamw,galore", "--shared-rank", "8"]).unwrap();
        check(&["--methods", "adamw,gems", "--task-rank", "8"]).unwrap();
    }
}
