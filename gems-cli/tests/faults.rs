//! Faults injected into the `gems` binary: a crash between the renames of a checkpoint, write
//! failures (a file-size limit), two trainings of one run at once, SIGKILL while a checkpoint is
//! written, corrupted checkpoints and absurd values. Nothing is lost, nothing panics: every case
//! ends in one clear error or in a run that resumes where its last complete checkpoint was.
//!
//! Runs are tiny (a 30-user synthetic dataset, AdamW, a few steps) to stay quick on two cores.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{GEMS, gems, small_synthetic, succeed};

/// Asserts a failure without a panic whose standard error contains every `expected` fragment;
/// returns standard error.
fn failed(output: &Output, what: &str, expected: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "{what} should fail");
    assert!(!stderr.contains("panicked"), "{what} panicked:\n{stderr}");
    for fragment in expected {
        assert!(
            stderr.contains(fragment),
            "{what}: `{fragment}` missing from:\n{stderr}"
        );
    }
    stderr
}

fn fail(args: &[&str], expected: &[&str]) -> String {
    failed(&gems(args), &format!("gems {args:?}"), expected)
}

/// Runs `gems args` with writes limited to `blocks` × 512 bytes per file and SIGXFSZ ignored, so
/// that a write past the limit fails with EFBIG as on a full disk.
fn gems_with_file_limit(blocks: u32, args: &[&str]) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f {blocks} && exec \"$0\" \"$@\""
        ))
        .arg(GEMS)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("sh runs")
}

/// Arguments of a tiny AdamW run of `steps` steps on `data` into `out`.
fn tiny_run<'a>(data: &'a Path, out: &'a Path, steps: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--method",
        "adamw",
        "--batch-size",
        "8",
        "--max-steps",
        steps,
        "--validation-requests",
        "5",
        "--beam-width",
        "5",
    ]
}

/// A tiny run of `steps` steps on a small dataset in `folder`, paused after `stop_after` steps
/// (with `extra` settings); returns the data and the run directories.
fn paused_run(folder: &Path, steps: &str, stop_after: &str, extra: &[&str]) -> (PathBuf, PathBuf) {
    let data = small_synthetic(folder);
    let run = folder.join("run");
    let mut args = tiny_run(&data, &run, steps);
    args.extend(extra);
    args.extend(["--stop-after", stop_after]);
    succeed(&args);
    (data, run)
}

/// The step of the complete checkpoint in `folder` of `run`, if there is one.
fn step_in(run: &Path, folder: &str) -> Option<u64> {
    let text = std::fs::read_to_string(run.join(folder).join("progress.json")).ok()?;
    let progress: serde_json::Value = serde_json::from_str(&text).ok()?;
    progress["step"].as_u64()
}

fn checkpoint_step(run: &Path) -> u64 {
    step_in(run, "checkpoint").expect("a complete checkpoint")
}

