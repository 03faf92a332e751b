//! Qwen2 layers and `Qwen2ForCausalLM`, laid out like HF `modeling_qwen2.py` so that Burn's module
//! paths are the HF tensor names (`model.layers.0.self_attn.q_proj.weight`).
//!
//! Positions count real tokens only (`cumsum(attention_mask) - 1`, as HF `generate` does), so a
//! left-padded row computes exactly what it would unpadded; right padding works too.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::activation::silu;
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::cache::{KeyValue, row_index};
use crate::nn::{
    RmsNorm, attention, causal_bias, linear, merge_heads, on_rows, padding_bias, split_heads,
};
use crate::observer::{Probe, observed};
use crate::qwen2::Qwen2Config;
use crate::vocab::TokenMatrix;

/// Rotary embedding tables for the positions of a forward pass: `cos` and `sin`, `[batch, 1, length, head_dim]`.
struct Rotary {
    cos: Tensor<4>,
    sin: Tensor<4>,
}

impl Rotary {
    /// HF `Qwen2RotaryEmbedding` (default rope type) at `positions` `[batch, length]`.
    fn new(positions: Tensor<2, Int>, head_dim: usize, base: f64) -> Self {
        let device = positions.device();
        let [batch, length] = positions.dims();
        let inverse: Vec<f32> = (0..head_dim / 2)
            .map(|i| (1.0 / base.powf((2 * i) as f64 / head_dim as f64)) as f32)
            .collect();
        let inverse =
            Tensor::<3>::from_data(TensorData::new(inverse, [1, 1, head_dim / 2]), &device);
        let freqs = positions.float().reshape([batch, length, 1]) * inverse;
        let angles = Tensor::cat(vec![freqs.clone(), freqs], 2).unsqueeze_dim::<4>(1);
        Self {
            cos: angles.clone().cos(),
            sin: angles.sin(),
        }
    }

    /// Rotates `x` `[batch, heads, length, head_dim]` (the "rotate half" convention).
    fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let [batch, heads, length, width] = x.dims();
        let half = width / 2;
        let first = x.clone().slice([0..batch, 0..heads, 0..length, 0..half]);
        let second = x
            .clone()
            .slice([0..batch, 0..heads, 0..length, half..width]);
        let rotated = Tensor::cat(vec![second.neg(), first], 3);
        x * self.cos.clone() + rotated * self.sin.clone()
    }
}

/// HF `Qwen2Attention`: grouped-query attention with biased q/k/v projections.
#[derive(Module, Debug)]
struct Qwen2Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    #[module(skip)]
    heads: usize,
    #[module(skip)]
    kv_heads: usize,
}

impl Qwen2Attention {
    fn new(config: &Qwen2Config, device: &Device) -> Self {
        let (hidden, head) = (config.hidden_size, config.head_size());
        let std = config.initializer_range;
        let (heads, kv_heads) = (config.num_attention_heads, config.key_value_heads());
        Self {
            q_proj: linear(hidden, heads * head, true, std, device),
            k_proj: linear(hidden, kv_heads * head, true, std, device),
            v_proj: linear(hidden, kv_heads * head, true, std, device),
            o_proj: linear(heads * head, hidden, false, std, device),
            heads,
            kv_heads,
        }
    }

