//! A data directory in the unified format: loading (streamed and validated), writing, and the
//! preparation pipeline convert → validate → split → sample negatives.
//!
//! Layout (see `gems-data/FORMAT.md`):
//! - `dataset.json`: the [`DatasetManifest`];
//! - `items.jsonl`: the catalogue;
//! - `requests.jsonl`: all requests, as converters write them before splitting;
//! - `train.jsonl`, `valid.jsonl`, `test.jsonl`: the leave-one-out splits, valid/test with their
//!   fixed negatives.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::convert::ConvertedDataset;
use crate::error::{DataError, Result};
use crate::negatives::{NegativeReport, NegativeSampling, sample_negatives};
use crate::reader::{JsonlReader, read_manifest, write_jsonl, write_manifest};
use crate::schema::{
    DatasetManifest, FORMAT_VERSION, Item, ItemId, ManifestCounts, NegativesRecord, Request,
    TaskCounts,
};
use crate::split::{SplitOptions, SplitReport, leave_one_out};
use crate::validate::{ValidationPolicy, ValidationReport, Validator, validate_in_memory};

/// The manifest's file name.
pub const MANIFEST_FILE: &str = "dataset.json";
/// The catalogue's file name.
pub const ITEMS_FILE: &str = "items.jsonl";
/// The unsplit requests' file name.
pub const REQUESTS_FILE: &str = "requests.jsonl";
/// The split files' stems, in order.
pub const SPLITS: [&str; 3] = ["train", "valid", "test"];

/// A prepared (split) dataset in memory.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// What it is and where it came from.
    pub manifest: DatasetManifest,
    /// The catalogue.
    pub items: Vec<Item>,
    /// Training requests.
    pub train: Vec<Request>,
    /// Validation requests (with fixed negatives).
    pub valid: Vec<Request>,
    /// Test requests (with fixed negatives).
    pub test: Vec<Request>,
}

impl Dataset {
    /// The ids of the catalogue, in order.
    pub fn catalogue(&self) -> Vec<ItemId> {
        self.items.iter().map(|item| item.id).collect()
    }

    /// The requests of the split named `train`, `valid` or `test`.
    pub fn split(&self, name: &str) -> Option<&[Request]> {
        match name {
            "train" => Some(&self.train),
            "valid" => Some(&self.valid),
            "test" => Some(&self.test),
            _ => None,
        }
    }

    /// Writes the directory (creating it): manifest, catalogue and the three split files.
    pub fn write(&self, directory: &Path) -> Result<()> {
        std::fs::create_dir_all(directory)
            .map_err(|source| DataError::io(directory, "create", source))?;
        write_jsonl(&directory.join(ITEMS_FILE), &self.items)?;
        for name in SPLITS {
            let requests = self.split(name).expect("known split");
            write_jsonl(&directory.join(format!("{name}.jsonl")), requests)?;
        }
        write_manifest(&directory.join(MANIFEST_FILE), &self.manifest)
    }
}

fn read_items(directory: &Path, validator: &mut Validator) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    let mut reader = JsonlReader::<Item>::open(&directory.join(ITEMS_FILE))?;
    let file = reader.file_name().to_string();
    for entry in &mut reader {
        let (line, item) = entry?;
        if let Some(item) = validator.add_item(item, &format!("{file}:{line}")) {
            items.push(item);
        }
    }
    Ok(items)
}

fn read_requests(path: &Path, validator: &mut Validator) -> Result<Vec<Request>> {
    let mut requests = Vec::new();
    let mut reader = JsonlReader::<Request>::open(path)?;
    let file = reader.file_name().to_string();
    for entry in &mut reader {
        let (line, request) = entry?;
        if let Some(request) = validator.check_request(request, &format!("{file}:{line}")) {
            requests.push(request);
        }
    }
    Ok(requests)
}

