//! [`Backbone`]: one surface over T5 and Qwen2 for training and inference code, and [`LmBatch`],
//! the batch both consume.
//!
//! Batch conventions (as HF's):
//! - **T5**: `input_ids` is the encoder input (right-padded); `labels` the target ids, -100 on
//!   padding. The decoder input is `labels` shifted right behind `decoder_start_token_id`, with
//!   -100 replaced by the padding id (HF `_shift_right`).
//! - **Qwen2**: `input_ids` is prompt + target; `labels` has the same shape, with the target ids
//!   where the loss applies and -100 elsewhere; the shift happens inside the loss (position `t`
//!   predicts label `t + 1`). Padding may be on either side (positions count real tokens only);
//!   batched generation pads prompts on the left itself.

use burn::module::{Devices, Flag, Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::config::{ModelConfig, ModelKind};
use crate::error::ModelError;
use crate::factoring::GradientFactoring;
use crate::observer::{LinearInputObserver, Probe, TokenRows};
use crate::padding::{Side, int_matrix, pad};
use crate::qwen2::Qwen2ForCausalLM;
use crate::t5::T5ForConditionalGeneration;
use crate::vocab::TokenMatrix;

/// Label value that the loss ignores (PyTorch's `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// A padded batch for the loss or the logits; see the module documentation for its conventions.
#[derive(Debug, Clone)]
pub struct LmBatch {
    /// `[batch, length]` token ids.
    pub input_ids: Tensor<2, Int>,
    /// `[batch, length]`, 1 for tokens and 0 for padding.
    pub attention_mask: Tensor<2, Int>,
    /// `[batch, target]` (T5) or `[batch, length]` (Qwen2) label ids, -100 where no loss applies.
    pub labels: Tensor<2, Int>,
}

impl LmBatch {
    /// A batch from host rows, which must be rectangular (pad them first).
    pub fn from_rows(
        input_ids: &[Vec<i64>],
        attention_mask: &[Vec<i64>],
        labels: &[Vec<i64>],
        device: &Device,
    ) -> Result<Self, ModelError> {
        Ok(Self {
            input_ids: int_matrix(input_ids, "input_ids", device)?,
            attention_mask: int_matrix(attention_mask, "attention_mask", device)?,
            labels: int_matrix(labels, "labels", device)?,
        })
    }
}

/// T5 or Qwen2, with their common operations.
///
/// Implements [`Module`] without adding a path segment of its own, so parameter paths stay the
/// HF names (`shared.weight`, `model.layers.0.mlp.up_proj.weight`).
#[derive(Debug, Clone)]
pub enum Backbone {
    /// An encoder-decoder T5.
    T5(T5ForConditionalGeneration),
    /// A decoder-only Qwen2 / Qwen2.5.
    Qwen2(Qwen2ForCausalLM),
}

/// Applies the same expression to the model of either variant.
macro_rules! each {
    ($backbone:expr, $model:ident => $body:expr) => {
        match $backbone {
            Backbone::T5($model) => $body,
            Backbone::Qwen2($model) => $body,
        }
    };
}

/// Like [`each!`], rebuilding the variant around the result.
macro_rules! each_into {
    ($backbone:expr, $model:ident => $body:expr) => {
        match $backbone {
            Backbone::T5($model) => Backbone::T5($body),
            Backbone::Qwen2($model) => Backbone::Qwen2($body),
        }
    };
}

impl Module for Backbone {
    fn collect_devices(&self, devices: Devices) -> Devices {
        each!(self, model => model.collect_devices(devices))
    }
    fn fork(self, device: &Device) -> Self {
        each_into!(self, model => model.fork(device))
    }
    fn to_device(self, device: &Device) -> Self {
        each_into!(self, model => model.to_device(device))
    }
    fn train(self) -> Self {
        each_into!(self, model => model.train())
    }
    fn valid(&self) -> Self {
        each_into!(self, model => model.valid())
    }
    fn materialize(self) -> Self {
        each_into!(self, model => model.materialize())
    }
    fn visit<V: ModuleVisitor>(&self, visitor: &mut V) {
        each!(self, model => model.visit(visitor))
    }
    fn map<M: ModuleMapper>(self, mapper: &mut M) -> Self {
        each_into!(self, model => model.map(mapper))
    }
}

impl Backbone {
    /// A randomly initialised model (HF's initialisation scheme) for `config`.
    pub fn new(config: &ModelConfig, device: &Device) -> Result<Self, ModelError> {
        Ok(match config {
            ModelConfig::T5(config) => {
                config.check()?;
                Self::T5(T5ForConditionalGeneration::new(config, device))
            }
            ModelConfig::Qwen2(config) => {
                config.check()?;
                Self::Qwen2(Qwen2ForCausalLM::new(config, device))
            }
        })
    }

    /// The model's configuration (vocabulary size included, after any resize).
    pub fn config(&self) -> ModelConfig {
        match self {
            Self::T5(model) => ModelConfig::T5(model.config().clone()),
            Self::Qwen2(model) => ModelConfig::Qwen2(model.config().clone()),
        }
    }

    /// The configuration as it should be saved: tying and output scaling written explicitly.
    pub(crate) fn config_for_saving(&self) -> ModelConfig {
        match self {
            Self::T5(model) => ModelConfig::T5(model.config_for_saving()),
            Self::Qwen2(model) => ModelConfig::Qwen2(model.config_for_saving()),
        }
    }

    /// Which family this is.
    pub fn kind(&self) -> ModelKind {
        match self {
            Self::T5(_) => ModelKind::T5,
            Self::Qwen2(_) => ModelKind::Qwen2,
        }
    }

    /// Rows of the token embedding.
    pub fn vocab_size(&self) -> usize {
        self.config().vocab_size()
    }

    /// Whether the output head is the token embedding.
    pub fn is_tied(&self) -> bool {
        each!(self, model => model.is_tied())
    }

    /// The vocabulary matrices, each with its path (without the parameter name): the token
    /// embedding and an untied output head (a tied head is the embedding itself).
    pub fn token_matrices(&self) -> Vec<(&'static str, &TokenMatrix)> {
        each!(self, model => model.token_matrices())
    }

    /// The model with the rows of tokens `0..first_added` of its vocabulary matrices frozen and
    /// the rows of the tokens from `first_added` on (those a fine-tune added) held apart and
    /// trained: see [`TokenMatrix`]. The values, the logits and the saved checkpoint are
    /// unchanged; the backward pass forms gradients of the added rows only. Errors if
    /// `first_added` is 0 or past the vocabulary, or if the rows are frozen already.
    pub fn freeze_pretrained_tokens(self, first_added: usize) -> Result<Self, ModelError> {
        let vocab = self.vocab_size();
        if first_added == 0 || first_added > vocab {
            return Err(ModelError::InvalidInput(format!(
                "the first added token must lie in 1..={vocab}, not {first_added}"
            )));
        }
        if self.first_added_token().is_some() {
            return Err(ModelError::InvalidInput(
                "the pre-trained tokens' rows are frozen already".into(),
            ));
        }
        Ok(each_into!(self, model => model.freeze_pretrained_tokens(first_added)))
    }

    /// The first token whose rows are held apart and trained, when the pre-trained rows are
    /// frozen ([`Backbone::freeze_pretrained_tokens`]).
    pub fn first_added_token(&self) -> Option<usize> {
        // Every vocabulary matrix is frozen at the same token, or none is.
        let (_, embedding) = self.token_matrices()[0];
        embedding.first_added_token()
    }

    /// Paths of the parameters that are frozen (the pre-trained rows of the vocabulary
    /// matrices after [`Backbone::freeze_pretrained_tokens`]), for the optimizer to leave alone.
    pub fn frozen_parameters(&self) -> Vec<String> {
        self.token_matrices()
            .into_iter()
            .filter(|(_, matrix)| matrix.first_added_token().is_some())
            .map(|(path, _)| format!("{path}.weight"))
            .collect()
    }

    /// The device of the parameters.
    pub fn device(&self) -> Device {
        self.devices()
            .into_iter()
            .next()
            .expect("a model has parameters")
    }

    /// One vector per row, `[batch, hidden]`: the mean over non-padding tokens of the T5
    /// encoder's output, or of Qwen2's final hidden states. Text embeddings from the model's own
    /// representation (item embeddings for semantic identifiers).
    pub fn mean_hidden_states(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Tensor<2, Int>,
    ) -> Tensor<2> {
        let hidden = match self {
            Self::T5(model) => model.encode(input_ids, attention_mask.clone()),
            Self::Qwen2(model) => model.hidden_states(input_ids, attention_mask.clone(), None),
        };
        let [batch, _, width] = hidden.dims();
        let mask = attention_mask.float().unsqueeze_dim::<3>(2);
        let summed = (hidden * mask.clone()).sum_dim(1).reshape([batch, width]);
        let counts = mask.sum_dim(1).reshape([batch, 1]).clamp_min(1.0);
        summed / counts
    }

    /// [`Self::mean_hidden_states`] of token rows of any lengths (none empty), padded by the
    /// model's convention (T5 on the right, Qwen2 on the left) with its own padding token.
    pub fn embed_token_rows(&self, rows: &[Vec<u32>]) -> Result<Tensor<2>, ModelError> {
        let side = match self.kind() {
            ModelKind::T5 => Side::Right,
            ModelKind::Qwen2 => Side::Left,
        };
        let (ids, mask) = pad(rows, self.config().pad_token_id(), side, &self.device())?;
        Ok(self.mean_hidden_states(ids, mask))
    }

    /// Logits `[batch, positions, vocab]`: T5 at the decoder positions of `labels` (decoder input
    /// = shifted labels), Qwen2 at every position of `input_ids`.
    pub fn logits(&self, batch: &LmBatch) -> Result<Tensor<3>, ModelError> {
        check_batch(self.kind(), batch)?;
        Ok(match self {
            Self::T5(model) => {
                let decoder_input_ids = model.shift_right(batch.labels.clone());
                model.forward(
                    batch.input_ids.clone(),
                    batch.attention_mask.clone(),
                    decoder_input_ids,
                )
            }
            Self::Qwen2(model) => {
                model.forward(batch.input_ids.clone(), batch.attention_mask.clone())
            }
        })
    }

    /// Mean cross-entropy over the label tokens (those not -100), as `transformers` computes it.
    /// Logits are computed only at labelled positions. Errors if the batch has no label.
    pub fn loss(&self, batch: &LmBatch) -> Result<Tensor<1>, ModelError> {
        self.loss_probed(batch, None, None)
    }

    /// [`Backbone::loss`] with the softmax over the tokens `0..tokens` only: how well the model
    /// predicts text in its first `tokens` tokens (a pre-trained vocabulary, the tokens a
    /// fine-tune added left out), whatever probability the other tokens take. Errors if a label
    /// lies outside `0..tokens` or `tokens` exceeds the vocabulary.
    pub fn loss_within_first_tokens(
        &self,
        batch: &LmBatch,
        tokens: usize,
    ) -> Result<Tensor<1>, ModelError> {
        if tokens == 0 || tokens > self.vocab_size() {
            return Err(ModelError::InvalidInput(format!(
                "cannot restrict the softmax to the first {tokens} of {} tokens",
                self.vocab_size()
            )));
        }
        self.loss_probed(batch, None, Some(tokens))
    }

    /// [`Backbone::loss`] that also reports, for every attention q/k/v/o and MLP linear layer,
    /// its input at the non-padding tokens to `observer` (see [`LinearInputObserver`]). T5 encoder
    /// tokens are those of `attention_mask`, decoder tokens those with a label; Qwen2 tokens those
    /// of `attention_mask`.
    pub fn forward_observed(
        &self,
        batch: &LmBatch,
        observer: &mut dyn LinearInputObserver,
    ) -> Result<Tensor<1>, ModelError> {
        let tokens = TokenRows::from_mask(&batch.attention_mask);
        let mut probe = match self {
            Self::T5(_) => {
                let labelled = batch
                    .labels
                    .to_data()
                    .iter::<i64>()
                    .map(|l| l != IGNORE_INDEX)
                    .collect::<Vec<_>>();
                let decoder_rows = TokenRows::from_flags(labelled, &batch.labels.device());
                Probe::new(observer, "", decoder_rows, Some(tokens))
            }
            Self::Qwen2(_) => Probe::new(observer, "", tokens, None),
        };
        self.loss_probed(batch, Some(&mut probe), None)
    }

    /// [`Backbone::loss`] with the weight gradients of the linear layers `factoring` names left
    /// as factors where they are smaller than the gradients (see [`GradientFactoring`]): after
    /// `loss.backward()`, those weights have no gradient and
    /// [`GradientFactoring::take_factors`] gives theirs. Every other gradient is
    /// [`Backbone::loss`]'s.
    pub fn loss_factored(
        &self,
        batch: &LmBatch,
        factoring: &mut GradientFactoring,
    ) -> Result<Tensor<1>, ModelError> {
        self.loss_probed(batch, Some(&mut Probe::factoring(factoring)), None)
    }

    /// The loss, `probe` seeing the linear inputs, the softmax over the first `tokens` tokens
    /// when given (else the whole vocabulary).
    fn loss_probed(
        &self,
        batch: &LmBatch,
        probe: Option<&mut Probe>,
        tokens: Option<usize>,
    ) -> Result<Tensor<1>, ModelError> {
        check_batch(self.kind(), batch)?;
        let (hidden, targets) = match self {
            Self::T5(model) => {
                let mut probe = probe;
                let encoder_hidden = model.encode_probed(
                    batch.input_ids.clone(),
                    batch.attention_mask.clone(),
                    probe.as_deref_mut(),
                );
                let decoder_input_ids = model.shift_right(batch.labels.clone());
                let hidden = model.decode_probed(
                    decoder_input_ids,
                    encoder_hidden,
                    batch.attention_mask.clone(),
                    probe,
                );
                (hidden, batch.labels.clone())
            }
            Self::Qwen2(model) => {
                let hidden = model.hidden_states(
                    batch.input_ids.clone(),
                    batch.attention_mask.clone(),
                    probe,
                );
                let [rows, length, _] = hidden.dims();
                // Position t predicts label t + 1.
                let targets = batch.labels.clone().slice([0..rows, 1..length]);
                (hidden.narrow(1, 0, length - 1), targets)
            }
        };
        let [rows, length, width] = hidden.dims();
        let targets: Vec<i64> = targets.to_data().iter::<i64>().collect();
        let labelled: Vec<i64> = (0..rows * length)
            .filter(|&i| targets[i] != IGNORE_INDEX)
            .map(|i| i as i64)
            .collect();
        if labelled.is_empty() {
            return Err(ModelError::InvalidInput(
                "the batch has no label (every label is -100)".into(),
            ));
        }
        let count = labelled.len();
        let device = hidden.device();
        let target_ids: Vec<i64> = labelled.iter().map(|&i| targets[i as usize]).collect();
        let vocab = tokens.unwrap_or(self.vocab_size()) as i64;
        if let Some(bad) = target_ids.iter().find(|&&t| t < 0 || t >= vocab) {
            return Err(ModelError::InvalidInput(format!(
                "label {bad} is outside the vocabulary of {vocab} tokens"
            )));
        }
        let index = Tensor::<1, Int>::from_data(TensorData::new(labelled, [count]), &device);
        let selected = hidden.reshape([rows * length, width]).select(0, index);
        let logits = each!(self, model => model.lm_logits(selected));
        let logits = match tokens {
            Some(tokens) => logits.narrow(1, 0, tokens),
            None => logits,
        };
        let target_ids =
            Tensor::<2, Int>::from_data(TensorData::new(target_ids, [count, 1]), &device);
        let picked = log_softmax(logits, 1).gather(1, target_ids);
        Ok(picked.mean().neg())
    }

    /// The model with dropout on or off (T5's `dropout_rate`, where HF applies it; Qwen2 has none).
    /// Loaded and new models start with dropout off, so the loss is deterministic; switch it on
    /// for training as HF's `model.train()` does. It acts only on an autodiff device.
    pub fn with_dropout(self, enabled: bool) -> Self {
        struct Switch(bool);
        impl ModuleMapper for Switch {
            fn map_flag(&mut self, flag: Param<Flag>) -> Param<Flag> {
                flag.with_value(self.0)
            }
        }
        self.map(&mut Switch(enabled))
    }

    /// The model with a vocabulary of `vocab_size` tokens: embedding rows (and the columns of an
    /// untied `lm_head`) added for new tokens, initialised to the mean of the existing rows; a
    /// smaller size drops the last rows.
    pub fn resize_token_embeddings(self, vocab_size: usize) -> Self {
        each_into!(self, model => model.resize_token_embeddings(vocab_size))
    }
}

fn check_batch(kind: ModelKind, batch: &LmBatch) -> Result<(), ModelError> {
    let input = batch.input_ids.dims();
    let mask = batch.attention_mask.dims();
    let labels = batch.labels.dims();
    if input != mask {
        return Err(ModelError::InvalidInput(format!(
            "input_ids {input:?} and attention_mask {mask:?} differ in shape"
        )));
    }
    let labels_fit = match kind {
        ModelKind::T5 => labels[0] == input[0],
        ModelKind::Qwen2 => labels == input,
    };
    if !labels_fit || input.contains(&0) || labels.contains(&0) {
        return Err(ModelError::InvalidInput(format!(
            "labels {labels:?} do not fit input_ids {input:?} (T5: same batch size; Qwen2: same shape; none empty)"
        )));
    }
    if kind == ModelKind::Qwen2 && input[1] < 2 {
        return Err(ModelError::InvalidInput(
            "a Qwen2 batch needs at least two positions to predict one".into(),
        ));
    }
    Ok(())
}
