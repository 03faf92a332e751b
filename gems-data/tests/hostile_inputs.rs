//! The hostile inputs of issue 10, one test each: crafted pickles (huge memo indices, a
//! `RangeIndex` of 10^15 rows, an index longer than its blocks, ragged `to_dict()` tables,
//! self-referencing, exponentially shared and 100 000-deep containers), a CSV list cell nested
//! 60 000 levels deep, MovieLens timestamps whose milliseconds overflow, absurd `max_history`
//! values and empty datasets. Each used to panic, abort (stack overflow, multi-GB allocation) or
//! be silently accepted; each must now end in an error that names the file and what is wrong.

mod common;

use std::path::Path;

use common::{fixture_copy, scratch_dir};
use gems_data::convert::amazon_unisar::{AmazonUnisarOptions, convert as convert_amazon};
use gems_data::convert::movielens::{MovieLensOptions, convert as convert_movielens};
use gems_data::convert::qilin::{QilinOptions, convert as convert_qilin};
use gems_data::convert::{ConvertedDataset, HistoryOptions, MAX_HISTORY_LIMIT};
use gems_data::dataset::{PrepareOptions, load_dataset, prepare};
use gems_data::synthetic::{SyntheticConfig, generate};
use gems_data::{DataError, PromptTemplates, Task, ValidationPolicy};

/// Protocol-4 header of a hand-written pickle.
const PROTOCOL_4: &[u8] = b"\x80\x04";

/// A pickle's SHORT_BINUNICODE of `text`.
fn short_text(text: &str) -> Vec<u8> {
    let mut bytes = vec![0x8c, text.len() as u8];
    bytes.extend_from_slice(text.as_bytes());
    bytes
}

/// `{"user_id": <value>, "item_id": [], "ts": []}` where `value` is the opcodes that push one
/// value: a to_dict(orient="list") frame whose first column is `value`'s elements.
fn frame_around(value: &[u8]) -> Vec<u8> {
    let mut bytes = PROTOCOL_4.to_vec();
    bytes.extend_from_slice(b"}(");
    bytes.extend(short_text("user_id"));
    bytes.extend_from_slice(value);
    for column in ["item_id", "ts"] {
        bytes.extend(short_text(column));
        bytes.push(b']');
    }
    bytes.extend_from_slice(b"u.");
    bytes
}

/// Converts UniSAR's Amazon fixture with `rec_train.pkl` replaced by `pickle`; the error text.
fn amazon_error(name: &str, pickle: &[u8]) -> String {
    let directory = fixture_copy("amazon_unisar/dataset", name);
    std::fs::write(directory.join("rec_train.pkl"), pickle).unwrap();
    let error = convert_amazon(&directory, &AmazonUnisarOptions::default())
        .expect_err("a hostile pickle must be refused")
        .to_string();
    let file = directory.join("rec_train.pkl").display().to_string();
    assert!(
        error.starts_with(&file),
        "the error names the file: {error}"
    );
    error
}

/// The fixture's `rec_val.pkl` (pandas 3, one row, RangeIndex rows) with the RangeIndex stop
/// replaced by the opcodes `stop`.
fn rec_val_with_stop(stop: &[u8]) -> Vec<u8> {
    let bytes = std::fs::read(common::fixture("amazon_unisar/dataset/rec_val.pkl")).unwrap();
    let pattern = b"\x8c\x04stop\x94K\x01";
    let at = bytes
        .windows(pattern.len())
        .position(|window| window == pattern)
        .expect("the fixture's RangeIndex stop");
    let mut patched = bytes[..at + pattern.len() - 2].to_vec();
    patched.extend_from_slice(stop);
    patched.extend_from_slice(&bytes[at + pattern.len()..]);
    patched
}

#[test]
fn long_binput_of_the_largest_index_costs_one_memo_entry() {
    // EMPTY_LIST, LONG_BINPUT 0xffffffff, STOP: a valid pickle of an empty list that used to
    // allocate a memo table of 2^32 entries (~100 GB) and abort.
    let mut pickle = PROTOCOL_4.to_vec();
    pickle.extend_from_slice(b"]r\xff\xff\xff\xff.");
    let error = amazon_error("long-binput", &pickle);
    assert!(error.contains("missing column \"user_id\""), "{error}");
}

#[test]
fn memo_indices_near_u64_max_do_not_wrap() {
    // Protocol 0 PUT/GET with the largest index: `index + 1` wrapped to 0 and the memo write
    // panicked out of bounds.
    let error = amazon_error("memo-put-max", b"]p18446744073709551615\n.");
    assert!(error.contains("missing column \"user_id\""), "{error}");
    let error = amazon_error(
        "memo-get-max",
        b"]p18446744073709551615\n0g18446744073709551614\n.",
    );
    assert!(
        error.contains("memo entry 18446744073709551614 is missing"),
        "{error}"
    );
}

