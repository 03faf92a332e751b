//! `gems train` on the tiny T5 fixture, one step each: the knowledge-basis cache (hits, misses
//! when the corpus or energy changes, a corrupt file recomputed), the memory estimate against
//! the optimizer state actually saved, and the refusal of a run that will not fit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use safetensors::SafeTensors;

fn fixture_config() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../gems-models/tests/fixtures/t5-v1_0/config.json")
        .to_string_lossy()
        .into_owned()
}

/// `gems train` for one step of the fixture model into `out`, with `extra` flags.
fn train(out: &Path, extra: &[&str]) -> Output {
    let config = fixture_config();
    let mut args = vec![
        "train",
        "--model-config",
        config.as_str(),
        "--out",
        out.to_str().unwrap(),
        "--stop-after",
        "1",
        "--batch-size",
        "8",
    ];
    args.extend_from_slice(extra);
    Command::new(env!("CARGO_BIN_EXE_gems"))
        .args(&args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the gems binary runs")
}

fn succeed(out: &Path, extra: &[&str]) -> (String, String) {
    let output = train(out, extra);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "gems train {extra:?} failed:\n{stdout}\n{stderr}"
    );
    (stdout, stderr)
}

/// Bytes of every tensor of the run's saved optimizer state, by name.
fn saved_state(run: &Path) -> BTreeMap<String, Vec<u8>> {
    let bytes = std::fs::read(run.join("checkpoint/optimizer.safetensors")).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    file.tensors()
        .into_iter()
        .map(|(name, view)| (name, view.data().to_vec()))
        .collect()
}

fn state_bytes(state: &BTreeMap<String, Vec<u8>>, prefix: &str) -> u64 {
    state
        .iter()
        .filter(|(name, _)| name.starts_with(prefix))
        .map(|(_, bytes)| bytes.len() as u64)
        .sum()
}

fn estimate(run: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("memory.json")).unwrap()).unwrap()
}

fn cached_files(cache: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    files
}

const COMPUTED: &str = "knowledge bases: ";
const FROM_CACHE: &str = "knowledge bases: read from the cache";

#[test]
fn knowledge_bases_are_cached_by_model_corpus_and_energy() {
    let folder = tempfile::tempdir().unwrap();
    let cache = folder.path().join("cache");
    let cache_flag = ["--knowledge-cache", cache.to_str().unwrap()];
    let run = |name: &str, extra: &[&str]| {
        let mut flags = cache_flag.to_vec();
        flags.extend_from_slice(extra);
        let out = folder.path().join(name);
        // The knowledge status lines go to standard error (standard output carries
        // machine-readable output such as `gems bench --json`).
        let (_stdout, stderr) = succeed(&out, &flags);
        (out, stderr.clone(), stderr)
    };

    let (first, printed, _) = run("first", &[]);
    assert!(
        printed.contains(COMPUTED) && !printed.contains(FROM_CACHE),
        "{printed}"
    );
    assert_eq!(cached_files(&cache).len(), 1);
    let (second, printed, _) = run("second", &[]);
    assert!(printed.contains(FROM_CACHE), "{printed}");
    assert_eq!(cached_files(&cache).len(), 1);
    // The cached bases are the computed ones, bit for bit.
    let bases = |run: &Path| -> Vec<(String, Vec<u8>)> {
        saved_state(run)
            .into_iter()
            .filter(|(name, _)| name.starts_with("null_space/"))
            .collect()
    };
    assert!(!bases(&first).is_empty());
    assert_eq!(bases(&first), bases(&second));

    let (_, printed, _) = run("energy", &["--knowledge-energy", "0.9"]);
    assert!(!printed.contains(FROM_CACHE), "{printed}");
    assert_eq!(cached_files(&cache).len(), 2);
    let corpus = folder.path().join("corpus.txt");
    std::fs::write(
        &corpus,
        "The river rose in spring and the town moved its market to the hill above the bridge.\n\n\
         Bread was baked at dawn, and the bakers sold it warm to travellers on the old road.\n\n\
         A short path crossed the meadow to the well, where children carried water home.\n",
    )
    .unwrap();
    let (_, printed, _) = run("corpus", &["--general-corpus", corpus.to_str().unwrap()]);
    assert!(!printed.contains(FROM_CACHE), "{printed}");
    assert_eq!(cached_files(&cache).len(), 3);

    // A corrupt entry (one flipped bit; which settings it belongs to is hidden in its hashed
    // name) is detected by the one run that reads it, recomputed with a warning and rewritten.
    let entry = cached_files(&cache).remove(0);
    let mut bytes = std::fs::read(&entry).unwrap();
    let last = bytes.len() - 9;
    bytes[last] ^= 0x40;
    std::fs::write(&entry, &bytes).unwrap();
    let corrupted = std::fs::read(&entry).unwrap();
    let mut recomputed = false;
    for (name, extra) in [
        ("again", vec![]),
        ("again-energy", vec!["--knowledge-energy", "0.9"]),
        (
            "again-corpus",
            vec!["--general-corpus", corpus.to_str().unwrap()],
        ),
    ] {
        let (_, printed, stderr) = run(name, &extra);
        if stderr.contains("checksum") {
            assert!(stderr.contains("recomputing"), "{stderr}");
            assert!(!printed.contains(FROM_CACHE), "{printed}");
            recomputed = true;
        } else {
            assert!(printed.contains(FROM_CACHE), "{printed}");
        }
    }
    assert!(recomputed, "the corrupted entry was never read");
    assert_ne!(std::fs::read(&entry).unwrap(), corrupted, "not rewritten");

    // Off: nothing read, nothing written.
    let out = folder.path().join("off");
    let (_, printed) = succeed(&out, &["--no-knowledge-cache"]);
    assert!(!printed.contains(FROM_CACHE), "{printed}");
    assert_eq!(cached_files(&cache).len(), 3);
}

