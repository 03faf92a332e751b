//! The plan of a tuned comparison: the grid of settings each method is tried at (learning rate,
//! and optionally rank and scale), the seeds of the final runs, and how a time budget shrinks
//! that plan.

use std::fmt::Write;

use crate::settings::{TrainMethod, TrainSettings};

/// Values to try, from `LOW:HIGH:POINTS` (log-spaced, both ends included, rounded to three
/// significant digits) or a comma-separated list.
#[derive(Clone, Debug, PartialEq)]
pub struct Grid(pub Vec<f64>);

impl Grid {
    /// Five log-spaced learning rates from 1e-4 to 1e-2.
    pub const DEFAULT_LEARNING_RATES: &'static str = "1e-4:1e-2:5";
}

impl std::str::FromStr for Grid {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let number = |part: &str| -> Result<f64, String> {
            part.trim()
                .parse::<f64>()
                .ok()
                .filter(|v| *v > 0.0 && v.is_finite())
                .ok_or_else(|| format!("`{text}`: `{part}` is not a positive number"))
        };
        let values = match text.split(':').collect::<Vec<_>>()[..] {
            [low, high, points] => {
                let (low, high) = (number(low)?, number(high)?);
                let points: usize = points
                    .trim()
                    .parse()
                    .ok()
                    .filter(|p| (1..=MAX_RUNS).contains(p))
                    .ok_or_else(|| {
                        format!("`{text}`: POINTS must be a whole number from 1 to {MAX_RUNS}")
                    })?;
                if high < low {
                    return Err(format!("`{text}`: LOW must not exceed HIGH"));
                }
                if points == 1 {
                    vec![low]
                } else {
                    let ratio = (high / low).ln() / (points - 1) as f64;
                    (0..points)
                        .map(|i| three_significant_digits(low * (ratio * i as f64).exp()))
                        .collect()
                }
            }
            [_] => text.split(',').map(number).collect::<Result<_, _>>()?,
            _ => {
                return Err(format!(
                    "`{text}`: expected LOW:HIGH:POINTS (e.g. 1e-4:1e-2:5) or a list (1e-4,1e-3)"
                ));
            }
        };
        let mut sorted = values;
        sorted.sort_by(f64::total_cmp);
        sorted.dedup();
        Ok(Grid(sorted))
    }
}

fn three_significant_digits(value: f64) -> f64 {
    format!("{value:.2e}")
        .parse()
        .expect("a formatted float parses")
}

/// The most points of a grid, and the most seeds: each is a training run.
pub const MAX_RUNS: usize = 1000;

/// The largest seed a run's `config.toml` can hold (TOML integers are signed 64-bit).
const MAX_SEED: u64 = i64::MAX as u64;

/// Seeds of the final runs: `N` (N seeds from `--seed` on) or a comma-separated list.
#[derive(Clone, Debug, PartialEq)]
pub enum Seeds {
    /// This many seeds, counting up from the base seed.
    Count(usize),
    /// These seeds.
    List(Vec<u64>),
}