    /// Attention of `x`'s positions over the cached ones and their own; `bias` `[batch, 1, new, all]`.
    fn forward(
        &self,
        x: Tensor<3>,
        rotary: &Rotary,
        bias: Tensor<4>,
        past: Option<KeyValue>,
        mut probe: Option<&mut Probe>,
    ) -> (Tensor<3>, KeyValue) {
        let query = split_heads(
            observed(probe.as_deref_mut(), "q_proj", &self.q_proj, x.clone()),
            self.heads,
        );
        let key = split_heads(
            observed(probe.as_deref_mut(), "k_proj", &self.k_proj, x.clone()),
            self.kv_heads,
        );
        let value = split_heads(
            observed(probe.as_deref_mut(), "v_proj", &self.v_proj, x),
            self.kv_heads,
        );
        let all = KeyValue::extend(past, rotary.apply(key), value);

        // Query heads g * group .. (g + 1) * group share key-value head g (HF `repeat_kv`): fold each
        // group into the query length instead of copying the keys and values.
        let [batch, _, length, width] = query.dims();
        let group = self.heads / self.kv_heads;
        let query = rotary
            .apply(query)
            .reshape([batch, self.kv_heads, group * length, width]);
        let bias = bias.repeat_dim(2, group);
        let context = attention(
            query,
            all.key.clone(),
            all.value.clone(),
            bias,
            Some((width as f64).powf(-0.5)),
            None,
        );
        let context = context.reshape([batch, self.heads, length, width]);
        (
            observed(probe, "o_proj", &self.o_proj, merge_heads(context)),
            all,
        )
    }
}

/// HF `Qwen2MLP`: `down_proj(silu(gate_proj(x)) * up_proj(x))`.
#[derive(Module, Debug)]
struct Qwen2Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Qwen2Mlp {
    fn forward(&self, x: Tensor<3>, mut probe: Option<&mut Probe>) -> Tensor<3> {
        let gate = silu(observed(
            probe.as_deref_mut(),
            "gate_proj",
            &self.gate_proj,
            x.clone(),
        ));
        let up = observed(probe.as_deref_mut(), "up_proj", &self.up_proj, x);
        observed(probe, "down_proj", &self.down_proj, gate * up)
    }
}

#[derive(Module, Debug)]
struct Qwen2DecoderLayer {
    self_attn: Qwen2Attention,
    mlp: Qwen2Mlp,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
}

impl Qwen2DecoderLayer {
    fn new(config: &Qwen2Config, device: &Device) -> Self {
        let (hidden, inner, std) = (
            config.hidden_size,
            config.intermediate_size,
            config.initializer_range,
        );
        let norm = || RmsNorm::new(hidden, config.rms_norm_eps, 1.0, device);
        Self {
            self_attn: Qwen2Attention::new(config, device),
            mlp: Qwen2Mlp {
                gate_proj: linear(hidden, inner, false, std, device),
                up_proj: linear(hidden, inner, false, std, device),
                down_proj: linear(inner, hidden, false, std, device),
            },
            input_layernorm: norm(),
            post_attention_layernorm: norm(),
        }
    }

    fn forward(
        &self,
        x: Tensor<3>,
        rotary: &Rotary,
        bias: Tensor<4>,
        past: Option<KeyValue>,
        mut probe: Option<&mut Probe>,
    ) -> (Tensor<3>, KeyValue) {
        let mut attention_probe = probe.as_deref_mut().map(|p| p.child("self_attn"));
        let (attended, cache) = self.self_attn.forward(
            self.input_layernorm.forward(x.clone()),
            rotary,
            bias,
            past,
            attention_probe.as_mut(),
        );
        let x = x + attended;
        let mut mlp_probe = probe.map(|p| p.child("mlp"));
        let out = self.mlp.forward(
            self.post_attention_layernorm.forward(x.clone()),
            mlp_probe.as_mut(),
        );
        (x + out, cache)
    }
}

/// HF `Qwen2Model`: embedding, decoder layers, final norm.
#[derive(Module, Debug)]
struct Qwen2Model {
    embed_tokens: TokenMatrix,
    layers: Vec<Qwen2DecoderLayer>,
    norm: RmsNorm,
}

/// A Qwen2 decoding state: every layer's keys and values, the attention mask and the next positions.
#[derive(Debug, Clone)]
pub struct Qwen2Cache {
    layers: Vec<KeyValue>,
    /// `[batch, cached]`, 1 = token, 0 = padding.
    attention_mask: Tensor<2, Int>,
    /// `[batch, 1]`: position of each row's next token.
    next_position: Tensor<2, Int>,
}

