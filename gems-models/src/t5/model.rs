//! T5 blocks, stacks and `T5ForConditionalGeneration`, laid out like HF `modeling_t5.py` so that
//! Burn's module paths are the HF tensor names (`encoder.block.0.layer.1.DenseReluDense.wi.weight`).
//!
//! Dropout (`dropout_rate`) sits where HF's does: on the stack input and output, on each
//! sublayer's output before the residual sum, on the attention weights and inside the
//! feed-forward block. It is off unless switched on with [`crate::Backbone::with_dropout`], and
//! then acts only on an autodiff device (Burn's `Dropout`).
#![allow(non_snake_case)]

use burn::module::Module;
use burn::nn::{Dropout, Linear};
use burn::tensor::activation::{gelu, gelu_approximate, relu, silu};
use burn::tensor::{Device, Int, Tensor};

use crate::cache::{KeyValue, row_index};
use crate::nn::{RmsNorm, causal_bias, dropout, linear, on_rows, padding_bias};
use crate::observer::{Probe, observed};
use crate::t5::attention::T5Attention;
use crate::t5::{Activation, T5Config};
use crate::vocab::TokenMatrix;

#[derive(Module, Debug)]
struct T5LayerSelfAttention {
    SelfAttention: T5Attention,
    layer_norm: RmsNorm,
    dropout: Dropout,
}

impl T5LayerSelfAttention {
    fn new(config: &T5Config, bidirectional: bool, relative_bias: bool, device: &Device) -> Self {
        Self {
            SelfAttention: T5Attention::new(config, bidirectional, relative_bias, device),
            layer_norm: layer_norm(config, device),
            dropout: dropout(config.dropout_rate),
        }
    }

    /// `x + attention(norm(x))` over the cached positions `past` and `x`'s; returns the keys and
    /// values of all positions too.
    fn forward(
        &self,
        x: Tensor<3>,
        bias: Tensor<4>,
        past: Option<KeyValue>,
        probe: Option<&mut Probe>,
    ) -> (Tensor<3>, KeyValue) {
        let normed = self.layer_norm.forward(x.clone());
        let mut probe = probe.map(|p| p.child("SelfAttention"));
        let new = self
            .SelfAttention
            .keys_values(normed.clone(), probe.as_mut());
        let all = KeyValue::extend(past, new.key, new.value);
        let out = self
            .SelfAttention
            .attend(normed, &all, bias, probe.as_mut());
        (x + self.dropout.forward(out), all)
    }
}

#[derive(Module, Debug)]
struct T5LayerCrossAttention {
    EncDecAttention: T5Attention,
    layer_norm: RmsNorm,
    dropout: Dropout,
}

impl T5LayerCrossAttention {
    fn new(config: &T5Config, device: &Device) -> Self {
        Self {
            EncDecAttention: T5Attention::new(config, true, false, device),
            layer_norm: layer_norm(config, device),
            dropout: dropout(config.dropout_rate),
        }
    }

    fn forward(
        &self,
        x: Tensor<3>,
        memory: &KeyValue,
        bias: Tensor<4>,
        probe: Option<&mut Probe>,
    ) -> Tensor<3> {
        let normed = self.layer_norm.forward(x.clone());
        let mut probe = probe.map(|p| p.child("EncDecAttention"));
        let out = self
            .EncDecAttention
            .attend(normed, memory, bias, probe.as_mut());
        x + self.dropout.forward(out)
    }
}

/// HF `T5DenseActDense` (`wi`, `wo`) or `T5DenseGatedActDense` (`wi_0`, `wi_1`, `wo`): one struct
/// with optional fields, so that the parameter paths stay HF's in both variants.
#[derive(Module, Debug)]
struct T5DenseActDense {
    wi: Option<Linear>,
    wi_0: Option<Linear>,
    wi_1: Option<Linear>,
    wo: Linear,
    dropout: Dropout,
    #[module(skip)]
    activation: Activation,
}

impl T5DenseActDense {
    fn new(config: &T5Config, device: &Device) -> Self {
        let factor = config.initializer_factor;
        let input = || {
            linear(
                config.d_model,
                config.d_ff,
                false,
                factor * (config.d_model as f64).powf(-0.5),
                device,
            )
        };
        let gated = config.feed_forward_proj.gated;
        Self {
            wi: (!gated).then(input),
            wi_0: gated.then(input),
            wi_1: gated.then(input),
            wo: linear(
                config.d_ff,
                config.d_model,
                false,
                factor * (config.d_ff as f64).powf(-0.5),
                device,
            ),
            dropout: dropout(config.dropout_rate),
            activation: config.feed_forward_proj.activation,
        }
    }

