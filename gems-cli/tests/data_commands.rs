//! `gems data convert|split|stats` through the real binary: every source's hand-made fixture
//! (from gems-data) converted, split and described, the synthetic dataset end to end, and bad
//! input, each ending in a non-zero exit and one line naming the file, line, field or option.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// Runs `gems` with `args`.
fn gems<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(args: I) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gems"))
        .args(args)
        .output()
        .expect("the gems binary runs")
}

/// Runs `gems`, asserts success and returns its standard output.
fn succeed<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(args: I) -> String {
    let output = gems(args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "gems failed with {}: {stderr}",
        output.status
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// Runs `gems`, asserts exit code 1 and a last standard-error line `error: ...` that is the only
/// error line, and returns that line.
fn fail<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(args: I) -> String {
    let output = gems(args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        output.status.code(),
        Some(1),
        "expected exit code 1: {stderr}"
    );
    let last = stderr.lines().last().unwrap_or_default().to_string();
    assert!(
        last.starts_with("error: "),
        "the last line is not the error: {stderr}"
    );
    assert_eq!(
        stderr
            .lines()
            .filter(|line| line.starts_with("error"))
            .count(),
        1,
        "{stderr}"
    );
    last
}

/// Runs `gems`, asserts a command-line usage error (exit code 2) and returns standard error.
fn usage_error<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(args: I) -> String {
    let output = gems(args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        output.status.code(),
        Some(2),
        "expected a usage error: {stderr}"
    );
    stderr
}

/// A raw fixture of gems-data.
fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../gems-data/tests/fixtures")
        .join(path)
}

fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

fn stats_json(directory: &Path) -> Value {
    serde_json::from_str(&succeed([
        OsStr::new("data"),
        OsStr::new("stats"),
        directory.as_os_str(),
        OsStr::new("--json"),
    ]))
    .expect("stats --json prints JSON")
}

fn read_jsonl(path: &Path) -> Vec<Value> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    text.lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect()
}

fn length(request: &Value, field: &str) -> u64 {
    request
        .get(field)
        .and_then(Value::as_array)
        .map_or(0, |values| values.len() as u64)
}

/// Recounts the files of `directory` independently and compares with `gems data stats --json`.
fn check_stats_against_files(directory: &Path, stats: &Value) {
    let split = directory.join("train.jsonl").exists();
    assert_eq!(stats["split"], split);
    let files: &[&str] = if split {
        &["train", "valid", "test"]
    } else {
        &["requests"]
    };
    assert_eq!(
        stats["items"],
        read_jsonl(&directory.join("items.jsonl")).len()
    );
    let mut users = HashSet::new();
    let mut histories = Vec::new();
    let (mut searches, mut proxies) = (0, 0);
    for file in files {
        let requests = read_jsonl(&directory.join(format!("{file}.jsonl")));
        let entry = &stats["requests"][*file];
        let count = |task: &str| {
            requests
                .iter()
                .filter(|request| request["task"] == task)
                .count()
        };
        assert_eq!(entry["search"], count("search"), "{file}");
        assert_eq!(entry["rec"], count("rec"), "{file}");
        assert_eq!(entry["total"], requests.len(), "{file}");
        let negatives: Vec<u64> = requests
            .iter()
            .map(|request| length(request, "negatives"))
            .collect();
        assert_eq!(
            entry["negatives_per_request"]["min"],
            negatives.iter().copied().min().unwrap_or(0),
            "{file}"
        );
        assert_eq!(
            entry["negatives_per_request"]["max"],
            negatives.iter().copied().max().unwrap_or(0),
            "{file}"
        );
        users.extend(
            requests
                .iter()
                .map(|request| request["user"].as_u64().unwrap()),
        );
        histories.extend(requests.iter().map(|request| length(request, "history")));
        searches += count("search");
        proxies += requests
            .iter()
            .filter(|request| request["query_is_proxy"] == true)
            .count();
    }
    assert_eq!(stats["users"], users.len());
    assert_eq!(
        stats["history_length"]["max"],
        histories.iter().copied().max().unwrap()
    );
    let mean = histories.iter().sum::<u64>() as f64 / histories.len() as f64;
    assert!((stats["history_length"]["mean"].as_f64().unwrap() - mean).abs() < 1e-9);
    assert_eq!(stats["queries"]["search_requests"], searches);
    assert_eq!(stats["queries"]["proxy"], proxies);
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(directory.join("dataset.json")).unwrap())
            .unwrap();
    assert_eq!(stats["name"], manifest["name"]);
    assert_eq!(stats["users"], manifest["counts"]["users"]);
}

