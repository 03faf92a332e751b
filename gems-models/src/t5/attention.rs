//! T5 attention: no 1/sqrt(d) scaling, a learned relative-position bias (block 0 only, shared by
//! the later blocks), bucketed bidirectionally in the encoder and causally in the decoder.

use burn::module::Module;
use burn::nn::{Dropout, Embedding, Linear};
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::cache::KeyValue;
use crate::nn::{attention, dropout, embedding, linear, merge_heads, split_heads};
use crate::observer::{Probe, observed};
use crate::t5::T5Config;

/// HF `T5Attention`: projections `q`, `k`, `v`, `o` without bias, and in the first block of each
/// stack the `relative_attention_bias` table `[num_buckets, num_heads]`.
#[derive(Module, Debug)]
pub struct T5Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    relative_attention_bias: Option<Embedding>,
    /// On the attention weights.
    dropout: Dropout,
    #[module(skip)]
    heads: usize,
    #[module(skip)]
    bidirectional: bool,
    #[module(skip)]
    num_buckets: usize,
    #[module(skip)]
    max_distance: usize,
}

impl T5Attention {
    /// A randomly initialised attention layer (HF `_init_weights`).
    pub(crate) fn new(
        config: &T5Config,
        bidirectional: bool,
        relative_bias: bool,
        device: &Device,
    ) -> Self {
        let factor = config.initializer_factor;
        let (d_model, inner) = (
            config.d_model as f64,
            (config.num_heads * config.d_kv) as f64,
        );
        let project =
            |d_in: usize, d_out: usize, std: f64| linear(d_in, d_out, false, factor * std, device);
        let inner_size = config.num_heads * config.d_kv;
        Self {
            q: project(
                config.d_model,
                inner_size,
                (d_model * config.d_kv as f64).powf(-0.5),
            ),
            k: project(config.d_model, inner_size, d_model.powf(-0.5)),
            v: project(config.d_model, inner_size, d_model.powf(-0.5)),
            o: project(inner_size, config.d_model, inner.powf(-0.5)),
            relative_attention_bias: relative_bias.then(|| {
                embedding(
                    config.relative_attention_num_buckets,
                    config.num_heads,
                    factor * d_model.powf(-0.5),
                    device,
                )
            }),
            dropout: dropout(config.dropout_rate),
            heads: config.num_heads,
            bidirectional,
            num_buckets: config.relative_attention_num_buckets,
            max_distance: config.relative_attention_max_distance,
        }
    }

    /// The relative position bias `[1, heads, queries, keys]` for queries at positions
    /// `offset..offset + queries` over keys at `0..keys` (HF `compute_bias`).
    ///
    /// Panics when called on a block without the bias table: only block 0 computes it.
    pub(crate) fn position_bias(
        &self,
        queries: usize,
        keys: usize,
        offset: usize,
        device: &Device,
    ) -> Tensor<4> {
        let table = self
            .relative_attention_bias
            .as_ref()
            .expect("position bias is computed by block 0");
        let mut buckets = Vec::with_capacity(queries * keys);
        for query in offset..offset + queries {
            for key in 0..keys {
                let relative = key as i64 - query as i64;
                buckets.push(relative_position_bucket(
                    relative,
                    self.bidirectional,
                    self.num_buckets,
                    self.max_distance,
                ));
            }
        }
        let buckets =
            Tensor::<2, Int>::from_data(TensorData::new(buckets, [queries, keys]), device);
        // [queries, keys, heads] -> [1, heads, queries, keys]
        table.forward(buckets).permute([2, 0, 1]).unsqueeze::<4>()
    }

    /// Keys and values of `states` (`[batch, length, d_model]`) as `[batch, heads, length, d_kv]`.
    pub(crate) fn keys_values(&self, states: Tensor<3>, mut probe: Option<&mut Probe>) -> KeyValue {
        let key = observed(probe.as_deref_mut(), "k", &self.k, states.clone());
        let value = observed(probe, "v", &self.v, states);
        KeyValue {
            key: split_heads(key, self.heads),
            value: split_heads(value, self.heads),
        }
    }

    /// Attention of the queries of `x` over `memory`, with the additive `bias` (position bias and masks).
    pub(crate) fn attend(
        &self,
        x: Tensor<3>,
        memory: &KeyValue,
        bias: Tensor<4>,
        mut probe: Option<&mut Probe>,
    ) -> Tensor<3> {
        let query = split_heads(observed(probe.as_deref_mut(), "q", &self.q, x), self.heads);
        let context = attention(
            query,
            memory.key.clone(),
            memory.value.clone(),
            bias,
            None,
            Some(&self.dropout),
        );
        observed(probe, "o", &self.o, merge_heads(context))
    }
}

/// HF `_relative_position_bucket`: exact buckets for small distances, logarithmic ones up to
/// `max_distance`. The logarithm is computed in f32 in the same order as PyTorch so that bucket
/// boundaries agree exactly.
pub(crate) fn relative_position_bucket(
    relative: i64,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
) -> i64 {
    let mut buckets = num_buckets as i64;
    let mut bucket = 0;
    let distance = if bidirectional {
        buckets /= 2;
        if relative > 0 {
            bucket += buckets;
        }
        relative.abs()
    } else {
        (-relative).max(0)
    };
    let max_exact = buckets / 2;
    if distance < max_exact {
        return bucket + distance;
    }
    let log_ratio = (distance as f32 / max_exact as f32).ln();
    let log_range = (max_distance as f64 / max_exact as f64).ln() as f32;
    let large = max_exact + (log_ratio / log_range * (buckets - max_exact) as f32) as i64;
    bucket + large.min(buckets - 1)
}

#[cfg(test)]
mod tests {
    use super::relative_position_bucket;

    /// Values printed by HF's `T5Attention._relative_position_bucket` for t5-small's settings
    /// (32 buckets, max distance 128):
    /// ```python
    /// rp = torch.tensor([-200, -128, -64, -20, -16, -9, -8, -7, -1, 0, 1, 7, 8, 16, 64, 200])
    /// T5Attention._relative_position_bucket(rp, True, 32, 128).tolist()
    /// T5Attention._relative_position_bucket(rp, False, 32, 128).tolist()
    /// ```
    #[test]
    fn buckets_match_transformers() {
        let positions = [
            -200, -128, -64, -20, -16, -9, -8, -7, -1, 0, 1, 7, 8, 16, 64, 200,
        ];
        let bidirectional = [15, 15, 14, 10, 10, 8, 8, 7, 1, 0, 17, 23, 24, 26, 30, 31];
        let causal = [31, 31, 26, 17, 16, 9, 8, 7, 1, 0, 0, 0, 0, 0, 0, 0];
        for (i, &position) in positions.iter().enumerate() {
            assert_eq!(
                relative_position_bucket(position, true, 32, 128),
                bidirectional[i],
                "bidirectional {position}"
            );
            assert_eq!(
                relative_position_bucket(position, false, 32, 128),
                causal[i],
                "causal {position}"
            );
        }
    }
}
