//! Host-side batching for encoder-decoder (T5) and decoder-only (Qwen2) models, Burn-free.
//!
//! A [`TokenBatch`] holds plain row-major vectors that the command line turns into tensors:
//!
//! - `input_ids`, `attention_mask`: `batch_size × input_len`, row `r` at `[r * input_len ..
//!   (r + 1) * input_len]`; mask 1 on real tokens, 0 on padding.
//! - `labels`: `batch_size × labels_len`, -100 ([`IGNORE_INDEX`]) wherever no loss is taken.
//!   - Encoder-decoder: the target's tokens followed by EOS, right-padded with -100; the decoder
//!     input is these labels shifted right behind the decoder start token (see
//!     [`TokenBatch::decoder_input_ids`]).
//!   - Decoder-only: `labels_len == input_len`, aligned with `input_ids` (the Hugging Face
//!     convention: the model shifts internally, predicting position t + 1 from positions ≤ t); the
//!     target's tokens and EOS carry their ids, the prompt and the padding -100.
//! - `tasks`: the task of each row, so that the optimizer can take one backward pass per task.
//!
//! Prompts that do not fit `max_input_tokens` lose history items from the left (oldest first),
//! re-rendering the prompt with fewer items; the target is never cut. Only when even an empty
//! history does not fit are the prompt's first tokens dropped (counted by
//! [`EncodedExample::prompt_cut`]).

use crate::error::{DataError, Result};
use crate::item_ids::ItemIdentifiers;
use crate::prompt::PromptTemplates;
use crate::schema::{ItemId, Request, Task};

/// Label value that the loss ignores.
pub const IGNORE_INDEX: i64 = -100;

/// Turns text into token ids, with no special tokens added (EOS is added by the batcher).
pub trait TextEncoder {
    /// Token ids of `text`.
    fn encode_text(&self, text: &str) -> Result<Vec<u32>>;
}

impl TextEncoder for tokenizers::Tokenizer {
    fn encode_text(&self, text: &str) -> Result<Vec<u32>> {
        self.encode(text, false)
            .map(|encoding| encoding.get_ids().to_vec())
            .map_err(|error| DataError::Tokenizer(format!("cannot encode {text:?}: {error}")))
    }
}

/// Which side padding goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaddingSide {
    /// Padding before the tokens (usual for decoder-only generation).
    Left,
    /// Padding after the tokens.
    Right,
}

/// The model family, which decides how prompt and target are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelLayout {
    /// T5: prompt into the encoder, target as decoder labels; right padding.
    EncoderDecoder,
    /// Qwen2: prompt and target concatenated in one sequence.
    DecoderOnly {
        /// Padding side of the batch.
        padding: PaddingSide,
    },
}

/// Options of encoding and collation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchOptions {
    /// Model family.
    pub layout: ModelLayout,
    /// Longest input row: the prompt (with its EOS) for encoder-decoder, prompt plus target plus EOS
    /// for decoder-only training.
    pub max_input_tokens: usize,
    /// Padding token id.
    pub pad_token_id: u32,
    /// End-of-sequence token id.
    pub eos_token_id: u32,
    /// Whether the prompt ends with EOS (T5's tokenizer appends it; decoder-only models usually not).
    pub append_eos_to_prompt: bool,
}

impl BatchOptions {
    /// T5 defaults: encoder-decoder, 512 input tokens, pad 0, EOS 1, EOS after the prompt.
    pub fn encoder_decoder() -> Self {
        BatchOptions {
            layout: ModelLayout::EncoderDecoder,
            max_input_tokens: 512,
            pad_token_id: 0,
            eos_token_id: 1,
            append_eos_to_prompt: true,
        }
    }

    /// Decoder-only defaults with the given special ids: 1024 tokens, no EOS after the prompt.
    pub fn decoder_only(padding: PaddingSide, pad_token_id: u32, eos_token_id: u32) -> Self {
        BatchOptions {
            layout: ModelLayout::DecoderOnly { padding },
            max_input_tokens: 1024,
            pad_token_id,
            eos_token_id,
            append_eos_to_prompt: false,
        }
    }
}