/// Runs a `gems data` command that writes `directory`, checks that `files` are there and that
/// `gems data stats --json` agrees with the files; returns the command's output and the stats.
fn write_and_describe(arguments: &[&OsStr], directory: &Path, files: &[&str]) -> (String, Value) {
    let output = succeed(arguments);
    for file in files {
        assert!(directory.join(file).is_file(), "{file} missing");
    }
    let stats = stats_json(directory);
    check_stats_against_files(directory, &stats);
    (output, stats)
}

/// Converts `input` as `source` into a fresh directory, checks the unsplit stats, splits it in
/// place with `split_flags`, and returns the directory, the conversion's output and the split
/// stats (checked against the files).
fn convert_split_stats(
    workspace: &Path,
    source: &str,
    input: Option<&Path>,
    convert_flags: &[&str],
    split_flags: &[&str],
) -> (PathBuf, String, Value) {
    let directory = workspace.join(source);
    let mut arguments: Vec<&OsStr> = vec![
        OsStr::new("data"),
        OsStr::new("convert"),
        OsStr::new(source),
    ];
    arguments.extend(input.map(Path::as_os_str));
    arguments.extend([OsStr::new("--out"), directory.as_os_str()]);
    arguments.extend(convert_flags.iter().map(OsStr::new));
    let (converted, unsplit) = write_and_describe(
        &arguments,
        &directory,
        &["dataset.json", "items.jsonl", "requests.jsonl"],
    );
    assert!(converted.contains("conversion report"), "{converted}");

    let mut arguments: Vec<&OsStr> = vec![
        OsStr::new("data"),
        OsStr::new("split"),
        directory.as_os_str(),
    ];
    arguments.extend(split_flags.iter().map(OsStr::new));
    let (split, stats) = write_and_describe(
        &arguments,
        &directory,
        &["train.jsonl", "valid.jsonl", "test.jsonl"],
    );
    assert!(split.contains("split: leave-one-out by time"), "{split}");
    assert_eq!(stats["users"], unsplit["users"]);
    assert_eq!(
        stats["validation"]["requests_kept"],
        unsplit["requests"]["requests"]["total"]
    );
    (directory, converted, stats)
}

fn task_counts(stats: &Value, file: &str) -> (u64, u64) {
    (
        stats["requests"][file]["search"].as_u64().unwrap(),
        stats["requests"][file]["rec"].as_u64().unwrap(),
    )
}

#[test]
fn qilin_converts_splits_and_describes() {
    let workspace = scratch();
    let unfiltered = [
        "--min-requests-per-task",
        "0",
        "--require-both-tasks",
        "false",
        "--k-core",
        "0",
    ];
    let (_, report, stats) = convert_split_stats(
        workspace.path(),
        "qilin",
        Some(&fixture("qilin")),
        &unfiltered,
        &[],
    );
    assert!(
        report.contains("1  search_train.csv: rows with a blank query (dropped)"),
        "{report}"
    );
    assert_eq!(stats["items"], 5);
    assert_eq!(stats["users"], 2);
    // User 100 holds out one request per task; user 200's single rec request stays in train.
    assert_eq!(task_counts(&stats, "train"), (1, 2));
    assert_eq!(task_counts(&stats, "valid"), (1, 1));
    assert_eq!(task_counts(&stats, "test"), (1, 1));
    // Five items: every held-out request gets the items outside its targets and history.
    assert_eq!(stats["requests"]["test"]["negatives_per_request"]["max"], 2);
    assert_eq!(stats["targets_per_request"]["max"], 2);
    assert_eq!(stats["queries"]["proxy"], 0);
    assert_eq!(stats["validation"]["requests_read"], 7);
}

#[test]
fn qilin_reference_filters_that_leave_nothing_fail_naming_the_filters() {
    let workspace = scratch();
    let out = workspace.path().join("qilin");
    let error = fail([
        OsStr::new("data"),
        OsStr::new("convert"),
        OsStr::new("qilin"),
        fixture("qilin").as_os_str(),
        OsStr::new("--out"),
        out.as_os_str(),
    ]);
    assert!(
        error.contains("no request is left after conversion"),
        "{error}"
    );
    assert!(error.contains("--k-core"), "{error}");
    assert!(!out.exists());
}