#[test]
fn the_memory_estimate_counts_the_optimizer_state_saved() {
    let folder = tempfile::tempdir().unwrap();
    for method in ["gems", "galore", "adamw", "lora"] {
        let run = folder.path().join(method);
        let (printed, _) = succeed(&run, &["--method", method, "--no-knowledge-cache"]);
        assert!(printed.contains("expected memory"), "{printed}");
        let estimate = estimate(&run);
        let state = saved_state(&run);
        let moments = state_bytes(&state, "weights/");
        assert!(moments > 0);
        assert_eq!(
            estimate["optimizer_state"].as_u64().unwrap(),
            moments,
            "{method}"
        );
        assert_eq!(
            estimate["knowledge_bases"].as_u64().unwrap(),
            state_bytes(&state, "null_space/"),
            "{method}"
        );
    }
}

#[test]
fn a_run_that_does_not_fit_stops_and_says_what_to_change() {
    let folder = tempfile::tempdir().unwrap();
    let reference = folder.path().join("reference");
    succeed(&reference, &["--no-knowledge-cache", "--method", "galore"]);
    let estimate = estimate(&reference);
    let part = |name: &str| estimate[name].as_u64().unwrap();
    let total: u64 = [
        "weights",
        "optimizer_state",
        "gradients",
        "activations",
        "knowledge_bases",
    ]
    .iter()
    .map(|p| part(p))
    .sum();
    // Room for the fixed parts and half the activations of batch 8: batch 4 fits.
    let limit = total - part("activations") / 2;
    let out = folder.path().join("refused");
    let limit_flag = limit.to_string();
    let output = train(
        &out,
        &[
            "--no-knowledge-cache",
            "--method",
            "galore",
            "--memory-limit",
            &limit_flag,
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    let message = stderr.lines().last().unwrap_or_default();
    assert!(
        message.starts_with("error:")
            && message.contains("--batch-size 4 ")
            && message.contains("--ignore-memory-estimate"),
        "{stderr}"
    );
    assert!(!out.join("checkpoint").exists());
    // The same run goes when told to.
    succeed(
        &folder.path().join("anyway"),
        &[
            "--no-knowledge-cache",
            "--method",
            "galore",
            "--memory-limit",
            &limit_flag,
            "--ignore-memory-estimate",
        ],
    );
}
