//! `gems bench` through the binary: tiny runs of `train`, `decode` and `svd` whose JSON must
//! hold every field with values that agree with each other and with the model, and clear
//! errors for bad input.

use std::process::{Command, Output};

use serde_json::Value;

fn gems(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gems"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the gems binary runs")
}

fn json(args: &[&str]) -> Value {
    let output = gems(args);
    assert!(
        output.status.success(),
        "gems {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the output is JSON")
}

fn number(value: &Value, field: &str) -> f64 {
    value[field]
        .as_f64()
        .unwrap_or_else(|| panic!("`{field}` is not a number in {value}"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

fn check_machine(report: &Value) {
    let machine = &report["machine"];
    assert_eq!(machine["backend"], "flex");
    assert!(number(machine, "threads") >= 1.0);
    assert!(!machine["gems_version"].as_str().unwrap().is_empty());
    assert!(machine.get("device").is_some(), "{machine}");
}

#[test]
fn bench_train_reports_consistent_figures() {
    let report = json(&[
        "bench",
        "train",
        "--preset",
        "compact",
        "--methods",
        "adamw,gems",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--batch-size",
        "4",
        "--matmul-size",
        "64",
        "--json",
    ]);
    check_machine(&report);
    // 4 requests of 64 prompt and 8 target tokens.
    assert_eq!(report["tokens_per_step"], 4 * (64 + 8));
    assert_eq!(report["batch_size"], 4);
    assert_eq!(report["refresh_every"], 200);
    assert!(number(&report, "flops_per_step") > 0.0);
    assert!(number(&report, "matmul_gflops") > 0.0);
    let parameters = number(&report, "parameters");
    let methods = report["methods"].as_array().unwrap();
    let names: Vec<&str> = methods
        .iter()
        .map(|m| m["method"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["adamw", "gems"]);
    let (adamw, gems) = (&methods[0], &methods[1]);
    for method in methods {
        let step = number(method, "step_ms");
        assert!(step.is_finite() && step > 0.0, "{method}");
        let effective = number(method, "effective_step_ms");
        assert!(
            close(number(method, "samples_per_s"), 4.0 / (effective / 1e3)),
            "{method}"
        );
        assert!(
            close(
                number(method, "tokens_per_s"),
                4.0 * 72.0 / (effective / 1e3)
            ),
            "{method}"
        );
        assert!(
            method["peak_device_bytes"].is_null() || number(method, "peak_device_bytes") > 0.0,
            "{method}"
        );
        let ratios = &method["vs_adamw"];
        assert!(close(
            number(ratios, "step"),
            step / number(adamw, "step_ms")
        ));
        assert!(close(
            number(ratios, "optimizer_state"),
            number(method, "optimizer_state_bytes") / number(adamw, "optimizer_state_bytes")
        ));
    }
    // AdamW: two f32 moments per parameter plus the two per-row bias-correction masses (one
    // f32 each per row of every matrix), no refresh, no knowledge bases.
    let adamw_state = number(adamw, "optimizer_state_bytes");
    assert!(
        adamw_state >= 8.0 * parameters && adamw_state <= 8.0 * parameters * 1.01,
        "{adamw_state} vs {parameters} parameters"
    );
    assert!(adamw["refresh_step_ms"].is_null());
    assert!(close(
        number(adamw, "effective_step_ms"),
        number(adamw, "step_ms")
    ));
    assert_eq!(number(adamw, "knowledge_basis_bytes"), 0.0);
    // GEMS: a refresh step timed and amortised over T = 200; low-rank state; knowledge bases.
    let refresh = number(gems, "refresh_step_ms");
    let amortised = number(gems, "amortised_refresh_ms");
    assert!(close(
        amortised,
        (refresh - number(gems, "step_ms")).max(0.0) / 200.0
    ));
    assert!(close(
        number(gems, "effective_step_ms"),
        number(gems, "step_ms") + amortised
    ));
    assert!(number(gems, "optimizer_state_bytes") < number(adamw, "optimizer_state_bytes"));
    assert!(number(gems, "knowledge_basis_bytes") > 0.0);
    // Reads back from the device: one per ordinary step (the step's statistics), more on a
    // refresh (the bases' small host problems); AdamW never refreshes.
    assert_eq!(gems["device_reads"]["step"], 1);
    assert!(gems["device_reads"]["refresh_step"].as_u64().unwrap() > 1);
    assert_eq!(adamw["device_reads"]["step"], 1);
    assert!(adamw["device_reads"]["refresh_step"].is_null());
}

#[test]
fn bench_decode_and_svd_report_every_measure() {
    let report = json(&[
        "bench",
        "decode",
        "--preset",
        "compact",
        "--layers",
        "1",
        "--new-tokens",
        "3",
        "--candidates",
        "10",
        "--beam-width",
        "4",
        "--batch-size",
        "2",
        "--repeats",
        "1",
        "--json",
    ]);
    check_machine(&report);
    assert_eq!(report["model"], "compact (1 layers)");
    let measures = report["measures"].as_array().unwrap();
    assert_eq!(measures.len(), 3);
    for measure in measures {
        let ms = number(measure, "median_ms");
        assert!(close(number(measure, "requests_per_s"), 2.0 / (ms / 1e3)));
    }
    assert!(close(
        number(&measures[0], "tokens_per_s"),
        6.0 / (number(&measures[0], "median_ms") / 1e3)
    ));
    assert!(measures[2]["tokens_per_s"].is_null());

    let report = json(&[
        "bench",
        "svd",
        "--preset",
        "compact",
        "--repeats",
        "1",
        "--json",
    ]);
    check_machine(&report);
    assert_eq!(report["rank"], 32);
    // The compact T5's projected matrices (2 + 2 blocks): attention 128×128 (4 per encoder
    // block, 8 per decoder block), the MLP 128×512 and 512×128 (one each per block).
    let mut shapes: Vec<(Vec<u64>, u64)> = report["shapes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let energy = number(s, "energy_vs_exact");
            assert!((0.9..=1.0 + 1e-4).contains(&energy), "{s}");
            assert!(number(s, "exact_ms") > 0.0 && number(s, "randomized_ms") > 0.0);
            (
                serde_json::from_value(s["shape"].clone()).unwrap(),
                s["matrices"].as_u64().unwrap(),
            )
        })
        .collect();
    shapes.sort();
    assert_eq!(
        shapes,
        [
            (vec![128, 128], 24),
            (vec![128, 512], 4),
            (vec![512, 128], 4)
        ]
    );
}

/// Standard error from its `error:` line on (clap puts the missing arguments on the lines
/// after it); no panic.
fn error(args: &[&str]) -> String {
    let output = gems(args);
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(!output.status.success(), "gems {args:?} should fail");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let start = stderr
        .find("error:")
        .unwrap_or_else(|| panic!("no error line:\n{stderr}"));
    stderr[start..].to_string()
}

#[test]
fn bench_refuses_bad_input_clearly() {
    let message = error(&["bench", "train", "--methods", "adamw,sgd"]);
    assert!(message.contains("unknown method `sgd`"), "{message}");
    let message = error(&["bench", "train", "--steps", "0"]);
    assert!(message.contains("--steps must be at least 1"), "{message}");
    let message = error(&[
        "bench",
        "train",
        "--model-config",
        "/nonexistent/config.json",
    ]);
    assert!(message.contains("/nonexistent/config.json"), "{message}");
    let message = error(&["bench", "decode", "--layers", "2"]);
    assert!(message.contains("--preset"), "{message}");
    let message = error(&["bench", "svd", "--backend", "tpu"]);
    assert!(message.contains("`tpu`"), "{message}");
    let message = error(&["bench", "svd", "--preset", "compact", "--rank", "300"]);
    assert!(message.contains("--rank 300"), "{message}");
}
