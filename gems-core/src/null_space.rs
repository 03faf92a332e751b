//! Null-space projection: keeping updates away from the directions that carry the pre-trained
//! model's general knowledge.
//!
//! For every projected linear layer, the uncentred covariance of its inputs C = E[x xᵀ] over a
//! general-domain corpus is accumulated batch by batch. Its top eigenvectors U_k, the smallest
//! set holding a fraction ε of the trace (or every eigenvalue above a threshold), span the
//! *knowledge space*. Gradients and updates are projected with G ← G − U_k(U_kᵀG) on the input
//! side, so that (W + ΔW)·x = W·x for every x in that space. U_k is kept thin: no dense d×d
//! projector is ever formed. The covariances and their decomposition are in
//! [`crate::covariance`].

use std::collections::BTreeMap;

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{GemsError, Result};

/// How many eigenvectors of an input covariance form the knowledge basis.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum KnowledgeSelection {
    /// The fewest top eigenvectors whose eigenvalues hold this fraction of the trace (0.99).
    EnergyFraction {
        /// ε in (0, 1].
        fraction: f64,
    },
    /// Every eigenvector whose eigenvalue exceeds this value (the reference uses 2e-2).
    EigenvalueThreshold {
        /// The absolute threshold on eigenvalues of E[x xᵀ].
        threshold: f64,
    },
}

impl Default for KnowledgeSelection {
    fn default() -> Self {
        KnowledgeSelection::EnergyFraction { fraction: 0.99 }
    }
}

impl KnowledgeSelection {
    /// Checks the fraction or threshold is in range.
    // `!(x >= 0.0)` also rejects NaN, which `x < 0.0` would let through.
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    pub fn validate(&self) -> Result<()> {
        match *self {
            KnowledgeSelection::EnergyFraction { fraction }
                if !(fraction > 0.0 && fraction <= 1.0) =>
            {
                Err(GemsError::InvalidConfig(format!(
                    "knowledge energy fraction must be in (0, 1], got {fraction}"
                )))
            }
            KnowledgeSelection::EigenvalueThreshold { threshold } if !(threshold >= 0.0) => {
                Err(GemsError::InvalidConfig(format!(
                    "knowledge eigenvalue threshold must be non-negative, got {threshold}"
                )))
            }
            _ => Ok(()),
        }
    }

    /// How many of the (non-increasing, non-negative) eigenvalues to keep.
    pub(crate) fn count(&self, eigenvalues: &[f64]) -> usize {
        match *self {
            KnowledgeSelection::EnergyFraction { fraction } => {
                let trace: f64 = eigenvalues.iter().sum();
                if trace <= 0.0 {
                    return 0;
                }
                let mut held = 0.0;
                for (kept, value) in eigenvalues.iter().enumerate() {
                    if held >= fraction * trace {
                        return kept;
                    }
                    held += value;
                }
                eigenvalues.len()
            }
            KnowledgeSelection::EigenvalueThreshold { threshold } => {
                eigenvalues.iter().take_while(|&&v| v > threshold).count()
            }
        }
    }
}

/// The knowledge basis of one weight: orthonormal directions of its input space to keep fixed.
#[derive(Clone, Debug)]
pub struct KnowledgeBasis {
    /// `[d_in, k]` orthonormal columns, or `None` when no direction was selected.
    pub basis: Option<Tensor<2>>,
    /// The axis of the weight that multiplies inputs: 0 for Burn's `Linear` (`[d_in, d_out]`),
    /// 1 for PyTorch-layout weights (`[d_out, d_in]`).
    pub input_axis: usize,
    /// Fraction of the covariance trace the basis holds.
    pub retained_energy: f64,
}

impl KnowledgeBasis {
    /// Number of protected directions.
    pub fn rank(&self) -> usize {
        self.basis.as_ref().map_or(0, |b| b.dims()[1])
    }

    /// Removes from `matrix` (shaped like the weight) every component along the knowledge
    /// directions of its input side: `M − U(UᵀM)` when rows index the input, `M − (MU)Uᵀ`
    /// when columns do, i.e. `matrix` less its current knowledge part.
    pub fn project_out(&self, matrix: Tensor<2>) -> Tensor<2> {
        match self.knowledge_part(matrix.clone()) {
            Some(part) => self.without_knowledge_part(matrix, part),
            None => matrix,
        }
    }

