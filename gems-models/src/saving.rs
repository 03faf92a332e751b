//! Saving a model as a Hugging Face directory: `config.json` and `model.safetensors` (f32, HF
//! tensor names, Linear weights transposed back to PyTorch's `[out, in]`), which `transformers`'
//! `from_pretrained` opens. Tied weights are written once (`shared.weight`, `model.embed_tokens.weight`),
//! and a vocabulary matrix whose added rows are held apart ([`crate::TokenMatrix`]) whole.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use safetensors::Dtype;

use crate::backbone::Backbone;
use crate::error::ModelError;
use crate::loading::WEIGHTS_FILE;
use crate::paths::{PathTracker, checkpoint_shape};

/// One tensor to write: HF name, PyTorch-layout shape, and its little-endian f32 bytes, read
/// back from the device only when the file writer reaches it, so that saving holds one tensor's
/// bytes at a time rather than a copy of the whole model.
struct Stored {
    name: String,
    shape: Vec<usize>,
    bytes: Box<dyn Fn() -> Vec<u8>>,
}

impl safetensors::View for &Stored {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned((self.bytes)())
    }

    fn data_len(&self) -> usize {
        4 * self.shape.iter().product::<usize>()
    }
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
        let tensor = param.val();
        let dims = param.lazy_shape().to_vec();
        let bytes = move || {
            // Transposing on the device gives the `[out, in]` order on read-back.
            let tensor = match linear_weight {
                true => tensor.clone().swap_dims(0, 1),
                false => tensor.clone(),
            };
            let data = tensor.into_data();
            data.iter::<f32>().flat_map(f32::to_le_bytes).collect::<Vec<u8>>()
        };
        let name = self.tracker.path();
        if self.tracker.in_added_rows() {
            // The rows of added tokens held apart follow the matrix's other rows (visited just
            // before): the checkpoint has the whole matrix under the `weight` name.
            let whole = self
                .stored
                .last_mut()
                .expect("a vocabulary matrix visits its other rows first");
            let other_rows = std::mem::replace(&mut whole.bytes, Box::new(Vec::new));
            whole.bytes = Box::new(move || {
                let mut all = other_rows();
                all.extend(bytes());
                all
            });
            whole.shape[0] += dims[0];
            return;
        }
        self.stored.push(Stored {
            name,
            shape: checkpoint_shape(&dims, linear_weight),
            bytes: Box::new(bytes),
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
        let views = collector.stored.iter().map(|s| (s.name.clone(), s));
        let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
        safetensors::serialize_to_file(views, Some(metadata), &path).map_err(|e| {
            ModelError::Safetensors {
                path: path.clone(),
                message: e.to_string(),
            }
        })
    }
}
