//! Proptest-driven fuzzing without nightly Rust: seed inputs (valid files) mutated by bit flips,
//! truncations, deletions, repetitions, splices from other seeds and a dictionary of hostile
//! words (huge and boundary numbers in text and binary, deep nesting, quotes, separators), run
//! through a loader that must return `Ok` or `Err`: a panic fails the case (and is shrunk), a
//! stack overflow or an allocation beyond [`ALLOCATION_LIMIT`] aborts the test binary.
//!
//! Shared by the fuzz tests of gems-data, gems-models and gems-core (included by path). The
//! number of cases per target is `GEMS_FUZZ_CASES` (default: each target's own), the random seed
//! `GEMS_FUZZ_SEED` (default fixed, so that CI runs are reproducible).
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// The largest single allocation a loader may make on the fuzz corpus (whose files are a few
/// KB): anything larger is an input-driven absurd size.
pub const ALLOCATION_LIMIT: usize = 256 << 20;

/// The system allocator, refusing single allocations above [`ALLOCATION_LIMIT`] (the process then
/// aborts with "memory allocation of N bytes failed").
pub struct CappedAllocator;

unsafe impl GlobalAlloc for CappedAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOCATION_LIMIT {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOCATION_LIMIT {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        unsafe { System.dealloc(pointer, layout) }
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > ALLOCATION_LIMIT {
            return std::ptr::null_mut();
        }
        unsafe { System.realloc(pointer, layout, new_size) }
    }
}

/// Words that break parsers, inserted or written over the input.
pub const DICTIONARY: &[&[u8]] = &[
    b"18446744073709551615",
    b"18446744073709551616",
    b"9223372036854775807",
    b"-9223372036854775808",
    b"9223372036854776",
    b"1000000000000000",
    b"1e15",
    b"1e308",
    b"-1",
    b"0",
    b"nan",
    b"inf",
    b"-inf",
    b"\xff\xff\xff\xff",
    b"\xff\xff\xff\xff\xff\xff\xff\xff",
    b"\x00\x00\x00\x80",
    b"\xff\xff\xff\x7f",
    b"\x00\x00\x00\x00\x00\x00\xf0\x7f",
    b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    b"]]]]",
    b"{{{{{{{{",
    b"((((((((",
    b"array(",
    b"...",
    b"\"",
    b"'",
    b"\"\"",
    b"\\",
    b"\n",
    b"\r\n",
    b",",
    b":",
    b"::",
    b"\t",
    b"|",
    b"\x00",
    b"\xc3\x28",
    b"null",
    b"{}",
    b"[]",
];

/// One edit of an input.
#[derive(Clone, Debug)]
pub enum Mutation {
    /// Flips one bit.
    FlipBit { at: Index, bit: u8 },
    /// Sets one byte.
    SetByte { at: Index, value: u8 },
    /// Cuts the input.
    Truncate { at: Index },
    /// Removes up to `length` bytes.
    Delete { at: Index, length: u8 },
    /// Repeats a chunk `times` times in place.
    Repeat { at: Index, length: u8, times: u8 },
    /// Inserts a dictionary word.
    Insert { at: Index, word: Index },
    /// Writes a dictionary word over the input.
    Overwrite { at: Index, word: Index },
    /// Inserts a chunk of another seed.
    Splice {
        at: Index,
        donor: Index,
        from: Index,
        length: u8,
    },
}

/// Any mutation.
pub fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 0..8u8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        (any::<Index>(), any::<u8>()).prop_map(|(at, value)| Mutation::SetByte { at, value }),
        any::<Index>().prop_map(|at| Mutation::Truncate { at }),
        (any::<Index>(), any::<u8>()).prop_map(|(at, length)| Mutation::Delete { at, length }),
        (any::<Index>(), 1..64u8, 1..32u8).prop_map(|(at, length, times)| Mutation::Repeat {
            at,
            length,
            times
        }),
        (any::<Index>(), any::<Index>()).prop_map(|(at, word)| Mutation::Insert { at, word }),
        (any::<Index>(), any::<Index>()).prop_map(|(at, word)| Mutation::Overwrite { at, word }),
        (any::<Index>(), any::<Index>(), any::<Index>(), any::<u8>()).prop_map(
            |(at, donor, from, length)| Mutation::Splice {
                at,
                donor,
                from,
                length
            }
        ),
    ]
}

