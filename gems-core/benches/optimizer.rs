//! `cargo bench -p gems-core`: randomized vs exact SVD, the cost of one optimizer step for
//! GEMS, GaLore and AdamW on T5-base-shaped matrices (and of a refresh, amortised), that of
//! weight decay kept out of the knowledge directions, and the optimizer state of each method
//! for the whole of T5-base. Every comparison is measured side
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

/// The block's weights on the plain device (no autodiff), drawn as a trained weight's.
fn block_bank(device: &Device) -> Bank {
    Bank {
        weights: t5_base_block_shapes()
            .iter()
            .map(|shape| {
                Param::from_tensor(Tensor::random(
                    *shape,
                    Distribution::Normal(0.0, 0.02),
                    device,
                ))
            })
            .collect(),
    }
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
    let bank = block_bank(&device.clone().autodiff());
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
    for (label, method, null_space, weight_decay) in [
        ("adamw", Method::Adamw, &null_space, 0.0),
        ("galore", Method::Galore, &null_space, 0.0),
        ("gems-no-nsp", Method::GemsNoNsp, &null_space, 0.0),
        ("gems", Method::Gems, &null_space, 0.0),
        ("gems, weight decay 0.01", Method::Gems, &null_space, 0.01),
        ("gems, k = 3/4 of d_in", Method::Gems, &wide, 0.0),
        (
            "gems, k = 3/4 of d_in, weight decay 0.01",
            Method::Gems,
            &wide,
            0.01,
        ),
    ] {
        let optimizer = |refresh_every| {
            GemsConfig {
                method,
                shared_rank: RANK,
                task_rank: Some(TASK_RANK),
                refresh_every,
                weight_decay,
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

/// Weight decay kept out of the knowledge directions, per step, on the block's matrices: the
/// projection of the whole weight, `W − U(UᵀW)` (4·k·d·n FLOPs per matrix), against the
/// optimizer's form, which subtracts the knowledge part kept from the first decay,
/// `W − U·(UᵀW₀)` (2·k·d·n), or goes through the complement, `V(VᵀW)`, when k > d/2.
fn decay_comparison(device: &Device) {
    let bank = block_bank(device);
    println!("\n## Weight decay with null-space projection, one T5-base encoder + decoder block\n");
    println!("| knowledge | W − U(UᵀW) (ms) | optimizer's form (ms) | speed-up | kept (MB) |");
    println!("|---|---:|---:|---:|---:|");
    type Width = fn(usize) -> usize;
    let widths: [(&str, Width); 3] = [
        ("k = 256", |_| KNOWLEDGE_RANK),
        ("k = 1/2 of d_in", |d_in| d_in / 2),
        ("k = 3/4 of d_in", |d_in| 3 * d_in / 4),
    ];
    for (label, width) in widths {
        let null_space = knowledge_bases(&bank, device, width);
        let pairs: Vec<(Tensor<2>, KnowledgeBasis)> = bank
            .weights
            .iter()
            .enumerate()
            .map(|(index, weight)| {
                let knowledge = null_space.get(&format!("weights.{index}"));
                (
                    weight.val(),
                    knowledge.expect("every weight has a basis").clone(),
                )
            })
            .collect();
        // Median milliseconds of `decay` applied to every weight (index, weight, basis).
        let time = |decay: &dyn Fn(usize, &Tensor<2>, &KnowledgeBasis) -> Tensor<2>| {
            median_ms(
                5,
                device,
                || (),
                |()| {
                    let decayed: Vec<Tensor<2>> = pairs
                        .iter()
                        .enumerate()
                        .map(|(index, (weight, knowledge))| decay(index, weight, knowledge))
                        .collect();
                    // Held until the work is done (a fusing backend would skip what is dropped).
                    device.sync().expect("device synchronises");
                    drop(decayed);
                },
            )
        };
        let projection_ms = time(&|_, weight, knowledge| knowledge.project_out(weight.clone()));
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let kept: Vec<(Option<Tensor<2>>, Option<Tensor<2>>)> = pairs
            .iter()
            .map(
                |(weight, knowledge)| match knowledge.decays_through_complement() {
                    true => (None, knowledge.complement(&mut rng)),
                    false => (knowledge.knowledge_part(weight.clone()), None),
                },
            )
            .collect();
        let ours_ms = time(&|index, weight, knowledge| match &kept[index] {
            (Some(part), _) => knowledge.without_knowledge_part(weight.clone(), part.clone()),
            (None, Some(complement)) => knowledge.within_complement(weight.clone(), complement),
            (None, None) => unreachable!("every basis has a part or a complement"),
        });
        let kept_bytes: usize = kept
            .iter()
            .filter_map(|(part, _)| part.as_ref())
            .map(|part| 4 * part.shape().num_elements())
            .sum();
        println!(
            "| {label} | {projection_ms:.1} | {ours_ms:.1} | {:.2}× | {:.1} |",
            projection_ms / ours_ms,
            kept_bytes as f64 / 1e6
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
    // `cargo bench -p gems-core -- decay step` runs the sections named (svd, step, decay,
    // state), every one without a name; `cargo bench` also passes `--bench`.
    let named: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |section: &str| named.is_empty() || named.iter().any(|n| n == section);
    let backend = std::env::var("GEMS_BENCH_BACKEND").unwrap_or_else(|_| "flex".into());
    let device = gems_core::device_from_name(&backend).expect("a compiled-in backend");
    println!("# gems-core benchmark on `{backend}`");
    if wanted("svd") {
        svd_comparison(&device);
    }
    if wanted("step") {
        step_comparison(&device);
    }
    if wanted("decay") {
        decay_comparison(&device);
    }
    if wanted("state") {
        state_comparison();
    }
}