/// One tokenized example.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedExample {
    /// The request's task.
    pub task: Task,
    /// Prompt tokens (with the EOS when `append_eos_to_prompt`).
    pub prompt: Vec<u32>,
    /// Target tokens without EOS (empty when encoding for generation).
    pub target: Vec<u32>,
    /// The target item, when there is one.
    pub target_item: Option<ItemId>,
    /// History items the prompt shows after truncation.
    pub history_items_shown: usize,
    /// True when even an empty history did not fit and the prompt's first tokens were dropped.
    pub prompt_cut: bool,
}

/// The token ids of every item's identifier, in catalogue order: what the decoder's prefix trie is
/// built from. Fails when two items share a token sequence under this tokenizer (e.g. title
/// identifiers whose words are all unknown to it), since decoding could not tell them apart.
pub fn identifier_token_ids<E: TextEncoder>(
    encoder: &E,
    identifiers: &ItemIdentifiers,
) -> Result<Vec<(ItemId, Vec<u32>)>> {
    let mut owner: std::collections::HashMap<Vec<u32>, ItemId> =
        std::collections::HashMap::with_capacity(identifiers.len());
    let mut sequences = Vec::with_capacity(identifiers.len());
    for (item, identifier) in identifiers.iter() {
        let tokens = encoder.encode_text(identifier)?;
        if tokens.is_empty() {
            return Err(DataError::Tokenizer(format!(
                "the identifier {identifier:?} of item {item} encodes to no token"
            )));
        }
        if let Some(previous) = owner.insert(tokens.clone(), item) {
            return Err(DataError::Tokenizer(format!(
                "items {previous} and {item} encode to the same tokens {tokens:?}; use atomic or semantic identifiers, or a tokenizer that knows the titles' words"
            )));
        }
        sequences.push((item, tokens));
    }
    Ok(sequences)
}

/// One example per (request, target): a request with several targets yields several examples.
pub fn training_targets(requests: &[Request]) -> Vec<(usize, ItemId)> {
    requests
        .iter()
        .enumerate()
        .flat_map(|(index, request)| request.targets.iter().map(move |target| (index, *target)))
        .collect()
}

/// Renders and tokenizes requests under a token budget.
pub struct PromptEncoder<'a, E: TextEncoder> {
    encoder: &'a E,
    templates: &'a PromptTemplates,
    identifiers: &'a ItemIdentifiers,
    options: BatchOptions,
}

impl<'a, E: TextEncoder> PromptEncoder<'a, E> {
    /// An encoder over the given tokenizer, templates and identifiers.
    pub fn new(
        encoder: &'a E,
        templates: &'a PromptTemplates,
        identifiers: &'a ItemIdentifiers,
        options: BatchOptions,
    ) -> Self {
        PromptEncoder {
            encoder,
            templates,
            identifiers,
            options,
        }
    }

    /// The options in force.
    pub fn options(&self) -> &BatchOptions {
        &self.options
    }

