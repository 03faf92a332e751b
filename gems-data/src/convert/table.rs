//! A small streaming reader of delimited text tables (CSV, TSV, GroupLens' `::` and `|` files).
//!
//! Handles an optional quote character (a doubled quote inside quotes is a literal quote; quoted
//! fields may span lines, as pandas writes long cells), `\r\n` line ends, multi-character
//! delimiters, and files that are not UTF-8: such lines are read as Latin-1, the encoding of
//! GroupLens' MovieLens files, with a warning naming the first one unless the file is known to
//! be Latin-1 ([`TableReader::latin1_expected`]). Records carry the line they start on, for
//! error messages.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::rc::Rc;
use std::str::FromStr;

use crate::error::{DataError, Result};

/// Reads records one at a time.
pub(crate) struct TableReader {
    file: Rc<str>,
    reader: BufReader<File>,
    delimiter: String,
    quote: Option<char>,
    line: usize,
    bytes: Vec<u8>,
    /// The header's number of columns, once it is read: no record may have more fields.
    columns: Option<usize>,
    /// Whether a line read as Latin-1 is still to be warned about (once per file).
    warn_on_latin1: bool,
}

impl TableReader {
    /// Opens `path` with the given delimiter and quote character.
    pub fn open(path: &Path, delimiter: &str, quote: Option<char>) -> Result<Self> {
        let file = File::open(path).map_err(|source| DataError::io(path, "open", source))?;
        Ok(TableReader {
            file: Rc::from(path.display().to_string()),
            reader: BufReader::with_capacity(1 << 20, file),
            delimiter: delimiter.to_string(),
            quote,
            line: 0,
            bytes: Vec::new(),
            columns: None,
            warn_on_latin1: true,
        })
    }

    /// The reader of a file whose encoding is Latin-1 (GroupLens' MovieLens files): its lines
    /// that are not UTF-8 are read as Latin-1 without a warning.
    pub fn latin1_expected(mut self) -> Self {
        self.warn_on_latin1 = false;
        self
    }

    fn read_line(&mut self) -> Result<Option<String>> {
        self.bytes.clear();
        let read = self
            .reader
            .read_until(b'\n', &mut self.bytes)
            .map_err(|source| {
                DataError::record(
                    &self.file,
                    self.line + 1,
                    None,
                    format!("cannot read: {source}"),
                )
            })?;
        if read == 0 {
            return Ok(None);
        }
        self.line += 1;
        while matches!(self.bytes.last(), Some(b'\n' | b'\r')) {
            self.bytes.pop();
        }
        Ok(Some(match std::str::from_utf8(&self.bytes) {
            Ok(text) => text.to_string(),
            Err(_) => {
                if std::mem::take(&mut self.warn_on_latin1) {
                    tracing::warn!(
                        "{}:{}: not UTF-8; this line and any later such lines of the file are read as Latin-1",
                        self.file,
                        self.line
                    );
                }
                self.bytes.iter().map(|&byte| byte as char).collect()
            }
        }))
    }

    /// The next non-empty record; one with more fields than the header is an error (an
    /// unquoted delimiter inside a cell, which would shift every later column).
    pub fn next_row(&mut self) -> Result<Option<Row>> {
        let Some((line, fields)) = self.next_record()? else {
            return Ok(None);
        };
        if let Some(columns) = self.columns.filter(|&columns| fields.len() > columns) {
            return Err(DataError::record(
                &self.file,
                line,
                None,
                format!(
                    "the line has {} fields, the header {columns} (a delimiter inside a cell that is not quoted?)",
                    fields.len()
                ),
            ));
        }
        Ok(Some(Row {
            file: Rc::clone(&self.file),
            line,
            fields,
        }))
    }

    /// The next non-empty record and the line it starts on.
    fn next_record(&mut self) -> Result<Option<(usize, Vec<String>)>> {
        let Some(mut text) = self.read_line()? else {
            return Ok(None);
        };
        while text.is_empty() {
            match self.read_line()? {
                Some(next) => text = next,
                None => return Ok(None),
            }
        }
        let start = self.line;
        if let Some(quote) = self.quote {
            // Follow the quote state line by line, so that a cell spanning many lines is scanned
            // once (not re-split at every added line).
            let mut open = ends_inside_quotes(&text, &self.delimiter, quote, false);
            while open {
                let Some(next) = self.read_line()? else {
                    return Err(DataError::record(
                        &self.file,
                        start,
                        None,
                        "a quoted field is never closed before the end of the file",
                    ));
                };
                open = ends_inside_quotes(&next, &self.delimiter, quote, true);
                text.push('\n');
                text.push_str(&next);
            }
        }
        let fields =
            split_fields(&text, &self.delimiter, self.quote).expect("quotes are balanced here");
        Ok(Some((start, fields)))
    }