impl Qwen2Cache {
    /// Positions cached (padding included).
    pub fn len(&self) -> usize {
        self.attention_mask.dims()[1]
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cache of rows `rows` (in that order; rows may repeat).
    pub fn select_rows(self, rows: &[usize]) -> Self {
        let rows = &row_index(rows, &self.attention_mask.device());
        Self {
            layers: self
                .layers
                .into_iter()
                .map(|kv| kv.select_rows(rows))
                .collect(),
            attention_mask: self.attention_mask.select(0, rows.clone()),
            next_position: self.next_position.select(0, rows.clone()),
        }
    }
}

/// HF `Qwen2ForCausalLM`: the decoder and `lm_head` (absent when tied to `model.embed_tokens`).
#[derive(Module, Debug)]
pub struct Qwen2ForCausalLM {
    model: Qwen2Model,
    lm_head: Option<TokenMatrix>,
    #[module(skip)]
    config: Qwen2Config,
}

impl Qwen2ForCausalLM {
    /// A randomly initialised model: every matrix ~ N(0, initializer_range²), zero biases, unit norms.
    pub fn new(config: &Qwen2Config, device: &Device) -> Self {
        Self::with_lm_head(config, !config.tie_word_embeddings, device)
    }

    /// A randomly initialised model with or without its own `lm_head`.
    pub(crate) fn with_lm_head(config: &Qwen2Config, lm_head: bool, device: &Device) -> Self {
        let (vocab, hidden, std) = (
            config.vocab_size,
            config.hidden_size,
            config.initializer_range,
        );
        Self {
            model: Qwen2Model {
                embed_tokens: TokenMatrix::new(vocab, hidden, std, device),
                layers: (0..config.num_hidden_layers)
                    .map(|_| Qwen2DecoderLayer::new(config, device))
                    .collect(),
                norm: RmsNorm::new(hidden, config.rms_norm_eps, 1.0, device),
            },
            lm_head: lm_head.then(|| TokenMatrix::new(vocab, hidden, std, device)),
            config: config.clone(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Qwen2Config {
        &self.config
    }

    /// Whether `lm_head` is the token embedding.
    pub fn is_tied(&self) -> bool {
        self.lm_head.is_none()
    }

    /// Positions of the real tokens: `cumsum(mask) - 1`, 0 on leading padding.
    fn positions(attention_mask: Tensor<2, Int>) -> Tensor<2, Int> {
        attention_mask.cumsum(1).sub_scalar(1).clamp_min(0)
    }

    /// Runs `input_ids` `[batch, new]` at `positions` after the cached `past` positions;
    /// `attention_mask` covers the cached and new positions. Returns the final hidden states and
    /// every layer's keys and values.
    fn run(
        &self,
        input_ids: Tensor<2, Int>,
        positions: Tensor<2, Int>,
        attention_mask: Tensor<2, Int>,
        past: Option<Vec<KeyValue>>,
        mut probe: Option<&mut Probe>,
    ) -> (Tensor<3>, Vec<KeyValue>) {
        let [_, length] = input_ids.dims();
        let offset = attention_mask.dims()[1] - length;
        let device = input_ids.device();
        let rotary = Rotary::new(positions, self.config.head_size(), self.config.rope_base());
        let bias = causal_bias(length, offset, &device) + padding_bias(attention_mask);
        let mut past = past.map(Vec::into_iter);
        let mut cache = Vec::with_capacity(self.model.layers.len());
        let mut x = self.model.embed_tokens.embed(input_ids);
        for (i, layer) in self.model.layers.iter().enumerate() {
            let mut probe = probe
                .as_deref_mut()
                .map(|p| p.child(format_args!("model.layers.{i}")));
            let layer_past = past.as_mut().and_then(Iterator::next);
            let (out, keys_values) =
                layer.forward(x, &rotary, bias.clone(), layer_past, probe.as_mut());
            cache.push(keys_values);
            x = out;
        }
        (self.model.norm.forward(x), cache)
    }

    /// Final hidden states `[batch, length, hidden]` of a padded batch.
    pub(crate) fn hidden_states(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Tensor<2, Int>,
        probe: Option<&mut Probe>,
    ) -> Tensor<3> {
        let positions = Self::positions(attention_mask.clone());
        self.run(input_ids, positions, attention_mask, None, probe)
            .0
    }

    /// Logits over the vocabulary of hidden states `[..., hidden]`.
    pub fn lm_logits<const D: usize>(&self, hidden: Tensor<D>) -> Tensor<D> {
        let head = self.lm_head.as_ref().unwrap_or(&self.model.embed_tokens);
        on_rows(hidden, |rows| head.logits(rows))
    }

    /// Logits `[batch, length, vocab]` of a padded batch (left or right padding).
    pub fn forward(&self, input_ids: Tensor<2, Int>, attention_mask: Tensor<2, Int>) -> Tensor<3> {
        self.lm_logits(self.hidden_states(input_ids, attention_mask, None))
    }

    /// Starts cached decoding with a left-padded prompt batch; returns the prompt logits
    /// `[batch, length, vocab]` (the last column predicts the first new token) and the cache.
    pub fn start_cache(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Tensor<2, Int>,
    ) -> (Tensor<3>, Qwen2Cache) {
        let positions = Self::positions(attention_mask.clone());
        let [batch, length] = positions.dims();
        let next_position = positions
            .clone()
            .slice([0..batch, length - 1..length])
            .add_scalar(1);
        let (hidden, layers) = self.run(input_ids, positions, attention_mask.clone(), None, None);
        (
            self.lm_logits(hidden),
            Qwen2Cache {
                layers,
                attention_mask,
                next_position,
            },
        )
    }

    /// Feeds `input_ids` `[batch, new]` (real tokens) after the cached positions; returns their
    /// logits `[batch, new, vocab]` and extends the cache.
    pub fn forward_cached(&self, input_ids: Tensor<2, Int>, cache: &mut Qwen2Cache) -> Tensor<3> {
        let [batch, length] = input_ids.dims();
        let device = input_ids.device();
        let steps = Tensor::<1, Int>::arange(0..length as i64, &device).reshape([1, length]);
        let positions = cache.next_position.clone() + steps;
        let mask = Tensor::cat(
            vec![
                cache.attention_mask.clone(),
                Tensor::ones([batch, length], &device),
            ],
            1,
        );
        let past = std::mem::take(&mut cache.layers);
        let (hidden, layers) = self.run(input_ids, positions, mask.clone(), Some(past), None);
        cache.layers = layers;
        cache.attention_mask = mask;
        cache.next_position = cache.next_position.clone().add_scalar(length as i64);
        self.lm_logits(hidden)
    }

    /// Grows (or shrinks) the vocabulary to `vocab_size` rows; see [`crate::Backbone::resize_token_embeddings`].
    pub(crate) fn resize_token_embeddings(mut self, vocab_size: usize) -> Self {
        self.model.embed_tokens = self.model.embed_tokens.resize(vocab_size);
        self.lm_head = self.lm_head.map(|head| head.resize(vocab_size));
        self.config.vocab_size = vocab_size;
        self
    }

    /// Freezes the rows of tokens `0..first_added` of the vocabulary matrices; see
    /// [`crate::Backbone::freeze_pretrained_tokens`].
    pub(crate) fn freeze_pretrained_tokens(mut self, first_added: usize) -> Self {
        self.model.embed_tokens = self.model.embed_tokens.freeze_pretrained(first_added);
        self.lm_head = self.lm_head.map(|head| head.freeze_pretrained(first_added));
        self
    }

    /// The vocabulary matrices with their paths: the token embedding and an untied head.
    pub(crate) fn token_matrices(&self) -> Vec<(&'static str, &TokenMatrix)> {
        let mut matrices = vec![("model.embed_tokens", &self.model.embed_tokens)];
        matrices.extend(self.lm_head.as_ref().map(|head| ("lm_head", head)));
        matrices
    }

    /// Records in the config whether the output head is tied, for saving.
    pub(crate) fn config_for_saving(&self) -> Qwen2Config {
        let mut config = self.config.clone();
        config.tie_word_embeddings = self.is_tied();
        config
    }
}
