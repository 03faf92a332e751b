//! Turning a time-stamped interaction log into requests whose history is everything before them.
//!
//! Used by every converter whose source is a log (KuaiSAR, UniSAR's Amazon, MovieLens, the
//! synthetic generator): per user, interactions are ordered by time (ties keep input order), and
//! each one becomes a request whose history is the targets of the user's earlier interactions of
//! either task, the most recent `max_history` of them, oldest first. Interactions with fewer than
//! `min_history` earlier items still feed later histories but yield no request (counted).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::convert::ConversionReport;
use crate::schema::{ItemId, Request, Task, UserId};

/// How histories are built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryOptions {
    /// Most recent items kept in a request's stored history.
    pub max_history: usize,
    /// Fewest earlier items for an interaction to become a request.
    pub min_history: usize,
}

impl Default for HistoryOptions {
    fn default() -> Self {
        HistoryOptions {
            max_history: 20,
            min_history: 1,
        }
    }
}

/// One logged interaction (one request to be).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Interaction {
    pub user: UserId,
    /// Milliseconds; requests store `time_ms.div_euclid(1000)` (seconds).
    pub time_ms: i64,
    pub task: Task,
    pub targets: Vec<ItemId>,
    pub query: Option<String>,
    pub query_is_proxy: bool,
}

/// Builds requests from interactions (see the module documentation).
pub(crate) fn requests_from_interactions(
    mut interactions: Vec<Interaction>,
    options: HistoryOptions,
    report: &mut ConversionReport,
) -> Vec<Request> {
    interactions.sort_by_key(|interaction| (interaction.user, interaction.time_ms));
    let mut requests = Vec::with_capacity(interactions.len());
    let mut history: VecDeque<ItemId> = VecDeque::with_capacity(options.max_history + 1);
    let mut current_user = None;
    let mut skipped = 0;
    for interaction in interactions {
        if current_user != Some(interaction.user) {
            current_user = Some(interaction.user);
            history.clear();
        }
        if history.len() >= options.min_history {
            requests.push(Request {
                user: interaction.user,
                task: interaction.task,
                history: history.iter().copied().collect(),
                query: interaction.query,
                query_is_proxy: interaction.query_is_proxy,
                targets: interaction.targets.clone(),
                negatives: Vec::new(),
                timestamp: interaction.time_ms.div_euclid(1000),
            });
        } else {
            skipped += 1;
        }
        for target in interaction.targets {
            history.push_back(target);
            if history.len() > options.max_history {
                history.pop_front();
            }
        }
    }
    report.add(
        format!(
            "interactions with fewer than {} earlier items (kept as history only)",
            options.min_history
        ),
        skipped,
    );
    report.add("requests built", requests.len());
    tracing::debug!(
        requests = requests.len(),
        skipped,
        "built requests from the interaction log"
    );
    requests
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interaction(user: u64, time_ms: i64, item: u64) -> Interaction {
        Interaction {
            user,
            time_ms,
            task: Task::Rec,
            targets: vec![item],
            query: None,
            query_is_proxy: false,
        }
    }

    #[test]
    fn histories_hold_the_last_items_of_the_same_user_in_time_order() {
        // 25 interactions of user 1 given in reverse time order, one of user 2 in between.
        let mut interactions: Vec<Interaction> = (0..25)
            .rev()
            .map(|step| interaction(1, step * 10, 100 + step as u64))
            .collect();
        interactions.insert(3, interaction(2, 5, 7));
        let mut report = ConversionReport::default();
        let requests =
            requests_from_interactions(interactions, HistoryOptions::default(), &mut report);
        // User 1's first and user 2's only interaction have no history.
        assert_eq!(
            report.count("interactions with fewer than 1 earlier items (kept as history only)"),
            Some(2)
        );
        assert_eq!(requests.len(), 24);
        let last = requests.last().unwrap();
        assert_eq!(last.targets, vec![124]);
        assert_eq!(
            last.history,
            (104..124).collect::<Vec<u64>>(),
            "the 20 most recent items, oldest first"
        );
        assert_eq!(requests[0].history, vec![100]);
        assert!(requests.iter().all(|request| request.user == 1));
    }
}
