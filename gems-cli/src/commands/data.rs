//! `gems data ...`: convert a source dataset into the unified format (`gems-data/FORMAT.md`),
//! split it leave-one-out with fixed negatives, and describe a data directory.
//!
//! - `gems data convert <SOURCE> [INPUT] --out DIR` runs one converter of gems-data and writes an
//!   unsplit directory (`dataset.json`, `items.jsonl`, `requests.jsonl`). `synthetic` generates
//!   its data, so it takes no INPUT (its size and seed are flags).
//! - `gems data split DIR [--out DIR2]` validates, splits and samples negatives; without `--out`
//!   the split files are written into DIR beside `requests.jsonl`.
//! - `gems data stats DIR [--json]` summarises a split or unsplit directory.
//!
//! Progress goes to standard error (tracing), results to standard output.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use gems_data::convert::amazon_unisar::{self, AmazonUnisarOptions, TimestampUnit};
use gems_data::convert::kuaisar::{self, KuaiSarOptions};
use gems_data::convert::movielens::{self, MovieLensLayout, MovieLensOptions};
use gems_data::convert::qilin::{self, QilinOptions};
use gems_data::convert::{ConvertedDataset, FilterOptions, HistoryOptions};
use gems_data::dataset::{self, MANIFEST_FILE, PrepareOptions};
use gems_data::negatives::NegativeSampling;
use gems_data::schema::TaskCounts;
use gems_data::split::SplitOptions;
use gems_data::synthetic::{self, SyntheticConfig};
use gems_data::{DatasetStats, ValidationPolicy};
use serde::Serialize;

use crate::error::{CliError, Result, one_line};
use crate::run_dir;

/// What to do about a strict-validation failure in a `gems data` command.
const REPAIR_HINT: &str = "fix the input, or rerun with --on-invalid filter to repair or drop the offending records (counted)";

/// Commands on datasets in the unified format.
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Convert a source dataset into an unsplit directory of the unified format and print what
    /// was read, filtered and dropped.
    Convert(ConvertArgs),
    /// Validate an unsplit directory, split it leave-one-out by time per user and task, and
    /// sample the fixed negatives of valid and test.
    Split(SplitArgs),
    /// Describe a split or unsplit directory: sizes, requests per split and task, history
    /// lengths, queries, negatives and the validation report.
    Stats(StatsArgs),
}

impl DataCommand {
    /// Runs the command: progress on standard error, results on standard output.
    pub fn run(self) -> Result<()> {
        match self {
            DataCommand::Convert(args) => convert(&args),
            DataCommand::Split(args) => split(&args),
            DataCommand::Stats(args) => stats(&args),
        }
    }
}

/// The datasets `gems data convert` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Source {
    /// Qilin (Xiaohongshu): CSV exports of its parquet tables.
    Qilin,
    /// Amazon as preprocessed by UniSAR: `dataset/{rec,src}_{train,val,test}.pkl`.
    AmazonUnisar,
    /// KuaiSAR: `rec_inter.csv`, `src_inter.csv`, `item_features.csv`.
    Kuaisar,
    /// MovieLens ml-100k / ml-1m, GroupLens or RecBole layout, with proxy search queries.
    Movielens,
    /// The seeded synthetic dataset (generated, no INPUT).
    Synthetic,
}

impl Source {
    /// The name on the command line.
    fn name(self) -> String {
        self.to_possible_value()
            .expect("no variant is skipped")
            .get_name()
            .to_string()
    }

    /// What INPUT must hold, for error messages.
    fn expected_input(self) -> &'static str {
        match self {
            Source::Qilin => {
                "the directory of the Qilin CSV exports search_*.csv, recommendation_*.csv and notes.csv"
            }
            Source::AmazonUnisar => {
                "UniSAR's Amazon directory, or its dataset directory with the .pkl files"
            }
            Source::Kuaisar => {
                "the KuaiSAR directory with rec_inter.csv, src_inter.csv and item_features.csv"
            }
            Source::Movielens => {
                "a MovieLens ml-100k or ml-1m directory in GroupLens or RecBole layout"
            }
            Source::Synthetic => "no INPUT: the synthetic dataset is generated",
        }
    }
}

/// Unit of the `ts` column of UniSAR's Amazon pickles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TimeUnit {
    /// Unix seconds.
    Seconds,
    /// Unix milliseconds.
    Milliseconds,
}

