//! `gems model ...`: commands on a backbone model. `gems model logits` prints the logits of a
//! Hugging Face model directory for given token ids, to check the port against PyTorch.

use std::path::PathBuf;

use burn::tensor::{Device, Int, Tensor, TensorData};
use clap::{Args, Subcommand};
use gems_models::{Backbone, ModelError};
use serde_json::{Value, json};

/// Commands on a backbone model.
#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Print `{"shape": [1, positions, vocab], "logits": [...]}` (row-major) for one input.
    Logits(LogitsArgs),
}

/// Arguments of `gems model logits`.
#[derive(Debug, Args)]
pub struct LogitsArgs {
    /// Hugging Face model directory (config.json and model.safetensors or its sharded index).
    #[arg(long)]
    model_dir: PathBuf,
    /// Token ids of the input (the encoder input for T5), comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    input_ids: Vec<i64>,
    /// T5 only: decoder input ids, comma-separated (default: the decoder start token alone).
    #[arg(long, value_delimiter = ',')]
    decoder_input_ids: Option<Vec<i64>>,
    /// Compute backend; this build runs on `flex` (the pure-Rust CPU backend).
    #[arg(long, default_value = "flex")]
    backend: String,
}

impl ModelCommand {
    /// Runs the command, printing its result on standard output.
    pub fn run(self) -> Result<(), ModelError> {
        match self {
            Self::Logits(args) => {
                println!("{}", logits(&args)?);
                Ok(())
            }
        }
    }
}

// Backend selection moves to gems-core::backend.
fn device(backend: &str) -> Result<Device, ModelError> {
    match backend {
        "flex" => Ok(Device::flex()),
        other => Err(ModelError::InvalidInput(format!(
            "unsupported backend {other:?}: this command runs on \"flex\""
        ))),
    }
}

fn row(ids: &[i64], device: &Device) -> Tensor<2, Int> {
    Tensor::from_data(TensorData::new(ids.to_vec(), [1, ids.len()]), device)
}

/// The logits of `args` as the JSON the command prints.
fn logits(args: &LogitsArgs) -> Result<Value, ModelError> {
    let device = device(&args.backend)?;
    let model = Backbone::load(&args.model_dir, &device)?;
    let input = row(&args.input_ids, &device);
    let mask = Tensor::ones([1, args.input_ids.len()], &device);
    let logits = match (&model, &args.decoder_input_ids) {
        (Backbone::T5(t5), decoder) => {
            let start = [t5.config().decoder_start_token_id as i64];
            let decoder = decoder.as_deref().unwrap_or(&start);
            t5.forward(input, mask, row(decoder, &device))
        }
        (Backbone::Qwen2(qwen2), None) => qwen2.forward(input, mask),
        (Backbone::Qwen2(_), Some(_)) => {
            return Err(ModelError::InvalidInput(
                "--decoder-input-ids applies to T5 only; Qwen2 is decoder-only".into(),
            ));
        }
    };
    let shape = logits.dims().to_vec();
    let values: Vec<f32> = logits.into_data().iter::<f32>().collect();
    Ok(json!({ "shape": shape, "logits": values }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../gems-models/tests/fixtures")
            .join(name)
    }

    fn args(name: &str, input_ids: &[i64], decoder_input_ids: Option<&[i64]>) -> LogitsArgs {
        LogitsArgs {
            model_dir: fixture(name),
            input_ids: input_ids.to_vec(),
            decoder_input_ids: decoder_input_ids.map(<[i64]>::to_vec),
            backend: "flex".into(),
        }
    }

    /// The first row of the fixture's reference batch, which has no padding.
    fn reference(name: &str) -> Value {
        let text = std::fs::read_to_string(fixture(name).join("reference.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn max_error(output: &Value, expected: &[f32]) -> f32 {
        let found: Vec<f32> = serde_json::from_value(output["logits"].clone()).unwrap();
        assert_eq!(found.len(), expected.len());
        found
            .iter()
            .zip(expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max)
    }

    fn flat(value: &Value) -> Vec<f32> {
        serde_json::from_value::<Vec<Vec<f32>>>(value.clone())
            .unwrap()
            .concat()
    }

    #[test]
    fn prints_transformers_logits_for_t5_and_qwen2() {
        let t5 = reference("t5-v1_0");
        let input: Vec<i64> = serde_json::from_value(t5["input_ids"][0].clone()).unwrap();
        // Decoder input: the start token, then the first two labels (HF `_shift_right`).
        let labels: Vec<i64> = serde_json::from_value(t5["labels"][0].clone()).unwrap();
        let output = logits(&args("t5-v1_0", &input, Some(&[0, labels[0], labels[1]]))).unwrap();
        assert_eq!(output["shape"], json!([1, 3, 96]));
        let expected: Vec<f32> = flat(&t5["logits"][0]).into_iter().take(3 * 96).collect();
        assert!(max_error(&output, &expected) < 1e-4);
        // Without decoder ids: the start token alone, the first greedy step.
        let output = logits(&args("t5-v1_0", &input, None)).unwrap();
        assert!(
            max_error(
                &output,
                &serde_json::from_value::<Vec<f32>>(t5["greedy"]["logits"][0][0].clone()).unwrap()
            ) < 1e-4
        );

        let qwen2 = reference("qwen2-tied");
        let input: Vec<i64> = serde_json::from_value(qwen2["input_ids"][0].clone()).unwrap();
        let output = logits(&args("qwen2-tied", &input, None)).unwrap();
        assert_eq!(output["shape"], json!([1, 7, 96]));
        assert!(max_error(&output, &flat(&qwen2["logits"][0])) < 1e-4);
    }

    #[test]
    fn refuses_what_it_cannot_do() {
        let mut wgpu = args("t5-v1_0", &[5, 1], None);
        wgpu.backend = "wgpu".into();
        assert!(logits(&wgpu).unwrap_err().to_string().contains("wgpu"));
        let error = logits(&args("qwen2-tied", &[5, 1], Some(&[0]))).unwrap_err();
        assert!(error.to_string().contains("T5 only"));
        let error = logits(&args("missing", &[5, 1], None)).unwrap_err();
        assert!(error.to_string().contains("config.json"));
    }
}
