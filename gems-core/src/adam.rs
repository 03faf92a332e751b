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

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    #[test]
    fn rotation_maps_the_first_moment_exactly_and_keeps_the_second_non_negative() {
        let device = Device::flex();
        let first = Tensor::<2>::from_data(
            TensorData::new(vec![1.0f32, -2.0, 3.0, 0.5], [2, 2]),
            &device,
        );
        let second = Tensor::<2>::from_data(
            TensorData::new(vec![1.0f32, 4.0, 9.0, 0.25], [2, 2]),
            &device,
        );
        let moments = AdamMoments {
            first,
            second,
            steps: 5,
        };
        // A rotation by 90 degrees: new coordinate 0 is old coordinate 1, new 1 is −old 0.
        let transition = Tensor::<2>::from_data(
            TensorData::new(vec![0.0f32, 1.0, -1.0, 0.0], [2, 2]),
            &device,
        );
        let rotated = moments.rotate(transition);
        assert_eq!(rotated.steps, 5);
        rotated.first.into_data().assert_eq(
            &TensorData::new(vec![3.0f32, 0.5, -1.0, 2.0], [2, 2]),
            false,
        );
        rotated.second.into_data().assert_eq(
            &TensorData::new(vec![9.0f32, 0.25, 1.0, 4.0], [2, 2]),
            false,
        );
    }

    #[test]
    fn the_first_update_is_the_sign_of_the_gradient_up_to_epsilon() {
        let device = Device::flex();
        let gradient = Tensor::<2>::from_data(TensorData::new(vec![0.5f32, -3.0], [1, 2]), &device);
        let mut moments = AdamMoments::zeros_like(&gradient);
        let hyper = AdamHyper {
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
        };
        let direction = moments
            .update(gradient, &hyper)
            .into_data()
            .try_into_vec_as::<f32>()
            .unwrap();
        assert!(
            (direction[0] - 1.0).abs() < 1e-6 && (direction[1] + 1.0).abs() < 1e-6,
            "{direction:?}"
        );
    }
}