    fn activate(&self, x: Tensor<3>) -> Tensor<3> {
        match self.activation {
            Activation::Relu => relu(x),
            Activation::Gelu => gelu(x),
            Activation::GeluNew => gelu_approximate(x),
            Activation::Silu => silu(x),
        }
    }

    fn forward(&self, x: Tensor<3>, mut probe: Option<&mut Probe>) -> Tensor<3> {
        let hidden = match (&self.wi, &self.wi_0, &self.wi_1) {
            (Some(wi), _, _) => self.activate(observed(probe.as_deref_mut(), "wi", wi, x)),
            (None, Some(wi_0), Some(wi_1)) => {
                let gate = self.activate(observed(probe.as_deref_mut(), "wi_0", wi_0, x.clone()));
                gate * observed(probe.as_deref_mut(), "wi_1", wi_1, x)
            }
            _ => unreachable!("T5DenseActDense is built with wi or with wi_0 and wi_1"),
        };
        observed(probe, "wo", &self.wo, self.dropout.forward(hidden))
    }
}

#[derive(Module, Debug)]
struct T5LayerFF {
    DenseReluDense: T5DenseActDense,
    layer_norm: RmsNorm,
    dropout: Dropout,
}

impl T5LayerFF {
    fn new(config: &T5Config, device: &Device) -> Self {
        Self {
            DenseReluDense: T5DenseActDense::new(config, device),
            layer_norm: layer_norm(config, device),
            dropout: dropout(config.dropout_rate),
        }
    }

    fn forward(&self, x: Tensor<3>, probe: Option<&mut Probe>) -> Tensor<3> {
        let mut probe = probe.map(|p| p.child("DenseReluDense"));
        let out = self
            .DenseReluDense
            .forward(self.layer_norm.forward(x.clone()), probe.as_mut());
        x + self.dropout.forward(out)
    }
}

fn layer_norm(config: &T5Config, device: &Device) -> RmsNorm {
    RmsNorm::new(
        config.d_model,
        config.layer_norm_epsilon,
        config.initializer_factor,
        device,
    )
}

#[derive(Module, Debug)]
struct T5EncoderBlock {
    layer: (T5LayerSelfAttention, T5LayerFF),
}

#[derive(Module, Debug)]
struct T5DecoderBlock {
    layer: (T5LayerSelfAttention, T5LayerCrossAttention, T5LayerFF),
}

/// The encoder stack (HF `T5Stack` with `is_decoder = False`).
#[derive(Module, Debug)]
struct T5Encoder {
    block: Vec<T5EncoderBlock>,
    final_layer_norm: RmsNorm,
    dropout: Dropout,
}

impl T5Encoder {
    fn new(config: &T5Config, device: &Device) -> Self {
        let block = (0..config.num_layers)
            .map(|i| T5EncoderBlock {
                layer: (
                    T5LayerSelfAttention::new(config, true, i == 0, device),
                    T5LayerFF::new(config, device),
                ),
            })
            .collect();
        Self {
            block,
            final_layer_norm: layer_norm(config, device),
            dropout: dropout(config.dropout_rate),
        }
    }

    fn forward(
        &self,
        embeds: Tensor<3>,
        attention_mask: Tensor<2, Int>,
        mut probe: Option<&mut Probe>,
    ) -> Tensor<3> {
        let [_, length, _] = embeds.dims();
        let first = &self.block[0].layer.0.SelfAttention;
        let bias =
            first.position_bias(length, length, 0, &embeds.device()) + padding_bias(attention_mask);
        let mut x = self.dropout.forward(embeds);
        for (i, block) in self.block.iter().enumerate() {
            let mut probe = probe
                .as_deref_mut()
                .map(|p| p.child(format_args!("block.{i}.layer")));
            let (attended, _) = block.layer.0.forward(
                x,
                bias.clone(),
                None,
                probe.as_mut().map(|p| p.child(0)).as_mut(),
            );
            x = block
                .layer
                .1
                .forward(attended, probe.as_mut().map(|p| p.child(1)).as_mut());
        }
        self.dropout.forward(self.final_layer_norm.forward(x))
    }
}

