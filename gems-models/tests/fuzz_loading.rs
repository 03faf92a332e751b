//! Fuzzing the model loaders (issue 10): `config.json` (both transformers styles, T5 and Qwen2),
//! the safetensors header of single-file and sharded checkpoints, and the shard index, mutated
//! (bit flips, truncations, splices, huge numbers), must load or be refused with an error, never
//! panic or allocate absurdly. The fixtures' own files are the seeds.

mod common;
#[path = "../../gems-data/tests/common/mutation.rs"]
mod mutation;

use std::path::{Path, PathBuf};

use common::{FIXTURES, device, fixture, scratch};
use gems_models::{Backbone, ModelConfig, WEIGHTS_FILE};
use mutation::{CappedAllocator, fuzz};

#[global_allocator]
static ALLOCATOR: CappedAllocator = CappedAllocator;

/// A scratch copy of a fixture's files.
fn copy_of(name: &str, label: &str) -> PathBuf {
    let directory = scratch(label);
    for entry in std::fs::read_dir(fixture(name)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, directory.join(path.file_name().unwrap())).unwrap();
    }
    directory
}

#[test]
fn fuzz_config_json() {
    let seeds: Vec<Vec<u8>> = FIXTURES
        .iter()
        .map(|name| std::fs::read(fixture(name).join("config.json")).unwrap())
        .collect();
    let directory = scratch("fuzz-config");
    let path = directory.join("config.json");
    for seed in &seeds {
        ModelConfig::from_json(&String::from_utf8_lossy(seed), &path).expect("every seed parses");
    }
    fuzz("config.json (gems-models)", &seeds, 3000, |_, input| {
        let _ = ModelConfig::from_json(&String::from_utf8_lossy(input), &path);
        std::fs::write(&path, input).unwrap();
        let Ok(config) = ModelConfig::from_file(&path) else {
            return false;
        };
        // What a loaded config is used for before any weight is allocated.
        let _ = (
            config.vocab_size(),
            config.hidden_size(),
            config.eos_token_ids(),
        );
        let _ = config.to_json();
        true
    });
}

/// The 8-byte length and JSON header of a safetensors file, and the tensor bytes after it.
fn split_header(bytes: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let length = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (bytes[..8 + length].to_vec(), bytes[8 + length..].to_vec())
}

#[test]
fn fuzz_safetensors_headers_and_shard_index() {
    // Structure-aware: the mutations hit the header (length prefix and JSON), the tensor bytes
    // follow unchanged; the shard index of the sharded fixture is mutated as a whole.
    let targets: Vec<(PathBuf, &str, Vec<u8>)> = [
        ("t5-v1_0-f16", WEIGHTS_FILE),
        ("qwen2-tied-bf16", WEIGHTS_FILE),
        ("qwen2-untied", "model-00001-of-00002.safetensors"),
        ("qwen2-untied", "model.safetensors.index.json"),
    ]
    .into_iter()
    .enumerate()
    .map(|(position, (name, file))| {
        let directory = copy_of(name, &format!("fuzz-weights-{position}"));
        let bytes = std::fs::read(directory.join(file)).unwrap();
        (directory, file, bytes)
    })
    .collect();
    let device = device();
    let mut seeds = Vec::new();
    let mut tails = Vec::new();
    for (directory, file, bytes) in &targets {
        Backbone::load(directory, &device).expect("every seed loads");
        let (seed, tail) = if file.ends_with(".safetensors") {
            split_header(bytes)
        } else {
            (bytes.clone(), Vec::new())
        };
        seeds.push(seed);
        tails.push(tail);
    }
    let write = |path: &Path, head: &[u8], tail: &[u8]| {
        let mut content = head.to_vec();
        content.extend_from_slice(tail);
        std::fs::write(path, content).unwrap();
    };
    fuzz(
        "safetensors header + index (gems-models)",
        &seeds,
        300,
        |seed, input| {
            let (directory, file, original) = &targets[seed];
            let path = directory.join(file);
            write(&path, input, &tails[seed]);
            let accepted = Backbone::load(directory, &device).is_ok();
            std::fs::write(&path, original).unwrap();
            accepted
        },
    );
}
