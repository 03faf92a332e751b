//! The unified format: write → read round trip, and malformed input named by file, line, field.

mod common;

use std::path::Path;

use common::scratch_dir;
use gems_data::dataset::{PrepareOptions, load_converted, load_dataset, prepare, write_converted};
use gems_data::reader::{JsonlReader, read_jsonl};
use gems_data::synthetic::{SyntheticConfig, generate};
use gems_data::validate::IssueKind;
use gems_data::{DataError, Item, Request, ValidationPolicy};

fn small_synthetic() -> gems_data::convert::ConvertedDataset {
    generate(&SyntheticConfig {
        users: 20,
        items_per_category: 5,
        categories: 4,
        ..SyntheticConfig::default()
    })
    .unwrap()
}

#[test]
fn prepared_dataset_round_trips_through_the_directory() {
    let directory = scratch_dir("round-trip");
    let (prepared, report) = prepare(small_synthetic(), PrepareOptions::default()).unwrap();
    assert!(report.validation.is_clean());
    prepared.write(&directory).unwrap();
    for file in [
        "dataset.json",
        "items.jsonl",
        "train.jsonl",
        "valid.jsonl",
        "test.jsonl",
    ] {
        assert!(directory.join(file).is_file(), "{file}");
    }
    let (loaded, validation) = load_dataset(&directory, ValidationPolicy::Strict).unwrap();
    assert_eq!(loaded, prepared);
    assert_eq!(
        validation.requests_read,
        prepared.train.len() + prepared.valid.len() + prepared.test.len()
    );
    assert_eq!(loaded.manifest.counts.items, 20);
    assert_eq!(loaded.manifest.counts.users, 20);
    assert_eq!(
        loaded.manifest.counts.requests["test"].total(),
        prepared.test.len()
    );
}

#[test]
fn converted_dataset_round_trips_through_requests_jsonl() {
    let directory = scratch_dir("converted-round-trip");
    let converted = small_synthetic();
    write_converted(&converted, &directory).unwrap();
    let (loaded, _) = load_converted(&directory, ValidationPolicy::Strict).unwrap();
    assert_eq!(loaded.items, converted.items);
    assert_eq!(loaded.requests, converted.requests);
    assert_eq!(loaded.name, "synthetic");
    let reread: Vec<Request> = read_jsonl(&directory.join("requests.jsonl")).unwrap();
    assert_eq!(reread, converted.requests);
}

/// Writes `line` as line 2 of a request file (after a valid line) and returns the reader's error.
fn request_error(name: &str, line: &str) -> String {
    let directory = scratch_dir(name);
    let path = directory.join("train.jsonl");
    let valid = r#"{"user":1,"task":"rec","history":[1],"targets":[2],"timestamp":5}"#;
    std::fs::write(&path, format!("{valid}\n{line}\n")).unwrap();
    let results: Vec<_> = JsonlReader::<Request>::open(&path).unwrap().collect();
    assert_eq!(results.len(), 2, "reading stops at the first error");
    assert!(results[0].is_ok());
    let error = results[1].as_ref().unwrap_err().to_string();
    let prefix = format!("{}:2: ", path.display());
    assert!(error.starts_with(&prefix), "{error}");
    error[prefix.len()..].to_string()
}

