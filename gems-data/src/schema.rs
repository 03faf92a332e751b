//! The unified data format's records: items, requests and the dataset manifest.
//!
//! One JSON object per line; see `gems-data/FORMAT.md` for the on-disk description. Item and user
//! identifiers are unsigned integers: every supported source numbers them already (Qilin's
//! `note_idx`, KuaiSAR's and MovieLens' ids, UniSAR's re-mapped ids), and integers keep a million
//! requests with twenty-item histories small in memory.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// An item's identifier in the catalogue.
pub type ItemId = u64;

/// A user's identifier.
pub type UserId = u64;

/// The two tasks of unified search and recommendation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Search: history plus a text query, predict the clicked item.
    Search,
    /// Recommendation: history only, predict the next item.
    Rec,
}

impl Task {
    /// Both tasks, in the order reports list them.
    pub const ALL: [Task; 2] = [Task::Search, Task::Rec];

    /// The task's name in files and reports: `search` or `rec`.
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Search => "search",
            Task::Rec => "rec",
        }
    }
}

impl fmt::Display for Task {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// One entry of the item catalogue (`items.jsonl`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item {
    /// Unique identifier, referenced by requests.
    pub id: ItemId,
    /// Display title; the `Title` identifier scheme and BM25 use it.
    pub title: String,
    /// Optional longer text (description, note body, caption).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Optional category labels, coarse to fine where the source has a hierarchy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
}

/// One search or recommendation request (a line of `train.jsonl`, `valid.jsonl`, `test.jsonl` or
/// the unsplit `requests.jsonl`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// The user who issued the request.
    pub user: UserId,
    /// Which task the request belongs to.
    pub task: Task,
    /// Items the user interacted with before the request, oldest first.
    pub history: Vec<ItemId>,
    /// The search query; required for `search`, absent for `rec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// True when the query is a proxy built from item metadata rather than one the user typed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub query_is_proxy: bool,
    /// The item(s) the user clicked; at least one.
    pub targets: Vec<ItemId>,
    /// Fixed evaluation negatives (sampled once, seeded), empty when none were sampled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub negatives: Vec<ItemId>,
    /// When the request happened (Unix seconds where the source has real times); only the order
    /// matters.
    pub timestamp: i64,
}

fn is_false(value: &bool) -> bool {
    !*value
}

impl Request {
    /// The candidate set of the sampled protocol: the targets followed by the fixed negatives.
    pub fn sampled_candidates(&self) -> Vec<ItemId> {
        let mut candidates = self.targets.clone();
        candidates.extend(
            self.negatives
                .iter()
                .copied()
                .filter(|item| !self.targets.contains(item)),
        );
        candidates
    }
}

/// Request counts of one split, per task.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCounts {
    /// Search requests.
    pub search: usize,
    /// Recommendation requests.
    pub rec: usize,
}

impl TaskCounts {
    /// Counts the requests of `requests` per task.
    pub fn of(requests: &[Request]) -> Self {
        let mut counts = TaskCounts::default();
        for request in requests {
            match request.task {
                Task::Search => counts.search += 1,
                Task::Rec => counts.rec += 1,
            }
        }
        counts
    }

    /// Both tasks together.
    pub fn total(&self) -> usize {
        self.search + self.rec
    }
}

/// Sizes recorded in the manifest.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ManifestCounts {
    /// Items in `items.jsonl`.
    pub items: usize,
    /// Distinct users over all request files.
    pub users: usize,
    /// Requests per file stem (`train`, `valid`, `test`, or `requests` before splitting).
    pub requests: BTreeMap<String, TaskCounts>,
}

/// How the fixed evaluation negatives were drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NegativesRecord {
    /// Negatives per valid/test request.
    pub per_request: usize,
    /// The sampling seed of valid (test uses [`NegativesRecord::test_seed`]).
    pub seed: u64,
}

impl NegativesRecord {
    /// The sampling seed of the test negatives: the next one after valid's.
    pub fn test_seed(&self) -> u64 {
        self.seed.wrapping_add(1)
    }
}

impl std::fmt::Display for NegativesRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} per valid/test request, seed {} (valid) and {} (test)",
            self.per_request,
            self.seed,
            self.test_seed()
        )
    }
}

/// `dataset.json`: what the directory holds and where it came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetManifest {
    /// Version of this format; 1.
    pub format_version: u32,
    /// Short name (`synthetic`, `qilin`, `ml-1m`, ...).
    pub name: String,
    /// Where the data came from (converter and input paths, or generator and seed).
    pub source: String,
    /// True when (some) search queries are proxies built from item metadata.
    #[serde(default)]
    pub proxy_queries: bool,
    /// Sizes.
    pub counts: ManifestCounts,
    /// The negative sampling used for valid/test, when done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negatives: Option<NegativesRecord>,
    /// Free-text notes for people reading the directory (e.g. "queries are proxies built from genres
    /// and titles"), including the converter's and validator's counts.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// The manifest format version this crate writes and reads.
pub const FORMAT_VERSION: u32 = 1;