    /// Reads the header record and returns the column names.
    pub fn header(&mut self) -> Result<Header> {
        match self.next_record()? {
            Some((_, names)) => {
                self.columns = Some(names.len());
                Ok(Header {
                    file: self.file.to_string(),
                    names,
                })
            }
            None => Err(DataError::file(
                &self.file,
                "the file is empty; a header line was expected",
            )),
        }
    }
}

/// Whether a quoted field is still open at the end of `line`, given whether one was open at its
/// start (the same state machine as [`split_fields`]).
fn ends_inside_quotes(line: &str, delimiter: &str, quote: char, mut in_quotes: bool) -> bool {
    let mut at_field_start = !in_quotes;
    let mut rest = line;
    while let Some(character) = rest.chars().next() {
        let step = character.len_utf8();
        if in_quotes {
            if character == quote {
                if rest[step..].starts_with(quote) {
                    rest = &rest[2 * step..];
                    continue;
                }
                in_quotes = false;
            }
            rest = &rest[step..];
            continue;
        }
        if rest.starts_with(delimiter) {
            at_field_start = true;
            rest = &rest[delimiter.len()..];
            continue;
        }
        if at_field_start && character == quote {
            in_quotes = true;
        }
        at_field_start = false;
        rest = &rest[step..];
    }
    in_quotes
}

/// Splits one record; `None` when a quoted field continues on the next line.
fn split_fields(text: &str, delimiter: &str, quote: Option<char>) -> Option<Vec<String>> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut in_quotes = false;
    let mut at_field_start = true;
    let mut rest = text;
    while let Some(character) = rest.chars().next() {
        if in_quotes {
            let step = character.len_utf8();
            if Some(character) == quote {
                if rest[step..].starts_with(character) {
                    field.push(character);
                    rest = &rest[2 * step..];
                    continue;
                }
                in_quotes = false;
            } else {
                field.push(character);
            }
            rest = &rest[step..];
            continue;
        }
        if rest.starts_with(delimiter) {
            fields.push(std::mem::take(&mut field));
            rest = &rest[delimiter.len()..];
            at_field_start = true;
            continue;
        }
        if at_field_start && Some(character) == quote {
            in_quotes = true;
        } else {
            field.push(character);
        }
        at_field_start = false;
        rest = &rest[character.len_utf8()..];
    }
    if in_quotes {
        return None;
    }
    fields.push(field);
    Some(fields)
}

/// One record with its location, and typed access that names the column in errors.
pub(crate) struct Row {
    file: Rc<str>,
    /// The line the record starts on.
    pub line: usize,
    fields: Vec<String>,
}

impl Row {
    /// An error about column `name` of this row.
    pub fn error(&self, name: &str, message: impl Into<String>) -> DataError {
        DataError::record(&self.file, self.line, Some(name), message)
    }

    /// The text of column `index` (named `name` in errors).
    pub fn text(&self, index: usize, name: &str) -> Result<&str> {
        self.fields.get(index).map(String::as_str).ok_or_else(|| {
            self.error(
                name,
                format!(
                    "the line has {} fields, the column is number {}",
                    self.fields.len(),
                    index + 1
                ),
            )
        })
    }

    /// Column `index` parsed as `T` (surrounding spaces ignored).
    pub fn parse<T: FromStr>(&self, index: usize, name: &str, expected: &str) -> Result<T> {
        let text = self.text(index, name)?.trim();
        text.parse()
            .map_err(|_| self.error(name, format!("expected {expected}, got {text:?}")))
    }

    /// Column `index` as a finite number (`nan` and `inf` are refused).
    pub fn finite(&self, index: usize, name: &str, expected: &str) -> Result<f64> {
        let value: f64 = self.parse(index, name, expected)?;
        if !value.is_finite() {
            return Err(self.error(name, format!("expected {expected}, got {value}")));
        }
        Ok(value)
    }

