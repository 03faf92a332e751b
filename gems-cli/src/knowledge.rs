//! The knowledge bases of null-space projection: input covariances of every projected layer,
//! collected by running the frozen model over general-domain text.

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use gems_core::{CovarianceAccumulator, KnowledgeSelection, NullSpace};
use gems_models::{Backbone, LinearInputObserver};

use crate::error::Result;
use crate::experiment::Experiment;
use crate::general_corpus;

/// Paragraphs per forward pass while collecting statistics.
const BATCH: usize = 8;
/// Tokens kept per paragraph.
const MAX_TOKENS: usize = 128;

/// Feeds a layer's inputs to the accumulator under its weight's path.
struct CovarianceObserver<'a>(&'a mut CovarianceAccumulator);

impl LinearInputObserver for CovarianceObserver<'_> {
    fn observe(&mut self, path: &str, inputs: Tensor<2>) {
        self.0.observe(&format!("{path}.weight"), inputs);
    }
}

/// Knowledge bases of every attention and MLP weight of `backbone` from the general corpus
/// (the embedded default when `files` is empty; at most `token_budget` tokens), held-out
/// paragraphs excluded.
pub fn collect(
    backbone: &Backbone,
    experiment: &Experiment,
    files: &[std::path::PathBuf],
    token_budget: Option<usize>,
    selection: &KnowledgeSelection,
    device: &Device,
) -> Result<NullSpace> {
    let (paragraphs, _held_out) =
        general_corpus::split_held_out(general_corpus::load(files, token_budget)?);
    let examples = general_corpus::lm_examples(experiment, &paragraphs, MAX_TOKENS)?;
    let frozen = backbone.valid();
    let inference = device.clone().without_autodiff();
    let mut accumulator = CovarianceAccumulator::new();
    for chunk in examples.chunks(BATCH) {
        let batch = experiment.training_batch(chunk, &inference)?;
        frozen.forward_observed(&batch, &mut CovarianceObserver(&mut accumulator))?;
    }
    let null_space = accumulator.into_null_space(selection, 0)?;
    let kept: usize = null_space.iter().map(|(_, basis)| basis.rank()).sum();
    tracing::info!(
        layers = null_space.len(),
        paragraphs = examples.len(),
        "knowledge bases: {kept} protected input directions in all"
    );
    Ok(null_space)
}
