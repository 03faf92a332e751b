//! Randomized SVD (Halko, Martinsson & Tropp, "Finding structure with randomness", 2011).
//!
//! Finds the top-`rank` left singular vectors of a matrix G (rows ≤ cols by convention):
//! a Gaussian sketch Y = GΩ with `rank + oversample` columns, `power_iterations` rounds of
//! Y ← G(GᵀY) with re-orthonormalisation between every product, Q = orth(Y), B = QᵀG, the
//! eigen-decomposition of BBᵀ on the host in float64, U = Q·Ũ[:, :rank].
//!
//! Every product with G runs on the device through Burn; only (r + p)-sized matrices travel to
//! the host. Orthonormalisation works from the Gram matrix, repeated until QᵀQ = I to float32
//! precision, because Householder QR builds an m×m factor and is unusably slow for tall sketches
//! (see PLATFORM.md). A sketch, whose orientation within its span does not matter, takes
//! Cholesky QR (Q ← Y·R⁻¹ from YᵀY = RᵀR: a factorisation some hundred times cheaper than an
//! eigen-decomposition at these sizes); a basis whose columns must keep their directions takes
//! the symmetric orthonormalisation Y·(YᵀY)^-½ through the Gram's eigen-decomposition. Columns
//! that the sketch cannot support (rank-deficient G) are replaced by random directions
//! orthogonal to the rest, so a basis always has exactly the requested width.
//!
//! Directions to take out of G, on its rows (the exclusion, which the basis then avoids) or on
//! its columns ([`ProjectedMatrix`]), are taken out of the thin sketches on their way through
//! the products: the bases of `(I − EEᵀ)·G·(I − CCᵀ)` without ever forming it.

use burn::tensor::{Device, Tensor, TensorData};
use faer::Mat;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{GemsError, Result};
use crate::host::{read_values, symmetric_eigen_descending, thin_svd, to_device, to_host};

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

/// A matrix whose bases are wanted with some directions of its columns' space taken out:
/// `G·(I − CCᵀ)`, C orthonormal. Converts from a plain matrix (nothing taken out).
#[derive(Clone, Debug)]
pub struct ProjectedMatrix {
    /// G, `[rows, cols]`.
    pub matrix: Tensor<2>,
    /// C, `[cols, c]` orthonormal columns, or `None`.
    pub columns_outside: Option<Tensor<2>>,
}

impl From<Tensor<2>> for ProjectedMatrix {
    fn from(matrix: Tensor<2>) -> Self {
        Self {
            matrix,
            columns_outside: None,
        }
    }
}

/// `(I − EEᵀ)·G·(I − CCᵀ)` as an operator: the randomized SVD applies the projections to its
/// thin sketches (`4·k·(r + p)·d` operations per application, d the length of that side),
/// never forming the projected matrix (`4·k·rows·cols` per side).
struct ProjectedOperator<'a> {
    matrix: Tensor<2>,
    rows_outside: Option<&'a Tensor<2>>,
    columns_outside: Option<&'a Tensor<2>>,
}

impl ProjectedOperator<'_> {
    /// The operator times `columns` (`[cols, w]`).
    fn times(&self, columns: Tensor<2>) -> Tensor<2> {
        let columns = without(columns, self.columns_outside);
        without(self.matrix.clone().matmul(columns), self.rows_outside)
    }

    /// The operator's transpose times `rows` (`[rows, w]`).
    fn transposed_times(&self, rows: Tensor<2>) -> Tensor<2> {
        let rows = without(rows, self.rows_outside);
        without(
            self.matrix.clone().transpose().matmul(rows),
            self.columns_outside,
        )
    }

    /// The projected matrix itself (for the exact SVD, which needs it on the host).
    fn formed(&self) -> Tensor<2> {
        let rows_projected = without(self.matrix.clone(), self.rows_outside);
        without(rows_projected.transpose(), self.columns_outside).transpose()
    }
}

/// `columns` less its part inside span(`basis`), when there is a basis.
fn without(columns: Tensor<2>, basis: Option<&Tensor<2>>) -> Tensor<2> {
    match basis {
        Some(basis) => remove_component(columns, basis),
        None => columns,
    }
}

