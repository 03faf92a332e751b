//! Summary statistics over seeds and the paired t-test of per-request metrics.
//!
//! The two-sided p-value of Student's t with ν degrees of freedom is
//! `I_{ν/(ν+t²)}(ν/2, 1/2)`, the regularized incomplete beta function, evaluated with its
//! continued fraction (Numerical Recipes, 3rd ed., §6.4) and a Lanczos log-gamma (§6.1).

/// Arithmetic mean (0 for no values).
pub fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.iter().sum::<f64>() / values.len() as f64
}

/// Sample standard deviation (divisor n − 1; 0 for fewer than two values).
pub fn sample_std(values: &[f64]) -> f64 {
    if values.len() < 2 {
        return 0.0;
    }
    let center = mean(values);
    let squares: f64 = values.iter().map(|v| (v - center).powi(2)).sum();
    (squares / (values.len() - 1) as f64).sqrt()
}

/// The outcome of a paired t-test.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PairedTest {
    /// Pairs compared.
    pub pairs: usize,
    /// Mean of `b − a` over the pairs.
    pub mean_difference: f64,
    /// The t statistic (infinite when every difference is the same non-zero value).
    pub t: f64,
    /// Two-sided p-value of "the mean difference is zero".
    pub p_value: f64,
}

/// Paired t-test of `b − a`, pair by pair. Needs at least two pairs of equal-length inputs.
/// Identical inputs give t = 0 and p = 1; a constant non-zero difference gives p = 0.
pub fn paired_t_test(a: &[f64], b: &[f64]) -> Option<PairedTest> {
    if a.len() != b.len() || a.len() < 2 {
        return None;
    }
    let differences: Vec<f64> = a.iter().zip(b).map(|(a, b)| b - a).collect();
    let pairs = differences.len();
    let mean_difference = mean(&differences);
    let standard_error = sample_std(&differences) / (pairs as f64).sqrt();
    let (t, p_value) = if standard_error > 0.0 {
        let t = mean_difference / standard_error;
        (t, student_t_two_sided(t, (pairs - 1) as f64))
    } else if mean_difference == 0.0 {
        (0.0, 1.0)
    } else {
        (mean_difference.signum() * f64::INFINITY, 0.0)
    };
    Some(PairedTest {
        pairs,
        mean_difference,
        t,
        p_value,
    })
}

/// P(|T| ≥ |t|) for Student's t with `degrees_of_freedom` (> 0).
pub fn student_t_two_sided(t: f64, degrees_of_freedom: f64) -> f64 {
    if !t.is_finite() {
        return 0.0;
    }
    let x = degrees_of_freedom / (degrees_of_freedom + t * t);
    regularized_incomplete_beta(degrees_of_freedom / 2.0, 0.5, x).clamp(0.0, 1.0)
}

/// I_x(a, b) for a, b > 0 and 0 ≤ x ≤ 1.
fn regularized_incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front =
        (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    // The continued fraction converges quickly for x < (a + 1) / (a + b + 2); use the symmetry
    // I_x(a, b) = 1 − I_{1−x}(b, a) on the other side.
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_continued_fraction(a, b, x) / a
    } else {
        1.0 - front * beta_continued_fraction(b, a, 1.0 - x) / b
    }
}

