//! `cargo bench -p gems-core`: randomized vs exact SVD, the cost of one optimizer step for
//! GEMS, GaLore and AdamW on T5-base-shaped matrices (and of a refresh, amortised), and the
//! optimizer state of each method for the whole of T5-base. Every comparison is measured side
//! by side in this one run; ratios are what to read, the machine being shared and noisy.
//!
//! `GEMS_BENCH_BACKEND=wgpu` (with `--features wgpu`) runs it on another backend.

use std::time::Instant;

use burn::module::{Module, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Distribution, Tensor};
use gems_core::projector::Side;
use gems_core::rsvd::{SvdMethod, captured_energy, power_law_matrix, top_left_singular_vectors};
use gems_core::subspace::SubspacePlan;
use gems_core::{GemsConfig, KnowledgeBasis, Method, MomentTransfer, NullSpace, TaskGradients};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const RANK: usize = 128;
const TASK_RANK: usize = 64;
const KNOWLEDGE_RANK: usize = 256;
const D_MODEL: usize = 768;
const D_FF: usize = 3072;
const LAYERS: usize = 12;

/// Median wall-clock milliseconds of `runs` calls of `work` on what `setup` prepares (untimed),
/// the device synchronised before and after each.
fn median_ms<T>(
    runs: usize,
    device: &Device,
    mut setup: impl FnMut() -> T,
    mut work: impl FnMut(T),
) -> f64 {
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let input = setup();
            device.sync().expect("device synchronises");
            let start = Instant::now();
            work(input);
            device.sync().expect("device synchronises");
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[runs / 2]
}

fn svd_comparison(device: &Device) {
    println!("\n## Randomized vs exact SVD (top {RANK} left singular vectors, p = 8, q = 1)\n");
    println!("| shape | exact (ms) | randomized (ms) | speed-up | energy vs exact |");
    println!("|---|---:|---:|---:|---:|");
    let randomized = SvdMethod::default();
    for (rows, cols) in [(768, 768), (768, 3072), (896, 4864)] {
        let matrix = power_law_matrix(rows, cols, rows as u64 * 31 + cols as u64, device);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut exact_basis = None;
        let exact_ms = median_ms(
            3,
            device,
            || (),
            |()| {
                exact_basis = Some(
                    top_left_singular_vectors(
                        matrix.clone(),
                        RANK,
                        &SvdMethod::Exact,
                        None,
                        &mut rng,
                    )
                    .unwrap(),
                );
            },
        );
        let mut randomized_basis = None;
        let randomized_ms = median_ms(
            5,
            device,
            || (),
            |()| {
                randomized_basis = Some(
                    top_left_singular_vectors(matrix.clone(), RANK, &randomized, None, &mut rng)
                        .unwrap(),
                );
            },
        );
        let energy = captured_energy(&randomized_basis.unwrap(), &matrix)
            / captured_energy(&exact_basis.unwrap(), &matrix);
        println!(
            "| {cols}×{rows} | {exact_ms:.0} | {randomized_ms:.0} | {:.1}× | {energy:.4} |",
            exact_ms / randomized_ms
        );
    }
}

/// Weight shapes of one T5-base encoder block and one decoder block, in Burn's [in, out].
fn t5_base_block_shapes() -> Vec<[usize; 2]> {
    let attention = [D_MODEL, D_MODEL];
    let mut shapes = vec![attention; 4];
    shapes.extend([[D_MODEL, D_FF], [D_FF, D_MODEL]]);
    shapes.extend(vec![attention; 8]);
    shapes.extend([[D_MODEL, D_FF], [D_FF, D_MODEL]]);
    shapes
}

/// A bank of free-standing weights.
#[derive(Module, Debug)]
struct Bank {
    weights: Vec<Param<Tensor<2>>>,
}

fn gradients_for(bank: &Bank, seed: u64, device: &Device) -> GradientsParams {
    device.seed(seed);
    let mut gradients = GradientsParams::new();
    for weight in &bank.weights {
        let shape = weight.val().dims();
        gradients.register(
            weight.id,
            Tensor::<2>::random(shape, Distribution::Normal(0.0, 1.0), device),
        );
    }
    gradients
}

/// Random knowledge bases of `width(d_in)` directions for every weight of `bank`.
fn knowledge_bases(bank: &Bank, device: &Device, width: impl Fn(usize) -> usize) -> NullSpace {
    let mut null_space = NullSpace::new();
    for (index, weight) in bank.weights.iter().enumerate() {
        let input_dim = weight.val().dims()[0];
        let random = Tensor::<2>::random(
            [input_dim, width(input_dim)],
            Distribution::Normal(0.0, 1.0),
            device,
        );
        let basis = gems_core::rsvd::orthonormalize(random).unwrap();
        null_space.insert(
            format!("weights.{index}"),
            KnowledgeBasis {
                basis: Some(basis),
                input_axis: 0,
                retained_energy: 0.99,
            },
        );
    }
    null_space
}

