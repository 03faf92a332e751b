//! KuaiSAR (Kuaishou's unified search and recommendation logs), from its CSV files.
//!
//! Reads, by column name (other columns are ignored):
//! - `rec_inter.csv`: `user_id`, `item_id`, `timestamp` (Unix milliseconds), `click`; every row
//!   with `click = 1` is one recommendation interaction;
//! - `src_inter.csv`: `user_id`, `search_session_id`, `search_session_timestamp` (milliseconds),
//!   `keyword` (anonymised word ids, `[20, 34, 3]`), `item_id`, `click_cnt`; the rows of one
//!   search session form one search request whose query is the keyword ids separated by spaces
//!   (`"20 34 3"`; KuaiSAR publishes no word text) and whose targets are the clicked items
//!   (`click_cnt > 0`); sessions without a click are dropped (counted);
//! - `item_features.csv`: `item_id`, `caption` (anonymised word ids, rendered like queries, as the
//!   title), and the category names `first_level_category_name_en` …
//!   `fourth_level_category_name_en` (the Chinese `*_name` columns when the English ones are
//!   absent; `empty`/`UNKNOWN` placeholders skipped).
//!
//! Search results can be live streams or user profiles that are not in `item_features.csv`; such
//! clicked items are removed (counted). Histories interleave both tasks by time.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::convert::python_literal::parse_integer_list;
use crate::convert::table::TableReader;
use crate::convert::{
    ConversionReport, ConvertedDataset, FilterOptions, HistoryOptions, Interaction, apply_filters,
    keep_referenced_items, requests_from_interactions, retain_known_targets, time_in_milliseconds,
};
use crate::error::Result;
use crate::schema::{Item, ItemId, Task};

/// Options of the KuaiSAR converter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KuaiSarOptions {
    /// History building.
    pub history: HistoryOptions,
    /// Optional filters.
    pub filter: FilterOptions,
}

/// Renders an anonymised word-id list cell (`[20, 34, 3]`) as `"20 34 3"`; other text is kept.
fn word_ids_as_text(cell: &str) -> String {
    match parse_integer_list(cell) {
        Ok(ids) => ids.iter().map(i64::to_string).collect::<Vec<_>>().join(" "),
        Err(_) => cell.trim().to_string(),
    }
}

const CATEGORY_PLACEHOLDERS: [&str; 6] = ["", "empty", "UNKNOWN", "unknown", "nan", "空"];

/// Converts the KuaiSAR directory `directory`.
pub fn convert(directory: &Path, options: &KuaiSarOptions) -> Result<ConvertedDataset> {
    options.history.check()?;
    let mut report = ConversionReport::default();
    let items = read_items(&directory.join("item_features.csv"))?;
    report.add("items in item_features.csv", items.len());
    let mut interactions = read_recommendations(&directory.join("rec_inter.csv"), &mut report)?;
    interactions.extend(read_searches(
        &directory.join("src_inter.csv"),
        &mut report,
    )?);
    let known: HashSet<ItemId> = items.iter().map(|item| item.id).collect();
    retain_known_targets(&mut interactions, &known, &mut report);
    let requests = requests_from_interactions(interactions, options.history, &mut report)?;
    let requests = apply_filters(requests, &options.filter, &mut report);
    let items = keep_referenced_items(items, &requests, &mut report);
    Ok(ConvertedDataset {
        name: "kuaisar".to_string(),
        source: format!("KuaiSAR CSV files at {}, {options:?}", directory.display()),
        items,
        requests,
        proxy_queries: false,
        notes: vec![
            "KuaiSAR queries and captions are anonymised word ids, written as space-separated numbers".to_string(),
            "one search request per search session with at least one click; targets are all clicked items".to_string(),
        ],
        report,
    })
}

