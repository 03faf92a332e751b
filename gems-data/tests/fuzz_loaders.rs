//! Fuzzing every loader of gems-data through its public entry point (issue 10): pickles and
//! DataFrames (UniSAR's Amazon), CSV tables and the Python literals in their cells (Qilin,
//! KuaiSAR), MovieLens' three layouts, and the unified format's JSONL files and manifest. Each
//! target mutates a seed corpus of valid files (the converters' fixtures, plus the `to_dict()`
//! pickles of `tests/fuzz-corpus`) and must get `Ok` or `Err` back: never a panic, a stack overflow
//! or an absurd allocation (see `common/mutation.rs`). `GEMS_FUZZ_CASES=100000 cargo test --release
//! -p gems-data --test fuzz_loaders -- --nocapture` fuzzes longer.

mod common;
#[path = "common/mutation.rs"]
mod mutation;

use std::path::{Path, PathBuf};

use common::{fixture_copy, scratch_dir};
use gems_data::ValidationPolicy;
use gems_data::convert::amazon_unisar::{self, AmazonUnisarOptions};
use gems_data::convert::kuaisar::{self, KuaiSarOptions};
use gems_data::convert::movielens::{self, MovieLensOptions};
use gems_data::convert::qilin::{self, QilinOptions};
use gems_data::dataset::{self, PrepareOptions, prepare};
use gems_data::synthetic::{SyntheticConfig, generate};
use mutation::{CappedAllocator, apply, fuzz, fuzz_values, mutation};
use proptest::prelude::*;

#[global_allocator]
static ALLOCATOR: CappedAllocator = CappedAllocator;

/// Cases per target when `GEMS_FUZZ_CASES` is not set: a few seconds each in release.
const CASES: u32 = 1500;

/// The files of `directory` (sorted by name), with their content.
fn files_of(directory: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(directory)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .map(|path| {
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&path).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

/// Fuzzes a converter over the files of the fixture directories `layouts`: each case writes one
/// mutated file into a scratch copy of its directory and runs `convert` there.
fn fuzz_directories(
    name: &str,
    layouts: &[&str],
    convert: impl Fn(&Path) -> gems_data::Result<()>,
) -> usize {
    let mut copies: Vec<PathBuf> = Vec::new();
    let mut targets: Vec<(usize, String)> = Vec::new();
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    for (layout, path) in layouts.iter().enumerate() {
        let copy = fixture_copy(path, &format!("fuzz-{name}-{layout}"));
        convert(&copy).unwrap_or_else(|error| panic!("the seed {path} must convert: {error}"));
        for (file, bytes) in files_of(&copy) {
            targets.push((layout, file));
            seeds.push(bytes);
        }
        copies.push(copy);
    }
    fuzz(name, &seeds, CASES, |seed, input| {
        let (layout, file) = &targets[seed];
        let path = copies[*layout].join(file);
        std::fs::write(&path, input).unwrap();
        let accepted = convert(&copies[*layout]).is_ok();
        std::fs::write(&path, &seeds[seed]).unwrap();
        accepted
    })
}

#[test]
fn fuzz_pickles_and_dataframes() {
    // Every seed, mutated, becomes rec_train.pkl (the first file read) next to valid others.
    let directory = fixture_copy("amazon_unisar/dataset", "fuzz-pickles");
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-corpus/pickle");
    let seeds: Vec<Vec<u8>> = files_of(&directory)
        .into_iter()
        .chain(files_of(&corpus))
        .map(|(_, bytes)| bytes)
        .collect();
    let convert = || amazon_unisar::convert(&directory, &AmazonUnisarOptions::default());
    for seed in &seeds {
        std::fs::write(directory.join("rec_train.pkl"), seed).unwrap();
        convert().expect("every pickle seed is a valid rec_train.pkl");
    }
    fuzz(
        "pickle+dataframe (amazon-unisar)",
        &seeds,
        CASES,
        |_, input| {
            std::fs::write(directory.join("rec_train.pkl"), input).unwrap();
            convert().is_ok()
        },
    );
}

#[test]
fn fuzz_qilin_csv_tables() {
    fuzz_directories("csv+literal (qilin)", &["qilin"], |directory| {
        let options = QilinOptions {
            filter: Default::default(),
            ..QilinOptions::default()
        };
        qilin::convert(directory, &options).map(drop)
    });
}

#[test]
fn fuzz_kuaisar_csv_tables() {
    fuzz_directories("csv+literal (kuaisar)", &["kuaisar"], |directory| {
        kuaisar::convert(directory, &KuaiSarOptions::default()).map(drop)
    });
}

#[test]
fn fuzz_movielens_layouts() {
    let layouts = [
        "movielens/grouplens-100k",
        "movielens/grouplens-1m",
        "movielens/recbole",
        "movielens/recbole-tokens",
    ];
    fuzz_directories("csv (movielens)", &layouts, |directory| {
        movielens::convert(directory, &MovieLensOptions::default()).map(drop)
    });
}

#[test]
fn fuzz_unified_jsonl_files() {
    let directory = scratch_dir("fuzz-jsonl-seed");
    let converted = generate(&SyntheticConfig {
        users: 3,
        categories: 2,
        items_per_category: 4,
        ..SyntheticConfig::default()
    })
    .unwrap();
    dataset::write_converted(&converted, &directory).unwrap();
    let (prepared, _) = prepare(converted, PrepareOptions::default()).unwrap();
    prepared.write(&directory).unwrap();
    let directory_name = directory.to_string_lossy().into_owned();
    fuzz_directories("jsonl (unified format)", &[&directory_name], |directory| {
        for policy in [ValidationPolicy::Strict, ValidationPolicy::Filter] {
            let _ = dataset::load_dataset(directory, policy);
            let _ = dataset::load_converted(directory, policy);
        }
        dataset::load_dataset(directory, ValidationPolicy::Strict).map(drop)
    });
}

/// Python literals as pandas prints them into cells: numbers, strings with escapes, `nan`,
/// lists, tuples, dicts, numpy prints without commas and `array(...)`, nested.
fn literal() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(|number| number.to_string()),
        any::<f64>().prop_map(|number| format!("{number:e}")),
        "[a-z0-9 '\\\\\"_]{0,8}".prop_map(|text| format!("'{text}'")),
        prop::sample::select(vec![
            "nan", "None", "True", "false", "null", "inf", "-inf", "...", "", "-", "1.", "'",
        ])
        .prop_map(str::to_string),
    ];
    leaf.prop_recursive(8, 96, 6, |inner| {
        let separator = prop::sample::select(vec![", ", " ", "\n ", ",", ""]);
        prop_oneof![
            (
                prop::collection::vec(inner.clone(), 0..6),
                separator.clone()
            )
                .prop_map(|(elements, separator)| format!("[{}]", elements.join(separator))),
            (
                prop::collection::vec(inner.clone(), 0..4),
                separator.clone()
            )
                .prop_map(|(elements, separator)| format!("({})", elements.join(separator))),
            (
                prop::collection::vec((inner.clone(), inner.clone()), 0..4),
                separator
            )
                .prop_map(|(entries, separator)| {
                    let entries: Vec<String> = entries
                        .into_iter()
                        .map(|(key, value)| format!("{key}: {value}"))
                        .collect();
                    format!("{{{}}}", entries.join(separator))
                }),
            inner.prop_map(|element| format!("array({element}, dtype=object)")),
        ]
    })
}