impl From<TimeUnit> for TimestampUnit {
    fn from(unit: TimeUnit) -> Self {
        match unit {
            TimeUnit::Seconds => TimestampUnit::Seconds,
            TimeUnit::Milliseconds => TimestampUnit::Milliseconds,
        }
    }
}

/// What loading does with records that fail validation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnInvalid {
    /// Any problem is an error naming the first offending file, line and field.
    Strict,
    /// Repair or drop the offending records, counting each repair (see FORMAT.md).
    Filter,
}

impl From<OnInvalid> for ValidationPolicy {
    fn from(policy: OnInvalid) -> Self {
        match policy {
            OnInvalid::Strict => ValidationPolicy::Strict,
            OnInvalid::Filter => ValidationPolicy::Filter,
        }
    }
}

/// Arguments of `gems data convert`. Flags that do not apply to the chosen source are refused.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// The source dataset.
    #[arg(value_enum)]
    source: Source,
    /// The source's directory (not given for `synthetic`).
    input: Option<PathBuf>,
    /// Output directory (created; must be new or empty).
    #[arg(long)]
    out: PathBuf,
    /// Most recent items kept in a request's history.
    #[arg(long, default_value_t = HistoryOptions::default().max_history, value_parser = at_least_one)]
    max_history: usize,
    /// Fewest earlier items for an interaction to become a request.
    #[arg(long, default_value_t = HistoryOptions::default().min_history, value_parser = at_least_one)]
    min_history: usize,
    /// Drop a user's requests of a task when there are fewer [default: 3 for qilin, 0 (off)
    /// otherwise; not for synthetic].
    #[arg(long)]
    min_requests_per_task: Option<usize>,
    /// Keep only users with requests of both tasks [default: true for qilin, false otherwise; not
    /// for synthetic].
    #[arg(long)]
    require_both_tasks: Option<bool>,
    /// Iterated k-core over users and items [default: 3 for qilin, 0 (off) otherwise; not for
    /// synthetic].
    #[arg(long)]
    k_core: Option<usize>,
    /// amazon-unisar: unit of the `ts` column [default: seconds].
    #[arg(long, value_enum)]
    timestamp_unit: Option<TimeUnit>,
    /// movielens, synthetic: fraction of interactions that are searches [default: 0.5 for
    /// movielens, 0.4 for synthetic].
    #[arg(long, value_parser = fraction)]
    search_fraction: Option<f64>,
    /// movielens: seed of the task draw and proxy queries; synthetic: seed of the generator
    /// [default: 2026].
    #[arg(long)]
    seed: Option<u64>,
    /// movielens: keep only ratings at or above this value [default: all ratings].
    #[arg(long)]
    min_rating: Option<f64>,
    /// synthetic: number of users [default: 300].
    #[arg(long, value_parser = at_least_one)]
    users: Option<usize>,
    /// synthetic: number of categories, 1 to 16 [default: 16].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=16))]
    categories: Option<u64>,
    /// synthetic: items per category [default: 30].
    #[arg(long, value_parser = at_least_one)]
    items_per_category: Option<usize>,
}

/// Parses a whole number of at least 1.
fn at_least_one(text: &str) -> std::result::Result<usize, String> {
    match text.parse::<usize>() {
        Ok(value) if value >= 1 => Ok(value),
        _ => Err(format!(
            "expected a whole number of at least 1, got {text:?}"
        )),
    }
}

/// Parses a number between 0 and 1.
fn fraction(text: &str) -> std::result::Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if (0.0..=1.0).contains(&value) => Ok(value),
        _ => Err(format!("expected a number between 0 and 1, got {text:?}")),
    }
}

