//! Qilin (Xiaohongshu, THUIR; the GEMS reference's main dataset), from CSV exports of its tables.
//!
//! The Hugging Face release (`THUIR/Qilin`) stores parquet shards; reading parquet would need a
//! heavy dependency, so — like the GEMS authors' own preprocessing, which reads CSV — this
//! converter takes one CSV per table, as pandas writes them (`FORMAT.md` has the one-line export).
//! Columns are found by name; others are ignored:
//!
//! - `search_train.csv`, `search_test.csv`: `user_idx`, `query`, `recent_clicked_note_idxs` (the
//!   history, a numpy array print `[1151720  927325 ...]`), `search_result_details_with_idx` (the
//!   impressions: a list of dicts with `note_idx`, `click`, `search_timestamp` in seconds);
//! - `recommendation_train.csv`, `recommendation_test.csv`: `user_idx`,
//!   `recent_clicked_note_idxs`, `rec_result_details_with_idx` (dicts with `note_idx`, `click`,
//!   `request_timestamp` in milliseconds);
//! - `notes.csv`: `note_idx`, `note_title` (title), `note_content` (text), `taxonomy1_id`,
//!   `taxonomy2_id`, `taxonomy3_id` (categories, when present).
//!
//! Each row is one request: targets are the clicked notes (`click > 0`, impression order), the
//! timestamp is the earliest impression's, the history is `recent_clicked_note_idxs` as given (its
//! last `max_history` entries). As in the reference, train and test tables are merged and the
//! split is redone leave-one-out. Rows without a click, search rows with a blank query and rows
//! with a too-short history are dropped; notes missing from `notes.csv` are removed from targets
//! and histories; all counted. The reference's filters are the default: users with fewer than 3
//! requests of a task lose them, users must have both tasks, and an iterated 3-core on users and
//! items follows ([`crate::convert::FilterOptions`]).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::convert::python_literal::{PythonValue, parse_integer_list, parse_literal};
use crate::convert::table::{Row, TableReader};
use crate::convert::{
    ConversionReport, ConvertedDataset, FilterOptions, HistoryOptions, apply_filters,
    keep_referenced_items, time_in_milliseconds,
};
use crate::error::{DataError, Result};
use crate::schema::{Item, ItemId, Request, Task};

/// Options of the Qilin converter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QilinOptions {
    /// History truncation and minimum length.
    pub history: HistoryOptions,
    /// Filters; the default is the reference's (3 per task, both tasks, 3-core).
    pub filter: FilterOptions,
}

impl Default for QilinOptions {
    fn default() -> Self {
        QilinOptions {
            history: HistoryOptions::default(),
            filter: FilterOptions {
                min_requests_per_user_per_task: 3,
                require_both_tasks: true,
                k_core: 3,
            },
        }
    }
}

/// The request tables, their task, and the name of their timestamp key and its unit (ms per unit).
const TABLES: [(&str, Task, &str, f64); 4] = [
    ("search_train.csv", Task::Search, "search_timestamp", 1000.0),
    ("search_test.csv", Task::Search, "search_timestamp", 1000.0),
    (
        "recommendation_train.csv",
        Task::Rec,
        "request_timestamp",
        1.0,
    ),
    (
        "recommendation_test.csv",
        Task::Rec,
        "request_timestamp",
        1.0,
    ),
];

