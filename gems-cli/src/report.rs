//! Tables and plots of runs: the paper-style metrics table and the training curves.

use std::fmt::Write;

use gems_data::{MetricsReport, Task};

use crate::error::Result;
use crate::evaluation::RunMetrics;
use crate::plots::{Series, line_chart};
use crate::run_dir::{self, RunDir};
use crate::training::Curves;

/// One column of the paper's layout: a task, Recall (`true`) or NDCG, and a cut-off.
pub type Column = (Task, bool, usize);

/// The columns of the paper's layout: Recall then NDCG at every cut-off, for search, then rec.
pub fn columns(cutoffs: &[usize]) -> Vec<Column> {
    let mut all = Vec::new();
    for task in Task::ALL {
        for recall in [true, false] {
            for k in cutoffs {
                all.push((task, recall, *k));
            }
        }
    }
    all
}

/// The value of `report` in `column`, if evaluated.
pub fn cell(report: &MetricsReport, (task, recall, k): Column) -> Option<f64> {
    if recall {
        report.recall(task, k)
    } else {
        report.ndcg(task, k)
    }
}

/// A Markdown table of the paper's layout with the given rows: a name and one text per column
/// of [`columns`].
pub fn markdown_table(title: &str, cutoffs: &[usize], rows: &[(String, Vec<String>)]) -> String {
    let mut table = format!("{title}\n\n| method |");
    let mut rule = String::from("|---|");
    for (task, recall, k) in columns(cutoffs) {
        let metric = if recall { "R" } else { "N" };
        let _ = write!(table, " {} {metric}@{k} |", task.as_str());
        rule.push_str("---:|");
    }
    let _ = write!(table, "\n{rule}\n");
    for (name, cells) in rows {
        let _ = write!(table, "| {name} |");
        for text in cells {
            let _ = write!(table, " {text} |");
        }
        table.push('\n');
    }
    table
}

/// A Markdown table in the paper's layout: one row per model or baseline, Recall and NDCG at
/// every cut-off for search, then for rec.
pub fn comparison_table(title: &str, reports: &[&MetricsReport]) -> String {
    let cutoffs = reports
        .first()
        .map(|r| r.cutoffs.clone())
        .unwrap_or_default();
    let rows: Vec<(String, Vec<String>)> = reports
        .iter()
        .map(|report| {
            let cells = columns(&cutoffs)
                .into_iter()
                .map(|column| {
                    cell(report, column).map_or_else(|| "—".to_string(), |v| format!("{v:.4}"))
                })
                .collect();
            (report.name.clone(), cells)
        })
        .collect();
    markdown_table(title, &cutoffs, &rows)
}

/// The candidates of the sampled protocol, for table titles: `target + N negatives`, N from the
/// dataset's manifest.
pub fn sampled_candidates(negatives: Option<usize>) -> String {
    match negatives {
        Some(count) => format!("target + {count} negatives"),
        None => "target + fixed negatives".to_string(),
    }
}

/// Both protocols of a run's test metrics, with the floor rows.
pub fn metrics_table(metrics: &RunMetrics) -> String {
    let sampled: Vec<&MetricsReport> = std::iter::once(&metrics.sampled)
        .chain(&metrics.floor_sampled)
        .collect();
    let full: Vec<&MetricsReport> = std::iter::once(&metrics.full_ranking)
        .chain(&metrics.floor_full_ranking)
        .collect();
    format!(
        "{}\n{}",
        comparison_table(
            &format!(
                "Test, sampled protocol ({})",
                sampled_candidates(metrics.sampled_negatives)
            ),
            &sampled
        ),
        comparison_table("Test, full ranking (whole catalogue)", &full)
    )
}

/// The loss, gate and validation plots of a run (see [`run_dir`]).
pub fn training_plots(run: &RunDir, curves: &Curves) -> Result<()> {
    if curves.steps.is_empty() {
        return Ok(());
    }
    let per_task =
        |value: &dyn Fn(&crate::training::StepRecord, usize) -> Option<f64>| -> Vec<Series> {
            Task::ALL
                .iter()
                .enumerate()
                .map(|(t, task)| Series {
                    name: task.as_str().to_string(),
                    points: curves
                        .steps
                        .iter()
                        .filter_map(|s| value(s, t).map(|v| (s.step as f64, v)))
                        .collect(),
                })
                .collect()
        };
    let losses = per_task(&|s, t| (s.samples[t] > 0).then_some(s.losses[t]));
    line_chart(
        &run.path(run_dir::LOSS_PLOT),
        "Training loss per task",
        "step",
        "loss",
        &smoothed(&losses, 10),
    )?;
    let gate = per_task(&|s, t| s.gate.get(t).copied());
    line_chart(
        &run.path(run_dir::GATE_PLOT),
        "Gate value per task",
        "step",
        "gate",
        &smoothed(&gate, 10),
    )?;
    if !curves.validations.is_empty() {
        let validation: Vec<Series> = Task::ALL
            .iter()
            .enumerate()
            .map(|(t, task)| Series {
                name: task.as_str().to_string(),
                points: curves
                    .validations
                    .iter()
                    .map(|v| (v.step as f64, v.ndcg_at_10[t]))
                    .collect(),
            })
            .collect();
        line_chart(
            &run.path(run_dir::VALIDATION_PLOT),
            "Validation NDCG@10 (sampled)",
            "step",
            "NDCG@10",
            &validation,
        )?;
    }
    Ok(())
}

/// Moving average over `window` points, to read noisy per-step curves.
fn smoothed(series: &[Series], window: usize) -> Vec<Series> {
    series
        .iter()
        .map(|s| Series {
            name: s.name.clone(),
            points: s
                .points
                .iter()
                .enumerate()
                .map(|(i, (x, _))| {
                    let start = i.saturating_sub(window - 1);
                    let values = &s.points[start..=i];
                    (
                        *x,
                        values.iter().map(|p| p.1).sum::<f64>() / values.len() as f64,
                    )
                })
                .collect(),
        })
        .collect()
}
