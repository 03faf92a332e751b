//! Fixed, seeded evaluation negatives (the sampled protocol: target + 99 negatives).
//!
//! Negatives are drawn uniformly from the catalogue without replacement, never equal to one of the
//! request's targets or history items, and written into the request files so that every evaluation
//! uses the same candidates. One ChaCha8 generator seeded with [`NegativeSampling::seed`] is used
//! for the requests in the order given, so the same input order and seed give the same negatives.

use std::collections::HashSet;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::schema::{ItemId, Request};

/// Options of negative sampling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NegativeSampling {
    /// Negatives per request (99 in the sampled protocol of the literature).
    pub per_request: usize,
    /// Seed of the generator.
    pub seed: u64,
}

impl Default for NegativeSampling {
    fn default() -> Self {
        NegativeSampling {
            per_request: 99,
            seed: 2026,
        }
    }
}

/// What the sampling did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NegativeReport {
    /// Requests that received negatives.
    pub requests: usize,
    /// Requests that got fewer than `per_request` because the catalogue has too few other items.
    pub requests_short: usize,
}

/// Replaces the negatives of every request with a fresh seeded sample.
pub fn sample_negatives(
    requests: &mut [Request],
    catalogue: &[ItemId],
    options: NegativeSampling,
) -> NegativeReport {
    let mut generator = ChaCha8Rng::seed_from_u64(options.seed);
    let mut report = NegativeReport::default();
    for request in requests.iter_mut() {
        request.negatives = sample_for(request, catalogue, options.per_request, &mut generator);
        report.requests += 1;
        if request.negatives.len() < options.per_request {
            report.requests_short += 1;
        }
    }
    report
}

fn sample_for(
    request: &Request,
    catalogue: &[ItemId],
    count: usize,
    generator: &mut ChaCha8Rng,
) -> Vec<ItemId> {
    let excluded: HashSet<ItemId> = request
        .targets
        .iter()
        .chain(&request.history)
        .copied()
        .collect();
    let eligible = catalogue
        .iter()
        .filter(|item| !excluded.contains(item))
        .count();
    if eligible <= count.saturating_mul(2) {
        // Small catalogue: shuffle the eligible items and take a prefix.
        let mut pool: Vec<ItemId> = catalogue
            .iter()
            .copied()
            .filter(|item| !excluded.contains(item))
            .collect();
        for index in 0..pool.len().min(count) {
            let pick = generator.random_range(index..pool.len());
            pool.swap(index, pick);
        }
        pool.truncate(count);
        return pool;
    }
    // Large catalogue: rejection sampling is cheap because fewer than half the items are taken.
    let mut chosen = Vec::with_capacity(count);
    let mut seen: HashSet<ItemId> = HashSet::with_capacity(count * 2);
    while chosen.len() < count {
        let item = catalogue[generator.random_range(0..catalogue.len())];
        if !excluded.contains(&item) && seen.insert(item) {
            chosen.push(item);
        }
    }
    chosen
}