/// Loads a prepared directory, streaming and validating every line under `policy`.
///
/// Errors name the file and line (and field) of the first malformed line; validation problems are
/// counted in the returned report, or make the load fail under the strict policy.
pub fn load_dataset(
    directory: &Path,
    policy: ValidationPolicy,
) -> Result<(Dataset, ValidationReport)> {
    let manifest = read_manifest(&directory.join(MANIFEST_FILE))?;
    let mut validator = Validator::new(policy);
    let items = read_items(directory, &mut validator)?;
    let mut splits = Vec::with_capacity(3);
    for name in SPLITS {
        let path = directory.join(format!("{name}.jsonl"));
        if !path.exists() {
            return Err(DataError::file(
                &path.display().to_string(),
                "missing; a prepared directory holds train.jsonl, valid.jsonl and test.jsonl (run the prepare step on requests.jsonl)",
            ));
        }
        splits.push(read_requests(&path, &mut validator)?);
    }
    let report = validator.finish()?;
    check_not_empty(&directory.display().to_string(), &items, &splits[0], || {
        format!(" (read from {ITEMS_FILE} and train.jsonl, after validation): nothing to train on")
    })?;
    tracing::info!(
        directory = %directory.display(),
        items = items.len(),
        requests = report.requests_kept,
        problems = report.issues.len(),
        "loaded prepared dataset"
    );
    let test = splits.pop().expect("three splits");
    let valid = splits.pop().expect("three splits");
    let train = splits.pop().expect("three splits");
    Ok((
        Dataset {
            manifest,
            items,
            train,
            valid,
            test,
        },
        report,
    ))
}

/// Loads a converted (unsplit) directory: manifest, catalogue and `requests.jsonl`, validated.
pub fn load_converted(
    directory: &Path,
    policy: ValidationPolicy,
) -> Result<(ConvertedDataset, ValidationReport)> {
    let manifest = read_manifest(&directory.join(MANIFEST_FILE))?;
    let mut validator = Validator::new(policy);
    let items = read_items(directory, &mut validator)?;
    let requests = read_requests(&directory.join(REQUESTS_FILE), &mut validator)?;
    let report = validator.finish()?;
    let converted = ConvertedDataset {
        name: manifest.name,
        source: manifest.source,
        items,
        requests,
        proxy_queries: manifest.proxy_queries,
        notes: manifest.notes,
        ..ConvertedDataset::default()
    };
    Ok((converted, report))
}

/// Writes a converted (unsplit) directory: manifest, catalogue and `requests.jsonl`.
pub fn write_converted(converted: &ConvertedDataset, directory: &Path) -> Result<()> {
    check_not_empty(
        &converted.name,
        &converted.items,
        &converted.requests,
        || format!("; the conversion counted:\n{}", converted.report),
    )?;
    std::fs::create_dir_all(directory)
        .map_err(|source| DataError::io(directory, "create", source))?;
    write_jsonl(&directory.join(ITEMS_FILE), &converted.items)?;
    write_jsonl(&directory.join(REQUESTS_FILE), &converted.requests)?;
    let mut notes = converted.notes.clone();
    notes.extend(converted.report.notes());
    let manifest = build_manifest(
        ManifestHeader {
            name: &converted.name,
            source: &converted.source,
            proxy_queries: converted.proxy_queries,
        },
        converted.items.len(),
        &[("requests", &converted.requests)],
        None,
        notes,
    );
    write_manifest(&directory.join(MANIFEST_FILE), &manifest)
}

/// Refuses a dataset without items or requests, saying which and adding `details()`.
fn check_not_empty(
    name: &str,
    items: &[Item],
    requests: &[Request],
    details: impl FnOnce() -> String,
) -> Result<()> {
    let what = match (items.is_empty(), requests.is_empty()) {
        (false, false) => return Ok(()),
        (true, true) => "no items and no requests",
        (true, false) => "no items",
        (false, true) => "no requests",
    };
    Err(DataError::EmptyDataset {
        name: name.to_string(),
        reason: format!(
            "{what}{}; check the source files and the options that drop records (filters, min_history)",
            details()
        ),
    })
}

struct ManifestHeader<'a> {
    name: &'a str,
    source: &'a str,
    proxy_queries: bool,
}

