//! The results of a comparison: each method's metrics over seeds (mean ± std), the paired
//! significance test of each method against the reference (GEMS) on per-request test NDCG@10,
//! and the table that shows both.

use std::collections::BTreeMap;

use gems_data::{MetricsReport, Protocol, Task};
use serde::Serialize;

use crate::error::{CliError, Result};
use crate::evaluation::{RequestNdcg, RunMetrics, SELECTION_CUTOFF};
use crate::report::{cell, columns, markdown_table};
use crate::statistics::{PairedTest, mean, paired_t_test, sample_std};

/// Mean and sample standard deviation over seeds of every metric of one protocol.
#[derive(Clone, Debug, Serialize)]
pub struct SeedSummary {
    /// Mean over seeds.
    pub mean: MetricsReport,
    /// Sample standard deviation over seeds (0 with one seed).
    pub std: MetricsReport,
}

/// Summarizes `reports` (one per seed, same protocol and tasks) under `name`.
pub fn summarize(reports: &[&MetricsReport], name: &str) -> SeedSummary {
    let first = reports[0];
    let mut mean_report = first.clone();
    mean_report.name = name.to_string();
    let mut std_report = mean_report.clone();
    for (task, table) in &first.tasks {
        let over_seeds = |value: &dyn Fn(&MetricsReport) -> Option<f64>| -> Vec<f64> {
            reports.iter().filter_map(|r| value(r)).collect()
        };
        let mean_table = mean_report.tasks.get_mut(task).expect("same tasks");
        let std_table = std_report.tasks.get_mut(task).expect("same tasks");
        for k in table.recall.keys() {
            let values = over_seeds(&|r| r.recall(*task, *k));
            mean_table.recall.insert(*k, mean(&values));
            std_table.recall.insert(*k, sample_std(&values));
        }
        for k in table.ndcg.keys() {
            let values = over_seeds(&|r| r.ndcg(*task, *k));
            mean_table.ndcg.insert(*k, mean(&values));
            std_table.ndcg.insert(*k, sample_std(&values));
        }
        let values = over_seeds(&|r| r.tasks.get(task).map(|t| t.mrr));
        mean_table.mrr = mean(&values);
        std_table.mrr = sample_std(&values);
    }
    SeedSummary {
        mean: mean_report,
        std: std_report,
    }
}

/// Per-request NDCG@10 averaged over seeds; fails when the runs did not rank the same requests.
pub fn mean_per_request(runs: &[&RunMetrics], what: &str) -> Result<RequestNdcg> {
    let first = &runs[0].per_request;
    if first.tasks.is_empty() {
        return Err(CliError::Settings(format!(
            "{what}: metrics.json has no per-request values (written by an older gems); remove the run to redo it"
        )));
    }
    let mut sampled = vec![0.0; first.tasks.len()];
    let mut full_ranking = vec![0.0; first.tasks.len()];
    for run in runs {
        let values = &run.per_request;
        if values.tasks != first.tasks
            || values.sampled.len() != sampled.len()
            || values.full_ranking.len() != full_ranking.len()
        {
            return Err(CliError::Settings(format!(
                "{what}: the runs ranked different test requests"
            )));
        }
        for (sum, value) in sampled.iter_mut().zip(&values.sampled) {
            *sum += value / runs.len() as f64;
        }
        for (sum, value) in full_ranking.iter_mut().zip(&values.full_ranking) {
            *sum += value / runs.len() as f64;
        }
    }
    Ok(RequestNdcg {
        tasks: first.tasks.clone(),
        sampled,
        full_ranking,
    })
}

/// Paired t-tests of `method` against `reference` on per-request NDCG@10, per protocol and task
/// (`method − reference`).
pub type Significance = BTreeMap<&'static str, BTreeMap<Task, PairedTest>>;

