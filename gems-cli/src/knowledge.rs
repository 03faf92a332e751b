//! The knowledge bases of null-space projection: input covariances of every projected layer,
//! collected by running the frozen model over general-domain text, and cached on disk.
//!
//! The cache (`knowledge-cache/` under the user's cache directory, `$XDG_CACHE_HOME` on
//! Linux; or `knowledge_cache` of the settings; off with `no_knowledge_cache`) holds one file
//! per key: a hash of the model (configuration and every weight), the corpus as tokenized,
//! the selection rule and gems-core's format version. A file that does not read back exactly
//! (checksum, key, shapes) is recomputed with a warning, never used.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};
use gems_core::knowledge_file::Fingerprint;
use gems_core::{CovarianceAccumulator, DataParallel, Exchange, KnowledgeSelection, NullSpace};
use gems_data::batch::EncodedExample;
use gems_models::{Backbone, LinearInputObserver};

use crate::error::Result;
use crate::experiment::Experiment;
use crate::settings::TrainSettings;
use crate::{general_corpus, progress};

/// Paragraphs per forward pass while collecting statistics.
const BATCH: usize = 8;
/// Tokens kept per paragraph.
const MAX_TOKENS: usize = 128;
/// The input side of Burn `Linear` weights (`[d_in, d_out]`).
const INPUT_AXIS: usize = 0;

/// Feeds a layer's inputs to the accumulator under its weight's path.
struct CovarianceObserver<'a>(&'a mut CovarianceAccumulator);

impl LinearInputObserver for CovarianceObserver<'_> {
    fn observe(&mut self, path: &str, inputs: Tensor<2>) {
        self.0.observe(&format!("{path}.weight"), inputs);
    }
}

/// The cache folder of a run's settings, or `None` when caching is off or no user cache
/// directory is known.
pub fn cache_directory(settings: &TrainSettings) -> Option<PathBuf> {
    if settings.no_knowledge_cache {
        return None;
    }
    settings
        .knowledge_cache
        .clone()
        .or_else(|| dirs::cache_dir().map(|d| d.join("gems-rs").join("knowledge-cache")))
}

/// Knowledge bases of every attention and MLP weight of `backbone` from the general corpus
/// (the embedded default when `files` is empty; at most `token_budget` tokens), held-out
/// paragraphs excluded; read from and written to `cache` when given.
pub fn collect(
    backbone: &Backbone,
    experiment: &Experiment,
    files: &[PathBuf],
    token_budget: Option<usize>,
    selection: &KnowledgeSelection,
    cache: Option<&Path>,
    device: &Device,
) -> Result<NullSpace> {
    let parallel = DataParallel::new(vec![device.clone()], Exchange::DeviceCopy)?;
    let mut null_spaces = collect_on(
        backbone,
        experiment,
        files,
        token_budget,
        selection,
        cache,
        &parallel,
    )?;
    Ok(null_spaces.remove(0))
}

