//! The `gems` binary end to end on the embedded synthetic data: train → eval → recommend →
//! search, exact resume, analyses, and one clear line for every kind of user mistake.

mod common;

use std::path::{Path, PathBuf};

use common::{gems, small_synthetic, succeed};

/// Runs `gems args`, expects a failure and one line of standard error that starts with `error:`
/// and contains every `expected` fragment (the last line; for clap's usage errors, exit code 2,
/// the line before its hint); no panic.
fn fail(args: &[&str], expected: &[&str]) {
    let output = gems(args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "gems {args:?} should fail");
    assert!(
        !stderr.contains("panicked"),
        "gems {args:?} panicked:\n{stderr}"
    );
    // Our errors are the last line; clap's usage errors (exit code 2) add a hint line after it.
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let message = match output.status.code() {
        Some(2) => lines
            .iter()
            .find(|l| l.starts_with("error:"))
            .copied()
            .unwrap_or_default(),
        _ => lines.last().copied().unwrap_or_default(),
    };
    assert!(
        message.starts_with("error:"),
        "gems {args:?}: no one-line error:\n{stderr}"
    );
    for fragment in expected {
        assert!(
            message.contains(fragment),
            "gems {args:?}: `{fragment}` missing from:\n{stderr}"
        );
    }
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .expect("valid JSON")
}

fn ndcg10(report: &serde_json::Value, task: &str) -> f64 {
    report["tasks"][task]["ndcg"]["10"]
        .as_f64()
        .unwrap_or_else(|| panic!("no ndcg@10 for {task} in {report}"))
}

/// Settings of a short run that still learns: 4 epochs of the synthetic data.
const SHORT: &[&str] = &["--epochs", "3", "--validation-requests", "40"];