/// The paired tests of `method` against `reference`; fails when they ranked other requests.
pub fn significance(reference: &RequestNdcg, method: &RequestNdcg) -> Result<Significance> {
    if reference.tasks != method.tasks {
        return Err(CliError::Settings(
            "the methods were tested on different requests".into(),
        ));
    }
    let mut all = Significance::new();
    for (protocol, reference_values, method_values) in [
        ("sampled", &reference.sampled, &method.sampled),
        (
            "full_ranking",
            &reference.full_ranking,
            &method.full_ranking,
        ),
    ] {
        let mut per_task = BTreeMap::new();
        for task in Task::ALL {
            let of_task = |values: &[f64]| -> Vec<f64> {
                values
                    .iter()
                    .zip(&reference.tasks)
                    .filter(|(_, t)| **t == task)
                    .map(|(v, _)| *v)
                    .collect()
            };
            if let Some(test) = paired_t_test(&of_task(reference_values), &of_task(method_values)) {
                per_task.insert(task, test);
            }
        }
        all.insert(protocol, per_task);
    }
    Ok(all)
}

/// The marker of a p-value in the table: `**` below 0.01, `*` below 0.05.
pub fn marker(p_value: f64) -> &'static str {
    if p_value < 0.01 {
        "**"
    } else if p_value < 0.05 {
        "*"
    } else {
        ""
    }
}

/// One method's row of the table.
pub struct MethodRow<'a> {
    /// Name shown (method and chosen settings).
    pub name: String,
    /// Metrics over seeds.
    pub summary: &'a SeedSummary,
    /// Tests against the reference under this protocol (none for the reference itself).
    pub tests: Option<&'a BTreeMap<Task, PairedTest>>,
}

/// The table of one protocol: mean ± std per metric (the mean alone with one seed), a marker
/// on NDCG@10 where the method differs from the reference, and the floors as plain rows.
pub fn seed_table(
    title: &str,
    rows: &[MethodRow],
    floors: &[MetricsReport],
    seeds: usize,
) -> String {
    let cutoffs = rows
        .first()
        .map(|r| r.summary.mean.cutoffs.clone())
        .unwrap_or_default();
    let mut lines: Vec<(String, Vec<String>)> = Vec::new();
    for row in rows {
        let cells = columns(&cutoffs)
            .into_iter()
            .map(|column| {
                let Some(value) = cell(&row.summary.mean, column) else {
                    return "—".to_string();
                };
                let mut text = format!("{value:.4}");
                if seeds > 1 {
                    let std = cell(&row.summary.std, column).unwrap_or(0.0);
                    text.push_str(&format!(" ± {std:.4}"));
                }
                let (task, recall, k) = column;
                if !recall
                    && k == SELECTION_CUTOFF
                    && let Some(test) = row.tests.and_then(|tests| tests.get(&task))
                {
                    text.push_str(marker(test.p_value));
                }
                text
            })
            .collect();
        lines.push((row.name.clone(), cells));
    }
    for floor in floors {
        let cells = columns(&cutoffs)
            .into_iter()
            .map(|column| cell(floor, column).map_or_else(|| "—".into(), |v| format!("{v:.4}")))
            .collect();
        lines.push((format!("{} (floor)", floor.name), cells));
    }
    markdown_table(title, &cutoffs, &lines)
}

