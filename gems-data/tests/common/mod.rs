//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};

use gems_data::{Request, Task};

/// A fresh, empty scratch directory for one test.
pub fn scratch_dir(name: &str) -> PathBuf {
    let directory =
        std::env::temp_dir().join(format!("gems-data-test-{}-{name}", std::process::id()));
    if directory.exists() {
        std::fs::remove_dir_all(&directory).expect("remove old scratch directory");
    }
    std::fs::create_dir_all(&directory).expect("create scratch directory");
    directory
}

/// The directory of a hand-made raw fixture (not every test file uses it).
#[allow(dead_code)]
pub fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

/// A request without negatives and with a typed (not proxy) query.
#[allow(dead_code)]
pub fn request(
    user: u64,
    task: Task,
    history: &[u64],
    query: Option<&str>,
    targets: &[u64],
    timestamp: i64,
) -> Request {
    Request {
        user,
        task,
        history: history.to_vec(),
        query: query.map(str::to_string),
        query_is_proxy: false,
        targets: targets.to_vec(),
        negatives: Vec::new(),
        timestamp,
        user_key: None,
    }
}

/// A scratch copy of the fixture directory `path` (files only, one level), for tests that
/// replace one of its files.
#[allow(dead_code)]
pub fn fixture_copy(path: &str, name: &str) -> PathBuf {
    let directory = scratch_dir(name);
    for entry in std::fs::read_dir(fixture(path)).expect("fixture directory") {
        let source = entry.expect("fixture entry").path();
        if source.is_file() {
            std::fs::copy(&source, directory.join(source.file_name().unwrap()))
                .expect("copy fixture file");
        }
    }
    directory
}