#[test]
fn amazon_unisar_converts_splits_and_describes() {
    let workspace = scratch();
    let (_, report, stats) = convert_split_stats(
        workspace.path(),
        "amazon-unisar",
        Some(&fixture("amazon_unisar")),
        &["--timestamp-unit", "seconds"],
        &[
            "--min-requests-for-holdout",
            "2",
            "--negatives",
            "3",
            "--seed",
            "7",
        ],
    );
    assert!(report.contains("3  rec_train.pkl rows"), "{report}");
    assert_eq!(stats["items"], 5);
    // User 1 has two requests of each task (held out); user 2 one of each (train).
    assert_eq!(task_counts(&stats, "train"), (1, 1));
    assert_eq!(task_counts(&stats, "valid"), (1, 1));
    assert_eq!(task_counts(&stats, "test"), (1, 1));
    assert_eq!(stats["negatives_sampling"]["per_request"], 3);
    assert_eq!(stats["negatives_sampling"]["seed"], 7);
    assert_eq!(
        stats["requests"]["valid"]["negatives_per_request"]["max"],
        3
    );
}

#[test]
fn kuaisar_converts_splits_and_describes() {
    let workspace = scratch();
    let (_, report, stats) = convert_split_stats(
        workspace.path(),
        "kuaisar",
        Some(&fixture("kuaisar")),
        &[],
        &[],
    );
    assert!(
        report.contains("1  search sessions without a click (dropped)"),
        "{report}"
    );
    assert!(
        report.contains("1  clicked items missing from the item table (removed)"),
        "{report}"
    );
    assert_eq!(stats["items"], 3);
    assert_eq!(stats["users"], 2);
    assert_eq!(task_counts(&stats, "train"), (2, 1));
    assert_eq!(stats["requests"]["test"]["total"], 0);
    assert_eq!(stats["targets_per_request"]["max"], 2);
}

#[test]
fn movielens_detects_each_layout_and_marks_proxy_queries() {
    for (layout, description) in [
        (
            "grouplens-100k",
            "MovieLens layout: GroupLens ml-100k (u.data + u.item)",
        ),
        (
            "grouplens-1m",
            "MovieLens layout: GroupLens ml-1m (ratings.dat + movies.dat)",
        ),
        (
            "recbole",
            "MovieLens layout: RecBole (ml-1m.inter + ml-1m.item)",
        ),
    ] {
        let workspace = scratch();
        let input = fixture(&format!("movielens/{layout}"));
        let (_, report, stats) = convert_split_stats(
            workspace.path(),
            "movielens",
            Some(&input),
            &["--seed", "2026"],
            &[],
        );
        assert!(report.starts_with(description), "{report}");
        assert!(report.contains("6  ratings read"), "{report}");
        assert_eq!(stats["items"], 4, "{layout}");
        assert_eq!(stats["users"], 2, "{layout}");
        assert_eq!(
            stats["queries"]["search_requests"], stats["queries"]["proxy"],
            "{layout}"
        );
        let notes = stats["notes"].to_string();
        assert!(notes.contains("queries are proxies"), "{notes}");
    }
    let workspace = scratch();
    let (_, _, stats) = convert_split_stats(
        workspace.path(),
        "movielens",
        Some(&fixture("movielens/grouplens-1m")),
        &["--search-fraction", "0"],
        &[],
    );
    assert_eq!(stats["queries"]["search_requests"], 0);
}

