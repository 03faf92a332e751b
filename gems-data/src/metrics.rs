//! Ranking metrics: Recall@K, NDCG@K and MRR per task, for the sampled and full-ranking protocols.
//!
//! Standard definitions, per request, averaged over the evaluated requests of a task:
//! - Recall@K = |relevant ∩ top K| / |relevant| (= HR@K with one target).
//! - NDCG@K = DCG@K / IDCG@K with DCG@K = Σ over relevant items at 1-based rank r ≤ K of
//!   1 / log2(r + 1), and IDCG@K the DCG of an ideal list: min(|relevant|, K) relevant items first.
//! - MRR = 1 / rank of the first relevant item in the returned list (no cut-off), 0 when none is.
//!
//! A request whose targets are not in the returned list scores 0 on every metric; an empty ranking
//! scores 0. Duplicate entries in a ranking count once (the first occurrence).
//!
//! Ties: when a ranking is made from scores ([`rank_by_score`]), a relevant candidate tied with
//! non-relevant ones is placed after all of them (pessimistic), and candidates otherwise keep
//! the order given. A model or baseline thus never gains from ties, and the result is
//! deterministic.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::schema::{ItemId, Task};

/// Cut-offs reported by default.
pub const DEFAULT_CUTOFFS: [usize; 3] = [5, 10, 20];

/// The evaluation protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// Targets plus the fixed sampled negatives of each request.
    Sampled,
    /// The whole catalogue.
    FullRanking,
}

impl fmt::Display for Protocol {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Protocol::Sampled => "sampled (targets + fixed negatives)",
            Protocol::FullRanking => "full ranking (whole catalogue)",
        })
    }
}

/// The metrics of one request.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestMetrics {
    /// Recall at each cut-off, in the order of the cut-offs given.
    pub recall: Vec<f64>,
    /// NDCG at each cut-off.
    pub ndcg: Vec<f64>,
    /// Reciprocal rank of the first relevant item within the largest cut-off (0 beyond it).
    pub reciprocal_rank: f64,
}

/// Scores one ranked list against the relevant items `targets`.
pub fn evaluate_ranking(
    ranking: &[ItemId],
    targets: &[ItemId],
    cutoffs: &[usize],
) -> RequestMetrics {
    let relevant: HashSet<ItemId> = targets.iter().copied().collect();
    let mut seen: HashSet<ItemId> = HashSet::with_capacity(ranking.len());
    // 1-based ranks of the relevant items in the de-duplicated list.
    let mut relevant_ranks = Vec::new();
    let mut rank = 0usize;
    for item in ranking {
        if !seen.insert(*item) {
            continue;
        }
        rank += 1;
        if relevant.contains(item) {
            relevant_ranks.push(rank);
        }
    }
    metrics_from_ranks(relevant_ranks, relevant.len(), cutoffs)
}

/// Scores candidates directly from their scores, without sorting: the result equals
/// `evaluate_ranking(&rank_by_score(candidates, scores, targets), targets, cutoffs)` (same
/// pessimistic ties) in O(candidates × targets), which keeps full-ranking evaluation over a large
/// catalogue cheap. Candidates must be distinct.
pub fn evaluate_scores(
    candidates: &[ItemId],
    scores: &[f64],
    targets: &[ItemId],
    cutoffs: &[usize],
) -> RequestMetrics {
    assert_eq!(candidates.len(), scores.len(), "one score per candidate");
    let relevant: HashSet<ItemId> = targets.iter().copied().collect();
    let key = |index: usize| {
        if scores[index].is_nan() {
            f64::NEG_INFINITY
        } else {
            scores[index]
        }
    };
    let relevant_positions: Vec<usize> = (0..candidates.len())
        .filter(|&index| relevant.contains(&candidates[index]))
        .collect();
    let mut relevant_ranks: Vec<usize> = relevant_positions
        .iter()
        .map(|&position| {
            let score = key(position);
            let ahead = (0..candidates.len())
                .filter(|&other| {
                    let other_score = key(other);
                    if relevant.contains(&candidates[other]) {
                        other_score > score || (other_score == score && other < position)
                    } else {
                        other_score >= score
                    }
                })
                .count();
            ahead + 1
        })
        .collect();
    relevant_ranks.sort_unstable();
    metrics_from_ranks(relevant_ranks, relevant.len(), cutoffs)
}