    /// Column `index` as a non-negative integer id (accepting integral floats such as `5.0`
    /// below 2⁵³, where every integer is a float: beyond, two ids could read as one).
    pub fn id(&self, index: usize, name: &str) -> Result<u64> {
        const EXACT: f64 = 9_007_199_254_740_992.0;
        let text = self.text(index, name)?.trim();
        if let Ok(value) = text.parse::<u64>() {
            return Ok(value);
        }
        match text.parse::<f64>() {
            Ok(value) if value >= 0.0 && value.fract() == 0.0 && value < EXACT => Ok(value as u64),
            Ok(value) if value >= EXACT && value.is_finite() => Err(self.error(
                name,
                format!(
                    "the id {text} is written as a float too large to hold every integer; write it as an integer"
                ),
            )),
            _ => Err(self.error(
                name,
                format!("expected a non-negative integer id, got {text:?}"),
            )),
        }
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }
}

/// Column names of a table, for lookups that explain what is missing.
pub(crate) struct Header {
    file: String,
    names: Vec<String>,
}

impl Header {
    /// Position of the column `name` (compared after stripping RecBole's `:type` suffix).
    pub fn find(&self, name: &str) -> Option<usize> {
        self.names
            .iter()
            .position(|column| column.split(':').next().unwrap_or(column).trim() == name)
    }

    /// Position of `name`, or an error listing the columns present.
    pub fn require(&self, name: &str) -> Result<usize> {
        self.find(name).ok_or_else(|| {
            DataError::file(
                &self.file,
                format!(
                    "missing column \"{name}\"; the header has: {}",
                    self.names.join(", ")
                ),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{Row, TableReader, ends_inside_quotes, split_fields};

    #[test]
    fn numbers_must_be_finite_and_float_ids_exact() {
        let row = Row {
            file: "rows.csv".into(),
            line: 7,
            fields: [
                "nan",
                "1.0",
                "5.0",
                "9007199254740993.0",
                "9007199254740993",
            ]
            .map(String::from)
            .to_vec(),
        };
        let error = row.finite(0, "click", "0 or 1").unwrap_err().to_string();
        assert!(
            error.contains("rows.csv:7") && error.contains("expected 0 or 1, got NaN"),
            "{error}"
        );
        assert_eq!(row.finite(1, "click", "0 or 1").unwrap(), 1.0);
        assert_eq!(row.id(2, "user_id").unwrap(), 5);
        let error = row.id(3, "user_id").unwrap_err().to_string();
        assert!(error.contains("write it as an integer"), "{error}");
        assert_eq!(row.id(4, "user_id").unwrap(), 9_007_199_254_740_993);
    }

    #[test]
    fn a_row_with_more_fields_than_the_header_is_refused_with_its_line() {
        let path =
            std::env::temp_dir().join(format!("gems-table-{}-items.csv", std::process::id()));
        std::fs::write(
            &path,
            "id,title,year\n1,\"Heat, the film\",1995\n\n2,Heat, the film,1995\n",
        )
        .unwrap();
        let mut reader = TableReader::open(&path, ",", Some('"')).unwrap();
        reader.header().unwrap();
        let row = reader.next_row().unwrap().unwrap();
        assert_eq!(row.fields, ["1", "Heat, the film", "1995"]);
        let error = reader.next_row().err().unwrap().to_string();
        std::fs::remove_file(&path).unwrap();
        assert!(
            error.contains("items.csv:4") && error.contains("the line has 4 fields, the header 3"),
            "{error}"
        );
    }

    #[test]
    fn splits_quoted_fields_with_delimiters_quotes_and_open_quotes() {
        assert_eq!(
            split_fields(r#"a,"b,c","say ""hi""",,d"#, ",", Some('"')).unwrap(),
            vec!["a", "b,c", "say \"hi\"", "", "d"]
        );
        assert_eq!(
            split_fields("1::Toy Story (1995)::Animation|Comedy", "::", None).unwrap(),
            vec!["1", "Toy Story (1995)", "Animation|Comedy"]
        );
        assert!(split_fields("a,\"open", ",", Some('"')).is_none());
        assert!(ends_inside_quotes("a,\"open", ",", '"', false));
        assert!(ends_inside_quotes("still \"\"inside", ",", '"', true));
        assert!(!ends_inside_quotes("closed\",b", ",", '"', true));
        assert_eq!(
            split_fields("it's,fine", ",", Some('"')).unwrap(),
            vec!["it's", "fine"]
        );
    }
}
