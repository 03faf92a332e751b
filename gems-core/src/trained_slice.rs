//! Training part of a matrix: the entries `start..` along one axis, the others left as they are.
//!
//! Made for vocabulary matrices. A fine-tune that adds tokens to a pre-trained model (item
//! tokens for generative recommendation) needs to learn the new tokens' rows, while the
//! pre-trained rows, a sixth of a 0.5B model's parameters, carry knowledge that AdamW on the
//! whole matrix would both disturb and pay for (two full-size moments). With a
//! [`TrainedSlice`] ([`crate::GemsOptimizer::with_trained_slice`]), a parameter's AdamW moments (and,
//! through [`trim_gradients`], the gradients held until the step) cover the slice only, and
//! every entry outside it stays bit-identical.
//!
//! The axis is the one that indexes tokens: rows of an embedding table (`[vocab, width]`),
//! columns of a Burn `Linear` output head (`[width, vocab]`). A tied embedding is one parameter,
//! so it has one slice and one state.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// The trained entries of a 2-D parameter: indices `start..` along `axis` (0: rows, 1: columns).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainedSlice {
    /// The axis the slice runs along.
    pub axis: usize,
    /// The first trained index along `axis`; the entries before it are frozen.
    pub start: usize,
}

impl TrainedSlice {
    /// Rows `start..` of a matrix.
    pub fn rows(start: usize) -> Self {
        Self { axis: 0, start }
    }

    /// Columns `start..` of a matrix.
    pub fn columns(start: usize) -> Self {
        Self { axis: 1, start }
    }

    /// The shape of the slice of a matrix of shape `shape`.
    pub fn shape(&self, shape: [usize; 2]) -> [usize; 2] {
        let mut sliced = shape;
        sliced[self.axis] = shape[self.axis].saturating_sub(self.start);
        sliced
    }

    /// Why the slice does not fit a parameter of shape `shape`, if it does not: it must be 2-D,
    /// and the slice must lie within it. An empty slice (`start` at the end) fits: the parameter
    /// is then frozen.
    pub fn misfit(&self, shape: &[usize]) -> Option<String> {
        if shape.len() != 2 {
            return Some(format!(
                "a trained slice needs a 2-D parameter, this one has shape {shape:?}"
            ));
        }
        if self.axis > 1 {
            return Some(format!("a matrix has no axis {}", self.axis));
        }
        if self.start > shape[self.axis] {
            return Some(format!(
                "the trained slice starts at {} but axis {} has {} entries",
                self.start, self.axis, shape[self.axis]
            ));
        }
        None
    }

    /// Whether the slice of a parameter of shape `shape` holds nothing (so it is frozen).
    pub fn is_empty(&self, shape: &[usize]) -> bool {
        shape.len() == 2 && self.axis < 2 && self.start == shape[self.axis]
    }

    /// The slice of `matrix` (which has the parameter's full shape).
    pub fn of(&self, matrix: Tensor<2>) -> Tensor<2> {
        let length = matrix.dims()[self.axis] - self.start;
        matrix.narrow(self.axis, self.start, length)
    }

    /// `matrix` with its slice replaced by `values`; the other entries are kept bit for bit.
    pub fn assign(&self, matrix: Tensor<2>, values: Tensor<2>) -> Tensor<2> {
        let [rows, cols] = matrix.dims();
        let ranges = match self.axis {
            0 => [self.start..rows, 0..cols],
            _ => [0..rows, self.start..cols],
        };
        matrix.slice_assign(ranges, values)
    }
}

impl std::fmt::Display for TrainedSlice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let axis = if self.axis == 0 { "rows" } else { "columns" };
        write!(f, "{axis} {}..", self.start)
    }
}

/// `gradients` of `module` with the gradient of every parameter that has a trained slice in
/// `slices` ([`crate::GemsOptimizer::trained_slices`]) cut to that slice, so that only the trained
/// entries are held until the step, which takes a gradient of either shape. Call it on each
/// backward pass's gradients, before accumulating them.
pub fn trim_gradients<M: Module>(
    slices: &BTreeMap<String, TrainedSlice>,
    module: &M,
    gradients: GradientsParams,
) -> GradientsParams {
    if slices.is_empty() {
        return gradients;
    }
    let mut trimmer = Trimmer {
        slices,
        path: Vec::new(),
        gradients,
    };
    module.visit(&mut trimmer);
    trimmer.gradients
}

/// Cuts the gradients of sliced parameters.
struct Trimmer<'a> {
    slices: &'a BTreeMap<String, TrainedSlice>,
    path: Vec<String>,
    gradients: GradientsParams,
}

impl ModuleVisitor for Trimmer<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let Some(slice) = self.slices.get(&self.path.join(".")).copied() else {
            return;
        };
        if D != 2 {
            return; // refused with a clear message by the step
        }
        let shape = param.lazy_shape().to_vec();
        let Some(gradient) = self.gradients.remove::<2>(param.id) else {
            return;
        };
        // Already trimmed, or a shape the step will refuse: left as it is.
        let trimmed =
            if gradient.dims().as_slice() == shape.as_slice() && slice.misfit(&shape).is_none() {
                // A slice is a view of the whole buffer on some backends (flex); an elementwise
                // operation writes it to a buffer of its own, so that the whole one can be freed.
                slice.of(gradient).mul_scalar(1.0)
            } else {
                gradient
            };
        self.gradients.register(param.id, trimmed);
    }
}
