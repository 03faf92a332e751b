//! Metrics against hand-computed values.

use gems_data::metrics::{
    DEFAULT_CUTOFFS, MetricsAccumulator, evaluate_ranking, evaluate_scores, rank_by_score,
};
use gems_data::{Protocol, Task};

fn close(actual: f64, expected: f64) {
    assert!((actual - expected).abs() < 1e-12, "{actual} != {expected}");
}

fn log2(value: f64) -> f64 {
    value.log2()
}

#[test]
fn single_target_at_rank_three() {
    let metrics = evaluate_ranking(&[5, 6, 7, 8, 9, 10], &[7], &[1, 2, 5]);
    assert_eq!(metrics.recall, vec![0.0, 0.0, 1.0]);
    // DCG = 1/log2(3 + 1) = 0.5; IDCG = 1/log2(2) = 1.
    assert_eq!(metrics.ndcg, vec![0.0, 0.0, 0.5]);
    close(metrics.reciprocal_rank, 1.0 / 3.0);
}

/// The reciprocal rank counts within the largest cut-off only, as a model's beam of 20 items
/// does: a baseline's full list gets no credit the beam could not have had.
#[test]
fn target_outside_the_largest_cutoff_scores_zero_everywhere() {
    let ranking: Vec<u64> = (100..130).collect();
    let metrics = evaluate_ranking(&ranking, &[125], &DEFAULT_CUTOFFS);
    assert_eq!(metrics.recall, vec![0.0, 0.0, 0.0]);
    assert_eq!(metrics.ndcg, vec![0.0, 0.0, 0.0]);
    assert_eq!(metrics.reciprocal_rank, 0.0);
    let at_twenty = evaluate_ranking(&ranking, &[119], &DEFAULT_CUTOFFS);
    close(at_twenty.reciprocal_rank, 1.0 / 20.0);
    let scored = evaluate_scores(
        &ranking,
        &ranking.iter().map(|&id| -(id as f64)).collect::<Vec<_>>(),
        &[125],
        &DEFAULT_CUTOFFS,
    );
    assert_eq!(scored.reciprocal_rank, 0.0);
}

#[test]
fn absent_target_and_empty_ranking_score_zero() {
    let absent = evaluate_ranking(&[1, 2, 3], &[4], &DEFAULT_CUTOFFS);
    assert_eq!(
        (absent.recall[2], absent.ndcg[2], absent.reciprocal_rank),
        (0.0, 0.0, 0.0)
    );
    let empty = evaluate_ranking(&[], &[4], &DEFAULT_CUTOFFS);
    assert_eq!(
        (empty.recall[0], empty.ndcg[0], empty.reciprocal_rank),
        (0.0, 0.0, 0.0)
    );
}

#[test]
fn multiple_targets_use_idcg_capped_at_k() {
    // Targets {1, 2, 3} at ranks 1 and 4 (3 is missing).
    let metrics = evaluate_ranking(&[1, 9, 8, 2, 7], &[1, 2, 3], &[2, 5]);
    // K = 2: one hit of three; DCG = 1; IDCG = 1 + 1/log2(3) (min(3, 2) = 2 relevant).
    close(metrics.recall[0], 1.0 / 3.0);
    close(metrics.ndcg[0], 1.0 / (1.0 + 1.0 / log2(3.0)));
    // K = 5: two hits of three; DCG = 1 + 1/log2(5); IDCG = 1 + 1/log2(3) + 1/log2(4).
    close(metrics.recall[1], 2.0 / 3.0);
    close(
        metrics.ndcg[1],
        (1.0 + 1.0 / log2(5.0)) / (1.0 + 1.0 / log2(3.0) + 0.5),
    );
    close(metrics.reciprocal_rank, 1.0);
}

#[test]
fn duplicate_entries_count_once() {
    // Rank of 3 in the de-duplicated list [1, 2, 3] is 3.
    let metrics = evaluate_ranking(&[1, 1, 2, 1, 3], &[3], &[3]);
    assert_eq!(metrics.recall, vec![1.0]);
    close(metrics.reciprocal_rank, 1.0 / 3.0);
}

#[test]
fn ties_are_pessimistic_for_relevant_items_and_stable_otherwise() {
    let candidates = [10, 11, 12, 13];
    let scores = [1.0, 2.0, 1.0, 1.0];
    // Target 10 ties with 12 and 13: it goes after them; 12 and 13 keep their order.
    assert_eq!(
        rank_by_score(&candidates, &scores, &[10]),
        vec![11, 12, 13, 10]
    );
    assert_eq!(
        rank_by_score(&candidates, &scores, &[13]),
        vec![11, 10, 12, 13]
    );
    // All-equal scores (an uninformative ranker) put the target last: MRR = 1/4.
    let ranking = rank_by_score(&candidates, &[0.0; 4], &[12]);
    close(
        evaluate_ranking(&ranking, &[12], &DEFAULT_CUTOFFS).reciprocal_rank,
        0.25,
    );
    // NaN ranks last.
    assert_eq!(rank_by_score(&[1, 2], &[f64::NAN, 0.5], &[]), vec![2, 1]);
}

#[test]
fn accumulator_averages_per_task_over_requests() {
    let mut accumulator = MetricsAccumulator::new(&[1, 2]);
    accumulator.add_ranking(Task::Rec, &[1, 2], &[1]); // recall@1 1, ndcg@2 1, mrr 1
    accumulator.add_ranking(Task::Rec, &[1, 2], &[2]); // recall@1 0, recall@2 1, ndcg@2 1/log2(3), mrr 1/2
    accumulator.add_ranking(Task::Search, &[3], &[4]); // all 0
    let report = accumulator.finish("hand", Protocol::Sampled);
    let rec = &report.tasks[&Task::Rec];
    assert_eq!(rec.requests, 2);
    close(rec.recall[&1], 0.5);
    close(rec.recall[&2], 1.0);
    close(rec.ndcg[&2], (1.0 + 1.0 / log2(3.0)) / 2.0);
    close(rec.mrr, 0.75);
    assert_eq!(report.tasks[&Task::Search].mrr, 0.0);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["protocol"], "sampled");
    assert_eq!(json["tasks"]["rec"]["requests"], 2);
    assert_eq!(json["tasks"]["rec"]["recall"]["2"], 1.0);
    let table = report.to_string();
    assert!(
        table.contains("recall@1") && table.contains("search") && table.contains("0.7500"),
        "{table}"
    );
}

mod scores_without_sorting {
    use gems_data::metrics::{DEFAULT_CUTOFFS, evaluate_ranking, evaluate_scores, rank_by_score};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn equal_sorting_then_ranking(
            scores in prop::collection::vec(0u8..6, 1..60),
            targets in prop::collection::vec(0u64..70, 0..4),
        ) {
            // Few distinct score values, so ties are frequent.
            let candidates: Vec<u64> = (0..scores.len() as u64).collect();
            let scores: Vec<f64> = scores.into_iter().map(f64::from).collect();
            let direct = evaluate_scores(&candidates, &scores, &targets, &DEFAULT_CUTOFFS);
            let sorted = evaluate_ranking(&rank_by_score(&candidates, &scores, &targets), &targets, &DEFAULT_CUTOFFS);
            prop_assert_eq!(direct, sorted);
        }
    }
}
