//! A parser for the Python/numpy literals that pandas writes into CSV cells.
//!
//! `DataFrame.to_csv` stores list and array cells as their `str()`: numpy arrays print without
//! commas and wrap lines (`[1151720  927325\n 1158042]`), arrays of dicts print one dict per line
//! (`[{'click': 1.0, 'note_idx': 785089, 'page_time': nan} {...}]`), plain lists print with commas.
//! This parser accepts all of those, JSON (which is a subset apart from `true`/`false`/`null`,
//! also accepted), tuples, and `array(...)` wrappers. numpy's `...` summarisation of long arrays is
//! rejected with a hint, since the elided values are lost. Containers nested deeper than
//! [`MAX_LITERAL_DEPTH`] are refused (real cells nest two or three levels), so that no cell can
//! exhaust the stack.

/// Deepest nesting of lists, tuples and dicts in one cell.
pub(crate) const MAX_LITERAL_DEPTH: usize = 64;

/// A Python value, as parsed from a CSV cell or decoded from a pickled DataFrame cell.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum PythonValue {
    None,
    Bool(bool),
    Integer(i64),
    Float(f64),
    Text(String),
    List(Vec<PythonValue>),
    Dict(Vec<(PythonValue, PythonValue)>),
    /// A value of another type (from a pickle), described.
    Opaque(String),
}

impl PythonValue {
    /// The value as an integer, accepting integral floats (`785089.0`) that an `i64` holds
    /// (`1e30` is not one: it is not rounded to the largest integer).
    pub fn as_integer(&self) -> Option<i64> {
        // 2⁶³, the first float past `i64::MAX`.
        const BEYOND: f64 = 9_223_372_036_854_775_808.0;
        match self {
            PythonValue::Integer(value) => Some(*value),
            PythonValue::Float(value)
                if value.fract() == 0.0 && (-BEYOND..BEYOND).contains(value) =>
            {
                Some(*value as i64)
            }
            PythonValue::Bool(value) => Some(i64::from(*value)),
            _ => None,
        }
    }

    /// The value as a float (`True` is 1).
    pub fn as_float(&self) -> Option<f64> {
        match self {
            PythonValue::Integer(value) => Some(*value as f64),
            PythonValue::Float(value) => Some(*value),
            PythonValue::Bool(value) => Some(f64::from(u8::from(*value))),
            _ => None,
        }
    }

    /// The entry `key` of a dict with text keys.
    pub fn get(&self, key: &str) -> Option<&PythonValue> {
        match self {
            PythonValue::Dict(entries) => entries
                .iter()
                .find(|(name, _)| matches!(name, PythonValue::Text(text) if text == key))
                .map(|(_, value)| value),
            _ => None,
        }
    }

    /// The elements of a list.
    pub fn as_list(&self) -> Option<&[PythonValue]> {
        match self {
            PythonValue::List(elements) => Some(elements),
            _ => None,
        }
    }

    /// The value as a list of integers.
    pub fn as_integer_list(&self) -> Option<Vec<i64>> {
        self.as_list()?
            .iter()
            .map(PythonValue::as_integer)
            .collect()
    }
}

/// Parses a whole cell.
pub(crate) fn parse_literal(text: &str) -> Result<PythonValue, String> {
    let mut parser = Parser {
        text,
        position: 0,
        depth: 0,
    };
    let value = parser.value()?;
    parser.skip_space();
    if parser.position != text.len() {
        return Err(format!(
            "unexpected text after the value at offset {}",
            parser.position
        ));
    }
    Ok(value)
}

/// Parses a cell that must be a list of integers (ids), e.g. `[1 2 3]`, `[1, 2, 3]`, `[]`.
pub(crate) fn parse_integer_list(text: &str) -> Result<Vec<i64>, String> {
    let value = parse_literal(text)?;
    value
        .as_integer_list()
        .ok_or_else(|| format!("expected a list of integers, got {value:?}"))
}