fn resume(run: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "train".to_string(),
        "--resume".into(),
        run.display().to_string(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

#[test]
fn a_crash_between_the_renames_of_a_checkpoint_loses_nothing() {
    let folder = tempfile::tempdir().unwrap();
    let (data, run) = paused_run(folder.path(), "6", "2", &[]);
    assert_eq!(checkpoint_step(&run), 2);
    // What a crash after the first rename of a checkpoint replacement leaves: the complete
    // checkpoint moved aside, an unfinished new one beside it.
    std::fs::rename(run.join("checkpoint"), run.join("checkpoint.old")).unwrap();
    std::fs::create_dir(run.join("checkpoint.partial")).unwrap();
    std::fs::write(run.join("checkpoint.partial/progress.json"), "{\"st").unwrap();
    // A new run over it is refused and deletes nothing.
    fail(
        &tiny_run(&data, &run, "6"),
        &["already holds a run", "--resume"],
    );
    assert!(run.join("checkpoint.old/progress.json").is_file());
    // Resuming recovers the checkpoint and continues from step 2.
    let printed = succeed(&as_strs(&resume(&run, &["--stop-after", "1"])));
    assert!(printed.contains("paused after step 3"), "{printed}");
    assert!(!run.join("checkpoint.old").exists() && !run.join("checkpoint.partial").exists());
    succeed(&as_strs(&resume(&run, &[])));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["status"], "finished");
    assert_eq!(manifest["steps"], 6);
}

#[test]
fn a_failed_checkpoint_write_keeps_the_last_checkpoint() {
    let folder = tempfile::tempdir().unwrap();
    let (_, run) = paused_run(folder.path(), "6", "1", &[]);
    let before = std::fs::read(run.join("checkpoint/model/model.safetensors")).unwrap();
    // 64 KiB per file: the model's weights do not fit, as on a full disk.
    let output = gems_with_file_limit(128, &as_strs(&resume(&run, &["--stop-after", "1"])));
    failed(
        &output,
        "a checkpoint write past the file-size limit",
        &["error:"],
    );
    assert_eq!(
        checkpoint_step(&run),
        1,
        "the last complete checkpoint is kept"
    );
    assert_eq!(
        std::fs::read(run.join("checkpoint/model/model.safetensors")).unwrap(),
        before
    );
    assert!(
        !run.join("checkpoint.partial").exists(),
        "the failed copy is removed"
    );
    // Without the limit the run goes on from there.
    let printed = succeed(&as_strs(&resume(&run, &["--stop-after", "1"])));
    assert!(printed.contains("paused after step 2"), "{printed}");
}

#[test]
fn failed_data_writes_leave_nothing_that_blocks_the_rerun() {
    let folder = tempfile::tempdir().unwrap();
    let out = folder.path().join("converted");
    let out_arg = out.to_str().unwrap();
    let convert = [
        "data",
        "convert",
        "synthetic",
        "--out",
        out_arg,
        "--users",
        "30",
    ];
    let output = gems_with_file_limit(4, &convert);
    failed(
        &output,
        "a conversion past the file-size limit",
        &["error:"],
    );
    assert!(!out.exists(), "a failed conversion leaves no --out");
    assert!(!folder.path().join("converted.partial").exists());
    succeed(&convert);
    let listing = |folder: &Path| {
        let mut names: Vec<_> = std::fs::read_dir(folder)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    };
    let unsplit = listing(&out);
    let requests = std::fs::read(out.join("requests.jsonl")).unwrap();
    let output = gems_with_file_limit(4, &["data", "split", out_arg]);
    failed(&output, "a split past the file-size limit", &["error:"]);
    assert_eq!(
        listing(&out),
        unsplit,
        "a failed split leaves the directory as it was"
    );
    assert_eq!(std::fs::read(out.join("requests.jsonl")).unwrap(), requests);
    succeed(&["data", "split", out_arg]);
    assert!(out.join("train.jsonl").is_file());
    assert_eq!(std::fs::read(out.join("requests.jsonl")).unwrap(), requests);
}

/// Waits until `condition` holds, polling; panics after `limit`.
fn wait_for(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn concurrent_trainings_are_refused_and_sigkill_during_a_checkpoint_loses_nothing() {
    let folder = tempfile::tempdir().unwrap();
    let (_, run) = paused_run(folder.path(), "400", "1", &["--checkpoint-every", "1"]);
    // A stale temporary file of a process killed earlier.
    let stale = run.join(".curves.json.tmp-4000000");
    std::fs::write(&stale, "half").unwrap();
    // A long resumed run that checkpoints every step.
    let mut child = Command::new(GEMS)
        .args(as_strs(&resume(&run, &[])))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let holder = format!("pid {}", child.id());
    wait_for(Duration::from_secs(60), "the lock", || {
        std::fs::read_to_string(run.join("gems.lock")).is_ok_and(|t| t.trim() == holder)
    });
    // A second training of the same run is refused, naming the first.
    fail(
        &as_strs(&resume(&run, &[])),
        &["another gems process", &holder],
    );
    assert!(!stale.exists(), "stale temporaries are swept on start");
    // SIGKILL while a checkpoint (one every step) is being written.
    wait_for(Duration::from_secs(120), "a checkpoint write", || {
        run.join("checkpoint.partial").exists()
            && step_in(&run, "checkpoint").is_some_and(|s| s >= 2)
    });
    child.kill().unwrap();
    child.wait().unwrap();
    // The last complete checkpoint: in place, or aside if the kill came between the renames.
    let kept = step_in(&run, "checkpoint")
        .or_else(|| step_in(&run, "checkpoint.old"))
        .expect("a complete checkpoint survives");
    assert!(kept >= 2);
    // The run resumes from its last complete checkpoint.
    let printed = succeed(&as_strs(&resume(&run, &["--stop-after", "1"])));
    assert!(
        printed.contains(&format!("paused after step {}", kept + 1)),
        "{printed}"
    );
}

#[test]
fn corrupted_checkpoints_are_refused_field_by_field() {
    let folder = tempfile::tempdir().unwrap();
    let (_, run) = paused_run(folder.path(), "6", "2", &[]);
    let progress_path = run.join("checkpoint/progress.json");
    let original = std::fs::read_to_string(&progress_path).unwrap();
    // `field`: a JSON pointer into progress.json.
    let corrupt = |field: &str, value: serde_json::Value, expected: &[&str]| {
        let mut progress: serde_json::Value = serde_json::from_str(&original).unwrap();
        *progress
            .pointer_mut(field)
            .expect("a field of progress.json") = value;
        std::fs::write(&progress_path, progress.to_string()).unwrap();
        fail(&as_strs(&resume(&run, &[])), expected);
    };
    corrupt(
        "/position",
        serde_json::json!(1_000_000),
        &["progress.json", "position 1000000"],
    );
    corrupt(
        "/step",
        serde_json::json!(99),
        &["progress.json", "step 99"],
    );
    corrupt(
        "/epoch",
        serde_json::json!(500),
        &["progress.json", "epoch 500"],
    );
    // Within bounds, but not where step 2 stands.
    corrupt(
        "/position",
        serde_json::json!(8),
        &[
            "progress.json",
            "position 8 do not follow from step 2",
            "expected epoch 0 and position 16",
        ],
    );
    corrupt(
        "/epoch",
        serde_json::json!(1),
        &[
            "progress.json",
            "epoch 1 and position 16 do not follow from step 2",
        ],
    );
    // Skipped steps count in the step number, not in the applied steps' curves.
    corrupt(
        "/curves/skipped_steps",
        serde_json::json!([1]),
        &[
            "progress.json",
            "2 applied and 1 skipped steps",
            "at step 2",
        ],
    );
    corrupt(
        "/curves/skipped_steps",
        serde_json::json!([3]),
        &["progress.json", "skipped steps [3]", "from 1 to step 2"],
    );
    corrupt(
        "/consecutive_skips",
        serde_json::json!(1),
        &["progress.json", "1 skipped steps in a row", "records 0"],
    );
    std::fs::write(&progress_path, &original).unwrap();

    // An edited config.toml: the run resumes with the settings it started with, or not at all.
    let config_path = run.join("config.toml");
    let config = std::fs::read_to_string(&config_path).unwrap();
    let edited = config.replace("batch_size = 8\n", "batch_size = 16\n");
    assert_ne!(edited, config);
    std::fs::write(&config_path, edited).unwrap();
    fail(
        &as_strs(&resume(&run, &[])),
        &[
            "config.toml",
            "differs from the settings the run started with (batch_size)",
        ],
    );
    std::fs::write(&config_path, config).unwrap();

    // An optimizer-state tensor with its shape transposed (same bytes): refused before a step.
    let state_path = run.join("checkpoint/optimizer.safetensors");
    let bytes = std::fs::read(&state_path).unwrap();
    let length = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + length]).unwrap();
    let name = header
        .as_object()
        .unwrap()
        .iter()
        .find(|(name, info)| {
            name.ends_with("/first")
                && info["shape"]
                    .as_array()
                    .is_some_and(|s| s.len() == 2 && s[0] != s[1])
        })
        .map(|(name, _)| name.clone())
        .expect("a non-square moment");
    let shape = header[&name]["shape"].as_array().unwrap().clone();
    header[&name]["shape"] = serde_json::json!([shape[1], shape[0]]);
    let mut text = header.to_string().into_bytes();
    text.resize(length.max(text.len().div_ceil(8) * 8), b' ');
    let mut rewritten = (text.len() as u64).to_le_bytes().to_vec();
    rewritten.extend(text);
    rewritten.extend(&bytes[8 + length..]);
    std::fs::write(&state_path, rewritten).unwrap();
    let parameter = name
        .trim_start_matches("weights/")
        .trim_end_matches("/first");
    fail(
        &as_strs(&resume(&run, &[])),
        &["optimizer.safetensors", parameter, "does not fit the model"],
    );
}

