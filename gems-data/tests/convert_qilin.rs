//! Qilin converter on hand-made CSV tables in the layout pandas exports from the parquet release.

mod common;

use common::{fixture, request};
use gems_data::convert::FilterOptions;
use gems_data::convert::qilin::{QilinOptions, convert};
use gems_data::{Item, Task};

fn unfiltered() -> QilinOptions {
    QilinOptions {
        filter: FilterOptions::default(),
        ..QilinOptions::default()
    }
}

#[test]
fn converts_tables_into_exact_requests_and_notes() {
    let converted = convert(&fixture("qilin"), &unfiltered()).unwrap();
    let expected = vec![
        // Earliest impression (ms → s); the unclicked impression of note 5 is no target.
        request(100, Task::Rec, &[1, 2], None, &[3], 1732400000),
        request(
            100,
            Task::Search,
            &[1, 2, 3],
            Some("渔歌子主旨"),
            &[4],
            1732400095,
        ),
        request(
            100,
            Task::Search,
            &[2, 3, 4],
            Some("hiking boots"),
            &[1, 2],
            1732400200,
        ),
        request(100, Task::Rec, &[1, 2, 3], None, &[8], 1732400250),
        // Note 99 is not in notes.csv: removed from the targets.
        request(
            100,
            Task::Search,
            &[3, 4, 1],
            Some("cake recipe"),
            &[2],
            1732400300,
        ),
        request(100, Task::Rec, &[3, 4], None, &[1], 1732400350),
        request(200, Task::Rec, &[2], None, &[1], 1732400150),
    ];
    assert_eq!(converted.requests, expected);
    let ids: Vec<u64> = converted.items.iter().map(|item| item.id).collect();
    assert_eq!(ids, vec![1, 2, 3, 4, 8]);
    assert_eq!(
        converted.items[0],
        Item {
            id: 1,
            title: "渔歌子".to_string(),
            text: Some("第一行\n\"引号\" #话题[话题]#".to_string()),
            categories: vec!["c487".to_string(), "c488".to_string()],
            key: None,
        }
    );
    assert_eq!(converted.items[2].categories, vec!["c100", "c101", "c102"]);
    assert_eq!(converted.items[2].text, None);
    let report = &converted.report;
    assert_eq!(report.count("search_train.csv: rows"), Some(4));
    assert_eq!(
        report.count("search_train.csv: rows with a blank query (dropped)"),
        Some(1)
    );
    assert_eq!(
        report.count("search_train.csv: rows with fewer than 1 history notes (dropped)"),
        Some(1)
    );
    assert_eq!(
        report.count("search_test.csv: rows without a clicked note (dropped)"),
        Some(1)
    );
    assert_eq!(
        report.count("note references missing from notes.csv (removed)"),
        Some(1)
    );
}

