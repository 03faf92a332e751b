//! Saving a model as a Hugging Face directory: `config.json` and `model.safetensors` (f32, HF
//! tensor names, Linear weights transposed back to PyTorch's `[out, in]`), which `transformers`'
//! `from_pretrained` opens. Tied weights are written once (`shared.weight`, `model.embed_tokens.weight`).

use std::collections::HashMap;
use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use safetensors::Dtype;
use safetensors::tensor::TensorView;

use crate::backbone::Backbone;
use crate::error::ModelError;
use crate::loading::WEIGHTS_FILE;
use crate::paths::{PathTracker, checkpoint_shape};

/// One tensor ready to write: HF name, PyTorch-layout shape, little-endian f32 bytes.
struct Stored {
    name: String,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

/// Collects every parameter in the checkpoint layout.
#[derive(Default)]
struct Collector {
    tracker: PathTracker,
    stored: Vec<Stored>,
}

impl ModuleVisitor for Collector {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.tracker.enter(name, container_type);
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.tracker.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let linear_weight = self.tracker.in_linear_weight(D);
        // Transposing on the device gives the `[out, in]` order on read-back.
        let tensor = param.val();
        let tensor = if linear_weight {
            tensor.swap_dims(0, 1)
        } else {
            tensor
        };
        let dims = param.lazy_shape().to_vec();
        let values: Vec<f32> = tensor.into_data().iter::<f32>().collect();
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.stored.push(Stored {
            name: self.tracker.path(),
            shape: checkpoint_shape(&dims, linear_weight),
            bytes,
        });
    }
}

impl Backbone {
    /// Writes `config.json` and `model.safetensors` into `directory` (created if needed).
    pub fn save(&self, directory: impl AsRef<Path>) -> Result<(), ModelError> {
        let directory = directory.as_ref();
        std::fs::create_dir_all(directory).map_err(|e| ModelError::io(directory, e))?;
        self.config_for_saving()
            .save(directory.join(crate::loading::CONFIG_FILE))?;

        let mut collector = Collector::default();
        self.visit(&mut collector);
        let path = directory.join(WEIGHTS_FILE);
        let views = collector
            .stored
            .iter()
            .map(|s| {
                TensorView::new(Dtype::F32, s.shape.clone(), &s.bytes)
                    .map(|view| (s.name.clone(), view))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ModelError::Safetensors {
                path: path.clone(),
                message: e.to_string(),
            })?;
        let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
        safetensors::serialize_to_file(views, Some(metadata), &path).map_err(|e| {
            ModelError::Safetensors {
                path: path.clone(),
                message: e.to_string(),
            }
        })
    }
}