/// The decoder stack (HF `T5Stack` with `is_decoder = True`).
#[derive(Module, Debug)]
struct T5Decoder {
    block: Vec<T5DecoderBlock>,
    final_layer_norm: RmsNorm,
    dropout: Dropout,
}

impl T5Decoder {
    fn new(config: &T5Config, device: &Device) -> Self {
        let block = (0..config.decoder_layers())
            .map(|i| T5DecoderBlock {
                layer: (
                    T5LayerSelfAttention::new(config, false, i == 0, device),
                    T5LayerCrossAttention::new(config, device),
                    T5LayerFF::new(config, device),
                ),
            })
            .collect();
        Self {
            block,
            final_layer_norm: layer_norm(config, device),
            dropout: dropout(config.dropout_rate),
        }
    }

    /// Runs the new positions `embeds` (after `past` cached ones, if any) through the stack.
    /// Returns the final hidden states and every block's self-attention keys and values.
    fn forward(
        &self,
        embeds: Tensor<3>,
        memory: &[KeyValue],
        memory_bias: Tensor<4>,
        past: Option<Vec<KeyValue>>,
        mut probe: Option<&mut Probe>,
    ) -> (Tensor<3>, Vec<KeyValue>) {
        let [_, length, _] = embeds.dims();
        let offset = past
            .as_ref()
            .and_then(|p| p.first())
            .map_or(0, KeyValue::len);
        let device = embeds.device();
        let first = &self.block[0].layer.0.SelfAttention;
        let bias = first.position_bias(length, offset + length, offset, &device)
            + causal_bias(length, offset, &device);
        let mut past = past.map(Vec::into_iter);
        let mut cache = Vec::with_capacity(self.block.len());
        let mut x = self.dropout.forward(embeds);
        for (i, block) in self.block.iter().enumerate() {
            let mut probe = probe
                .as_deref_mut()
                .map(|p| p.child(format_args!("block.{i}.layer")));
            let block_past = past.as_mut().and_then(Iterator::next);
            let (attended, keys_values) = block.layer.0.forward(
                x,
                bias.clone(),
                block_past,
                probe.as_mut().map(|p| p.child(0)).as_mut(),
            );
            cache.push(keys_values);
            let crossed = block.layer.1.forward(
                attended,
                &memory[i],
                memory_bias.clone(),
                probe.as_mut().map(|p| p.child(1)).as_mut(),
            );
            x = block
                .layer
                .2
                .forward(crossed, probe.as_mut().map(|p| p.child(2)).as_mut());
        }
        (
            self.dropout.forward(self.final_layer_norm.forward(x)),
            cache,
        )
    }

    /// Every block's cross-attention keys and values over the encoder output.
    fn memory(&self, encoder_hidden: Tensor<3>, mut probe: Option<&mut Probe>) -> Vec<KeyValue> {
        self.block
            .iter()
            .enumerate()
            .map(|(i, block)| {
                let mut probe = probe
                    .as_deref_mut()
                    .map(|p| p.child(format_args!("block.{i}.layer.1.EncDecAttention")));
                let mut probe = probe.as_mut().map(Probe::on_memory);
                block
                    .layer
                    .1
                    .EncDecAttention
                    .keys_values(encoder_hidden.clone(), probe.as_mut())
            })
            .collect()
    }
}

/// HF `T5ForConditionalGeneration`: shared embedding, encoder, decoder, and `lm_head` (absent when
/// tied to `shared`).
#[derive(Module, Debug)]
pub struct T5ForConditionalGeneration {
    shared: TokenMatrix,
    encoder: T5Encoder,
    decoder: T5Decoder,
    lm_head: Option<TokenMatrix>,
    #[module(skip)]
    config: T5Config,
}

/// The encoder side of decoding for some rows: cross-attention keys and values of every decoder
/// block, and the encoder padding as an additive bias `[rows, 1, 1, source]`.
#[derive(Debug, Clone)]
struct Memory {
    keys_values: Vec<KeyValue>,
    bias: Tensor<4>,
}

impl Memory {
    fn select_rows(&self, rows: &Tensor<1, Int>) -> Self {
        Self {
            keys_values: self
                .keys_values
                .iter()
                .map(|kv| kv.clone().select_rows(rows))
                .collect(),
            bias: self.bias.clone().select(0, rows.clone()),
        }
    }
}