#[test]
fn train_eval_recommend_and_search_on_the_synthetic_data() {
    let folder = tempfile::tempdir().unwrap();
    let run = folder.path().join("run");
    let run_arg = run.to_str().unwrap();
    let mut args = vec!["train", "--out", run_arg];
    args.extend_from_slice(SHORT);
    let printed = succeed(&args);
    assert!(
        printed.contains("Test, sampled protocol") && printed.contains("| gems |"),
        "{printed}"
    );

    for file in [
        "config.toml",
        "manifest.json",
        "metrics.json",
        "curves.json",
        "plots/loss.svg",
        "plots/validation.svg",
    ] {
        assert!(run.join(file).is_file(), "{file} missing");
    }
    for file in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "identifiers.json",
    ] {
        assert!(
            run.join("model").join(file).is_file(),
            "model/{file} missing"
        );
        assert!(
            run.join("checkpoint/model").join(file).is_file(),
            "checkpoint/model/{file} missing"
        );
    }
    assert!(run.join("checkpoint/optimizer.safetensors").is_file());
    let manifest = read_json(&run.join("manifest.json"));
    assert_eq!(manifest["status"], "finished");
    assert_eq!(manifest["settings"]["method"], "gems");
    assert!(manifest["knowledge_basis_bytes"].as_u64().unwrap() > 0);
    assert_eq!(manifest["skipped_steps"], 0);
    let ranks = manifest["effective_ranks"].as_object().unwrap();
    assert!(!ranks.is_empty() && ranks.values().all(|r| r["shared"].as_u64().unwrap() > 0));
    assert!(printed.contains("effective ranks over"), "{printed}");
    assert!(
        read_json(&run.join("curves.json"))["skipped_steps"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // The trained model clears the model-free floor on recommendation (popularity) and search
    // (popularity), sampled protocol.
    let metrics = read_json(&run.join("metrics.json"));
    let popularity = &metrics["floor_sampled"][0];
    assert_eq!(popularity["name"], "popularity");
    for task in ["search", "rec"] {
        let (model, floor) = (ndcg10(&metrics["sampled"], task), ndcg10(popularity, task));
        assert!(
            model > floor,
            "{task}: NDCG@10 {model} does not beat popularity {floor}"
        );
    }
    assert!(
        metrics["full_ranking"]["tasks"]["rec"]["recall"]["20"]
            .as_f64()
            .is_some()
    );
    let curves = read_json(&run.join("curves.json"));
    assert_eq!(
        curves["steps"].as_array().unwrap().len() as u64,
        manifest["steps"].as_u64().unwrap()
    );
    assert!(!curves["conflict"].as_array().unwrap().is_empty());

    // eval reproduces the test metrics of training, JSON on standard output.
    let evaluated: serde_json::Value =
        serde_json::from_str(&succeed(&["eval", run_arg, "--json", "-"])).unwrap();
    for task in ["search", "rec"] {
        assert_eq!(
            ndcg10(&evaluated["sampled"], task),
            ndcg10(&metrics["sampled"], task)
        );
    }

    let recommended = succeed(&["recommend", run_arg, "--user", "3", "--top", "5"]);
    assert!(
        recommended.contains("top 5:") && recommended.contains(" 5. "),
        "{recommended}"
    );
    let searched = succeed(&[
        "search",
        run_arg,
        "--history",
        "1,2,3",
        "--query",
        "red lamp",
        "--top",
        "3",
    ]);
    assert!(
        searched.contains("query: red lamp") && searched.contains(" 3. "),
        "{searched}"
    );

    // Analyses on the run.
    let analysis = folder.path().join("analysis");
    let out = analysis.to_str().unwrap();
    let conflict = succeed(&["analyze", "conflict", run_arg, "--out", out]);
    assert!(conflict.contains("mean over layers"), "{conflict}");
    assert!(analysis.join("conflict.svg").is_file());
    // A record of cosines edited by hand: a layer missing from the first record is still
    // tabulated from the later ones, and a record that names no layer is refused.
    let curves_path = run.join("curves.json");
    let original = std::fs::read_to_string(&curves_path).unwrap();
    let mut curves: serde_json::Value = serde_json::from_str(&original).unwrap();
    let records = curves["conflict"].as_array_mut().unwrap();
    assert!(records.len() >= 2, "{records:?}");
    let dropped = records[0]["layers"].as_array_mut().unwrap().remove(0);
    let dropped_layer = dropped[0].as_str().unwrap().to_string();
    std::fs::write(&curves_path, curves.to_string()).unwrap();
    let conflict = succeed(&["analyze", "conflict", run_arg, "--out", out]);
    assert!(conflict.contains(&dropped_layer), "{conflict}");
    curves["conflict"][1]["layers"] = serde_json::json!([]);
    let step = curves["conflict"][1]["step"].clone();
    std::fs::write(&curves_path, curves.to_string()).unwrap();
    fail(
        &["analyze", "conflict", run_arg, "--out", out],
        &["curves.json", &format!("step {step} name no layer")],
    );
    std::fs::write(&curves_path, original).unwrap();
    let retention = succeed(&["analyze", "retention", run_arg, "--out", out]);
    assert!(
        retention.contains("general-text LM loss") && retention.contains("pre-trained tokens only"),
        "{retention}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(analysis.join("retention.json")).unwrap())
            .unwrap();
    let (_, run) = report.as_object().unwrap().iter().next().unwrap();
    // A model from scratch: its tokenizer holds the item tokens, so none were added and the
    // losses within the pre-trained tokens are the losses.
    for when in ["before", "after"] {
        assert_eq!(
            run[format!("general_loss_{when}_within_pretrained_tokens")],
            run[format!("general_loss_{when}")],
            "{run}"
        );
    }

    // A run directory is not overwritten by accident.
    fail(
        &["train", "--out", run_arg, "--max-steps", "1"],
        &["already holds a run", "--resume"],
    );
}

/// `gems train --out FOLDER/NAME` with `flags`, which must succeed; the run's directory.
fn train_in(folder: &Path, name: &str, flags: &[&str]) -> PathBuf {
    let out = folder.join(name);
    let mut args = vec!["train", "--out", out.to_str().unwrap()];
    args.extend_from_slice(flags);
    succeed(&args);
    out
}

fn files_of(model: &Path) -> Vec<u8> {
    std::fs::read(model.join("model.safetensors")).unwrap()
}

#[test]
fn a_paused_and_resumed_run_ends_with_the_same_weights() {
    let folder = tempfile::tempdir().unwrap();
    let straight = folder.path().join("straight");
    let paused = folder.path().join("paused");
    let settings = [
        "--max-steps",
        "12",
        "--refresh-every",
        "5",
        "--weight-decay",
        "0.01",
    ];
    let run = |out: &PathBuf, extra: &[&str]| {
        let mut args = vec!["train", "--out", out.to_str().unwrap()];
        args.extend_from_slice(&settings);
        args.extend_from_slice(extra);
        succeed(&args)
    };
    run(&straight, &[]);
    let printed = run(&paused, &["--stop-after", "7"]);
    assert!(printed.contains("paused after step 7"), "{printed}");
    assert!(
        !paused.join("model").exists(),
        "a paused run has no final model yet"
    );
    fail(
        &[
            "train",
            "--resume",
            paused.to_str().unwrap(),
            "--epochs",
            "3",
        ],
        &["--resume", "drop the other flags"],
    );
    // The time of earlier sessions is carried into the manifest: here an hour of them.
    let progress_path = paused.join("checkpoint/progress.json");
    let mut progress = read_json(&progress_path);
    assert!(progress["training_seconds"].as_f64().unwrap() > 0.0);
    progress["training_seconds"] = serde_json::json!(3600.0);
    std::fs::write(&progress_path, progress.to_string()).unwrap();
    succeed(&["train", "--resume", paused.to_str().unwrap()]);
    let seconds = read_json(&paused.join("manifest.json"))["training_seconds"]
        .as_f64()
        .unwrap();
    assert!(seconds > 3600.0 && seconds < 4000.0, "{seconds}");
    assert!(
        files_of(&straight.join("model")) == files_of(&paused.join("model")),
        "resumed weights differ from the uninterrupted run's"
    );
    assert_eq!(
        std::fs::read(straight.join("checkpoint/optimizer.safetensors")).unwrap(),
        std::fs::read(paused.join("checkpoint/optimizer.safetensors")).unwrap()
    );
}

#[test]
fn user_mistakes_end_in_one_clear_line() {
    let folder = tempfile::tempdir().unwrap();
    let out = folder.path().join("run");
    let out = out.to_str().unwrap();
    fail(
        &["train", "--method", "sgd", "--out", out],
        &["unknown method `sgd`"],
    );
    fail(
        &["train", "--backend", "tpu", "--out", out],
        &["backend `tpu`", "flex"],
    );
    fail(
        &["train", "--data", "/no/such/data", "--out", out],
        &["/no/such/data", "not a directory"],
    );
    fail(
        &["train", "--model-dir", "/no/such/model", "--out", out],
        &["/no/such/model"],
    );
    fail(
        &["train", "--config", "/no/such/file.toml", "--out", out],
        &["/no/such/file.toml"],
    );
    let config = folder.path().join("bad.toml");
    std::fs::write(&config, "epochs = 2\nlearnin_rate = 0.1\n").unwrap();
    fail(
        &["train", "--config", config.to_str().unwrap(), "--out", out],
        &["bad.toml", "learnin_rate"],
    );
    std::fs::write(&config, "epochs = \"two\"\n").unwrap();
    fail(
        &["train", "--config", config.to_str().unwrap(), "--out", out],
        &["bad.toml", "epochs"],
    );
    fail(
        &["train", "--batch-size", "0", "--out", out],
        &["batch_size"],
    );

    // Small data directories: one valid, one with a malformed line.
    let make_data = |name: &str| {
        let data = folder.path().join(name);
        succeed(&[
            "data",
            "convert",
            "synthetic",
            "--out",
            data.to_str().unwrap(),
            "--users",
            "30",
        ]);
        succeed(&["data", "split", data.to_str().unwrap()]);
        data
    };
    let data = make_data("data");
    let broken = make_data("broken");
    let train_file = broken.join("train.jsonl");
    let text = std::fs::read_to_string(&train_file).unwrap().replacen(
        "\"task\":\"rec\"",
        "\"task\":\"recommend\"",
        1,
    );
    std::fs::write(&train_file, text).unwrap();
    fail(
        &["train", "--data", broken.to_str().unwrap(), "--out", out],
        &["train.jsonl", "task"],
    );

    // Runs that are missing or do not match.
    fail(
        &["eval", "/no/such/run"],
        &["/no/such/run", "not a run directory"],
    );
    fail(&["train", "--resume", "/no/such/run"], &["/no/such/run"]);
    let run = folder.path().join("short");
    let run_arg = run.to_str().unwrap();
    succeed(&["train", "--out", run_arg, "--max-steps", "2"]);
    fail(
        &["recommend", run_arg, "--history", "1,999999"],
        &["999999", "catalogue"],
    );
    fail(
        &["search", run_arg, "--user", "3", "--query", " "],
        &["--query"],
    );
    // The run's data changes under it: evaluation refuses to mix them.
    let config_path = run.join("config.toml");
    let config = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(
        &config_path,
        config.replace(
            "data = \"synthetic\"",
            &format!("data = \"{}\"", data.display()),
        ),
    )
    .unwrap();
    fail(&["eval", run_arg], &["short", "other data"]);
    // Without its manifest (a run stopped between its final model and the manifest), the
    // checkpoint's record is read instead; a record without the fingerprint is an error.
    let manifest_path = run.join("manifest.json");
    let mut manifest = read_json(&manifest_path);
    std::fs::remove_file(&manifest_path).unwrap();
    fail(&["eval", run_arg], &["short", "other data"]);
    manifest.as_object_mut().unwrap().remove("data_fingerprint");
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    fail(
        &["eval", run_arg],
        &["manifest.json", "has no data_fingerprint"],
    );
}

#[test]
fn model_info_lists_projected_matrices_and_state_per_method() {
    let printed = succeed(&["model", "info", "--vocab-size", "500"]);
    assert!(
        printed.contains("encoder.block.0.layer.0.SelfAttention.q.weight"),
        "{printed}"
    );
    assert!(
        printed.contains("gems") && printed.contains("% of AdamW"),
        "{printed}"
    );
    let info: serde_json::Value = serde_json::from_str(&succeed(&[
        "model",
        "info",
        "--vocab-size",
        "500",
        "--json",
    ]))
    .unwrap();
    // The compact T5: 2 + 2 blocks, q/k/v/o + wi/wo per encoder block, + cross-attention in the decoder.
    assert_eq!(
        info["projected_matrices"].as_array().unwrap().len(),
        2 * 6 + 2 * 10
    );
    let bytes = |method: &str| {
        info["optimizer_state_bytes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e[0] == method)
            .and_then(|e| e[1].as_u64())
            .unwrap()
    };
    assert!(bytes("galore") < bytes("gems") && bytes("gems") < bytes("adamw"));
    assert_eq!(
        info["effective_ranks"].as_object().unwrap().len(),
        2 * 6 + 2 * 10
    );
    assert!(printed.contains("r_s = "), "{printed}");
    fail(
        &["model", "info", "--model-dir", "/no/such/model"],
        &["/no/such/model"],
    );
}

/// `gems compare` untuned: one table row per method naming its learning rate, the floors as
/// reference rows, and a JSON twin (the tuned comparison: the test after it).
#[test]
fn compare_tabulates_every_method_beside_the_floors() {
    let folder = tempfile::tempdir().unwrap();
    let data = small_synthetic(folder.path());
    let out = folder.path().join("compare");
    let common = [
        "--data",
        data.to_str().unwrap(),
        "--max-steps",
        "3",
        "--validation-requests",
        "8",
        "--beam-width",
        "4",
    ];
    let mut args = vec![
        "compare",
        "--out",
        out.to_str().unwrap(),
        "--methods",
        "gems,adamw",
        "--method-learning-rates",
        "adamw=1e-3",
    ];
    args.extend_from_slice(&common);
    let printed = succeed(&args);
    let table = std::fs::read_to_string(out.join("compare.md")).unwrap();
    assert!(
        printed.ends_with(&format!("{table}\n")),
        "the table is printed last:\n{printed}"
    );
    for row in [
        "| gems (lr 6e-3) |",
        "| adamw (lr 1e-3) |",
        "| popularity (floor) |",
        "| bm25 (floor) |",
    ] {
        assert_eq!(
            table.matches(row).count(),
            2,
            "{row} once per protocol in:\n{table}"
        );
    }
    assert!(table.contains("Training time per method"), "{table}");
    assert!(table.contains("gems compare --tune"), "{table}");
    let saved = read_json(&out.join("compare.json"));
    assert_eq!(saved["methods"].as_array().unwrap().len(), 2);
    assert_eq!(
        read_json(&out.join("runs/adamw/lr1e-3-seed42-epochs8/manifest.json"))["settings"]["learning_rate"],
        1e-3
    );

    let elsewhere = folder.path().join("elsewhere");
    let elsewhere = elsewhere.to_str().unwrap();
    fail(
        &[
            "compare",
            "--out",
            elsewhere,
            "--methods",
            "gems",
            "--method-learning-rates",
            "lora=1e-3",
        ],
        &["lora", "not in --methods"],
    );
    fail(
        &[
            "compare",
            "--out",
            elsewhere,
            "--method-learning-rates",
            "adamw=fast",
        ],
        &["adamw=fast", "positive number"],
    );
    fail(
        &[
            "compare",
            "--out",
            elsewhere,
            "--method-learning-rates",
            "sgd=1e-3",
        ],
        &["sgd"],
    );
    fail(
        &["compare", "--out", elsewhere, "--method", "gems"],
        &["--methods"],
    );
}

/// A tuned, two-seed `gems compare`: each method's chosen learning rate is its best on
/// validation, the table's mean ± std and the paired test match the runs' own files, and a
/// comparison interrupted (one run never started, one killed before its evaluation) continues
/// without redoing finished runs.
#[test]
fn a_tuned_comparison_chooses_on_validation_and_resumes_where_it_stopped() {
    let folder = tempfile::tempdir().unwrap();
    let data = small_synthetic(folder.path());
    let out = folder.path().join("compare");
    let args = [
        "compare",
        "--out",
        out.to_str().unwrap(),
        "--methods",
        "gems,adamw",
        "--tune",
        "--lr-grid",
        "1e-3,1e-2",
        "--seeds",
        "2",
        "--data",
        data.to_str().unwrap(),
        "--epochs",
        "1",
        "--batch-size",
        "64",
        "--validation-requests",
        "8",
        "--beam-width",
        "4",
    ];
    let printed = succeed(&args);
    let report = read_json(&out.join("compare.json"));
    assert_eq!(
        report["this_invocation"]["trained"], 6,
        "2 × 2 grid points + 2 seeds"
    );
    assert_eq!(report["seeds"], serde_json::json!([42, 43]));
    assert!(out.join("tuning.svg").is_file());
    assert!(printed.contains(" ± "), "{printed}");
    // With two grid points every choice is at an edge of the grid, which the notes say.
    assert!(
        printed.contains("Chosen learning rate at the edge of its grid for gems, adamw"),
        "{printed}"
    );
    let methods = report["methods"].as_array().unwrap();
    let run_metrics = |path: &serde_json::Value| {
        read_json(&PathBuf::from(path.as_str().unwrap()).join("metrics.json"))
    };
    for method in methods {
        // The chosen rate is the best validation score among the grid's runs (ties: first).
        let mut best = (f64::NEG_INFINITY, 0.0);
        for point in method["tuning"].as_array().unwrap() {
            let run = PathBuf::from(point["run"].as_str().unwrap());
            let validation = read_json(&run.join("manifest.json"))["best_validation"][0]
                .as_f64()
                .unwrap();
            assert_eq!(point["validation_ndcg_at_10"].as_f64().unwrap(), validation);
            if validation > best.0 {
                best = (validation, point["learning_rate"].as_f64().unwrap());
            }
        }
        assert_eq!(method["chosen"]["learning_rate"].as_f64().unwrap(), best.1);
        // Mean and sample std over the two seed runs, from their metrics.json.
        let runs = method["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 2);
        for task in ["search", "rec"] {
            let values: Vec<f64> = runs
                .iter()
                .map(|r| ndcg10(&run_metrics(r)["sampled"], task))
                .collect();
            let mean = (values[0] + values[1]) / 2.0;
            let std = (values[0] - values[1]).abs() / 2f64.sqrt();
            assert!((ndcg10(&method["sampled"]["mean"], task) - mean).abs() < 1e-12);
            assert!((ndcg10(&method["sampled"]["std"], task) - std).abs() < 1e-12);
        }
    }
    // adamw against gems: t of the per-request NDCG@10 differences (seed means) of rec requests.
    let per_request = |method: &serde_json::Value| -> (Vec<String>, Vec<f64>) {
        let runs: Vec<serde_json::Value> = method["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| run_metrics(r)["per_request"].clone())
            .collect();
        let tasks: Vec<String> = runs[0]["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect();
        let values = (0..tasks.len())
            .map(|i| {
                runs.iter()
                    .map(|r| r["sampled"][i].as_f64().unwrap())
                    .sum::<f64>()
                    / runs.len() as f64
            })
            .collect();
        (tasks, values)
    };
    let (tasks, gems_values) = per_request(&methods[0]);
    let (_, adamw_values) = per_request(&methods[1]);
    let differences: Vec<f64> = (0..tasks.len())
        .filter(|i| tasks[*i] == "rec")
        .map(|i| adamw_values[i] - gems_values[i])
        .collect();
    let n = differences.len() as f64;
    let mean = differences.iter().sum::<f64>() / n;
    let variance = differences.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let test = &methods[1]["against_reference"]["sampled"]["rec"];
    assert_eq!(test["pairs"].as_u64().unwrap() as f64, n);
    if variance > 0.0 {
        let t = mean / (variance / n).sqrt();
        assert!(
            (test["t"].as_f64().unwrap() - t).abs() < 1e-9,
            "{test} vs t = {t}"
        );
    }
    let p = test["p_value"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&p));
    assert!(
        methods[0]["against_reference"].is_null(),
        "gems is the reference"
    );

    // Interrupt: one grid run never started, one seed run killed before its evaluation.
    let grid_run = PathBuf::from(methods[1]["tuning"][0]["run"].as_str().unwrap());
    let seed_run = PathBuf::from(methods[0]["runs"][1].as_str().unwrap());
    std::fs::remove_dir_all(&grid_run).unwrap();
    for file in ["metrics.json", "manifest.json"] {
        std::fs::remove_file(seed_run.join(file)).unwrap();
    }
    let untouched = PathBuf::from(methods[0]["runs"][0].as_str().unwrap()).join("metrics.json");
    let written = std::fs::metadata(&untouched).unwrap().modified().unwrap();
    succeed(&args);
    let resumed = read_json(&out.join("compare.json"));
    assert_eq!(
        resumed["this_invocation"],
        serde_json::json!({ "trained": 1, "resumed": 1, "reused": 4 })
    );
    assert_eq!(
        std::fs::metadata(&untouched).unwrap().modified().unwrap(),
        written
    );
    for (before, after) in methods.iter().zip(resumed["methods"].as_array().unwrap()) {
        assert_eq!(before["chosen"], after["chosen"]);
    }

    // A time budget too small for the plan drops the second seed and says so; nothing is trained.
    let mut budget = args.to_vec();
    budget.extend_from_slice(&["--time-budget", "0.001"]);
    let output = gems(&budget);
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("time budget: dropped seeds [43]"),
        "{stderr}"
    );
    let shrunk = read_json(&out.join("compare.json"));
    assert_eq!(shrunk["seeds"], serde_json::json!([42]));
    assert_eq!(shrunk["this_invocation"]["trained"], 0);

    fail(
        &[
            "compare",
            "--out",
            out.to_str().unwrap(),
            "--tune",
            "--lr-grid",
            "1e-2:1e-3:3",
        ],
        &["LOW must not exceed HIGH"],
    );
}

/// The identifiers of a run, `identifier` by `item`.
fn identifiers_of(run: &Path) -> Vec<(u64, String)> {
    let saved = read_json(&run.join("model/identifiers.json"));
    saved["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            (
                entry["item"].as_u64().unwrap(),
                entry["identifier"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A pre-trained Hugging Face directory (the tiny fixtures of gems-models) trains with semantic
/// identifiers built from its own encoder's item embeddings; the same data from scratch builds
/// them from text embeddings instead, so the two differ.
#[test]
fn pretrained_models_train_with_semantic_identifiers_from_their_own_states() {
    let folder = tempfile::tempdir().unwrap();
    let data = small_synthetic(folder.path());
    let data_arg = data.to_str().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../gems-models/tests/fixtures");
    let short = [
        "--id-scheme",
        "semantic",
        "--max-steps",
        "2",
        "--validation-requests",
        "8",
        "--beam-width",
        "4",
    ];
    let train = |out: &Path, extra: &[&str]| {
        let mut args = vec!["train", "--data", data_arg, "--out", out.to_str().unwrap()];
        args.extend_from_slice(&short);
        args.extend_from_slice(extra);
        succeed(&args)
    };
    let scratch = folder.path().join("scratch");
    train(&scratch, &[]);
    let from_text = identifiers_of(&scratch);
    assert_eq!(from_text.len(), 40);
    for (family, fixture) in [("t5", "t5-v1_1"), ("qwen2", "qwen2-tied")] {
        let run = folder.path().join(fixture);
        let printed = train(
            &run,
            &[
                "--model",
                family,
                "--model-dir",
                fixtures.join(fixture).to_str().unwrap(),
            ],
        );
        assert!(printed.contains("Test, sampled protocol"), "{printed}");
        let saved = read_json(&run.join("model/identifiers.json"));
        assert!(
            saved["scheme"].to_string().contains("emantic"),
            "{fixture}: {}",
            saved["scheme"]
        );
        let from_model = identifiers_of(&run);
        assert_eq!(from_model.len(), 40);
        assert_ne!(
            from_model, from_text,
            "{fixture}: identifiers do not depend on the model's embeddings"
        );
    }
}

/// `--devices` (data-parallel training): one device through the data-parallel path trains the
/// plain run's weights bit for bit (null space from the summed covariances, refreshes, the
/// replica step), a run paused there resumes on the plain path to the same weights, and the
/// manifest records the devices. Several devices need a GPU backend with as many devices.
#[test]
fn one_device_through_the_data_parallel_path_trains_the_plain_runs_weights() {
    let folder = tempfile::tempdir().unwrap();
    // The data-parallel path holds every task's full gradients (they are summed across
    // replicas), so the plain run does too, for bit-identical weights.
    let settings = [
        "--max-steps",
        "6",
        "--refresh-every",
        "3",
        "--full-task-gradients",
    ];
    let run = |name: &str, extra: &[&str]| {
        train_in(folder.path(), name, &[&settings[..], extra].concat())
    };
    let plain = run("plain", &[]);
    let parallel = run("parallel", &["--devices", "1"]);
    assert!(
        files_of(&plain.join("model")) == files_of(&parallel.join("model")),
        "one replica through the data-parallel path differs from the plain run"
    );
    assert_eq!(
        std::fs::read(plain.join("checkpoint/optimizer.safetensors")).unwrap(),
        std::fs::read(parallel.join("checkpoint/optimizer.safetensors")).unwrap()
    );
    let devices = read_json(&parallel.join("manifest.json"))["devices"].clone();
    assert_eq!(devices.as_array().map(Vec::len), Some(1), "{devices}");

    let paused = run("paused", &["--devices", "1", "--stop-after", "4"]);
    succeed(&["train", "--resume", paused.to_str().unwrap()]);
    assert!(
        files_of(&plain.join("model")) == files_of(&paused.join("model")),
        "a data-parallel checkpoint resumed on one device differs from the plain run"
    );

    let out = folder.path().join("mistakes");
    let out = out.to_str().unwrap();
    fail(
        &["train", "--devices", "2", "--out", out],
        &["`flex`", "GPU backend"],
    );
    fail(
        &["train", "--devices", "0", "--out", out],
        &["--devices", "at least 1"],
    );
    fail(
        &["train", "--devices", "0,1,1", "--out", out],
        &["device 1 twice"],
    );
    fail(
        &["train", "--devices", "two", "--out", out],
        &["--devices", "`two`"],
    );
    if cfg!(feature = "wgpu") {
        fail(
            &[
                "train",
                "--backend",
                "wgpu",
                "--devices",
                "64",
                "--out",
                out,
            ],
            &["asks for wgpu device", "this machine has"],
        );
        fail(
            &[
                "train",
                "--backend",
                "wgpu:0",
                "--devices",
                "2",
                "--out",
                out,
            ],
            &["without an index"],
        );
    }
}

/// The float32 tensors of a saved model, by name.
fn tensors_of(folder: &Path) -> Vec<(String, Vec<f32>)> {
    let bytes = std::fs::read(folder.join("model.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<f32>)> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (name, values)
        })
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    tensors
}

/// Condensing each task's gradients but the last to low-rank coordinates after its backward
/// pass (the default) trains what holding every task's in full does, up to rounding, over steps
/// with and without refreshes: every step's losses agree to 1e-4 (relative; about 4e-6 here)
/// and the weights' update from the initial ones to 1.5% (0.55% here: Adam amplifies rounding
/// where a coordinate's gradient is near zero). Condensing a task onto the other task's basis
/// moves the losses by 1.2e-3 and the update by 3%.
#[test]
fn condensed_task_gradients_train_as_full_ones() {
    let folder = tempfile::tempdir().unwrap();
    let run = |name: &str, extra: &[&str]| {
        let settings = ["--max-steps", "9", "--refresh-every", "4"];
        train_in(folder.path(), name, &[&settings[..], extra].concat())
    };
    let full = run("full", &["--full-task-gradients"]);
    let condensed = run("condensed", &[]);
    let losses = |run: &Path| -> Vec<f64> {
        read_json(&run.join("curves.json"))["steps"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|step| step["losses"].as_array().unwrap().clone())
            .map(|loss| loss.as_f64().unwrap())
            .collect()
    };
    let (expected, found) = (losses(&full), losses(&condensed));
    assert_eq!(expected.len(), 18);
    for (e, f) in expected.iter().zip(&found) {
        assert!(
            (e - f).abs() <= 1e-4 * e.abs(),
            "losses {expected:?} vs {found:?}"
        );
    }
    let initial = tensors_of(&full.join("base"));
    assert_eq!(initial, tensors_of(&condensed.join("base")));
    let (mut update, mut difference) = (0.0f64, 0.0f64);
    for (((_, start), (_, a)), (_, b)) in initial
        .iter()
        .zip(tensors_of(&full.join("model")))
        .zip(tensors_of(&condensed.join("model")))
    {
        for ((s, a), b) in start.iter().zip(&a).zip(&b) {
            update += f64::from(a - s).powi(2);
            difference += f64::from(a - b).powi(2);
        }
    }
    assert!(update > 1e-2, "the weights moved by {update:e}");
    assert!(
        difference.sqrt() <= 1.5e-2 * update.sqrt(),
        "updates differ by {:e} of their size",
        difference.sqrt() / update.sqrt()
    );
    let memory = read_json(&condensed.join("memory.json"));
    assert!(memory["gradients"].as_u64() < memory["first_step_gradients"].as_u64());
}

/// A run whose losses turn non-finite skips those steps (nothing is applied) and stops with one
/// clear line after `max_consecutive_skips` of them in a row.
#[test]
fn a_diverging_run_skips_non_finite_steps_then_stops_clearly() {
    let folder = tempfile::tempdir().unwrap();
    let run = folder.path().join("run");
    let mut args = vec!["train", "--out", run.to_str().unwrap()];
    args.extend_from_slice(SHORT);
    args.extend_from_slice(&[
        "--learning-rate",
        "1e30",
        "--warmup-steps",
        "0",
        "--max-consecutive-skips",
        "2",
    ]);
    fail(
        &args,
        &[
            "2 steps in a row had a non-finite loss or gradient",
            "start the run again (it had no checkpoint yet)",
        ],
    );
}

/// Skipped steps count as steps taken but not applied: a run paused after some resumes and ends
/// as the uninterrupted run does.
#[test]
fn a_run_paused_after_skipped_steps_resumes_to_the_same_end() {
    let folder = tempfile::tempdir().unwrap();
    let settings = [
        "--max-steps",
        "5",
        "--learning-rate",
        "1e30",
        "--warmup-steps",
        "0",
        "--max-consecutive-skips",
        "100",
    ];
    let run = |name: &str, extra: &[&str]| {
        train_in(folder.path(), name, &[SHORT, &settings, extra].concat())
    };
    let straight = run("straight", &[]);
    let paused = run("paused", &["--stop-after", "3"]);
    let progress = read_json(&paused.join("checkpoint/progress.json"));
    assert_eq!(
        progress["curves"]["skipped_steps"],
        serde_json::json!([2, 3])
    );
    succeed(&["train", "--resume", paused.to_str().unwrap()]);
    let curves = read_json(&straight.join("curves.json"));
    assert_eq!(curves["skipped_steps"], serde_json::json!([2, 3, 4, 5]));
    assert_eq!(
        read_json(&straight.join("curves.json")),
        read_json(&paused.join("curves.json"))
    );
    assert!(
        files_of(&straight.join("model")) == files_of(&paused.join("model")),
        "resumed weights differ from the uninterrupted run's"
    );
}
