//! Which entries of the vocabulary matrices a run trains (`train_vocabulary`).
//!
//! The token embedding and an untied output head hold one row (column, for Burn's `Linear`
//! head) per token: 151 936 × 896 each in Qwen2.5-0.5B, a sixth of its parameters. A
//! recommendation fine-tune adds item tokens, which must be learned from nothing, while the
//! pre-trained tokens' rows already encode the language its prompts are written in. So by
//! default (`new`) a run on a pre-trained model trains only the rows of the tokens it added,
//! with AdamW state for those rows alone, and leaves every pre-trained row bit-identical; the
//! gradients held between backward pass and step are cut to the same rows. This:
//! - keeps the pre-trained token representations, in the spirit of null-space projection, which
//!   protects the knowledge in the projected matrices (the vocabulary matrices are not
//!   projected: their inputs are one-hot tokens, whose "knowledge space" would be the tokens
//!   seen in the corpus);
//! - shrinks the optimizer state of these matrices from 2 × vocabulary × width floats to
//!   2 × new tokens × width, and one task's gradient likewise.
//!
//! A model trained from scratch has no pre-trained rows: every row is random, so `new` trains
//! them all, as does `all` on any model. Every method (GEMS, its baselines, LoRA) trains the same
//! entries, so that `gems compare` compares the update rules on the same trainable set. A tied
//! head is the embedding itself (one parameter in Burn), so it has one slice and one state.

use std::collections::BTreeMap;

use gems_core::{GemsOptimizer, TrainedSlice};
use gems_models::Backbone;

use crate::settings::VocabularyTraining;

/// The trained slice of each vocabulary matrix of `model`: none (every row trained) with
/// `all`, or when `first_new_token` is `None` (no pre-trained tokenizer: every token is new);
/// otherwise the tokens from `first_new_token` on.
pub fn trained_slices(
    setting: VocabularyTraining,
    model: &Backbone,
    first_new_token: Option<usize>,
) -> BTreeMap<String, TrainedSlice> {
    match (setting, first_new_token) {
        (VocabularyTraining::New, Some(first)) => model
            .vocabulary_parameters()
            .into_iter()
            .map(|(path, axis)| (path, TrainedSlice { axis, start: first }))
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// `optimizer` training only the given slices of the vocabulary matrices.
pub fn restrict(
    optimizer: GemsOptimizer,
    slices: &BTreeMap<String, TrainedSlice>,
) -> GemsOptimizer {
    slices.iter().fold(optimizer, |optimizer, (path, slice)| {
        optimizer.with_trained_slice(path.clone(), *slice)
    })
}
