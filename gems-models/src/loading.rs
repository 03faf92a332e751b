//! Loading Hugging Face checkpoints: `config.json` plus `model.safetensors` or the shards listed
//! by `model.safetensors.index.json`, in f32, f16 or bf16.
//!
//! The model skeleton is built lazily (no random initialisation is computed), then a
//! [`ModuleMapper`] walks it and replaces every parameter by the checkpoint tensor of the same HF
//! name, transposing `Linear` weights into Burn's `[d_in, d_out]`. Every missing, unexpected or
//! mis-shaped tensor is collected and reported in one error.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Device, Tensor, TensorData};
use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;

use crate::backbone::Backbone;
use crate::config::ModelConfig;
use crate::error::{ModelError, ShapeMismatch};
use crate::paths::{PathTracker, checkpoint_shape};
use crate::qwen2::Qwen2ForCausalLM;
use crate::t5::T5ForConditionalGeneration;

/// Name of the model configuration in a Hugging Face model directory.
pub const CONFIG_FILE: &str = "config.json";
/// Name of the single-file checkpoint.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Name of the index of a sharded checkpoint.
pub const WEIGHTS_INDEX_FILE: &str = "model.safetensors.index.json";

/// Checkpoint tensors that duplicate a model parameter (tied weights) or that HF itself ignores;
/// they are accepted without being loaded.
const IGNORED: &[&str] = &[
    "encoder.embed_tokens.weight",
    "decoder.embed_tokens.weight",
    "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",
];

/// Where one tensor lies in a shard.
#[derive(Debug, Clone)]
struct Entry {
    shard: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

/// The tensors of a checkpoint, indexed by name and read on demand.
#[derive(Debug)]
pub(crate) struct Checkpoint {
    directory: PathBuf,
    shards: Vec<(PathBuf, Vec<u8>)>,
    entries: BTreeMap<String, Entry>,
}

#[derive(Deserialize)]
struct Index {
    weight_map: BTreeMap<String, String>,
}

impl Checkpoint {
    /// Opens `model.safetensors`, or the shards of `model.safetensors.index.json`, in `directory`.
    pub(crate) fn open(directory: &Path) -> Result<Self, ModelError> {
        let single = directory.join(WEIGHTS_FILE);
        let index = directory.join(WEIGHTS_INDEX_FILE);
        let files: Vec<PathBuf> = if single.exists() {
            vec![single]
        } else if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(|e| ModelError::io(&index, e))?;
            let index_content: Index =
                serde_json::from_str(&text).map_err(|e| ModelError::json(&index, e))?;
            let names: BTreeSet<String> = index_content.weight_map.into_values().collect();
            names.into_iter().map(|name| directory.join(name)).collect()
        } else {
            return Err(ModelError::io(
                &single,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("neither {WEIGHTS_FILE} nor {WEIGHTS_INDEX_FILE} exists"),
                ),
            ));
        };
        let mut shards = Vec::with_capacity(files.len());
        let mut entries = BTreeMap::new();
        for (shard, path) in files.into_iter().enumerate() {
            let bytes = std::fs::read(&path).map_err(|e| ModelError::io(&path, e))?;
            let (header, metadata) =
                SafeTensors::read_metadata(&bytes).map_err(|e| ModelError::Safetensors {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            let data_start = 8 + header;
            for (name, info) in metadata.tensors() {
                let (start, end) = info.data_offsets;
                let entry = Entry {
                    shard,
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    start: data_start + start,
                    end: data_start + end,
                };
                entries.insert(name, entry);
            }
            shards.push((path, bytes));
        }
        Ok(Self {
            directory: directory.to_path_buf(),
            shards,
            entries,
        })
    }

    /// Whether the checkpoint holds `name`.
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Tensor names.
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    fn raw(&self, entry: &Entry) -> &[u8] {
        &self.shards[entry.shard].1[entry.start..entry.end]
    }

    /// Whether the two tensors hold the same dtype, shape and bytes (a tied duplicate).
    pub(crate) fn identical(&self, a: &str, b: &str) -> bool {
        match (self.entries.get(a), self.entries.get(b)) {
            (Some(x), Some(y)) => {
                x.dtype == y.dtype && x.shape == y.shape && self.raw(x) == self.raw(y)
            }
            _ => false,
        }
    }

    /// The tensor `name` as f32 values in its stored (row-major) order.
    fn read(&self, name: &str, entry: &Entry) -> Result<Vec<f32>, ModelError> {
        let bytes = self.raw(entry);
        let values = match entry.dtype {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::F64 => bytes
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
                .collect(),
            other => {
                return Err(ModelError::Safetensors {
                    path: self.shards[entry.shard].0.clone(),
                    message: format!(
                        "tensor {name} has dtype {other:?}; expected F32, F16, BF16 or F64"
                    ),
                });
            }
        };
        Ok(values)
    }
}

/// `[rows, columns]` row-major values transposed to `[columns, rows]`.
fn transpose(values: &[f32], rows: usize, columns: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..columns {
            out[c * rows + r] = values[r * columns + c];
        }
    }
    out
}

