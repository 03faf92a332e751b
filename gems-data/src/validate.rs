//! The validation pass: duplicate item ids, unknown item ids, items repeated among a request's
//! targets or negatives, empty histories, missing queries.
//!
//! Nothing is dropped silently. Under [`ValidationPolicy::Strict`] any problem makes
//! [`Validator::finish`] fail with the whole report; under [`ValidationPolicy::Filter`] each problem
//! gets the fixed repair listed in [`IssueKind::filter_action`] and is counted in the
//! [`ValidationReport`] that the command line prints and the manifest keeps.

use std::collections::HashSet;

use crate::error::{DataError, Result};
use crate::schema::{Item, ItemId, Request, Task};
use crate::validation_report::EXAMPLES_PER_ISSUE;
pub use crate::validation_report::{IssueKind, IssueSummary, ValidationPolicy, ValidationReport};

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
        for (field, items) in [
            ("targets", &request.targets),
            ("negatives", &request.negatives),
        ] {
            let mut seen = HashSet::new();
            let repeated: Vec<ItemId> = items
                .iter()
                .copied()
                .filter(|item| !seen.insert(*item))
                .collect();
            for item in repeated {
                self.record(
                    IssueKind::RepeatedTargetOrNegative,
                    location,
                    field,
                    format!("item {item} is listed more than once"),
                );
            }
        }
        if filter {
            let known = &self.known_items;
            let mut seen = HashSet::new();
            request.targets.retain(|item| seen.insert(*item));
            let mut seen = HashSet::new();
            request.negatives.retain(|item| seen.insert(*item));
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