impl std::str::FromStr for Seeds {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}`: give a count (3) or a list of seeds (1,2,3)");
        if text.contains(',') {
            let seeds: Vec<u64> = text
                .split(',')
                .map(|s| s.trim().parse().map_err(|_| bad()))
                .collect::<Result<_, _>>()?;
            if let Some(seed) = seeds.iter().find(|&&seed| seed > MAX_SEED) {
                return Err(format!(
                    "`{text}`: seed {seed} is too large: at most {MAX_SEED} (the largest integer a run's config.toml holds)"
                ));
            }
            let mut unique = seeds.clone();
            unique.sort_unstable();
            unique.dedup();
            if unique.len() != seeds.len() {
                return Err(format!("`{text}`: a seed is repeated"));
            }
            Ok(Seeds::List(seeds))
        } else {
            match text.trim().parse::<usize>() {
                Ok(count) if (1..=MAX_RUNS).contains(&count) => Ok(Seeds::Count(count)),
                Ok(count) if count > MAX_RUNS => Err(format!(
                    "`{text}`: at most {MAX_RUNS} seeds (each is a training run)"
                )),
                _ => Err(bad()),
            }
        }
    }
}

impl Seeds {
    /// The seeds, the first one being the seed of the tuning runs; an error when counting up
    /// from `base` passes the largest seed a run's `config.toml` holds.
    pub fn resolve(&self, base: u64) -> Result<Vec<u64>, String> {
        match self {
            Seeds::Count(count) => (0..*count as u64)
                .map(|i| {
                    base.checked_add(i).filter(|&seed| seed <= MAX_SEED).ok_or_else(|| {
                        format!(
                            "--seeds {count} from seed {base} passes {MAX_SEED}, the largest seed a run's config.toml holds"
                        )
                    })
                })
                .collect(),
            Seeds::List(seeds) => Ok(seeds.clone()),
        }
    }
}

/// One point of a method's grid.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Shared rank (LoRA rank), `None` for the default.
    pub shared_rank: Option<usize>,
    /// Scale of low-rank updates.
    pub scale: f64,
}

impl Candidate {
    /// `settings` at this point, for `method` and `seed`.
    pub fn settings(
        &self,
        base: &TrainSettings,
        method: TrainMethod,
        seed: u64,
        epochs: usize,
    ) -> TrainSettings {
        let mut settings = base.clone();
        settings.method = method;
        settings.learning_rate = self.learning_rate;
        settings.shared_rank = self.shared_rank;
        settings.scale = self.scale;
        settings.seed = seed;
        settings.epochs = epochs;
        settings
    }

    /// A directory name naming the point, the seed and the epochs.
    pub fn directory(&self, method: TrainMethod, seed: u64, epochs: usize) -> String {
        let mut name = format!("lr{:e}", self.learning_rate);
        if low_rank(method) {
            match self.shared_rank {
                Some(rank) => write!(name, "-rank{rank}"),
                None => write!(name, "-rankdefault"),
            }
            .expect("writing to a String");
            write!(name, "-scale{}", self.scale).expect("writing to a String");
        }
        format!("{name}-seed{seed}-epochs{epochs}")
    }
}

/// Whether `method` trains low-rank updates (so that rank and scale matter).
pub fn low_rank(method: TrainMethod) -> bool {
    match method {
        TrainMethod::Lora => true,
        TrainMethod::Optimizer(method) => method.low_rank(),
    }
}

/// What a comparison runs: every method at every point of its grid with the first seed
/// (tuning), then each method's best point with the other seeds.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Learning rates tried.
    pub learning_rates: Vec<f64>,
    /// Shared ranks tried by low-rank methods (`None`: the default).
    pub ranks: Vec<Option<usize>>,
    /// Scales tried by low-rank methods.
    pub scales: Vec<f64>,
    /// Seeds; the first is the tuning seed.
    pub seeds: Vec<u64>,
    /// Epochs of every run.
    pub epochs: usize,
}

impl Plan {
    /// The grid of `method`: learning rates × ranks × scales for low-rank methods, learning
    /// rates alone (at the first rank and scale) otherwise.
    pub fn candidates(&self, method: TrainMethod) -> Vec<Candidate> {
        let (ranks, scales) = if low_rank(method) {
            (&self.ranks[..], &self.scales[..])
        } else {
            (&self.ranks[..1], &self.scales[..1])
        };
        let mut all = Vec::new();
        for &learning_rate in &self.learning_rates {
            for &shared_rank in ranks {
                for &scale in scales {
                    all.push(Candidate {
                        learning_rate,
                        shared_rank,
                        scale,
                    });
                }
            }
        }
        all
    }

    /// Runs of the whole plan: the grids, then the extra seeds.
    pub fn run_count(&self, methods: &[TrainMethod]) -> usize {
        methods
            .iter()
            .map(|m| self.candidates(*m).len() + self.seeds.len() - 1)
            .sum()
    }

    /// Shrinks the plan until its runs still to do (`pending` counts them for a plan) take at
    /// most `seconds_left` at `seconds_per_run` each: first the scale grid, then the rank grid,
    /// then the learning-rate grid (every other point, keeping both ends, down to 3 points),
    /// then the seeds, then the epochs (assuming time proportional to epochs). Returns what was
    /// dropped, in words; nothing when the plan fits.
    pub fn fit_budget(
        &mut self,
        seconds_per_run: f64,
        seconds_left: f64,
        pending: impl Fn(&Plan) -> usize,
    ) -> Vec<String> {
        let mut dropped = Vec::new();
        let fits = |plan: &Plan, per_run: f64| pending(plan) as f64 * per_run <= seconds_left;
        if fits(self, seconds_per_run) {
            return dropped;
        }
        if self.scales.len() > 1 {
            dropped.push(format!(
                "the scale grid (kept {} of {:?})",
                self.scales[0], self.scales
            ));
            self.scales.truncate(1);
        }
        if !fits(self, seconds_per_run) && self.ranks.len() > 1 {
            dropped.push(format!(
                "the rank grid (kept {} of {})",
                rank_name(self.ranks[0]),
                self.ranks
                    .iter()
                    .map(|r| rank_name(*r))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            self.ranks.truncate(1);
        }
        while !fits(self, seconds_per_run) && self.learning_rates.len() > 3 {
            let before = self.learning_rates.clone();
            let last = *before.last().expect("a grid has points");
            let mut thinned: Vec<f64> = before.iter().copied().step_by(2).collect();
            if thinned.last() != Some(&last) {
                thinned.push(last);
            }
            let removed: Vec<String> = before
                .iter()
                .filter(|lr| !thinned.contains(lr))
                .map(|lr| format!("{lr:e}"))
                .collect();
            dropped.push(format!("learning rates {}", removed.join(", ")));
            self.learning_rates = thinned;
        }
        if !fits(self, seconds_per_run) && self.seeds.len() > 1 {
            let all = self.seeds.clone();
            while !fits(self, seconds_per_run) && self.seeds.len() > 1 {
                self.seeds.pop();
            }
            dropped.push(format!(
                "seeds {:?} (kept {:?})",
                &all[self.seeds.len()..],
                self.seeds
            ));
        }
        if !fits(self, seconds_per_run) && self.epochs > 1 {
            let runs = pending(self).max(1) as f64;
            let affordable = seconds_left / runs / seconds_per_run * self.epochs as f64;
            let epochs = (affordable.floor() as usize).clamp(1, self.epochs - 1);
            dropped.push(format!("epochs {} → {epochs}", self.epochs));
            self.epochs = epochs;
        }
        dropped
    }
}

fn rank_name(rank: Option<usize>) -> String {
    rank.map_or_else(|| "default".into(), |r| r.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gems_core::Method;

    const GEMS: TrainMethod = TrainMethod::Optimizer(Method::Gems);
    const ADAMW: TrainMethod = TrainMethod::Optimizer(Method::Adamw);

    #[test]
    fn grids_parse_as_log_spaced_ranges_or_lists() {
        let grid: Grid = "1e-4:1e-2:5".parse().unwrap();
        assert_eq!(grid.0, vec![1e-4, 3.16e-4, 1e-3, 3.16e-3, 1e-2]);
        assert_eq!("1e-3:1e-3:1".parse::<Grid>().unwrap().0, vec![1e-3]);
        assert_eq!(
            "3e-3, 1e-3,3e-3".parse::<Grid>().unwrap().0,
            vec![1e-3, 3e-3]
        );
        for (bad, says) in [
            ("1e-2:1e-4:3", "LOW must not exceed HIGH"),
            ("1e-4:1e-2:0", "POINTS"),
            // A trillion points aborted on an eight-terabyte allocation.
            ("1e-4:1e-2:1000000000000", "from 1 to 1000"),
            ("1e-4:fast:3", "`fast`"),
            ("1e-3,-1", "`-1`"),
            ("1:2", "LOW:HIGH:POINTS"),
        ] {
            let error = bad.parse::<Grid>().unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn seeds_are_a_count_or_a_list() {
        assert_eq!(
            "3".parse::<Seeds>().unwrap().resolve(42).unwrap(),
            vec![42, 43, 44]
        );
        assert_eq!(
            "7,1".parse::<Seeds>().unwrap().resolve(42).unwrap(),
            vec![7, 1],
            "a list keeps its order: the first seed tunes"
        );
        assert!("0".parse::<Seeds>().is_err());
        // Seeds a run's config.toml could not hold back, and absurd counts, are refused.
        let largest = i64::MAX as u64;
        let list = format!("{},1", largest + 1);
        assert!(list.parse::<Seeds>().unwrap_err().contains("too large"));
        assert!(format!("{largest},1").parse::<Seeds>().is_ok());
        let error = "2".parse::<Seeds>().unwrap().resolve(largest).unwrap_err();
        assert!(error.contains("passes 9223372036854775807"), "{error}");
        let error = "1000000000000".parse::<Seeds>().unwrap_err();
        assert!(error.contains("at most 1000 seeds"), "{error}");
        assert!("1,1".parse::<Seeds>().unwrap_err().contains("repeated"));
        assert!("a,b".parse::<Seeds>().is_err());
    }

    fn plan() -> Plan {
        Plan {
            learning_rates: "1e-4:1e-2:5".parse::<Grid>().unwrap().0,
            ranks: vec![Some(8), Some(16)],
            scales: vec![0.25, 1.0],
            seeds: vec![1, 2, 3],
            epochs: 8,
        }
    }

    #[test]
    fn full_fine_tuning_ignores_the_rank_and_scale_grids() {
        let plan = plan();
        assert_eq!(plan.candidates(GEMS).len(), 5 * 2 * 2);
        let adamw = plan.candidates(ADAMW);
        assert_eq!(adamw.len(), 5);
        assert!(
            adamw
                .iter()
                .all(|c| c.shared_rank == Some(8) && c.scale == 0.25)
        );
        // 20 + 5 grid runs, 2 extra seeds each.
        assert_eq!(plan.run_count(&[GEMS, ADAMW]), 25 + 4);
        assert_eq!(
            adamw[0].directory(ADAMW, 1, 8),
            "lr1e-4-seed1-epochs8",
            "no rank or scale in the name of a full fine-tuning run"
        );
        assert_eq!(
            plan.candidates(GEMS)[0].directory(GEMS, 1, 8),
            "lr1e-4-rank8-scale0.25-seed1-epochs8"
        );
    }

    #[test]
    fn a_plan_that_fits_is_left_alone() {
        let mut plan = plan();
        let methods = [GEMS, ADAMW];
        let dropped = plan.fit_budget(1.0, 29.0, |p| p.run_count(&methods));
        assert!(dropped.is_empty());
        assert_eq!(plan, self::plan());
    }

    #[test]
    fn the_budget_drops_scale_then_rank_then_rates_then_seeds_then_epochs() {
        let methods = [GEMS, ADAMW];
        let count = |p: &Plan| p.run_count(&methods);
        // 29 runs; without the scale grid 10 + 5 + 4 = 19.
        let mut plan = plan();
        let dropped = plan.fit_budget(1.0, 19.0, count);
        assert_eq!(dropped.len(), 1, "{dropped:?}");
        assert!(dropped[0].contains("scale grid"));
        assert_eq!((plan.scales.len(), plan.ranks.len()), (1, 2));
        // Without both grids: 5 + 5 + 4 = 14; thinned rates: 3 + 3 + 4 = 10.
        let mut plan = self::plan();
        let dropped = plan.fit_budget(1.0, 10.0, count);
        assert_eq!(dropped.len(), 3, "{dropped:?}");
        assert_eq!(plan.learning_rates, vec![1e-4, 1e-3, 1e-2]);
        assert!(dropped[2].contains("3.16e-4") && dropped[2].contains("3.16e-3"));
        assert_eq!(plan.seeds.len(), 3);
        // One seed: 3 + 3 = 6 runs.
        let mut plan = self::plan();
        let dropped = plan.fit_budget(1.0, 7.0, count);
        assert_eq!(plan.seeds, vec![1]);
        assert!(dropped.last().unwrap().contains("seeds [2, 3]"));
        assert_eq!(plan.epochs, 8);
        // Six runs in 3 s at 1 s per 8-epoch run: 4 epochs.
        let mut plan = self::plan();
        let dropped = plan.fit_budget(1.0, 3.0, count);
        assert_eq!(plan.epochs, 4);
        assert!(dropped.last().unwrap().contains("epochs 8 → 4"));
        // A budget too small for anything still leaves one epoch.
        let mut plan = self::plan();
        plan.fit_budget(1.0, 0.01, count);
        assert_eq!(plan.epochs, 1);
    }

    #[test]
    fn thinning_keeps_both_ends_of_an_even_grid() {
        let mut plan = Plan {
            learning_rates: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            ranks: vec![None],
            scales: vec![0.25],
            seeds: vec![1],
            epochs: 2,
        };
        plan.fit_budget(1.0, 4.0, |p| p.run_count(&[GEMS]));
        assert_eq!(plan.learning_rates, vec![1.0, 3.0, 5.0, 6.0]);
        assert_eq!(plan.epochs, 2);
    }
}