/// The top-`rank` left singular vectors of `matrix` (shape `[rows, cols]`, with the directions
/// of its `columns_outside` taken out), as a `[rows, rank]` tensor with orthonormal columns.
///
/// With `exclude` (a `[rows, e]` orthonormal basis), they are those of `(I − EEᵀ)·matrix`,
/// hence orthogonal to it; `rank + e` must not exceed `rows`. The projections are applied to the
/// sketches, not to the matrix. Fails, without side effects, on a zero or non-finite matrix
/// (or one that lies inside the directions taken out).
pub fn top_left_singular_vectors(
    matrix: impl Into<ProjectedMatrix>,
    rank: usize,
    method: &SvdMethod,
    exclude: Option<&Tensor<2>>,
    rng: &mut ChaCha8Rng,
) -> Result<Tensor<2>> {
    let ProjectedMatrix {
        matrix,
        columns_outside,
    } = matrix.into();
    let [rows, _] = matrix.dims();
    let device = matrix.device();
    let excluded = exclude.map_or(0, |basis| basis.dims()[1]);
    if rank == 0 || rank + excluded > rows {
        return Err(GemsError::Decomposition(format!(
            "cannot find {rank} directions orthogonal to {excluded} others in dimension {rows}"
        )));
    }
    let operator = ProjectedOperator {
        matrix,
        rows_outside: exclude,
        columns_outside: columns_outside.as_ref(),
    };
    let found = match method {
        SvdMethod::Exact => exact_left_singular_vectors(operator.formed(), rank)?,
        SvdMethod::Randomized {
            oversample,
            power_iterations,
        } => {
            randomized_left_singular_vectors(&operator, rank, *oversample, *power_iterations, rng)?
        }
    };
    // Orthogonal to `exclude` already up to rounding, which the orthonormalisations amplify.
    let found = match exclude {
        Some(excluded_basis) => outside(found, excluded_basis),
        None => Some(found),
    };
    complete_basis(found, rows, rank, exclude, rng, &device)
}

/// An orthonormal `[rows, width]` basis for when no decomposition is available: what is left
/// of `start` (orthonormal columns) outside `exclude`, completed with random directions (all
/// random without `start`).
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
    operator: &ProjectedOperator,
    rank: usize,
    oversample: usize,
    power_iterations: usize,
    rng: &mut ChaCha8Rng,
) -> Result<Tensor<2>> {
    let [rows, cols] = operator.matrix.dims();
    let device = operator.matrix.device();
    let width = (rank + oversample).min(rows);
    let zero = || GemsError::Decomposition("the matrix is zero or not finite".into());

    let omega = gaussian_matrix(cols, width, rng, &device);
    let mut range = orthonormalize_span(operator.times(omega)).ok_or_else(zero)?;
    for _ in 0..power_iterations {
        let co_range = orthonormalize_span(operator.transposed_times(range)).ok_or_else(zero)?;
        range = orthonormalize_span(operator.times(co_range)).ok_or_else(zero)?;
    }
    // Bᵀ = (Qᵀ·A)ᵀ for the operator A.
    let projected = operator.transposed_times(range.clone()).transpose();
    let small = to_host(projected.clone().matmul(projected.transpose()));
    let (values, vectors) = symmetric_eigen_descending(&small)?;
    if !values.first().is_some_and(|&v| v > 0.0) {
        return Err(zero());
    }
    let kept = rank.min(values.len());
    let rotation = Mat::from_fn(vectors.nrows(), kept, |i, j| vectors[(i, j)]);
    Ok(range.matmul(to_device(&rotation, &device)))
}

/// Normal pairs drawn by one thread at a time in [`gaussian_matrix`].
const PAIRS_PER_CHUNK: usize = 4096;

