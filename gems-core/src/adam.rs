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

/// First and second moments of one matrix, with their bias-correction masses.
///
/// Adam divides each moment by the total weight its exponential average has given to
/// gradients so far, 1 − βᵗ after t updates (the *mass*). Here the masses are kept per row
/// (`[rows, 1]`) instead of being derived from one step counter, because a basis refresh mixes
/// rows that have seen many gradients with rows that have seen none (see
/// [`AdamMoments::rotate`]). Without refreshes every row's mass is 1 − βᵗ, textbook Adam.
#[derive(Clone, Debug)]
pub struct AdamMoments {
    /// Exponential average of gradients.
    pub first: Tensor<2>,
    /// Exponential average of squared gradients.
    pub second: Tensor<2>,
    /// Bias-correction mass of each row of the first moment (`[rows, 1]`).
    pub first_mass: Tensor<2>,
    /// Bias-correction mass of each row of the second moment (`[rows, 1]`).
    pub second_mass: Tensor<2>,
    /// Updates so far.
    pub steps: u64,
}

impl AdamMoments {
    /// Zero moments shaped like `like`.
    pub fn zeros_like(like: &Tensor<2>) -> Self {
        let [rows, _] = like.dims();
        let mass = Tensor::zeros([rows, 1], &like.device());
        Self {
            first: like.zeros_like(),
            second: like.zeros_like(),
            first_mass: mass.clone(),
            second_mass: mass,
            steps: 0,
        }
    }

    /// Folds `gradient` into the moments and returns the bias-corrected Adam direction
    /// m̂ / (√v̂ + ε), with m̂ and v̂ each row's moment divided by that row's mass.
    ///
    /// The moments are taken out of `self` while they are updated, so that a backend which
    /// reuses the buffer of a tensor nothing else holds (flex) updates them in place.
    pub fn update(&mut self, gradient: Tensor<2>, hyper: &AdamHyper) -> Tensor<2> {
        self.steps += 1;
        // The masses stand in meanwhile: a clone shares their buffer, so nothing is allocated.
        let first = std::mem::replace(&mut self.first, self.first_mass.clone());
        let second = std::mem::replace(&mut self.second, self.second_mass.clone());
        let first = first.mul_scalar(hyper.beta1) + gradient.clone().mul_scalar(1.0 - hyper.beta1);
        let second =
            second.mul_scalar(hyper.beta2) + gradient.square().mul_scalar(1.0 - hyper.beta2);
        self.first_mass = self
            .first_mass
            .clone()
            .mul_scalar(hyper.beta1)
            .add_scalar(1.0 - hyper.beta1);
        self.second_mass = self
            .second_mass
            .clone()
            .mul_scalar(hyper.beta2)
            .add_scalar(1.0 - hyper.beta2);
        let denominator = (second.clone() / self.second_mass.clone())
            .sqrt()
            .add_scalar(hyper.epsilon);
        let direction = (first.clone() / self.first_mass.clone()) / denominator;
        self.first = first;
        self.second = second;
        direction
    }

    /// Carries the moments into a new basis, `transition = C = Q_newᵀ·Q_old`
    /// (`[new rank, old rank]`).
    ///
    /// Row i of the new coordinates is the direction q_i; ρᵢ² = Σₖ Cᵢₖ² is the share of it
    /// inside the old subspace. The old statistics count as evidence about q_i in proportion to
    /// that share, and are read along the unit direction P_old·q_i / ρᵢ:
    /// - the masses are mapped with the squared entries, m' = (C∘C)·mass, so that a direction
    ///   wholly outside the old subspace starts with zero mass, as Adam at step 1, instead of
    ///   inheriting a warmed-up step count (which makes its steps several times too large);
    /// - the second moment, which holds squares, is mapped the same way, (C∘C)·v, so that v/mass
    ///   is a mass-weighted mean of the old rows' v̂;
    /// - the first moment is rotated exactly and scaled by ρᵢ, ρᵢ·(C·m)ᵢ, so that with equal
    ///   old masses its corrected value is the old estimate along P_old·q_i / ρᵢ.
    ///
    /// A rotation within the old subspace (ρ = 1 everywhere) maps every moment exactly and
    /// keeps the masses. The step count is kept.
    pub fn rotate(self, transition: Tensor<2>) -> Self {
        let squared = transition.clone().square();
        let reach = squared.clone().sum_dim(1).sqrt();
        Self {
            first: transition.matmul(self.first) * reach,
            second: squared.clone().matmul(self.second),
            first_mass: squared.clone().matmul(self.first_mass),
            second_mass: squared.matmul(self.second_mass),
            steps: self.steps,
        }
    }

    /// Bytes held by the two moments and their masses (float32).
    pub fn bytes(&self) -> usize {
        4 * (self.first.shape().num_elements()
            + self.second.shape().num_elements()
            + self.first_mass.shape().num_elements()
            + self.second_mass.shape().num_elements())
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
        let mass = Tensor::<2>::from_data(TensorData::new(vec![0.5f32, 0.25], [2, 1]), &device);
        let moments = AdamMoments {
            first,
            second,
            first_mass: mass.clone(),
            second_mass: mass,
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
        // The masses follow their rows.
        rotated
            .first_mass
            .into_data()
            .assert_eq(&TensorData::new(vec![0.25f32, 0.5], [2, 1]), false);
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
