//! Building blocks shared by T5 and Qwen2: the RMS norm both use, linear and embedding layers
//! with Hugging Face's normal initialisation, and scaled dot-product attention with an additive bias.

use burn::module::{Initializer, Module, Param};
use burn::nn::{Dropout, Embedding, Linear};
use burn::tensor::activation::softmax;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

/// Additive attention bias of a masked position. Finite (like HF's `finfo.min`) so that a row
/// whose keys are all masked (a padding query) softmaxes to a uniform row, not to NaN.
pub(crate) const MASKED: f32 = -1.0e9;

/// Root-mean-square layer norm without mean subtraction or bias: `weight * x / sqrt(mean(x²) + eps)`.
/// HF's `T5LayerNorm` and `Qwen2RMSNorm` (the parameter is `weight`, not Burn's `gamma`).
#[derive(Module, Debug)]
pub struct RmsNorm {
    /// Per-feature scale.
    pub weight: Param<Tensor<1>>,
    #[module(skip)]
    epsilon: f64,
}

impl RmsNorm {
    /// A norm of width `size` with unit weight (HF's initialisation, T5's times `factor`).
    pub fn new(size: usize, epsilon: f64, init_value: f64, device: &Device) -> Self {
        Self {
            weight: Initializer::Constant { value: init_value }.init([size], device),
            epsilon,
        }
    }

    /// Normalises over the last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let variance = x.clone().square().mean_dim(D - 1);
        let normalised = x * variance.add_scalar(self.epsilon).sqrt().recip();
        normalised * self.weight.val().unsqueeze::<D>()
    }
}

/// A linear layer with weight ~ N(0, std²) and a zero bias when it has one.
pub(crate) fn linear(
    d_input: usize,
    d_output: usize,
    bias: bool,
    std: f64,
    device: &Device,
) -> Linear {
    Linear {
        weight: Initializer::Normal { mean: 0.0, std }.init([d_input, d_output], device),
        bias: bias.then(|| Initializer::Zeros.init([d_output], device)),
    }
}

/// `f` applied to `x` `[..., width]` as one `[rows, width]` matrix, the result reshaped back.
///
/// Burn's `linear` keeps a 3-D input batched when its rows fill the matmul tiles; its backward
/// pass then forms one weight gradient per batch row and sums them (8× the work and memory at
/// batch 8). Flattening first gives the single `xᵀ · grad` product.
pub(crate) fn on_rows<const D: usize>(
    x: Tensor<D>,
    f: impl FnOnce(Tensor<2>) -> Tensor<2>,
) -> Tensor<D> {
    let mut dims = x.dims();
    let width = dims[D - 1];
    let rows = dims[..D - 1].iter().product();
    let out = f(x.reshape([rows, width]));
    dims[D - 1] = out.dims()[1];
    out.reshape(dims)
}

/// An embedding table with rows ~ N(0, std²).
pub(crate) fn embedding(rows: usize, width: usize, std: f64, device: &Device) -> Embedding {
    Embedding {
        weight: Initializer::Normal { mean: 0.0, std }.init([rows, width], device),
    }
}

/// `dropout(softmax(q kᵀ · scale + bias)) v` over `[batch, heads, length, width]` tensors; `bias`
/// broadcasts to the score shape `[batch, heads, queries, keys]`.
pub(crate) fn attention(
    query: Tensor<4>,
    key: Tensor<4>,
    value: Tensor<4>,
    bias: Tensor<4>,
    scale: Option<f64>,
    dropout: Option<&Dropout>,
) -> Tensor<4> {
    let scores = query.matmul(key.swap_dims(2, 3));
    let scores = match scale {
        Some(scale) => scores.mul_scalar(scale),
        None => scores,
    };
    let weights = softmax(scores + bias, 3);
    let weights = match dropout {
        Some(dropout) => dropout.forward(weights),
        None => weights,
    };
    weights.matmul(value)
}

/// A dropout layer of probability `prob`, switched off until [`crate::Backbone::with_dropout`].
pub(crate) fn dropout(prob: f64) -> Dropout {
    Dropout {
        prob,
        training: Param::from_bool(false),
    }
}

/// `[batch, keys]` attention mask (1 = token, 0 = padding) as an additive bias `[batch, 1, 1, keys]`.
pub(crate) fn padding_bias(mask: Tensor<2, Int>) -> Tensor<4> {
    let masked: Tensor<2, Bool> = mask.equal_elem(0);
    let [batch, keys] = masked.dims();
    Tensor::<2>::zeros([batch, keys], &masked.device())
        .mask_fill(masked, MASKED)
        .reshape([batch, 1, 1, keys])
}

/// Additive causal mask `[1, 1, queries, offset + queries]` for queries at positions
/// `offset..offset + queries` over keys at `0..offset + queries`.
pub(crate) fn causal_bias(queries: usize, offset: usize, device: &Device) -> Tensor<4> {
    let keys = offset + queries;
    let values: Vec<f32> = (0..queries)
        .flat_map(|q| (0..keys).map(move |k| if k > offset + q { MASKED } else { 0.0 }))
        .collect();
    Tensor::from_data(TensorData::new(values, [1, 1, queries, keys]), device)
}

/// `[batch, length, heads * width]` → `[batch, heads, length, width]`.
pub(crate) fn split_heads(x: Tensor<3>, heads: usize) -> Tensor<4> {
    let [batch, length, inner] = x.dims();
    x.reshape([batch, length, heads, inner / heads])
        .swap_dims(1, 2)
}

/// `[batch, heads, length, width]` → `[batch, length, heads * width]`.
pub(crate) fn merge_heads(x: Tensor<4>) -> Tensor<3> {
    let [batch, heads, length, width] = x.dims();
    x.swap_dims(1, 2).reshape([batch, length, heads * width])
}
