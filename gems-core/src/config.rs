//! Optimizer configuration: GEMS and, through [`Method`], the baselines and ablations of the
//! paper in the same harness.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::adam::AdamHyper;
use crate::error::{GemsError, Result};
use crate::gate::GateConfig;
use crate::null_space::KnowledgeSelection;
use crate::optimizer::GemsOptimizer;
use crate::rsvd::SvdMethod;

/// Which update rule the optimizer applies to the projected weights.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// GEMS: shared + per-task subspaces, adaptive gate, null-space projection.
    #[default]
    Gems,
    /// GaLore (Zhao et al., 2024): one subspace of the merged gradient.
    Galore,
    /// Full AdamW on every parameter.
    Adamw,
    /// Ablation: GEMS without the multi-subspace decomposition (one shared subspace, with
    /// null-space projection).
    GemsNoMsd,
    /// Ablation: GEMS without null-space projection.
    GemsNoNsp,
}

impl Method {
    /// Every method, in the order of the paper's tables.
    pub const ALL: [Method; 5] = [
        Method::Gems,
        Method::Galore,
        Method::Adamw,
        Method::GemsNoMsd,
        Method::GemsNoNsp,
    ];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Method::Gems => "gems",
            Method::Galore => "galore",
            Method::Adamw => "adamw",
            Method::GemsNoMsd => "gems-no-msd",
            Method::GemsNoNsp => "gems-no-nsp",
        }
    }

    /// Whether projected weights are updated in low-rank subspaces (all but AdamW).
    pub fn low_rank(self) -> bool {
        self != Method::Adamw
    }

    /// Whether task subspaces exist beside the shared one.
    pub fn multi_subspace(self) -> bool {
        matches!(self, Method::Gems | Method::GemsNoNsp)
    }

    /// Whether gradients and updates are projected away from the knowledge space.
    pub fn null_space(self) -> bool {
        matches!(self, Method::Gems | Method::GemsNoMsd)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Method {
    type Err = GemsError;

    fn from_str(name: &str) -> Result<Self> {
        Method::ALL
            .into_iter()
            .find(|m| m.name() == name)
            .ok_or_else(|| {
                let known: Vec<&str> = Method::ALL.iter().map(|m| m.name()).collect();
                GemsError::InvalidConfig(format!(
                    "unknown optimizer method `{name}`; known: {}",
                    known.join(", ")
                ))
            })
    }
}

/// What happens to a subspace's Adam moments when its basis is recomputed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MomentTransfer {
    /// Carry them into the new basis (first moment rotated by Q_newᵀQ_old, second by its
    /// squared entries).
    #[default]
    Rotate,
    /// Keep them unchanged in the new coordinates (what GaLore and the GEMS reference do).
    Keep,
    /// Start from zero, bias correction included.
    Reset,
}

/// What happens to parameters that are not projected (embeddings, norms, biases, ...).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OtherParams {
    /// Plain AdamW on the merged gradient.
    #[default]
    Adamw,
    /// Left unchanged.
    Frozen,
}

/// Configuration of the GEMS optimizer (Zhao, Wang, Pan, Verberne & Ren, "Gradient
/// Multi-Subspace Tuning", SIGIR 2026, arXiv:2601.09496). Every field has a default; partial
/// TOML/JSON configurations fill in the rest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GemsConfig {
    /// Update rule: GEMS, a baseline or an ablation. Default `gems`.
    pub method: Method,
    /// Rank r_s of the shared subspace. Default 128.
    pub shared_rank: usize,
    /// Rank r_t of each task subspace; `None` means `shared_rank / 2`. Default `None`.
    pub task_rank: Option<usize>,
    /// Recompute bases every this many steps (T). Default 200.
    pub refresh_every: u64,
    /// Spread the refreshes of different weights evenly over the T steps instead of
    /// refreshing every weight on the same step. Default false.
    pub stagger_refresh: bool,
    /// Scale α applied to low-rank updates (GaLore's `scale`). Default 0.25.
    pub scale: f64,
    /// Adam β₁. Default 0.9.
    pub beta1: f64,
    /// Adam β₂. Default 0.999.
    pub beta2: f64,
    /// Adam ε. Default 1e-8.
    pub epsilon: f64,
    /// Decoupled weight decay (AdamW). Default 0.
    pub weight_decay: f64,
    /// Moment handling on refresh. Default `rotate`.
    pub moment_transfer: MomentTransfer,
    /// How bases are computed. Default randomized with oversampling 8 and one power iteration.
    pub svd: SvdMethod,
    /// Task gate. Default adaptive with α = 0.4, β = 0.4, γ = 0.2.
    pub gate: GateConfig,
    /// How knowledge bases are cut from input covariances. Default 99% of the energy.
    pub knowledge: KnowledgeSelection,
    /// Names of the linear modules whose weights are projected, matched against the last
    /// module name of a 2-D parameter's path (as PEFT's `target_modules`). Default: the
    /// attention and MLP matrices of T5 and Qwen2.
    pub target_modules: Vec<String>,
    /// Treatment of every parameter that is not projected. Default AdamW.
    pub other_params: OtherParams,
    /// Compute per-layer cosines between task gradients at every step (turned on and off
    /// between steps by [`GemsOptimizer::set_diagnostics`](crate::GemsOptimizer::set_diagnostics)).
    /// Default true.
    pub diagnostics: bool,
    /// Seed of every random sketch. Default 0.
    pub seed: u64,
}