/// A `[rows, cols]` matrix of independent standard normal entries, drawn on the host from `rng`
/// (so that the same seed gives the same sketch on every backend).
///
/// Box–Muller turns two uniforms, four words of the stream, into two normals, so pair `i` comes
/// from words `4i..4i + 4` past the stream's position: chunks of pairs are drawn on several
/// threads, each from its own position, giving exactly the values and the final stream
/// position of drawing them one after the other.
pub fn gaussian_matrix(
    rows: usize,
    cols: usize,
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> Tensor<2> {
    let count = rows * cols;
    let pairs = count.div_ceil(2);
    let start = rng.get_word_pos();
    let origin = rng.clone();
    let mut values = vec![0f32; 2 * pairs];
    values
        .par_chunks_mut(2 * PAIRS_PER_CHUNK)
        .enumerate()
        .for_each(|(chunk, out)| {
            let mut stream = origin.clone();
            stream.set_word_pos(start + 4 * (chunk * PAIRS_PER_CHUNK) as u128);
            for pair in out.chunks_exact_mut(2) {
                // Two uniforms in (0, 1] and [0, 1) give two independent normals.
                let u1: f64 = 1.0 - stream.random::<f64>();
                let u2: f64 = stream.random::<f64>();
                let radius = (-2.0 * u1.ln()).sqrt();
                let angle = std::f64::consts::TAU * u2;
                pair[0] = (radius * angle.cos()) as f32;
                pair[1] = (radius * angle.sin()) as f32;
            }
        });
    rng.set_word_pos(start + 4 * pairs as u128);
    values.truncate(count);
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

/// Orthonormal columns spanning (numerically) the same space as `columns`, oriented however
/// Cholesky QR leaves them: for sketches and random directions, whose orientation within their
/// span does not matter. Cholesky QR, `Y·R⁻¹` with `YᵀY = RᵀR` factorised on the host in
/// float64, repeated until QᵀQ = I to float32 precision; when the Gram matrix is not
/// numerically positive definite (dependent columns), [`orthonormalize`], which drops the
/// columns the input cannot support. `None` when the input is zero or not finite.
pub fn orthonormalize_span(columns: Tensor<2>) -> Option<Tensor<2>> {
    cholesky_orthonormalize(columns.clone()).or_else(|| orthonormalize(columns))
}

/// Cholesky QR repeated until QᵀQ = I to float32 precision; `None` when a Gram matrix is not
/// finite or not numerically positive definite (a pivot at or below
/// `DROP_RELATIVE_EIGENVALUE` times its largest diagonal entry: the columns are dependent).
///
/// A pass from columns whose Gram matrix has its eigenvalues within `WELL_CONDITIONED_GRAM` of
/// each other (bounded by Gershgorin's discs: 1 ± n·max|YᵀY − I|) leaves QᵀQ − I at rounding
/// level, so it is the last: a sketch takes two passes and two reads from the device, not three.
pub(crate) fn cholesky_orthonormalize(mut columns: Tensor<2>) -> Option<Tensor<2>> {
    for pass in 0..MAX_ORTHONORMALISATION_PASSES {
        let gram = to_host(columns.clone().transpose().matmul(columns.clone()));
        let deviation = max_deviation_from_identity(&gram);
        if pass > 0 && deviation <= ORTHONORMALITY_TOLERANCE {
            return Some(columns);
        }
        let n = gram.nrows();
        let spread = n as f64 * deviation;
        let last_pass = spread < 1.0 && (1.0 + spread) <= WELL_CONDITIONED_GRAM * (1.0 - spread);
        let largest = (0..n).map(|i| gram[(i, i)]).fold(0.0, f64::max);
        if !(largest > 0.0 && largest.is_finite()) || (0..n).any(|i| !gram[(i, i)].is_finite()) {
            return None;
        }
        let factor = gram.llt(faer::Side::Lower).ok()?;
        let lower = factor.L();
        let dependent = |i: usize| {
            let pivot = lower[(i, i)].powi(2);
            pivot.is_nan() || pivot <= DROP_RELATIVE_EIGENVALUE * largest
        };
        if (0..n).any(dependent) {
            return None;
        }
        // Y ← Y·L⁻ᵀ, which makes (Y·L⁻ᵀ)ᵀ(Y·L⁻ᵀ) = L⁻¹·YᵀY·L⁻ᵀ = I.
        let mut inverse = Mat::<f64>::identity(n, n);
        faer::linalg::triangular_solve::solve_lower_triangular_in_place(
            lower,
            inverse.as_mut(),
            faer::Par::Seq,
        );
        let device = columns.device();
        columns = columns.matmul(to_device(&inverse.transpose().to_owned(), &device));
        if last_pass {
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

/// Orthonormal directions spanning the part of `basis` (orthonormal columns) outside
/// span(`excluded`), or `None` if nothing is left.
///
/// How much there is to remove decides the work, read from the device once: the largest
/// squared overlap o² = maxⱼ ‖Eᵀbⱼ‖² of a column. After the removal, the Gram matrix is
/// I − (Eᵀb)ᵀ(Eᵀb), off the identity by at most o². So a basis outside up to rounding (the
/// usual case: bases come from matrices with the excluded directions taken out) needs no
/// orthonormalisation at all (o² within float32 precision); a basis that keeps most of each
/// column (o² ≤ ¼) takes one round; one that lies almost inside `excluded` takes a second
/// round, since what the first leaves is rounding noise that still overlaps it.
fn outside(basis: Tensor<2>, excluded: &Tensor<2>) -> Option<Tensor<2>> {
    let overlaps = excluded.clone().transpose().matmul(basis.clone());
    let largest = f64::from(read_values(overlaps.clone().square().sum_dim(0).max())[0]);
    if !largest.is_finite() {
        return None;
    }
    let removed = basis - excluded.clone().matmul(overlaps);
    if largest <= ORTHONORMALITY_TOLERANCE {
        return Some(removed);
    }
    let once = orthonormalize(removed)?;
    if largest <= 0.25 {
        return Some(once);
    }
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
    let fill = orthonormalize_span(fill)
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

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    #[test]
    fn cholesky_qr_orthonormalizes_well_conditioned_columns_within_their_span() {
        let device = Device::flex();
        // Columns of very different lengths and directions 60° apart: far from orthonormal,
        // but well within what a float32 Gram matrix factorises.
        let base = Tensor::<2>::random([200, 12], Distribution::Normal(0.0, 1.0), &device);
        let scales: Vec<f32> = (0..12).map(|j| 10f32.powi(j % 3)).collect();
        let columns = (base.clone() + base.clone().slice([0..200, 0..1]).repeat_dim(1, 12))
            * Tensor::<1>::from_floats(scales.as_slice(), &device).unsqueeze::<2>();
        let q = cholesky_orthonormalize(columns.clone()).expect("positive definite");
        assert_eq!(q.dims(), [200, 12]);
        let gram = to_host(q.clone().transpose().matmul(q.clone()));
        assert!(max_deviation_from_identity(&gram) <= 1e-5);
        // Nothing of the input lies outside the result's span.
        let outside = remove_component(columns.clone(), &q)
            .square()
            .sum()
            .into_scalar::<f32>();
        let total = columns.square().sum().into_scalar::<f32>();
        assert!(outside / total < 1e-10, "{outside} of {total} outside");
        // A zero column makes the Gram matrix singular: no Cholesky QR.
        let with_zero = Tensor::cat(vec![base, Tensor::zeros([200, 1], &device)], 1);
        assert!(cholesky_orthonormalize(with_zero).is_none());
    }

    #[test]
    fn gaussian_chunks_drawn_in_parallel_equal_one_sequential_draw() {
        let device = Device::flex();
        // Odd counts (the last pair's second normal dropped), one chunk and several.
        for (rows, cols) in [(3, 5), (64, 64), (700, 31)] {
            let mut parallel = <ChaCha8Rng as rand::SeedableRng>::seed_from_u64(9);
            let _ = parallel.random::<u32>(); // start off a pair boundary
            let mut sequential = parallel.clone();
            let drawn = read_values(gaussian_matrix(rows, cols, &mut parallel, &device));
            let mut expected = Vec::new();
            while expected.len() < rows * cols {
                let u1: f64 = 1.0 - sequential.random::<f64>();
                let u2: f64 = sequential.random::<f64>();
                let (r, a) = ((-2.0 * u1.ln()).sqrt(), std::f64::consts::TAU * u2);
                expected.extend([(r * a.cos()) as f32, (r * a.sin()) as f32]);
            }
            expected.truncate(rows * cols);
            assert_eq!(drawn, expected, "{rows}×{cols}");
            assert_eq!(parallel.random::<u64>(), sequential.random::<u64>());
        }
    }
}
