//! Amazon as preprocessed by UniSAR (Shi et al., SIGIR 2024; the GEMS paper's second dataset).
//!
//! UniSAR publishes `dataset/{rec,src}_{train,val,test}.pkl`: pickled pandas DataFrames, one row per
//! interaction, read by its sampler through the columns `user_id`, `item_id`, `ts` (the time), and
//! for search `keyword` (the query as a list of word ids; UniSAR publishes no word text). The
//! files are decoded in Rust by this crate's own pickle reader and DataFrame decoder; other
//! columns (`neg_items`, `rec_his`, `src_session_his`, ...) are ignored, and the three UniSAR
//! splits are merged and re-split leave-one-out like every other source. Each request's history
//! is the user's earlier items of both tasks by time, truncated to the last 20 (as the GEMS
//! reference does). UniSAR's Amazon has no item text: titles are the placeholder `item N`, so the
//! title identifier scheme carries no information here (use atomic or semantic identifiers).
//!
//! `directory` may be UniSAR's `Amazon/` folder (with `dataset/`) or the `dataset/` folder itself.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::convert::dataframe::{Frame, frame_from_pickle};
use crate::convert::pickle::read_pickle;
use crate::convert::python_literal::{PythonValue, parse_integer_list};
use crate::convert::{
    ConversionReport, ConvertedDataset, FilterOptions, HistoryOptions, Interaction, apply_filters,
    requests_from_interactions, time_in_milliseconds,
};
use crate::error::{DataError, Result};
use crate::schema::{Item, ItemId, Task};

/// Unit of the `ts` column.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimestampUnit {
    /// Unix seconds.
    #[default]
    Seconds,
    /// Unix milliseconds.
    Milliseconds,
}

/// Options of the UniSAR Amazon converter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmazonUnisarOptions {
    /// History building (default: last 20 items).
    pub history: HistoryOptions,
    /// Optional filters.
    pub filter: FilterOptions,
    /// Unit of `ts`.
    pub timestamp_unit: TimestampUnit,
}

const SPLITS: [&str; 3] = ["train", "val", "test"];

fn dataset_directory(directory: &Path) -> PathBuf {
    let nested = directory.join("dataset");
    if nested.join("rec_train.pkl").is_file() {
        nested
    } else {
        directory.to_path_buf()
    }
}

/// Reads one pickled DataFrame.
pub(crate) fn read_frame(path: &Path) -> Result<Frame> {
    let bytes = std::fs::read(path).map_err(|source| DataError::io(path, "read", source))?;
    let file = path.display().to_string();
    let pickle = read_pickle(&bytes)
        .map_err(|message| DataError::file(&file, format!("not a readable pickle: {message}")))?;
    frame_from_pickle(&pickle).map_err(|message| {
        DataError::file(
            &file,
            format!("{message}; if this persists, re-export with pandas: pd.read_pickle(path).to_dict(orient=\"list\") pickled"),
        )
    })
}

fn required<'a>(frame: &'a Frame, file: &str, name: &str) -> Result<&'a [PythonValue]> {
    frame.column(name).ok_or_else(|| {
        DataError::file(
            file,
            format!(
                "missing column \"{name}\"; the frame has: {}",
                frame.columns.join(", ")
            ),
        )
    })
}

fn id_of(cell: &PythonValue, file: &str, row: usize, name: &str) -> Result<u64> {
    cell.as_integer()
        .and_then(|value| u64::try_from(value).ok())
        .ok_or_else(|| {
            DataError::record(
                file,
                row + 1,
                Some(name),
                format!("expected a non-negative integer id, got {cell:?}"),
            )
        })
}

fn query_of(cell: &PythonValue, file: &str, row: usize) -> Result<String> {
    let join = |ids: &[i64]| ids.iter().map(i64::to_string).collect::<Vec<_>>().join(" ");
    if let Some(ids) = cell.as_integer_list() {
        return Ok(join(&ids));
    }
    match cell {
        PythonValue::Integer(id) => Ok(id.to_string()),
        PythonValue::Text(text) => Ok(parse_integer_list(text)
            .map(|ids| join(&ids))
            .unwrap_or_else(|_| text.trim().to_string())),
        other => Err(DataError::record(
            file,
            row + 1,
            Some("keyword"),
            format!("expected a list of word ids or a text, got {other:?}"),
        )),
    }
}

/// Converts UniSAR's Amazon pickles.
pub fn convert(directory: &Path, options: &AmazonUnisarOptions) -> Result<ConvertedDataset> {
    options.history.check()?;
    let directory = dataset_directory(directory);
    let mut report = ConversionReport::default();
    let mut interactions = Vec::new();
    let milliseconds = match options.timestamp_unit {
        TimestampUnit::Seconds => 1000.0,
        TimestampUnit::Milliseconds => 1.0,
    };
    for (prefix, task) in [("rec", Task::Rec), ("src", Task::Search)] {
        for split in SPLITS {
            let path = directory.join(format!("{prefix}_{split}.pkl"));
            if !path.is_file() {
                return Err(DataError::file(
                    &path.display().to_string(),
                    "missing; UniSAR's Amazon folder holds dataset/{rec,src}_{train,val,test}.pkl",
                ));
            }
            let file = path.display().to_string();
            let frame = read_frame(&path)?;
            let users = required(&frame, &file, "user_id")?;
            let items = required(&frame, &file, "item_id")?;
            let times = required(&frame, &file, "ts")?;
            let keywords = if task == Task::Search {
                Some(required(&frame, &file, "keyword")?)
            } else {
                None
            };
            for row in 0..frame.rows {
                let time = times[row].as_float().ok_or_else(|| {
                    DataError::record(
                        &file,
                        row + 1,
                        Some("ts"),
                        format!("expected a time, got {:?}", times[row]),
                    )
                })?;
                let time_ms = time_in_milliseconds(time, milliseconds)
                    .map_err(|message| DataError::record(&file, row + 1, Some("ts"), message))?;
                interactions.push(Interaction {
                    user: id_of(&users[row], &file, row, "user_id")?,
                    time_ms,
                    task,
                    targets: vec![id_of(&items[row], &file, row, "item_id")?],
                    query: keywords
                        .map(|cells| query_of(&cells[row], &file, row))
                        .transpose()?,
                    query_is_proxy: false,
                });
            }
            report.add(format!("{prefix}_{split}.pkl rows"), frame.rows);
        }
    }
    let requests = requests_from_interactions(interactions, options.history, &mut report)?;
    let requests = apply_filters(requests, &options.filter, &mut report);
    let referenced: BTreeSet<ItemId> = requests
        .iter()
        .flat_map(|request| request.history.iter().chain(&request.targets))
        .copied()
        .collect();
    let items = referenced
        .into_iter()
        .map(|id| Item {
            id,
            title: format!("item {id}"),
            text: None,
            categories: Vec::new(),
            key: None,
        })
        .collect();
    Ok(ConvertedDataset {
        name: "amazon-unisar".to_string(),
        source: format!("UniSAR Amazon pickles at {}, {options:?}", directory.display()),
        items,
        requests,
        proxy_queries: false,
        notes: vec![
            "UniSAR's Amazon: queries are word-id sequences written as space-separated numbers (no word text is published); item titles are placeholders".to_string(),
            "UniSAR's train/val/test merged and re-split leave-one-out; histories rebuilt from the interaction log (both tasks), last 20 items".to_string(),
        ],
        report,
    })
}