fn read_recommendations(path: &Path, report: &mut ConversionReport) -> Result<Vec<Interaction>> {
    let mut reader = TableReader::open(path, ",", Some('"'))?;
    let header = reader.header()?;
    let (user, item, timestamp, click) = (
        header.require("user_id")?,
        header.require("item_id")?,
        header.require("timestamp")?,
        header.require("click")?,
    );
    let mut interactions = Vec::new();
    let mut rows = 0;
    while let Some(row) = reader.next_row()? {
        rows += 1;
        if row.finite(click, "click", "0 or 1")? < 1.0 {
            continue;
        }
        interactions.push(Interaction {
            user: row.id(user, "user_id")?,
            time_ms: time_in_milliseconds(
                row.parse(timestamp, "timestamp", "Unix milliseconds")?,
                1.0,
            )
            .map_err(|message| row.error("timestamp", message))?,
            task: Task::Rec,
            targets: vec![row.id(item, "item_id")?],
            query: None,
            query_is_proxy: false,
        });
    }
    report.add("rec_inter.csv rows", rows);
    report.add(
        "rec_inter.csv rows without a click (not interactions)",
        rows - interactions.len(),
    );
    Ok(interactions)
}

fn read_searches(path: &Path, report: &mut ConversionReport) -> Result<Vec<Interaction>> {
    let mut reader = TableReader::open(path, ",", Some('"'))?;
    let header = reader.header()?;
    let user = header.require("user_id")?;
    let session = header.require("search_session_id")?;
    let timestamp = header.require("search_session_timestamp")?;
    let keyword = header.require("keyword")?;
    let item = header.require("item_id")?;
    let click = header.require("click_cnt")?;
    let mut sessions: Vec<Interaction> = Vec::new();
    let mut position_of_session: HashMap<u64, usize> = HashMap::new();
    let mut rows = 0;
    while let Some(row) = reader.next_row()? {
        rows += 1;
        let session_id = row.id(session, "search_session_id")?;
        let position = match position_of_session.get(&session_id) {
            Some(&position) => position,
            None => {
                position_of_session.insert(session_id, sessions.len());
                sessions.push(Interaction {
                    user: row.id(user, "user_id")?,
                    time_ms: time_in_milliseconds(
                        row.parse(timestamp, "search_session_timestamp", "Unix milliseconds")?,
                        1.0,
                    )
                    .map_err(|message| row.error("search_session_timestamp", message))?,
                    task: Task::Search,
                    targets: Vec::new(),
                    query: Some(word_ids_as_text(row.text(keyword, "keyword")?)),
                    query_is_proxy: false,
                });
                sessions.len() - 1
            }
        };
        if row.finite(click, "click_cnt", "a click count")? > 0.0 {
            let clicked = row.id(item, "item_id")?;
            if !sessions[position].targets.contains(&clicked) {
                sessions[position].targets.push(clicked);
            }
        }
    }
    report.add("src_inter.csv rows", rows);
    report.add("search sessions", sessions.len());
    let before = sessions.len();
    sessions.retain(|session| !session.targets.is_empty());
    report.add(
        "search sessions without a click (dropped)",
        before - sessions.len(),
    );
    Ok(sessions)
}

fn read_items(path: &Path) -> Result<Vec<Item>> {
    let mut reader = TableReader::open(path, ",", Some('"'))?;
    let header = reader.header()?;
    let id = header.require("item_id")?;
    let caption = header.find("caption");
    let levels = ["first", "second", "third", "fourth"];
    // Each level's column and its name, the English one where the file has both.
    let category_columns: Vec<(usize, String)> = levels
        .iter()
        .filter_map(|level| {
            let english = format!("{level}_level_category_name_en");
            let native = format!("{level}_level_category_name");
            match header.find(&english) {
                Some(column) => Some((column, english)),
                None => header.find(&native).map(|column| (column, native)),
            }
        })
        .collect();
    let mut items = Vec::new();
    while let Some(row) = reader.next_row()? {
        let title = match caption {
            Some(column) => word_ids_as_text(row.text(column, "caption")?),
            None => String::new(),
        };
        let mut categories = Vec::new();
        for (column, field) in &category_columns {
            let name = row.text(*column, field)?.trim();
            if !CATEGORY_PLACEHOLDERS.contains(&name) {
                categories.push(name.to_string());
            }
        }
        items.push(Item {
            id: row.id(id, "item_id")?,
            title,
            text: None,
            categories,
            key: None,
        });
    }
    Ok(items)
}
