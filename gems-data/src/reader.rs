//! Streaming JSONL reading and writing with errors that name file, line and field.
//!
//! Each line is first deserialized straight into its typed record (the fast path). Only when that
//! fails is the line parsed again as a generic JSON value and checked field by field against the
//! record's field list, so that the error can say `train.jsonl:17: field "task": expected "search"
//! or "rec", got "sarch"` instead of serde's column offsets.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::marker::PhantomData;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{DataError, Result};
use crate::schema::{DatasetManifest, FORMAT_VERSION, Item, Request};

/// The JSON shape a field must have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    /// A non-negative integer.
    UnsignedInteger,
    /// Any integer.
    Integer,
    /// A string.
    String,
    /// A string or null.
    OptionalString,
    /// `true` or `false`.
    Bool,
    /// `"search"` or `"rec"`.
    Task,
    /// An array of non-negative integers.
    UnsignedIntegerList,
    /// An array of strings.
    StringList,
}

/// One field of a record type: its name, whether it must be present, and its shape.
#[derive(Clone, Copy, Debug)]
pub struct FieldSpec {
    /// The JSON key.
    pub name: &'static str,
    /// Whether a line without it is an error.
    pub required: bool,
    /// The expected shape.
    pub kind: FieldKind,
}

/// A record type stored one per line, with the field list used to explain bad lines.
pub trait JsonRecord: DeserializeOwned + Serialize {
    /// Every field the record accepts.
    const FIELDS: &'static [FieldSpec];
}

const fn field(name: &'static str, required: bool, kind: FieldKind) -> FieldSpec {
    FieldSpec {
        name,
        required,
        kind,
    }
}

impl JsonRecord for Item {
    const FIELDS: &'static [FieldSpec] = &[
        field("id", true, FieldKind::UnsignedInteger),
        field("title", true, FieldKind::String),
        field("text", false, FieldKind::OptionalString),
        field("categories", false, FieldKind::StringList),
        field("key", false, FieldKind::OptionalString),
    ];
}

impl JsonRecord for Request {
    const FIELDS: &'static [FieldSpec] = &[
        field("user", true, FieldKind::UnsignedInteger),
        field("task", true, FieldKind::Task),
        field("history", true, FieldKind::UnsignedIntegerList),
        field("query", false, FieldKind::OptionalString),
        field("query_is_proxy", false, FieldKind::Bool),
        field("targets", true, FieldKind::UnsignedIntegerList),
        field("negatives", false, FieldKind::UnsignedIntegerList),
        field("timestamp", true, FieldKind::Integer),
        field("user_key", false, FieldKind::OptionalString),
    ];
}

/// Reads one record per line from a JSONL file, yielding `(line number, record)`.
///
/// Blank lines are skipped (they hold no record). The first malformed line ends the iteration with
/// an error naming the file, the line and, when it can, the field.
pub struct JsonlReader<T> {
    file_name: String,
    reader: BufReader<File>,
    buffer: String,
    line_number: usize,
    failed: bool,
    record: PhantomData<T>,
}

impl<T: JsonRecord> JsonlReader<T> {
    /// Opens `path` for streaming.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|source| DataError::io(path, "open", source))?;
        Ok(JsonlReader {
            file_name: path.display().to_string(),
            reader: BufReader::with_capacity(1 << 20, file),
            buffer: String::new(),
            line_number: 0,
            failed: false,
            record: PhantomData,
        })
    }

    /// The file's name as it appears in error messages.
    pub fn file_name(&self) -> &str {
        &self.file_name
    }
}

impl<T: JsonRecord> Iterator for JsonlReader<T> {
    type Item = Result<(usize, T)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            self.buffer.clear();
            self.line_number += 1;
            match self.reader.read_line(&mut self.buffer) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(source) => {
                    self.failed = true;
                    return Some(Err(DataError::record(
                        &self.file_name,
                        self.line_number,
                        None,
                        format!("cannot read the line: {source}; the file must be UTF-8 text"),
                    )));
                }
            }
            let line = self.buffer.trim();
            if line.is_empty() {
                continue;
            }
            let parsed = parse_record::<T>(line, &self.file_name, self.line_number);
            if parsed.is_err() {
                self.failed = true;
            }
            return Some(parsed.map(|record| (self.line_number, record)));
        }
    }
}

/// Parses one line into a record, explaining failures by file, line and field.
pub fn parse_record<T: JsonRecord>(line: &str, file_name: &str, line_number: usize) -> Result<T> {
    match serde_json::from_str::<T>(line) {
        Ok(record) => Ok(record),
        Err(typed_error) => Err(explain_line::<T>(line, file_name, line_number, typed_error)),
    }
}

