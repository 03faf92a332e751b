//! A word-level tokenizer trained by the project itself, for the synthetic default when no model
//! directory (and so no pretrained `tokenizer.json`) is given.
//!
//! Built with the `tokenizers` crate: lower-casing normaliser, `Whitespace` pre-tokenizer (runs of
//! word characters, runs of punctuation), a `WordLevel` model trained with `WordLevelTrainer` on the
//! prompt templates, the queries and the item titles. Ids 0, 1, 2 are `<pad>`, `</s>`, `<unk>` (the
//! T5 convention, so a T5 config's `pad_token_id = 0`, `eos_token_id = 1` and
//! `decoder_start_token_id = 0` fit). Item identifier tokens are added as whole, un-normalised added
//! tokens; they are not marked special, so decoding a generation shows them.

use std::path::Path;

use tokenizers::models::TrainerWrapper;
use tokenizers::models::wordlevel::{WordLevel, WordLevelTrainer};
use tokenizers::normalizers::Lowercase;
use tokenizers::pre_tokenizers::whitespace::Whitespace;
use tokenizers::{AddedToken, Tokenizer};

use crate::error::{DataError, Result};
use crate::item_ids::ItemIdentifiers;
use crate::prompt::PromptTemplates;
use crate::schema::{Item, Request, Task};

/// Padding token (id 0).
pub const PAD_TOKEN: &str = "<pad>";
/// End-of-sequence token (id 1).
pub const EOS_TOKEN: &str = "</s>";
/// Unknown-word token (id 2).
pub const UNK_TOKEN: &str = "<unk>";

/// Options of word-level training.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WordLevelOptions {
    /// Largest vocabulary (special tokens included, identifier tokens not).
    pub vocab_size: usize,
    /// Words seen fewer times are left out (they become `<unk>`).
    pub min_frequency: u64,
}

impl Default for WordLevelOptions {
    fn default() -> Self {
        WordLevelOptions {
            vocab_size: 32_000,
            min_frequency: 1,
        }
    }
}

/// The ids of the three special tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpecialTokenIds {
    /// `<pad>`.
    pub pad: u32,
    /// `</s>`.
    pub eos: u32,
    /// `<unk>`.
    pub unk: u32,
}

impl SpecialTokenIds {
    /// Looks the special tokens up in `tokenizer`.
    pub fn of(tokenizer: &Tokenizer) -> Result<Self> {
        let lookup = |token: &str| {
            tokenizer
                .token_to_id(token)
                .ok_or_else(|| DataError::Tokenizer(format!("the tokenizer has no {token} token")))
        };
        Ok(SpecialTokenIds {
            pad: lookup(PAD_TOKEN)?,
            eos: lookup(EOS_TOKEN)?,
            unk: lookup(UNK_TOKEN)?,
        })
    }
}

/// The training text: both templates (placeholders removed), every query, every item title.
pub fn tokenizer_corpus(
    items: &[Item],
    requests: &[Request],
    templates: &PromptTemplates,
) -> Vec<String> {
    let mut corpus: Vec<String> = Task::ALL
        .iter()
        .map(|task| {
            templates
                .template(*task)
                .replace("{history}", " ")
                .replace("{query}", " ")
        })
        .collect();
    corpus.extend(requests.iter().filter_map(|request| request.query.clone()));
    corpus.extend(items.iter().map(|item| item.title.clone()));
    corpus
}

/// Trains a word-level tokenizer on `corpus` and adds the identifiers' new tokens.
pub fn train_word_level(
    corpus: &[String],
    identifiers: &ItemIdentifiers,
    options: WordLevelOptions,
) -> Result<Tokenizer> {
    let model = WordLevel::builder()
        .unk_token(UNK_TOKEN.to_string())
        .build()
        .map_err(|error| DataError::Tokenizer(error.to_string()))?;
    let mut tokenizer = Tokenizer::new(model);
    tokenizer.with_normalizer(Some(Lowercase));
    tokenizer.with_pre_tokenizer(Some(Whitespace {}));
    let special: Vec<AddedToken> = [PAD_TOKEN, EOS_TOKEN, UNK_TOKEN]
        .iter()
        .map(|token| AddedToken::from(token.to_string(), true))
        .collect();
    let trainer = WordLevelTrainer::builder()
        .vocab_size(options.vocab_size)
        .min_frequency(options.min_frequency)
        .show_progress(false)
        .special_tokens(special)
        .build()
        .map_err(|error| DataError::Tokenizer(error.to_string()))?;
    let mut trainer = TrainerWrapper::WordLevelTrainer(trainer);
    tokenizer
        .train(&mut trainer, corpus.iter())
        .map_err(|error| DataError::Tokenizer(format!("training failed: {error}")))?;
    add_identifier_tokens(&mut tokenizer, identifiers);
    Ok(tokenizer)
}

/// Adds the identifiers' new tokens (e.g. `<item_12>`) to `tokenizer`, un-normalised so that
/// they match exactly; a pre-trained model's tokenizer gets them this way too.
pub fn add_identifier_tokens(tokenizer: &mut Tokenizer, identifiers: &ItemIdentifiers) {
    let added: Vec<AddedToken> = identifiers
        .new_tokens()
        .iter()
        .map(|token| AddedToken::from(token.clone(), false).normalized(false))
        .collect();
    tokenizer.add_tokens(&added);
}

/// Writes `tokenizer.json`.
pub fn save_tokenizer(tokenizer: &Tokenizer, path: &Path) -> Result<()> {
    tokenizer
        .save(path, false)
        .map_err(|error| DataError::Tokenizer(format!("cannot write {}: {error}", path.display())))
}
