//! Helpers shared by gems-core's integration tests: matrices with known spectra, a toy model,
//! seeded gradients.
#![allow(dead_code)] // each test binary uses its own subset

#[cfg(feature = "wgpu")]
pub mod wgpu;

use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::Linear;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};
use faer::Mat;
use gems_core::host::{to_device, to_host};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A `rows × cols` matrix of standard normals (f64, host).
pub fn gaussian(rows: usize, cols: usize, rng: &mut ChaCha8Rng) -> Mat<f64> {
    Mat::from_fn(rows, cols, |_, _| {
        let u1: f64 = 1.0 - rng.random::<f64>();
        let u2: f64 = rng.random::<f64>();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    })
}

/// `rows × cols` with orthonormal columns (rows ≥ cols).
pub fn random_orthonormal(rows: usize, cols: usize, rng: &mut ChaCha8Rng) -> Mat<f64> {
    gaussian(rows, cols, rng).qr().compute_thin_Q()
}

/// U·diag(spectrum)·Vᵀ with random orthonormal U, V.
pub fn with_spectrum(rows: usize, cols: usize, spectrum: &[f64], seed: u64) -> Mat<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let k = spectrum.len();
    let left = random_orthonormal(rows, k, &mut rng);
    let right = random_orthonormal(cols, k, &mut rng);
    Mat::from_fn(rows, cols, |i, j| {
        (0..k)
            .map(|t| left[(i, t)] * spectrum[t] * right[(j, t)])
            .sum()
    })
}

/// Largest |entry| of AᵀB computed on the host in f64.
pub fn max_abs_cross(a: &Tensor<2>, b: &Tensor<2>) -> f64 {
    let (a, b) = (to_host(a.clone()), to_host(b.clone()));
    let product = a.transpose() * &b;
    let mut worst: f64 = 0.0;
    for i in 0..product.nrows() {
        for j in 0..product.ncols() {
            worst = worst.max(product[(i, j)].abs());
        }
    }
    worst
}

/// Largest |entry| of QᵀQ − I in f64.
pub fn orthonormality_error(q: &Tensor<2>) -> f64 {
    let q = to_host(q.clone());
    let gram = q.transpose() * &q;
    let mut worst: f64 = 0.0;
    for i in 0..gram.nrows() {
        for j in 0..gram.ncols() {
            let target = if i == j { 1.0 } else { 0.0 };
            worst = worst.max((gram[(i, j)] - target).abs());
        }
    }
    worst
}

/// Squared Frobenius norm of Qᵀ·G, in f64 on the host.
pub fn energy_in(basis: &Tensor<2>, matrix: &Mat<f64>) -> f64 {
    let basis = to_host(basis.clone());
    let inside = basis.transpose() * matrix;
    let mut total = 0.0;
    for i in 0..inside.nrows() {
        for j in 0..inside.ncols() {
            total += inside[(i, j)].powi(2);
        }
    }
    total
}

/// Upload a host matrix.
pub fn tensor(matrix: &Mat<f64>, device: &Device) -> Tensor<2> {
    to_device(matrix, device)
}

/// Two linear layers named like T5's attention matrices, so the default targets project them.
#[derive(Module, Debug)]
pub struct ToyModel {
    /// A wide weight (`[32, 48]` by default).
    pub q: Linear,
    /// A tall weight (`[48, 24]` by default).
    pub o: Linear,
}

impl ToyModel {
    /// The model with its weights drawn from a seeded generator of its own (uniform in
    /// ±1/√fan_in, as Burn's default), so that tests running in parallel threads, which share
    /// the device's generator, still all get the same weights.
    pub fn new(device: &Device) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        Self {
            q: seeded_linear(32, 48, &mut rng, device),
            o: seeded_linear(48, 24, &mut rng, device),
        }
    }

    /// Every float parameter's values in f32, path-ordered.
    pub fn values(&self) -> Vec<(String, Vec<f32>)> {
        let mut collector = ValueCollector::default();
        self.visit(&mut collector);
        collector.values
    }
}

/// A `d_in → d_out` linear layer with bias drawn from `rng`.
fn seeded_linear(d_in: usize, d_out: usize, rng: &mut ChaCha8Rng, device: &Device) -> Linear {
    let bound = 1.0 / (d_in as f32).sqrt();
    let mut draw = |count: usize| -> Vec<f32> {
        (0..count)
            .map(|_| rng.random_range(-bound..bound))
            .collect()
    };
    let weight = Tensor::<2>::from_data(TensorData::new(draw(d_in * d_out), [d_in, d_out]), device);
    let bias = Tensor::<1>::from_data(TensorData::new(draw(d_out), [d_out]), device);
    Linear {
        weight: Param::from_tensor(weight),
        bias: Some(Param::from_tensor(bias)),
    }
}

