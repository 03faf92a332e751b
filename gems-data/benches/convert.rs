//! Converter throughput on an ml-1m-sized input, and synthetic generation time.
//!
//! Writes GroupLens-layout `ratings.dat` / `movies.dat` with ml-1m's sizes (6 040 users, 3 706
//! movies, 1 000 209 ratings, ≥ 20 ratings per user, Zipf-distributed movie popularity) into a
//! temporary directory, then times: the MovieLens conversion (read, proxy queries, histories),
//! preparation (validation, leave-one-out split, 99 negatives per valid/test request), writing the
//! prepared directory, loading it back with validation, and the synthetic generator.
//!
//! Run: `cargo bench -p gems-data --bench convert`.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use gems_data::ValidationPolicy;
use gems_data::convert::movielens::{ML100K_GENRES, MovieLensOptions, convert};
use gems_data::dataset::{PrepareOptions, load_dataset, prepare};
use gems_data::synthetic::{SyntheticConfig, generate};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const USERS: usize = 6_040;
const MOVIES: usize = 3_706;
const RATINGS: usize = 1_000_209;
/// MovieLens genres (ml-1m uses ml-100k's list without its `unknown`).
const GENRES: &[&str] = ML100K_GENRES.split_at(1).1;
const WORDS: [&str; 16] = [
    "night", "return", "story", "king", "love", "city", "dark", "last", "man", "river", "star",
    "secret", "summer", "lost", "blue", "house",
];

fn write_ml1m_sized_input(directory: &Path) {
    let mut generator = ChaCha8Rng::seed_from_u64(1);
    let mut movies = String::new();
    for movie in 1..=MOVIES {
        let title: Vec<&str> = (0..generator.random_range(1..4))
            .map(|_| WORDS[generator.random_range(0..WORDS.len())])
            .collect();
        let genres: Vec<&str> = (0..generator.random_range(1..4))
            .map(|_| GENRES[generator.random_range(0..GENRES.len())])
            .collect();
        writeln!(
            movies,
            "{movie}::{} ({})::{}",
            title.join(" "),
            1920 + movie % 80,
            genres.join("|")
        )
        .unwrap();
    }
    std::fs::write(directory.join("movies.dat"), movies).unwrap();

    // Ratings per user: 20 each plus the rest spread at random.
    let mut per_user = vec![20usize; USERS];
    for _ in 0..RATINGS - 20 * USERS {
        per_user[generator.random_range(0..USERS)] += 1;
    }
    // Zipf-like popularity by rejection: movie m accepted with probability 1 / m^0.8.
    let mut ratings = String::with_capacity(RATINGS * 26);
    for (user, &count) in per_user.iter().enumerate() {
        let mut seen = std::collections::HashSet::with_capacity(count);
        let mut time = 956_703_932 + generator.random_range(0..20_000_000i64);
        while seen.len() < count.min(MOVIES) {
            let movie = generator.random_range(1..=MOVIES);
            if generator.random::<f64>() > 1.0 / (movie as f64).powf(0.8) * 10.0
                || !seen.insert(movie)
            {
                continue;
            }
            time += generator.random_range(1..5_000);
            writeln!(
                ratings,
                "{}::{movie}::{}::{time}",
                user + 1,
                generator.random_range(1..=5)
            )
            .unwrap();
        }
    }
    std::fs::write(directory.join("ratings.dat"), ratings).unwrap();
}

fn main() {
    let directory = std::env::temp_dir().join(format!("gems-data-bench-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let started = Instant::now();
    write_ml1m_sized_input(&directory);
    let lines = std::fs::read_to_string(directory.join("ratings.dat"))
        .unwrap()
        .lines()
        .count();
    println!(
        "generated ml-1m-sized GroupLens input: {lines} ratings, {USERS} users, {MOVIES} movies in {:.2} s",
        started.elapsed().as_secs_f64()
    );

    let mut rows: Vec<(String, f64, usize, &str)> = Vec::new();
    let started = Instant::now();
    let converted = convert(&directory, &MovieLensOptions::default()).unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let requests = converted.requests.len();
    rows.push((
        "MovieLens convert (ratings.dat → requests)".into(),
        seconds,
        requests,
        "requests",
    ));

    let started = Instant::now();
    let (prepared, _) = prepare(converted, PrepareOptions::default()).unwrap();
    rows.push((
        "prepare: validate + split + 99 negatives".into(),
        started.elapsed().as_secs_f64(),
        requests,
        "requests",
    ));

    let output = directory.join("prepared");
    let started = Instant::now();
    prepared.write(&output).unwrap();
    rows.push((
        "write prepared directory (JSONL)".into(),
        started.elapsed().as_secs_f64(),
        requests,
        "requests",
    ));

    let started = Instant::now();
    let (loaded, _) = load_dataset(&output, ValidationPolicy::Strict).unwrap();
    rows.push((
        "load + validate prepared directory".into(),
        started.elapsed().as_secs_f64(),
        requests,
        "requests",
    ));
    assert_eq!(loaded.test.len(), prepared.test.len());

    let started = Instant::now();
    let synthetic = generate(&SyntheticConfig::default()).unwrap();
    rows.push((
        "synthetic generation (default config)".into(),
        started.elapsed().as_secs_f64(),
        synthetic.requests.len(),
        "requests",
    ));
    let started = Instant::now();
    let (synthetic_prepared, _) = prepare(synthetic, PrepareOptions::default()).unwrap();
    let synthetic_requests = synthetic_prepared.train.len()
        + synthetic_prepared.valid.len()
        + synthetic_prepared.test.len();
    rows.push((
        "synthetic prepare (split + negatives)".into(),
        started.elapsed().as_secs_f64(),
        synthetic_requests,
        "requests",
    ));

    println!(
        "{:<46} {:>10} {:>12} {:>16}",
        "step", "seconds", "count", "per second"
    );
    for (name, seconds, count, unit) in rows {
        println!(
            "{name:<46} {seconds:>10.3} {count:>12} {:>11.0} {unit}",
            count as f64 / seconds
        );
    }
    std::fs::remove_dir_all(&directory).unwrap();
}
