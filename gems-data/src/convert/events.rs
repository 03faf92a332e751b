//! Turning a time-stamped interaction log into requests whose history is everything before them.
//!
//! Used by every converter whose source is a log (KuaiSAR, UniSAR's Amazon, MovieLens, the
//! synthetic generator): per user, interactions are ordered by time (ties keep input order), and
//! each one becomes a request whose history is the targets of the user's earlier interactions of
//! either task, the most recent `max_history` of them, oldest first. Interactions with fewer than
//! `min_history` earlier items still feed later histories but yield no request (counted).
//!
//! Stored histories grow with the square of a user's interactions up to `max_history`, so the
//! options are checked first ([`HistoryOptions::check`]) and the bytes the histories would take are
//! computed before any is built and refused beyond the memory available.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::convert::ConversionReport;
use crate::error::{DataError, Result};
use crate::schema::{ItemId, Request, Task, UserId};

/// The longest history a request stores or a prompt shows: 10 000 items, far beyond any useful
/// prompt (the reference shows 20; the models' context holds at most 32 768 tokens).
pub const MAX_HISTORY_LIMIT: usize = 10_000;

/// How histories are built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryOptions {
    /// Most recent items kept in a request's stored history.
    pub max_history: usize,
    /// Fewest earlier items for an interaction to become a request.
    pub min_history: usize,
}

impl HistoryOptions {
    /// Checks that `1 ≤ max_history ≤` [`MAX_HISTORY_LIMIT`] and `min_history ≤ max_history` (a
    /// request needs its earlier items within the stored history; more could never be met).
    pub fn check(&self) -> Result<()> {
        if self.max_history == 0 || self.max_history > MAX_HISTORY_LIMIT {
            return Err(DataError::InvalidOption(format!(
                "max_history {} is out of range: a request stores 1 to {MAX_HISTORY_LIMIT} history items (the reference uses 20; prompts show at most a few dozen)",
                self.max_history
            )));
        }
        if self.min_history > self.max_history {
            return Err(DataError::InvalidOption(format!(
                "min_history {} is above max_history {}: no request could ever have enough history; lower min_history or raise max_history",
                self.min_history, self.max_history
            )));
        }
        Ok(())
    }
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

/// A time in units of `milliseconds_per_unit` (1000 for seconds, 1 for milliseconds) as whole
/// milliseconds (fractions dropped), refusing times that are not finite numbers or whose
/// milliseconds do not fit 64 bits (they would wrap or saturate into a wrong order).
pub(crate) fn time_in_milliseconds(time: f64, milliseconds_per_unit: f64) -> Result<i64, String> {
    let milliseconds = time * milliseconds_per_unit;
    // i64::MAX as f64 rounds up to 2^63, which itself does not fit.
    if milliseconds.is_finite() && milliseconds.abs() < i64::MAX as f64 {
        return Ok(milliseconds as i64);
    }
    let unit = if milliseconds_per_unit == 1.0 {
        "milliseconds"
    } else {
        "seconds"
    };
    Err(format!(
        "the time {time} ({unit}) is not a finite number of milliseconds within ±9.2e18; expected a Unix time"
    ))
}

/// Bytes the requests built from `interactions` (sorted by user) would take at most: every
/// interaction's request with a history of its user's earlier targets, up to `max_history`.
fn history_bytes(interactions: &[Interaction], max_history: usize) -> u128 {
    let mut bytes = 0u128;
    let mut earlier = 0u128;
    let mut current_user = None;
    for interaction in interactions {
        if current_user != Some(interaction.user) {
            current_user = Some(interaction.user);
            earlier = 0;
        }
        let targets = interaction.targets.len() as u128;
        bytes += (std::mem::size_of::<Request>() as u128)
            + 8 * (earlier.min(max_history as u128) + targets);
        earlier += targets;
    }
    bytes
}

/// Memory the system reports available (`MemAvailable` of `/proc/meminfo`), where it does.
fn available_memory() -> Option<u128> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo
        .lines()
        .find(|line| line.starts_with("MemAvailable:"))?;
    let kibibytes: u128 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kibibytes * 1024)
}

/// Refuses histories that need more than `available` bytes.
fn check_history_memory(
    needed: u128,
    available: Option<u128>,
    options: HistoryOptions,
) -> Result<()> {
    let gibibytes = |bytes: u128| bytes as f64 / f64::from(1u32 << 30);
    match available {
        Some(available) if needed > available => Err(DataError::InvalidOption(format!(
            "the requests with histories of up to {} items would take {:.1} GiB, more than the {:.1} GiB of memory available; lower max_history (the reference uses 20)",
            options.max_history,
            gibibytes(needed),
            gibibytes(available)
        ))),
        _ => Ok(()),
    }
}

/// Builds requests from interactions (see the module documentation), after checking `options`
/// and the memory the histories need.
pub(crate) fn requests_from_interactions(
    mut interactions: Vec<Interaction>,
    options: HistoryOptions,
    report: &mut ConversionReport,
) -> Result<Vec<Request>> {
    options.check()?;
    interactions.sort_by_key(|interaction| (interaction.user, interaction.time_ms));
    check_history_memory(
        history_bytes(&interactions, options.max_history),
        available_memory(),
        options,
    )?;
    let mut requests = Vec::with_capacity(interactions.len());
    let mut history: VecDeque<ItemId> = VecDeque::new();
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
                user_key: None,
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
    Ok(requests)
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
            requests_from_interactions(interactions, HistoryOptions::default(), &mut report)
                .unwrap();
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
