//! UniSAR's Amazon pickles, decoded in Rust: DataFrames written by pandas 3 (protocols 4 and 5),
//! pandas 1.5 (protocol 4), the pre-1.4 block-manager layout (protocol 2) and a `to_dict` pickle.
//! The fixture's pickles are made by `tests/fixtures/amazon_unisar/make_fixture.py`.

mod common;

use common::{fixture, request};
use gems_data::Task;
use gems_data::convert::amazon_unisar::{AmazonUnisarOptions, convert};

#[test]
fn converts_every_pickle_layout_into_exact_requests() {
    let converted = convert(&fixture("amazon_unisar"), &AmazonUnisarOptions::default()).unwrap();
    let expected = vec![
        // User 1: rec 11 (t=100, history only), search 13 "5 6" (pandas 1.5 pickle), rec 12,
        // rec 14 (protocol-4 pickle), search 15 "7" (pre-1.4 layout, protocol 2).
        request(1, Task::Search, &[11], Some("5 6"), &[13], 1400000200),
        request(1, Task::Rec, &[11, 13], None, &[12], 1400000300),
        request(1, Task::Rec, &[11, 13, 12], None, &[14], 1400000400),
        request(
            1,
            Task::Search,
            &[11, 13, 12, 14],
            Some("7"),
            &[15],
            1400000500,
        ),
        // User 2: rec 11, search 12 with the keyword stored as the text "[8, 9]" and a float ts,
        // rec 13 from a to_dict(orient="index") pickle.
        request(2, Task::Search, &[11], Some("8 9"), &[12], 1400000250),
        request(2, Task::Rec, &[11, 12], None, &[13], 1400000350),
    ];
    assert_eq!(converted.requests, expected);
    let ids: Vec<u64> = converted.items.iter().map(|item| item.id).collect();
    assert_eq!(ids, vec![11, 12, 13, 14, 15]);
    assert_eq!(converted.items[0].title, "item 11");
    assert_eq!(converted.report.count("rec_train.pkl rows"), Some(3));
    assert_eq!(converted.report.count("src_test.pkl rows"), Some(1));
}

#[test]
fn unreadable_or_incomplete_pickles_are_explained() {
    let directory = common::scratch_dir("unisar-broken");
    let dataset = directory.join("dataset");
    std::fs::create_dir_all(&dataset).unwrap();
    for name in [
        "rec_train",
        "rec_val",
        "rec_test",
        "src_train",
        "src_val",
        "src_test",
    ] {
        std::fs::copy(
            fixture(&format!("amazon_unisar/dataset/{name}.pkl")),
            dataset.join(format!("{name}.pkl")),
        )
        .unwrap();
    }
    // A numpy type code that is empty, or whose first character is not one ASCII letter.
    let original = std::fs::read(dataset.join("rec_train.pkl")).unwrap();
    let code = original
        .windows(4)
        .position(|w| w == b"\x8c\x02i8")
        .expect("the fixture's int64 dtype");
    for (replacement, shown) in [
        (&b"\x8c\x00"[..], "\"\""),
        (b"\x8c\x03\xc3\xa98", "\"\u{e9}8\""),
    ] {
        let mut bytes = original[..code].to_vec();
        bytes.extend_from_slice(replacement);
        bytes.extend_from_slice(&original[code + 4..]);
        std::fs::write(dataset.join("rec_train.pkl"), bytes).unwrap();
        let error = convert(&directory, &AmazonUnisarOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("rec_train.pkl")
                && error.contains(&format!("numpy dtype {shown} is not supported")),
            "{error}"
        );
    }
    std::fs::write(dataset.join("rec_train.pkl"), original).unwrap();

    std::fs::write(dataset.join("rec_val.pkl"), b"\x80\x04\x95").unwrap();
    let error = convert(&directory, &AmazonUnisarOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("rec_val.pkl: not a readable pickle: the pickle ends early"),
        "{error}"
    );
    std::fs::remove_file(dataset.join("rec_val.pkl")).unwrap();
    let error = convert(&directory, &AmazonUnisarOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("rec_val.pkl: missing; UniSAR's Amazon folder holds"),
        "{error}"
    );
}
