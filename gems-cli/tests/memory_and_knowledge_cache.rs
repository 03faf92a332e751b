//! `gems train` on the tiny T5 fixture, one step each: the knowledge-basis cache (hits, misses
//! when the corpus or energy changes, a corrupt file recomputed), the memory estimate against
//! the optimizer state actually saved, and the refusal of a run that will not fit.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use safetensors::SafeTensors;

/// The directory of one of gems-models' fixture models.
fn model_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../gems-models/tests/fixtures")
        .join(name)
}

fn fixture_config() -> String {
    model_fixture("t5-v1_0")
        .join("config.json")
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
    common::gems(&args)
}

/// `gems train` of the Qwen2 fixture model in `directory` (pre-trained weights and tokenizer)
/// into `out`, batches of 8, with `extra` flags; it must succeed.
fn train_pretrained(directory: &Path, out: &Path, extra: &[&str]) {
    let mut args = vec![
        "train",
        "--model",
        "qwen2",
        "--model-dir",
        directory.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--batch-size",
        "8",
    ];
    args.extend_from_slice(extra);
    common::succeed(&args);
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
        let (stdout, stderr) = succeed(&out, &flags);
        // The knowledge bases' messages go to stderr (stdout may carry JSON); read both.
        (out, format!("{stdout}{stderr}"), stderr)
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
    let (stdout, stderr) = succeed(&out, &["--no-knowledge-cache"]);
    let printed = format!("{stdout}{stderr}");
    assert!(
        printed.contains(COMPUTED) && !printed.contains(FROM_CACHE),
        "{printed}"
    );
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
    // The peak: the fixed parts, and the larger of an ordinary step's state and gradients (one
    // task's condensed) and the first step's gradients (every task's in full, no state yet).
    let ordinary = part("optimizer_state") + part("gradients");
    assert!(part("gradients") < part("first_step_gradients"));
    let total: u64 = ["weights", "activations", "knowledge_bases"]
        .iter()
        .map(|p| part(p))
        .sum::<u64>()
        + ordinary.max(part("first_step_gradients"));
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

/// The shapes of every tensor of a safetensors file, by name.
fn shapes(path: &Path) -> BTreeMap<String, Vec<usize>> {
    let bytes = std::fs::read(path).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    file.tensors()
        .into_iter()
        .map(|(name, view)| (name, view.shape().to_vec()))
        .collect()
}

/// The float32 values of one tensor of a safetensors file.
fn values(path: &Path, name: &str) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    file.tensor(name)
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// With a pre-trained model, only the rows of the added item tokens of the vocabulary matrices
/// are trained by default: they are parameters of their own (`….added`) whose AdamW moments are
/// the only vocabulary state (one set for a tied embedding, one more for an untied head), the
/// frozen pre-trained rows hold none and come out bit-identical, and
/// the memory estimate (`memory.json`, and `gems model info --new-tokens`) counts the state and
/// gradients of those rows only; `--train-vocabulary all` trains, and counts, every row.
#[test]
fn a_pre_trained_vocabulary_trains_the_new_tokens_rows_only() {
    let folder = tempfile::tempdir().unwrap();
    for fixture in ["qwen2-tied", "qwen2-untied"] {
        let directory = model_fixture(fixture);
        let pre_trained = 96; // the fixture's vocabulary and tokenizer
        let width = 32;
        let run = |name: &str, vocabulary: &str| {
            let out = folder.path().join(format!("{fixture}-{name}"));
            train_pretrained(
                &directory,
                &out,
                &[
                    "--method",
                    "adamw",
                    "--train-vocabulary",
                    vocabulary,
                    "--stop-after",
                    "1",
                ],
            );
            out
        };
        let new = run("new", "new");
        let all = run("all", "all");
        let model = new.join("checkpoint/model/model.safetensors");
        let saved = shapes(&model);
        let vocabulary = saved["model.embed_tokens.weight"][0];
        let added = vocabulary - pre_trained;
        assert!(
            added >= 40,
            "{fixture}: {vocabulary} tokens after adding the items"
        );
        let state = shapes(&new.join("checkpoint/optimizer.safetensors"));
        assert_eq!(
            state["weights/model.embed_tokens.added/first"],
            [added, width],
            "{fixture}"
        );
        assert_eq!(
            state["weights/model.embed_tokens.added/first_mass"],
            [added, 1]
        );
        assert!(
            !state.keys().any(|k| {
                k.starts_with("weights/model.embed_tokens.weight/")
                    || k.starts_with("weights/lm_head.weight/")
            }),
            "{fixture}: the frozen rows hold no state"
        );
        let tied = fixture == "qwen2-tied";
        assert_eq!(
            state.get("weights/lm_head.added/first").cloned(),
            (!tied).then(|| vec![added, width]),
            "{fixture}: one state for a tied matrix, one more for an untied head"
        );
        // The pre-trained rows are bit-identical; the new ones moved.
        let heads: &[&str] = if tied {
            &["model.embed_tokens.weight"]
        } else {
            &["model.embed_tokens.weight", "lm_head.weight"]
        };
        let original = directory.join(if tied {
            "model.safetensors"
        } else {
            "model-00001-of-00002.safetensors"
        });
        for name in heads {
            let source = if shapes(&original).contains_key(*name) {
                original.clone()
            } else {
                directory.join("model-00002-of-00002.safetensors")
            };
            let (before, after) = (values(&source, name), values(&model, name));
            let kept = pre_trained * width;
            assert!(
                before[..kept]
                    .iter()
                    .zip(&after[..kept])
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{fixture}: pre-trained rows of {name} changed"
            );
            // `all` moves pre-trained rows too (those of the tokens the prompts use), and its
            // new rows as `new` does, up to rounding (the added rows' gradients are summed in
            // another order when they are a matrix of their own).
            let everything = values(&all.join("checkpoint/model/model.safetensors"), name);
            assert!(
                before[..kept] != everything[..kept],
                "{fixture}: {name}: `all` kept the pre-trained rows"
            );
            let error = after[kept..]
                .iter()
                .zip(&everything[kept..])
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                error <= 1e-7,
                "{fixture}: {name}: new rows differ by {error:e}"
            );
            // New rows start at the mean of the pre-trained ones, and have moved from it.
            let mean: Vec<f64> = (0..width)
                .map(|j| {
                    (0..pre_trained)
                        .map(|i| f64::from(before[i * width + j]))
                        .sum::<f64>()
                        / pre_trained as f64
                })
                .collect();
            let moved = (0..added * width)
                .map(|k| (f64::from(after[kept + k]) - mean[k % width]).abs())
                .fold(0.0, f64::max);
            assert!(
                moved > 1e-4,
                "{fixture}: {name}: new rows moved by {moved:e}"
            );
        }
        // The estimates count what is held: the state saved, and two tasks' gradients of the
        // trained values, which differ between `new` and `all` by the pre-trained rows.
        let (new_estimate, all_estimate) = (estimate(&new), estimate(&all));
        for (run, estimate) in [(&new, &new_estimate), (&all, &all_estimate)] {
            assert_eq!(
                estimate["optimizer_state"].as_u64().unwrap(),
                state_bytes(&saved_state(run), "weights/"),
                "{fixture}"
            );
        }
        let matrices = heads.len() as u64;
        let frozen = (pre_trained * width) as u64;
        let part = |e: &serde_json::Value, key: &str| e[key].as_u64().unwrap();
        assert_eq!(
            part(&all_estimate, "gradients") - part(&new_estimate, "gradients"),
            2 * 4 * frozen * matrices
        );
        // Two moments of the frozen values, and each matrix's two masses per frozen row.
        assert_eq!(
            part(&all_estimate, "optimizer_state") - part(&new_estimate, "optimizer_state"),
            (8 * frozen + 8 * pre_trained as u64) * matrices
        );
        // `gems model info` with the number of added tokens agrees with the run.
        let info = common::succeed(&[
            "model",
            "info",
            "--model-dir",
            directory.to_str().unwrap(),
            "--new-tokens",
            &added.to_string(),
            "--json",
        ]);
        let info: serde_json::Value = serde_json::from_str(&info).unwrap();
        let adamw = info["memory"]
            .as_array()
            .unwrap()
            .iter()
            .find(|entry| entry[0] == "adamw")
            .unwrap();
        for key in ["optimizer_state", "gradients", "weights"] {
            assert_eq!(adamw[1][key], new_estimate[key], "{fixture}: {key}");
        }
    }
}

