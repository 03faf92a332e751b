//! Observation of the inputs of the attention and MLP linear layers, for statistics such as the
//! input covariance that GEMS' null-space projection needs.
//!
//! [`crate::Backbone::forward_observed`] hands every q/k/v/o and MLP linear layer's input to a
//! [`LinearInputObserver`], restricted to the rows of real (non-padding) tokens and named by the
//! layer's module path (its weight's path without `.weight`). The same probe carries a
//! [`GradientFactoring`] through [`crate::Backbone::loss_factored`]. A plain forward pass takes
//! no probe and pays nothing for this.

use std::fmt::Display;

use burn::nn::Linear;

use crate::factoring::GradientFactoring;
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

/// A forward pass's link to an observer or a gradient factoring, with the module path so far.
pub(crate) struct Probe<'a> {
    sink: Sink<'a>,
    path: String,
}

/// What a probe serves. (Short-lived, one per module of a forward pass: the observer's larger
/// variant is not worth a box.)
#[allow(clippy::large_enum_variant)]
enum Sink<'a> {
    /// An observer, with the token rows to report.
    Observer {
        observer: &'a mut dyn LinearInputObserver,
        rows: TokenRows,
        /// Rows of the encoder output, the input of T5's cross-attention keys and values.
        memory_rows: Option<TokenRows>,
    },
    /// A factoring of weight gradients.
    Factoring(&'a mut GradientFactoring),
}

impl<'a> Probe<'a> {
    pub(crate) fn new(
        observer: &'a mut dyn LinearInputObserver,
        path: impl Into<String>,
        rows: TokenRows,
        memory_rows: Option<TokenRows>,
    ) -> Self {
        Self {
            sink: Sink::Observer {
                observer,
                rows,
                memory_rows,
            },
            path: path.into(),
        }
    }

    /// A probe that factors the weight gradients `factoring` names.
    pub(crate) fn factoring(factoring: &'a mut GradientFactoring) -> Self {
        Self {
            sink: Sink::Factoring(factoring),
            path: String::new(),
        }
    }

    /// The probe of a submodule.
    pub(crate) fn child(&mut self, name: impl Display) -> Probe<'_> {
        Probe {
            sink: self.sink.reborrow(false),
            path: join(&self.path, name),
        }
    }

    /// The same module, reporting the encoder-output rows (inputs of T5's cross-attention keys
    /// and values) instead of its own.
    pub(crate) fn on_memory(&mut self) -> Probe<'_> {
        Probe {
            sink: self.sink.reborrow(true),
            path: self.path.clone(),
        }
    }
}

impl Sink<'_> {
    /// The same sink for a submodule; an observer's reporting the encoder-output rows instead
    /// of its own if `memory`.
    fn reborrow(&mut self, memory: bool) -> Sink<'_> {
        match self {
            Sink::Observer {
                observer,
                rows,
                memory_rows,
            } => Sink::Observer {
                observer: &mut **observer,
                rows: match (memory, memory_rows.as_ref()) {
                    (true, Some(memory_rows)) => memory_rows.clone(),
                    _ => rows.clone(),
                },
                memory_rows: memory_rows.clone().filter(|_| !memory),
            },
            Sink::Factoring(factoring) => Sink::Factoring(factoring),
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

/// Applies `layer` (the field `name` of the probed module) to `x`, reporting `x` to the probe's
/// observer or factoring the layer's weight gradient, if there is a probe.
pub(crate) fn observed(
    probe: Option<&mut Probe>,
    name: &str,
    layer: &Linear,
    x: Tensor<3>,
) -> Tensor<3> {
    let Some(probe) = probe else {
        return on_rows(x, |x| layer.forward(x));
    };
    let path = join(&probe.path, name);
    match &mut probe.sink {
        Sink::Observer { observer, rows, .. } => {
            observer.observe(&path, rows.select(x.clone()));
            on_rows(x, |x| layer.forward(x))
        }
        Sink::Factoring(factoring) => on_rows(x, |x| factoring.forward(&path, layer, x)),
    }
}
