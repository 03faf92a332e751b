//! Input covariances of the projected layers, streamed batch by batch, and their knowledge
//! bases computed at scale.
//!
//! The knowledge basis of a weight is the top of the spectrum of C = E[x xᵀ] (see
//! [`crate::null_space`]). Three things keep that affordable for wide layers and many of them:
//!
//! - **The smaller side.** While fewer rows N than input dimensions d have been seen, the rows
//!   X (`[N, d]`) are kept instead of the d×d sum. C = XᵀX/N and K = XXᵀ/N share their
//!   non-zero eigenvalues, and an eigenvector v of K gives the eigenvector Xᵀv/√(Nλ) of C, so
//!   the host eigen-problem is min(N, d)-sized, and only the k selected eigenvectors are lifted
//!   back, by one product on the device (`[d, N]·[N, k]`) and a Cholesky re-orthonormalization.
//! - **Shared inputs.** Weights that read the same inputs (`q`, `k` and `v` of one attention;
//!   `wi_0` and `wi_1` of a gated MLP) have bit-identical statistics: they are decomposed once.
//! - **Parallel layers.** The host eigen-problems of several layers run at once on the rayon
//!   pool; device work stays on the calling thread, and at most one problem per thread is on
//!   the host at a time, so host memory stays bounded.
//!
//! Progress is reported through a callback, and every decomposition as a `tracing` debug event.

use std::collections::{BTreeMap, HashMap};

use burn::tensor::Tensor;
use faer::Mat;
use rayon::prelude::*;

use crate::error::{GemsError, Result};
use crate::host::{symmetric_eigen_descending, to_device, to_host};
use crate::null_space::{KnowledgeBasis, KnowledgeSelection, NullSpace};
use crate::rsvd::cholesky_orthonormalize;

/// Relative size below which an eigenvalue of the rows' Gram matrix is rounding noise.
const ROWS_NOISE_FLOOR: f64 = 1e-6;

/// What the accumulator holds for one weight.
// One value per projected weight, so the size of a `Tensor` handle (256 bytes) does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
enum Statistics {
    /// The input rows themselves, while there are fewer of them than input dimensions.
    Rows(Vec<Tensor<2>>),
    /// Σ x xᵀ, once the rows reach the input width.
    Sum(Tensor<2>),
}

#[derive(Clone, Debug)]
struct LayerStatistics {
    statistics: Statistics,
    rows: u64,
    /// The width of the inputs (the first batch's; later ones must match).
    width: usize,
}

/// Streaming accumulator of uncentred input covariances, one per weight.
///
/// Feed it the inputs each projected layer sees on general-domain text, batch after batch,
/// then turn it into a [`NullSpace`].
#[derive(Clone, Debug, Default)]
pub struct CovarianceAccumulator {
    layers: BTreeMap<String, LayerStatistics>,
    /// Batches left out because their width differs from the earlier inputs of their weight;
    /// [`into_null_space`](Self::into_null_space) refuses to go on with any.
    mismatches: Vec<String>,
}

/// Where the computation of knowledge bases stands, as handed to a progress callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KnowledgeProgress {
    /// Eigen-problems solved so far.
    pub done: usize,
    /// Eigen-problems in all (weights with identical inputs share one).
    pub total: usize,
}