struct Parser<'a> {
    text: &'a str,
    position: usize,
    /// Containers open at the current position.
    depth: usize,
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        &self.text[self.position..]
    }

    fn skip_space(&mut self) {
        let trimmed = self.rest().trim_start();
        self.position = self.text.len() - trimmed.len();
    }

    fn value(&mut self) -> Result<PythonValue, String> {
        self.skip_space();
        let rest = self.rest();
        let Some(first) = rest.chars().next() else {
            return Err("unexpected end of the cell".to_string());
        };
        if matches!(first, '[' | '(' | '{') || rest.starts_with("array(") {
            if self.depth >= MAX_LITERAL_DEPTH {
                return Err(format!(
                    "containers nested more than {MAX_LITERAL_DEPTH} levels deep at offset {}",
                    self.position
                ));
            }
            self.depth += 1;
            let value = self.container(first);
            self.depth -= 1;
            return value;
        }
        match first {
            '\'' | '"' => self.string(first).map(PythonValue::Text),
            '.' if rest.starts_with("...") => Err(
                "numpy shortened this array with '...', so values are missing; export the table with numpy.set_printoptions(threshold=sys.maxsize) or as JSON".to_string(),
            ),
            _ => self.word(),
        }
    }

    /// A list, tuple, dict or `array(...)` starting at `first`.
    fn container(&mut self, first: char) -> Result<PythonValue, String> {
        match first {
            '[' => self.sequence('[', ']'),
            '(' => self.sequence('(', ')'),
            '{' => self.dict(),
            _ => self.word(),
        }
    }

    fn sequence(&mut self, open: char, close: char) -> Result<PythonValue, String> {
        self.position += open.len_utf8();
        let mut elements = Vec::new();
        loop {
            self.skip_space();
            if self.rest().starts_with(close) {
                self.position += close.len_utf8();
                return Ok(PythonValue::List(elements));
            }
            if self.rest().starts_with(',') {
                self.position += 1;
                continue;
            }
            if self.rest().is_empty() {
                return Err(format!("a list is not closed with '{close}'"));
            }
            elements.push(self.value()?);
        }
    }

    fn dict(&mut self) -> Result<PythonValue, String> {
        self.position += 1;
        let mut entries = Vec::new();
        loop {
            self.skip_space();
            if self.rest().starts_with('}') {
                self.position += 1;
                return Ok(PythonValue::Dict(entries));
            }
            if self.rest().starts_with(',') {
                self.position += 1;
                continue;
            }
            if self.rest().is_empty() {
                return Err("a dict is not closed with '}'".to_string());
            }
            let key = self.value()?;
            self.skip_space();
            if !self.rest().starts_with(':') {
                return Err(format!("expected ':' after the dict key {key:?}"));
            }
            self.position += 1;
            let value = self.value()?;
            entries.push((key, value));
        }
    }

    fn string(&mut self, quote: char) -> Result<String, String> {
        self.position += 1;
        let mut output = String::new();
        let mut characters = self.rest().char_indices();
        while let Some((offset, character)) = characters.next() {
            if character == quote {
                self.position += offset + 1;
                return Ok(output);
            }
            if character != '\\' {
                output.push(character);
                continue;
            }
            let Some((_, escaped)) = characters.next() else {
                break;
            };
            match escaped {
                'n' => output.push('\n'),
                't' => output.push('\t'),
                'r' => output.push('\r'),
                'x' | 'u' => {
                    let digits = if escaped == 'x' { 2 } else { 4 };
                    let hex: String = (0..digits)
                        .filter_map(|_| characters.next().map(|(_, c)| c))
                        .collect();
                    let code = u32::from_str_radix(&hex, 16)
                        .map_err(|_| format!("bad \\{escaped} escape"))?;
                    output.push(char::from_u32(code).unwrap_or('\u{FFFD}'));
                }
                other => output.push(other),
            }
        }
        Err("a string is not closed".to_string())
    }

    fn word(&mut self) -> Result<PythonValue, String> {
        let rest = self.rest();
        let length = rest
            .find(|character: char| {
                character.is_whitespace() || matches!(character, ',' | ']' | ')' | '}' | ':' | '(')
            })
            .unwrap_or(rest.len());
        let start = self.position;
        self.position += length;
        let word = &self.text[start..start + length];
        if word == "array" && self.rest().starts_with('(') {
            // numpy's `array([...], dtype=...)`: keep the first argument.
            self.position += 1;
            let value = self.value()?;
            let close = self.rest().find(')').ok_or("array( is not closed")?;
            self.position += close + 1;
            return Ok(value);
        }
        match word {
            "None" | "null" => Ok(PythonValue::None),
            "True" | "true" => Ok(PythonValue::Bool(true)),
            "False" | "false" => Ok(PythonValue::Bool(false)),
            "nan" | "NaN" => Ok(PythonValue::Float(f64::NAN)),
            "inf" | "Infinity" => Ok(PythonValue::Float(f64::INFINITY)),
            "-inf" | "-Infinity" => Ok(PythonValue::Float(f64::NEG_INFINITY)),
            _ => {
                if let Ok(integer) = word.parse::<i64>() {
                    return Ok(PythonValue::Integer(integer));
                }
                word.parse::<f64>()
                    .map(PythonValue::Float)
                    .map_err(|_| format!("unexpected token {word:?}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_from_booleans_and_integral_floats_only_within_range() {
        assert_eq!(PythonValue::Bool(true).as_float(), Some(1.0));
        assert_eq!(PythonValue::Bool(false).as_float(), Some(0.0));
        assert_eq!(PythonValue::Float(785089.0).as_integer(), Some(785089));
        assert_eq!(
            PythonValue::Float(-4.0e18).as_integer(),
            Some(-4_000_000_000_000_000_000)
        );
        assert_eq!(PythonValue::Float(1e30).as_integer(), None);
        assert_eq!(
            PythonValue::Float(9_223_372_036_854_775_808.0).as_integer(),
            None
        );
        assert_eq!(PythonValue::Float(f64::NAN).as_integer(), None);
        assert_eq!(PythonValue::Float(2.5).as_integer(), None);
    }

    #[test]
    fn parses_numpy_arrays_lists_and_dict_arrays() {
        assert_eq!(
            parse_integer_list("[1151720  927325\n 1158042]").unwrap(),
            vec![1151720, 927325, 1158042]
        );
        assert_eq!(parse_integer_list("[20, 34, 3]").unwrap(), vec![20, 34, 3]);
        assert_eq!(parse_integer_list("[]").unwrap(), Vec::<i64>::new());
        let details =
            parse_literal("[{'click': 1.0, 'note_idx': 785089, 'page_time': nan, 'note_id': 'x\\'y'}\n {'click': 0, 'note_idx': 7}]").unwrap();
        let rows = details.as_list().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].get("click").unwrap().as_integer(), Some(1));
        assert_eq!(rows[0].get("note_idx").unwrap().as_integer(), Some(785089));
        assert!(
            rows[0]
                .get("page_time")
                .unwrap()
                .as_float()
                .unwrap()
                .is_nan()
        );
        assert_eq!(
            rows[0].get("note_id"),
            Some(&PythonValue::Text("x'y".to_string()))
        );
        assert_eq!(
            parse_literal("[array([7.7464e+04, 3.2e+02]) array([1., 2.])]")
                .unwrap()
                .as_list()
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            parse_literal(r#"[{"click": true, "note_idx": 5}]"#)
                .unwrap()
                .as_list()
                .unwrap()[0]
                .get("click"),
            Some(&PythonValue::Bool(true))
        );
        assert!(
            parse_integer_list("[1 2 ... 9]")
                .unwrap_err()
                .contains("numpy shortened")
        );
        assert!(parse_literal("[1, 2").is_err());
    }
}
