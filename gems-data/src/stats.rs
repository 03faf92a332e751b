//! What a dataset holds, in numbers: requests per file and task, history lengths, targets,
//! queries and negatives (what `gems data stats` shows).

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::schema::{DatasetManifest, Item, NegativesRecord, Request, Task, TaskCounts};
use crate::validate::ValidationReport;

/// Smallest, mean, median and largest value of a count.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Distribution {
    /// Smallest value (0 when there is none).
    pub min: usize,
    /// Mean.
    pub mean: f64,
    /// Median (the mean of the two middle values for an even count).
    pub median: f64,
    /// Largest value.
    pub max: usize,
}

impl Distribution {
    /// The distribution of `values` (all zero when empty).
    pub fn of(mut values: Vec<usize>) -> Self {
        if values.is_empty() {
            return Distribution::default();
        }
        values.sort_unstable();
        let count = values.len();
        let median = if count % 2 == 1 {
            values[count / 2] as f64
        } else {
            (values[count / 2 - 1] + values[count / 2]) as f64 / 2.0
        };
        Distribution {
            min: values[0],
            mean: values.iter().sum::<usize>() as f64 / count as f64,
            median,
            max: values[count - 1],
        }
    }
}

/// Requests of one file.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FileStats {
    /// Search requests.
    pub search: usize,
    /// Recommendation requests.
    pub rec: usize,
    /// Both.
    pub total: usize,
    /// Fixed negatives per request.
    pub negatives_per_request: Distribution,
}

/// Search queries over all files.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct QueryStats {
    /// Search requests.
    pub search_requests: usize,
    /// Of them, with a query a user typed.
    pub typed: usize,
    /// Of them, with a proxy query built from item metadata.
    pub proxy: usize,
    /// Distinct query strings.
    pub distinct: usize,
}

/// The numbers of a split or unsplit dataset.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DatasetStats {
    /// The manifest's name.
    pub name: String,
    /// The manifest's source.
    pub source: String,
    /// Whether the files are the train / valid / test split.
    pub split: bool,
    /// Items in the catalogue.
    pub items: usize,
    /// Distinct users over all requests.
    pub users: usize,
    /// Per file stem: `requests` (unsplit) or `train`, `valid`, `test`.
    pub requests: BTreeMap<String, FileStats>,
    /// History length over all requests.
    pub history_length: Distribution,
    /// Targets per request over all requests.
    pub targets_per_request: Distribution,
    /// Search queries.
    pub queries: QueryStats,
    /// How the fixed negatives were drawn (split datasets).
    pub negatives_sampling: Option<NegativesRecord>,
    /// What validation found while loading.
    pub validation: ValidationReport,
    /// The manifest's notes.
    pub notes: Vec<String>,
}

impl DatasetStats {
    /// The numbers of the request files `files` (stem, requests) over `items`.
    pub fn of(
        manifest: &DatasetManifest,
        items: &[Item],
        files: &[(&str, &[Request])],
        validation: ValidationReport,
    ) -> Self {
        let all = || files.iter().flat_map(|(_, requests)| requests.iter());
        let requests = files
            .iter()
            .map(|(name, requests)| {
                let counts = TaskCounts::of(requests);
                let stats = FileStats {
                    search: counts.search,
                    rec: counts.rec,
                    total: counts.total(),
                    negatives_per_request: Distribution::of(
                        requests
                            .iter()
                            .map(|request| request.negatives.len())
                            .collect(),
                    ),
                };
                (name.to_string(), stats)
            })
            .collect();
        let searches: Vec<&Request> = all()
            .filter(|request| request.task == Task::Search)
            .collect();
        let proxy = searches
            .iter()
            .filter(|request| request.query_is_proxy)
            .count();
        let distinct: HashSet<&str> = searches
            .iter()
            .filter_map(|request| request.query.as_deref())
            .collect();
        DatasetStats {
            name: manifest.name.clone(),
            source: manifest.source.clone(),
            split: files.iter().any(|(name, _)| *name == "train"),
            items: items.len(),
            users: all()
                .map(|request| request.user)
                .collect::<HashSet<_>>()
                .len(),
            requests,
            history_length: Distribution::of(all().map(|request| request.history.len()).collect()),
            targets_per_request: Distribution::of(
                all().map(|request| request.targets.len()).collect(),
            ),
            queries: QueryStats {
                search_requests: searches.len(),
                typed: searches.len() - proxy,
                proxy,
                distinct: distinct.len(),
            },
            negatives_sampling: manifest.negatives,
            validation,
            notes: manifest.notes.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distributions_of_odd_even_and_empty_counts() {
        let odd = Distribution::of(vec![5, 1, 3]);
        assert_eq!((odd.min, odd.median, odd.max), (1, 3.0, 5));
        assert_eq!(odd.mean, 3.0);
        let even = Distribution::of(vec![4, 1, 2, 10]);
        assert_eq!((even.min, even.median, even.max), (1, 3.0, 10));
        assert_eq!(even.mean, 4.25);
        assert_eq!(Distribution::of(Vec::new()), Distribution::default());
    }
}