/// Metrics from the sorted 1-based ranks of the relevant items that were returned.
fn metrics_from_ranks(
    relevant_ranks: Vec<usize>,
    relevant_count: usize,
    cutoffs: &[usize],
) -> RequestMetrics {
    let discount = |rank: usize| 1.0 / ((rank + 1) as f64).log2();
    let mut recall = Vec::with_capacity(cutoffs.len());
    let mut ndcg = Vec::with_capacity(cutoffs.len());
    for &cutoff in cutoffs {
        if relevant_count == 0 {
            recall.push(0.0);
            ndcg.push(0.0);
            continue;
        }
        let hits: Vec<usize> = relevant_ranks
            .iter()
            .copied()
            .filter(|&rank| rank <= cutoff)
            .collect();
        recall.push(hits.len() as f64 / relevant_count as f64);
        let dcg: f64 = hits.iter().map(|&rank| discount(rank)).sum();
        let ideal: f64 = (1..=relevant_count.min(cutoff)).map(discount).sum();
        ndcg.push(if ideal > 0.0 { dcg / ideal } else { 0.0 });
    }
    // Within the largest cut-off, where a model's beam of that many items ends: a relevant
    // item further down a baseline's full list counts no more than one the beam never reached.
    let depth = cutoffs.iter().copied().max().unwrap_or(0);
    let reciprocal_rank = relevant_ranks
        .first()
        .filter(|&&rank| rank <= depth)
        .map_or(0.0, |&rank| 1.0 / rank as f64);
    RequestMetrics {
        recall,
        ndcg,
        reciprocal_rank,
    }
}

/// Orders `candidates` by descending score, placing a relevant candidate after every non-relevant
/// candidate with the same score (pessimistic ties); otherwise the input order is kept. NaN scores
/// rank last.
pub fn rank_by_score(candidates: &[ItemId], scores: &[f64], targets: &[ItemId]) -> Vec<ItemId> {
    assert_eq!(candidates.len(), scores.len(), "one score per candidate");
    let relevant: HashSet<ItemId> = targets.iter().copied().collect();
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    let key = |index: usize| {
        if scores[index].is_nan() {
            f64::NEG_INFINITY
        } else {
            scores[index]
        }
    };
    order.sort_by(|&left, &right| {
        key(right).total_cmp(&key(left)).then_with(|| {
            relevant
                .contains(&candidates[left])
                .cmp(&relevant.contains(&candidates[right]))
        })
    });
    order.into_iter().map(|index| candidates[index]).collect()
}

#[derive(Clone, Debug, Default)]
struct Sums {
    requests: usize,
    recall: Vec<f64>,
    ndcg: Vec<f64>,
    reciprocal_rank: f64,
}

/// Averages request metrics per task.
#[derive(Clone, Debug)]
pub struct MetricsAccumulator {
    cutoffs: Vec<usize>,
    per_task: BTreeMap<Task, Sums>,
}

impl MetricsAccumulator {
    /// An empty accumulator for `cutoffs` (e.g. [`DEFAULT_CUTOFFS`]).
    pub fn new(cutoffs: &[usize]) -> Self {
        MetricsAccumulator {
            cutoffs: cutoffs.to_vec(),
            per_task: BTreeMap::new(),
        }
    }

    /// The cut-offs.
    pub fn cutoffs(&self) -> &[usize] {
        &self.cutoffs
    }

    /// Adds one request's metrics (computed with the same cut-offs).
    pub fn add(&mut self, task: Task, metrics: &RequestMetrics) {
        let sums = self.per_task.entry(task).or_insert_with(|| Sums {
            recall: vec![0.0; self.cutoffs.len()],
            ndcg: vec![0.0; self.cutoffs.len()],
            ..Sums::default()
        });
        sums.requests += 1;
        for (sum, value) in sums.recall.iter_mut().zip(&metrics.recall) {
            *sum += value;
        }
        for (sum, value) in sums.ndcg.iter_mut().zip(&metrics.ndcg) {
            *sum += value;
        }
        sums.reciprocal_rank += metrics.reciprocal_rank;
    }