/// The protocols in table order with the title of each (the caller adds the sampled
/// protocol's candidates, which come from the dataset's manifest).
pub const PROTOCOLS: [(Protocol, &str, &str); 2] = [
    (Protocol::Sampled, "sampled", "Test, sampled protocol"),
    (
        Protocol::FullRanking,
        "full_ranking",
        "Test, full ranking (whole catalogue)",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;
    use gems_data::metrics::MetricsAccumulator;

    fn report(name: &str, rec_ranks: &[usize]) -> MetricsReport {
        // One rec request per rank: the target at that 1-based rank of a list of 20.
        let mut accumulator = MetricsAccumulator::new(&[10]);
        for &rank in rec_ranks {
            let ranking: Vec<u64> = (1..=20).collect();
            accumulator.add_ranking(Task::Rec, &ranking, &[rank as u64]);
        }
        accumulator.finish(name, Protocol::Sampled)
    }

    #[test]
    fn seeds_summarize_to_mean_and_sample_std() {
        // NDCG@10 of a single target at rank r is 1 / log2(r + 1): rank 1 → 1, rank 3 → 0.5,
        // rank 20 → 0 (outside the cut-off).
        let seeds = [report("a", &[1]), report("a", &[3]), report("a", &[20])];
        let summary = summarize(&seeds.iter().collect::<Vec<_>>(), "gems");
        assert_eq!(summary.mean.name, "gems");
        let mean = summary.mean.ndcg(Task::Rec, 10).unwrap();
        assert!((mean - 0.5).abs() < 1e-12, "{mean}");
        // Deviations 0.5, 0, −0.5: squares 0.5, / 2 → std √0.25 = 0.5.
        let std = summary.std.ndcg(Task::Rec, 10).unwrap();
        assert!((std - 0.5).abs() < 1e-12, "{std}");
        let recall_std = summary.std.recall(Task::Rec, 10).unwrap();
        // Recall@10: 1, 1, 0 → mean 2/3, std √(1/3).
        assert!((recall_std - (1.0f64 / 3.0).sqrt()).abs() < 1e-12);
    }

    fn per_request(tasks: &[Task], sampled: &[f64]) -> RunMetrics {
        let empty = report("x", &[1]);
        RunMetrics {
            sampled: empty.clone(),
            full_ranking: empty,
            floor_sampled: vec![],
            floor_full_ranking: vec![],
            sampled_negatives: None,
            per_request: RequestNdcg {
                tasks: tasks.to_vec(),
                sampled: sampled.to_vec(),
                full_ranking: sampled.iter().map(|v| v / 2.0).collect(),
            },
        }
    }

    #[test]
    fn the_paired_test_pairs_requests_of_the_same_task_after_averaging_seeds() {
        use Task::{Rec, Search};
        let tasks = [Search, Rec, Search, Rec, Search, Rec];
        let reference = per_request(&tasks, &[1.0, 0.0, 2.0, 0.0, 3.0, 0.0]);
        // Two seeds of the method; their mean is search [1.5, 2.5, 2.5], rec [0, 0, 0].
        let seed_a = per_request(&tasks, &[1.0, 0.0, 3.0, 0.0, 2.0, 0.0]);
        let seed_b = per_request(&tasks, &[2.0, 0.0, 2.0, 0.0, 3.0, 0.0]);
        let method = mean_per_request(&[&seed_a, &seed_b], "m").unwrap();
        assert_eq!(method.sampled, vec![1.5, 0.0, 2.5, 0.0, 2.5, 0.0]);
        let tests = significance(&mean_per_request(&[&reference], "r").unwrap(), &method).unwrap();
        // Search differences 0.5, 0.5, −0.5: mean 1/6, std √(1/3), t = (1/6) / (√(1/3) / √3)
        // = 0.5; ν = 2: p = 1 − 0.5 / √2.25 = 2/3.
        let search = tests["sampled"][&Search];
        assert_eq!(search.pairs, 3);
        assert!((search.t - 0.5).abs() < 1e-12, "{search:?}");
        assert!((search.p_value - 2.0 / 3.0).abs() < 1e-9, "{search:?}");
        // Identical rec values: p = 1.
        assert_eq!(tests["sampled"][&Rec].p_value, 1.0);
        // The full-ranking values are halved: same t.
        assert!((tests["full_ranking"][&Search].t - 0.5).abs() < 1e-12);
        // Runs over other requests are refused.
        let other = per_request(&[Rec; 6], &[0.0; 6]);
        assert!(mean_per_request(&[&reference, &other], "m").is_err());
    }

    #[test]
    fn the_table_shows_mean_plus_minus_std_and_markers_on_ndcg_at_10() {
        let seeds = [report("a", &[1]), report("a", &[3])];
        let summary = summarize(&seeds.iter().collect::<Vec<_>>(), "galore");
        let mut tests = BTreeMap::new();
        let significant = PairedTest {
            pairs: 10,
            mean_difference: -0.1,
            t: -3.0,
            p_value: 0.004,
        };
        tests.insert(Task::Rec, significant);
        let floor = report("popularity", &[20]);
        let table = seed_table(
            "title",
            &[MethodRow {
                name: "galore (lr 1e-3)".into(),
                summary: &summary,
                tests: Some(&tests),
            }],
            &[floor],
            2,
        );
        // Rec N@10: mean 0.75, std √0.125 = 0.3536; a double marker for p < 0.01.
        assert!(table.contains("| 0.7500 ± 0.3536** |"), "{table}");
        // Recall@10 (1, 1) carries no marker.
        assert!(table.contains("| 1.0000 ± 0.0000 |"), "{table}");
        assert!(table.contains("| popularity (floor) |"), "{table}");
        assert_eq!(marker(0.03), "*");
        assert_eq!(marker(0.2), "");
    }
}
