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
        "6",
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
        // The step ratio pairs each method's steps with AdamW's of the same round: the
        // median (upper, as the step times') of the per-round ratios, between their quartiles.
        let by_round = |m: &Value| -> Vec<(u64, f64)> {
            m["steps_by_round"]
                .as_array()
                .unwrap()
                .iter()
                .map(|pair| (pair[0].as_u64().unwrap(), pair[1].as_f64().unwrap()))
                .collect()
        };
        let times = by_round(method);
        assert!(times.len() >= 6, "{method}");
        let mut ms: Vec<f64> = times.iter().map(|(_, ms)| *ms).collect();
        ms.sort_by(f64::total_cmp);
        assert!(close(ms[ms.len() / 2], step), "{method}");
        let reference = by_round(adamw);
        let mut paired: Vec<f64> = times
            .iter()
            .filter_map(|(round, ms)| {
                let (_, adamw_ms) = reference.iter().find(|(r, _)| r == round)?;
                Some(ms / adamw_ms)
            })
            .collect();
        assert_eq!(
            paired.len(),
            times.len(),
            "every method steps in every round"
        );
        paired.sort_by(f64::total_cmp);
        let median = paired[paired.len() / 2];
        let ratios = &method["vs_adamw"];
        assert!(close(number(ratios, "step"), median), "{method}");
        let effective = median * number(method, "effective_step_ms") / step;
        assert!(
            close(number(ratios, "effective_step"), effective),
            "{method}"
        );
        let quartiles = &ratios["effective_step_quartiles"];
        let (q1, q3) = (
            quartiles[0].as_f64().unwrap(),
            quartiles[1].as_f64().unwrap(),
        );
        assert!(q1 <= effective * (1.0 + 1e-9) && effective <= q3 * (1.0 + 1e-9));
        // From 6 to 8 rounds the median's 95% interval runs from the smallest ratio to the
        // largest (the sign-test ranks).
        assert!((6..=8).contains(&paired.len()), "{method}");
        let interval = &ratios["effective_step_interval"];
        let scale = number(method, "effective_step_ms") / step;
        assert!(close(interval[0].as_f64().unwrap(), paired[0] * scale));
        let largest = paired[paired.len() - 1];
        assert!(close(interval[1].as_f64().unwrap(), largest * scale));
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
    // AdamW's update is element-wise; GEMS projects onto its bases and back.
    assert_eq!(number(adamw, "optimizer_flops_per_step"), 0.0);
    assert!(number(gems, "optimizer_flops_per_step") > 0.0);
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
fn bench_train_from_data_times_the_training_requests_on_the_data_vocabulary() {
    let run = |extra: &[&str]| {
        tiny_bench_train(&[&["--methods", "adamw", "--batch-size", "4"], extra].concat())
    };
    let random = run(&[]);
    let data = run(&["--from-data"]);
    assert!(
        data["requests"].as_str().unwrap().contains("default data"),
        "{}",
        data["requests"]
    );
    // Random requests: 4 · (64 + 8) tokens. The default data's prompts are 42 tokens at most
    // and its targets one token and the end of sequence, so fewer.
    assert_eq!(random["tokens_per_step"], 4 * (64 + 8));
    let tokens = number(&data, "tokens_per_step");
    assert!(tokens > 0.0 && tokens <= (4 * (42 + 2)) as f64, "{tokens}");
    // The preset's 2,000-token vocabulary is cut to the data's tokenizer's, which takes rows of
    // 128 values (d_model) off the tied embedding.
    let removed = number(&random, "parameters") - number(&data, "parameters");
    assert!(removed > 0.0 && removed % 128.0 == 0.0, "{removed}");
    assert!(
        gems(&["bench", "train", "--from-data", "--prompt-tokens", "3"])
            .status
            .code()
            == Some(2),
        "--from-data with --prompt-tokens is refused"
    );
}

