//! The synthetic default: reproducible, valid, and learnable by the stated margins.

use std::collections::HashMap;

use gems_data::baselines::{
    Bm25Parameters, Bm25Ranker, PopularityRanker, RandomRanker, Ranker, evaluate_ranker,
};
use gems_data::dataset::{Dataset, PrepareOptions, prepare};
use gems_data::metrics::DEFAULT_CUTOFFS;
use gems_data::synthetic::{SyntheticConfig, generate};
use gems_data::{ItemId, Protocol, Request, Task};

fn prepared() -> Dataset {
    prepare(
        generate(&SyntheticConfig::default()).unwrap(),
        PrepareOptions::default(),
    )
    .expect("synthetic data is valid")
    .0
}

#[test]
fn generation_is_reproducible_and_seed_dependent() {
    let first = generate(&SyntheticConfig::default()).unwrap();
    let second = generate(&SyntheticConfig::default()).unwrap();
    assert_eq!(first, second);
    let other = generate(&SyntheticConfig {
        seed: 7,
        ..SyntheticConfig::default()
    })
    .unwrap();
    assert_ne!(first.requests, other.requests);
}

#[test]
fn default_size_fits_a_few_minutes_of_cpu_training() {
    let data = prepared();
    assert_eq!(data.items.len(), 480);
    let users: std::collections::HashSet<u64> =
        data.train.iter().map(|request| request.user).collect();
    assert_eq!(users.len(), 300);
    let total = data.train.len() + data.valid.len() + data.test.len();
    assert!((5_000..9_000).contains(&total), "{total} requests");
    for task in Task::ALL {
        let held_out = data
            .test
            .iter()
            .filter(|request| request.task == task)
            .count();
        assert!(held_out >= 280, "{task}: {held_out} test requests");
    }
    for request in data.valid.iter().chain(&data.test) {
        assert_eq!(request.negatives.len(), 99);
    }
}

/// A model-free stand-in for "a model that learns the history": popularity restricted to the
/// category that dominates the last three history items.
struct RecentCategoryRanker {
    popularity: PopularityRanker,
    category_of: HashMap<ItemId, String>,
}

impl Ranker for RecentCategoryRanker {
    fn name(&self) -> String {
        "recent-category popularity".to_string()
    }

    fn supports(&self, _task: Task) -> bool {
        true
    }

    fn score(&mut self, request: &Request, candidates: &[ItemId]) -> Vec<f64> {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for item in request.history.iter().rev().take(3) {
            *counts.entry(self.category_of[item].as_str()).or_default() += 1;
        }
        let (recent, _) = counts
            .into_iter()
            .max_by_key(|(name, count)| (*count, *name))
            .expect("non-empty history");
        let recent = recent.to_string();
        candidates
            .iter()
            .map(|item| {
                let bonus = if self.category_of[item] == recent {
                    1000.0
                } else {
                    0.0
                };
                bonus + self.popularity.count(*item) as f64
            })
            .collect()
    }
}

#[test]
fn baselines_clear_random_and_history_beats_popularity_by_stated_margins() {
    let data = prepared();
    let catalogue = data.catalogue();
    let evaluate = |ranker: &mut dyn Ranker| {
        evaluate_ranker(
            ranker,
            &data.test,
            &catalogue,
            Protocol::Sampled,
            &DEFAULT_CUTOFFS,
        )
    };
    let random = evaluate(&mut RandomRanker::new(1));
    let popularity = evaluate(&mut PopularityRanker::fit(&data.train));
    let bm25 = evaluate(&mut Bm25Ranker::new(&data.items, Bm25Parameters::default()));
    let mut recent = RecentCategoryRanker {
        popularity: PopularityRanker::fit(&data.train),
        category_of: data
            .items
            .iter()
            .map(|item| (item.id, item.categories[0].clone()))
            .collect(),
    };
    let recent = evaluate(&mut recent);
    println!("{random}\n{popularity}\n{bm25}\n{recent}");

    // Chance level of one target among 100 candidates: NDCG@10 = (1/100) Σ_{r=1..10} 1/log2(r+1).
    let chance: f64 = (1..=10)
        .map(|rank| 1.0 / ((rank + 1) as f64).log2())
        .sum::<f64>()
        / 100.0;
    for task in Task::ALL {
        let measured = random.ndcg(task, 10).unwrap();
        assert!(
            (measured - chance).abs() < 0.03,
            "{task}: random NDCG@10 {measured} vs chance {chance}"
        );
    }
    // Stated margins (sampled protocol, NDCG@10, test split):
    // popularity ≥ 2× chance on rec; BM25 ≥ 5× chance on search;
    // history-aware ranking ≥ 1.5× popularity on rec.
    let popularity_rec = popularity.ndcg(Task::Rec, 10).unwrap();
    assert!(
        popularity_rec >= 2.0 * chance,
        "popularity rec NDCG@10 {popularity_rec} < 2 × {chance}"
    );
    let bm25_search = bm25.ndcg(Task::Search, 10).unwrap();
    assert!(
        bm25_search >= 5.0 * chance,
        "BM25 search NDCG@10 {bm25_search} < 5 × {chance}"
    );
    assert!(bm25.ndcg(Task::Rec, 10).is_none(), "BM25 is search-only");
    let recent_rec = recent.ndcg(Task::Rec, 10).unwrap();
    assert!(
        recent_rec >= 1.5 * popularity_rec,
        "history-aware rec NDCG@10 {recent_rec} < 1.5 × {popularity_rec}"
    );
}
