//! What the test programs of the `gems` binary share: running it, and a small dataset.

// Each test program uses a part of these helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `gems` binary of this build.
pub const GEMS: &str = env!("CARGO_BIN_EXE_gems");

/// Runs `gems args` with warnings only on standard error.
pub fn gems(args: &[&str]) -> Output {
    Command::new(GEMS)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the gems binary runs")
}

/// Runs `gems args`, expects success and returns standard output.
pub fn succeed(args: &[&str]) -> String {
    let output = gems(args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "gems {args:?} failed:\n{stderr}");
    String::from_utf8(output.stdout).expect("utf-8 output")
}

/// A split synthetic dataset of 30 users and 40 items in `folder/data`.
pub fn small_synthetic(folder: &Path) -> PathBuf {
    let data = folder.join("data");
    let data_arg = data.to_str().unwrap();
    succeed(&[
        "data",
        "convert",
        "synthetic",
        "--out",
        data_arg,
        "--users",
        "30",
        "--categories",
        "4",
        "--items-per-category",
        "10",
    ]);
    succeed(&["data", "split", data_arg]);
    data
}