#[test]
fn bench_train_times_the_ranks_it_is_given() {
    let run = |extra: &[&str]| {
        tiny_bench_train(&[&["--methods", "gems", "--batch-size", "2"], extra].concat())
    };
    let default = run(&[]);
    let small = run(&["--shared-rank", "8", "--task-rank", "2"]);
    // The compact preset is 128 wide: r_s = 128 / 4 and r_t = r_s / 2 by default.
    assert_eq!(
        (&default["shared_rank"], &default["task_rank"]),
        (&32.into(), &16.into())
    );
    assert_eq!(
        (&small["shared_rank"], &small["task_rank"]),
        (&8.into(), &2.into())
    );
    // The optimizer has them: smaller bases and moments, fewer operations per step.
    let gems = |report: &Value, field: &str| number(&report["methods"][0], field);
    for field in ["optimizer_state_bytes", "optimizer_flops_per_step"] {
        assert!(gems(&small, field) < gems(&default, field), "{field}");
    }
    let only_shared = run(&["--shared-rank", "8"]);
    assert_eq!(only_shared["task_rank"], 4);
}

/// A small, quick `bench train` run with `extra` arguments: preset compact with one block per
/// stack, one timed step after none of warm-up, no matmul rate.
fn tiny_bench_train(extra: &[&str]) -> Value {
    let mut args = vec![
        "bench",
        "train",
        "--preset",
        "compact",
        "--layers",
        "1",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--matmul-size",
        "0",
        "--json",
    ];
    args.extend_from_slice(extra);
    json(&args)
}

/// A [`tiny_bench_train`] run of `--devices`: 2 requests of 16 + 4 tokens per device.
fn bench_devices(extra: &[&str]) -> Value {
    let mut args = vec![
        "--batch-size",
        "2",
        "--prompt-tokens",
        "16",
        "--target-tokens",
        "4",
    ];
    args.extend_from_slice(extra);
    tiny_bench_train(&args)
}