/// A model folder whose identifiers.json does not name exactly the catalogue's items is refused
/// by every command that reads it, naming the file and the item.
#[test]
fn identifiers_that_do_not_match_the_catalogue_are_refused() {
    let folder = tempfile::tempdir().unwrap();
    let data = small_synthetic(folder.path());
    let run = folder.path().join("run");
    succeed(&tiny_run(&data, &run, "1"));
    let run_arg = run.to_str().unwrap();
    let path = run.join("model/identifiers.json");
    let original: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut fewer = original.clone();
    let removed = fewer["items"].as_array_mut().unwrap().remove(0)["item"].clone();
    std::fs::write(&path, fewer.to_string()).unwrap();
    let missing = format!("has no identifier for item {removed} of the catalogue");
    fail(&["eval", run_arg], &["identifiers.json", &missing]);
    let mut more = original.clone();
    let tokens = original["new_tokens"].as_array().unwrap();
    let identifier = format!(
        "{} {}",
        tokens[0].as_str().unwrap(),
        tokens[1].as_str().unwrap()
    );
    more["items"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({ "item": 99999, "identifier": identifier }));
    std::fs::write(&path, more.to_string()).unwrap();
    for command in [
        &["eval", run_arg][..],
        &["recommend", run_arg, "--history", "99999"],
    ] {
        fail(
            command,
            &["identifiers.json", "item 99999", "is not in the catalogue"],
        );
    }
}

