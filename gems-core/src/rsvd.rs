//! Randomized SVD (Halko, Martinsson & Tropp, "Finding structure with randomness", 2011).
//!
//! Finds the top-`rank` left singular vectors of a matrix G (rows ≤ cols by convention):
//! a Gaussian sketch Y = GΩ with `rank + oversample` columns, `power_iterations` rounds of
//! Y ← G(GᵀY) with re-orthonormalisation between every product, Q = orth(Y), B = QᵀG, the
//! eigen-decomposition of BBᵀ on the host in float64, U = Q·Ũ[:, :rank].
//!
//! Every product with G runs on the device through Burn; only (r + p)-sized matrices travel to
//! the host. Orthonormalisation uses the Gram matrix (SVQB: Q ← Y·V·Λ^-½ from YᵀY = VΛVᵀ),
//! repeated until QᵀQ = I to float32 precision, because Householder QR builds an m×m factor
//! and is unusably slow for tall sketches (see PLATFORM.md). Columns that the sketch cannot
//! support (rank-deficient G) are replaced by random directions orthogonal to the rest, so a
//! basis always has exactly the requested width.

use burn::tensor::{Device, Tensor, TensorData};
use faer::Mat;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{GemsError, Result};
use crate::host::{symmetric_eigen_descending, thin_svd, to_device, to_host};

/// How bases are computed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SvdMethod {
    /// Randomized SVD: products on the device, only the sketch-sized problem on the host.
    Randomized {
        /// Extra sketch columns beyond the rank (p); 8 is the usual choice.
        oversample: usize,
        /// Power iterations (q); each one sharpens a slowly decaying spectrum at the cost of two
        /// more products with the matrix.
        power_iterations: usize,
    },
    /// Exact SVD of the whole matrix on the host in float64. For tests and tiny matrices: it
    /// copies the matrix to the host.
    Exact,
}

impl Default for SvdMethod {
    fn default() -> Self {
        SvdMethod::Randomized {
            oversample: 8,
            power_iterations: 1,
        }
    }
}

/// Orthonormality reached when every entry of QᵀQ − I is below this (float32 Gram precision).
const ORTHONORMALITY_TOLERANCE: f64 = 2e-6;
/// Gram eigenvalues below this fraction of the largest carry no direction and are dropped.
const DROP_RELATIVE_EIGENVALUE: f64 = 1e-10;
/// A Gram matrix whose eigenvalues are within this ratio is orthonormalised by one pass.
const WELL_CONDITIONED_GRAM: f64 = 4.0;
/// Gram-based passes before giving up on reaching the tolerance (two suffice in practice).
const MAX_ORTHONORMALISATION_PASSES: usize = 4;

/// The top-`rank` left singular vectors of `matrix` (shape `[rows, cols]`), as a
/// `[rows, rank]` tensor with orthonormal columns.
///
/// With `exclude` (a `[rows, e]` orthonormal basis), the result is also made orthogonal to it;
/// `rank + e` must not exceed `rows`. Fails, without side effects, on a zero or non-finite
/// matrix.
pub fn top_left_singular_vectors(
    matrix: Tensor<2>,
    rank: usize,
    method: &SvdMethod,
    exclude: Option<&Tensor<2>>,
    rng: &mut ChaCha8Rng,
) -> Result<Tensor<2>> {
    let [rows, _] = matrix.dims();
    let device = matrix.device();
    let excluded = exclude.map_or(0, |basis| basis.dims()[1]);
    if rank == 0 || rank + excluded > rows {
        return Err(GemsError::Decomposition(format!(
            "cannot find {rank} directions orthogonal to {excluded} others in dimension {rows}"
        )));
    }
    let found = match method {
        SvdMethod::Exact => exact_left_singular_vectors(matrix, rank)?,
        SvdMethod::Randomized {
            oversample,
            power_iterations,
        } => randomized_left_singular_vectors(matrix, rank, *oversample, *power_iterations, rng)?,
    };
    let found = match exclude {
        Some(excluded_basis) => outside(found, excluded_basis),
        None => Some(found),
    };
    complete_basis(found, rows, rank, exclude, rng, &device)
}

