//! The validation pass: duplicate item ids, unknown item ids, empty histories, missing queries.
//!
//! Nothing is dropped silently. Under [`ValidationPolicy::Strict`] any problem makes
//! [`Validator::finish`] fail with the whole report; under [`ValidationPolicy::Filter`] each problem
//! gets the fixed repair listed in [`IssueKind::filter_action`] and is counted in the
//! [`ValidationReport`] that the command line prints and the manifest keeps.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::schema::{Item, ItemId, Request, Task};

/// How many examples of each problem the report keeps.
const EXAMPLES_PER_ISSUE: usize = 5;

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

/// Checks a catalogue and then requests one at a time, so that it works on streamed files.
pub struct Validator {
    policy: ValidationPolicy,
    known_items: HashSet<ItemId>,
    report: ValidationReport,
}

impl Validator {
    /// A validator with an empty catalogue.
    pub fn new(policy: ValidationPolicy) -> Self {
        Validator {
            policy,
            known_items: HashSet::new(),
            report: ValidationReport {
                policy,
                ..ValidationReport::default()
            },
        }
    }

    fn record(&mut self, kind: IssueKind, location: &str, field: &str, detail: String) {
        let summary = self.report.issues.entry(kind).or_default();
        summary.occurrences += 1;
        if summary.examples.len() < EXAMPLES_PER_ISSUE {
            summary
                .examples
                .push(format!("{location}: field \"{field}\": {detail}"));
        }
    }

    /// Adds one catalogue entry; returns it unless it is a duplicate that the filter drops.
    pub fn add_item(&mut self, item: Item, location: &str) -> Option<Item> {
        self.report.items_read += 1;
        if !self.known_items.insert(item.id) {
            self.record(
                IssueKind::DuplicateItemId,
                location,
                "id",
                format!("item {} was already defined", item.id),
            );
            if self.policy == ValidationPolicy::Filter {
                return None;
            }
        }
        self.report.items_kept += 1;
        Some(item)
    }

    /// Whether `item` is in the catalogue added so far.
    pub fn knows(&self, item: ItemId) -> bool {
        self.known_items.contains(&item)
    }

    /// Checks one request against the catalogue; returns it (repaired under `filter`) unless the
    /// filter drops it.
    pub fn check_request(&mut self, mut request: Request, location: &str) -> Option<Request> {
        self.report.requests_read += 1;
        let filter = self.policy == ValidationPolicy::Filter;

        let unknown_history: Vec<ItemId> = request
            .history
            .iter()
            .copied()
            .filter(|item| !self.knows(*item))
            .collect();
        for item in &unknown_history {
            self.record(
                IssueKind::UnknownHistoryItem,
                location,
                "history",
                format!("item {item} is not in the catalogue"),
            );
        }
        let unknown_targets: Vec<ItemId> = request
            .targets
            .iter()
            .copied()
            .filter(|item| !self.knows(*item))
            .collect();
        for item in &unknown_targets {
            self.record(
                IssueKind::UnknownTargetItem,
                location,
                "targets",
                format!("item {item} is not in the catalogue"),
            );
        }
        let unknown_negatives: Vec<ItemId> = request
            .negatives
            .iter()
            .copied()
            .filter(|item| !self.knows(*item))
            .collect();
        for item in &unknown_negatives {
            self.record(
                IssueKind::UnknownNegativeItem,
                location,
                "negatives",
                format!("item {item} is not in the catalogue"),
            );
        }
        let overlapping: Vec<ItemId> = request
            .negatives
            .iter()
            .copied()
            .filter(|item| request.targets.contains(item) || request.history.contains(item))
            .collect();
        for item in &overlapping {
            self.record(
                IssueKind::NegativeIsTargetOrHistory,
                location,
                "negatives",
                format!("item {item} is also a target or in the history"),
            );
        }
        if filter {
            let known = &self.known_items;
            request.history.retain(|item| known.contains(item));
            request.targets.retain(|item| known.contains(item));
            let targets = request.targets.clone();
            let history = request.history.clone();
            request.negatives.retain(|item| {
                known.contains(item) && !targets.contains(item) && !history.contains(item)
            });
        }

        let mut drop = false;
        if request.targets.is_empty() {
            self.record(
                IssueKind::NoTargets,
                location,
                "targets",
                "no target (left)".to_string(),
            );
            drop = true;
        }
        if request.history.is_empty() {
            self.record(
                IssueKind::EmptyHistory,
                location,
                "history",
                "empty".to_string(),
            );
            drop = true;
        }
        if request.task == Task::Search
            && request
                .query
                .as_deref()
                .is_none_or(|query| query.trim().is_empty())
        {
            self.record(
                IssueKind::EmptySearchQuery,
                location,
                "query",
                "missing or blank on a search request".to_string(),
            );
            drop = true;
        }
        if filter && drop {
            return None;
        }
        self.report.requests_kept += 1;
        Some(request)
    }

    /// Ends validation: the report, or under `strict` an error carrying it when a problem was found.
    pub fn finish(self) -> Result<ValidationReport> {
        if self.policy == ValidationPolicy::Strict && !self.report.is_clean() {
            return Err(DataError::Validation {
                report: Box::new(self.report),
            });
        }
        Ok(self.report)
    }
}

/// Validates an in-memory catalogue and request list (locations are `items[i]` / `requests[i]`).
pub fn validate_in_memory(
    items: Vec<Item>,
    requests: Vec<Request>,
    policy: ValidationPolicy,
) -> Result<(Vec<Item>, Vec<Request>, ValidationReport)> {
    let mut validator = Validator::new(policy);
    let items: Vec<Item> = items
        .into_iter()
        .enumerate()
        .filter_map(|(index, item)| validator.add_item(item, &format!("items[{index}]")))
        .collect();
    let requests: Vec<Request> = requests
        .into_iter()
        .enumerate()
        .filter_map(|(index, request)| {
            validator.check_request(request, &format!("requests[{index}]"))
        })
        .collect();
    let report = validator.finish()?;
    Ok((items, requests, report))
}