/// Fills every parameter of a skeleton module from a checkpoint, collecting the problems.
struct Loader<'a> {
    checkpoint: &'a Checkpoint,
    device: Device,
    tracker: PathTracker,
    loaded: BTreeSet<String>,
    missing: Vec<String>,
    mis_shaped: Vec<ShapeMismatch>,
    unreadable: Option<ModelError>,
}

impl ModuleMapper for Loader<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.tracker.enter(name, container_type);
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.tracker.exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let name = self.tracker.path();
        let linear_weight = self.tracker.in_linear_weight(D);
        let dims = param.lazy_shape().to_vec();
        let expected = checkpoint_shape(&dims, linear_weight);
        let Some(entry) = self.checkpoint.entries.get(&name) else {
            self.missing.push(name);
            return param;
        };
        self.loaded.insert(name.clone());
        if entry.shape != expected {
            self.mis_shaped.push(ShapeMismatch {
                name,
                expected,
                found: entry.shape.clone(),
            });
            return param;
        }
        let values = match self.checkpoint.read(&name, entry) {
            Ok(values) => values,
            Err(error) => {
                self.unreadable.get_or_insert(error);
                return param;
            }
        };
        let values = if linear_weight {
            transpose(&values, expected[0], expected[1])
        } else {
            values
        };
        let tensor = Tensor::<D>::from_data(TensorData::new(values, dims), &self.device);
        Param::from_tensor(tensor)
    }
}

/// Fills `skeleton` from `checkpoint`; `ignored` names checkpoint tensors that may stay unused.
fn fill<M: Module>(
    skeleton: M,
    checkpoint: &Checkpoint,
    ignored: &BTreeSet<String>,
    device: &Device,
) -> Result<M, ModelError> {
    let mut loader = Loader {
        checkpoint,
        device: device.clone(),
        tracker: PathTracker::default(),
        loaded: BTreeSet::new(),
        missing: Vec::new(),
        mis_shaped: Vec::new(),
        unreadable: None,
    };
    let module = skeleton.map(&mut loader);
    if let Some(error) = loader.unreadable {
        return Err(error);
    }
    let unexpected: Vec<String> = checkpoint
        .names()
        .filter(|name| {
            !loader.loaded.contains(*name)
                && !ignored.contains(*name)
                && !name.ends_with("rotary_emb.inv_freq")
        })
        .map(str::to_string)
        .collect();
    if loader.missing.is_empty() && unexpected.is_empty() && loader.mis_shaped.is_empty() {
        Ok(module)
    } else {
        Err(ModelError::TensorMismatch {
            directory: checkpoint.directory.clone(),
            missing: loader.missing,
            unexpected,
            mis_shaped: loader.mis_shaped,
        })
    }
}

/// Whether the checkpoint's `head` is a separate output head rather than a copy of `embedding`.
/// Absent: tied, unless the config says untied (then it is reported missing). Present: tied only
/// if identical to the embedding and the config ties, as transformers 5 decides.
fn has_own_head(checkpoint: &Checkpoint, head: &str, embedding: &str, config_ties: bool) -> bool {
    if checkpoint.contains(head) {
        !(config_ties && checkpoint.identical(head, embedding))
    } else {
        !config_ties
    }
}

impl Backbone {
    /// Loads an HF model directory (`config.json` and safetensors weights) onto `device`.
    pub fn load(directory: impl AsRef<Path>, device: &Device) -> Result<Self, ModelError> {
        let directory = directory.as_ref();
        let config = ModelConfig::from_file(directory.join(CONFIG_FILE))?;
        let checkpoint = Checkpoint::open(directory)?;
        let mut ignored: BTreeSet<String> = IGNORED.iter().map(|s| s.to_string()).collect();
        match config {
            ModelConfig::T5(config) => {
                // Transformers 5 writes `tie_word_embeddings: true` for every T5; a distinct
                // `lm_head.weight` in the checkpoint still unties it.
                let own_head = has_own_head(
                    &checkpoint,
                    "lm_head.weight",
                    "shared.weight",
                    config.tie_word_embeddings,
                );
                if !own_head {
                    ignored.insert("lm_head.weight".into());
                }
                let skeleton = T5ForConditionalGeneration::with_lm_head(&config, own_head, device);
                fill(skeleton, &checkpoint, &ignored, device).map(Self::T5)
            }
            ModelConfig::Qwen2(config) => {
                let ties = config.tie_word_embeddings || !checkpoint.contains("lm_head.weight");
                let own_head = has_own_head(
                    &checkpoint,
                    "lm_head.weight",
                    "model.embed_tokens.weight",
                    ties,
                );
                if !own_head {
                    ignored.insert("lm_head.weight".into());
                }
                let skeleton = Qwen2ForCausalLM::with_lm_head(&config, own_head, device);
                fill(skeleton, &checkpoint, &ignored, device).map(Self::Qwen2)
            }
        }
    }
}
