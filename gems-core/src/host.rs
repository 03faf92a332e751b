//! Small dense problems on the host, in float64.
//!
//! Only matrices whose sides are the sketch width (r + p) or a layer's input width come here:
//! Gram matrices of sketches, the small SVD of randomized SVD, input covariances, and the exact
//! SVD used as a reference. Everything of the size of a weight matrix stays on the device.

use burn::tensor::{Device, Tensor, TensorData};
use faer::diag::Diag;
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::evd::{ComputeEigenvectors, self_adjoint_evd, self_adjoint_evd_scratch};
use faer::{Mat, Par};

use crate::error::{GemsError, Result};

thread_local! {
    /// Reads from the device made by the optimizer's code on this thread.
    static DEVICE_READS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many times the optimizer's code on this thread has read tensor values back from the
/// device so far. Each read waits for the device to finish the work queued before it (a
/// synchronisation point on a GPU), so fewer is faster; differences between two calls count the
/// reads of the work between them.
pub fn device_reads() -> u64 {
    DEVICE_READS.with(std::cell::Cell::get)
}

/// The values of a float tensor on the host, as float32, counted in [`device_reads`].
pub(crate) fn read_values<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    DEVICE_READS.with(|reads| reads.set(reads.get() + 1));
    tensor
        .into_data()
        .try_into_vec_as::<f32>()
        .expect("a float tensor converts to f32")
}

/// Copies a 2-D tensor to the host as a float64 matrix (row-major source).
pub fn to_host(tensor: Tensor<2>) -> Mat<f64> {
    let [rows, cols] = tensor.dims();
    let values = read_values(tensor);
    Mat::from_fn(rows, cols, |i, j| values[i * cols + j] as f64)
}

/// Copies a float64 host matrix to the device as a float32 tensor.
pub fn to_device(matrix: &Mat<f64>, device: &Device) -> Tensor<2> {
    let (rows, cols) = (matrix.nrows(), matrix.ncols());
    let mut values = Vec::with_capacity(rows * cols);
    for i in 0..rows {
        for j in 0..cols {
            values.push(matrix[(i, j)] as f32);
        }
    }
    Tensor::from_data(TensorData::new(values, [rows, cols]), device)
}

/// Symmetric matrices up to this size are decomposed on one thread: splitting so little work
/// costs more than it saves (a 136×136 Gram matrix: 0.9 ms on one thread against 1.1 ms on two;
/// 72×72: 0.3 ms against 0.8 ms).
const SEQUENTIAL_EIGEN_MAX: usize = 256;

/// Eigen-decomposition of a symmetric matrix, eigenvalues in non-increasing order.
///
/// Returns the eigenvalues and the matrix whose columns are the matching unit eigenvectors.
/// Only the lower triangle is read. Non-finite input is an error, never a silent NaN basis.
pub fn symmetric_eigen_descending(matrix: &Mat<f64>) -> Result<(Vec<f64>, Mat<f64>)> {
    let n = matrix.nrows();
    if (0..n).any(|i| (0..=i).any(|j| !matrix[(i, j)].is_finite())) {
        return Err(GemsError::Decomposition(
            "matrix has non-finite entries (NaN or infinite gradient?)".into(),
        ));
    }
    let par = match n <= SEQUENTIAL_EIGEN_MAX {
        true => Par::Seq,
        false => faer::get_global_parallelism(),
    };
    let mut values = Diag::<f64>::zeros(n);
    let mut vectors = Mat::<f64>::zeros(n, n);
    let scratch =
        self_adjoint_evd_scratch::<f64>(n, ComputeEigenvectors::Yes, par, Default::default());
    self_adjoint_evd(
        matrix.as_ref(),
        values.as_mut(),
        Some(vectors.as_mut()),
        par,
        MemStack::new(&mut MemBuffer::new(scratch)),
        Default::default(),
    )
    .map_err(|e| GemsError::Decomposition(format!("symmetric eigen-decomposition: {e:?}")))?;
    let values = values.column_vector();
    // faer returns ascending order; reverse it.
    let descending_values = (0..n).rev().map(|i| values[i]).collect();
    let descending_vectors = Mat::from_fn(n, n, |i, j| vectors[(i, n - 1 - j)]);
    Ok((descending_values, descending_vectors))
}

/// Thin SVD of a host matrix: the left singular vectors and the singular values, in
/// non-increasing order.
pub fn thin_svd(matrix: &Mat<f64>) -> Result<(Mat<f64>, Vec<f64>)> {
    let svd = matrix
        .thin_svd()
        .map_err(|e| GemsError::Decomposition(format!("SVD: {e:?}")))?;
    let singular = svd.S().column_vector();
    let values = (0..singular.nrows()).map(|i| singular[i]).collect();
    Ok((svd.U().to_owned(), values))
}
