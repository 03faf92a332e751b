//! Null-space projection: keeping updates away from the directions that carry the pre-trained
//! model's general knowledge.
//!
//! For every projected linear layer, the uncentred covariance of its inputs C = E[x xᵀ] over a
//! general-domain corpus is accumulated batch by batch. Its top eigenvectors U_k, the smallest
//! set holding a fraction ε of the trace (or every eigenvalue above a threshold), span the
//! *knowledge space*. Gradients and updates are projected with G ← G − U_k(U_kᵀG) on the input
//! side, so that (W + ΔW)·x = W·x for every x in that space. U_k is kept thin: no dense d×d
//! projector is ever formed.

use std::collections::BTreeMap;

use burn::tensor::Tensor;
use faer::Mat;
use serde::{Deserialize, Serialize};

use crate::error::{GemsError, Result};
use crate::host::{symmetric_eigen_descending, to_device, to_host};

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
    fn count(&self, eigenvalues: &[f64]) -> usize {
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
    /// directions of its input side.
    pub fn project_out(&self, matrix: Tensor<2>) -> Tensor<2> {
        if self.input_axis == 0 {
            self.remove_from_rows(matrix)
        } else {
            self.remove_from_columns(matrix)
        }
    }

    /// `M − U(UᵀM)`, for a matrix whose rows index the input dimension.
    pub fn remove_from_rows(&self, matrix: Tensor<2>) -> Tensor<2> {
        match &self.basis {
            Some(basis) => {
                matrix.clone()
                    - basis
                        .clone()
                        .matmul(basis.clone().transpose().matmul(matrix))
            }
            None => matrix,
        }
    }

    /// `M − (MU)Uᵀ`, for a matrix whose columns index the input dimension (such as low-rank
    /// coordinates of a basis on the output side).
    pub fn remove_from_columns(&self, matrix: Tensor<2>) -> Tensor<2> {
        match &self.basis {
            Some(basis) => {
                matrix.clone()
                    - matrix
                        .matmul(basis.clone())
                        .matmul(basis.clone().transpose())
            }
            None => matrix,
        }
    }

    /// The basis selected from an input covariance matrix (`[d_in, d_in]`, symmetric).
    pub fn from_covariance(
        covariance: Tensor<2>,
        selection: &KnowledgeSelection,
        input_axis: usize,
    ) -> Result<Self> {
        let device = covariance.device();
        let (values, vectors) = symmetric_eigen_descending(&to_host(covariance))?;
        let values: Vec<f64> = values.into_iter().map(|v| v.max(0.0)).collect();
        let kept = selection.count(&values);
        let trace: f64 = values.iter().sum();
        let retained_energy = if trace > 0.0 {
            values[..kept].iter().sum::<f64>() / trace
        } else {
            0.0
        };
        let basis = (kept > 0).then(|| {
            let top = Mat::from_fn(vectors.nrows(), kept, |i, j| vectors[(i, j)]);
            to_device(&top, &device)
        });
        Ok(Self {
            basis,
            input_axis,
            retained_energy,
        })
    }

    /// Bytes held by the basis (float32).
    pub fn bytes(&self) -> usize {
        self.basis
            .as_ref()
            .map_or(0, |b| 4 * b.shape().num_elements())
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

/// Streaming accumulator of uncentred input covariances, one per weight.
///
/// Feed it the inputs each projected layer sees on general-domain text, batch after batch,
/// then turn it into a [`NullSpace`].
#[derive(Clone, Debug, Default)]
pub struct CovarianceAccumulator {
    sums: BTreeMap<String, (Tensor<2>, u64)>,
}

impl CovarianceAccumulator {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the inputs (`[rows, d_in]`, one row per token) the weight at `path` received.
    pub fn observe(&mut self, path: &str, inputs: Tensor<2>) {
        let [rows, _] = inputs.dims();
        let gram = inputs.clone().transpose().matmul(inputs);
        match self.sums.get_mut(path) {
            Some((sum, count)) => {
                *sum = sum.clone() + gram;
                *count += rows as u64;
            }
            None => {
                self.sums.insert(path.to_string(), (gram, rows as u64));
            }
        }
    }

    /// Rows observed for `path`.
    pub fn observations(&self, path: &str) -> u64 {
        self.sums.get(path).map_or(0, |(_, count)| *count)
    }

    /// E[x xᵀ] for `path`, if anything was observed.
    pub fn covariance(&self, path: &str) -> Option<Tensor<2>> {
        self.sums
            .get(path)
            .filter(|(_, count)| *count > 0)
            .map(|(sum, count)| sum.clone().div_scalar(*count as f64))
    }

    /// Paths observed so far.
    pub fn paths(&self) -> impl Iterator<Item = &String> {
        self.sums.keys()
    }

    /// The sum of xᵀx and the rows observed for `path` (for summing accumulators across
    /// devices, [`crate::distributed`]).
    pub(crate) fn gram(&self, path: &str) -> Option<(Tensor<2>, u64)> {
        self.sums.get(path).cloned()
    }

    /// Sets the sum of xᵀx and the rows observed for `path`.
    pub(crate) fn insert_gram(&mut self, path: &str, sum: Tensor<2>, rows: u64) {
        self.sums.insert(path.to_string(), (sum, rows));
    }

    /// The knowledge bases of every observed weight. `input_axis` is the input side of the
    /// weights (0 for Burn `Linear`).
    pub fn into_null_space(
        self,
        selection: &KnowledgeSelection,
        input_axis: usize,
    ) -> Result<NullSpace> {
        selection.validate()?;
        let mut null_space = NullSpace::new();
        for (path, (sum, count)) in self.sums {
            if count == 0 {
                continue;
            }
            let covariance = sum.div_scalar(count as f64);
            let basis = KnowledgeBasis::from_covariance(covariance, selection, input_axis)
                .map_err(|e| GemsError::Decomposition(format!("{path}: {e}")))?;
            null_space.insert(path, basis);
        }
        Ok(null_space)
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

    #[test]
    fn threshold_selection_keeps_eigenvalues_above_it() {
        let selection = KnowledgeSelection::EigenvalueThreshold { threshold: 0.02 };
        assert_eq!(selection.count(&[1.0, 0.5, 0.02, 0.01]), 2);
    }
}
