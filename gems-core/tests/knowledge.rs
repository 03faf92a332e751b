//! Knowledge bases from streamed input covariances against an exact float64 reference: a
//! cyclic Jacobi eigen-solver written here, on inputs whose covariance spectrum is known. Both
//! ways of solving (the d×d covariance, and the rows' Gram matrix while rows < d), both
//! selection rules, k above and below d/2, shared inputs solved once, and the bases file.

mod common;

use std::cell::RefCell;

use burn::tensor::Device;
use faer::Mat;
use gems_core::host::to_host;
use gems_core::knowledge_file::Fingerprint;
use gems_core::{CovarianceAccumulator, KnowledgeProgress, KnowledgeSelection, NullSpace};

fn device() -> Device {
    Device::flex()
}

/// Inputs `[rows, width]` whose uncentred covariance XᵀX/rows has exactly `eigenvalues` (and
/// zeros), in random directions, rounded to float32 as the device sees them.
fn inputs(rows: usize, width: usize, eigenvalues: &[f64], seed: u64) -> Mat<f64> {
    let singular: Vec<f64> = eigenvalues
        .iter()
        .map(|l| (l * rows as f64).sqrt())
        .collect();
    let x = common::with_spectrum(rows, width, &singular, seed);
    Mat::from_fn(rows, width, |i, j| x[(i, j)] as f32 as f64)
}

/// Eigenvalues (non-increasing) and unit eigenvectors (columns) of a symmetric matrix by
/// cyclic Jacobi rotations, in float64.
fn jacobi_eigen(matrix: &Mat<f64>) -> (Vec<f64>, Mat<f64>) {
    let n = matrix.nrows();
    let mut a = matrix.clone();
    let mut v = Mat::<f64>::identity(n, n);
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[(i, j)] * a[(i, j)])
            .sum();
        if off < 1e-26 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                if a[(p, q)].abs() < 1e-300 {
                    continue;
                }
                let theta = (a[(q, q)] - a[(p, p)]) / (2.0 * a[(p, q)]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[(k, p)], a[(k, q)]);
                    a[(k, p)] = c * akp - s * akq;
                    a[(k, q)] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[(p, k)], a[(q, k)]);
                    a[(p, k)] = c * apk - s * aqk;
                    a[(q, k)] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[(k, p)], v[(k, q)]);
                    v[(k, p)] = c * vkp - s * vkq;
                    v[(k, q)] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| a[(j, j)].total_cmp(&a[(i, i)]));
    let values = order.iter().map(|&i| a[(i, i)]).collect();
    let vectors = Mat::from_fn(n, n, |i, j| v[(i, order[j])]);
    (values, vectors)
}

/// The selection rule, written out: the fewest top eigenvalues holding `fraction` of the
/// trace, or those above the threshold.
fn reference_rank(values: &[f64], selection: &KnowledgeSelection) -> usize {
    let values: Vec<f64> = values.iter().map(|v| v.max(0.0)).collect();
    match *selection {
        KnowledgeSelection::EnergyFraction { fraction } => {
            let trace: f64 = values.iter().sum();
            (0..=values.len())
                .find(|&k| values[..k].iter().sum::<f64>() >= fraction * trace)
                .unwrap()
        }
        KnowledgeSelection::EigenvalueThreshold { threshold } => {
            values.iter().filter(|&&v| v > threshold).count()
        }
    }
}

