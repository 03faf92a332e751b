//! Leave-one-out splits by time, per user and task.
//!
//! For every (user, task) group, ordered by timestamp (ties keep input order): the last request goes
//! to test, the second last to valid, the rest to train. Groups with fewer requests than
//! [`SplitOptions::min_requests_for_holdout`] go entirely to train and are counted.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::schema::{Request, Task, UserId};

/// Options of the leave-one-out split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitOptions {
    /// Smallest group (user, task) that gives one request each to valid and test; smaller groups
    /// stay in train. At least 3 keeps one training request per held-out group.
    pub min_requests_for_holdout: usize,
}

impl Default for SplitOptions {
    fn default() -> Self {
        SplitOptions {
            min_requests_for_holdout: 3,
        }
    }
}

/// What the split did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitReport {
    /// (user, task) groups seen.
    pub groups: usize,
    /// Groups too small to hold out; all their requests are in train.
    pub groups_kept_in_train: usize,
    /// Requests of those groups.
    pub requests_of_small_groups: usize,
}

/// The three splits.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SplitRequests {
    /// Training requests, grouped by user then task, oldest first.
    pub train: Vec<Request>,
    /// One request per held-out group: the second last.
    pub valid: Vec<Request>,
    /// One request per held-out group: the last.
    pub test: Vec<Request>,
    /// Counts.
    pub report: SplitReport,
}

/// Splits `requests` leave-one-out by time per user and task.
///
/// The output is deterministic: groups are ordered by (user, task), requests within a group by
/// (timestamp, input position).
pub fn leave_one_out(requests: Vec<Request>, options: SplitOptions) -> SplitRequests {
    let mut groups: HashMap<(UserId, Task), Vec<(i64, usize)>> = HashMap::new();
    for (position, request) in requests.iter().enumerate() {
        groups
            .entry((request.user, request.task))
            .or_default()
            .push((request.timestamp, position));
    }
    let mut keys: Vec<(UserId, Task)> = groups.keys().copied().collect();
    keys.sort();

    let mut slots: Vec<Option<Request>> = requests.into_iter().map(Some).collect();
    let mut take = |position: usize| slots[position].take().expect("each request is placed once");
    let mut split = SplitRequests::default();
    for key in keys {
        let mut members = groups.remove(&key).expect("key comes from the map");
        members.sort();
        split.report.groups += 1;
        if members.len() < options.min_requests_for_holdout.max(2) {
            split.report.groups_kept_in_train += 1;
            split.report.requests_of_small_groups += members.len();
            split
                .train
                .extend(members.iter().map(|&(_, position)| take(position)));
            continue;
        }
        let count = members.len();
        split.train.extend(
            members[..count - 2]
                .iter()
                .map(|&(_, position)| take(position)),
        );
        split.valid.push(take(members[count - 2].1));
        split.test.push(take(members[count - 1].1));
    }
    split
}