    /// The orthonormal complement V (`[d_in, d_in − k]`) of the protected directions, drawn
    /// from `rng` (random directions with the basis removed, orthonormalised): with it, the
    /// removal `M − (MU)Uᵀ` is `(MV)Vᵀ`, which costs (d − k)/k as much, fewer operations when
    /// k > d/2. `None` without a basis or when the complement could not be completed.
    pub fn complement(&self, rng: &mut rand_chacha::ChaCha8Rng) -> Option<Tensor<2>> {
        let basis = self.basis.as_ref()?;
        let [d, k] = basis.dims();
        crate::rsvd::fallback_basis(None, d, d - k, Some(basis), rng, &basis.device()).ok()
    }

    /// Bytes held by the basis (float32).
    pub fn bytes(&self) -> usize {
        self.basis
            .as_ref()
            .map_or(0, |b| 4 * b.shape().num_elements())
    }

    /// Whether weight decay keeps a weight to its free directions through their complement V
    /// (`V(VᵀW)`, 4·(d − k)·d·n operations on a weight with a d-wide input side, nothing kept)
    /// rather than by subtracting its knowledge part kept from the first step
    /// (`W − U·(UᵀW₀)`, 2·k·d·n operations, k·n values kept): through the thinner of U and V,
    /// as the removal from coordinates ([`ColumnRemoval`]), so the complement when k > d/2.
    /// (From d/2 to 2d/3 the kept part would take fewer operations, for up to two thirds of
    /// the weight's size in memory.)
    pub fn decays_through_complement(&self) -> bool {
        self.basis.as_ref().is_some_and(|basis| {
            let [d, k] = basis.dims();
            2 * k > d
        })
    }

    /// The shape of the knowledge part of a weight shaped `weight_shape`
    /// ([`KnowledgeBasis::knowledge_part`]); `None` without a basis.
    pub fn knowledge_part_shape(&self, weight_shape: [usize; 2]) -> Option<[usize; 2]> {
        let k = self.basis.as_ref()?.dims()[1];
        Some(match self.input_axis {
            0 => [k, weight_shape[1]],
            _ => [weight_shape[0], k],
        })
    }

    /// The knowledge part of `weight`: `UᵀW` (`[k, n]`) when rows index the input, `W·U`
    /// (`[m, k]`) when columns do. Updates projected away from U never change it, so it is
    /// computed once and kept ([`KnowledgeBasis::without_knowledge_part`]).
    pub fn knowledge_part(&self, weight: Tensor<2>) -> Option<Tensor<2>> {
        let basis = self.basis.clone()?;
        Some(match self.input_axis {
            0 => basis.transpose().matmul(weight),
            _ => weight.matmul(basis),
        })
    }

    /// `weight` less its knowledge part `part` (from [`KnowledgeBasis::knowledge_part`]):
    /// `W − U·part` or `W − part·Uᵀ`, which is `project_out(W)` while `part` is current.
    pub fn without_knowledge_part(&self, weight: Tensor<2>, part: Tensor<2>) -> Tensor<2> {
        match &self.basis {
            Some(basis) if self.input_axis == 0 => weight - basis.clone().matmul(part),
            Some(basis) => weight - part.matmul(basis.clone().transpose()),
            None => weight,
        }
    }

    /// `weight` kept to the free directions `complement` (V, from
    /// [`KnowledgeBasis::complement`]): `V(VᵀW)` or `(WV)Vᵀ`, which is `project_out(W)`.
    pub fn within_complement(&self, weight: Tensor<2>, complement: &Tensor<2>) -> Tensor<2> {
        match self.input_axis {
            0 => complement
                .clone()
                .matmul(complement.clone().transpose().matmul(weight)),
            _ => ColumnRemoval::Complement(complement.clone()).apply(weight),
        }
    }
}

