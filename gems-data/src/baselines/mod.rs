//! Rankers that need no model: the floor every trained model must clear.
//!
//! - [`PopularityRanker`]: how often each item is a target of a training request.
//! - [`Bm25Ranker`]: BM25 (k1 = 1.2, b = 0.75) of the search query against item title + text +
//!   categories; search only.
//! - [`RandomRanker`]: seeded random scores, the chance level.
//!
//! [`evaluate_ranker`] scores every candidate of every request and evaluates the scores with the
//! pessimistic tie rule of [`crate::metrics::rank_by_score`] (via [`crate::metrics::evaluate_scores`]).

mod bm25;
mod popularity;

pub use bm25::{Bm25Parameters, Bm25Ranker};
pub use popularity::PopularityRanker;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::metrics::{MetricsAccumulator, MetricsReport, Protocol, evaluate_scores};
use crate::schema::{ItemId, Request, Task};

/// Something that scores candidate items for a request (higher is better).
pub trait Ranker {
    /// Name shown in reports.
    fn name(&self) -> String;

    /// Whether the ranker applies to `task` (BM25 needs a query).
    fn supports(&self, task: Task) -> bool;

    /// One score per candidate.
    fn score(&mut self, request: &Request, candidates: &[ItemId]) -> Vec<f64>;
}

/// Seeded random scores: the chance level of each protocol.
pub struct RandomRanker {
    generator: ChaCha8Rng,
}

impl RandomRanker {
    /// A random ranker with its seed.
    pub fn new(seed: u64) -> Self {
        RandomRanker {
            generator: ChaCha8Rng::seed_from_u64(seed),
        }
    }
}

impl Ranker for RandomRanker {
    fn name(&self) -> String {
        "random".to_string()
    }

    fn supports(&self, _task: Task) -> bool {
        true
    }

    fn score(&mut self, _request: &Request, candidates: &[ItemId]) -> Vec<f64> {
        candidates
            .iter()
            .map(|_| self.generator.random::<f64>())
            .collect()
    }
}

/// Evaluates `ranker` on the requests of the tasks it supports.
///
/// Sampled protocol: each request's targets and fixed negatives (requests without negatives are an
/// error of the caller: sample them first). Full ranking: every item of `catalogue`.
pub fn evaluate_ranker(
    ranker: &mut dyn Ranker,
    requests: &[Request],
    catalogue: &[ItemId],
    protocol: Protocol,
    cutoffs: &[usize],
) -> MetricsReport {
    let mut accumulator = MetricsAccumulator::new(cutoffs);
    for request in requests {
        if !ranker.supports(request.task) {
            continue;
        }
        let candidates = match protocol {
            Protocol::Sampled => request.sampled_candidates(),
            Protocol::FullRanking => catalogue.to_vec(),
        };
        let scores = ranker.score(request, &candidates);
        let metrics = evaluate_scores(
            &candidates,
            &scores,
            &request.targets,
            accumulator.cutoffs(),
        );
        accumulator.add(request.task, &metrics);
    }
    accumulator.finish(&ranker.name(), protocol)
}