#[test]
fn fuzz_python_literal_cells() {
    // Generated (and then mutated) cells as the history and impressions of a Qilin row.
    let directory = fixture_copy("qilin", "fuzz-literals");
    let path = directory.join("recommendation_train.csv");
    let table = std::fs::read_to_string(&path).unwrap();
    let (header, rest) = table.split_once('\n').unwrap();
    let columns: Vec<String> = header.split(',').map(str::to_string).collect();
    let quote = |cell: &[u8]| {
        let mut quoted = b"\"".to_vec();
        for &byte in cell {
            if byte == b'"' {
                quoted.push(b'"');
            }
            quoted.push(byte);
        }
        quoted.push(b'"');
        quoted
    };
    let strategy = (
        literal(),
        literal(),
        prop::collection::vec(mutation(), 0..4),
    );
    fuzz_values(
        "python literal (qilin cells)",
        strategy,
        CASES,
        |(history, details, mutations)| {
            let details =
                format!("[{{'note_idx': 1, 'click': 1, 'request_timestamp': 5, 'x': {details}}}]");
            let history = apply(
                history.as_bytes(),
                &[details.clone().into_bytes()],
                &mutations,
            );
            let mut row: Vec<Vec<u8>> = Vec::new();
            for column in &columns {
                row.push(match column.as_str() {
                    "recent_clicked_note_idxs" => quote(&history),
                    "rec_result_details_with_idx" => quote(details.as_bytes()),
                    _ => b"1".to_vec(),
                });
            }
            let mut file = format!("{header}\n").into_bytes();
            file.extend(row.join(&b","[..]));
            file.push(b'\n');
            file.extend_from_slice(rest.as_bytes());
            std::fs::write(&path, file).unwrap();
            qilin::convert(&directory, &QilinOptions::default()).is_ok()
        },
    );
}