fn step_comparison(device: &Device) {
    let shapes = t5_base_block_shapes();
    let inner = device.clone();
    let autodiff = device.clone().autodiff();
    let bank = Bank {
        weights: shapes
            .iter()
            .map(|shape| {
                Param::from_tensor(Tensor::random(
                    *shape,
                    Distribution::Normal(0.0, 0.02),
                    &autodiff,
                ))
            })
            .collect(),
    };
    let null_space = knowledge_bases(&bank, &inner, |_| KNOWLEDGE_RANK);
    // Most of every input side protected, as on the default run (3,858 of 5,632 directions):
    // the removal from coordinates then goes through the complement.
    let wide = knowledge_bases(&bank, &inner, |d_in| 3 * d_in / 4);
    println!(
        "\n## One optimizer step, one T5-base encoder block + one decoder block ({} matrices, {:.1} M weights, 2 tasks)\n",
        shapes.len(),
        shapes.iter().map(|s| s[0] * s[1]).sum::<usize>() as f64 / 1e6
    );
    println!(
        "r_s = {RANK}, r_t = {TASK_RANK}, knowledge bases of {KNOWLEDGE_RANK} directions per input (GEMS).\n"
    );
    println!(
        "| method | step (ms) | vs AdamW | refresh step (ms) | refresh amortised at T = 200 (ms/step) | state (MB) |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let mut adamw_ms = None;
    for (label, method, null_space) in [
        ("adamw", Method::Adamw, &null_space),
        ("galore", Method::Galore, &null_space),
        ("gems-no-nsp", Method::GemsNoNsp, &null_space),
        ("gems", Method::Gems, &null_space),
        ("gems, k = 3/4 of d_in", Method::Gems, &wide),
    ] {
        let optimizer = |refresh_every| {
            GemsConfig {
                method,
                shared_rank: RANK,
                task_rank: Some(TASK_RANK),
                refresh_every,
                ..GemsConfig::default()
            }
            .init()
            .unwrap()
            .with_param_filter(|_, _| true)
            .with_null_space(null_space.clone())
        };
        let tasks = |seed: u64| -> Vec<TaskGradients> {
            (0..2)
                .map(|t| TaskGradients {
                    gradients: gradients_for(&bank, seed + t, &inner),
                    loss: 1.0,
                    samples: 8,
                })
                .collect()
        };
        // Steady state: refreshes only on the first step (T = 200).
        let mut steady = optimizer(200);
        let mut model = steady.step(1e-3, bank.clone(), tasks(0)).unwrap().0;
        let mut seed = 10;
        let step_ms = median_ms(
            5,
            device,
            || {
                seed += 2;
                tasks(seed)
            },
            |prepared| model = steady.step(1e-3, model.clone(), prepared).unwrap().0,
        );
        // Every step a refresh (T = 1).
        let refresh_ms = if method.low_rank() {
            let mut refreshing = optimizer(1);
            let mut model = refreshing.step(1e-3, bank.clone(), tasks(0)).unwrap().0;
            Some(median_ms(
                3,
                device,
                || {
                    seed += 2;
                    tasks(seed)
                },
                |prepared| model = refreshing.step(1e-3, model.clone(), prepared).unwrap().0,
            ))
        } else {
            None
        };
        let adamw = *adamw_ms.get_or_insert(step_ms);
        let (refresh, amortised) = match refresh_ms {
            Some(r) => (format!("{r:.0}"), format!("{:.1}", (r - step_ms) / 200.0)),
            None => ("—".into(), "—".into()),
        };
        println!(
            "| {label} | {step_ms:.0} | {:.2}× | {refresh} | {amortised} | {:.1} |",
            step_ms / adamw,
            steady.state_bytes() as f64 / 1e6
        );
    }
}

fn state_comparison() {
    let mut shapes = Vec::new();
    for _ in 0..LAYERS {
        shapes.extend(t5_base_block_shapes());
    }
    let adamw: usize = shapes.iter().map(|s| 8 * s[0] * s[1]).sum();
    let low_rank = |tasks: usize, task_rank: usize| -> usize {
        shapes
            .iter()
            .map(|s| {
                SubspacePlan::new(
                    *s,
                    Side::smaller_of(*s),
                    RANK,
                    task_rank,
                    0,
                    SvdMethod::default(),
                    MomentTransfer::Rotate,
                )
                .state_bytes(tasks)
            })
            .sum()
    };
    let galore = low_rank(0, 0);
    let gems = low_rank(2, TASK_RANK);
    println!(
        "\n## Optimizer state for the {} projected matrices of T5-base ({:.0} M weights), float32\n",
        shapes.len(),
        shapes.iter().map(|s| s[0] * s[1]).sum::<usize>() as f64 / 1e6
    );
    println!("| method | state (MB) | vs AdamW |");
    println!("|---|---:|---:|");
    for (name, bytes) in [
        ("adamw", adamw),
        ("galore (r = 128)", galore),
        ("gems (r_s = 128, r_t = 64, 2 tasks, bases included)", gems),
    ] {
        println!(
            "| {name} | {:.1} | {:.1}% |",
            bytes as f64 / 1e6,
            100.0 * bytes as f64 / adamw as f64
        );
    }
    let knowledge = shapes
        .iter()
        .map(|s| 4 * s[0] * KNOWLEDGE_RANK)
        .sum::<usize>();
    println!(
        "\nKnowledge bases (GEMS, GEMS-no-MSD) add 4·d_in·k bytes per matrix: {:.1} MB at k = {KNOWLEDGE_RANK} \
         ({:.1}% of AdamW); k depends on the general corpus.",
        knowledge as f64 / 1e6,
        100.0 * knowledge as f64 / adamw as f64
    );
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let backend = std::env::var("GEMS_BENCH_BACKEND").unwrap_or_else(|_| "flex".into());
    let device = gems_core::device_from_name(&backend).expect("a compiled-in backend");
    println!("# gems-core benchmark on `{backend}`");
    svd_comparison(&device);
    step_comparison(&device);
    state_comparison();
}