impl CovarianceAccumulator {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the inputs (`[rows, d_in]`, one row per token) the weight at `path` received.
    /// Inputs of another width than the earlier ones of `path` are left out, and make
    /// [`into_null_space`](Self::into_null_space) fail naming the path.
    pub fn observe(&mut self, path: &str, inputs: Tensor<2>) {
        let [rows, width] = inputs.dims();
        let layer = self
            .layers
            .entry(path.to_string())
            .or_insert_with(|| LayerStatistics {
                statistics: Statistics::Rows(Vec::new()),
                rows: 0,
                width,
            });
        if width != layer.width {
            self.mismatches.push(format!(
                "`{path}` received inputs of width {width} after inputs of width {}",
                layer.width
            ));
            return;
        }
        layer.rows += rows as u64;
        let statistics =
            match std::mem::replace(&mut layer.statistics, Statistics::Rows(Vec::new())) {
                Statistics::Rows(mut batches) => {
                    batches.push(inputs);
                    if layer.rows < width as u64 {
                        Statistics::Rows(batches)
                    } else {
                        let all = Tensor::cat(batches, 0);
                        Statistics::Sum(all.clone().transpose().matmul(all))
                    }
                }
                Statistics::Sum(sum) => {
                    Statistics::Sum(sum + inputs.clone().transpose().matmul(inputs))
                }
            };
        layer.statistics = statistics;
    }

    /// Rows observed for `path`.
    pub fn observations(&self, path: &str) -> u64 {
        self.layers.get(path).map_or(0, |layer| layer.rows)
    }

    /// E[x xᵀ] for `path`, if anything was observed.
    pub fn covariance(&self, path: &str) -> Option<Tensor<2>> {
        let layer = self.layers.get(path).filter(|layer| layer.rows > 0)?;
        let sum = match &layer.statistics {
            Statistics::Rows(batches) => {
                let rows = Tensor::cat(batches.clone(), 0);
                rows.clone().transpose().matmul(rows)
            }
            Statistics::Sum(sum) => sum.clone(),
        };
        Some(sum.div_scalar(layer.rows as f64))
    }

    /// Paths observed so far.
    pub fn paths(&self) -> impl Iterator<Item = &String> {
        self.layers.keys()
    }

    /// The sum of x xᵀ and the rows observed for `path` (for summing accumulators across
    /// devices, [`crate::distributed`]).
    pub(crate) fn gram(&self, path: &str) -> Option<(Tensor<2>, u64)> {
        let layer = self.layers.get(path)?;
        let sum = match &layer.statistics {
            Statistics::Rows(batches) if batches.is_empty() => return None,
            Statistics::Rows(batches) => {
                let rows = Tensor::cat(batches.clone(), 0);
                rows.clone().transpose().matmul(rows)
            }
            Statistics::Sum(sum) => sum.clone(),
        };
        Some((sum, layer.rows))
    }

    /// Sets the sum of x xᵀ and the rows observed for `path`.
    pub(crate) fn insert_gram(&mut self, path: &str, sum: Tensor<2>, rows: u64) {
        let width = sum.dims()[0];
        self.layers.insert(
            path.to_string(),
            LayerStatistics {
                statistics: Statistics::Sum(sum),
                rows,
                width,
            },
        );
    }

    /// The first batch left out for its width, if any (see [`observe`](Self::observe)).
    pub(crate) fn mismatch(&self) -> Option<&str> {
        self.mismatches.first().map(String::as_str)
    }

    /// The knowledge bases of every observed weight. `input_axis` is the input side of the
    /// weights (0 for Burn `Linear`).
    pub fn into_null_space(
        self,
        selection: &KnowledgeSelection,
        input_axis: usize,
    ) -> Result<NullSpace> {
        self.into_null_space_with_progress(selection, input_axis, &|_| {})
    }