/// A CSV line that is not UTF-8 is read as Latin-1 with one warning naming its file and line;
/// GroupLens' MovieLens files, Latin-1 by design, give none.
#[test]
fn lines_that_are_not_utf8_are_read_as_latin1_with_a_warning() {
    let workspace = scratch();
    let input = workspace.path().join("raw");
    std::fs::create_dir_all(&input).unwrap();
    for file in ["src_inter.csv", "rec_inter.csv", "item_features.csv"] {
        std::fs::copy(fixture(&format!("kuaisar/{file}")), input.join(file)).unwrap();
    }
    let items = std::fs::read_to_string(input.join("item_features.csv")).unwrap();
    let (before, after) = items.split_once("Funny joke").unwrap();
    let mut bytes = format!("{before}Funny jok").into_bytes();
    bytes.push(0xe9); // é in Latin-1, never valid alone in UTF-8
    bytes.extend_from_slice(after.as_bytes());
    std::fs::write(input.join("item_features.csv"), bytes).unwrap();
    let out = workspace.path().join("converted");
    let output = gems([
        OsStr::new("data"),
        OsStr::new("convert"),
        OsStr::new("kuaisar"),
        input.as_os_str(),
        OsStr::new("--out"),
        out.as_os_str(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(stderr.matches("not UTF-8").count(), 1, "{stderr}");
    assert!(
        stderr.contains("item_features.csv:2: not UTF-8"),
        "{stderr}"
    );
    let converted = std::fs::read_to_string(out.join("items.jsonl")).unwrap();
    assert!(converted.contains("Funny joké"), "{converted}");

    let out = workspace.path().join("movielens");
    let output = gems([
        OsStr::new("data"),
        OsStr::new("convert"),
        OsStr::new("movielens"),
        fixture("movielens/grouplens-100k").as_os_str(),
        OsStr::new("--out"),
        out.as_os_str(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("not UTF-8"), "{stderr}");
}

#[test]
fn synthetic_end_to_end() {
    let workspace = scratch();
    let (directory, report, stats) =
        convert_split_stats(workspace.path(), "synthetic", None, &[], &[]);
    assert!(report.contains("300  users generated"), "{report}");
    assert_eq!(stats["items"], 480);
    assert_eq!(stats["users"], 300);
    // Every user has at least three requests of each task: one of each in valid and in test.
    assert_eq!(task_counts(&stats, "valid"), (300, 300));
    assert_eq!(task_counts(&stats, "test"), (300, 300));
    for file in ["valid", "test"] {
        assert_eq!(stats["requests"][file]["negatives_per_request"]["min"], 99);
        assert_eq!(stats["requests"][file]["negatives_per_request"]["max"], 99);
    }
    assert_eq!(
        stats["requests"]["train"]["negatives_per_request"]["max"],
        0
    );
    assert_eq!(stats["history_length"]["max"], 20);
    assert_eq!(stats["validation"]["policy"], "filter");
    assert_eq!(stats["queries"]["proxy"], 0);

    let text = succeed([
        OsStr::new("data"),
        OsStr::new("stats"),
        directory.as_os_str(),
    ]);
    assert!(text.starts_with("synthetic (split) at "), "{text}");
    assert!(
        text.contains("  valid          300       300       600   99 / 99.00 / 99"),
        "{text}"
    );

    let small = workspace.path().join("small");
    succeed([
        "data",
        "convert",
        "synthetic",
        "--out",
        small.to_str().unwrap(),
        "--users",
        "40",
        "--categories",
        "4",
        "--items-per-category",
        "10",
        "--seed",
        "7",
    ]);
    let stats = stats_json(&small);
    check_stats_against_files(&small, &stats);
    assert_eq!(stats["items"], 40);
    assert_eq!(stats["users"], 40);
    assert_eq!(stats["split"], false);
}

#[test]
fn split_into_another_directory_leaves_the_input_unsplit() {
    let workspace = scratch();
    let converted = workspace.path().join("converted");
    let prepared = workspace.path().join("prepared");
    succeed([
        "data",
        "convert",
        "kuaisar",
        fixture("kuaisar").to_str().unwrap(),
        "--out",
        converted.to_str().unwrap(),
    ]);
    succeed([
        "data",
        "split",
        converted.to_str().unwrap(),
        "--out",
        prepared.to_str().unwrap(),
    ]);
    assert!(!converted.join("train.jsonl").exists());
    assert!(prepared.join("train.jsonl").is_file());
    check_stats_against_files(&prepared, &stats_json(&prepared));
}

#[test]
fn missing_input_directory_is_named() {
    let workspace = scratch();
    let missing = workspace.path().join("no-such-dir");
    let error = fail([
        "data",
        "convert",
        "kuaisar",
        missing.to_str().unwrap(),
        "--out",
        workspace.path().join("out").to_str().unwrap(),
    ]);
    assert!(
        error.contains(missing.to_str().unwrap()) && error.contains("INPUT"),
        "{error}"
    );
    let error = fail(["data", "stats", missing.to_str().unwrap()]);
    assert!(
        error.contains(missing.to_str().unwrap()) && error.contains("DIRECTORY"),
        "{error}"
    );
    let error = fail(["data", "split", missing.to_str().unwrap()]);
    assert!(error.contains(missing.to_str().unwrap()), "{error}");
}

#[test]
fn unknown_source_is_a_usage_error() {
    let stderr = usage_error(["data", "convert", "netflix", "somewhere", "--out", "out"]);
    assert!(
        stderr.contains("invalid value 'netflix' for '<SOURCE>'"),
        "{stderr}"
    );
    assert!(
        stderr.contains("qilin, amazon-unisar, kuaisar, movielens, synthetic"),
        "{stderr}"
    );
}

#[test]
fn unknown_flag_values_are_usage_errors() {
    // With no negatives every sampled metric would be 1, validation's included.
    let stderr = usage_error(["data", "split", "somewhere", "--negatives", "0"]);
    assert!(
        stderr.contains("--negatives") && stderr.contains("at least 1"),
        "{stderr}"
    );
    let stderr = usage_error(["data", "split", "somewhere", "--on-invalid", "lenient"]);
    assert!(
        stderr.contains("invalid value 'lenient' for '--on-invalid <ON_INVALID>'"),
        "{stderr}"
    );
    let stderr = usage_error([
        "data",
        "convert",
        "movielens",
        "somewhere",
        "--out",
        "out",
        "--search-fraction",
        "1.5",
    ]);
    assert!(
        stderr.contains("--search-fraction") && stderr.contains("between 0 and 1"),
        "{stderr}"
    );
    let stderr = usage_error([
        "data",
        "convert",
        "synthetic",
        "--out",
        "out",
        "--categories",
        "17",
    ]);
    assert!(stderr.contains("--categories"), "{stderr}");
    let stderr = usage_error([
        "data",
        "convert",
        "kuaisar",
        "somewhere",
        "--out",
        "out",
        "--max-history",
        "0",
    ]);
    assert!(
        stderr.contains("--max-history") && stderr.contains("at least 1"),
        "{stderr}"
    );
}

#[test]
fn flags_and_input_must_fit_the_source() {
    let workspace = scratch();
    let out = workspace.path().join("out");
    let qilin = fixture("qilin");
    let error = fail([
        "data",
        "convert",
        "qilin",
        qilin.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--timestamp-unit",
        "seconds",
    ]);
    assert!(
        error.contains("--timestamp-unit applies to amazon-unisar only, not to qilin"),
        "{error}"
    );
    let error = fail([
        "data",
        "convert",
        "synthetic",
        "--out",
        out.to_str().unwrap(),
        "--k-core",
        "2",
    ]);
    assert!(
        error.contains("--k-core applies to qilin, amazon-unisar, kuaisar, movielens only"),
        "{error}"
    );
    let error = fail([
        "data",
        "convert",
        "synthetic",
        qilin.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(error.contains("synthetic takes no INPUT"), "{error}");
    let error = fail(["data", "convert", "qilin", "--out", out.to_str().unwrap()]);
    assert!(error.contains("qilin needs INPUT"), "{error}");
    let error = fail([
        "data",
        "convert",
        "movielens",
        fixture("kuaisar").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(error.contains("not a MovieLens directory"), "{error}");
    assert!(!out.exists());
}

/// A converted KuaiSAR directory to break.
fn converted_kuaisar(workspace: &Path) -> PathBuf {
    let directory = workspace.join("kuaisar");
    succeed([
        "data",
        "convert",
        "kuaisar",
        fixture("kuaisar").to_str().unwrap(),
        "--out",
        directory.to_str().unwrap(),
    ]);
    directory
}

#[test]
fn malformed_items_line_names_file_and_line() {
    let workspace = scratch();
    let directory = converted_kuaisar(workspace.path());
    let items = directory.join("items.jsonl");
    let mut lines: Vec<String> = std::fs::read_to_string(&items)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    lines[1] = r#"{"id": 102, "title": }"#.to_string();
    std::fs::write(&items, lines.join("\n") + "\n").unwrap();
    let error = fail(["data", "split", directory.to_str().unwrap()]);
    assert!(
        error.contains(&format!("{}:2: not valid JSON", items.display())),
        "{error}"
    );
    let error = fail(["data", "stats", directory.to_str().unwrap()]);
    assert!(
        error.contains(&format!("{}:2: not valid JSON", items.display())),
        "{error}"
    );

    lines[1] = r#"{"id": 102, "titel": "x"}"#.to_string();
    std::fs::write(&items, lines.join("\n") + "\n").unwrap();
    let error = fail(["data", "split", directory.to_str().unwrap()]);
    assert!(
        error.contains(&format!(
            "{}:2: field \"titel\": unknown field",
            items.display()
        )),
        "{error}"
    );
}

#[test]
fn unknown_item_under_strict_policy_names_the_request_line_and_filter_repairs_it() {
    let workspace = scratch();
    let directory = converted_kuaisar(workspace.path());
    let requests = directory.join("requests.jsonl");
    let mut lines: Vec<Value> = read_jsonl(&requests);
    lines[2]["targets"] = serde_json::json!([999]);
    let text: String = lines.iter().map(|line| format!("{line}\n")).collect();
    std::fs::write(&requests, text).unwrap();

    let error = fail(["data", "split", directory.to_str().unwrap()]);
    assert!(
        error.contains(&format!(
            "{}:3: field \"targets\": item 999 is not in the catalogue",
            requests.display()
        )),
        "{error}"
    );
    assert!(error.contains("--on-invalid filter"), "{error}");
    assert!(!directory.join("train.jsonl").exists());
    let error = fail([
        "data",
        "stats",
        directory.to_str().unwrap(),
        "--on-invalid",
        "strict",
    ]);
    assert!(
        error.contains("item 999 is not in the catalogue"),
        "{error}"
    );

    let stats = stats_json(&directory);
    assert_eq!(
        stats["validation"]["issues"]["unknown_target_item"]["occurrences"],
        1
    );
    assert_eq!(stats["validation"]["requests_kept"], 2);

    let output = succeed([
        "data",
        "split",
        directory.to_str().unwrap(),
        "--on-invalid",
        "filter",
    ]);
    assert!(
        output.contains(
            "1  targets not in the catalogue (target removed (request dropped if none is left))"
        ),
        "{output}"
    );
    let stats = stats_json(&directory);
    assert_eq!(stats["requests"]["train"]["total"], 2);
    let notes = stats["notes"].to_string();
    assert!(
        notes.contains("validation: 1 targets not in the catalogue"),
        "{notes}"
    );
}

#[test]
fn output_in_the_way_is_refused() {
    let workspace = scratch();
    let file = workspace.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let error = fail([
        "data",
        "convert",
        "synthetic",
        "--out",
        file.to_str().unwrap(),
    ]);
    assert_eq!(
        error,
        format!(
            "error: --out {}: exists and is not a directory",
            file.display()
        )
    );
    let below_file = file.join("data");
    let error = fail([
        "data",
        "convert",
        "synthetic",
        "--out",
        below_file.to_str().unwrap(),
    ]);
    assert!(
        error.contains(&format!("{}: cannot create", below_file.display())),
        "{error}"
    );

    let directory = converted_kuaisar(workspace.path());
    let error = fail([
        "data",
        "convert",
        "synthetic",
        "--out",
        directory.to_str().unwrap(),
    ]);
    assert!(error.contains("the directory is not empty"), "{error}");
    let other = workspace.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "mine").unwrap();
    let error = fail([
        "data",
        "split",
        directory.to_str().unwrap(),
        "--out",
        other.to_str().unwrap(),
    ]);
    assert!(error.contains("the directory is not empty"), "{error}");
    // --out naming DIRECTORY itself splits in place, like no --out.
    succeed([
        "data",
        "split",
        directory.to_str().unwrap(),
        "--out",
        directory.join(".").to_str().unwrap(),
    ]);
    let error = fail(["data", "split", directory.to_str().unwrap()]);
    assert!(
        error.contains("already split (train.jsonl exists)"),
        "{error}"
    );

    // Folders of the user's under the names of the temporary copies are never touched.
    let out = workspace.path().join("new");
    for suffix in ["old", "partial"] {
        let theirs = workspace.path().join(format!("new.{suffix}"));
        std::fs::create_dir(&theirs).unwrap();
        std::fs::write(theirs.join("precious.txt"), "mine").unwrap();
        let error = fail([
            "data",
            "convert",
            "synthetic",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(error.contains("in the way"), "{error}");
        assert_eq!(
            std::fs::read_to_string(theirs.join("precious.txt")).unwrap(),
            "mine"
        );
        assert!(!out.exists());
        // Nor taken for the copy an interrupted split left aside.
        fail(["data", "split", out.to_str().unwrap()]);
        assert!(theirs.join("precious.txt").is_file() && !out.exists());
        std::fs::remove_dir_all(&theirs).unwrap();
    }
}
