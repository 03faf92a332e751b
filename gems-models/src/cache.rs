//! Key-value caches for incremental decoding.
//!
//! Every cached tensor is `[batch, heads, length, width]`; decoding appends along `length`, and
//! beam search reorders (keeps, drops, duplicates) rows along `batch`.

use burn::tensor::{Int, Tensor, TensorData};

/// The keys and values one attention layer has seen so far.
#[derive(Debug, Clone)]
pub struct KeyValue {
    /// Keys, `[batch, heads, length, width]`.
    pub key: Tensor<4>,
    /// Values, `[batch, heads, length, width]`.
    pub value: Tensor<4>,
}

impl KeyValue {
    /// The cache extended by the new positions' keys and values (`self` may be empty: `None`).
    pub fn extend(cache: Option<Self>, key: Tensor<4>, value: Tensor<4>) -> Self {
        match cache {
            None => Self { key, value },
            Some(cache) => Self {
                key: Tensor::cat(vec![cache.key, key], 2),
                value: Tensor::cat(vec![cache.value, value], 2),
            },
        }
    }

    /// Positions cached.
    pub fn len(&self) -> usize {
        self.key.dims()[2]
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cache of the batch rows `rows` (in that order; a row may repeat).
    pub fn select_rows(self, rows: &Tensor<1, Int>) -> Self {
        Self {
            key: self.key.select(0, rows.clone()),
            value: self.value.select(0, rows.clone()),
        }
    }
}

/// An index tensor of batch rows, for [`KeyValue::select_rows`] and its kin.
pub(crate) fn row_index(rows: &[usize], device: &burn::tensor::Device) -> Tensor<1, Int> {
    let rows: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
    let count = rows.len();
    Tensor::from_data(TensorData::new(rows, [count]), device)
}