/// A run started with paths relative to one directory is resumed and evaluated from another:
/// config.toml holds them made absolute.
#[test]
fn relative_paths_are_saved_absolute() {
    let folder = tempfile::tempdir().unwrap();
    small_synthetic(folder.path());
    let in_folder = |args: &[&str]| {
        let output = Command::new(GEMS)
            .args(args)
            .current_dir(folder.path())
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let mut args = tiny_run(Path::new("data"), Path::new("run"), "2");
    args.extend(["--stop-after", "1"]);
    in_folder(&args);
    let config = std::fs::read_to_string(folder.path().join("run/config.toml")).unwrap();
    let data = folder.path().join("data").canonicalize().unwrap();
    assert!(
        config.contains(&format!("data = \"{}\"", data.display())),
        "{config}"
    );
    // From another working directory.
    let run = folder.path().join("run");
    succeed(&["train", "--resume", run.to_str().unwrap()]);
    succeed(&["eval", run.to_str().unwrap()]);
}

/// A model from scratch takes its vocabulary from the general corpus too: a resumed run whose
/// corpus changed since it started is refused, naming the saved tokenizer, instead of training
/// rows that now belong to other tokens.
#[test]
fn a_resume_after_the_general_corpus_changed_is_refused() {
    let folder = tempfile::tempdir().unwrap();
    let data = small_synthetic(folder.path());
    let corpus = folder.path().join("corpus.txt");
    std::fs::write(
        &corpus,
        "alpha bravo charlie delta\necho foxtrot golf hotel\n",
    )
    .unwrap();
    let run = folder.path().join("run");
    let mut args = tiny_run(&data, &run, "3");
    args.extend([
        "--general-corpus",
        corpus.to_str().unwrap(),
        "--stop-after",
        "1",
    ]);
    succeed(&args);
    std::fs::write(
        &corpus,
        "zulu yankee charlie delta\necho foxtrot golf hotel\n",
    )
    .unwrap();
    fail(
        &as_strs(&resume(&run, &[])),
        &[
            "checkpoint/model/tokenizer.json",
            "the general corpus or the model directory changed",
        ],
    );
    // Restored, the run goes on.
    std::fs::write(
        &corpus,
        "alpha bravo charlie delta\necho foxtrot golf hotel\n",
    )
    .unwrap();
    succeed(&as_strs(&resume(&run, &[])));
}

#[test]
fn flags_the_method_would_ignore_are_refused() {
    let folder = tempfile::tempdir().unwrap();
    let out = folder.path().join("run");
    let out = out.to_str().unwrap();
    fail(
        &[
            "train",
            "--out",
            out,
            "--method",
            "adamw",
            "--shared-rank",
            "64",
            "--task-rank",
            "8",
        ],
        &["--shared-rank, --task-rank", "change nothing", "`adamw`"],
    );
    fail(
        &[
            "train",
            "--out",
            out,
            "--method",
            "galore",
            "--fixed-gate",
            "0.5,0.5",
        ],
        &["--fixed-gate would change nothing", "`galore`"],
    );
    assert!(
        !Path::new(out).exists(),
        "a refused run leaves nothing behind"
    );
}

#[test]
fn absurd_values_are_refused_with_the_reason() {
    let folder = tempfile::tempdir().unwrap();
    let out = folder.path().join("run");
    let out = out.to_str().unwrap();
    for flag in ["--seed", "--max-steps", "--epochs", "--warmup-steps"] {
        fail(
            &["train", "--out", out, flag, "18446744073709551615"],
            &[flag, "9223372036854775807"],
        );
        fail(
            &["train", "--resume", out, flag, "18446744073709551615"],
            &[flag, "9223372036854775807"],
        );
    }
    fail(
        &[
            "train",
            "--out",
            out,
            "--method",
            "lora",
            "--shared-rank",
            "0",
        ],
        &["LoRA rank", "at least 1"],
    );
    fail(
        &[
            "train",
            "--out",
            out,
            "--method",
            "lora",
            "--shared-rank",
            "1000000000000",
            "--max-steps",
            "1",
        ],
        &[
            "LoRA adapters of rank 1000000000000",
            "GB of memory",
            "lower shared_rank",
        ],
    );
    // A from-scratch model far too wide for any machine.
    let config = folder.path().join("config.json");
    std::fs::write(
        &config,
        serde_json::json!({
            "model_type": "t5", "vocab_size": 2000, "d_model": 20_000_000, "d_kv": 64,
            "d_ff": 2048, "num_layers": 2, "num_heads": 4, "feed_forward_proj": "relu"
        })
        .to_string(),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    fail(
        &[
            "train",
            "--out",
            out,
            "--model-config",
            config,
            "--max-steps",
            "1",
        ],
        &["config.json", "parameters", "GB of memory"],
    );
    fail(
        &["model", "info", "--shared-rank", "4611686018427387904"],
        &["overflow"],
    );
    // Memory estimates of absurd shapes saturate instead of wrapping round to small figures.
    let activations = |flag: &str, value: &str| {
        let printed = succeed(&["model", "info", flag, value, "--json"]);
        let info: serde_json::Value = serde_json::from_str(&printed).unwrap();
        info["memory"][0][1]["activations"].as_u64().unwrap()
    };
    let long = activations("--prompt-tokens", "4000000000");
    assert!(activations("--prompt-tokens", "8000000000") >= long);
    assert!(long > 1 << 60, "{long}");
    assert_eq!(
        activations("--batch-size", "18446744073709551615"),
        u64::MAX
    );
    assert!(
        !Path::new(out).exists(),
        "runs refused before their first step leave nothing behind"
    );
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../gems-models/tests/fixtures/t5-v1_0"
    );
    for ids in ["5,96", "5,-1", "4294967296"] {
        fail(
            &[
                "model",
                "logits",
                "--model-dir",
                fixture,
                "--input-ids",
                ids,
            ],
            &["--input-ids", "outside the model's vocabulary (0 to 95)"],
        );
    }
    fail(
        &[
            "model",
            "logits",
            "--model-dir",
            fixture,
            "--input-ids",
            "5",
            "--decoder-input-ids",
            "0,200",
        ],
        &["--decoder-input-ids", "token id 200"],
    );
    fail(
        &["recommend", out, "--history", "1", "--top", "0"],
        &["--top"],
    );
    // An infinite weight decay turned every weight to NaN at the first step.
    fail(
        &["train", "--out", out, "--weight-decay", "inf"],
        &["command-line flags", "weight_decay", "inf"],
    );
    fail(&["train", "--out", out, "--task-rank", "0"], &["task_rank"]);
    // The optimizer's own checks name the file the value came from.
    let settings = folder.path().join("settings.toml");
    std::fs::write(&settings, "refresh_every = 0\n").unwrap();
    fail(
        &[
            "train",
            "--out",
            out,
            "--config",
            settings.to_str().unwrap(),
        ],
        &["settings.toml", "refresh_every must be at least 1"],
    );
    // Refused before any timing, not after every method was timed.
    fail(
        &["bench", "train", "--matmul-size", "100000"],
        &["--matmul-size must be at most 16384"],
    );
    // A trillion seeds aborted on an allocation; seeds beyond 2^63 - 1 made runs whose
    // config.toml could not be read back.
    let compared = folder.path().join("compared");
    let compared = compared.to_str().unwrap();
    for (seeds, expected) in [
        ("1000000000000", "at most 1000 seeds"),
        ("9223372036854775808,1", "too large"),
    ] {
        fail(
            &["compare", "--out", compared, "--seeds", seeds],
            &[expected],
        );
    }
    fail(
        &[
            "compare",
            "--out",
            compared,
            "--seed",
            "9223372036854775807",
            "--seeds",
            "2",
        ],
        &["passes 9223372036854775807"],
    );
    assert!(!Path::new(compared).exists());
}

/// A beam narrower than the largest cut-off is evaluated with a warning that the deeper
/// cut-offs count only the hits within it; a beam of 20 gives none.
#[test]
fn a_beam_narrower_than_the_cutoffs_is_warned_about() {
    let folder = tempfile::tempdir().unwrap();
    let data = small_synthetic(folder.path());
    let run = folder.path().join("run");
    succeed(&tiny_run(&data, &run, "1"));
    let warning = "a beam width of 5 ranks 5 items";
    let run = run.to_str().unwrap();
    let narrow = gems(&["eval", run]);
    assert!(narrow.status.success());
    assert!(String::from_utf8_lossy(&narrow.stderr).contains(warning));
    let wide = gems(&["eval", run, "--beam-width", "20"]);
    assert!(wide.status.success());
    assert!(!String::from_utf8_lossy(&wide.stderr).contains("ranks"));
}

/// Weights that overflow (a learning rate and weight decay whose product is beyond float32) are
/// never saved: the run stops with one line and writes no model.
#[test]
fn weights_that_overflow_are_never_saved() {
    let folder = tempfile::tempdir().unwrap();
    let data = small_synthetic(folder.path());
    let run = folder.path().join("run");
    let mut args = tiny_run(&data, &run, "2");
    args.extend([
        "--learning-rate",
        "1e30",
        "--weight-decay",
        "1e10",
        "--warmup-steps",
        "0",
        "--max-consecutive-skips",
        "5",
    ]);
    fail(
        &args,
        &["the weights are no longer finite", "holds NaN or infinity"],
    );
    assert!(!run.join("model").exists(), "no model is written");
}

/// Output into a pipe whose reader has gone ends the process quietly, as Unix tools do, with
/// no panic.
#[test]
fn a_closed_output_pipe_ends_the_command_quietly() {
    let mut child = Command::new(GEMS)
        .args(["model", "info"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(output.status.signal(), Some(libc::SIGPIPE), "{stderr}");
}

/// A run's tokenizer edited to hold more tokens than the model has rows is refused by name
/// (an id beyond the rows panicked at the first prompt that used it).
#[test]
fn a_tokenizer_larger_than_the_models_vocabulary_is_refused() {
    let folder = tempfile::tempdir().unwrap();
    let data = small_synthetic(folder.path());
    let run = folder.path().join("run");
    succeed(&tiny_run(&data, &run, "1"));
    let path = run.join("model/tokenizer.json");
    let mut tokenizer: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("model/config.json")).unwrap())
            .unwrap();
    let rows = config["vocab_size"].as_u64().unwrap();
    let ids = tokenizer["model"]["vocab"].as_object().unwrap().values();
    let added = tokenizer["added_tokens"].as_array().unwrap().iter();
    let largest = ids
        .chain(added.map(|token| &token["id"]))
        .filter_map(|id| id.as_u64())
        .max();
    assert_eq!(
        largest,
        Some(rows - 1),
        "a model from scratch has the tokenizer's rows"
    );
    tokenizer["added_tokens"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "id": rows, "content": "<zzq-extra-token>", "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": false
        }));
    std::fs::write(&path, tokenizer.to_string()).unwrap();
    fail(
        &[
            "search",
            run.to_str().unwrap(),
            "--history",
            "1",
            "--query",
            "guitar",
        ],
        &[
            "tokenizer.json",
            &format!("{} tokens, more than the {rows} rows", rows + 1),
        ],
    );
}

#[test]
fn a_new_run_needs_an_empty_directory() {
    let folder = tempfile::tempdir().unwrap();
    let out = folder.path().join("mine");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("metrics.json"), "my own notes").unwrap();
    fail(
        &["train", "--out", out.to_str().unwrap(), "--max-steps", "1"],
        &["not empty", "metrics.json"],
    );
    assert_eq!(
        std::fs::read_to_string(out.join("metrics.json")).unwrap(),
        "my own notes"
    );
    assert!(!out.join("config.toml").exists());
}
