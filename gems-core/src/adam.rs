//! Adam moments for one tensor: a whole weight, or a subspace's low-rank coordinates.

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// Adam's hyper-parameters (Kingma & Ba, 2015), shared by every moment pair.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamHyper {
    /// Decay of the first moment.
    pub beta1: f64,
    /// Decay of the second moment.
    pub beta2: f64,
    /// Added to the root of the bias-corrected second moment.
    pub epsilon: f64,
}

/// First and second moments of one matrix, with the number of updates they have seen.
#[derive(Clone, Debug)]
pub struct AdamMoments {
    /// Exponential average of gradients.
    pub first: Tensor<2>,
    /// Exponential average of squared gradients.
    pub second: Tensor<2>,
    /// Updates so far (drives the bias correction).
    pub steps: u64,
}

impl AdamMoments {
    /// Zero moments shaped like `like`.
    pub fn zeros_like(like: &Tensor<2>) -> Self {
        Self {
            first: like.zeros_like(),
            second: like.zeros_like(),
            steps: 0,
        }
    }

    /// Folds `gradient` into the moments and returns the bias-corrected Adam direction
    /// m̂ / (√v̂ + ε).
    pub fn update(&mut self, gradient: Tensor<2>, hyper: &AdamHyper) -> Tensor<2> {
        self.steps += 1;
        let step = self.steps as i32;
        self.first = self.first.clone().mul_scalar(hyper.beta1)
            + gradient.clone().mul_scalar(1.0 - hyper.beta1);
        self.second = self.second.clone().mul_scalar(hyper.beta2)
            + gradient.square().mul_scalar(1.0 - hyper.beta2);
        let first_correction = 1.0 - hyper.beta1.powi(step);
        let second_correction = 1.0 - hyper.beta2.powi(step);
        let denominator = self
            .second
            .clone()
            .div_scalar(second_correction)
            .sqrt()
            .add_scalar(hyper.epsilon);
        self.first.clone().div_scalar(first_correction) / denominator
    }

    /// Carries the moments into a new basis with `transition = Q_newᵀ·Q_old`: the first moment
    /// is rotated exactly (C·m); the second, which holds squares, is mapped with the squared
    /// entries of C (C∘C)·v so that it stays non-negative. The step count is kept.
    pub fn rotate(self, transition: Tensor<2>) -> Self {
        Self {
            first: transition.clone().matmul(self.first),
            second: transition.square().matmul(self.second),
            steps: self.steps,
        }
    }

    /// Bytes held by the two moments (float32).
    pub fn bytes(&self) -> usize {
        4 * (self.first.shape().num_elements() + self.second.shape().num_elements())
    }
}
