//! Popularity: items ranked by how often they are a target in the training requests.

use std::collections::HashMap;

use crate::baselines::Ranker;
use crate::schema::{ItemId, Request, Task};

/// Counts of training targets (both tasks together).
pub struct PopularityRanker {
    counts: HashMap<ItemId, u64>,
}

impl PopularityRanker {
    /// Counts the targets of `training_requests`.
    pub fn fit(training_requests: &[Request]) -> Self {
        let mut counts: HashMap<ItemId, u64> = HashMap::new();
        for request in training_requests {
            for target in &request.targets {
                *counts.entry(*target).or_default() += 1;
            }
        }
        PopularityRanker { counts }
    }

    /// Training count of `item`.
    pub fn count(&self, item: ItemId) -> u64 {
        self.counts.get(&item).copied().unwrap_or(0)
    }
}

impl Ranker for PopularityRanker {
    fn name(&self) -> String {
        "popularity".to_string()
    }

    fn supports(&self, _task: Task) -> bool {
        true
    }

    fn score(&mut self, _request: &Request, candidates: &[ItemId]) -> Vec<f64> {
        candidates
            .iter()
            .map(|item| self.count(*item) as f64)
            .collect()
    }
}