/// A position in `data` (0 for empty data); `end` allows the position after the last byte.
fn position(index: &Index, data: &[u8], end: bool) -> usize {
    let size = data.len() + usize::from(end);
    if size == 0 { 0 } else { index.index(size) }
}

/// `seed` with `mutations` applied in order; `donors` feed splices.
pub fn apply(seed: &[u8], donors: &[Vec<u8>], mutations: &[Mutation]) -> Vec<u8> {
    let mut data = seed.to_vec();
    for mutation in mutations {
        match mutation {
            Mutation::FlipBit { at, bit } => {
                if !data.is_empty() {
                    let at = position(at, &data, false);
                    data[at] ^= 1 << bit;
                }
            }
            Mutation::SetByte { at, value } => {
                if !data.is_empty() {
                    let at = position(at, &data, false);
                    data[at] = *value;
                }
            }
            Mutation::Truncate { at } => {
                let at = position(at, &data, true);
                data.truncate(at);
            }
            Mutation::Delete { at, length } => {
                let at = position(at, &data, true);
                let end = (at + usize::from(*length)).min(data.len());
                data.drain(at..end);
            }
            Mutation::Repeat { at, length, times } => {
                let at = position(at, &data, true);
                let end = (at + usize::from(*length)).min(data.len());
                let chunk = data[at..end].to_vec();
                for _ in 0..*times {
                    data.splice(at..at, chunk.iter().copied());
                }
            }
            Mutation::Insert { at, word } => {
                let at = position(at, &data, true);
                let word = DICTIONARY[word.index(DICTIONARY.len())];
                data.splice(at..at, word.iter().copied());
            }
            Mutation::Overwrite { at, word } => {
                let at = position(at, &data, true);
                let word = DICTIONARY[word.index(DICTIONARY.len())];
                let end = (at + word.len()).min(data.len());
                data.splice(at..end, word.iter().copied());
            }
            Mutation::Splice {
                at,
                donor,
                from,
                length,
            } => {
                if donors.is_empty() {
                    continue;
                }
                let donor = &donors[donor.index(donors.len())];
                let from = position(from, donor, true);
                let end = (from + usize::from(*length)).min(donor.len());
                let at = position(at, &data, true);
                data.splice(at..at, donor[from..end].iter().copied());
            }
        }
    }
    data
}

/// Cases of a target: `GEMS_FUZZ_CASES`, or `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("GEMS_FUZZ_CASES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(default)
}

/// A runner with `cases` cases, seeded by `GEMS_FUZZ_SEED` (fixed by default), without
/// persisted failure files.
pub fn runner(cases: u32) -> TestRunner {
    let seed: u64 = std::env::var("GEMS_FUZZ_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(2026);
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    TestRunner::new_with_rng(
        Config {
            cases,
            failure_persistence: None,
            max_shrink_iters: 512,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    )
}

/// Runs `target` on the values of `strategy` (`target` says whether the input was accepted);
/// panics with the shrunk failing value if a case panics. Prints and returns the number of
/// executions.
pub fn fuzz_values<S: Strategy>(
    name: &str,
    strategy: S,
    default_cases: u32,
    target: impl Fn(S::Value) -> bool,
) -> usize {
    let executions = std::cell::Cell::new(0usize);
    let accepted = std::cell::Cell::new(0usize);
    let result = runner(cases(default_cases)).run(&strategy, |value| {
        accepted.set(accepted.get() + usize::from(target(value)));
        executions.set(executions.get() + 1);
        Ok(())
    });
    if let Err(error) = result {
        panic!("fuzz target {name} failed: {error}");
    }
    eprintln!(
        "fuzz target {name}: {} executions, {} inputs accepted, the others refused with an error",
        executions.get(),
        accepted.get()
    );
    executions.get()
}

/// Runs `target` on `cases` mutations of `seeds`: each case a seed (`target` gets its index) with
/// one to six mutations (see [`fuzz_values`]).
pub fn fuzz(
    name: &str,
    seeds: &[Vec<u8>],
    default_cases: u32,
    target: impl Fn(usize, &[u8]) -> bool,
) -> usize {
    let strategy = (any::<Index>(), prop::collection::vec(mutation(), 1..7));
    fuzz_values(name, strategy, default_cases, |(seed, mutations)| {
        let seed = seed.index(seeds.len());
        target(seed, &apply(&seeds[seed], seeds, &mutations))
    })
}