/// The attention and MLP matrices of T5 (`q k v o wi wi_0 wi_1 wo`) and Qwen2 (`q_proj ...
/// down_proj`).
pub fn default_target_modules() -> Vec<String> {
    [
        "q",
        "k",
        "v",
        "o",
        "wi",
        "wi_0",
        "wi_1",
        "wo",
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

impl Default for GemsConfig {
    fn default() -> Self {
        Self {
            method: Method::Gems,
            shared_rank: 128,
            task_rank: None,
            refresh_every: 200,
            stagger_refresh: false,
            scale: 0.25,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
            weight_decay: 0.0,
            moment_transfer: MomentTransfer::Rotate,
            svd: SvdMethod::default(),
            gate: GateConfig::default(),
            knowledge: KnowledgeSelection::default(),
            target_modules: default_target_modules(),
            other_params: OtherParams::Adamw,
            diagnostics: true,
            seed: 0,
        }
    }
}

impl GemsConfig {
    /// The default configuration.
    pub fn new() -> Self {
        Self::default()
    }

    /// The default configuration with another method.
    pub fn for_method(method: Method) -> Self {
        Self {
            method,
            ..Self::default()
        }
    }

    /// Rank of each task subspace.
    pub fn effective_task_rank(&self) -> usize {
        self.task_rank.unwrap_or(self.shared_rank / 2)
    }

    /// Adam's hyper-parameters.
    pub fn adam(&self) -> AdamHyper {
        AdamHyper {
            beta1: self.beta1,
            beta2: self.beta2,
            epsilon: self.epsilon,
        }
    }

    /// Checks every value is in range.
    // `!(x > 0.0)` also rejects NaN, which `x <= 0.0` would let through.
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    pub fn validate(&self) -> Result<()> {
        let invalid = |message: String| Err(GemsError::InvalidConfig(message));
        if self.method.low_rank() && self.shared_rank == 0 {
            return invalid("shared_rank must be at least 1".into());
        }
        if self.refresh_every == 0 {
            return invalid("refresh_every must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            return invalid(format!(
                "beta1 and beta2 must be in [0, 1), got {} and {}",
                self.beta1, self.beta2
            ));
        }
        if !(self.epsilon.is_finite() && self.epsilon > 0.0) {
            return invalid(format!("epsilon must be positive, got {}", self.epsilon));
        }
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return invalid(format!("scale must be positive, got {}", self.scale));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return invalid(format!(
                "weight_decay must be a non-negative number, got {}",
                self.weight_decay
            ));
        }
        self.gate.validate()?;
        self.knowledge.validate()
    }

    /// Builds the optimizer.
    pub fn init(self) -> Result<GemsOptimizer> {
        self.validate()?;
        Ok(GemsOptimizer::new(self))
    }

    /// Whether a parameter at `path` with `shape` is projected under this configuration.
    pub fn targets(&self, path: &str, shape: &[usize]) -> bool {
        if shape.len() != 2 {
            return false;
        }
        let mut segments = path.rsplit('.');
        let _parameter_name = segments.next();
        segments
            .next()
            .is_some_and(|module| self.target_modules.iter().any(|t| t == module))
    }
}