    /// [`CovarianceAccumulator::into_null_space`], calling `progress` after every solved
    /// eigen-problem.
    pub fn into_null_space_with_progress(
        self,
        selection: &KnowledgeSelection,
        input_axis: usize,
        progress: &dyn Fn(KnowledgeProgress),
    ) -> Result<NullSpace> {
        selection.validate()?;
        if input_axis > 1 {
            return Err(GemsError::InvalidConfig(format!(
                "input_axis must be 0 or 1 (the axis of a 2-D weight), not {input_axis}"
            )));
        }
        if let Some(mismatch) = self.mismatch() {
            return Err(GemsError::InvalidConfig(format!(
                "knowledge inputs: {mismatch}"
            )));
        }
        let mut problems = Self::distinct_problems(self.layers)?;
        // Largest first, so that the problems solved side by side are of similar sizes.
        problems.sort_by_key(|problem| std::cmp::Reverse(problem.size()));
        let total = problems.len();
        let mut null_space = NullSpace::new();
        let mut done = 0;
        let threads = rayon::current_num_threads().max(1);
        for chunk in problems.chunks(threads) {
            // Device to host one at a time; the host problems side by side.
            let reduced: Vec<(Mat<f64>, f64, &str)> = chunk
                .iter()
                .map(|p| (p.reduced(), p.noise_floor(), p.paths[0].as_str()))
                .collect();
            let spectra: Vec<Result<Spectrum>> = reduced
                .into_par_iter()
                .map(|(matrix, noise_floor, path)| {
                    Spectrum::top(&matrix, selection, noise_floor)
                        .map_err(|e| GemsError::Decomposition(format!("{path}: {e}")))
                })
                .collect();
            for (problem, spectrum) in chunk.iter().zip(spectra) {
                let spectrum = spectrum?;
                let basis = problem.lift(&spectrum)?;
                tracing::debug!(
                    paths = ?problem.paths,
                    size = problem.size(),
                    kept = spectrum.values.len(),
                    "knowledge basis"
                );
                for path in &problem.paths {
                    null_space.insert(
                        path.clone(),
                        KnowledgeBasis {
                            basis: basis.clone(),
                            input_axis,
                            retained_energy: spectrum.retained_energy,
                        },
                    );
                }
                done += 1;
                progress(KnowledgeProgress { done, total });
            }
        }
        Ok(null_space)
    }

    /// One eigen-problem per distinct statistics: weights whose inputs were bit-identical share
    /// one (recognised by a 128-bit hash of the accumulated values).
    fn distinct_problems(layers: BTreeMap<String, LayerStatistics>) -> Result<Vec<Problem>> {
        let mut problems: Vec<Problem> = Vec::new();
        let mut by_hash: HashMap<u128, usize> = HashMap::new();
        for (path, layer) in layers {
            if layer.rows == 0 {
                continue;
            }
            let statistic = match layer.statistics {
                Statistics::Rows(batches) => Statistic::Rows(Tensor::cat(batches, 0)),
                Statistics::Sum(sum) => Statistic::Sum(sum),
            };
            let hash = statistic.fingerprint(layer.rows)?;
            match by_hash.get(&hash) {
                Some(&index) => problems[index].paths.push(path),
                None => {
                    by_hash.insert(hash, problems.len());
                    problems.push(Problem {
                        paths: vec![path],
                        statistic,
                        rows: layer.rows,
                    });
                }
            }
        }
        Ok(problems)
    }
}

/// The accumulated statistic of one distinct input stream.
enum Statistic {
    /// All rows, `[N, d]` with N < d.
    Rows(Tensor<2>),
    /// Σ x xᵀ, `[d, d]`.
    Sum(Tensor<2>),
}

impl Statistic {
    fn tensor(&self) -> &Tensor<2> {
        match self {
            Statistic::Rows(tensor) | Statistic::Sum(tensor) => tensor,
        }
    }

    /// A hash of the kind, shape, row count and values; non-finite values are an error.
    fn fingerprint(&self, rows: u64) -> Result<u128> {
        let tensor = self.tensor();
        let values = tensor
            .to_data()
            .try_into_vec_as::<f32>()
            .expect("a float tensor converts to f32");
        if values.iter().any(|v| !v.is_finite()) {
            return Err(GemsError::Decomposition(
                "input statistics have non-finite entries (NaN or infinite activations?)".into(),
            ));
        }
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        hasher.update(&[matches!(self, Statistic::Rows(_)) as u8]);
        for dim in tensor.dims() {
            hasher.update(&(dim as u64).to_le_bytes());
        }
        hasher.update(&rows.to_le_bytes());
        for value in values {
            hasher.update(&value.to_le_bytes());
        }
        Ok(hasher.digest128())
    }
}

