//! Learning-rate schedule: linear warm-up, then cosine decay (or constant).

use crate::settings::Schedule;

/// The learning rate at `step` (0-based) of `total` optimizer steps.
pub fn learning_rate(peak: f64, step: u64, warmup: u64, total: u64, schedule: Schedule) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    match schedule {
        Schedule::Constant => peak,
        Schedule::Cosine => {
            let span = total.saturating_sub(warmup).max(1) as f64;
            let progress = ((step - warmup) as f64 / span).min(1.0);
            peak * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_up_then_cosine_to_zero() {
        let lr = |step| learning_rate(1.0, step, 4, 14, Schedule::Cosine);
        assert_eq!(lr(0), 0.25);
        assert_eq!(lr(3), 1.0);
        assert_eq!(lr(4), 1.0);
        assert!((lr(9) - 0.5).abs() < 1e-12);
        assert!(lr(14) < 1e-12);
        assert_eq!(learning_rate(1.0, 10, 4, 14, Schedule::Constant), 1.0);
    }
}
