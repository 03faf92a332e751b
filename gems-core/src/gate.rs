//! Adaptive gating of the task subspaces.
//!
//! The paper's gate: g_t = (α·L_t/ΣL + β·‖G_t‖/Σ‖G‖ + γ·n_t/Σn) / (α + β + γ)
//! (α = β = 0.4, γ = 0.2), with losses, gradient norms and sample counts over the accumulation
//! window. Like the authors' gate, the values are normalised: they sum to 1 over the tasks
//! present in the step whatever the weights' scale. A task with no samples in the window is
//! absent: its gate is 0 and the shares are taken over the others. A task whose share of a
//! signal cannot be formed (every present task's value is zero) gets the uniform share.

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
    /// Checks weights are finite, non-negative and not all zero (α + β + γ > 0).
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

    /// The gate value of every task, `None` marking a task absent from the step. The values of
    /// the present tasks sum to 1; absent tasks get 0.
    pub fn values(&self, signals: &[Option<TaskSignal>]) -> Result<Vec<f64>> {
        let present: Vec<usize> = (0..signals.len())
            .filter(|&t| signals[t].is_some())
            .collect();
        let signal = |t: usize| signals[t].expect("present tasks have a signal");
        let raw: Vec<f64> = match self {
            GateConfig::Adaptive {
                loss_weight,
                grad_norm_weight,
                sample_weight,
            } => {
                let losses = shares(present.iter().map(|&t| signal(t).loss.max(0.0)));
                let norms = shares(present.iter().map(|&t| signal(t).grad_norm));
                let samples = shares(present.iter().map(|&t| signal(t).samples as f64));
                (0..present.len())
                    .map(|i| {
                        loss_weight * losses[i]
                            + grad_norm_weight * norms[i]
                            + sample_weight * samples[i]
                    })
                    .collect()
            }
            GateConfig::Fixed { weights } if weights.len() == signals.len() => {
                present.iter().map(|&t| weights[t]).collect()
            }
            GateConfig::Fixed { weights } => {
                return Err(GemsError::InvalidStep(format!(
                    "the fixed gate has {} weights but the step has {} tasks",
                    weights.len(),
                    signals.len()
                )));
            }
        };
        let normalised = shares(raw.into_iter());
        let mut values = vec![0.0; signals.len()];
        for (t, value) in present.into_iter().zip(normalised) {
            values[t] = value;
        }
        Ok(values)
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
        let values = gate.values(&signals.map(Some)).unwrap();
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
        assert_eq!(gate.values(&signals.map(Some)).unwrap(), vec![0.5, 0.5]);
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
        assert!(gate.values(&one.map(Some)).is_err());
        assert!(
            GateConfig::Fixed {
                weights: vec![-1.0]
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn gate_values_are_normalised_whatever_the_weights_scale() {
        let signals = [
            Some(TaskSignal {
                loss: 3.0,
                grad_norm: 1.0,
                samples: 30,
            }),
            Some(TaskSignal {
                loss: 1.0,
                grad_norm: 3.0,
                samples: 10,
            }),
        ];
        let scaled = GateConfig::Adaptive {
            loss_weight: 2.0,
            grad_norm_weight: 2.0,
            sample_weight: 1.0,
        };
        let values = scaled.values(&signals).unwrap();
        let reference = GateConfig::default().values(&signals).unwrap();
        assert!((values[0] + values[1] - 1.0).abs() < 1e-12, "{values:?}");
        for (a, b) in values.iter().zip(&reference) {
            assert!((a - b).abs() < 1e-12, "{values:?} vs {reference:?}");
        }
        let fixed = GateConfig::Fixed {
            weights: vec![3.0, 1.0],
        };
        assert_eq!(fixed.values(&signals).unwrap(), vec![0.75, 0.25]);
        let zero = GateConfig::Adaptive {
            loss_weight: 0.0,
            grad_norm_weight: 0.0,
            sample_weight: 0.0,
        };
        assert!(zero.validate().is_err());
        let not_a_number = GateConfig::Adaptive {
            loss_weight: f64::NAN,
            grad_norm_weight: 0.5,
            sample_weight: 0.5,
        };
        assert!(not_a_number.validate().is_err());
    }

    #[test]
    fn absent_tasks_get_no_gate_and_the_present_ones_share_it() {
        let present = TaskSignal {
            loss: 2.0,
            grad_norm: 1.0,
            samples: 4,
        };
        let gate = GateConfig::default();
        assert_eq!(
            gate.values(&[None, Some(present), Some(present)]).unwrap(),
            vec![0.0, 0.5, 0.5]
        );
        let fixed = GateConfig::Fixed {
            weights: vec![0.5, 0.3, 0.2],
        };
        let values = fixed.values(&[Some(present), None, Some(present)]).unwrap();
        assert!(
            (values[0] - 5.0 / 7.0).abs() < 1e-12 && values[1] == 0.0,
            "{values:?}"
        );
    }
}
