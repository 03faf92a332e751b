//! Weight gradients of linear layers left as two factors by the backward pass.
//!
//! A linear layer `y = x·W` over N rows has the weight gradient `xᵀ·∂L/∂y`, of rank at most N.
//! [`Backbone::loss_factored`](crate::Backbone::loss_factored) runs the layers a
//! [`GradientFactoring`] names as `y = x·W' + z` instead, `W'` the weight cut from the autodiff
//! graph and `z` a zero leaf shaped like `y`. The backward pass then gives the weight no
//! gradient, skipping the `2·N·d_in·d_out` operations that would form it, and gives `z` the
//! gradient `∂L/∂y`. [`GradientFactoring::take_factors`] hands back both factors of each such
//! weight's gradient, for an optimizer that uses them as they are (gems-core's
//! `condense_factored`). A layer is factored only where its factors are smaller than its
//! gradient, N·(d_in + d_out) < d_in·d_out: a T5 decoder's layers, which see a few target tokens
//! per sample. The others, and every bias, keep their ordinary gradients.

use std::collections::BTreeSet;

use burn::nn::Linear;
use burn::tensor::module::linear;
use burn::tensor::{Gradients, Tensor};

/// Which linear layers a forward pass factors ([`crate::Backbone::loss_factored`]), and the
/// factors it captured.
#[derive(Debug, Default)]
pub struct GradientFactoring {
    /// Parameter paths of the weights to factor where it pays.
    weights: BTreeSet<String>,
    /// Per layer factored since the last [`take_factors`](Self::take_factors): the weight's
    /// path, the layer's inputs (off the autodiff graph) and the zero leaf added to its output.
    captured: Vec<(String, Tensor<2>, Tensor<2>)>,
}

/// One linear layer's weight gradient as two factors: `inputsᵀ·output_gradients`, shaped like
/// Burn's `[d_in, d_out]` weight.
#[derive(Debug, Clone)]
pub struct LinearGradientFactors {
    /// The weight's parameter path (`….weight`).
    pub weight_path: String,
    /// The layer's inputs, `[N, d_in]`, without autodiff.
    pub inputs: Tensor<2>,
    /// The loss's gradient with respect to the layer's outputs, `[N, d_out]`.
    pub output_gradients: Tensor<2>,
}

impl GradientFactoring {
    /// Factoring of the linear layers whose weights have these parameter paths (`….weight`, as
    /// `Module::visit` names them); paths that name no linear layer's weight are ignored.
    pub fn new(weight_paths: impl IntoIterator<Item = String>) -> Self {
        Self {
            weights: weight_paths.into_iter().collect(),
            captured: Vec::new(),
        }
    }

    /// After `loss.backward()` of the passes run with this factoring: the factors of every
    /// layer they factored (one entry per layer and pass), their leaves' gradients taken out of
    /// `grads`. A layer whose output did not reach the loss has no gradient and no entry.
    pub fn take_factors(&mut self, grads: &mut Gradients) -> Vec<LinearGradientFactors> {
        self.captured
            .drain(..)
            .filter_map(|(weight_path, inputs, leaf)| {
                leaf.grad_remove(grads)
                    .map(|output_gradients| LinearGradientFactors {
                        weight_path,
                        inputs,
                        output_gradients,
                    })
            })
            .collect()
    }

    /// `layer` (module path `path`) applied to the rows `x` (`[N, d_in]`), factored if it is
    /// named and its factors are smaller than its gradient.
    pub(crate) fn forward(&mut self, path: &str, layer: &Linear, x: Tensor<2>) -> Tensor<2> {
        let [rows, d_in] = x.dims();
        let [_, d_out] = layer.weight.val().dims();
        if self.weights.is_empty() || rows * (d_in + d_out) >= d_in * d_out {
            return layer.forward(x);
        }
        let weight_path = format!("{path}.weight");
        if !self.weights.contains(&weight_path) {
            return layer.forward(x);
        }
        let weight = layer.weight.val().set_require_grad(false);
        let leaf = Tensor::zeros([rows, d_out], &x.device()).require_grad();
        self.captured
            .push((weight_path, x.clone().inner(), leaf.clone()));
        let output = linear(x, weight, layer.bias.as_ref().map(|b| b.val()));
        output + leaf
    }
}