#[test]
fn a_range_index_of_ten_to_the_fifteen_rows_is_checked_against_the_blocks() {
    // LONG1 of 10^15: the row labels used to be materialised (tens of GB) before any check.
    let mut stop = vec![0x8a, 7];
    stop.extend_from_slice(&1_000_000_000_000_000u64.to_le_bytes()[..7]);
    let error = amazon_error("range-index-huge", &rec_val_with_stop(&stop));
    assert!(
        error.contains("of a frame of 1000000000000000 rows"),
        "{error}"
    );
}

#[test]
fn an_index_longer_than_its_blocks_is_an_error() {
    // Two row labels for blocks of one row: the second row's cells were read out of bounds.
    let error = amazon_error("index-longer", &rec_val_with_stop(b"K\x02"));
    assert!(error.contains("of a frame of 2 rows"), "{error}");
}

#[test]
fn ragged_to_dict_tables_are_errors() {
    // orient "dict", {column: {row: value}} with a short column: the converter indexed past it.
    let mut pickle = PROTOCOL_4.to_vec();
    pickle.extend_from_slice(b"}(");
    for (column, rows) in [("user_id", 2u8), ("item_id", 1), ("ts", 2)] {
        pickle.extend(short_text(column));
        pickle.extend_from_slice(b"}(");
        for row in 0..rows {
            pickle.extend_from_slice(&[b'K', row, b'K', 10 + row]);
        }
        pickle.push(b'u');
    }
    pickle.extend_from_slice(b"u.");
    let error = amazon_error("ragged-dict", &pickle);
    assert!(
        error.contains(
            "ragged to_dict(): column item_id has 1 rows that are not the 2 rows of column user_id"
        ),
        "{error}"
    );

    // orient "records" whose second row lacks a column: it used to become a silent None.
    let mut pickle = PROTOCOL_4.to_vec();
    pickle.extend_from_slice(b"](");
    for columns in [&["user_id", "item_id", "ts"][..], &["user_id", "ts"]] {
        pickle.extend_from_slice(b"}(");
        for column in columns {
            pickle.extend(short_text(column));
            pickle.extend_from_slice(b"K\x01");
        }
        pickle.push(b'u');
    }
    pickle.extend_from_slice(b"e.");
    let error = amazon_error("ragged-records", &pickle);
    assert!(
        error.contains("ragged to_dict(): row 1 lacks column item_id"),
        "{error}"
    );
}

#[test]
fn a_list_that_contains_itself_is_refused_not_followed_forever() {
    // l = []; l.append(l): EMPTY_LIST, MEMOIZE, BINGET 0, APPEND.
    let error = amazon_error("self-reference", &frame_around(b"]\x94h\x00a"));
    assert!(error.contains("more than 64 levels deep"), "{error}");
}

#[test]
fn exponentially_shared_containers_exhaust_a_budget_not_the_memory() {
    // l0 = []; l(i) = [l(i-1), l(i-1)] for 40 levels: 120 bytes that expand to 2^40 cells.
    let mut value = b"]\x94".to_vec();
    for level in 1..=40u8 {
        value.extend_from_slice(&[b'0', b'(', b'h', level - 1, b'h', level - 1, b'l', 0x94]);
    }
    let error = amazon_error("billion-laughs", &frame_around(&value));
    assert!(error.contains("values per byte of the pickle"), "{error}");
}

#[test]
fn containers_nested_a_hundred_thousand_deep_are_refused() {
    let depth = 100_000;
    let mut value = vec![b']'; depth];
    value.extend(std::iter::repeat_n(b'a', depth - 1));
    let error = amazon_error("deep-pickle", &frame_around(&value));
    assert!(error.contains("more than 64 levels deep"), "{error}");
}