/// The continued fraction of the incomplete beta function, by the modified Lentz method.
fn beta_continued_fraction(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    const EPSILON: f64 = 1e-15;
    let guard = |v: f64| if v.abs() < TINY { TINY } else { v };
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 / guard(1.0 - qab * x / qap);
    let mut h = d;
    for m in 1..=10_000 {
        let m = f64::from(m);
        let m2 = 2.0 * m;
        let even = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 / guard(1.0 + even * d);
        c = guard(1.0 + even / c);
        h *= d * c;
        let odd = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 / guard(1.0 + odd * d);
        c = guard(1.0 + odd / c);
        let step = d * c;
        h *= step;
        if (step - 1.0).abs() < EPSILON {
            break;
        }
    }
    h
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, 9 terms; relative error below 1e-15).
fn ln_gamma(x: f64) -> f64 {
    const COEFFICIENTS: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x) Γ(1 − x) = π / sin(πx).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = COEFFICIENTS[0];
    for (i, coefficient) in COEFFICIENTS.iter().enumerate().skip(1) {
        sum += coefficient / (x + i as f64);
    }
    let t = x + 7.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    fn close(found: f64, expected: f64, tolerance: f64) {
        assert!(
            (found - expected).abs() <= tolerance,
            "found {found}, expected {expected}"
        );
    }

    #[test]
    fn log_gamma_matches_factorials_and_the_half_integer_value() {
        // Γ(n) = (n − 1)!, Γ(1/2) = √π.
        close(ln_gamma(1.0), 0.0, 1e-13);
        close(ln_gamma(5.0), 24f64.ln(), 1e-13);
        close(ln_gamma(11.0), 3_628_800f64.ln(), 1e-12);
        close(ln_gamma(0.5), PI.sqrt().ln(), 1e-13);
        close(ln_gamma(0.25), 3.625_609_908_221_908f64.ln(), 1e-12);
    }

    #[test]
    fn student_t_matches_closed_forms_and_tables() {
        // ν = 1 is the Cauchy distribution: p = 1 − (2/π) atan|t|.
        for t in [0.3f64, 1.0, 3.0, 12.0] {
            close(
                student_t_two_sided(t, 1.0),
                1.0 - 2.0 / PI * t.atan(),
                1e-12,
            );
        }
        // ν = 2: p = 1 − |t| / √(2 + t²).
        for t in [0.5f64, 2.0, 7.0] {
            close(
                student_t_two_sided(-t, 2.0),
                1.0 - t / (2.0 + t * t).sqrt(),
                1e-12,
            );
        }
        // ν = 4: F(t) = 1/2 + (3/8) (t / √(1 + t²/4)) (1 − t² / (12 (1 + t²/4))).
        for t in [0.7f64, 1.825_742, 4.0] {
            let s = 1.0 + t * t / 4.0;
            let cdf = 0.5 + 0.375 * (t / s.sqrt()) * (1.0 - t * t / (12.0 * s));
            close(student_t_two_sided(t, 4.0), 2.0 * (1.0 - cdf), 1e-12);
        }
        // Two-sided 5 % critical values from printed t tables, and the normal limit.
        close(student_t_two_sided(2.228_139, 10.0), 0.05, 1e-6);
        close(student_t_two_sided(2.042_272, 30.0), 0.05, 1e-6);
        close(student_t_two_sided(2.575_829, 1e6), 0.01, 1e-6);
        assert_eq!(student_t_two_sided(0.0, 5.0), 1.0);
    }

    #[test]
    fn paired_t_test_of_a_hand_computed_example() {
        // Differences b − a = [0.5, 0.5, −0.5, 1, 1]: mean 0.5, squared deviations sum to 1.5,
        // variance 1.5 / 4 = 0.375, standard error √0.375 / √5, t = 0.5 / 0.273861 = 1.825742.
        let a = [1.0, 2.0, 3.0, 4.0, 5.0];
        let b = [1.5, 2.5, 2.5, 5.0, 6.0];
        let test = paired_t_test(&a, &b).unwrap();
        assert_eq!(test.pairs, 5);
        close(test.mean_difference, 0.5, 1e-12);
        close(test.t, 0.5 / (0.375f64 / 5.0).sqrt(), 1e-12);
        close(test.t, 1.825_742, 1e-6);
        // ν = 4 closed form (see above) at t = 1.825742: p = 0.141927.
        close(test.p_value, 0.141_927, 1e-6);
        // Swapping the sides flips t, not p.
        let swapped = paired_t_test(&b, &a).unwrap();
        close(swapped.t, -test.t, 1e-12);
        close(swapped.p_value, test.p_value, 1e-12);
    }

    #[test]
    fn degenerate_pairs() {
        let same = [0.25, 0.5, 0.0];
        assert_eq!(paired_t_test(&same, &same).unwrap().p_value, 1.0);
        let shifted = [0.75, 1.0, 0.5];
        let constant = paired_t_test(&same, &shifted).unwrap();
        assert_eq!(constant.p_value, 0.0);
        assert!(constant.t.is_infinite() && constant.t > 0.0);
        assert!(paired_t_test(&[1.0], &[2.0]).is_none());
        assert!(paired_t_test(&[1.0, 2.0], &[2.0]).is_none());
    }

    #[test]
    fn mean_and_sample_standard_deviation() {
        close(mean(&[1.0, 2.0, 6.0]), 3.0, 1e-15);
        // Deviations −2, −1, 3: squares sum to 14, / 2 = 7.
        close(sample_std(&[1.0, 2.0, 6.0]), 7f64.sqrt(), 1e-15);
        assert_eq!(sample_std(&[4.0]), 0.0);
        assert_eq!(mean(&[]), 0.0);
    }
}