/// A T5 decoding state: the encoder side computed once per prompt, the decoder's self-attention
/// grown per step.
///
/// Beam search reorders rows every step, but every beam keeps its prompt; the per-row encoder
/// memory is therefore rebuilt only when the prompt of some row changes, not at every reorder.
#[derive(Debug, Clone)]
pub struct T5Cache {
    /// Encoder memory of each prompt.
    prompts: Memory,
    /// The prompt of each decoding row.
    row_prompts: Vec<usize>,
    /// Encoder memory of each decoding row.
    rows: Memory,
    /// Self-attention keys and values of every decoder block (`None` before the first step).
    past: Option<Vec<KeyValue>>,
}

impl T5Cache {
    /// Decoder positions processed so far.
    pub fn len(&self) -> usize {
        self.past
            .as_ref()
            .and_then(|p| p.first())
            .map_or(0, KeyValue::len)
    }

    /// Whether no decoder position has been processed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cache of rows `rows` (in that order; rows may repeat).
    pub fn select_rows(self, rows: &[usize]) -> Self {
        let device = self.rows.bias.device();
        let index = row_index(rows, &device);
        let row_prompts: Vec<usize> = rows.iter().map(|&r| self.row_prompts[r]).collect();
        let memory = match row_prompts == self.row_prompts {
            true => self.rows,
            false => self.prompts.select_rows(&row_index(&row_prompts, &device)),
        };
        Self {
            prompts: self.prompts,
            row_prompts,
            rows: memory,
            past: self
                .past
                .map(|past| past.into_iter().map(|kv| kv.select_rows(&index)).collect()),
        }
    }
}

impl T5ForConditionalGeneration {
    /// A randomly initialised model (HF's `_init_weights`), with `lm_head` unless the config ties it.
    pub fn new(config: &T5Config, device: &Device) -> Self {
        Self::with_lm_head(config, !config.tie_word_embeddings, device)
    }

