//! What validation found: the policy, the kinds of problem and the report that counts them
//! (see [`crate::validate`] for the pass that fills it).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// How many examples of each problem the report keeps.
pub(crate) const EXAMPLES_PER_ISSUE: usize = 5;

/// What to do when a problem is found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ValidationPolicy {
    /// Any problem is an error (the report lists all of them).
    #[default]
    Strict,
    /// Repair or drop the offending records, counting each repair.
    Filter,
}

/// The kinds of problem the validator detects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IssueKind {
    /// Two catalogue lines with the same `id`.
    DuplicateItemId,
    /// A history entry that is not in the catalogue.
    UnknownHistoryItem,
    /// A target that is not in the catalogue.
    UnknownTargetItem,
    /// A negative that is not in the catalogue.
    UnknownNegativeItem,
    /// A negative equal to one of the request's targets or history items.
    NegativeIsTargetOrHistory,
    /// An item listed twice among a request's targets, or twice among its negatives (which
    /// would count one item as several in the metrics).
    RepeatedTargetOrNegative,
    /// A request with no targets (left).
    NoTargets,
    /// A request with an empty history.
    EmptyHistory,
    /// A search request whose query is missing or blank.
    EmptySearchQuery,
}

impl IssueKind {
    /// One line saying what the problem is.
    pub fn description(self) -> &'static str {
        match self {
            IssueKind::DuplicateItemId => "duplicate item ids in the catalogue",
            IssueKind::UnknownHistoryItem => "history entries not in the catalogue",
            IssueKind::UnknownTargetItem => "targets not in the catalogue",
            IssueKind::UnknownNegativeItem => "negatives not in the catalogue",
            IssueKind::NegativeIsTargetOrHistory => "negatives equal to a target or history item",
            IssueKind::RepeatedTargetOrNegative => {
                "items repeated among a request's targets or negatives"
            }
            IssueKind::NoTargets => "requests without targets",
            IssueKind::EmptyHistory => "requests with an empty history",
            IssueKind::EmptySearchQuery => "search requests with a missing or blank query",
        }
    }

    /// What the `filter` policy does about it.
    pub fn filter_action(self) -> &'static str {
        match self {
            IssueKind::DuplicateItemId => "later duplicates removed, first kept",
            IssueKind::UnknownHistoryItem => "entry removed from the history",
            IssueKind::UnknownTargetItem => "target removed (request dropped if none is left)",
            IssueKind::UnknownNegativeItem | IssueKind::NegativeIsTargetOrHistory => {
                "negative removed"
            }
            IssueKind::RepeatedTargetOrNegative => "repeats removed, first kept",
            IssueKind::NoTargets | IssueKind::EmptyHistory | IssueKind::EmptySearchQuery => {
                "request dropped"
            }
        }
    }
}

/// Count and first examples of one kind of problem.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssueSummary {
    /// How many times it occurred.
    pub occurrences: usize,
    /// The first occurrences, each as `location: detail`.
    pub examples: Vec<String>,
}

/// Everything the validator saw and did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationReport {
    /// The policy in force.
    pub policy: ValidationPolicy,
    /// Catalogue entries read.
    pub items_read: usize,
    /// Catalogue entries kept.
    pub items_kept: usize,
    /// Requests read.
    pub requests_read: usize,
    /// Requests kept.
    pub requests_kept: usize,
    /// Problems found, by kind.
    pub issues: BTreeMap<IssueKind, IssueSummary>,
}

impl ValidationReport {
    /// True when no problem was found.
    pub fn is_clean(&self) -> bool {
        self.issues.is_empty()
    }

    /// Occurrences of one kind of problem (0 when none).
    pub fn occurrences(&self, kind: IssueKind) -> usize {
        self.issues
            .get(&kind)
            .map_or(0, |summary| summary.occurrences)
    }

    /// The report as notes for the manifest, one line per problem kind.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = vec![format!(
            "validation ({:?}): {} of {} items kept, {} of {} requests kept",
            self.policy, self.items_kept, self.items_read, self.requests_kept, self.requests_read
        )];
        for (kind, summary) in &self.issues {
            notes.push(format!(
                "validation: {} {} ({})",
                summary.occurrences,
                kind.description(),
                kind.filter_action()
            ));
        }
        notes
    }
}

impl fmt::Display for ValidationReport {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            formatter,
            "items: {} read, {} kept; requests: {} read, {} kept",
            self.items_read, self.items_kept, self.requests_read, self.requests_kept
        )?;
        if self.issues.is_empty() {
            return writeln!(formatter, "no problems found");
        }
        for (kind, summary) in &self.issues {
            let action = match self.policy {
                ValidationPolicy::Filter => kind.filter_action(),
                ValidationPolicy::Strict => "not repaired",
            };
            writeln!(
                formatter,
                "{:>8}  {} ({action})",
                summary.occurrences,
                kind.description()
            )?;
            for example in &summary.examples {
                writeln!(formatter, "          e.g. {example}")?;
            }
        }
        Ok(())
    }
}