/// Converts the Qilin CSV exports in `directory`.
pub fn convert(directory: &Path, options: &QilinOptions) -> Result<ConvertedDataset> {
    options.history.check()?;
    let mut report = ConversionReport::default();
    let mut requests = Vec::new();
    let mut tables_read = Vec::new();
    for (file, task, timestamp_key, milliseconds_per_unit) in TABLES {
        let path = directory.join(file);
        if !path.is_file() {
            continue;
        }
        tables_read.push(file);
        requests.extend(read_requests(
            &path,
            task,
            timestamp_key,
            milliseconds_per_unit,
            options.history,
            &mut report,
        )?);
    }
    for task in Task::ALL {
        if !tables_read.iter().any(|file| table_task(file) == task) {
            return Err(DataError::file(
                &directory.display().to_string(),
                format!(
                    "no {task} table: expected {} (CSV exports of the Qilin parquet tables; see gems-data/FORMAT.md)",
                    if task == Task::Search {
                        "search_train.csv and/or search_test.csv"
                    } else {
                        "recommendation_train.csv and/or recommendation_test.csv"
                    }
                ),
            ));
        }
    }
    let referenced: HashSet<ItemId> = requests
        .iter()
        .flat_map(|request: &Request| request.history.iter().chain(&request.targets))
        .copied()
        .collect();
    let (items, repeated_notes) = read_notes(&directory.join("notes.csv"), &referenced)?;
    report.add(
        "notes.csv rows repeating a note (the first kept)",
        repeated_notes,
    );
    let known: HashSet<ItemId> = items.iter().map(|item| item.id).collect();
    remove_unknown_notes(&mut requests, &known, &mut report);
    requests.sort_by_key(|request| (request.user, request.timestamp));
    let requests = apply_filters(requests, &options.filter, &mut report);
    let items = keep_referenced_items(items, &requests, &mut report);
    Ok(ConvertedDataset {
        name: "qilin".to_string(),
        source: format!("Qilin CSV exports at {} ({}), {options:?}", directory.display(), tables_read.join(", ")),
        items,
        requests,
        proxy_queries: false,
        notes: vec![
            "Qilin: histories are the app-level recent_clicked_note_idxs of each request (both services), targets the clicked notes; train and test tables merged and re-split leave-one-out".to_string(),
        ],
        report,
    })
}

fn table_task(file: &str) -> Task {
    if file.starts_with("search") {
        Task::Search
    } else {
        Task::Rec
    }
}

fn read_requests(
    path: &Path,
    task: Task,
    timestamp_key: &str,
    milliseconds_per_unit: f64,
    history_options: HistoryOptions,
    report: &mut ConversionReport,
) -> Result<Vec<Request>> {
    let file_name = path
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or("table")
        .to_string();
    let details_column = if task == Task::Search {
        "search_result_details_with_idx"
    } else {
        "rec_result_details_with_idx"
    };
    let mut reader = TableReader::open(path, ",", Some('"'))?;
    let header = reader.header()?;
    let user = header.require("user_idx")?;
    let history = header.require("recent_clicked_note_idxs")?;
    let details = header.require(details_column)?;
    let query = if task == Task::Search {
        Some(header.require("query")?)
    } else {
        None
    };
    let (mut rows, mut without_click, mut blank_query, mut short_history) = (0, 0, 0, 0);
    let mut requests = Vec::new();
    while let Some(row) = reader.next_row()? {
        rows += 1;
        let (targets, earliest) = clicked_notes(&row, details, details_column, timestamp_key)?;
        if targets.is_empty() {
            without_click += 1;
            continue;
        }
        let query = match query {
            Some(column) => {
                let text = row.text(column, "query")?.trim().to_string();
                if text.is_empty() {
                    blank_query += 1;
                    continue;
                }
                Some(text)
            }
            None => None,
        };
        let mut past = parse_integer_list(row.text(history, "recent_clicked_note_idxs")?)
            .map_err(|message| row.error("recent_clicked_note_idxs", message))?
            .into_iter()
            .map(|id| {
                u64::try_from(id).map_err(|_| {
                    row.error("recent_clicked_note_idxs", format!("negative note id {id}"))
                })
            })
            .collect::<Result<Vec<ItemId>>>()?;
        if past.len() < history_options.min_history {
            short_history += 1;
            continue;
        }
        past.drain(..past.len().saturating_sub(history_options.max_history));
        requests.push(Request {
            user: row.id(user, "user_idx")?,
            task,
            history: past,
            query,
            query_is_proxy: false,
            targets,
            negatives: Vec::new(),
            timestamp: time_in_milliseconds(earliest, milliseconds_per_unit)
                .map_err(|message| row.error(details_column, message))?
                .div_euclid(1000),
            user_key: None,
        });
    }
    report.add(format!("{file_name}: rows"), rows);
    report.add(
        format!("{file_name}: rows without a clicked note (dropped)"),
        without_click,
    );
    if task == Task::Search {
        report.add(
            format!("{file_name}: rows with a blank query (dropped)"),
            blank_query,
        );
    }
    report.add(
        format!(
            "{file_name}: rows with fewer than {} history notes (dropped)",
            history_options.min_history
        ),
        short_history,
    );
    Ok(requests)
}