#[test]
fn a_csv_list_cell_nested_sixty_thousand_deep_is_an_error_naming_file_line_and_field() {
    let directory = fixture_copy("qilin", "deep-literal");
    let path = directory.join("recommendation_train.csv");
    let table = std::fs::read_to_string(&path).unwrap();
    let (header, rest) = table.split_once('\n').unwrap();
    let columns: Vec<&str> = header.split(',').collect();
    let history = columns
        .iter()
        .position(|column| *column == "recent_clicked_note_idxs")
        .unwrap();
    // A row whose history cell is 60 000 opening brackets (and as many closing ones).
    let cells: Vec<String> = (0..columns.len())
        .map(|column| {
            if column == history {
                format!("{}{}", "[".repeat(60_000), "]".repeat(60_000))
            } else if columns[column] == "rec_result_details_with_idx" {
                "\"[{'note_idx': 1, 'click': 1, 'request_timestamp': 5}]\"".to_string()
            } else {
                "1".to_string()
            }
        })
        .collect();
    std::fs::write(&path, format!("{header}\n{}\n{rest}", cells.join(","))).unwrap();
    let error = convert_qilin(&directory, &QilinOptions::default())
        .unwrap_err()
        .to_string();
    let expected = format!(
        "{}:2: field \"recent_clicked_note_idxs\": containers nested more than 64 levels deep",
        path.display()
    );
    assert!(error.starts_with(&expected), "{error}");
}

#[test]
fn movielens_timestamps_whose_milliseconds_overflow_are_refused() {
    for (layout, file, line) in [
        ("grouplens-1m", "ratings.dat", "1::10::5::9223372036854776"),
        ("recbole", "ml-1m.inter", "1\t10\t5\t1e300"),
        ("recbole", "ml-1m.inter", "1\t10\t5\tnan"),
    ] {
        let directory = fixture_copy(&format!("movielens/{layout}"), "overflowing-time");
        let path = directory.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{}{line}\n", text)).unwrap();
        let lines = text.lines().count() + 1;
        let error = convert_movielens(&directory, &MovieLensOptions::default())
            .unwrap_err()
            .to_string();
        let expected = format!("{}:{lines}: field \"timestamp\": the time ", path.display());
        assert!(
            error.starts_with(&expected) && error.contains("milliseconds"),
            "{line}: {error}"
        );
    }
}

fn history_error(history: HistoryOptions) -> String {
    let options = MovieLensOptions {
        history,
        ..MovieLensOptions::default()
    };
    let directory = common::fixture("movielens/grouplens-1m");
    let error = convert_movielens(&directory, &options).unwrap_err();
    assert!(matches!(error, DataError::InvalidOption(_)), "{error}");
    error.to_string()
}

#[test]
fn absurd_history_lengths_are_refused_before_anything_is_allocated() {
    let error = history_error(HistoryOptions {
        max_history: 1_000_000_000_000,
        min_history: 1,
    });
    assert!(
        error.contains("max_history 1000000000000 is out of range")
            && error.contains(&MAX_HISTORY_LIMIT.to_string()),
        "{error}"
    );
    let error = history_error(HistoryOptions {
        max_history: usize::MAX,
        min_history: 1,
    });
    assert!(error.contains("out of range"), "{error}");
    let error = history_error(HistoryOptions {
        max_history: 5,
        min_history: 6,
    });
    assert!(
        error.contains("min_history 6 is above max_history 5"),
        "{error}"
    );
    let error = generate(&SyntheticConfig {
        history: HistoryOptions {
            max_history: 0,
            min_history: 0,
        },
        ..SyntheticConfig::default()
    })
    .unwrap_err()
    .to_string();
    assert!(error.contains("max_history 0 is out of range"), "{error}");
    let reference = PromptTemplates::default();
    let error = PromptTemplates::new(
        reference.template(Task::Rec),
        reference.template(Task::Search),
        1_000_000_000_000,
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("max_history 1000000000000 is out of range"),
        "{error}"
    );
}

#[test]
fn an_empty_dataset_is_refused_with_the_reason() {
    let converted = ConvertedDataset {
        name: "nothing".to_string(),
        items: generate(&SyntheticConfig::default()).unwrap().items,
        ..ConvertedDataset::default()
    };
    let error = prepare(converted, PrepareOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with(
            "nothing: the dataset is empty: no requests (0 of 0 requests passed validation)"
        ),
        "{error}"
    );

    // A prepared directory whose train.jsonl is empty.
    let directory = scratch_dir("empty-train");
    let (prepared, _) = prepare(
        generate(&SyntheticConfig {
            users: 5,
            ..SyntheticConfig::default()
        })
        .unwrap(),
        PrepareOptions::default(),
    )
    .unwrap();
    prepared.write(&directory).unwrap();
    std::fs::write(directory.join("train.jsonl"), "").unwrap();
    let error = load_dataset(&directory, ValidationPolicy::Strict)
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with(&format!(
            "{}: the dataset is empty: no requests (read from items.jsonl and train.jsonl, after validation): nothing to train on",
            directory.display()
        )),
        "{error}"
    );
    assert!(Path::new(&directory).join("items.jsonl").is_file());
}
