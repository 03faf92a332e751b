//! Converters from the datasets of the literature into the unified format.
//!
//! Every converter returns a [`ConvertedDataset`] (catalogue + unsplit requests + notes) and a
//! [`ConversionReport`] counting every record it read, skipped or repaired, so that nothing
//! disappears silently. Splitting and negative sampling happen afterwards, the same way for every
//! source ([`crate::dataset::prepare`]).
//!
//! - [`qilin`]: Xiaohongshu's Qilin (the reference's main dataset), from CSV exports of its tables.
//! - [`amazon_unisar`]: Amazon as preprocessed by UniSAR (pickled pandas DataFrames).
//! - [`kuaisar`]: KuaiSAR's search and recommendation logs.
//! - [`movielens`]: ml-100k / ml-1m, GroupLens or RecBole layout, with proxy search queries.
//! - [`crate::synthetic`]: the generated default dataset.

pub mod amazon_unisar;
mod dataframe;
mod events;
mod filter;
pub mod kuaisar;
pub mod movielens;
mod pickle;
mod python_literal;
pub mod qilin;
mod table;
mod tokens;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use events::{HistoryOptions, MAX_HISTORY_LIMIT};
pub(crate) use events::{Interaction, requests_from_interactions, time_in_milliseconds};
pub use filter::FilterOptions;
pub(crate) use filter::apply_filters;

use crate::schema::{Item, Request};

/// A converted dataset before splitting.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConvertedDataset {
    /// Short name (`qilin`, `ml-1m`, `synthetic`, ...).
    pub name: String,
    /// Where it came from (converter, input directory, options).
    pub source: String,
    /// The catalogue (only items that some request references, unless the source defines it).
    pub items: Vec<Item>,
    /// All requests, grouped by user, oldest first.
    pub requests: Vec<Request>,
    /// Whether search queries are proxies built from item metadata.
    pub proxy_queries: bool,
    /// Notes for the manifest (e.g. how queries were built).
    pub notes: Vec<String>,
    /// What the converter counted.
    pub report: ConversionReport,
}

/// One counted line of a conversion report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportLine {
    /// What was counted.
    pub description: String,
    /// How many.
    pub count: usize,
}

/// Counts of everything a converter read, skipped, filtered or repaired, in the order they happened.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversionReport {
    /// The counted lines.
    pub lines: Vec<ReportLine>,
}

impl ConversionReport {
    /// Appends a counted line.
    pub fn add(&mut self, description: impl Into<String>, count: usize) {
        self.lines.push(ReportLine {
            description: description.into(),
            count,
        });
    }

    /// The count of the first line whose description is `description`.
    pub fn count(&self, description: &str) -> Option<usize> {
        self.lines
            .iter()
            .find(|line| line.description == description)
            .map(|line| line.count)
    }

    /// The lines as manifest notes.
    pub fn notes(&self) -> Vec<String> {
        self.lines
            .iter()
            .map(|line| format!("conversion: {}: {}", line.description, line.count))
            .collect()
    }
}

impl fmt::Display for ConversionReport {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.lines {
            writeln!(formatter, "{:>10}  {}", line.count, line.description)?;
        }
        Ok(())
    }
}

/// Removes targets that are not in `known` from interactions, then interactions left without a
/// target, counting both.
pub(crate) fn retain_known_targets(
    interactions: &mut Vec<Interaction>,
    known: &std::collections::HashSet<u64>,
    report: &mut ConversionReport,
) {
    let mut removed = 0;
    for interaction in interactions.iter_mut() {
        let before = interaction.targets.len();
        interaction.targets.retain(|item| known.contains(item));
        removed += before - interaction.targets.len();
    }
    let before = interactions.len();
    interactions.retain(|interaction| !interaction.targets.is_empty());
    report.add(
        "clicked items missing from the item table (removed)",
        removed,
    );
    report.add(
        "interactions left without a clicked item in the item table (dropped)",
        before - interactions.len(),
    );
}

/// Keeps the catalogue entries that some request references, counting the others.
pub(crate) fn keep_referenced_items(
    items: Vec<Item>,
    requests: &[Request],
    report: &mut ConversionReport,
) -> Vec<Item> {
    let referenced: std::collections::HashSet<u64> = requests
        .iter()
        .flat_map(|request| {
            request
                .history
                .iter()
                .chain(&request.targets)
                .chain(&request.negatives)
        })
        .copied()
        .collect();
    let before = items.len();
    let kept: Vec<Item> = items
        .into_iter()
        .filter(|item| referenced.contains(&item.id))
        .collect();
    report.add(
        "catalogue entries never referenced by a request (left out)",
        before - kept.len(),
    );
    kept
}