/// Clicked notes in impression order (deduplicated) and the earliest impression time.
fn clicked_notes(
    row: &Row,
    column: usize,
    name: &str,
    timestamp_key: &str,
) -> Result<(Vec<ItemId>, f64)> {
    let parsed =
        parse_literal(row.text(column, name)?).map_err(|message| row.error(name, message))?;
    let entries = parsed
        .as_list()
        .ok_or_else(|| row.error(name, "expected a list of impression dicts"))?;
    let mut targets = Vec::new();
    let mut earliest = f64::INFINITY;
    for (position, entry) in entries.iter().enumerate() {
        let field = |key: &str| {
            entry
                .get(key)
                .ok_or_else(|| row.error(name, format!("impression {position} has no \"{key}\"")))
        };
        let note = field("note_idx")?
            .as_integer()
            .and_then(|id| u64::try_from(id).ok())
            .ok_or_else(|| {
                row.error(
                    name,
                    format!("impression {position}: note_idx is not a non-negative integer"),
                )
            })?;
        // A number or a boolean; None (or NaN) is no click, anything else is refused.
        let click = match field("click")? {
            PythonValue::None => 0.0,
            value => value.as_float().ok_or_else(|| {
                row.error(
                    name,
                    format!("impression {position}: click {value:?} is not a number"),
                )
            })?,
        };
        if let Some(time) = field(timestamp_key)?
            .as_float()
            .filter(|time| time.is_finite())
        {
            earliest = earliest.min(time);
        }
        if click > 0.0 && !targets.contains(&note) {
            targets.push(note);
        }
    }
    Ok((targets, earliest))
}

fn remove_unknown_notes(
    requests: &mut Vec<Request>,
    known: &HashSet<ItemId>,
    report: &mut ConversionReport,
) {
    let mut removed = 0;
    for request in requests.iter_mut() {
        let before = request.targets.len() + request.history.len();
        request.targets.retain(|item| known.contains(item));
        request.history.retain(|item| known.contains(item));
        removed += before - request.targets.len() - request.history.len();
    }
    let before = requests.len();
    requests.retain(|request| !request.targets.is_empty());
    report.add("note references missing from notes.csv (removed)", removed);
    report.add(
        "requests left without a clicked note in notes.csv (dropped)",
        before - requests.len(),
    );
}

/// The notes the requests refer to, and how many rows repeated a note read before (the first
/// row is kept).
fn read_notes(path: &Path, referenced: &HashSet<ItemId>) -> Result<(Vec<Item>, usize)> {
    let mut reader = TableReader::open(path, ",", Some('"'))?;
    let header = reader.header()?;
    let id = header.require("note_idx")?;
    let title = header.require("note_title")?;
    let content = header.find("note_content");
    let taxonomy: Vec<(usize, &str)> = ["taxonomy1_id", "taxonomy2_id", "taxonomy3_id"]
        .into_iter()
        .filter_map(|name| header.find(name).map(|column| (column, name)))
        .collect();
    let mut items: HashMap<ItemId, Item> = HashMap::new();
    let mut repeated = 0;
    while let Some(row) = reader.next_row()? {
        let note = row.id(id, "note_idx")?;
        if items.contains_key(&note) {
            repeated += 1;
            continue;
        }
        if !referenced.contains(&note) {
            continue;
        }
        let text = match content {
            Some(column) => Some(row.text(column, "note_content")?.trim().to_string())
                .filter(|text| !text.is_empty()),
            None => None,
        };
        let mut categories = Vec::new();
        for (column, name) in &taxonomy {
            let value = row.text(*column, name)?.trim();
            if !value.is_empty() && value != "nan" && value != "-1" {
                categories.push(value.to_string());
            }
        }
        items.insert(
            note,
            Item {
                id: note,
                title: row.text(title, "note_title")?.trim().to_string(),
                text,
                categories,
                key: None,
            },
        );
    }
    let mut items: Vec<Item> = items.into_values().collect();
    items.sort_by_key(|item| item.id);
    Ok((items, repeated))
}