/// A run on a pre-trained model, whose vocabulary matrices hold the added rows apart from the
/// frozen pre-trained rows, paused and resumed (the checkpoint holds whole matrices, split again
/// on resume) ends bit-identical to the uninterrupted run.
#[test]
fn frozen_vocabulary_rows_resume_bit_identically() {
    let folder = tempfile::tempdir().unwrap();
    let directory = model_fixture("qwen2-untied");
    let run = |name: &str, extra: &[&str]| {
        let out = folder.path().join(name);
        train_pretrained(&directory, &out, &[&["--max-steps", "4"], extra].concat());
        out
    };
    let straight = run("straight", &[]);
    let paused = run("paused", &["--stop-after", "2"]);
    common::succeed(&["train", "--resume", paused.to_str().unwrap()]);
    let read = |run: &Path| std::fs::read(run.join("model/model.safetensors")).unwrap();
    assert!(
        read(&straight) == read(&paused),
        "the resumed run differs from the uninterrupted one"
    );
}

/// `gems model info --new-tokens N` places the new tokens as `gems train` does: after the
/// tokenizer's tokens, taking first the rows a config reserves beyond them (Qwen2.5 pads its
/// vocabulary), so the model has max(config, tokenizer + N) tokens and trains the rows from the
/// tokenizer's size on. The fixture's config reserves 4 rows beyond its 96-token tokenizer here.
#[test]
fn model_info_adds_tokens_after_the_tokenizers() {
    let folder = tempfile::tempdir().unwrap();
    let fixture = model_fixture("qwen2-tied");
    std::fs::copy(
        fixture.join("tokenizer.json"),
        folder.path().join("tokenizer.json"),
    )
    .unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["vocab_size"], 96);
    config["vocab_size"] = 100.into();
    std::fs::write(folder.path().join("config.json"), config.to_string()).unwrap();
    let info = |new_tokens: usize| -> serde_json::Value {
        let output = common::succeed(&[
            "model",
            "info",
            "--model-dir",
            folder.path().to_str().unwrap(),
            "--new-tokens",
            &new_tokens.to_string(),
            "--json",
        ]);
        serde_json::from_str(&output).unwrap()
    };
    let (few, many) = (info(2), info(10));
    assert_eq!(
        few["vocab_size"], 100,
        "2 new tokens fit in the reserved rows"
    );
    assert_eq!(many["vocab_size"], 106);
    assert_eq!(
        few["frozen_parameters"],
        serde_json::json!(["model.embed_tokens.weight"])
    );
    // AdamW state of the trained rows (96.. of one tied matrix, 32 wide): two moments and two
    // masses per row; 4 rows with 2 new tokens, 10 with 10.
    let adamw = |info: &serde_json::Value| {
        info["optimizer_state_bytes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|entry| entry[0] == "adamw")
            .unwrap()[1]
            .as_u64()
            .unwrap()
    };
    assert_eq!(adamw(&many) - adamw(&few), (10 - 4) * (8 * 32 + 8));
}
