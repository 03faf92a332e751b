//! Helpers shared by the integration tests: fixtures and their `transformers` reference outputs.
#![allow(dead_code)]

use std::path::PathBuf;

use burn::tensor::{Device, Tensor};
use gems_models::{Backbone, LmBatch};
use serde_json::Value;

/// Every golden fixture written by `scripts/make_fixtures.py`.
pub const FIXTURES: &[&str] = &[
    "t5-v1_0",
    "t5-v1_1",
    "qwen2-tied",
    "qwen2-untied",
    "t5-v1_0-f16",
    "qwen2-tied-bf16",
];

/// Directory of a fixture.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A fresh, empty scratch directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gems-models-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn device() -> Device {
    Device::flex()
}

/// The reference outputs of a fixture.
pub struct Reference(pub Value);

impl Reference {
    pub fn load(name: &str) -> Self {
        let text = std::fs::read_to_string(fixture(name).join("reference.json")).unwrap();
        Self(serde_json::from_str(&text).unwrap())
    }

    /// A 2-D integer array.
    pub fn ints(&self, key: &str) -> Vec<Vec<i64>> {
        serde_json::from_value(self.0[key].clone()).unwrap()
    }

    /// A 2-D integer array at any place of the reference.
    pub fn ints_at(&self, value: &Value) -> Vec<Vec<i64>> {
        serde_json::from_value(value.clone()).unwrap()
    }

    pub fn batch(&self, device: &Device) -> LmBatch {
        LmBatch::from_rows(
            &self.ints("input_ids"),
            &self.ints("attention_mask"),
            &self.ints("labels"),
            device,
        )
        .unwrap()
    }

    /// The prompts without padding (tokens where the mask is 1).
    pub fn prompts(&self) -> Vec<Vec<u32>> {
        let ids = self.ints("input_ids");
        let mask = self.ints("attention_mask");
        ids.iter()
            .zip(&mask)
            .map(|(i, m)| {
                i.iter()
                    .zip(m)
                    .filter(|(_, m)| **m == 1)
                    .map(|(t, _)| *t as u32)
                    .collect()
            })
            .collect()
    }
}

/// Flattens nested JSON arrays of numbers.
pub fn flatten(value: &Value) -> Vec<f32> {
    match value {
        Value::Array(items) => items.iter().flat_map(flatten).collect(),
        Value::Number(n) => vec![n.as_f64().unwrap() as f32],
        other => panic!("not a number: {other}"),
    }
}

pub fn values<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor.into_data().iter::<f32>().collect()
}

/// Largest absolute difference over the positions where `keep` is true.
pub fn max_abs_diff(a: &[f32], b: &[f32], keep: impl Fn(usize) -> bool) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .enumerate()
        .filter(|(i, _)| keep(*i))
        .map(|(_, (x, y))| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn load(name: &str) -> Backbone {
    Backbone::load(fixture(name), &device()).unwrap_or_else(|e| panic!("{name}: {e}"))
}