impl ConvertArgs {
    /// Refuses flags that the chosen source does not read, and an INPUT given to or missing from
    /// the wrong source.
    fn check(&self) -> Result<()> {
        use Source::{AmazonUnisar, Kuaisar, Movielens, Qilin, Synthetic};
        let converters: &[Source] = &[Qilin, AmazonUnisar, Kuaisar, Movielens];
        let source_flags: [(&str, bool, &[Source]); 10] = [
            (
                "--min-requests-per-task",
                self.min_requests_per_task.is_some(),
                converters,
            ),
            (
                "--require-both-tasks",
                self.require_both_tasks.is_some(),
                converters,
            ),
            ("--k-core", self.k_core.is_some(), converters),
            (
                "--timestamp-unit",
                self.timestamp_unit.is_some(),
                &[AmazonUnisar],
            ),
            (
                "--search-fraction",
                self.search_fraction.is_some(),
                &[Movielens, Synthetic],
            ),
            ("--seed", self.seed.is_some(), &[Movielens, Synthetic]),
            ("--min-rating", self.min_rating.is_some(), &[Movielens]),
            ("--users", self.users.is_some(), &[Synthetic]),
            ("--categories", self.categories.is_some(), &[Synthetic]),
            (
                "--items-per-category",
                self.items_per_category.is_some(),
                &[Synthetic],
            ),
        ];
        for (flag, given, sources) in source_flags {
            if given && !sources.contains(&self.source) {
                let names: Vec<String> = sources.iter().map(|source| source.name()).collect();
                return Err(CliError::Settings(format!(
                    "{flag} applies to {} only, not to {}",
                    names.join(", "),
                    self.source.name()
                )));
            }
        }
        match (&self.input, self.source) {
            (Some(input), Synthetic) => Err(CliError::Settings(format!(
                "synthetic takes no INPUT (got {}): it is generated; set its size and seed with --users, --categories, --items-per-category, --seed",
                input.display()
            ))),
            (None, source) if source != Synthetic => Err(CliError::Settings(format!(
                "{} needs INPUT: {}",
                source.name(),
                source.expected_input()
            ))),
            (Some(input), source) => match std::fs::metadata(input) {
                Err(error) => Err(CliError::io(
                    input,
                    &format!("cannot read INPUT, {}", source.expected_input()),
                    error,
                )),
                Ok(metadata) if !metadata.is_dir() => Err(CliError::Settings(format!(
                    "{}: INPUT is not a directory; give {}",
                    input.display(),
                    source.expected_input()
                ))),
                Ok(_) => Ok(()),
            },
            (None, _) => Ok(()),
        }
    }

    /// The filters: the source's defaults with the given flags applied.
    fn filter(&self, defaults: FilterOptions) -> FilterOptions {
        FilterOptions {
            min_requests_per_user_per_task: self
                .min_requests_per_task
                .unwrap_or(defaults.min_requests_per_user_per_task),
            require_both_tasks: self
                .require_both_tasks
                .unwrap_or(defaults.require_both_tasks),
            k_core: self.k_core.unwrap_or(defaults.k_core),
        }
    }

    /// Runs the converter (or the generator) of the chosen source.
    fn run_converter(&self) -> Result<ConvertedDataset> {
        let history = HistoryOptions {
            max_history: self.max_history,
            min_history: self.min_history,
        };
        let input = self.input.as_deref().unwrap_or(Path::new(""));
        let converted = match self.source {
            Source::Qilin => qilin::convert(
                input,
                &QilinOptions {
                    history,
                    filter: self.filter(QilinOptions::default().filter),
                },
            )?,
            Source::AmazonUnisar => amazon_unisar::convert(
                input,
                &AmazonUnisarOptions {
                    history,
                    filter: self.filter(FilterOptions::default()),
                    timestamp_unit: self
                        .timestamp_unit
                        .map_or(TimestampUnit::default(), TimestampUnit::from),
                },
            )?,
            Source::Kuaisar => kuaisar::convert(
                input,
                &KuaiSarOptions {
                    history,
                    filter: self.filter(FilterOptions::default()),
                },
            )?,
            Source::Movielens => {
                let layout = movielens::detect_layout(input)?;
                println!("MovieLens layout: {}", describe_layout(&layout));
                let defaults = MovieLensOptions::default();
                movielens::convert(
                    input,
                    &MovieLensOptions {
                        search_fraction: self.search_fraction.unwrap_or(defaults.search_fraction),
                        seed: self.seed.unwrap_or(defaults.seed),
                        min_rating: self.min_rating,
                        history,
                        filter: self.filter(defaults.filter),
                    },
                )?
            }
            Source::Synthetic => {
                let defaults = SyntheticConfig::default();
                synthetic::generate(&SyntheticConfig {
                    seed: self.seed.unwrap_or(defaults.seed),
                    users: self.users.unwrap_or(defaults.users),
                    categories: self
                        .categories
                        .map_or(defaults.categories, |categories| categories as usize),
                    items_per_category: self
                        .items_per_category
                        .unwrap_or(defaults.items_per_category),
                    search_fraction: self.search_fraction.unwrap_or(defaults.search_fraction),
                    history,
                    ..defaults
                })?
            }
        };
        Ok(converted)
    }
}