/// Null-space removal from matrices whose columns index a weight's input dimension (low-rank
/// coordinates and steps of a basis on the other side), in whichever form costs less.
#[derive(Clone, Debug)]
pub enum ColumnRemoval {
    /// `M − (M·U)·Uᵀ` with the protected directions U (`[d, k]`).
    Protected(Tensor<2>),
    /// `(M·V)·Vᵀ` with their orthonormal complement V (`[d, d − k]`), used when k > d/2.
    Complement(Tensor<2>),
}

impl ColumnRemoval {
    /// `matrix` without its components along the protected directions.
    pub fn apply(&self, matrix: Tensor<2>) -> Tensor<2> {
        match self {
            ColumnRemoval::Protected(basis) => {
                matrix.clone()
                    - matrix
                        .matmul(basis.clone())
                        .matmul(basis.clone().transpose())
            }
            ColumnRemoval::Complement(free) => {
                matrix.matmul(free.clone()).matmul(free.clone().transpose())
            }
        }
    }
}

/// Knowledge bases by weight path (`encoder.block.0.layer.0.SelfAttention.q.weight`).
#[derive(Clone, Debug, Default)]
pub struct NullSpace {
    bases: BTreeMap<String, KnowledgeBasis>,
}

impl NullSpace {
    /// An empty set of bases.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the basis of the weight at `path`.
    pub fn insert(&mut self, path: impl Into<String>, basis: KnowledgeBasis) {
        self.bases.insert(path.into(), basis);
    }

    /// The basis of the weight at `path`, if any.
    pub fn get(&self, path: &str) -> Option<&KnowledgeBasis> {
        self.bases.get(path)
    }

    /// Every (path, basis), in path order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &KnowledgeBasis)> {
        self.bases.iter()
    }

    /// Number of weights with a basis.
    pub fn len(&self) -> usize {
        self.bases.len()
    }

    /// Whether no weight has a basis.
    pub fn is_empty(&self) -> bool {
        self.bases.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn energy_selection_takes_the_fewest_eigenvalues_reaching_the_fraction() {
        let selection = KnowledgeSelection::EnergyFraction { fraction: 0.9 };
        assert_eq!(selection.count(&[5.0, 3.0, 1.5, 0.5]), 3);
        assert_eq!(selection.count(&[5.0, 4.0, 1.0]), 2);
        assert_eq!(selection.count(&[0.0, 0.0]), 0);
        let everything = KnowledgeSelection::EnergyFraction { fraction: 1.0 };
        assert_eq!(everything.count(&[1.0, 1.0, 0.0]), 2);
    }

    /// The complement of a wide basis removes exactly what the basis removes: checked against
    /// the removal written out in float64 on the host.
    #[test]
    fn the_complement_removes_what_the_basis_removes() {
        use burn::tensor::Device;
        use rand::SeedableRng;

        let device = Device::flex();
        let (d, k, rows) = (20, 14, 5);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let gaussian = |r: usize, c: usize, seed: u64| {
            crate::rsvd::gaussian_matrix(
                r,
                c,
                &mut rand_chacha::ChaCha8Rng::seed_from_u64(seed),
                &device,
            )
        };
        let basis = crate::rsvd::orthonormalize(gaussian(d, k, 1)).unwrap();
        let knowledge = KnowledgeBasis {
            basis: Some(basis.clone()),
            input_axis: 0,
            retained_energy: 0.99,
        };
        let complement = knowledge.complement(&mut rng).unwrap();
        assert_eq!(complement.dims(), [d, d - k]);
        let matrix = gaussian(rows, d, 2);
        let host = |t: Tensor<2>| crate::host::to_host(t);
        let (u, m) = (host(basis), host(matrix.clone()));
        let expected = &m - (&m * &u) * u.transpose();
        let actual = host(ColumnRemoval::Complement(complement).apply(matrix));
        let worst = (0..rows)
            .flat_map(|i| (0..d).map(move |j| (i, j)))
            .map(|(i, j)| (expected[(i, j)] - actual[(i, j)]).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-5, "differs by {worst:e}");
    }

    #[test]
    fn threshold_selection_keeps_eigenvalues_above_it() {
        let selection = KnowledgeSelection::EigenvalueThreshold { threshold: 0.02 };
        assert_eq!(selection.count(&[1.0, 0.5, 0.02, 0.01]), 2);
    }
}
