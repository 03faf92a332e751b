//! Optional filters applied by converters: minimum requests per user and task, users with both
//! tasks, and iterated k-core filtering of users and items (the reference's Qilin preprocessing).
//!
//! The filters are applied in a loop until nothing changes: (1) a user's requests of a task are
//! dropped when the user has fewer than `min_requests_per_user_per_task` of them; (2) with
//! `require_both_tasks`, users left with only one task are dropped; (3) with `k_core = k > 0`,
//! users with fewer than k requests are dropped, items occurring fewer than k times (as targets or
//! in histories) are removed from targets, histories and negatives, and requests left without a
//! target are dropped. Every drop and removal is counted.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::convert::ConversionReport;
use crate::schema::{ItemId, Request, Task, UserId};

/// The filters; the default does nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterOptions {
    /// A user's requests of one task are dropped when there are fewer (0 = off).
    pub min_requests_per_user_per_task: usize,
    /// Keep only users with requests of both tasks.
    pub require_both_tasks: bool,
    /// Iterated k-core over users (requests) and items (occurrences); 0 = off.
    pub k_core: usize,
}

impl FilterOptions {
    /// True when no filter is active.
    pub fn is_off(&self) -> bool {
        self.min_requests_per_user_per_task == 0 && !self.require_both_tasks && self.k_core == 0
    }
}

/// Upper bound on filter rounds (the reference stops after 10; convergence is usually quicker).
const MAX_ROUNDS: usize = 100;

/// Applies the filters until a fixed point, counting what each rule removed.
pub(crate) fn apply_filters(
    mut requests: Vec<Request>,
    options: &FilterOptions,
    report: &mut ConversionReport,
) -> Vec<Request> {
    if options.is_off() {
        return requests;
    }
    let mut dropped_per_task_minimum = 0;
    let mut dropped_single_task = 0;
    let mut dropped_core_users = 0;
    let mut dropped_without_targets = 0;
    let mut removed_references = 0;
    let mut rounds = 0;
    loop {
        rounds += 1;
        let before = (requests.len(), reference_count(&requests));
        if options.min_requests_per_user_per_task > 0 {
            let mut counts: HashMap<(UserId, Task), usize> = HashMap::new();
            for request in &requests {
                *counts.entry((request.user, request.task)).or_default() += 1;
            }
            let length = requests.len();
            requests.retain(|request| {
                counts[&(request.user, request.task)] >= options.min_requests_per_user_per_task
            });
            dropped_per_task_minimum += length - requests.len();
        }
        if options.require_both_tasks {
            let mut tasks: HashMap<UserId, HashSet<Task>> = HashMap::new();
            for request in &requests {
                tasks.entry(request.user).or_default().insert(request.task);
            }
            let length = requests.len();
            requests.retain(|request| tasks[&request.user].len() == Task::ALL.len());
            dropped_single_task += length - requests.len();
        }
        if options.k_core > 0 {
            let mut per_user: HashMap<UserId, usize> = HashMap::new();
            for request in &requests {
                *per_user.entry(request.user).or_default() += 1;
            }
            let length = requests.len();
            requests.retain(|request| per_user[&request.user] >= options.k_core);
            dropped_core_users += length - requests.len();

            let mut occurrences: HashMap<ItemId, usize> = HashMap::new();
            for request in &requests {
                for item in request.targets.iter().chain(&request.history) {
                    *occurrences.entry(*item).or_default() += 1;
                }
            }
            let frequent =
                |item: &ItemId| occurrences.get(item).copied().unwrap_or(0) >= options.k_core;
            for request in requests.iter_mut() {
                let length =
                    request.targets.len() + request.history.len() + request.negatives.len();
                request.targets.retain(frequent);
                request.history.retain(frequent);
                request.negatives.retain(frequent);
                removed_references += length
                    - (request.targets.len() + request.history.len() + request.negatives.len());
            }
            let length = requests.len();
            requests.retain(|request| !request.targets.is_empty());
            dropped_without_targets += length - requests.len();
        }
        if (requests.len(), reference_count(&requests)) == before || rounds == MAX_ROUNDS {
            break;
        }
    }
    let minimum = options.min_requests_per_user_per_task;
    report.add(
        format!("requests dropped: user has fewer than {minimum} requests of that task"),
        dropped_per_task_minimum,
    );
    report.add(
        "requests dropped: user lacks one of the two tasks",
        dropped_single_task,
    );
    report.add(
        format!(
            "requests dropped: user has fewer than {} requests ({}-core)",
            options.k_core, options.k_core
        ),
        dropped_core_users,
    );
    report.add(
        format!(
            "item references removed: item occurs fewer than {} times ({}-core)",
            options.k_core, options.k_core
        ),
        removed_references,
    );
    report.add(
        "requests dropped: no target left after the k-core",
        dropped_without_targets,
    );
    report.add("filter rounds until nothing changed", rounds);
    requests
}

fn reference_count(requests: &[Request]) -> usize {
    requests
        .iter()
        .map(|request| request.targets.len() + request.history.len() + request.negatives.len())
        .sum()
}