/// Streams `x` in `batches` batches under `path`, then checks the basis against the Jacobi
/// reference of XᵀX/rows: the same rank (and `expected`), the same subspace, orthonormal
/// columns, the same retained energy.
fn check(x: &Mat<f64>, batches: usize, selection: KnowledgeSelection, expected: usize) {
    let device = device();
    let (rows, width) = (x.nrows(), x.ncols());
    let mut accumulator = CovarianceAccumulator::new();
    let per_batch = rows.div_ceil(batches);
    for start in (0..rows).step_by(per_batch) {
        let end = (start + per_batch).min(rows);
        let batch = Mat::from_fn(end - start, width, |i, j| x[(start + i, j)]);
        accumulator.observe("w", common::tensor(&batch, &device));
    }
    let null_space = accumulator.into_null_space(&selection, 0).unwrap();
    let knowledge = null_space.get("w").unwrap();

    let covariance = Mat::from_fn(width, width, |i, j| {
        (0..rows).map(|r| x[(r, i)] * x[(r, j)]).sum::<f64>() / rows as f64
    });
    let (values, vectors) = jacobi_eigen(&covariance);
    let k = reference_rank(&values, &selection);
    assert_eq!(
        k, expected,
        "the reference disagrees with the designed spectrum"
    );
    assert_eq!(knowledge.rank(), k, "{selection:?}, {rows} rows × {width}");
    let trace: f64 = values.iter().map(|v| v.max(0.0)).sum();
    let energy = values[..k].iter().sum::<f64>() / trace;
    assert!(
        (knowledge.retained_energy - energy).abs() < 1e-5,
        "retained energy {} vs {energy}",
        knowledge.retained_energy
    );
    let basis = knowledge.basis.clone().unwrap();
    assert!(common::orthonormality_error(&basis) < 1e-5);
    // Same subspace: the reference's top-k projector holds all k basis directions.
    let basis = to_host(basis);
    let top = vectors.as_ref().subcols(0, k).to_owned();
    let overlap = (top.transpose() * &basis).norm_l2();
    assert!(
        (overlap * overlap - k as f64).abs() < 1e-4,
        "overlap² {} for rank {k}",
        overlap * overlap
    );
}

/// `count` eigenvalues 1, r, r², …: distinct, so every selected subspace is unique.
fn geometric(count: usize, ratio: f64) -> Vec<f64> {
    (0..count).map(|i| ratio.powi(i as i32)).collect()
}

/// The energy fraction half-way between holding k − 1 and k of `values`: selects exactly k.
fn energy_for(values: &[f64], k: usize) -> KnowledgeSelection {
    let total: f64 = values.iter().sum();
    let held: f64 = values[..k].iter().sum();
    KnowledgeSelection::EnergyFraction {
        fraction: (held - values[k - 1] / 2.0) / total,
    }
}

/// The threshold half-way between the k-th and (k+1)-th of `values`: selects exactly k.
fn threshold_for(values: &[f64], k: usize) -> KnowledgeSelection {
    KnowledgeSelection::EigenvalueThreshold {
        threshold: (values[k - 1] + values[k]) / 2.0,
    }
}

#[test]
fn more_rows_than_width_energy_and_threshold() {
    // 24 wide, 200 rows: the d×d covariance; k below and above d/2.
    let values = geometric(24, 0.8);
    let x = inputs(200, 24, &values, 1);
    check(&x, 4, energy_for(&values, 6), 6);
    check(&x, 3, energy_for(&values, 16), 16);
    check(&x, 1, threshold_for(&values, 7), 7);
    check(&x, 2, threshold_for(&values, 20), 20);
}

#[test]
fn fewer_rows_than_width_solves_the_gram_matrix() {
    // 64 wide, 48 rows of rank 44: the rows' Gram matrix; k below and above d/2.
    let values = geometric(44, 0.93);
    let x = inputs(48, 64, &values, 2);
    check(&x, 3, energy_for(&values, 40), 40);
    check(&x, 2, energy_for(&values, 5), 5);
    check(&x, 1, threshold_for(&values, 9), 9);
    check(&x, 1, threshold_for(&values, 36), 36);
}

#[test]
fn rows_reaching_the_width_switch_to_the_covariance() {
    // 32 wide, five batches of 10 rows: kept as rows until the fourth batch, summed after.
    let values = geometric(20, 0.85);
    let x = inputs(50, 32, &values, 3);
    check(&x, 5, energy_for(&values, 12), 12);
}

#[test]
fn weights_with_the_same_inputs_share_one_decomposition() {
    let device = device();
    let shared = common::tensor(&inputs(30, 40, &geometric(20, 0.8), 4), &device);
    let other = common::tensor(&inputs(30, 40, &geometric(20, 0.8), 5), &device);
    let mut accumulator = CovarianceAccumulator::new();
    for path in ["q", "k", "v"] {
        accumulator.observe(path, shared.clone());
    }
    accumulator.observe("o", other);
    let reports = RefCell::new(Vec::new());
    let null_space = accumulator
        .into_null_space_with_progress(
            &KnowledgeSelection::EnergyFraction { fraction: 0.98 },
            0,
            &|p| reports.borrow_mut().push(p),
        )
        .unwrap();
    assert_eq!(
        reports.into_inner(),
        vec![
            KnowledgeProgress { done: 1, total: 2 },
            KnowledgeProgress { done: 2, total: 2 }
        ]
    );
    assert_eq!(null_space.len(), 4);
    let basis = |path: &str| to_host(null_space.get(path).unwrap().basis.clone().unwrap());
    assert_eq!(basis("q"), basis("v"));
    assert!((basis("q") - basis("o")).norm_max() > 0.1);
}

