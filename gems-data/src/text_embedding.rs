//! A default item embedding computed from the item's own text, for semantic identifiers when no
//! model encoder is available.
//!
//! Hashed TF-IDF: the words of the title, the text and the categories (see [`crate::text::words`]),
//! plus every whole category label as one extra feature, are hashed (64-bit FNV-1a) into
//! `dimensions` buckets with a sign taken from the hash's top bit (so that collisions cancel on
//! average instead of piling up), weighted by term frequency times the smoothed inverse document
//! frequency `ln((1 + N) / (1 + df)) + 1`, and the vector is L2-normalised. Items with similar words
//! and the same categories end up close, which is what hierarchical k-means needs to give them
//! shared code prefixes.

use std::collections::HashMap;

use crate::schema::Item;
use crate::text::words;

/// Default embedding width.
pub const DEFAULT_TEXT_EMBEDDING_DIMENSIONS: usize = 256;

/// 64-bit FNV-1a of `bytes`: a stable hash (the same in every build and on every platform),
/// for feature hashing here and for data fingerprints.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn features(item: &Item) -> Vec<String> {
    let mut features = words(&item.title);
    if let Some(text) = &item.text {
        features.extend(words(text));
    }
    for category in &item.categories {
        features.extend(words(category));
        features.push(format!("category={category}"));
    }
    features
}

/// One L2-normalised hashed TF-IDF vector per item, in catalogue order.
pub fn item_text_embeddings(items: &[Item], dimensions: usize) -> Vec<Vec<f32>> {
    let dimensions = dimensions.max(1);
    let per_item: Vec<Vec<String>> = items.iter().map(features).collect();
    let mut document_frequency: HashMap<&str, usize> = HashMap::new();
    for item_features in &per_item {
        let mut distinct: Vec<&str> = item_features.iter().map(String::as_str).collect();
        distinct.sort_unstable();
        distinct.dedup();
        for feature in distinct {
            *document_frequency.entry(feature).or_default() += 1;
        }
    }
    let documents = items.len() as f64;
    per_item
        .iter()
        .map(|item_features| {
            let mut vector = vec![0f64; dimensions];
            for feature in item_features {
                let frequency = document_frequency[feature.as_str()] as f64;
                let inverse = ((1.0 + documents) / (1.0 + frequency)).ln() + 1.0;
                let hash = fnv1a(feature.as_bytes());
                let sign = if hash >> 63 == 1 { -1.0 } else { 1.0 };
                vector[(hash % dimensions as u64) as usize] += sign * inverse;
            }
            let norm = vector.iter().map(|value| value * value).sum::<f64>().sqrt();
            let scale = if norm > 0.0 { 1.0 / norm } else { 0.0 };
            vector
                .into_iter()
                .map(|value| (value * scale) as f32)
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: u64, title: &str, category: &str) -> Item {
        Item {
            id,
            title: title.to_string(),
            text: None,
            categories: vec![category.to_string()],
        }
    }

    #[test]
    fn similar_items_are_closer_than_unrelated_ones() {
        let items = [
            item(1, "red wool sweater", "clothing"),
            item(2, "blue wool sweater", "clothing"),
            item(3, "cast iron frying pan", "kitchen"),
        ];
        let vectors = item_text_embeddings(&items, 64);
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        assert!((dot(&vectors[0], &vectors[0]) - 1.0).abs() < 1e-5);
        assert!(dot(&vectors[0], &vectors[1]) > dot(&vectors[0], &vectors[2]) + 0.2);
    }
}
