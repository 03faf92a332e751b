//! Which entries of the vocabulary matrices a run trains (`train_vocabulary`).
//!
//! The token embedding and an untied output head hold one row (column, for Burn's `Linear`
//! head) per token: 151 936 × 896 each in Qwen2.5-0.5B, a sixth of its parameters. A
//! recommendation fine-tune adds item tokens, which must be learned from nothing, while the
//! pre-trained tokens' rows already encode the language its prompts are written in. So by
//! default (`new`) a run on a pre-trained model trains only the rows of the tokens it added,
//! with AdamW state for those rows alone, and leaves every pre-trained row bit-identical: the
//! vocabulary matrices hold the added rows apart ([`gems_models::TokenMatrix`]), so the backward
//! pass forms gradients of those rows only. This:
//! - keeps the pre-trained token representations, in the spirit of null-space projection, which
//!   protects the knowledge in the projected matrices (the vocabulary matrices are not
//!   projected: their inputs are one-hot tokens, whose "knowledge space" would be the tokens
//!   seen in the corpus);
//! - shrinks the optimizer state of these matrices from 2 × vocabulary × width floats to
//!   2 × new tokens × width, and every gradient likewise (545 MB less per matrix and backward
//!   pass on Qwen2.5-0.5B).
//!
//! A model trained from scratch has no pre-trained rows: every row is random, so `new` trains
//! them all, as does `all` on any model. Every method (GEMS, its baselines, LoRA) trains the same
//! entries, so that `gems compare` compares the update rules on the same trainable set. A tied
//! head is the embedding itself (one parameter in Burn), so its added rows have one state.

use gems_core::GemsOptimizer;
use gems_models::Backbone;

use crate::error::Result;
use crate::settings::VocabularyTraining;

/// `model` training the vocabulary rows `setting` names: every row with `all`, or when
/// `first_new_token` is `None` (no pre-trained tokenizer: every token is new); otherwise the
/// pre-trained rows frozen and the tokens from `first_new_token` on trained.
pub fn train_rows(
    setting: VocabularyTraining,
    model: Backbone,
    first_new_token: Option<usize>,
) -> Result<Backbone> {
    Ok(match (setting, first_new_token) {
        (VocabularyTraining::New, Some(first)) => model.freeze_pretrained_tokens(first)?,
        _ => model,
    })
}

/// `optimizer` leaving the frozen parameters of `model` alone.
pub fn restrict(optimizer: GemsOptimizer, model: &Backbone) -> GemsOptimizer {
    model
        .frozen_parameters()
        .into_iter()
        .fold(optimizer, GemsOptimizer::with_frozen)
}