    /// Encodes `request` with `target` (training) or without (generation).
    pub fn encode(&self, request: &Request, target: Option<ItemId>) -> Result<EncodedExample> {
        let target_tokens = match target {
            Some(item) => {
                let identifier = self.identifiers.identifier(item).ok_or_else(|| {
                    DataError::InvalidOption(format!("target item {item} has no identifier; build identifiers from the same catalogue"))
                })?;
                self.encoder.encode_text(identifier)?
            }
            None => Vec::new(),
        };
        let eos_after_prompt = usize::from(self.options.append_eos_to_prompt);
        let budget = match (self.options.layout, target) {
            (ModelLayout::DecoderOnly { .. }, Some(item)) => {
                let needed = target_tokens.len() + 1;
                if needed + eos_after_prompt >= self.options.max_input_tokens {
                    return Err(DataError::InvalidOption(format!(
                        "the identifier of item {item} takes {} tokens with EOS, which leaves no room for a prompt in {} tokens; raise max_input_tokens",
                        needed, self.options.max_input_tokens
                    )));
                }
                self.options.max_input_tokens - needed - eos_after_prompt
            }
            _ => self
                .options
                .max_input_tokens
                .saturating_sub(eos_after_prompt)
                .max(1),
        };
        let shown = request
            .history
            .len()
            .min(self.templates.max_history_items());
        let encode_with = |history: usize| -> Result<Vec<u32>> {
            let text = self
                .templates
                .render_with_history(request, self.identifiers, history)?;
            self.encoder.encode_text(&text)
        };
        let mut prompt = encode_with(shown)?;
        let mut history_items_shown = shown;
        if prompt.len() > budget {
            // Largest history length that fits: binary search over [0, shown).
            let (mut fitting, mut too_long) = (None, shown);
            let mut low = 0;
            while low < too_long {
                let middle = (low + too_long) / 2;
                let candidate = encode_with(middle)?;
                if candidate.len() <= budget {
                    fitting = Some((middle, candidate));
                    low = middle + 1;
                } else {
                    too_long = middle;
                }
            }
            match fitting {
                Some((history, candidate)) => {
                    history_items_shown = history;
                    prompt = candidate;
                }
                None => {
                    history_items_shown = 0;
                    prompt = encode_with(0)?;
                }
            }
        }
        let prompt_cut = prompt.len() > budget;
        if prompt_cut {
            prompt.drain(..prompt.len() - budget);
        }
        if self.options.append_eos_to_prompt {
            prompt.push(self.options.eos_token_id);
        }
        Ok(EncodedExample {
            task: request.task,
            prompt,
            target: target_tokens,
            target_item: target,
            history_items_shown,
            prompt_cut,
        })
    }
}

/// A padded batch; see the module documentation for the layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenBatch {
    /// Rows B.
    pub batch_size: usize,
    /// Columns of `input_ids` and `attention_mask` (L).
    pub input_len: usize,
    /// B × L token ids, row-major.
    pub input_ids: Vec<u32>,
    /// B × L, 1 on tokens, 0 on padding.
    pub attention_mask: Vec<u32>,
    /// Columns of `labels` (0 for generation batches; L for decoder-only training).
    pub labels_len: usize,
    /// B × labels_len, [`IGNORE_INDEX`] where no loss is taken.
    pub labels: Vec<i64>,
    /// Task of each row.
    pub tasks: Vec<Task>,
}

impl TokenBatch {
    /// Row `row` of `input_ids`.
    pub fn input_row(&self, row: usize) -> &[u32] {
        &self.input_ids[row * self.input_len..(row + 1) * self.input_len]
    }

    /// Row `row` of `labels`.
    pub fn label_row(&self, row: usize) -> &[i64] {
        &self.labels[row * self.labels_len..(row + 1) * self.labels_len]
    }

    /// Encoder-decoder decoder inputs: each label row shifted right behind `decoder_start_token_id`,
    /// with ignored positions replaced by `pad_token_id` (B × labels_len).
    pub fn decoder_input_ids(&self, decoder_start_token_id: u32, pad_token_id: u32) -> Vec<u32> {
        let mut inputs = Vec::with_capacity(self.labels.len());
        for row in 0..self.batch_size {
            let labels = self.label_row(row);
            if self.labels_len == 0 {
                continue;
            }
            inputs.push(decoder_start_token_id);
            inputs.extend(labels[..self.labels_len - 1].iter().map(|&label| {
                if label == IGNORE_INDEX {
                    pad_token_id
                } else {
                    label as u32
                }
            }));
        }
        inputs
    }

    /// Indices of the rows of `task`.
    pub fn rows_of(&self, task: Task) -> Vec<usize> {
        self.tasks
            .iter()
            .enumerate()
            .filter(|(_, row_task)| **row_task == task)
            .map(|(row, _)| row)
            .collect()
    }
}

fn pad_row<T: Copy>(tokens: &[T], width: usize, fill: T, side: PaddingSide, output: &mut Vec<T>) {
    let padding = width - tokens.len();
    if side == PaddingSide::Left {
        output.extend(std::iter::repeat_n(fill, padding));
    }
    output.extend_from_slice(tokens);
    if side == PaddingSide::Right {
        output.extend(std::iter::repeat_n(fill, padding));
    }
}

