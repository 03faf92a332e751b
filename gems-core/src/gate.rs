//! Adaptive gating of the task subspaces.
//!
//! The paper's gate: g_t = α·L_t/ΣL + β·‖G_t‖/Σ‖G‖ + γ·n_t/Σn (α = β = 0.4, γ = 0.2), with
//! losses, gradient norms and sample counts over the accumulation window. A task whose share
//! of a signal cannot be formed (every task's value is zero) gets the uniform share 1/T.

use serde::{Deserialize, Serialize};

use crate::error::{GemsError, Result};

/// How task updates are weighted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GateConfig {
    /// The paper's adaptive gate: a weighted sum of each task's share of the loss, of the
    /// gradient norm and of the samples.
    Adaptive {
        /// α, weight of the loss share.
        loss_weight: f64,
        /// β, weight of the gradient-norm share.
        grad_norm_weight: f64,
        /// γ, weight of the sample share.
        sample_weight: f64,
    },
    /// Constant weights, one per task in the order tasks are passed to `step`.
    Fixed {
        /// The weights.
        weights: Vec<f64>,
    },
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig::Adaptive {
            loss_weight: 0.4,
            grad_norm_weight: 0.4,
            sample_weight: 0.2,
        }
    }
}

/// What one task contributed to a step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TaskSignal {
    /// The task's loss over the accumulation window.
    pub loss: f64,
    /// Frobenius norm of the task's gradient over every updated parameter.
    pub grad_norm: f64,
    /// Samples of the task in the window.
    pub samples: usize,
}

impl GateConfig {
    /// Checks weights are finite, non-negative and not all zero.
    pub fn validate(&self) -> Result<()> {
        let weights: Vec<f64> = match self {
            GateConfig::Adaptive {
                loss_weight,
                grad_norm_weight,
                sample_weight,
            } => vec![*loss_weight, *grad_norm_weight, *sample_weight],
            GateConfig::Fixed { weights } => weights.clone(),
        };
        if weights.iter().any(|w| !w.is_finite() || *w < 0.0) || weights.iter().sum::<f64>() <= 0.0
        {
            return Err(GemsError::InvalidConfig(format!(
                "gate weights must be finite, non-negative and not all zero, got {weights:?}"
            )));
        }
        Ok(())
    }

    /// The gate value of every task.
    pub fn values(&self, signals: &[TaskSignal]) -> Result<Vec<f64>> {
        match self {
            GateConfig::Adaptive {
                loss_weight,
                grad_norm_weight,
                sample_weight,
            } => {
                let losses = shares(signals.iter().map(|s| s.loss.max(0.0)));
                let norms = shares(signals.iter().map(|s| s.grad_norm));
                let samples = shares(signals.iter().map(|s| s.samples as f64));
                Ok((0..signals.len())
                    .map(|t| {
                        loss_weight * losses[t]
                            + grad_norm_weight * norms[t]
                            + sample_weight * samples[t]
                    })
                    .collect())
            }
            GateConfig::Fixed { weights } if weights.len() == signals.len() => Ok(weights.clone()),
            GateConfig::Fixed { weights } => Err(GemsError::InvalidStep(format!(
                "the fixed gate has {} weights but the step has {} tasks",
                weights.len(),
                signals.len()
            ))),
        }
    }
}

/// Each value's share of the total, or 1/n each when the total is zero.
fn shares(values: impl Iterator<Item = f64>) -> Vec<f64> {
    let values: Vec<f64> = values.collect();
    let total: f64 = values.iter().sum();
    if total > 0.0 && total.is_finite() {
        values.iter().map(|v| v / total).collect()
    } else {
        vec![1.0 / values.len() as f64; values.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adaptive_gate_follows_the_formula() {
        let gate = GateConfig::default();
        let signals = [
            TaskSignal {
                loss: 3.0,
                grad_norm: 1.0,
                samples: 30,
            },
            TaskSignal {
                loss: 1.0,
                grad_norm: 3.0,
                samples: 10,
            },
        ];
        let values = gate.values(&signals).unwrap();
        let expected_search = 0.4 * 0.75 + 0.4 * 0.25 + 0.2 * 0.75;
        let expected_rec = 0.4 * 0.25 + 0.4 * 0.75 + 0.2 * 0.25;
        assert!((values[0] - expected_search).abs() < 1e-12);
        assert!((values[1] - expected_rec).abs() < 1e-12);
    }

    #[test]
    fn zero_totals_fall_back_to_uniform_shares() {
        let gate = GateConfig::default();
        let signals = [
            TaskSignal {
                loss: 0.0,
                grad_norm: 0.0,
                samples: 0,
            },
            TaskSignal {
                loss: 0.0,
                grad_norm: 0.0,
                samples: 0,
            },
        ];
        assert_eq!(gate.values(&signals).unwrap(), vec![0.5, 0.5]);
    }

    #[test]
    fn fixed_gate_checks_the_task_count() {
        let gate = GateConfig::Fixed {
            weights: vec![0.7, 0.3],
        };
        let one = [TaskSignal {
            loss: 1.0,
            grad_norm: 1.0,
            samples: 1,
        }];
        assert!(gate.values(&one).is_err());
        assert!(
            GateConfig::Fixed {
                weights: vec![-1.0]
            }
            .validate()
            .is_err()
        );
    }
}
