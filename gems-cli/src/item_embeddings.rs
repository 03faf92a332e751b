//! Item embeddings from a pre-trained backbone's own states, for semantic identifiers: each
//! item's title, categories and text are encoded and mean-pooled over their real tokens
//! ([`Backbone::embed_token_rows`]).

use burn::module::Module;
use gems_data::Item;
use gems_models::Backbone;
use tokenizers::Tokenizer;

use crate::error::{CliError, Result};
use crate::progress;

/// Tokens of an item's text that are encoded (the rest is cut).
const MAX_TOKENS: usize = 64;
/// Items encoded at once.
const BATCH: usize = 32;

/// One embedding per item, in catalogue order, from `backbone` (its pre-trained weights, run
/// without autodiff) with `tokenizer` (the model's own, before identifier tokens are added).
pub fn from_backbone(
    backbone: &Backbone,
    tokenizer: &Tokenizer,
    items: &[Item],
) -> Result<Vec<Vec<f32>>> {
    let encoder = backbone.valid();
    let pad = encoder.config().pad_token_id();
    let mut token_rows = Vec::with_capacity(items.len());
    for item in items {
        let encoding = tokenizer.encode(item_text(item), true).map_err(|error| {
            CliError::Settings(format!(
                "item {}: cannot tokenize its text: {error}",
                item.id
            ))
        })?;
        let mut ids = encoding.get_ids().to_vec();
        ids.truncate(MAX_TOKENS);
        if ids.is_empty() {
            // No text at all: one padding token stands in, the same for every such item.
            ids.push(pad);
        }
        token_rows.push(ids);
    }
    // Similar lengths share a batch, so that little of each batch is padding.
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&index| token_rows[index].len());
    let mut embeddings = vec![Vec::new(); items.len()];
    let bar = progress::bar(items.len() as u64, "item embeddings");
    for chunk in order.chunks(BATCH) {
        let rows: Vec<Vec<u32>> = chunk
            .iter()
            .map(|&index| token_rows[index].clone())
            .collect();
        let pooled: Vec<f32> = encoder
            .embed_token_rows(&rows)?
            .into_data()
            .iter::<f32>()
            .collect();
        let hidden = pooled.len() / chunk.len();
        for (&index, row) in chunk.iter().zip(pooled.chunks(hidden)) {
            embeddings[index] = row.to_vec();
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    tracing::info!(
        items = items.len(),
        width = embeddings.first().map_or(0, Vec::len),
        "item embeddings from the backbone"
    );
    Ok(embeddings)
}

/// The text an item is embedded from: title, categories, then its longer text.
fn item_text(item: &Item) -> String {
    let mut text = item.title.clone();
    if !item.categories.is_empty() {
        text.push_str(". ");
        text.push_str(&item.categories.join(", "));
    }
    if let Some(body) = &item.text {
        text.push_str(". ");
        text.push_str(body);
    }
    text
}