fn describe_layout(layout: &MovieLensLayout) -> String {
    match layout {
        MovieLensLayout::GroupLens100k => "GroupLens ml-100k (u.data + u.item)".to_string(),
        MovieLensLayout::GroupLens1m => "GroupLens ml-1m (ratings.dat + movies.dat)".to_string(),
        MovieLensLayout::RecBole { inter, item } => {
            format!("RecBole ({} + {})", file_name(inter), file_name(item))
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |name| name.to_string_lossy().into_owned(),
    )
}

/// Refuses an output path that is a file or a non-empty directory, so that no dataset is mixed
/// with files of an earlier one.
fn check_new_output(out: &Path) -> Result<()> {
    if !out.exists() {
        return Ok(());
    }
    if !out.is_dir() {
        return Err(CliError::Settings(format!(
            "--out {}: exists and is not a directory",
            out.display()
        )));
    }
    let mut entries = std::fs::read_dir(out)
        .map_err(|error| CliError::io(out, "--out: cannot list the directory", error))?;
    if entries.next().is_some() {
        return Err(CliError::Settings(format!(
            "--out {}: the directory is not empty; give a new or empty directory",
            out.display()
        )));
    }
    Ok(())
}

fn convert(args: &ConvertArgs) -> Result<()> {
    args.check()?;
    check_new_output(&args.out)?;
    match &args.input {
        Some(input) => tracing::info!("converting {} from {}", args.source.name(), input.display()),
        None => tracing::info!("generating the synthetic dataset"),
    }
    let converted = args.run_converter()?;
    println!("conversion report ({}):", converted.name);
    print!("{}", converted.report);
    if converted.requests.is_empty() {
        return Err(CliError::Settings(format!(
            "{}: no request is left after conversion (the report above counts what was dropped); nothing was written. Relax the filters (--min-requests-per-task, --require-both-tasks, --k-core) or check the input",
            args.source.name()
        )));
    }
    tracing::info!("writing {}", args.out.display());
    // Written beside --out and renamed into place: a failure leaves --out as it was.
    run_dir::replace_named_directory(&resolved(&args.out)?, |folder| {
        Ok(dataset::write_converted(&converted, folder)?)
    })?;
    let counts = TaskCounts::of(&converted.requests);
    let users: HashSet<u64> = converted
        .requests
        .iter()
        .map(|request| request.user)
        .collect();
    println!(
        "wrote {}: {} items, {} users, {} requests ({} search, {} rec){}",
        args.out.display(),
        converted.items.len(),
        users.len(),
        counts.total(),
        counts.search,
        counts.rec,
        if converted.proxy_queries {
            "; search queries are proxies built from item metadata"
        } else {
            ""
        }
    );
    println!("next: gems data split {}", args.out.display());
    Ok(())
}

/// Arguments of `gems data split`.
#[derive(Debug, Args)]
pub struct SplitArgs {
    /// An unsplit directory (written by `gems data convert`).
    directory: PathBuf,
    /// Output directory (new or empty) [default: DIRECTORY itself, beside requests.jsonl].
    #[arg(long)]
    out: Option<PathBuf>,
    /// What to do with records that fail validation.
    #[arg(long, value_enum, default_value_t = OnInvalid::Strict)]
    on_invalid: OnInvalid,
    /// Fixed negatives per valid/test request (at least 1: with none, the sampled protocol ranks
    /// the targets alone and every sampled metric, validation's included, is 1).
    #[arg(long, default_value_t = NegativeSampling::default().per_request, value_parser = at_least_one)]
    negatives: usize,
    /// Seed of the negatives (valid: SEED, test: the next seed).
    #[arg(long, default_value_t = NegativeSampling::default().seed)]
    seed: u64,
    /// Smallest (user, task) group that gives one request to valid and one to test; smaller
    /// groups stay in train.
    #[arg(long, default_value_t = SplitOptions::default().min_requests_for_holdout)]
    min_requests_for_holdout: usize,
}

fn split(args: &SplitArgs) -> Result<()> {
    let directory = &args.directory;
    // An earlier split that stopped between its two renames left the directory aside.
    let absolute = std::path::absolute(directory)
        .map_err(|e| CliError::io(directory, "cannot resolve the path", e))?;
    run_dir::recover_named_directory(&absolute)?;
    check_data_directory(directory)?;
    if directory.join("train.jsonl").exists() {
        return Err(CliError::Settings(format!(
            "{}: already split (train.jsonl exists); `gems data split` takes a directory written by `gems data convert`",
            directory.display()
        )));
    }
    let out = args.out.as_deref().unwrap_or(directory);
    let in_place = same_directory(out, directory);
    if !in_place {
        check_new_output(out)?;
    }
    let policy = ValidationPolicy::from(args.on_invalid);
    tracing::info!("loading {} ({policy:?} validation)", directory.display());
    let (mut converted, loaded) = one_line(
        directory,
        dataset::load_converted(directory, policy),
        REPAIR_HINT,
    )?;
    // `prepare` validates again, in memory, and finds nothing left to repair: the manifest keeps
    // the repairs made while reading the files.
    if !loaded.is_clean() {
        converted.notes.extend(loaded.notes());
    }
    let options = PrepareOptions {
        validation: policy,
        split: SplitOptions {
            min_requests_for_holdout: args.min_requests_for_holdout,
        },
        negatives: NegativeSampling {
            per_request: args.negatives,
            seed: args.seed,
        },
    };
    tracing::info!(
        "splitting and sampling {} negatives per valid/test request",
        args.negatives
    );
    let (prepared, report) = dataset::prepare(converted, options)?;
    tracing::info!("writing {}", out.display());
    // The whole directory is written beside it and renamed into place: a failure leaves it as it
    // was (unsplit, or absent), and a rerun starts afresh.
    let target = if in_place {
        directory
            .canonicalize()
            .map_err(|e| CliError::io(directory, "cannot resolve", e))?
    } else {
        resolved(out)?
    };
    run_dir::replace_named_directory(&target, |folder| {
        prepared.write(folder)?;
        if in_place {
            link_missing(&target, folder)?;
        }
        Ok(())
    })?;
    println!("{}", dataset::split_note(&report.split, &options.split));
    let record = prepared
        .manifest
        .negatives
        .expect("a split dataset records its negatives");
    println!("{}", dataset::negatives_note(&record, &report.negatives));
    let files = [
        ("train", &prepared.train[..]),
        ("valid", &prepared.valid[..]),
        ("test", &prepared.test[..]),
    ];
    println!("wrote {}", out.display());
    let stats = DatasetStats::of(&prepared.manifest, &prepared.items, &files, loaded);
    print!(
        "{}",
        Stats {
            directory: out,
            stats
        }
    );
    Ok(())
}

/// Arguments of `gems data stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// A split or unsplit directory of the unified format.
    directory: PathBuf,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// What loading does with records that fail validation (`filter` describes what would be
    /// kept and lists the problems).
    #[arg(long, value_enum, default_value_t = OnInvalid::Filter)]
    on_invalid: OnInvalid,
}