#[test]
fn malformed_lines_name_file_line_and_field() {
    assert_eq!(
        request_error(
            "unknown-task",
            r#"{"user":1,"task":"sarch","history":[1],"query":"q","targets":[2],"timestamp":5}"#
        ),
        r#"field "task": expected "search" or "rec", got "sarch""#
    );
    assert_eq!(
        request_error(
            "missing-field",
            r#"{"user":1,"task":"rec","history":[1],"timestamp":5}"#
        ),
        r#"field "targets": missing; this field is required"#
    );
    assert_eq!(
        request_error(
            "wrong-type",
            r#"{"user":"u1","task":"rec","history":[1],"targets":[2],"timestamp":5}"#
        ),
        r#"field "user": expected a non-negative integer, got "u1""#
    );
    assert_eq!(
        request_error(
            "wrong-element",
            r#"{"user":1,"task":"rec","history":[1,"x"],"targets":[2],"timestamp":5}"#
        ),
        r#"field "history": element 1: expected a non-negative integer, got "x""#
    );
    assert_eq!(
        request_error(
            "unknown-field",
            r#"{"user":1,"task":"rec","history":[1],"tragets":[2],"timestamp":5}"#
        ),
        r#"field "tragets": unknown field; the known fields are user, task, history, query, query_is_proxy, targets, negatives, timestamp, user_key"#
    );
    let bad_json = request_error("bad-json", r#"{"user":1,"task":"rec","#);
    assert!(bad_json.starts_with("not valid JSON ("), "{bad_json}");
    assert_eq!(
        request_error("not-object", "[1, 2]"),
        "expected a JSON object, got an array"
    );
}

fn write_directory(directory: &Path, items: &str, train: &str) {
    std::fs::write(directory.join("items.jsonl"), items).unwrap();
    std::fs::write(directory.join("train.jsonl"), train).unwrap();
    std::fs::write(directory.join("valid.jsonl"), "").unwrap();
    std::fs::write(directory.join("test.jsonl"), "").unwrap();
    std::fs::write(
        directory.join("dataset.json"),
        r#"{"format_version":1,"name":"t","source":"hand-made","counts":{"items":0,"users":0,"requests":{}},"notes":[]}"#,
    )
    .unwrap();
}

const ITEMS: &str = "{\"id\":1,\"title\":\"a\"}\n{\"id\":2,\"title\":\"b\"}\n{\"id\":2,\"title\":\"b again\"}\n{\"id\":3,\"title\":\"c\"}\n";
const TRAIN: &str = concat!(
    r#"{"user":1,"task":"rec","history":[1],"targets":[2],"timestamp":1}"#,
    "\n",
    r#"{"user":1,"task":"rec","history":[1,99],"targets":[3],"timestamp":2}"#,
    "\n",
    r#"{"user":1,"task":"search","history":[1],"query":"  ","targets":[3],"timestamp":3}"#,
    "\n",
    r#"{"user":2,"task":"rec","history":[],"targets":[1],"timestamp":4}"#,
    "\n",
    r#"{"user":2,"task":"rec","history":[1],"targets":[77],"timestamp":5}"#,
    "\n",
    r#"{"user":2,"task":"rec","history":[1],"targets":[2],"negatives":[2,3,55],"timestamp":6}"#,
    "\n",
    r#"{"user":2,"task":"rec","history":[1],"targets":[3,3],"negatives":[2,2],"timestamp":7}"#,
    "\n",
);

#[test]
fn strict_validation_fails_with_counts_and_locations() {
    let directory = scratch_dir("strict-validation");
    write_directory(&directory, ITEMS, TRAIN);
    let error = load_dataset(&directory, ValidationPolicy::Strict).unwrap_err();
    let DataError::Validation { report } = &error else {
        panic!("expected a validation error, got {error}")
    };
    let train = directory.join("train.jsonl").display().to_string();
    let items = directory.join("items.jsonl").display().to_string();
    assert_eq!(report.occurrences(IssueKind::DuplicateItemId), 1);
    assert_eq!(
        report.issues[&IssueKind::DuplicateItemId].examples,
        vec![format!(
            "{items}:3: field \"id\": item 2 was already defined"
        )]
    );
    assert_eq!(
        report.issues[&IssueKind::UnknownHistoryItem].examples,
        vec![format!(
            "{train}:2: field \"history\": item 99 is not in the catalogue"
        )]
    );
    assert_eq!(
        report.issues[&IssueKind::UnknownTargetItem].examples,
        vec![format!(
            "{train}:5: field \"targets\": item 77 is not in the catalogue"
        )]
    );
    assert_eq!(report.occurrences(IssueKind::EmptySearchQuery), 1);
    assert_eq!(report.occurrences(IssueKind::EmptyHistory), 1);
    assert_eq!(report.occurrences(IssueKind::NegativeIsTargetOrHistory), 1);
    assert_eq!(report.occurrences(IssueKind::UnknownNegativeItem), 1);
    assert_eq!(
        report.issues[&IssueKind::RepeatedTargetOrNegative].examples,
        vec![
            format!("{train}:7: field \"targets\": item 3 is listed more than once"),
            format!("{train}:7: field \"negatives\": item 2 is listed more than once"),
        ]
    );
    let message = error.to_string();
    assert!(
        message.contains("validation failed") && message.contains("filter"),
        "{message}"
    );
}

#[test]
fn filter_policy_repairs_and_counts_instead_of_dropping_silently() {
    let directory = scratch_dir("filter-validation");
    write_directory(&directory, ITEMS, TRAIN);
    let (dataset, report) = load_dataset(&directory, ValidationPolicy::Filter).unwrap();
    assert_eq!(
        dataset
            .items
            .iter()
            .map(|item: &Item| item.id)
            .collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!((report.items_read, report.items_kept), (4, 3));
    // Dropped: blank query (line 3), empty history (line 4), unknown only target (line 5).
    assert_eq!((report.requests_read, report.requests_kept), (7, 4));
    assert_eq!(
        dataset.train[1].history,
        vec![1],
        "unknown history entry 99 removed"
    );
    assert_eq!(
        dataset.train[2].negatives,
        vec![3],
        "negative equal to the target and unknown negative removed"
    );
    assert_eq!(
        (&dataset.train[3].targets, &dataset.train[3].negatives),
        (&vec![3], &vec![2]),
        "repeats removed"
    );
    assert_eq!(report.occurrences(IssueKind::NoTargets), 1);
    let printed = report.to_string();
    assert!(
        printed.contains("request dropped") && printed.contains("entry removed from the history"),
        "{printed}"
    );
}

#[test]
fn an_unknown_format_version_is_refused_split_or_not() {
    let directory = scratch_dir("format-version");
    write_directory(&directory, ITEMS, TRAIN);
    let manifest = std::fs::read_to_string(directory.join("dataset.json")).unwrap();
    std::fs::write(
        directory.join("dataset.json"),
        manifest.replace("\"format_version\":1", "\"format_version\":7"),
    )
    .unwrap();
    std::fs::write(directory.join("requests.jsonl"), TRAIN).unwrap();
    let split = load_dataset(&directory, ValidationPolicy::Filter).unwrap_err();
    let unsplit = load_converted(&directory, ValidationPolicy::Filter).unwrap_err();
    for error in [split.to_string(), unsplit.to_string()] {
        assert!(
            error.contains("dataset.json") && error.contains("format_version 7 is not supported"),
            "{error}"
        );
    }
}

#[test]
fn missing_split_file_says_what_to_do() {
    let directory = scratch_dir("missing-split");
    write_directory(&directory, ITEMS, TRAIN);
    std::fs::remove_file(directory.join("test.jsonl")).unwrap();
    let error = load_dataset(&directory, ValidationPolicy::Filter)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("test.jsonl: missing") && error.contains("prepare"),
        "{error}"
    );
}
