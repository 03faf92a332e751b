//! Vocabulary growth: new token rows (item identifiers) in the embedding and the output head.

use burn::module::Param;
use burn::tensor::Tensor;

/// The embedding table `[vocab, width]` resized to `vocab_size` rows: new rows are the mean of the
/// existing ones, surplus rows are dropped.
pub(crate) fn resize_rows(weight: Param<Tensor<2>>, vocab_size: usize) -> Param<Tensor<2>> {
    resize(weight, vocab_size, 0)
}

/// An output head in Burn's layout `[width, vocab]` resized to `vocab_size` columns, like [`resize_rows`].
pub(crate) fn resize_columns(weight: Param<Tensor<2>>, vocab_size: usize) -> Param<Tensor<2>> {
    resize(weight, vocab_size, 1)
}

fn resize(weight: Param<Tensor<2>>, vocab_size: usize, dim: usize) -> Param<Tensor<2>> {
    let weight = weight.val().detach();
    let current = weight.dims()[dim];
    let resized = if vocab_size > current {
        let mean = weight.clone().mean_dim(dim);
        Tensor::cat(
            vec![weight, mean.repeat_dim(dim, vocab_size - current)],
            dim,
        )
    } else {
        weight.narrow(dim, 0, vocab_size)
    };
    // A fresh leaf: on an autodiff device the concatenation is a graph node, not a parameter.
    Param::from_tensor(resized.detach())
}