fn stats(args: &StatsArgs) -> Result<()> {
    let directory = &args.directory;
    check_data_directory(directory)?;
    let policy = ValidationPolicy::from(args.on_invalid);
    tracing::info!("loading {} ({policy:?} validation)", directory.display());
    let stats = if directory.join("train.jsonl").exists() {
        let (loaded, report) = one_line(
            directory,
            dataset::load_dataset(directory, policy),
            REPAIR_HINT,
        )?;
        let files = [
            ("train", &loaded.train[..]),
            ("valid", &loaded.valid[..]),
            ("test", &loaded.test[..]),
        ];
        DatasetStats::of(&loaded.manifest, &loaded.items, &files, report)
    } else {
        let manifest = gems_data::reader::read_manifest(&directory.join(MANIFEST_FILE))?;
        let (loaded, report) = one_line(
            directory,
            dataset::load_converted(directory, policy),
            REPAIR_HINT,
        )?;
        DatasetStats::of(
            &manifest,
            &loaded.items,
            &[("requests", &loaded.requests)],
            report,
        )
    };
    let stats = Stats { directory, stats };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&stats).expect("the summary serializes")
        );
    } else {
        print!("{stats}");
    }
    Ok(())
}

/// `path` made absolute with its parent resolved (and created when missing), so that the
/// temporary siblings of [`run_dir::replace_named_directory`] sit beside it.
fn resolved(path: &Path) -> Result<PathBuf> {
    let absolute =
        std::path::absolute(path).map_err(|e| CliError::io(path, "cannot resolve the path", e))?;
    let (Some(parent), Some(name)) = (absolute.parent(), absolute.file_name()) else {
        return Err(CliError::Settings(format!(
            "{}: give a directory by its name (not `/`, `.` or `..`)",
            path.display()
        )));
    };
    std::fs::create_dir_all(parent).map_err(|e| CliError::io(path, "cannot create", e))?;
    let parent = parent
        .canonicalize()
        .map_err(|e| CliError::io(parent, "cannot resolve the path", e))?;
    Ok(parent.join(name))
}