#[test]
fn reference_style_filters_iterate_to_a_fixed_point() {
    let options = QilinOptions {
        filter: FilterOptions {
            min_requests_per_user_per_task: 2,
            require_both_tasks: true,
            k_core: 2,
        },
        ..QilinOptions::default()
    };
    let converted = convert(&fixture("qilin"), &options).unwrap();
    // User 200 has one rec request (< 2): dropped. Note 8 occurs once (< 2): removed, which leaves
    // its request without a target: dropped. Nothing else changes in the second round.
    let targets: Vec<Vec<u64>> = converted
        .requests
        .iter()
        .map(|request| request.targets.clone())
        .collect();
    assert_eq!(
        targets,
        vec![vec![3], vec![4], vec![1, 2], vec![2], vec![1]]
    );
    assert!(converted.requests.iter().all(|request| request.user == 100));
    let report = &converted.report;
    assert_eq!(
        report.count("requests dropped: user has fewer than 2 requests of that task"),
        Some(1)
    );
    assert_eq!(
        report.count("item references removed: item occurs fewer than 2 times (2-core)"),
        Some(1)
    );
    assert_eq!(
        report.count("requests dropped: no target left after the k-core"),
        Some(1)
    );
    assert_eq!(report.count("filter rounds until nothing changed"), Some(2));
    assert_eq!(
        converted
            .items
            .iter()
            .map(|item| item.id)
            .collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
}

#[test]
fn default_options_are_the_references_filters() {
    let options = QilinOptions::default();
    assert_eq!(
        options.filter,
        FilterOptions {
            min_requests_per_user_per_task: 3,
            require_both_tasks: true,
            k_core: 3
        }
    );
    assert_eq!(options.history.max_history, 20);
}

#[test]
fn malformed_cell_names_file_line_and_column() {
    let directory = common::scratch_dir("qilin-malformed");
    for file in ["notes.csv", "recommendation_train.csv"] {
        std::fs::copy(fixture(&format!("qilin/{file}")), directory.join(file)).unwrap();
    }
    std::fs::write(
        directory.join("search_train.csv"),
        "query,recent_clicked_note_idxs,search_result_details_with_idx,user_idx\nq,[1 2],\"[{'click': 1.0, 'search_timestamp': 5.0}]\",7\n",
    )
    .unwrap();
    let error = convert(&directory, &unfiltered()).unwrap_err().to_string();
    assert!(error.ends_with("search_train.csv:2: field \"search_result_details_with_idx\": impression 0 has no \"note_idx\""), "{error}");
}

/// A copy of the Qilin fixture in a scratch directory `name`, every table's text passed through
/// `edit`.
fn edited_fixture(name: &str, edit: impl Fn(&str) -> String) -> std::path::PathBuf {
    let directory = common::scratch_dir(name);
    for file in [
        "notes.csv",
        "recommendation_train.csv",
        "recommendation_test.csv",
        "search_test.csv",
        "search_train.csv",
    ] {
        let text = std::fs::read_to_string(fixture(&format!("qilin/{file}"))).unwrap();
        std::fs::write(directory.join(file), edit(&text)).unwrap();
    }
    directory
}

/// pandas may write clicks as booleans: `True` is a click, as `1.0` is; a click that is neither a
/// number, a boolean nor None is refused, naming the table, line and impression.
#[test]
fn boolean_clicks_count_and_other_clicks_are_refused() {
    let directory = edited_fixture("qilin-boolean-clicks", |text| {
        text.replace("'click': 1.0", "'click': True")
            .replace("'click': 0.0", "'click': False")
    });
    let expected = convert(&fixture("qilin"), &unfiltered()).unwrap();
    let converted = convert(&directory, &unfiltered()).unwrap();
    assert_eq!(converted.requests, expected.requests);
    let search = std::fs::read_to_string(directory.join("search_train.csv")).unwrap();
    std::fs::write(
        directory.join("search_train.csv"),
        search.replacen("'click': True", "'click': 'yes'", 1),
    )
    .unwrap();
    let error = convert(&directory, &unfiltered()).unwrap_err().to_string();
    assert!(
        error.contains("search_train.csv:")
            && error.contains("click Text(\"yes\") is not a number"),
        "{error}"
    );
}

#[test]
fn a_repeated_note_row_is_counted_and_the_first_kept() {
    let directory = edited_fixture("qilin-repeated-note", str::to_string);
    let mut notes = std::fs::read_to_string(directory.join("notes.csv")).unwrap();
    notes.push_str("Another title,,1.0,c100,,,2,[]\n");
    std::fs::write(directory.join("notes.csv"), notes).unwrap();
    let expected = convert(&fixture("qilin"), &unfiltered()).unwrap();
    let converted = convert(&directory, &unfiltered()).unwrap();
    let repeated = "notes.csv rows repeating a note (the first kept)";
    assert_eq!(expected.report.count(repeated), Some(0));
    assert_eq!(converted.report.count(repeated), Some(1));
    assert_eq!(
        converted.items, expected.items,
        "note 2 keeps its first title"
    );
}

#[test]
fn missing_tables_say_what_is_expected() {
    let directory = common::scratch_dir("qilin-missing");
    std::fs::copy(fixture("qilin/notes.csv"), directory.join("notes.csv")).unwrap();
    std::fs::copy(
        fixture("qilin/search_train.csv"),
        directory.join("search_train.csv"),
    )
    .unwrap();
    let error = convert(&directory, &unfiltered()).unwrap_err().to_string();
    assert!(
        error.contains("no rec table: expected recommendation_train.csv"),
        "{error}"
    );
}