fn explain_line<T: JsonRecord>(
    line: &str,
    file: &str,
    line_number: usize,
    typed_error: serde_json::Error,
) -> DataError {
    let value: Value = match serde_json::from_str(line) {
        Ok(value) => value,
        Err(syntax_error) => {
            return DataError::record(
                file,
                line_number,
                None,
                format!("not valid JSON ({syntax_error}); each line must be one JSON object"),
            );
        }
    };
    let Value::Object(object) = &value else {
        return DataError::record(
            file,
            line_number,
            None,
            format!("expected a JSON object, got {}", describe(&value)),
        );
    };
    for key in object.keys() {
        if !T::FIELDS.iter().any(|spec| spec.name == key) {
            let known: Vec<&str> = T::FIELDS.iter().map(|spec| spec.name).collect();
            return DataError::record(
                file,
                line_number,
                Some(key),
                format!("unknown field; the known fields are {}", known.join(", ")),
            );
        }
    }
    for spec in T::FIELDS {
        match object.get(spec.name) {
            None if spec.required => {
                return DataError::record(
                    file,
                    line_number,
                    Some(spec.name),
                    "missing; this field is required",
                );
            }
            None => {}
            Some(field_value) => {
                if let Err(message) = check_kind(spec.kind, field_value) {
                    return DataError::record(file, line_number, Some(spec.name), message);
                }
            }
        }
    }
    DataError::record(file, line_number, None, typed_error.to_string())
}

fn check_kind(kind: FieldKind, value: &Value) -> std::result::Result<(), String> {
    let expected = |what: &str| Err(format!("expected {what}, got {}", describe(value)));
    match kind {
        FieldKind::UnsignedInteger if value.as_u64().is_some() => Ok(()),
        FieldKind::UnsignedInteger => expected("a non-negative integer"),
        FieldKind::Integer if value.as_i64().is_some() => Ok(()),
        FieldKind::Integer => expected("an integer"),
        FieldKind::String if value.is_string() => Ok(()),
        FieldKind::String => expected("a string"),
        FieldKind::OptionalString if value.is_string() || value.is_null() => Ok(()),
        FieldKind::OptionalString => expected("a string or null"),
        FieldKind::Bool if value.is_boolean() => Ok(()),
        FieldKind::Bool => expected("true or false"),
        FieldKind::Task => match value.as_str() {
            Some("search" | "rec") => Ok(()),
            _ => expected("\"search\" or \"rec\""),
        },
        FieldKind::UnsignedIntegerList | FieldKind::StringList => {
            let Some(elements) = value.as_array() else {
                return expected("an array");
            };
            for (position, element) in elements.iter().enumerate() {
                let fits = match kind {
                    FieldKind::UnsignedIntegerList => element.as_u64().is_some(),
                    _ => element.is_string(),
                };
                if !fits {
                    let what = if kind == FieldKind::StringList {
                        "a string"
                    } else {
                        "a non-negative integer"
                    };
                    return Err(format!(
                        "element {position}: expected {what}, got {}",
                        describe(element)
                    ));
                }
            }
            Ok(())
        }
    }
}

/// A short rendering of a JSON value for error messages (long values are cut).
fn describe(value: &Value) -> String {
    let text = match value {
        Value::Array(_) => "an array".to_string(),
        Value::Object(_) => "an object".to_string(),
        Value::Null => "null".to_string(),
        other => other.to_string(),
    };
    if text.chars().count() > 60 {
        let cut: String = text.chars().take(57).collect();
        format!("{cut}...")
    } else {
        text
    }
}

/// Reads a whole JSONL file into memory (records only, line numbers dropped).
pub fn read_jsonl<T: JsonRecord>(path: &Path) -> Result<Vec<T>> {
    JsonlReader::<T>::open(path)?
        .map(|entry| entry.map(|(_, record)| record))
        .collect()
}

/// Writes records one per line.
pub fn write_jsonl<'a, T: Serialize + 'a>(
    path: &Path,
    records: impl IntoIterator<Item = &'a T>,
) -> Result<()> {
    let file = File::create(path).map_err(|source| DataError::io(path, "create", source))?;
    let mut writer = BufWriter::with_capacity(1 << 20, file);
    for record in records {
        serde_json::to_writer(&mut writer, record)
            .map_err(|error| DataError::io(path, "write", std::io::Error::other(error)))?;
        writer
            .write_all(b"\n")
            .map_err(|source| DataError::io(path, "write", source))?;
    }
    writer
        .flush()
        .map_err(|source| DataError::io(path, "write", source))
}

/// Reads `dataset.json`.
pub fn read_manifest(path: &Path) -> Result<DatasetManifest> {
    let text =
        std::fs::read_to_string(path).map_err(|source| DataError::io(path, "read", source))?;
    let manifest: DatasetManifest = serde_json::from_str(&text).map_err(|error| {
        DataError::record(
            &path.display().to_string(),
            error.line(),
            None,
            format!("{error}; see gems-data/FORMAT.md for the manifest's fields"),
        )
    })?;
    if manifest.format_version != FORMAT_VERSION {
        return Err(DataError::file(
            &path.display().to_string(),
            format!(
                "format_version {} is not supported (this build reads {FORMAT_VERSION}); re-run the converter",
                manifest.format_version
            ),
        ));
    }
    Ok(manifest)
}

/// Writes `dataset.json` (pretty-printed).
pub fn write_manifest(path: &Path, manifest: &DatasetManifest) -> Result<()> {
    let text = serde_json::to_string_pretty(manifest).expect("a manifest always serializes");
    std::fs::write(path, text + "\n").map_err(|source| DataError::io(path, "write", source))
}