/// An orthonormal `[rows, width]` basis for when no decomposition is available: what is left
/// of `start` outside `exclude`, completed with random directions (all random without `start`).
pub fn fallback_basis(
    start: Option<Tensor<2>>,
    rows: usize,
    width: usize,
    exclude: Option<&Tensor<2>>,
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> Result<Tensor<2>> {
    let start = start.and_then(|basis| match exclude {
        Some(excluded_basis) => outside(basis, excluded_basis),
        None => Some(basis),
    });
    complete_basis(start, rows, width, exclude, rng, device)
}

fn exact_left_singular_vectors(matrix: Tensor<2>, rank: usize) -> Result<Tensor<2>> {
    let device = matrix.device();
    let (left, singular_values) = thin_svd(&to_host(matrix))?;
    if !singular_values.first().is_some_and(|&s| s > 0.0) {
        return Err(GemsError::Decomposition("the matrix is zero".into()));
    }
    let kept = rank.min(left.ncols());
    let top = Mat::from_fn(left.nrows(), kept, |i, j| left[(i, j)]);
    Ok(to_device(&top, &device))
}

fn randomized_left_singular_vectors(
    matrix: Tensor<2>,
    rank: usize,
    oversample: usize,
    power_iterations: usize,
    rng: &mut ChaCha8Rng,
) -> Result<Tensor<2>> {
    let [rows, cols] = matrix.dims();
    let device = matrix.device();
    let width = (rank + oversample).min(rows);
    let zero = || GemsError::Decomposition("the matrix is zero or not finite".into());

    let omega = gaussian_matrix(cols, width, rng, &device);
    let mut range = orthonormalize(matrix.clone().matmul(omega)).ok_or_else(zero)?;
    for _ in 0..power_iterations {
        let co_range = orthonormalize(matrix.clone().transpose().matmul(range)).ok_or_else(zero)?;
        range = orthonormalize(matrix.clone().matmul(co_range)).ok_or_else(zero)?;
    }
    let projected = range.clone().transpose().matmul(matrix);
    let small = to_host(projected.clone().matmul(projected.transpose()));
    let (values, vectors) = symmetric_eigen_descending(&small)?;
    if !values.first().is_some_and(|&v| v > 0.0) {
        return Err(zero());
    }
    let kept = rank.min(values.len());
    let rotation = Mat::from_fn(vectors.nrows(), kept, |i, j| vectors[(i, j)]);
    Ok(range.matmul(to_device(&rotation, &device)))
}

/// A `[rows, cols]` matrix of independent standard normal entries, drawn on the host from `rng`
/// (so that the same seed gives the same sketch on every backend).
pub fn gaussian_matrix(
    rows: usize,
    cols: usize,
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> Tensor<2> {
    let mut values = Vec::with_capacity(rows * cols);
    while values.len() < rows * cols {
        // Box–Muller: two uniforms in (0, 1] give two independent normals.
        let u1: f64 = 1.0 - rng.random::<f64>();
        let u2: f64 = rng.random::<f64>();
        let radius = (-2.0 * u1.ln()).sqrt();
        let angle = std::f64::consts::TAU * u2;
        values.push((radius * angle.cos()) as f32);
        values.push((radius * angle.sin()) as f32);
    }
    values.truncate(rows * cols);
    Tensor::from_data(TensorData::new(values, [rows, cols]), device)
}

/// A seeded `[rows, cols]` matrix shaped like a gradient, for benchmarks and tests of the
/// decompositions: singular values σ_i = 1/(1+i) (a power law) and random singular vectors.
pub fn power_law_matrix(rows: usize, cols: usize, seed: u64, device: &Device) -> Tensor<2> {
    let mut rng = <ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed);
    let mut gaussian = |r: usize, c: usize| {
        Mat::from_fn(r, c, |_, _| {
            let u1: f64 = 1.0 - rng.random::<f64>();
            let u2: f64 = rng.random::<f64>();
            (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
        })
    };
    let k = rows.min(cols);
    let left = gaussian(rows, k).qr().compute_thin_Q();
    let right = gaussian(cols, k).qr().compute_thin_Q();
    let scaled = Mat::from_fn(rows, k, |i, j| left[(i, j)] / (1.0 + j as f64));
    to_device(&(scaled * right.transpose()), device)
}

/// Orthonormal columns spanning (numerically) the same space as `columns`, by repeated Gram
/// eigen-decomposition. Columns the input cannot support are dropped, so the result may be
/// narrower. `None` when the input is zero or not finite.
///
/// When every column is kept, each pass is the symmetric (Löwdin) orthonormalisation
/// Y·(YᵀY)^-½, the orthonormal matrix closest to Y: columns that are already nearly orthonormal
/// stay where they are, so a basis keeps its alignment with the singular directions it came from
/// (the plain whitening Y·V·Λ^-½ would rotate it by the eigenvectors of YᵀY ≈ I, an arbitrary
/// rotation set by rounding noise, to which Adam's per-coordinate normalisation is sensitive).
pub fn orthonormalize(mut columns: Tensor<2>) -> Option<Tensor<2>> {
    for pass in 0..MAX_ORTHONORMALISATION_PASSES {
        let gram = to_host(columns.clone().transpose().matmul(columns.clone()));
        if pass > 0 && max_deviation_from_identity(&gram) <= ORTHONORMALITY_TOLERANCE {
            return Some(columns);
        }
        let (values, vectors) = symmetric_eigen_descending(&gram).ok()?;
        let largest = *values.first()?;
        if !(largest > 0.0 && largest.is_finite()) {
            return None;
        }
        let kept: Vec<usize> = (0..values.len())
            .filter(|&j| values[j] > DROP_RELATIVE_EIGENVALUE * largest)
            .collect();
        let whitening = Mat::from_fn(gram.nrows(), kept.len(), |i, c| {
            vectors[(i, kept[c])] / values[kept[c]].sqrt()
        });
        let transform = if kept.len() == values.len() {
            // (YᵀY)^-½ = V·Λ^-½·Vᵀ.
            whitening * vectors.transpose()
        } else {
            whitening
        };
        let device = columns.device();
        columns = columns.matmul(to_device(&transform, &device));
        if kept.len() == values.len() && largest <= WELL_CONDITIONED_GRAM * values[kept.len() - 1] {
            // κ(Y)² ≤ 4: one float32 pass leaves QᵀQ − I at rounding level, and the check
            // would cost one more read back from the device (a synchronisation on a GPU).
            break;
        }
    }
    Some(columns)
}

/// `columns − basis·(basisᵀ·columns)`: removes the part of `columns` inside span(`basis`).
pub fn remove_component(columns: Tensor<2>, basis: &Tensor<2>) -> Tensor<2> {
    let inside = basis
        .clone()
        .matmul(basis.clone().transpose().matmul(columns.clone()));
    columns - inside
}

/// Orthonormal directions spanning the part of `columns` outside span(`excluded`), or `None`
/// if nothing is left. Removal and orthonormalisation run twice: when `columns` lies almost
/// inside `excluded`, what the first round leaves is rounding noise that still overlaps it.
fn outside(columns: Tensor<2>, excluded: &Tensor<2>) -> Option<Tensor<2>> {
    let once = orthonormalize(remove_component(columns, excluded))?;
    orthonormalize(remove_component(once, excluded))
}

/// Appends random orthonormal directions to `basis` (orthogonal to it and to `exclude`) until
/// it has `width` columns; keeps the first `width` columns of a wider one.
fn complete_basis(
    basis: Option<Tensor<2>>,
    rows: usize,
    width: usize,
    exclude: Option<&Tensor<2>>,
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> Result<Tensor<2>> {
    let have = basis.as_ref().map_or(0, |b| b.dims()[1]);
    if let Some(basis) = &basis
        && have >= width
    {
        return Ok(basis.clone().slice([0..rows, 0..width]));
    }
    let mut fill = gaussian_matrix(rows, width - have, rng, device);
    // Two rounds of removal: the second mops up what float32 rounding left of the first.
    for _ in 0..2 {
        if let Some(basis) = &basis {
            fill = remove_component(fill, basis);
        }
        if let Some(excluded_basis) = exclude {
            fill = remove_component(fill, excluded_basis);
        }
    }
    let fill = orthonormalize(fill)
        .filter(|f| f.dims()[1] == width - have)
        .ok_or_else(|| {
            GemsError::Decomposition("could not complete the basis with random directions".into())
        })?;
    Ok(match basis {
        Some(basis) => Tensor::cat(vec![basis, fill], 1),
        None => fill,
    })
}

/// Largest absolute entry of `gram − I`.
fn max_deviation_from_identity(gram: &Mat<f64>) -> f64 {
    let mut worst: f64 = 0.0;
    for i in 0..gram.nrows() {
        for j in 0..gram.ncols() {
            let target = if i == j { 1.0 } else { 0.0 };
            worst = worst.max((gram[(i, j)] - target).abs());
        }
    }
    worst
}

/// Fraction of `matrix`'s squared Frobenius norm inside span(`basis`): ‖basisᵀ·matrix‖² / ‖matrix‖².
pub fn captured_energy(basis: &Tensor<2>, matrix: &Tensor<2>) -> f64 {
    let inside: f64 = basis
        .clone()
        .transpose()
        .matmul(matrix.clone())
        .square()
        .sum()
        .into_scalar::<f32>() as f64;
    let total: f64 = matrix.clone().square().sum().into_scalar::<f32>() as f64;
    if total > 0.0 { inside / total } else { 1.0 }
}