    /// Scores a ranking and adds it.
    pub fn add_ranking(&mut self, task: Task, ranking: &[ItemId], targets: &[ItemId]) {
        let metrics = evaluate_ranking(ranking, targets, &self.cutoffs);
        self.add(task, &metrics);
    }

    /// The averaged report.
    pub fn finish(&self, name: &str, protocol: Protocol) -> MetricsReport {
        let tasks = self
            .per_task
            .iter()
            .map(|(task, sums)| {
                let mean = |sum: f64| {
                    if sums.requests == 0 {
                        0.0
                    } else {
                        sum / sums.requests as f64
                    }
                };
                let table = TaskMetrics {
                    requests: sums.requests,
                    recall: self
                        .cutoffs
                        .iter()
                        .zip(&sums.recall)
                        .map(|(k, sum)| (*k, mean(*sum)))
                        .collect(),
                    ndcg: self
                        .cutoffs
                        .iter()
                        .zip(&sums.ndcg)
                        .map(|(k, sum)| (*k, mean(*sum)))
                        .collect(),
                    mrr: mean(sums.reciprocal_rank),
                };
                (*task, table)
            })
            .collect();
        MetricsReport {
            name: name.to_string(),
            protocol,
            cutoffs: self.cutoffs.clone(),
            tasks,
        }
    }
}

/// Averaged metrics of one task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskMetrics {
    /// Requests evaluated.
    pub requests: usize,
    /// Recall@K by K.
    pub recall: BTreeMap<usize, f64>,
    /// NDCG@K by K.
    pub ndcg: BTreeMap<usize, f64>,
    /// Mean reciprocal rank within the largest cut-off (MRR@20 with the default cut-offs).
    pub mrr: f64,
}

/// Metrics of one model or baseline under one protocol, per task; serialises to JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsReport {
    /// Model or baseline name.
    pub name: String,
    /// Protocol.
    pub protocol: Protocol,
    /// Cut-offs.
    pub cutoffs: Vec<usize>,
    /// Per-task tables.
    pub tasks: BTreeMap<Task, TaskMetrics>,
}

impl MetricsReport {
    /// NDCG@`cutoff` of `task`, if evaluated.
    pub fn ndcg(&self, task: Task, cutoff: usize) -> Option<f64> {
        self.tasks
            .get(&task)
            .and_then(|table| table.ndcg.get(&cutoff).copied())
    }

    /// Recall@`cutoff` of `task`, if evaluated.
    pub fn recall(&self, task: Task, cutoff: usize) -> Option<f64> {
        self.tasks
            .get(&task)
            .and_then(|table| table.recall.get(&cutoff).copied())
    }
}

impl fmt::Display for MetricsReport {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(formatter, "{} — {}", self.name, self.protocol)?;
        write!(formatter, "{:<8}{:>9}", "task", "requests")?;
        for cutoff in &self.cutoffs {
            write!(formatter, "{:>11}", format!("recall@{cutoff}"))?;
        }
        for cutoff in &self.cutoffs {
            write!(formatter, "{:>9}", format!("ndcg@{cutoff}"))?;
        }
        let depth = self.cutoffs.iter().max().copied().unwrap_or(0);
        writeln!(formatter, "{:>8}", format!("mrr@{depth}"))?;
        for (task, table) in &self.tasks {
            write!(formatter, "{:<8}{:>9}", task.as_str(), table.requests)?;
            for value in table.recall.values() {
                write!(formatter, "{value:>11.4}")?;
            }
            for value in table.ndcg.values() {
                write!(formatter, "{value:>9.4}")?;
            }
            writeln!(formatter, "{:>8.4}", table.mrr)?;
        }
        Ok(())
    }
}