/// One eigen-problem and the weights that share it.
struct Problem {
    paths: Vec<String>,
    statistic: Statistic,
    rows: u64,
}

impl Problem {
    /// Side of the host eigen-problem: min(N, d).
    fn size(&self) -> usize {
        match &self.statistic {
            Statistic::Rows(rows) => rows.dims()[0],
            Statistic::Sum(sum) => sum.dims()[0],
        }
    }

    /// Eigenvalues at most this fraction of the largest are rounding noise and never lifted:
    /// from the rows' Gram matrix (float32 on the device) an eigenvector of a zero eigenvalue
    /// has no image in the input space. The d×d covariance keeps every selected direction.
    fn noise_floor(&self) -> f64 {
        match self.statistic {
            Statistic::Rows(_) => ROWS_NOISE_FLOOR,
            Statistic::Sum(_) => 0.0,
        }
    }

    /// The symmetric matrix whose spectrum is that of C (non-zero part): C itself, or the
    /// rows' Gram matrix XXᵀ/N, formed on the device and copied to the host.
    fn reduced(&self) -> Mat<f64> {
        let scale = 1.0 / self.rows as f64;
        to_host(match &self.statistic {
            Statistic::Rows(rows) => rows
                .clone()
                .matmul(rows.clone().transpose())
                .mul_scalar(scale),
            Statistic::Sum(sum) => sum.clone().mul_scalar(scale),
        })
    }

    /// The `[d, k]` orthonormal basis of the kept eigenvectors of C, on the statistic's device.
    fn lift(&self, spectrum: &Spectrum) -> Result<Option<Tensor<2>>> {
        let kept = spectrum.values.len();
        if kept == 0 {
            return Ok(None);
        }
        let device = self.statistic.tensor().device();
        match &self.statistic {
            Statistic::Sum(_) => Ok(Some(to_device(&spectrum.vectors, &device))),
            Statistic::Rows(rows) => {
                // u = Xᵀ v / √(N λ): unit eigenvectors of XᵀX/N from those of XXᵀ/N.
                let n = self.rows as f64;
                let scaled = Mat::from_fn(spectrum.vectors.nrows(), kept, |i, j| {
                    spectrum.vectors[(i, j)] / (n * spectrum.values[j]).sqrt()
                });
                let lifted = rows.clone().transpose().matmul(to_device(&scaled, &device));
                // Cholesky QR, repeated, brings the columns to orthonormality at float32
                // precision even when the lifted columns of small eigenvalues carry rounding
                // error.
                cholesky_orthonormalize(lifted).map(Some).ok_or_else(|| {
                    GemsError::Decomposition(
                        "lifted knowledge directions are linearly dependent".into(),
                    )
                })
            }
        }
    }
}

/// The kept part of a spectrum: eigenvalues (non-increasing) and their eigenvectors.
struct Spectrum {
    values: Vec<f64>,
    vectors: Mat<f64>,
    retained_energy: f64,
}

impl Spectrum {
    /// The eigenpairs `selection` keeps of the symmetric `matrix`, in float64, none of them at
    /// or below `noise_floor` times the largest eigenvalue.
    fn top(matrix: &Mat<f64>, selection: &KnowledgeSelection, noise_floor: f64) -> Result<Self> {
        let (values, vectors) = symmetric_eigen_descending(matrix)?;
        let values: Vec<f64> = values.into_iter().map(|v| v.max(0.0)).collect();
        let floor = noise_floor * values.first().copied().unwrap_or(0.0);
        let above_floor = values.iter().take_while(|&&v| v > floor).count();
        let kept = selection.count(&values).min(above_floor);
        let trace: f64 = values.iter().sum();
        let retained_energy = if trace > 0.0 {
            values[..kept].iter().sum::<f64>() / trace
        } else {
            0.0
        };
        Ok(Self {
            vectors: vectors.as_ref().subcols(0, kept).to_owned(),
            values: values[..kept].to_vec(),
            retained_energy,
        })
    }
}
