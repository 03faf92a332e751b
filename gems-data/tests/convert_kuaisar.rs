//! KuaiSAR converter on a hand-made raw fixture.

mod common;

use common::{fixture, request};
use gems_data::convert::kuaisar::{KuaiSarOptions, convert};
use gems_data::{Item, Task};

#[test]
fn converts_logs_into_exact_requests_and_items() {
    let converted = convert(&fixture("kuaisar"), &KuaiSarOptions::default()).unwrap();
    let expected = vec![
        // User 1: rec 101 (no history: history only), search session 7 (clicked 102 and the
        // profile 900, which is not an item), rec 103. The unclicked rec row of 102 is no interaction.
        request(1, Task::Search, &[101], Some("20 34 3"), &[102], 1684742040),
        request(1, Task::Rec, &[101, 102], None, &[103], 1684742100),
        // User 2: rec 102, session 8 without a click (dropped), session 9 with two clicks.
        request(
            2,
            Task::Search,
            &[102],
            Some("9 10"),
            &[103, 101],
            1684743500,
        ),
    ];
    assert_eq!(converted.requests, expected);
    let item = |id, title: &str, categories: &[&str]| Item {
        id,
        title: title.to_string(),
        text: None,
        categories: categories.iter().map(|name| name.to_string()).collect(),
        key: None,
    };
    assert_eq!(
        converted.items,
        vec![
            item(101, "1 213 24", &["Funny", "Funny joke"]),
            item(102, "5 6", &["Food", "Food tutorial"]),
            item(103, "", &["Funny"])
        ]
    );
    let report = &converted.report;
    assert_eq!(
        report.count("rec_inter.csv rows without a click (not interactions)"),
        Some(1)
    );
    assert_eq!(
        report.count("search sessions without a click (dropped)"),
        Some(1)
    );
    assert_eq!(
        report.count("clicked items missing from the item table (removed)"),
        Some(1)
    );
    assert_eq!(
        report.count("catalogue entries never referenced by a request (left out)"),
        Some(1)
    );
}

#[test]
fn missing_column_lists_the_header() {
    let directory = common::scratch_dir("kuaisar-missing-column");
    for file in ["item_features.csv", "rec_inter.csv"] {
        std::fs::copy(fixture(&format!("kuaisar/{file}")), directory.join(file)).unwrap();
    }
    std::fs::write(
        directory.join("src_inter.csv"),
        "user_id,search_session_id,keyword,item_id,click_cnt\n",
    )
    .unwrap();
    let error = convert(&directory, &KuaiSarOptions::default())
        .unwrap_err()
        .to_string();
    assert!(error.contains("src_inter.csv: missing column \"search_session_timestamp\"; the header has: user_id, search_session_id"), "{error}");
}

#[test]
fn a_short_item_row_names_the_category_column_it_lacks() {
    let directory = common::scratch_dir("kuaisar-short-item-row");
    for file in ["src_inter.csv", "rec_inter.csv"] {
        std::fs::copy(fixture(&format!("kuaisar/{file}")), directory.join(file)).unwrap();
    }
    let items = std::fs::read_to_string(fixture("kuaisar/item_features.csv")).unwrap();
    let header = items.lines().next().unwrap();
    // Item 104's row stops before its first category name (the 9th column).
    let short = "104,\"[7]\",12,NORMAL,2023-04-22,LongImport,9,搞笑";
    std::fs::write(
        directory.join("item_features.csv"),
        format!("{items}{short}\n"),
    )
    .unwrap();
    assert!(header.contains("first_level_category_name_en"));
    let error = convert(&directory, &KuaiSarOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("item_features.csv")
            && error.contains("first_level_category_name_en")
            && error.contains("8 fields"),
        "{error}"
    );
}
