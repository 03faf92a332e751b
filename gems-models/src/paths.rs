//! Parameter paths: Burn module paths spelled as the Hugging Face tensor names.
//!
//! A path joins the names Burn's traversal enters (struct fields, `Vec` indices, tuple
//! positions; `Option` adds nothing) with `.`, so `encoder.block.0.layer.1.DenseReluDense.wi.weight`
//! names the same tensor in Burn and in a safetensors checkpoint. The only layout difference is
//! `Linear`: Burn stores `[d_in, d_out]`, PyTorch `[out, in]`.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;

/// The container type Burn reports when entering a field of `burn::nn::Linear`.
const LINEAR: &str = "Struct:Linear";
/// The container type Burn reports when entering a field of [`crate::TokenMatrix`].
const TOKEN_MATRIX: &str = "Struct:TokenMatrix";

/// The path stack of a module traversal.
#[derive(Debug, Default)]
pub(crate) struct PathTracker {
    names: Vec<String>,
    containers: Vec<String>,
}

impl PathTracker {
    pub(crate) fn enter(&mut self, name: &str, container_type: &str) {
        self.names.push(name.to_string());
        self.containers.push(container_type.to_string());
    }

    pub(crate) fn exit(&mut self) {
        self.names.pop();
        self.containers.pop();
    }

    /// The HF name of the parameter being visited.
    pub(crate) fn path(&self) -> String {
        self.names.join(".")
    }

    /// Whether the parameter being visited holds the added rows of a vocabulary matrix, which
    /// the checkpoint stores after its other rows, as one tensor.
    pub(crate) fn in_added_rows(&self) -> bool {
        self.containers.last().is_some_and(|c| c == TOKEN_MATRIX)
            && self.names.last().is_some_and(|n| n == "added")
    }

    /// Whether the parameter being visited is the weight of a `Linear`, stored transposed in Burn.
    pub(crate) fn in_linear_weight(&self, rank: usize) -> bool {
        rank == 2
            && self.containers.last().is_some_and(|c| c == LINEAR)
            && self.names.last().is_some_and(|n| n == "weight")
    }
}

/// Shape in the checkpoint's (PyTorch) layout of a parameter whose Burn shape is `dims`.
pub(crate) fn checkpoint_shape(dims: &[usize], linear_weight: bool) -> Vec<usize> {
    if linear_weight {
        dims.iter().rev().copied().collect()
    } else {
        dims.to_vec()
    }
}

/// Every float parameter of `module` with its HF name and its shape in the checkpoint's layout
/// (Linear weights `[out, in]`), in traversal order.
pub fn parameter_paths(module: &impl Module) -> Vec<(String, Vec<usize>)> {
    struct Lister {
        tracker: PathTracker,
        found: Vec<(String, Vec<usize>)>,
    }
    impl ModuleVisitor for Lister {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.tracker.enter(name, container_type);
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.tracker.exit();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let dims = param.lazy_shape().to_vec();
            let shape = checkpoint_shape(&dims, self.tracker.in_linear_weight(D));
            self.found.push((self.tracker.path(), shape));
        }
    }
    let mut lister = Lister {
        tracker: PathTracker::default(),
        found: Vec::new(),
    };
    module.visit(&mut lister);
    lister.found
}

/// The HF name of the first float parameter of `module` that holds a NaN or an infinite value,
/// if one does (one read-back per parameter).
pub fn first_non_finite_parameter(module: &impl Module) -> Option<String> {
    struct Finder {
        tracker: PathTracker,
        found: Option<String>,
    }
    impl ModuleVisitor for Finder {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.tracker.enter(name, container_type);
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.tracker.exit();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if self.found.is_none()
                && param
                    .val()
                    .is_finite()
                    .bool_not()
                    .any()
                    .into_scalar::<bool>()
            {
                self.found = Some(self.tracker.path());
            }
        }
    }
    let mut finder = Finder {
        tracker: PathTracker::default(),
        found: None,
    };
    module.visit(&mut finder);
    finder.found
}