fn mask_row(length: usize, width: usize, side: PaddingSide, output: &mut Vec<u32>) {
    pad_row(&vec![1u32; length], width, 0, side, output);
}

/// Collates training examples (each with a target) into a padded batch.
pub fn collate_training(examples: &[EncodedExample], options: &BatchOptions) -> TokenBatch {
    let tasks = examples.iter().map(|example| example.task).collect();
    match options.layout {
        ModelLayout::EncoderDecoder => {
            let input_len = examples
                .iter()
                .map(|example| example.prompt.len())
                .max()
                .unwrap_or(0);
            let labels_len = examples
                .iter()
                .map(|example| example.target.len() + 1)
                .max()
                .unwrap_or(0);
            let mut batch = empty_batch(examples.len(), input_len, labels_len, tasks);
            for example in examples {
                pad_row(
                    &example.prompt,
                    input_len,
                    options.pad_token_id,
                    PaddingSide::Right,
                    &mut batch.input_ids,
                );
                mask_row(
                    example.prompt.len(),
                    input_len,
                    PaddingSide::Right,
                    &mut batch.attention_mask,
                );
                let labels: Vec<i64> = example
                    .target
                    .iter()
                    .map(|&token| i64::from(token))
                    .chain(std::iter::once(i64::from(options.eos_token_id)))
                    .collect();
                pad_row(
                    &labels,
                    labels_len,
                    IGNORE_INDEX,
                    PaddingSide::Right,
                    &mut batch.labels,
                );
            }
            batch
        }
        ModelLayout::DecoderOnly { padding } => {
            let input_len = examples
                .iter()
                .map(|example| example.prompt.len() + example.target.len() + 1)
                .max()
                .unwrap_or(0);
            let mut batch = empty_batch(examples.len(), input_len, input_len, tasks);
            for example in examples {
                let mut sequence = example.prompt.clone();
                sequence.extend_from_slice(&example.target);
                sequence.push(options.eos_token_id);
                let labels: Vec<i64> = std::iter::repeat_n(IGNORE_INDEX, example.prompt.len())
                    .chain(example.target.iter().map(|&token| i64::from(token)))
                    .chain(std::iter::once(i64::from(options.eos_token_id)))
                    .collect();
                pad_row(
                    &sequence,
                    input_len,
                    options.pad_token_id,
                    padding,
                    &mut batch.input_ids,
                );
                mask_row(
                    sequence.len(),
                    input_len,
                    padding,
                    &mut batch.attention_mask,
                );
                pad_row(&labels, input_len, IGNORE_INDEX, padding, &mut batch.labels);
            }
            batch
        }
    }
}

/// Collates prompts for generation (targets ignored): no labels, `labels_len == 0`.
pub fn collate_prompts(examples: &[EncodedExample], options: &BatchOptions) -> TokenBatch {
    let side = match options.layout {
        ModelLayout::EncoderDecoder => PaddingSide::Right,
        ModelLayout::DecoderOnly { padding } => padding,
    };
    let input_len = examples
        .iter()
        .map(|example| example.prompt.len())
        .max()
        .unwrap_or(0);
    let mut batch = empty_batch(
        examples.len(),
        input_len,
        0,
        examples.iter().map(|example| example.task).collect(),
    );
    for example in examples {
        pad_row(
            &example.prompt,
            input_len,
            options.pad_token_id,
            side,
            &mut batch.input_ids,
        );
        mask_row(
            example.prompt.len(),
            input_len,
            side,
            &mut batch.attention_mask,
        );
    }
    batch
}

fn empty_batch(
    batch_size: usize,
    input_len: usize,
    labels_len: usize,
    tasks: Vec<Task>,
) -> TokenBatch {
    TokenBatch {
        batch_size,
        input_len,
        input_ids: Vec::with_capacity(batch_size * input_len),
        attention_mask: Vec::with_capacity(batch_size * input_len),
        labels_len,
        labels: Vec::with_capacity(batch_size * labels_len),
        tasks,
    }
}