/// The data-parallel rows of a [`bench_devices`] report: one per method and device count, in
/// that order, whose figures agree with the window each count runs (2 requests of 20 tokens
/// per device) and with the single-device rows of the same run.
fn check_scaling(report: &Value, methods: &[&str], counts: &[u64]) {
    let scaling = &report["scaling"];
    let rows = scaling["rows"].as_array().expect("scaling rows");
    let expected: Vec<(&str, u64)> = methods
        .iter()
        .flat_map(|&m| counts.iter().map(move |&c| (m, c)))
        .collect();
    let found: Vec<(&str, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["method"].as_str().unwrap(),
                r["devices"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(found, expected, "{scaling}");
    assert_eq!(
        scaling["devices"].as_array().map(Vec::len),
        counts.last().map(|&c| c as usize),
        "{scaling}"
    );
    for row in rows {
        let devices = number(row, "devices");
        let method = row["method"].as_str().unwrap();
        let single = report["methods"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["method"] == method)
            .expect("the method's single-device row");
        for field in [
            "step_ms",
            "effective_step_ms",
            "samples_per_s",
            "tokens_per_s",
            "scaling_efficiency",
        ] {
            let value = number(row, field);
            assert!(value.is_finite() && value > 0.0, "{field}: {row}");
        }
        assert_eq!(number(row, "samples_per_step"), 2.0 * devices, "{row}");
        let effective = number(row, "effective_step_ms");
        assert!(effective >= number(row, "step_ms"), "{row}");
        assert!(
            close(
                number(row, "samples_per_s"),
                2.0 * devices / (effective / 1e3)
            ),
            "{row}"
        );
        assert!(
            close(
                number(row, "tokens_per_s"),
                2.0 * devices * 20.0 / (effective / 1e3)
            ),
            "{row}"
        );
        let one_device = rows
            .iter()
            .find(|r| r["method"] == method && r["devices"] == 1)
            .unwrap();
        assert!(
            close(
                number(row, "scaling_efficiency"),
                number(row, "samples_per_s") / (devices * number(one_device, "samples_per_s"))
            ),
            "{row}"
        );
        if devices == 1.0 {
            assert!(
                close(
                    number(row, "vs_single_device_step"),
                    number(row, "step_ms") / number(single, "step_ms")
                ),
                "{row}"
            );
        } else {
            assert!(row["vs_single_device_step"].is_null(), "{row}");
        }
        // Low-rank methods time a refresh step too, on every count of devices.
        assert_eq!(row["refresh_step_ms"].is_null(), method == "adamw", "{row}");
    }
}

/// `--devices 1` on the CPU backend: each method through the data-parallel path on its one
/// device, beside its ordinary step.
#[test]
fn bench_train_times_the_data_parallel_path_on_one_device() {
    let report = bench_devices(&["--methods", "adamw,gems", "--devices", "1"]);
    check_machine(&report);
    assert_eq!(report["scaling"]["one_adapter"], false);
    assert_eq!(report["scaling"]["exchange"], "DeviceCopy");
    check_scaling(&report, &["adamw", "gems"], &[1]);
}

// Shared with gems-core's tests, which use all of it.
#[cfg(feature = "wgpu")]
#[allow(dead_code)]
#[path = "../../gems-core/tests/common/wgpu.rs"]
mod wgpu_adapter;

/// Two logical WGPU devices over the one adapter (`--one-adapter`; lavapipe in CI): a row for
/// 1 and for 2 devices. AdamW only: on the software driver every logical device compiles its
/// own kernels, and GEMS's knowledge bases and refresh would triple that time (the flex test
/// above runs GEMS through the same path). Skipped without an adapter unless
/// `GEMS_REQUIRE_WGPU` is set.
#[cfg(feature = "wgpu")]
#[test]
fn bench_train_times_two_logical_wgpu_devices() {
    let adapter = wgpu_adapter::found_or_skipped("a WGPU adapter", || {
        let adapters = burn::tensor::Device::enumerate(burn::tensor::DeviceType::Wgpu).into_vec();
        (!adapters.is_empty()).then_some(())
    });
    if adapter.is_none() {
        return;
    }
    let report = bench_devices(&[
        "--backend",
        "wgpu",
        "--methods",
        "adamw",
        "--devices",
        "2",
        "--one-adapter",
    ]);
    assert_eq!(report["machine"]["backend"], "wgpu");
    assert_eq!(report["scaling"]["one_adapter"], true);
    let devices = &report["scaling"]["devices"];
    assert_ne!(
        devices[0], devices[1],
        "two distinct logical devices: {devices}"
    );
    check_scaling(&report, &["adamw"], &[1, 2]);
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
    // `--devices` as `gems train --devices` takes it, with its errors.
    let message = error(&["bench", "train", "--devices", "2"]);
    assert!(
        message.contains("`flex`") && message.contains("GPU backend"),
        "{message}"
    );
    let message = error(&["bench", "train", "--devices", "0,1,1"]);
    assert!(message.contains("device 1 twice"), "{message}");
    let message = error(&["bench", "train", "--devices", "2", "--one-adapter"]);
    assert!(
        message.contains("wgpu") && message.contains("`flex`"),
        "{message}"
    );
    let message = error(&["bench", "train", "--one-adapter"]);
    assert!(message.contains("--devices"), "{message}");
    if cfg!(feature = "wgpu") {
        let message = error(&["bench", "train", "--backend", "wgpu", "--devices", "64"]);
        assert!(
            message.contains("asks for wgpu device") && message.contains("this machine has"),
            "{message}"
        );
    }
    let message = error(&["bench", "decode", "--layers", "2"]);
    assert!(message.contains("--preset"), "{message}");
    let message = error(&["bench", "svd", "--backend", "tpu"]);
    assert!(message.contains("`tpu`"), "{message}");
    let message = error(&["bench", "svd", "--preset", "compact", "--rank", "300"]);
    assert!(message.contains("--rank 300"), "{message}");
}
