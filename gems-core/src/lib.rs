//! # gems-core
//!
//! The GEMS optimizer (Gradient Multi-Subspace Tuning; Zhao, Wang, Pan, Verberne & Ren,
//! SIGIR 2026, arXiv:2601.09496) for any [Burn](https://burn.dev) model, with GaLore, AdamW
//! and the paper's ablations in the same API.
//!
//! For every projected 2-D weight, each step:
//! 1. projects each task's gradient away from the pre-trained model's knowledge space
//!    ([`null_space`]);
//! 2. updates the weight in a shared low-rank subspace of the merged gradient and in one
//!    subspace per task orthogonal to it ([`subspace`]), bases from randomized SVD
//!    ([`rsvd`]) refreshed every T steps, Adam moments in low-rank coordinates;
//! 3. weighs the task updates with an adaptive gate ([`gate`]);
//! 4. projects the final update, weight decay included, away from the knowledge space again,
//!    so that `(W + ΔW)·x = W·x` for knowledge inputs x.
//!
//! Other parameters get AdamW, or are frozen ([`GemsOptimizer::with_frozen`]: no state, never
//! changed), such as the pre-trained rows of a vocabulary matrix whose added tokens alone are
//! trained.
//!
//! ## Bias correction across basis refreshes
//!
//! Adam divides its moments by the weight their averages have given to gradients so far
//! (1 − βᵗ after t steps). When a refresh carries the moments into a new basis (`rotate`), a
//! direction that was outside the old subspace has seen no gradient, and a shared step counter
//! would treat it as warmed up: for a steady gradient its steps would reach about 6.6× their
//! steady size 12 steps after the refresh and stay above 2× for 200 steps. So every moment row
//! carries its own correction mass, transformed through the rotation C = Q_newᵀQ_old like the
//! second moment, by C∘C: a new direction starts from zero mass (as Adam at step 1), a direction
//! kept from the old subspace keeps its statistics, and one partly inside gets the old
//! statistics in proportion to the share of it inside (see [`adam::AdamMoments::rotate`]).
//! `keep` leaves moments and masses as they are; `reset` zeroes both.
//!
//! ## What a step costs
//!
//! Beyond AdamW's element-wise work, an ordinary step of a projected `[m, n]` weight (bases on
//! the side of length m, R = r_s + T·r_t stacked rows) costs the projections onto the bases and
//! one product back with the bases stacked at the refresh: about 4·R·m·n FLOPs, the same as
//! GaLore at rank R. The stack puts the shared rows between the first two tasks' rows, so that
//! either task's gradient meets its shared and own bases in one product, and the product back
//! is formed in the weight's own layout, never as a transposed view to add. The bases go on
//! the knowledge directions' side when the directions left there hold every subspace and are
//! no more than the other side's ([`projector::Side::for_weight`]): they avoid the knowledge
//! directions, and nothing more is done at each step. When the knowledge directions lie on
//! the other side (k of n), they are removed from the R-row coordinates and once from the
//! stacked steps, 8·R·n·min(k, n − k) FLOPs (through the complement when k > n/2), never from
//! a full-size matrix. Weight decay acts on the whole weight, so with k of a weight's d inputs
//! protected it costs one full-size product: `W − U·(UᵀW₀)`, `UᵀW₀` kept from the first decay
//! since null-space updates never change it (2·k·d·n FLOPs, k·n values held), or `V(VᵀW)`
//! through the complement when k > d/2 (4·(d − k)·d·n FLOPs, nothing held). The step reads
//! back from the device once, for its statistics (losses, norms, gate); a refresh adds the
//! small host problems of the randomized SVDs ([`StepReport::device_reads`] counts them).
//!
//! ## Memory: one task's full gradients at a time
//!
//! A step from full task gradients needs every task's gradient of the whole model at once.
//! [`GemsOptimizer::condense`] cuts a task's gradients of the projected weights to their
//! low-rank coordinates right after its backward pass, so that only one task's full gradients
//! are ever held ([`condense`]); the step is the same up to rounding, for one more product with
//! the shared basis per condensed task. A gradient of low rank can come as its two factors
//! ([`FactoredGradient`], `G = xᵀ·∂L/∂y` for a linear layer over a few rows):
//! [`GemsOptimizer::condense_factored`] projects them without forming it, and a backward pass
//! that leaves them (gems-models' `Backbone::loss_factored`) skips the product that would.
//!
//! ## Absent tasks and bad steps
//!
//! A task with no samples in a step (or no gradient for a weight) leaves its subspaces,
//! moments and counters untouched; the gate, normalised to sum to 1, is shared by the tasks
//! present. A NaN or infinite loss or gradient rejects the step before anything changes and
//! hands the module back ([`StepError`]), so that a training loop can skip it.
//!
//! Usage:
//!
//! ```text
//! let mut optimizer = GemsConfig::new().init()?.with_null_space(null_space);
//! let search = TaskGradients { gradients: GradientsParams::from_grads(search_loss.backward(), &model), loss, samples };
//! let rec = TaskGradients { /* likewise */ };
//! let (model, report) = optimizer.step(learning_rate, model, vec![search, rec])?;
//! // or, holding one task's full gradients at a time:
//! // let search = optimizer.condense(&model, 0, search); /* then the rec backward pass */
//! // (`condense_factored` with the factors of `optimizer.condensable_weights(0)`, if any)
//! // or, to go on after a rejected step:
//! // Err(StepError { module, error }) => keep `module`, log `error`, continue
//! ```
//!
//! See `examples/embed_optimizer.rs` in the repository for a complete program.

#![warn(missing_docs)]

pub mod adam;
pub mod backend;
pub mod checkpoint;
pub mod condense;
pub mod config;
pub mod covariance;
pub mod diagnostics;
pub mod distributed;
pub mod error;
pub mod gate;
pub mod host;
pub mod knowledge_file;
pub mod null_space;
pub mod optimizer;
pub mod projector;
pub mod rsvd;
pub mod subspace;

pub use backend::{available_backends, device_from_name};
pub use condense::{CondensedTask, FactoredGradient};
pub use config::{GemsConfig, Method, MomentTransfer, OtherParams};
pub use covariance::{CovarianceAccumulator, KnowledgeProgress};
pub use diagnostics::{EffectiveRanks, LayerCosine, ProductCost, StepReport};
pub use distributed::{DataParallel, Exchange, Replica};
pub use error::{GemsError, Result};
pub use gate::{GateConfig, TaskSignal};
pub use null_space::{ColumnRemoval, KnowledgeBasis, KnowledgeSelection, NullSpace};
pub use optimizer::{GemsOptimizer, ParamPlan, StepError, StepResult, TaskGradients, Treatment};
pub use rsvd::SvdMethod;
