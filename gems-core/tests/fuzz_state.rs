//! Fuzzing the optimizer state reader (issue 10): state files saved after two steps of the toy
//! model (GEMS without null space: low-rank subspaces per task; AdamW: full moments), mutated
//! (bit flips, truncations, splices, huge numbers in the safetensors header and the `gems` JSON),
//! must load or be refused with an error, never panic or allocate absurdly. Checking a loaded
//! state against the model it resumes is the run's job, not this reader's.

mod common;
#[path = "../../gems-data/tests/common/mutation.rs"]
mod mutation;

use common::{ToyModel, device, seeded_gradients};
use gems_core::{GemsConfig, GemsOptimizer, Method, TaskGradients};
use mutation::{CappedAllocator, fuzz};

#[global_allocator]
static ALLOCATOR: CappedAllocator = CappedAllocator;

fn config(method: Method) -> GemsConfig {
    GemsConfig {
        method,
        shared_rank: 4,
        ..GemsConfig::default()
    }
}

/// The state file of `method` after two steps on the toy model.
fn saved_state(method: Method, path: &std::path::Path) -> Vec<u8> {
    let device = device();
    let mut optimizer: GemsOptimizer = config(method).init().unwrap();
    let mut model = ToyModel::new(&device);
    for step in 0..2u64 {
        let tasks = (0..2)
            .map(|task| TaskGradients {
                gradients: seeded_gradients(&model, 10 + 2 * step + task, 1.0),
                loss: 1.0,
                samples: 2,
            })
            .collect();
        model = optimizer.step(0.01, model, tasks).unwrap().0;
    }
    optimizer.save_state(path).unwrap();
    std::fs::read(path).unwrap()
}

#[test]
fn fuzz_optimizer_state_files() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("state.safetensors");
    let methods = [Method::GemsNoNsp, Method::Adamw];
    let seeds: Vec<Vec<u8>> = methods
        .iter()
        .map(|method| saved_state(*method, &path))
        .collect();
    let device = device().without_autodiff();
    for (method, seed) in methods.iter().zip(&seeds) {
        std::fs::write(&path, seed).unwrap();
        let mut optimizer = config(*method).init().unwrap();
        optimizer
            .load_state(&path, &device)
            .expect("every seed loads");
    }
    fuzz("optimizer state (gems-core)", &seeds, 400, |seed, input| {
        std::fs::write(&path, input).unwrap();
        let mut optimizer = config(methods[seed]).init().unwrap();
        optimizer.load_state(&path, &device).is_ok()
    });
}