#[derive(Default)]
struct ValueCollector {
    path: Vec<String>,
    values: Vec<(String, Vec<f32>)>,
}

impl ModuleVisitor for ValueCollector {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.into());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let values = param.val().into_data().try_into_vec_as::<f32>().unwrap();
        self.values.push((self.path.join("."), values));
    }
}

/// Seeded Gaussian gradients for every parameter of the toy model, scaled by `scale`.
pub fn seeded_gradients(model: &ToyModel, seed: u64, scale: f32) -> GradientsParams {
    struct Filler<'a> {
        rng: ChaCha8Rng,
        scale: f32,
        gradients: &'a mut GradientsParams,
    }
    impl ModuleVisitor for Filler<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let value = param.val();
            let shape = value.shape();
            let count = shape.num_elements();
            let values: Vec<f32> = (0..count)
                .map(|_| {
                    let u1: f64 = 1.0 - self.rng.random::<f64>();
                    let u2: f64 = self.rng.random::<f64>();
                    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
                        * self.scale
                })
                .collect();
            let gradient = Tensor::<D>::from_data(TensorData::new(values, shape), &value.device());
            self.gradients.register(param.id, gradient.inner());
        }
    }
    let mut gradients = GradientsParams::new();
    model.visit(&mut Filler {
        rng: ChaCha8Rng::seed_from_u64(seed),
        scale,
        gradients: &mut gradients,
    });
    gradients
}

/// The flex device with autodiff.
pub fn device() -> Device {
    Device::flex().autodiff()
}

/// Singular value decomposition by one-sided Jacobi rotations (Hestenes), written here so that
/// the references do not depend on the crate's own linear algebra: the left singular vectors
/// of `matrix` (`[rows, cols]`) as the columns of a `[rows, min(rows, cols)]` matrix, and the
/// singular values, both in non-increasing order.
pub fn jacobi_svd(matrix: &Mat<f64>) -> (Mat<f64>, Vec<f64>) {
    let (rows, cols) = (matrix.nrows(), matrix.ncols());
    if rows > cols {
        // M = U·Σ·Vᵀ with V the left singular vectors of Mᵀ: U = M·V·Σ⁻¹ (0 where σ = 0).
        let (right, values) = jacobi_svd(&matrix.transpose().to_owned());
        let product = matrix * &right;
        let left = Mat::from_fn(rows, cols, |i, j| match values[j] > 0.0 {
            true => product[(i, j)] / values[j],
            false => 0.0,
        });
        return (left, values);
    }
    // Rotating the columns of X = Mᵀ until they are orthogonal gives Mᵀ·V = Ũ·Σ, so M = V·Σ·Ũᵀ:
    // the accumulated rotations V are the left singular vectors of M.
    let mut x = matrix.transpose().to_owned();
    let mut v = Mat::<f64>::identity(rows, rows);
    for _sweep in 0..100 {
        let mut rotated = false;
        for p in 0..rows {
            for q in p + 1..rows {
                let (mut alpha, mut beta, mut gamma) = (0.0, 0.0, 0.0);
                for i in 0..cols {
                    alpha += x[(i, p)] * x[(i, p)];
                    beta += x[(i, q)] * x[(i, q)];
                    gamma += x[(i, p)] * x[(i, q)];
                }
                if gamma.abs() <= 1e-15 * (alpha * beta).sqrt() || gamma == 0.0 {
                    continue;
                }
                rotated = true;
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = c * t;
                for i in 0..cols {
                    let (xp, xq) = (x[(i, p)], x[(i, q)]);
                    x[(i, p)] = c * xp - s * xq;
                    x[(i, q)] = s * xp + c * xq;
                }
                for i in 0..rows {
                    let (vp, vq) = (v[(i, p)], v[(i, q)]);
                    v[(i, p)] = c * vp - s * vq;
                    v[(i, q)] = s * vp + c * vq;
                }
            }
        }
        if !rotated {
            break;
        }
    }
    let norms: Vec<f64> = (0..rows)
        .map(|j| (0..cols).map(|i| x[(i, j)] * x[(i, j)]).sum::<f64>().sqrt())
        .collect();
    let mut order: Vec<usize> = (0..rows).collect();
    order.sort_by(|a, b| norms[*b].total_cmp(&norms[*a]));
    let left = Mat::from_fn(rows, rows, |i, j| v[(i, order[j])]);
    (left, order.iter().map(|&j| norms[j]).collect())
}