/// The knowledge bases for every replica of a data-parallel run: each device runs its share of
/// the corpus batches (batch i on replica i mod n), the covariances are summed across the
/// devices once, and each replica builds the same bases from the sum on its own device. With
/// a `cache` folder, bases computed once for the same model, corpus and selection are read
/// back instead.
pub fn collect_on(
    backbone: &Backbone,
    experiment: &Experiment,
    files: &[PathBuf],
    token_budget: Option<usize>,
    selection: &KnowledgeSelection,
    cache: Option<&Path>,
    parallel: &DataParallel,
) -> Result<Vec<NullSpace>> {
    let started = Instant::now();
    let (paragraphs, _held_out) =
        general_corpus::split_held_out(general_corpus::load(files, token_budget)?);
    let examples = experiment.lm_examples(&paragraphs, MAX_TOKENS)?;
    let frozen = backbone.valid();
    let inference: Vec<Device> = parallel
        .devices()
        .iter()
        .map(|device| device.clone().without_autodiff())
        .collect();
    let file = cache.map(|folder| {
        folder.join(format!(
            "{}.safetensors",
            cache_key(&frozen, &examples, selection)
        ))
    });
    if let Some(file) = file.as_ref().filter(|f| f.exists()) {
        let key = key_of(file);
        let loaded: gems_core::Result<Vec<NullSpace>> = inference
            .iter()
            .map(|device| NullSpace::load(file, &key, device).and_then(|n| fits(&frozen, n, file)))
            .collect();
        match loaded {
            Ok(null_spaces) => {
                eprintln!(
                    "knowledge bases: read from the cache {} in {:.1} s",
                    file.display(),
                    started.elapsed().as_secs_f64()
                );
                return Ok(null_spaces);
            }
            Err(error) => tracing::warn!("{error}; recomputing the knowledge bases"),
        }
    }

    let batches: Vec<&[EncodedExample]> = examples.chunks(BATCH).collect();
    let bar = progress::bar(batches.len() as u64, "knowledge: covariances");
    let mut shares = Vec::new();
    for (device, assigned) in inference.iter().zip(parallel.assign(batches.len())) {
        let replica = frozen.clone().fork(device);
        let mut accumulator = CovarianceAccumulator::new();
        for index in assigned {
            let batch = experiment.training_batch(batches[index], device)?;
            replica.forward_observed(&batch, &mut CovarianceObserver(&mut accumulator))?;
            bar.inc(1);
        }
        shares.push(accumulator);
    }
    bar.finish_and_clear();
    let bar = progress::bar(0, "knowledge: eigen-problems");
    let null_spaces = parallel
        .sum_covariances(shares)?
        .into_iter()
        .map(|covariances| {
            covariances.into_null_space_with_progress(selection, INPUT_AXIS, &|p| {
                bar.set_length(p.total as u64);
                bar.set_position(p.done as u64);
            })
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    bar.finish_and_clear();
    let kept: usize = null_spaces[0].iter().map(|(_, basis)| basis.rank()).sum();
    eprintln!(
        "knowledge bases: {kept} protected input directions over {} weights from {} paragraphs, computed in {:.1} s",
        null_spaces[0].len(),
        examples.len(),
        started.elapsed().as_secs_f64()
    );
    if let Some(file) = &file {
        match null_spaces[0].save(file, &key_of(file)) {
            Ok(()) => tracing::info!("knowledge bases cached in {}", file.display()),
            Err(error) => tracing::warn!("{error}; the knowledge bases are not cached"),
        }
    }
    Ok(null_spaces)
}

/// The key a cache file is named after.
fn key_of(file: &Path) -> String {
    file.file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned())
}

/// The cache key: model configuration and weights, corpus tokens, collection constants and
/// the selection rule.
fn cache_key(
    model: &Backbone,
    examples: &[EncodedExample],
    selection: &KnowledgeSelection,
) -> String {
    struct Weights<'a>(&'a mut Fingerprint);
    impl ModuleVisitor for Weights<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.update_tensor(&param.val());
        }
    }
    let mut fingerprint = Fingerprint::new();
    fingerprint.update(model.config().to_json().to_string().as_bytes());
    for (path, shape) in gems_models::parameter_paths(model) {
        fingerprint.update(format!("{path}{shape:?}").as_bytes());
    }
    model.visit(&mut Weights(&mut fingerprint));
    for constant in [BATCH, MAX_TOKENS, INPUT_AXIS] {
        fingerprint.update(&(constant as u64).to_le_bytes());
    }
    for example in examples {
        for tokens in [&example.prompt, &example.target] {
            let bytes: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
            fingerprint.update(&bytes);
        }
    }
    fingerprint.update(
        serde_json::to_string(selection)
            .expect("selections serialise")
            .as_bytes(),
    );
    fingerprint.finish()
}

/// `null_space` when every basis belongs to a 2-D weight of `model` with as many inputs as
/// the basis has rows.
fn fits(model: &Backbone, null_space: NullSpace, file: &Path) -> gems_core::Result<NullSpace> {
    // Checkpoint layout `[d_out, d_in]`: the inputs are the last axis.
    let shapes: std::collections::HashMap<String, Vec<usize>> =
        gems_models::parameter_paths(model).into_iter().collect();
    for (path, knowledge) in null_space.iter() {
        let rows = knowledge.basis.as_ref().map(|b| b.dims()[0]);
        let inputs = shapes.get(path).filter(|s| s.len() == 2).map(|s| s[1]);
        if inputs.is_none() || rows.is_some_and(|r| Some(r) != inputs) {
            return Err(gems_core::GemsError::State {
                path: file.to_path_buf(),
                message: format!(
                    "basis of `{path}` ({rows:?} rows) does not fit the model (inputs {inputs:?})"
                ),
            });
        }
    }
    Ok(null_space)
}
