//! Leave-one-out splits and seeded negatives: properties over random inputs, plus exact cases.

use std::collections::{HashMap, HashSet};

use gems_data::negatives::{NegativeSampling, sample_negatives};
use gems_data::split::{SplitOptions, leave_one_out};
use gems_data::{Request, Task};
use proptest::prelude::*;

fn request(user: u64, task: Task, timestamp: i64, target: u64) -> Request {
    Request {
        user,
        task,
        history: vec![target + 1000],
        query: (task == Task::Search).then(|| "q".to_string()),
        query_is_proxy: false,
        targets: vec![target],
        negatives: Vec::new(),
        timestamp,
        user_key: None,
    }
}

#[test]
fn last_goes_to_test_second_last_to_valid_per_user_and_task() {
    let requests = vec![
        request(1, Task::Rec, 30, 3),
        request(1, Task::Rec, 10, 1),
        request(1, Task::Search, 15, 11),
        request(1, Task::Rec, 20, 2),
        request(1, Task::Search, 5, 10),
        request(1, Task::Search, 25, 12),
        request(2, Task::Rec, 1, 20),
        request(2, Task::Rec, 2, 21),
    ];
    let split = leave_one_out(requests, SplitOptions::default());
    let targets = |requests: &[Request]| {
        requests
            .iter()
            .map(|request| request.targets[0])
            .collect::<Vec<_>>()
    };
    assert_eq!(targets(&split.test), vec![12, 3]);
    assert_eq!(targets(&split.valid), vec![11, 2]);
    // User 2 has only two rec requests: kept in train, counted.
    assert_eq!(targets(&split.train), vec![10, 1, 20, 21]);
    assert_eq!(split.report.groups, 3);
    assert_eq!(split.report.groups_kept_in_train, 1);
    assert_eq!(split.report.requests_of_small_groups, 2);
}

#[test]
fn equal_timestamps_keep_input_order() {
    let requests = vec![
        request(1, Task::Rec, 7, 1),
        request(1, Task::Rec, 7, 2),
        request(1, Task::Rec, 7, 3),
    ];
    let split = leave_one_out(requests, SplitOptions::default());
    assert_eq!(
        (
            split.train[0].targets[0],
            split.valid[0].targets[0],
            split.test[0].targets[0]
        ),
        (1, 2, 3)
    );
}

fn arbitrary_requests() -> impl Strategy<Value = Vec<Request>> {
    prop::collection::vec((0u64..6, prop::bool::ANY, 0i64..50, 0u64..40), 0..80).prop_map(|rows| {
        rows.into_iter()
            .map(|(user, search, timestamp, target)| {
                request(
                    user,
                    if search { Task::Search } else { Task::Rec },
                    timestamp,
                    target,
                )
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn split_is_a_time_ordered_partition(requests in arbitrary_requests()) {
        let total = requests.len();
        let split = leave_one_out(requests.clone(), SplitOptions::default());
        prop_assert_eq!(split.train.len() + split.valid.len() + split.test.len(), total);
        let mut groups: HashMap<(u64, Task), Vec<&Request>> = HashMap::new();
        for request in &requests {
            groups.entry((request.user, request.task)).or_default().push(request);
        }
        for ((user, task), members) in &groups {
            let latest = members.iter().map(|request| request.timestamp).max().unwrap();
            let tests: Vec<&Request> = split.test.iter().filter(|r| r.user == *user && r.task == *task).collect();
            let valids: Vec<&Request> = split.valid.iter().filter(|r| r.user == *user && r.task == *task).collect();
            let trains: Vec<&Request> = split.train.iter().filter(|r| r.user == *user && r.task == *task).collect();
            if members.len() >= 3 {
                prop_assert_eq!(tests.len(), 1);
                prop_assert_eq!(valids.len(), 1);
                prop_assert_eq!(tests[0].timestamp, latest);
                prop_assert!(valids[0].timestamp <= tests[0].timestamp);
                for train in &trains {
                    prop_assert!(train.timestamp <= valids[0].timestamp);
                }
            } else {
                prop_assert!(tests.is_empty() && valids.is_empty());
                prop_assert_eq!(trains.len(), members.len());
            }
        }
    }

    #[test]
    fn negatives_avoid_targets_and_history_are_distinct_and_seeded(
        requests in prop::collection::vec((prop::collection::vec(0u64..300, 0..30), prop::collection::vec(0u64..300, 1..3)), 1..20),
        catalogue_size in 120u64..400,
        seed in 0u64..1000,
    ) {
        let mut requests: Vec<Request> = requests
            .into_iter()
            .map(|(history, targets)| Request { history, targets, ..request(1, Task::Rec, 0, 0) })
            .collect();
        let catalogue: Vec<u64> = (0..catalogue_size).collect();
        let options = NegativeSampling { per_request: 99, seed };
        let mut again = requests.clone();
        let report = sample_negatives(&mut requests, &catalogue, options);
        sample_negatives(&mut again, &catalogue, options);
        prop_assert_eq!(&requests, &again);
        prop_assert_eq!(report.requests, requests.len());
        for request in &requests {
            let excluded: HashSet<u64> = request.history.iter().chain(&request.targets).copied().collect();
            let distinct: HashSet<u64> = request.negatives.iter().copied().collect();
            prop_assert_eq!(distinct.len(), request.negatives.len());
            let eligible = catalogue.iter().filter(|item| !excluded.contains(item)).count();
            prop_assert_eq!(request.negatives.len(), eligible.min(99));
            for negative in &request.negatives {
                prop_assert!(!excluded.contains(negative));
                prop_assert!(*negative < catalogue_size);
            }
        }
    }
}

#[test]
fn different_seeds_give_different_negatives_and_small_catalogues_are_counted() {
    let base = vec![request(1, Task::Rec, 0, 5)];
    let catalogue: Vec<u64> = (0..1000).collect();
    let mut first = base.clone();
    let mut second = base.clone();
    sample_negatives(
        &mut first,
        &catalogue,
        NegativeSampling {
            per_request: 99,
            seed: 1,
        },
    );
    sample_negatives(
        &mut second,
        &catalogue,
        NegativeSampling {
            per_request: 99,
            seed: 2,
        },
    );
    assert_ne!(first[0].negatives, second[0].negatives);
    let mut small = base;
    let report = sample_negatives(
        &mut small,
        &(0..50).collect::<Vec<_>>(),
        NegativeSampling::default(),
    );
    assert_eq!(small[0].negatives.len(), 49, "everything but the target");
    assert_eq!(report.requests_short, 1);
}
