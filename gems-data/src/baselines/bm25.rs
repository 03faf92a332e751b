//! BM25 over item title + text + categories, for search queries.
//!
//! score(q, d) = Σ over distinct query words w of idf(w) · tf(w, d) · (k1 + 1) /
//! (tf(w, d) + k1 · (1 − b + b · |d| / avgdl)), with idf(w) = ln(1 + (N − df(w) + 0.5) /
//! (df(w) + 0.5)) (the non-negative Lucene form). Words come from [`crate::text::words`].

use std::collections::HashMap;

use crate::baselines::Ranker;
use crate::schema::{Item, ItemId, Request, Task};
use crate::text::words;

/// BM25's free parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bm25Parameters {
    /// Term-frequency saturation.
    pub k1: f64,
    /// Length normalisation.
    pub b: f64,
}

impl Default for Bm25Parameters {
    fn default() -> Self {
        Bm25Parameters { k1: 1.2, b: 0.75 }
    }
}

/// An inverted index of the catalogue.
pub struct Bm25Ranker {
    parameters: Bm25Parameters,
    /// word → (item, term frequency)
    postings: HashMap<String, Vec<(ItemId, u32)>>,
    lengths: HashMap<ItemId, u32>,
    average_length: f64,
    documents: usize,
}

impl Bm25Ranker {
    /// Indexes the catalogue.
    pub fn new(items: &[Item], parameters: Bm25Parameters) -> Self {
        let mut postings: HashMap<String, Vec<(ItemId, u32)>> = HashMap::new();
        let mut lengths = HashMap::with_capacity(items.len());
        let mut total_length = 0u64;
        for item in items {
            let mut document = words(&item.title);
            if let Some(text) = &item.text {
                document.extend(words(text));
            }
            for category in &item.categories {
                document.extend(words(category));
            }
            let mut frequencies: HashMap<String, u32> = HashMap::new();
            for word in &document {
                *frequencies.entry(word.clone()).or_default() += 1;
            }
            for (word, frequency) in frequencies {
                postings.entry(word).or_default().push((item.id, frequency));
            }
            lengths.insert(item.id, document.len() as u32);
            total_length += document.len() as u64;
        }
        let documents = items.len();
        let average_length = if documents == 0 {
            0.0
        } else {
            total_length as f64 / documents as f64
        };
        Bm25Ranker {
            parameters,
            postings,
            lengths,
            average_length,
            documents,
        }
    }

    /// BM25 scores of `query` for every item with a non-zero score.
    pub fn scores(&self, query: &str) -> HashMap<ItemId, f64> {
        let mut query_words = words(query);
        query_words.sort();
        query_words.dedup();
        let Bm25Parameters { k1, b } = self.parameters;
        let mut scores: HashMap<ItemId, f64> = HashMap::new();
        for word in &query_words {
            let Some(posting) = self.postings.get(word) else {
                continue;
            };
            let frequency = posting.len() as f64;
            let inverse =
                (1.0 + (self.documents as f64 - frequency + 0.5) / (frequency + 0.5)).ln();
            for &(item, term_frequency) in posting {
                let length = f64::from(self.lengths[&item]);
                let term_frequency = f64::from(term_frequency);
                let normaliser =
                    k1 * (1.0 - b + b * length / self.average_length.max(f64::MIN_POSITIVE));
                *scores.entry(item).or_default() +=
                    inverse * term_frequency * (k1 + 1.0) / (term_frequency + normaliser);
            }
        }
        scores
    }
}

impl Ranker for Bm25Ranker {
    fn name(&self) -> String {
        "bm25".to_string()
    }

    fn supports(&self, task: Task) -> bool {
        task == Task::Search
    }

    fn score(&mut self, request: &Request, candidates: &[ItemId]) -> Vec<f64> {
        let scores = self.scores(request.query.as_deref().unwrap_or(""));
        candidates
            .iter()
            .map(|item| scores.get(item).copied().unwrap_or(0.0))
            .collect()
    }
}