/// Brings every entry of `from` that `to` lacks into `to`: files as hard links (copies where
/// the file system has none), folders recursively. The originals are left untouched.
fn link_missing(from: &Path, to: &Path) -> Result<()> {
    let entries = std::fs::read_dir(from).map_err(|e| CliError::io(from, "cannot list", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| CliError::io(from, "cannot list", e))?;
        let (source, destination) = (entry.path(), to.join(entry.file_name()));
        if destination.exists() {
            continue;
        }
        let kind = entry
            .file_type()
            .map_err(|e| CliError::io(&source, "cannot read", e))?;
        if kind.is_dir() {
            std::fs::create_dir(&destination)
                .map_err(|e| CliError::io(&destination, "cannot create", e))?;
            link_missing(&source, &destination)?;
        } else if std::fs::hard_link(&source, &destination).is_err() {
            std::fs::copy(&source, &destination)
                .map_err(|e| CliError::io(&destination, "cannot copy", e))?;
        }
    }
    Ok(())
}

/// Whether `out` names the existing directory `directory` (by its canonical path).
fn same_directory(out: &Path, directory: &Path) -> bool {
    match (out.canonicalize(), directory.canonicalize()) {
        (Ok(out), Ok(directory)) => out == directory,
        _ => false,
    }
}

/// Refuses a path that is not a data directory, before any file of it is read.
fn check_data_directory(directory: &Path) -> Result<()> {
    let metadata = std::fs::metadata(directory).map_err(|error| {
        CliError::io(
            directory,
            "cannot read DIRECTORY, a data directory of the unified format",
            error,
        )
    })?;
    if !metadata.is_dir() {
        return Err(CliError::Settings(format!(
            "{}: not a directory; give a directory written by `gems data convert` or `gems data split`",
            directory.display()
        )));
    }
    Ok(())
}

/// What `gems data stats` shows: the numbers of the dataset at `directory`.
#[derive(Debug, Serialize)]
struct Stats<'a> {
    directory: &'a Path,
    #[serde(flatten)]
    stats: DatasetStats,
}

impl std::fmt::Display for Stats<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.stats.split { "split" } else { "unsplit" };
        writeln!(
            formatter,
            "{} ({kind}) at {}",
            self.stats.name,
            self.directory.display()
        )?;
        writeln!(formatter, "source: {}", self.stats.source)?;
        writeln!(
            formatter,
            "items: {}, users: {}",
            self.stats.items, self.stats.users
        )?;
        writeln!(
            formatter,
            "{:<10}{:>10}{:>10}{:>10}   negatives per request (min / mean / max)",
            "requests", "search", "rec", "total"
        )?;
        for name in ["requests", "train", "valid", "test"] {
            if let Some(file) = self.stats.requests.get(name) {
                let negatives = &file.negatives_per_request;
                writeln!(
                    formatter,
                    "  {name:<8}{:>10}{:>10}{:>10}   {} / {:.2} / {}",
                    file.search, file.rec, file.total, negatives.min, negatives.mean, negatives.max
                )?;
            }
        }
        for (what, distribution) in [
            ("history length", &self.stats.history_length),
            ("targets per request", &self.stats.targets_per_request),
        ] {
            writeln!(
                formatter,
                "{what}: mean {:.2}, median {}, max {} (min {})",
                distribution.mean, distribution.median, distribution.max, distribution.min
            )?;
        }
        let queries = &self.stats.queries;
        writeln!(
            formatter,
            "search queries: {} ({} typed, {} proxies built from item metadata), {} distinct",
            queries.search_requests, queries.typed, queries.proxy, queries.distinct
        )?;
        match self.stats.negatives_sampling {
            Some(record) => writeln!(formatter, "negatives: {record}")?,
            None => writeln!(formatter, "negatives: none sampled (not split yet)")?,
        }
        let policy = match self.stats.validation.policy {
            ValidationPolicy::Strict => "strict",
            ValidationPolicy::Filter => "filter",
        };
        write!(
            formatter,
            "validation ({policy}): {}",
            self.stats.validation
        )?;
        writeln!(formatter, "notes:")?;
        for note in &self.stats.notes {
            writeln!(formatter, "  - {note}")?;
        }
        Ok(())
    }
}
