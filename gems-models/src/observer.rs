//! Observation of the inputs of the attention and MLP linear layers, for statistics such as the
//! input covariance that GEMS' null-space projection needs.
//!
//! [`crate::Backbone::forward_observed`] hands every q/k/v/o and MLP linear layer's input to a
//! [`LinearInputObserver`], restricted to the rows of real (non-padding) tokens and named by the
//! layer's module path (its weight's path without `.weight`). A plain forward pass takes no probe
//! and pays nothing for this.

use std::fmt::Display;

use burn::nn::Linear;

use crate::nn::on_rows;
use burn::tensor::{Device, Int, Tensor, TensorData};

/// Receives the inputs of linear layers during [`crate::Backbone::forward_observed`].
pub trait LinearInputObserver {
    /// Called once per linear layer and forward pass with `path`, the layer's module path (e.g.
    /// `encoder.block.0.layer.0.SelfAttention.q`, `model.layers.3.mlp.down_proj`), and `inputs`,
    /// `[tokens, d_in]`: the layer's input for every non-padding token of the batch, detached
    /// from any autodiff graph.
    fn observe(&mut self, path: &str, inputs: Tensor<2>);
}

/// Flat row indices (into `[batch * length]`) of the tokens a probe reports.
#[derive(Debug, Clone)]
pub(crate) struct TokenRows(Tensor<1, Int>);

impl TokenRows {
    /// Rows whose `keep` flag (`[batch, length]`, row-major) is set.
    pub(crate) fn from_flags(keep: impl IntoIterator<Item = bool>, device: &Device) -> Self {
        let rows: Vec<i64> = keep
            .into_iter()
            .enumerate()
            .filter(|(_, keep)| *keep)
            .map(|(i, _)| i as i64)
            .collect();
        let count = rows.len();
        Self(Tensor::from_data(TensorData::new(rows, [count]), device))
    }

    /// Rows where `mask` (`[batch, length]`, 1 = token) is non-zero.
    pub(crate) fn from_mask(mask: &Tensor<2, Int>) -> Self {
        let flags: Vec<bool> = mask.to_data().iter::<i64>().map(|m| m != 0).collect();
        Self::from_flags(flags, &mask.device())
    }

    fn select(&self, inputs: Tensor<3>) -> Tensor<2> {
        let [batch, length, width] = inputs.dims();
        inputs
            .detach()
            .reshape([batch * length, width])
            .select(0, self.0.clone())
    }
}

/// A forward pass's link to an observer: the module path so far and the token rows to report.
pub(crate) struct Probe<'a> {
    observer: &'a mut dyn LinearInputObserver,
    path: String,
    rows: TokenRows,
    /// Rows of the encoder output, the input of T5's cross-attention keys and values.
    memory_rows: Option<TokenRows>,
}

impl<'a> Probe<'a> {
    pub(crate) fn new(
        observer: &'a mut dyn LinearInputObserver,
        path: impl Into<String>,
        rows: TokenRows,
        memory_rows: Option<TokenRows>,
    ) -> Self {
        Self {
            observer,
            path: path.into(),
            rows,
            memory_rows,
        }
    }

    /// The probe of a submodule.
    pub(crate) fn child(&mut self, name: impl Display) -> Probe<'_> {
        Probe {
            observer: &mut *self.observer,
            path: join(&self.path, name),
            rows: self.rows.clone(),
            memory_rows: self.memory_rows.clone(),
        }
    }

    /// The same module, reporting the encoder-output rows (inputs of T5's cross-attention keys
    /// and values) instead of its own.
    pub(crate) fn on_memory(&mut self) -> Probe<'_> {
        let rows = self
            .memory_rows
            .clone()
            .unwrap_or_else(|| self.rows.clone());
        Probe {
            observer: &mut *self.observer,
            path: self.path.clone(),
            rows,
            memory_rows: None,
        }
    }
}

fn join(path: &str, name: impl Display) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// Applies `layer` (the field `name` of the probed module) to `x`, reporting `x` to the probe if any.
pub(crate) fn observed(
    probe: Option<&mut Probe>,
    name: &str,
    layer: &Linear,
    x: Tensor<3>,
) -> Tensor<3> {
    if let Some(probe) = probe {
        let inputs = probe.rows.select(x.clone());
        probe.observer.observe(&join(&probe.path, name), inputs);
    }
    on_rows(x, |x| layer.forward(x))
}
