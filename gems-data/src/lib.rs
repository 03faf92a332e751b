//! # gems-data
//!
//! Everything between raw logs and metrics for GEMS (unified generative search and
//! recommendation): the unified JSONL format (`gems-data/FORMAT.md`), converters from Qilin,
//! UniSAR's Amazon, KuaiSAR and MovieLens, the seeded synthetic default dataset, leave-one-out
//! splits with fixed sampled negatives, prompts, item identifiers (atomic, semantic, title), a
//! self-trained word-level tokenizer, host-side batching for T5 and Qwen2, ranking metrics and the
//! model-free baselines (popularity, BM25, random).
//!
//! The crate does not depend on Burn: batches are plain row-major vectors.
//!
//! Typical flow (what `gems data` does):
//!
//! ```no_run
//! use gems_data::{dataset, synthetic, ValidationPolicy};
//! # fn main() -> gems_data::Result<()> {
//! let converted = synthetic::generate(&synthetic::SyntheticConfig::default());
//! let (prepared, report) = dataset::prepare(converted, dataset::PrepareOptions::default())?;
//! prepared.write(std::path::Path::new("data/synthetic"))?;
//! let (loaded, validation) = dataset::load_dataset(std::path::Path::new("data/synthetic"), ValidationPolicy::Strict)?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod baselines;
pub mod batch;
pub mod convert;
pub mod dataset;
pub mod error;
pub mod item_ids;
pub mod kmeans;
pub mod metrics;
pub mod negatives;
pub mod prompt;
pub mod reader;
pub mod schema;
pub mod split;
pub mod stats;
pub mod synthetic;
pub mod text;
pub mod text_embedding;
pub mod tokenizer;
pub mod validate;
pub mod validation_report;

pub use error::{DataError, Result};
pub use item_ids::{ItemIdScheme, ItemIdentifiers, SemanticIdOptions};
pub use metrics::{MetricsReport, Protocol};
pub use prompt::PromptTemplates;
pub use schema::{DatasetManifest, Item, ItemId, Request, Task, UserId};
pub use stats::DatasetStats;
pub use text_embedding::fnv1a;
pub use validate::{ValidationPolicy, ValidationReport};