fn bases(device: &Device) -> NullSpace {
    let mut accumulator = CovarianceAccumulator::new();
    accumulator.observe(
        "a",
        common::tensor(&inputs(60, 12, &geometric(12, 0.7), 6), device),
    );
    accumulator.observe("b", common::tensor(&inputs(60, 16, &[0.0], 7), device));
    accumulator
        .into_null_space(&KnowledgeSelection::EnergyFraction { fraction: 0.9 }, 1)
        .unwrap()
}

#[test]
fn the_bases_file_reads_back_and_refuses_corruption_and_other_keys() {
    let device = device();
    let null_space = bases(&device);
    assert_eq!(null_space.get("b").unwrap().rank(), 0);
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("cache/bases.safetensors");
    null_space.save(&path, "key-1").unwrap();
    let read = NullSpace::load(&path, "key-1", &device).unwrap();
    assert_eq!(read.len(), 2);
    for (name, knowledge) in null_space.iter() {
        let again = read.get(name).unwrap();
        assert_eq!(again.input_axis, 1);
        assert_eq!(again.retained_energy, knowledge.retained_energy);
        assert_eq!(
            again.basis.clone().map(to_host),
            knowledge.basis.clone().map(to_host)
        );
    }
    let error = NullSpace::load(&path, "key-2", &device).unwrap_err();
    assert!(error.to_string().contains("key-1"), "{error}");
    // One flipped bit in the tensor data, then a truncated file.
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 5;
    bytes[last] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();
    let error = NullSpace::load(&path, "key-1", &device).unwrap_err();
    assert!(error.to_string().contains("checksum"), "{error}");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let error = NullSpace::load(&path, "key-1", &device).unwrap_err();
    assert!(error.to_string().contains("bases.safetensors"), "{error}");
}

#[test]
fn fingerprints_separate_pieces_and_values() {
    let device = device();
    let hash = |pieces: &[&[u8]]| {
        let mut fingerprint = Fingerprint::new();
        for piece in pieces {
            fingerprint.update(piece);
        }
        fingerprint.finish()
    };
    assert_eq!(hash(&[b"ab", b"c"]), hash(&[b"ab", b"c"]));
    assert_ne!(hash(&[b"ab", b"c"]), hash(&[b"a", b"bc"]));
    let tensor = |values: &[f64]| {
        let mut fingerprint = Fingerprint::new();
        fingerprint.update_tensor(&common::tensor(
            &Mat::from_fn(1, values.len(), |_, j| values[j]),
            &device,
        ));
        fingerprint.finish()
    };
    assert_ne!(tensor(&[1.0, 2.0]), tensor(&[1.0, 2.5]));
}

/// Inputs of another width for a weight already observed are left out and make the null space
/// fail naming the weight, whether the earlier inputs are still rows or already a sum (both
/// panicked inside Burn, the first only when the bases were computed); an input axis that is
/// not one of a 2-D weight's is refused too.
#[test]
fn inputs_of_another_width_are_refused_by_name() {
    let device = device();
    let selection = KnowledgeSelection::EnergyFraction { fraction: 0.9 };
    for earlier_rows in [10, 60] {
        let mut accumulator = CovarianceAccumulator::new();
        accumulator.observe(
            "w",
            common::tensor(&inputs(earlier_rows, 40, &geometric(8, 0.8), 1), &device),
        );
        accumulator.observe(
            "w",
            common::tensor(&inputs(10, 32, &geometric(8, 0.8), 2), &device),
        );
        assert_eq!(accumulator.observations("w"), earlier_rows as u64);
        let error = accumulator
            .into_null_space(&selection, 0)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("`w` received inputs of width 32 after inputs of width 40"),
            "{error}"
        );
    }
    let mut accumulator = CovarianceAccumulator::new();
    accumulator.observe(
        "w",
        common::tensor(&inputs(10, 40, &geometric(8, 0.8), 1), &device),
    );
    let error = accumulator
        .into_null_space(&selection, 2)
        .unwrap_err()
        .to_string();
    assert!(error.contains("input_axis must be 0 or 1"), "{error}");
}
