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
//! Other parameters get AdamW (or are frozen). Usage:
//!
//! ```text
//! let mut optimizer = GemsConfig::new().init()?.with_null_space(null_space);
//! let search = TaskGradients { gradients: GradientsParams::from_grads(search_loss.backward(), &model), loss, samples };
//! let rec = TaskGradients { /* likewise */ };
//! let (model, report) = optimizer.step(learning_rate, model, vec![search, rec])?;
//! ```
//!
//! See `examples/embed_optimizer.rs` in the repository for a complete program.

#![warn(missing_docs)]

pub mod adam;
pub mod backend;
pub mod checkpoint;
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
pub use config::{GemsConfig, Method, MomentTransfer, OtherParams};
pub use covariance::{CovarianceAccumulator, KnowledgeProgress};
pub use diagnostics::{LayerCosine, StepReport};
pub use distributed::{DataParallel, Exchange, Replica};
pub use error::{GemsError, Result};
pub use gate::{GateConfig, TaskSignal};
pub use null_space::{KnowledgeBasis, KnowledgeSelection, NullSpace};
pub use optimizer::{GemsOptimizer, ParamPlan, TaskGradients, Treatment};
pub use rsvd::SvdMethod;