    /// A randomly initialised model with or without its own `lm_head`.
    pub(crate) fn with_lm_head(config: &T5Config, lm_head: bool, device: &Device) -> Self {
        let factor = config.initializer_factor;
        Self {
            shared: TokenMatrix::new(config.vocab_size, config.d_model, factor, device),
            encoder: T5Encoder::new(config, device),
            decoder: T5Decoder::new(config, device),
            lm_head: lm_head
                .then(|| TokenMatrix::new(config.vocab_size, config.d_model, factor, device)),
            config: config.clone(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &T5Config {
        &self.config
    }

    /// Whether `lm_head` is the shared embedding.
    pub fn is_tied(&self) -> bool {
        self.lm_head.is_none()
    }

    /// Encoder output `[batch, source, d_model]` for right-padded `input_ids` and their mask.
    pub fn encode(&self, input_ids: Tensor<2, Int>, attention_mask: Tensor<2, Int>) -> Tensor<3> {
        self.encode_probed(input_ids, attention_mask, None)
    }

    pub(crate) fn encode_probed(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Tensor<2, Int>,
        probe: Option<&mut Probe>,
    ) -> Tensor<3> {
        // The probe's memory rows are the encoder's tokens.
        let mut probe = probe.map(Probe::on_memory);
        let mut probe = probe.as_mut().map(|p| p.child("encoder"));
        self.encoder
            .forward(self.shared.embed(input_ids), attention_mask, probe.as_mut())
    }

    /// Decoder output `[batch, target, d_model]` (before the output scaling and `lm_head`).
    pub(crate) fn decode_probed(
        &self,
        decoder_input_ids: Tensor<2, Int>,
        encoder_hidden: Tensor<3>,
        attention_mask: Tensor<2, Int>,
        probe: Option<&mut Probe>,
    ) -> Tensor<3> {
        let mut probe = probe.map(|p| p.child("decoder"));
        let memory = self.decoder.memory(encoder_hidden, probe.as_mut());
        let embeds = self.shared.embed(decoder_input_ids);
        self.decoder
            .forward(
                embeds,
                &memory,
                padding_bias(attention_mask),
                None,
                probe.as_mut(),
            )
            .0
    }

    /// Logits over the vocabulary of decoder hidden states `[..., d_model]`: the v1.0 output
    /// scaling by `d_model^-0.5` when configured, then `lm_head` or the transposed shared embedding.
    pub fn lm_logits<const D: usize>(&self, hidden: Tensor<D>) -> Tensor<D> {
        let hidden = match self.config.scales_decoder_outputs() {
            true => hidden.mul_scalar((self.config.d_model as f64).powf(-0.5)),
            false => hidden,
        };
        let head = self.lm_head.as_ref().unwrap_or(&self.shared);
        on_rows(hidden, |rows| head.logits(rows))
    }

    /// Logits `[batch, target, vocab]` of the full forward pass (HF `forward` with `decoder_input_ids`).
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Tensor<2, Int>,
        decoder_input_ids: Tensor<2, Int>,
    ) -> Tensor<3> {
        let encoder_hidden = self.encode(input_ids, attention_mask.clone());
        self.decode(decoder_input_ids, encoder_hidden, attention_mask)
    }

    /// Logits `[batch, target, vocab]` of `decoder_input_ids` over an encoder output and its mask.
    pub fn decode(
        &self,
        decoder_input_ids: Tensor<2, Int>,
        encoder_hidden: Tensor<3>,
        attention_mask: Tensor<2, Int>,
    ) -> Tensor<3> {
        self.lm_logits(self.decode_probed(decoder_input_ids, encoder_hidden, attention_mask, None))
    }

    /// HF `_shift_right`: the decoder inputs for `labels`: `decoder_start_token_id`, then the labels
    /// but the last, with -100 replaced by the padding id.
    pub fn shift_right(&self, labels: Tensor<2, Int>) -> Tensor<2, Int> {
        let [batch, length] = labels.dims();
        let device = labels.device();
        let start = Tensor::<2, Int>::full(
            [batch, 1],
            self.config.decoder_start_token_id as i64,
            &device,
        );
        let body = labels.slice([0..batch, 0..length - 1]);
        let body = body
            .clone()
            .mask_fill(body.equal_elem(-100), self.config.pad_token_id as i64);
        Tensor::cat(vec![start, body], 1)
    }

    /// Starts cached decoding: encodes the prompts once and precomputes every block's
    /// cross-attention keys and values.
    pub fn start_cache(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Tensor<2, Int>,
    ) -> T5Cache {
        let [prompts, _] = input_ids.dims();
        let encoder_hidden = self.encode(input_ids, attention_mask.clone());
        let memory = Memory {
            keys_values: self.decoder.memory(encoder_hidden, None),
            bias: padding_bias(attention_mask),
        };
        T5Cache {
            prompts: memory.clone(),
            row_prompts: (0..prompts).collect(),
            rows: memory,
            past: None,
        }
    }

    /// Feeds `decoder_input_ids` `[batch, new]` after the cached positions; returns their logits
    /// `[batch, new, vocab]` and extends the cache.
    pub fn forward_cached(
        &self,
        decoder_input_ids: Tensor<2, Int>,
        cache: &mut T5Cache,
    ) -> Tensor<3> {
        let embeds = self.shared.embed(decoder_input_ids);
        let (hidden, past) = self.decoder.forward(
            embeds,
            &cache.rows.keys_values,
            cache.rows.bias.clone(),
            cache.past.take(),
            None,
        );
        cache.past = Some(past);
        self.lm_logits(hidden)
    }

    /// Grows (or shrinks) the vocabulary to `vocab_size` rows; see [`crate::Backbone::resize_token_embeddings`].
    pub(crate) fn resize_token_embeddings(mut self, vocab_size: usize) -> Self {
        self.shared = self.shared.resize(vocab_size);
        self.lm_head = self.lm_head.map(|head| head.resize(vocab_size));
        self.config.vocab_size = vocab_size;
        self
    }

    /// Freezes the rows of tokens `0..first_added` of the vocabulary matrices; see
    /// [`crate::Backbone::freeze_pretrained_tokens`].
    pub(crate) fn freeze_pretrained_tokens(mut self, first_added: usize) -> Self {
        self.shared = self.shared.freeze_pretrained(first_added);
        self.lm_head = self.lm_head.map(|head| head.freeze_pretrained(first_added));
        self
    }

    /// The vocabulary matrices with their paths: the shared embedding and an untied head.
    pub(crate) fn token_matrices(&self) -> Vec<(&'static str, &TokenMatrix)> {
        let mut matrices = vec![("shared", &self.shared)];
        matrices.extend(self.lm_head.as_ref().map(|head| ("lm_head", head)));
        matrices
    }

    /// Records in the config how the output head is tied, for saving (both transformers styles).
    pub(crate) fn config_for_saving(&self) -> T5Config {
        let mut config = self.config.clone();
        config.scale_decoder_outputs = Some(config.scales_decoder_outputs());
        config.tie_word_embeddings = self.is_tied();
        config
    }
}
