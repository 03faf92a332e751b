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

/// Appends a tensor's little-endian f32 bytes to a buffer.
type Append = Box<dyn Fn(&mut Vec<u8>)>;

/// One tensor to write: HF name, PyTorch-layout shape, and what appends its bytes, read back
/// from the device only when the file writer reaches it, so that saving holds one tensor's
/// bytes at a time rather than a copy of the whole model.
struct Stored {
    name: String,
    shape: Vec<usize>,
    append: Append,
}

impl safetensors::View for &Stored {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        let mut bytes = Vec::with_capacity(self.data_len());
        (self.append)(&mut bytes);
        Cow::Owned(bytes)
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
        let append = move |bytes: &mut Vec<u8>| {
            // Transposing on the device gives the `[out, in]` order on read-back.
            let tensor = match linear_weight {
                true => tensor.clone().swap_dims(0, 1),
                false => tensor.clone(),
            };
            append_in_blocks(tensor, bytes);
        };
        let name = self.tracker.path();
        if self.tracker.in_added_rows() {
            // The rows of added tokens held apart follow the matrix's other rows (visited just
            // before): the checkpoint has the whole matrix under the `weight` name.
            let whole = self
                .stored
                .last_mut()
                .expect("a vocabulary matrix visits its other rows first");
            let other_rows = std::mem::replace(&mut whole.append, Box::new(|_| ()));
            whole.append = Box::new(move |bytes| {
                other_rows(bytes);
                append(bytes);
            });
            whole.shape[0] += dims[0];
            return;
        }
        self.stored.push(Stored {
            name,
            shape: checkpoint_shape(&dims, linear_weight),
            append: Box::new(append),
        });
    }
}

/// Appends the little-endian f32 bytes of `tensor` to `bytes`, read back from the device a block
/// of about 4 MB of leading-axis slices at a time, so that a large tensor (a 545 MB vocabulary
/// matrix) is never on the host twice, as its values and as its bytes.
fn append_in_blocks<const D: usize>(tensor: Tensor<D>, bytes: &mut Vec<u8>) {
    let dims = tensor.dims();
    let slice_values: usize = dims[1..].iter().product();
    let block = ((1 << 20) / slice_values.max(1)).max(1);
    for start in (0..dims[0]).step_by(block) {
        let length = block.min(dims[0] - start);
        let data = tensor.clone().narrow(0, start, length).into_data();
        bytes.extend(data.iter::<f32>().flat_map(f32::to_le_bytes));
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
