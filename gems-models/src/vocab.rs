//! [`TokenMatrix`]: a vocabulary matrix (token embedding or output head) with one row per token,
//! which can grow (item tokens added to a pre-trained model) and can hold its added tokens' rows
//! apart from the frozen pre-trained ones.
//!
//! Why apart: a fine-tune that adds tokens must learn the new rows, while the pre-trained rows
//! (a sixth of Qwen2.5-0.5B's parameters) carry what the model knows about its language. Kept in
//! one parameter, every backward pass would form a dense gradient of the whole matrix (545 MB each
//! for Qwen2.5-0.5B's embedding and head) only to throw most of it away. Held apart, the
//! pre-trained rows are a parameter that does not require a gradient and the added rows another
//! that does: the lookup and the logits are computed from the two parts, so the backward pass
//! forms the added rows' gradient alone and an optimizer holds state for those rows alone. The
//! saved checkpoint is the whole matrix either way (`transformers`' layout and names).

use burn::module::{Initializer, Module, Param, ParamId};
use burn::tensor::module::embedding;
use burn::tensor::{Device, Int, Tensor};

/// A matrix with one row per token, `[vocab, width]` (PyTorch's layout for both the embedding and
/// the output head): the lookup table of the token embedding, or the output head whose logits are
/// `hidden · weightᵀ`.
///
/// Once [`crate::Backbone::freeze_pretrained_tokens`] has run, `weight` holds the pre-trained
/// tokens' rows, frozen, and `added` the rows of the tokens after them, trained.
#[derive(Module, Debug)]
pub struct TokenMatrix {
    /// Every token's row, or, once the pre-trained rows are frozen, those rows only.
    pub weight: Param<Tensor<2>>,
    /// The rows of the added tokens, held apart from the frozen pre-trained rows.
    pub added: Option<Param<Tensor<2>>>,
    /// Whether `weight` is frozen (it requires no gradient and is not trained).
    #[module(skip)]
    frozen: bool,
}

impl TokenMatrix {
    /// A matrix of `tokens` rows of `width`, every entry ~ N(0, std²).
    pub(crate) fn new(tokens: usize, width: usize, std: f64, device: &Device) -> Self {
        Self {
            weight: Initializer::Normal { mean: 0.0, std }.init([tokens, width], device),
            added: None,
            frozen: false,
        }
    }

    /// Tokens (rows), the added ones included.
    pub fn vocab_size(&self) -> usize {
        rows(&self.weight) + self.added.as_ref().map_or(0, rows)
    }

    /// The first token whose row is held apart and trained, once the rows before it are
    /// frozen ([`crate::Backbone::freeze_pretrained_tokens`]); `None` while every row is trained.
    pub fn first_added_token(&self) -> Option<usize> {
        self.frozen.then(|| rows(&self.weight))
    }

    /// Embeddings `[batch, length, width]` of token ids `[batch, length]`.
    pub fn embed(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        let Some(added) = &self.added else {
            return embedding(self.weight.val(), ids);
        };
        // Each id looks up the part that holds its row; the other lookup (of a clamped id) is
        // masked out, so each part's gradient covers its own tokens only.
        let pretrained = rows(&self.weight) as i64;
        let is_added = ids.clone().greater_equal_elem(pretrained);
        let from_pretrained = embedding(self.weight.val(), ids.clone().clamp_max(pretrained - 1));
        let from_added = embedding(added.val(), ids.sub_scalar(pretrained).clamp_min(0));
        let mask = is_added
            .unsqueeze_dim::<3>(2)
            .expand(from_pretrained.dims());
        from_pretrained.mask_where(mask, from_added)
    }

    /// Logits `[rows, vocab]` of hidden states `[rows, width]`: `hidden · matrixᵀ`.
    pub fn logits(&self, hidden: Tensor<2>) -> Tensor<2> {
        let pretrained = hidden.clone().matmul(self.weight.val().transpose());
        match &self.added {
            None => pretrained,
            Some(added) => Tensor::cat(vec![pretrained, hidden.matmul(added.val().transpose())], 1),
        }
    }

    /// The whole matrix `[vocab, width]`, whichever way its rows are held.
    pub fn matrix(&self) -> Tensor<2> {
        match &self.added {
            None => self.weight.val(),
            Some(added) => Tensor::cat(vec![self.weight.val(), added.val()], 0),
        }
    }

    /// The matrix with the rows of tokens `0..first_added` frozen and those of the tokens from
    /// `first_added` on held apart and trained (none when `first_added` is the vocabulary size:
    /// the whole matrix is then frozen). The values are unchanged; a matrix not initialised yet
    /// (Burn initialises lazily) stays so, so that shapes can be planned at any size.
    ///
    /// # Panics
    /// If `first_added` exceeds the vocabulary size or the matrix is frozen already: callers
    /// check both ([`crate::Backbone::freeze_pretrained_tokens`]).
    pub(crate) fn freeze_pretrained(self, first_added: usize) -> Self {
        assert!(!self.frozen, "the pre-trained rows are frozen already");
        let [tokens, width] = self.weight.lazy_shape().dims();
        assert!(first_added <= tokens, "{first_added} > {tokens} tokens");
        let whole = self.weight;
        let part = |start: usize, rows: usize, require_grad: bool| {
            let (whole, device) = (whole.clone(), whole.lazy_device());
            Param::uninitialized(
                ParamId::new(),
                move |device: &Device, require_grad: bool| {
                    // A leaf of its own, outside the whole matrix's autodiff graph.
                    Tensor::from_inner(whole.val().inner().narrow(0, start, rows))
                        .to_device(device)
                        .set_require_grad(require_grad)
                },
                device,
                require_grad,
                [rows, width].into(),
            )
        };
        let pretrained = part(0, first_added, false);
        let added = (first_added < tokens).then(|| part(first_added, tokens - first_added, true));
        Self {
            weight: pretrained,
            added,
            frozen: true,
        }
    }

    /// The matrix resized to `vocab_size` rows: new rows are the mean of the existing ones,
    /// surplus rows are dropped. A matrix with frozen rows is made whole (and trainable) first.
    pub(crate) fn resize(self, vocab_size: usize) -> Self {
        let matrix = self.matrix().detach();
        let current = matrix.dims()[0];
        let resized = if vocab_size > current {
            let mean = matrix.clone().mean_dim(0);
            Tensor::cat(vec![matrix, mean.repeat_dim(0, vocab_size - current)], 0)
        } else {
            matrix.narrow(0, 0, vocab_size)
        };
        Self {
            // A fresh leaf: on an autodiff device the concatenation is a graph node.
            weight: Param::from_tensor(resized.detach()),
            added: None,
            frozen: false,
        }
    }
}

/// Rows of a matrix parameter, read without initialising it.
fn rows(matrix: &Param<Tensor<2>>) -> usize {
    matrix.lazy_shape().dims::<2>()[0]
}
