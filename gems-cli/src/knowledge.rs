//! The knowledge bases of null-space projection: input covariances of every projected layer,
//! collected by running the frozen model over general-domain text.

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use gems_core::{CovarianceAccumulator, DataParallel, Exchange, KnowledgeSelection, NullSpace};
use gems_data::batch::EncodedExample;
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
/// (the embedded default when `files` is empty), held-out paragraphs excluded.
pub fn collect(
    backbone: &Backbone,
    experiment: &Experiment,
    files: &[std::path::PathBuf],
    selection: &KnowledgeSelection,
    device: &Device,
) -> Result<NullSpace> {
    let parallel = DataParallel::new(vec![device.clone()], Exchange::DeviceCopy)?;
    let mut null_spaces = collect_on(backbone, experiment, files, selection, &parallel)?;
    Ok(null_spaces.remove(0))
}

/// The knowledge bases for every replica of a data-parallel run: each device runs its share of
/// the corpus batches (batch i on replica i mod n), the covariances are summed across the
/// devices once, and each replica builds the same bases from the sum on its own device.
pub fn collect_on(
    backbone: &Backbone,
    experiment: &Experiment,
    files: &[std::path::PathBuf],
    selection: &KnowledgeSelection,
    parallel: &DataParallel,
) -> Result<Vec<NullSpace>> {
    let (paragraphs, _held_out) = general_corpus::split_held_out(general_corpus::load(files)?);
    let examples = experiment.lm_examples(&paragraphs, MAX_TOKENS)?;
    let batches: Vec<&[EncodedExample]> = examples.chunks(BATCH).collect();
    let frozen = backbone.valid();
    let mut shares = Vec::new();
    for (device, assigned) in parallel
        .devices()
        .iter()
        .zip(parallel.assign(batches.len()))
    {
        let replica = frozen.clone().fork(device);
        let mut accumulator = CovarianceAccumulator::new();
        for index in assigned {
            let batch = experiment.training_batch(batches[index], device)?;
            replica.forward_observed(&batch, &mut CovarianceObserver(&mut accumulator))?;
        }
        shares.push(accumulator);
    }
    let null_spaces = parallel
        .sum_covariances(shares)?
        .into_iter()
        .map(|covariances| covariances.into_null_space(selection, 0))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let kept: usize = null_spaces[0].iter().map(|(_, basis)| basis.rank()).sum();
    tracing::info!(
        layers = null_spaces[0].len(),
        paragraphs = examples.len(),
        devices = parallel.replicas(),
        "knowledge bases: {kept} protected input directions in all"
    );
    Ok(null_spaces)
}