fn build_manifest(
    header: ManifestHeader<'_>,
    items: usize,
    files: &[(&str, &[Request])],
    negatives: Option<NegativesRecord>,
    notes: Vec<String>,
) -> DatasetManifest {
    let mut users = HashSet::new();
    let mut counts = ManifestCounts {
        items,
        ..ManifestCounts::default()
    };
    for (name, requests) in files {
        users.extend(requests.iter().map(|request| request.user));
        counts
            .requests
            .insert(name.to_string(), TaskCounts::of(requests));
    }
    counts.users = users.len();
    DatasetManifest {
        format_version: FORMAT_VERSION,
        name: header.name.to_string(),
        source: header.source.to_string(),
        proxy_queries: header.proxy_queries,
        counts,
        negatives,
        notes,
    }
}

/// Options of [`prepare`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrepareOptions {
    /// What validation does with problems.
    pub validation: ValidationPolicy,
    /// Leave-one-out options.
    pub split: SplitOptions,
    /// Negatives for valid and test.
    pub negatives: NegativeSampling,
}

/// Everything [`prepare`] counted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparationReport {
    /// Validation counts.
    pub validation: ValidationReport,
    /// Split counts.
    pub split: SplitReport,
    /// Negative sampling counts for valid and test together.
    pub negatives: NegativeReport,
}

/// The sentence that records a split (a note of the manifest).
pub fn split_note(report: &SplitReport, options: &SplitOptions) -> String {
    format!(
        "split: leave-one-out by time over {} (user, task) groups; {} groups with fewer than {} requests kept entirely in train ({} requests)",
        report.groups,
        report.groups_kept_in_train,
        options.min_requests_for_holdout,
        report.requests_of_small_groups
    )
}

/// The sentence that records the negatives of valid and test (a note of the manifest).
pub fn negatives_note(record: &NegativesRecord, report: &NegativeReport) -> String {
    format!(
        "negatives: {record}; {} requests got fewer (catalogue too small)",
        report.requests_short
    )
}

/// Validates, splits (leave-one-out by time per user and task) and samples the fixed negatives of
/// valid and test; the manifest's notes record every count.
pub fn prepare(
    converted: ConvertedDataset,
    options: PrepareOptions,
) -> Result<(Dataset, PreparationReport)> {
    let ConvertedDataset {
        name,
        source,
        items,
        requests,
        proxy_queries,
        notes: converted_notes,
        report: conversion,
    } = converted;
    let (items, requests, validation) = validate_in_memory(items, requests, options.validation)?;
    check_not_empty(&name, &items, &requests, || {
        format!(
            " ({} of {} requests passed validation)",
            validation.requests_kept, validation.requests_read
        )
    })?;
    let mut split = leave_one_out(requests, options.split);
    let catalogue: Vec<ItemId> = items.iter().map(|item| item.id).collect();
    let record = NegativesRecord {
        per_request: options.negatives.per_request,
        seed: options.negatives.seed,
    };
    let mut negatives = sample_negatives(&mut split.valid, &catalogue, options.negatives);
    let test_negatives = sample_negatives(
        &mut split.test,
        &catalogue,
        NegativeSampling {
            seed: record.test_seed(),
            ..options.negatives
        },
    );
    negatives.requests += test_negatives.requests;
    negatives.requests_short += test_negatives.requests_short;

    let mut notes = converted_notes;
    notes.extend(conversion.notes());
    notes.extend(validation.notes());
    notes.push(split_note(&split.report, &options.split));
    notes.push(negatives_note(&record, &negatives));
    let manifest = build_manifest(
        ManifestHeader {
            name: &name,
            source: &source,
            proxy_queries,
        },
        items.len(),
        &[
            ("train", &split.train),
            ("valid", &split.valid),
            ("test", &split.test),
        ],
        Some(record),
        notes,
    );
    tracing::info!(
        train = split.train.len(),
        valid = split.valid.len(),
        test = split.test.len(),
        items = items.len(),
        "prepared dataset {name}"
    );
    let report = PreparationReport {
        validation,
        split: split.report,
        negatives,
    };
    Ok((
        Dataset {
            manifest,
            items,
            train: split.train,
            valid: split.valid,
            test: split.test,
        },
        report,
    ))
}
