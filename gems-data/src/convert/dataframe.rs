//! Decoding a pickled pandas DataFrame (from [`crate::convert::pickle`]) into columns of cells.
//!
//! Understood layouts:
//! - `DataFrame.to_pickle` / `pickle.dump` of a DataFrame, pandas 0.2x–3.x: the frame's state holds
//!   a `BlockManager`, either built from `(blocks, axes)` with `_unpickle_block(values, placement,
//!   ndim)` blocks (recent pandas) or restored from the `"0.14.1"` state dict (`axes`, `blocks` with
//!   `values` and `mgr_locs`; older pandas). Block values are numpy arrays
//!   (`_reconstruct` + state, or `_frombuffer`) of integers, floats, booleans or Python objects,
//!   or extension arrays wrapping one.
//! - Plain containers, as `DataFrame.to_dict` pickles them: `{row: {column: value}}` (orient
//!   `index`, what the GEMS reference writes), `{column: {row: value}}` (orient `dict`),
//!   `{column: [values]}` (orient `list`) and `[{column: value}]` (orient `records`).
//!
//! Every count is checked against what the pickle holds: a block must have as many rows as the
//! frame's index and one row of values per column it places, a `RangeIndex` or slice may not name
//! more columns than the pickle could hold, every row of a `to_dict()` must have the same keys.
//! Cells are copied out of the shared object graph, so containers nested deeper than
//! [`MAX_CELL_DEPTH`] (a list that contains itself is infinitely deep) are refused, and the cells
//! of one frame may not expand beyond a budget proportional to the pickle's size.

use std::cell::Cell;
use std::collections::HashMap;

use crate::convert::pickle::{EXPANSION_PER_BYTE, Node, Pickle, Value, expansion_budget};
use crate::convert::python_literal::PythonValue;

/// Deepest nesting of containers inside one cell, and of wrappers around one array, that is read.
pub(crate) const MAX_CELL_DEPTH: usize = 64;

/// A decoded table: every column holds `rows` cells.
#[derive(Debug)]
pub(crate) struct Frame {
    /// Column names in order.
    pub columns: Vec<String>,
    data: Vec<Vec<PythonValue>>,
    /// Number of rows.
    pub rows: usize,
}

impl Frame {
    /// A frame, checking that there is one column of `rows` cells per name.
    fn new(columns: Vec<String>, data: Vec<Vec<PythonValue>>, rows: usize) -> Result<Self, String> {
        if columns.len() != data.len() {
            return Err(format!(
                "{} column names for {} columns",
                columns.len(),
                data.len()
            ));
        }
        if let Some((name, cells)) = columns
            .iter()
            .zip(&data)
            .find(|(_, cells)| cells.len() != rows)
        {
            return Err(format!(
                "column {name} has {} values but the frame has {rows} rows",
                cells.len()
            ));
        }
        Ok(Frame {
            columns,
            data,
            rows,
        })
    }

    /// The cells of column `name` (`rows` of them).
    pub fn column(&self, name: &str) -> Option<&[PythonValue]> {
        self.columns
            .iter()
            .position(|column| column == name)
            .map(|index| self.data[index].as_slice())
    }
}

enum ArrayData<'a> {
    Integer(Vec<i64>),
    Float(Vec<f64>),
    Object(&'a [Value]),
}

struct Array<'a> {
    shape: Vec<usize>,
    fortran: bool,
    data: ArrayData<'a>,
}

impl Array<'_> {
    fn len(&self) -> usize {
        match &self.data {
            ArrayData::Integer(values) => values.len(),
            ArrayData::Float(values) => values.len(),
            ArrayData::Object(values) => values.len(),
        }
    }

    /// `(rows, columns)` of a 2-D array; a 1-D (or 0-D) array is one row.
    fn matrix_shape(&self) -> (usize, usize) {
        match self.shape.as_slice() {
            [rows, columns] => (*rows, *columns),
            _ => (1, self.len()),
        }
    }
}

fn is_numpy(module: &str, core: &str) -> bool {
    module == format!("numpy.core.{core}") || module == format!("numpy._core.{core}")
}

fn key_text(value: &Value) -> String {
    match value {
        Value::Text(text) => text.to_string(),
        Value::Integer(number) => number.to_string(),
        other => format!("{other:?}"),
    }
}

/// The number of elements of `range(start, stop, step)`.
fn range_length(start: i64, stop: i64, step: i64) -> Result<u128, String> {
    let (start, stop, step) = (i128::from(start), i128::from(stop), i128::from(step));
    match step {
        0 => Err("a range with step 0".to_string()),
        step if step > 0 => Ok(((stop - start + step - 1).max(0) / step) as u128),
        step => Ok(((start - stop - step - 1).max(0) / -step) as u128),
    }
}

/// Decodes the pickle's root as a table.
pub(crate) fn frame_from_pickle(pickle: &Pickle) -> Result<Frame, String> {
    Decoder {
        pickle,
        budget: Cell::new(expansion_budget(pickle.input_len)),
    }
    .frame()
}

/// Reads tables and cells out of a pickle's object graph, within a copy budget.
struct Decoder<'a> {
    pickle: &'a Pickle,
    /// Cells that may still be produced.
    budget: Cell<usize>,
}

impl<'a> Decoder<'a> {
    fn frame(&self) -> Result<Frame, String> {
        let pickle = self.pickle;
        let root = &pickle.root;
        if let Some((_, "DataFrame", _, state)) = pickle
            .object(root)
            .filter(|(module, ..)| module.starts_with("pandas"))
        {
            let state = state.ok_or("a DataFrame without state")?;
            let manager = pickle
                .dict_get(state, "_mgr")
                .or_else(|| pickle.dict_get(state, "_data"))
                .ok_or("a DataFrame state without _mgr/_data")?;
            return self.frame_from_manager(manager);
        }
        if let Some(entries) = pickle.dict(root) {
            return self.frame_from_dict(entries);
        }
        if let Some(rows) = pickle.sequence(root) {
            let rows: Vec<(String, &[(Value, Value)])> = rows
                .iter()
                .enumerate()
                .map(|(index, row)| {
                    pickle
                        .dict(row)
                        .map(|entries| (index.to_string(), entries))
                        .ok_or("a list whose elements are not dicts")
                })
                .collect::<Result<_, _>>()?;
            return self.frame_from_rows(&rows);
        }
        Err(format!(
            "the pickle holds {}, not a pandas DataFrame or a to_dict() of one",
            self.describe(root)
        ))
    }

    /// Element `(row, column)` of `array` (of a 1-D array: element `column` of row 0).
    fn cell(&self, array: &Array<'a>, row: usize, column: usize) -> Result<PythonValue, String> {
        let (rows, columns) = array.matrix_shape();
        if row >= rows || column >= columns {
            return Err(format!(
                "element ({row}, {column}) is outside an array of shape {:?}",
                array.shape
            ));
        }
        // In range: shapes are checked against the element count when arrays are decoded.
        let index = if array.fortran {
            column * rows + row
        } else {
            row * columns + column
        };
        let missing = || format!("an array of shape {:?} lacks element {index}", array.shape);
        self.spend()?;
        match &array.data {
            ArrayData::Integer(values) => values
                .get(index)
                .map(|value| PythonValue::Integer(*value))
                .ok_or_else(missing),
            ArrayData::Float(values) => values
                .get(index)
                .map(|value| PythonValue::Float(*value))
                .ok_or_else(missing),
            ArrayData::Object(values) => self.to_cell(values.get(index).ok_or_else(missing)?, 0),
        }
    }

    /// Decodes a numpy array (or the array inside an extension array, `depth` wrappers down).
    fn decode_array(&self, value: &Value, depth: usize) -> Result<Option<Array<'a>>, String> {
        let pickle = self.pickle;
        let Some((module, name, arguments, state)) = pickle.object(value) else {
            return Ok(None);
        };
        if is_numpy(module, "multiarray") && name == "_reconstruct" {
            let state = state.ok_or("a numpy array without state")?;
            let parts = pickle
                .sequence(state)
                .ok_or("a numpy array state is not a tuple")?;
            let parts = match parts.len() {
                5 => &parts[1..],
                4 => parts,
                length => return Err(format!("a numpy array state has {length} parts")),
            };
            let shape = self.shape_of(&parts[0])?;
            let fortran = matches!(parts[2], Value::Bool(true));
            return self
                .array_from(&parts[1], shape, fortran, &parts[3])
                .map(Some);
        }
        if is_numpy(module, "numeric") && name == "_frombuffer" {
            let [buffer, dtype, shape, order] = arguments else {
                return Err("numpy _frombuffer with unexpected arguments".to_string());
            };
            let shape = self.shape_of(shape)?;
            let fortran = matches!(order, Value::Text(text) if &**text == "F");
            return self.array_from(dtype, shape, fortran, buffer).map(Some);
        }
        // Extension arrays (e.g. pandas' StringArray) keep their numpy array in their state.
        if let Some(state) = state {
            if depth >= MAX_CELL_DEPTH {
                return Err(format!(
                    "an array wrapped more than {MAX_CELL_DEPTH} levels deep (a self-referencing object?)"
                ));
            }
            for part in pickle
                .sequence(state)
                .unwrap_or(std::slice::from_ref(state))
            {
                if let Some(array) = self.decode_array(part, depth + 1)? {
                    return Ok(Some(array));
                }
            }
        }
        Ok(None)
    }

    fn shape_of(&self, value: &Value) -> Result<Vec<usize>, String> {
        let dimensions = self
            .pickle
            .sequence(value)
            .ok_or("a numpy shape is not a tuple")?;
        if dimensions.len() > 2 {
            return Err(format!(
                "a numpy array of {} dimensions (1 or 2 are supported)",
                dimensions.len()
            ));
        }
        dimensions
            .iter()
            .map(|dimension| match dimension {
                Value::Integer(size) => {
                    usize::try_from(*size).map_err(|_| format!("negative numpy dimension {size}"))
                }
                other => Err(format!("bad numpy dimension {other:?}")),
            })
            .collect()
    }

    /// The dtype's type code (`i8`, `f8`, `O8`, ...) and byte order.
    fn dtype_of(&self, value: &Value) -> Result<(String, bool), String> {
        let pickle = self.pickle;
        let (module, name, arguments, state) =
            pickle.object(value).ok_or("a numpy dtype was expected")?;
        if module != "numpy" || name != "dtype" {
            return Err(format!("a numpy dtype was expected, found {module}.{name}"));
        }
        let Some(Value::Text(code)) = arguments.first() else {
            return Err("a numpy dtype without a type code".to_string());
        };
        let big_endian = state
            .and_then(|state| pickle.sequence(state))
            .and_then(|parts| parts.get(1))
            .is_some_and(|order| matches!(order, Value::Text(text) if &**text == ">"));
        Ok((code.to_string(), big_endian))
    }

    fn array_from(
        &self,
        dtype: &Value,
        shape: Vec<usize>,
        fortran: bool,
        raw: &'a Value,
    ) -> Result<Array<'a>, String> {
        let (code, big_endian) = self.dtype_of(dtype)?;
        let count = shape
            .iter()
            .try_fold(1usize, |count, dimension| count.checked_mul(*dimension))
            .ok_or_else(|| format!("a numpy array of shape {shape:?} is impossibly large"))?;
        if code.starts_with('O') {
            let elements = self
                .pickle
                .sequence(raw)
                .ok_or("an object array without a list of elements")?;
            if elements.len() != count {
                return Err(format!(
                    "an object array of shape {shape:?} holds {} elements",
                    elements.len()
                ));
            }
            return Ok(Array {
                shape,
                fortran,
                data: ArrayData::Object(elements),
            });
        }
        let Value::Bytes(bytes) = raw else {
            return Err(format!("a numeric array ({code}) without raw bytes"));
        };
        // The kind is one ASCII letter; anything else (an empty or non-ASCII code) is refused.
        let unsupported = || format!("numpy dtype {code:?} is not supported");
        let (kind, width) = code
            .split_at_checked(1)
            .filter(|(kind, _)| kind.is_ascii())
            .ok_or_else(unsupported)?;
        let width: usize = width
            .parse()
            .ok()
            .filter(|width| matches!(*width, 1 | 2 | 4 | 8))
            .ok_or_else(unsupported)?;
        if count.checked_mul(width) != Some(bytes.len()) {
            return Err(format!(
                "a {code} array of shape {shape:?} has {} bytes",
                bytes.len()
            ));
        }
        let word = |chunk: &[u8]| -> u64 {
            let fold = |value: u64, byte: &u8| (value << 8) | u64::from(*byte);
            if big_endian {
                chunk.iter().fold(0, fold)
            } else {
                chunk.iter().rev().fold(0, fold)
            }
        };
        let chunks = bytes.chunks_exact(width);
        let data = match (kind, width) {
            ("i", _) => ArrayData::Integer(
                chunks
                    .map(|chunk| {
                        let shift = 64 - 8 * width as u32;
                        ((word(chunk) << shift) as i64) >> shift
                    })
                    .collect(),
            ),
            ("u" | "b", _) => ArrayData::Integer(
                chunks
                    .map(|chunk| {
                        i64::try_from(word(chunk))
                            .map_err(|_| format!("a {code} value does not fit 63 bits"))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            ("f", 8) => ArrayData::Float(chunks.map(|chunk| f64::from_bits(word(chunk))).collect()),
            ("f", 4) => ArrayData::Float(
                chunks
                    .map(|chunk| f64::from(f32::from_bits(word(chunk) as u32)))
                    .collect(),
            ),
            _ => {
                return Err(format!(
                    "numpy dtype {code:?} is not supported (integers, floats, booleans and objects are)"
                ));
            }
        };
        Ok(Array {
            shape,
            fortran,
            data,
        })
    }

    /// Converts a Python value, `depth` containers down, into a cell (within the budget).
    /// Charges one produced cell to the budget.
    fn spend(&self) -> Result<(), String> {
        let budget = self.budget.get().checked_sub(1).ok_or_else(|| {
            format!(
                "the frame's cells expand to more than {EXPANSION_PER_BYTE} values per byte of the pickle (shared containers or blocks repeated over and over?)"
            )
        })?;
        self.budget.set(budget);
        Ok(())
    }

    fn to_cell(&self, value: &Value, depth: usize) -> Result<PythonValue, String> {
        self.spend()?;
        let pickle = self.pickle;
        Ok(match value {
            Value::None => PythonValue::None,
            Value::Bool(flag) => PythonValue::Bool(*flag),
            Value::Integer(number) => PythonValue::Integer(*number),
            Value::Float(number) if number.is_nan() => PythonValue::None,
            Value::Float(number) => PythonValue::Float(*number),
            Value::Text(text) => PythonValue::Text(text.to_string()),
            Value::Bytes(bytes) => PythonValue::Opaque(format!("{} bytes", bytes.len())),
            Value::Node(_) => {
                if depth >= MAX_CELL_DEPTH {
                    return Err(format!(
                        "a cell nests containers more than {MAX_CELL_DEPTH} levels deep (a container that holds itself?)"
                    ));
                }
                if let Some(elements) = pickle.sequence(value) {
                    return elements
                        .iter()
                        .map(|element| self.to_cell(element, depth + 1))
                        .collect::<Result<_, _>>()
                        .map(PythonValue::List);
                }
                match pickle.object(value) {
                    Some((module, "scalar", [dtype, bytes @ Value::Bytes(_)], _))
                        if is_numpy(module, "multiarray") =>
                    {
                        match self.array_from(dtype, vec![1], false, bytes) {
                            Ok(array) => self.cell(&array, 0, 0)?,
                            Err(message) => PythonValue::Opaque(message),
                        }
                    }
                    _ => match self.decode_array(value, depth) {
                        Ok(Some(array)) => PythonValue::List(
                            (0..array.len())
                                .map(|index| self.element(&array, index, depth))
                                .collect::<Result<_, _>>()?,
                        ),
                        Ok(None) => PythonValue::Opaque(self.describe(value)),
                        Err(message) => PythonValue::Opaque(message),
                    },
                }
            }
        })
    }

    /// Element `index` of `array` in memory order, as a cell `depth` containers down.
    fn element(
        &self,
        array: &Array<'a>,
        index: usize,
        depth: usize,
    ) -> Result<PythonValue, String> {
        self.spend()?;
        match &array.data {
            ArrayData::Integer(values) => Ok(PythonValue::Integer(values[index])),
            ArrayData::Float(values) => Ok(PythonValue::Float(values[index])),
            ArrayData::Object(values) => self.to_cell(&values[index], depth + 1),
        }
    }

    fn describe(&self, value: &Value) -> String {
        let pickle = self.pickle;
        match pickle.node(value) {
            Some(Node::Object { callable, .. }) => match pickle.global(callable) {
                Some((module, name)) => format!("a {module}.{name} object"),
                None => "an object".to_string(),
            },
            Some(Node::Global { module, name }) => format!("{module}.{name}"),
            Some(Node::Dict(_)) => "a dict".to_string(),
            _ => format!("{value:?}"),
        }
    }

    /// A table from rows of `(row label, {column: value})` (orients `index` and `records`): every
    /// row must have the first row's columns.
    fn frame_from_rows(&self, rows: &[(String, &[(Value, Value)])]) -> Result<Frame, String> {
        let mut columns: Vec<String> = Vec::new();
        let mut position: HashMap<String, usize> = HashMap::new();
        if let Some((label, first)) = rows.first() {
            for (key, _) in first.iter() {
                let name = key_text(key);
                if position.insert(name.clone(), columns.len()).is_some() {
                    return Err(format!("row {label} names column {name} twice"));
                }
                columns.push(name);
            }
        }
        let mut data: Vec<Vec<PythonValue>> = vec![Vec::new(); columns.len()];
        let mut row_cells: Vec<Option<PythonValue>> = vec![None; columns.len()];
        for (label, row) in rows {
            for (key, value) in row.iter() {
                let name = key_text(key);
                let column = *position.get(&name).ok_or_else(|| {
                    format!(
                        "ragged to_dict(): row {label} has column {name}, which the first row lacks"
                    )
                })?;
                if row_cells[column].replace(self.to_cell(value, 0)?).is_some() {
                    return Err(format!("row {label} names column {name} twice"));
                }
            }
            for (column, cell) in row_cells.iter_mut().enumerate() {
                let cell = cell.take().ok_or_else(|| {
                    format!(
                        "ragged to_dict(): row {label} lacks column {}",
                        columns[column]
                    )
                })?;
                data[column].push(cell);
            }
        }
        Frame::new(columns, data, rows.len())
    }

    fn frame_from_dict(&self, entries: &[(Value, Value)]) -> Result<Frame, String> {
        let pickle = self.pickle;
        let inner_dicts: Option<Vec<&[(Value, Value)]>> = entries
            .iter()
            .map(|(_, value)| pickle.dict(value))
            .collect();
        if let Some(inner) = inner_dicts {
            let outer_text = entries.iter().all(|(key, _)| matches!(key, Value::Text(_)));
            let inner_text = inner
                .iter()
                .all(|row| row.iter().all(|(key, _)| matches!(key, Value::Text(_))));
            if !outer_text || inner_text {
                // {row: {column: value}} (orient "index").
                let rows: Vec<(String, &[(Value, Value)])> = entries
                    .iter()
                    .zip(inner)
                    .map(|((key, _), row)| (key_text(key), row))
                    .collect();
                return self.frame_from_rows(&rows);
            }
            // {column: {row: value}} (orient "dict"): every column must have the first's rows.
            let columns: Vec<String> = entries.iter().map(|(key, _)| key_text(key)).collect();
            let first = inner.first().copied().unwrap_or_default();
            let mut data = Vec::with_capacity(inner.len());
            for (name, column) in columns.iter().zip(&inner) {
                if column.len() != first.len()
                    || column
                        .iter()
                        .zip(first)
                        .any(|((row, _), (first_row, _))| row != first_row)
                {
                    return Err(format!(
                        "ragged to_dict(): column {name} has {} rows that are not the {} rows of column {}",
                        column.len(),
                        first.len(),
                        columns[0]
                    ));
                }
                data.push(
                    column
                        .iter()
                        .map(|(_, value)| self.to_cell(value, 0))
                        .collect::<Result<Vec<_>, _>>()?,
                );
            }
            return Frame::new(columns, data, first.len());
        }
        // {column: [values]} (orient "list").
        let mut columns = Vec::new();
        let mut data = Vec::new();
        for (key, value) in entries {
            let values = pickle
                .sequence(value)
                .ok_or_else(|| format!("column {} is neither a list nor a dict", key_text(key)))?;
            columns.push(key_text(key));
            data.push(
                values
                    .iter()
                    .map(|value| self.to_cell(value, 0))
                    .collect::<Result<Vec<_>, _>>()?,
            );
        }
        let rows = data.first().map_or(0, Vec::len);
        if let Some(index) = data.iter().position(|column| column.len() != rows) {
            return Err(format!(
                "columns of different lengths: {} has {rows} values, {} has {}",
                columns[0],
                columns[index],
                data[index].len()
            ));
        }
        Frame::new(columns, data, rows)
    }

    fn frame_from_manager(&self, manager: &Value) -> Result<Frame, String> {
        let pickle = self.pickle;
        let (_, _, arguments, state) = pickle
            .object(manager)
            .ok_or("the DataFrame's block manager is not an object")?;
        let (axes, blocks): (&[Value], Vec<(&Value, &Value)>) = if let [blocks, axes, ..] =
            arguments
            && let Some(blocks) = pickle.sequence(blocks)
        {
            // Recent pandas: BlockManager((blocks...), [axes]) with _unpickle_block(values, placement, ndim).
            let axes = pickle
                .sequence(axes)
                .ok_or("block manager axes are not a list")?;
            let blocks = blocks
                .iter()
                .map(|block| match pickle.object(block) {
                    Some((_, _, [values, placement, ..], _)) => Ok((values, placement)),
                    _ => Err("a block is not (values, placement, ndim)".to_string()),
                })
                .collect::<Result<_, String>>()?;
            (axes, blocks)
        } else {
            // Older pandas: state (axes, values, items, {"0.14.1": {"axes": ..., "blocks": [...]}}).
            let state = state.ok_or("a block manager without state")?;
            let parts = pickle
                .sequence(state)
                .ok_or("a block manager state is not a tuple")?;
            let extra = parts
                .iter()
                .find_map(|part| pickle.dict_get(part, "0.14.1"))
                .ok_or("a block manager state without the \"0.14.1\" entry; re-save the frame with a recent pandas")?;
            let axes = pickle
                .dict_get(extra, "axes")
                .and_then(|axes| pickle.sequence(axes))
                .ok_or("no axes")?;
            let blocks = pickle
                .dict_get(extra, "blocks")
                .and_then(|blocks| pickle.sequence(blocks))
                .ok_or("no blocks")?
                .iter()
                .map(|block| {
                    let values = pickle
                        .dict_get(block, "values")
                        .ok_or("a block without values")?;
                    let placement = pickle
                        .dict_get(block, "mgr_locs")
                        .ok_or("a block without mgr_locs")?;
                    Ok((values, placement))
                })
                .collect::<Result<_, String>>()?;
            (axes, blocks)
        };
        let columns = self.index_labels(axes.first().ok_or("no column axis")?)?;
        let rows = match axes.get(1) {
            Some(index) => self.index_length(index)?,
            None => 0,
        };
        let mut data: Vec<Option<Vec<PythonValue>>> = vec![None; columns.len()];
        for (values, placement) in blocks {
            let array = self
                .decode_array(values, 0)?
                .ok_or("a block's values are not a numpy array")?;
            let positions = self.placement_positions(placement, columns.len(), 0)?;
            // A 2-D block holds one row of values per column it places; a 1-D block one column.
            let expected = if array.shape.len() == 2 {
                (positions.len(), rows)
            } else {
                (1, rows)
            };
            if array.matrix_shape() != expected || positions.len() != expected.0 {
                return Err(format!(
                    "a block of shape {:?} is placed at {} columns of a frame of {rows} rows",
                    array.shape,
                    positions.len()
                ));
            }
            for (offset, column) in positions.into_iter().enumerate() {
                let cells = (0..rows)
                    .map(|row| self.cell(&array, offset, row))
                    .collect::<Result<_, _>>()?;
                data[column] = Some(cells);
            }
        }
        let data = data
            .into_iter()
            .enumerate()
            .map(|(index, cells)| {
                cells.ok_or_else(|| format!("column {} has no block", columns[index]))
            })
            .collect::<Result<_, _>>()?;
        Frame::new(columns, data, rows)
    }

    /// Column positions of a block, each below `columns`: a `slice(start, stop, step)` or an
    /// integer array, possibly wrapped in a `BlockPlacement`.
    fn placement_positions(
        &self,
        placement: &Value,
        columns: usize,
        depth: usize,
    ) -> Result<Vec<usize>, String> {
        let pickle = self.pickle;
        let outside = |position: i128| {
            format!("a block places a column at {position}, outside the frame's {columns} columns")
        };
        if let Some(("builtins" | "__builtin__", "slice", arguments, _)) = pickle.object(placement)
        {
            let number = |value: Option<&Value>, default: i64| match value {
                None | Some(Value::None) => Ok(default),
                Some(Value::Integer(number)) => Ok(*number),
                Some(other) => Err(format!("a slice placement holds {other:?}")),
            };
            let start = number(arguments.first(), 0)?;
            let stop = number(arguments.get(1), 0)?;
            let step = number(arguments.get(2), 1)?;
            let length = range_length(start, stop, step)?;
            if length > columns as u128 {
                return Err(format!(
                    "a block places {length} columns (slice({start}, {stop}, {step})) in a frame of {columns}"
                ));
            }
            return (0..length as i128)
                .map(|index| {
                    let position = i128::from(start) + index * i128::from(step);
                    usize::try_from(position)
                        .ok()
                        .filter(|position| *position < columns)
                        .ok_or_else(|| outside(position))
                })
                .collect();
        }
        if let Some(("pandas._libs.internals", "BlockPlacement", [inner, ..], _)) =
            pickle.object(placement)
        {
            if depth >= MAX_CELL_DEPTH {
                return Err(
                    "a block placement nested too deep (a self-referencing object?)".to_string(),
                );
            }
            return self.placement_positions(inner, columns, depth + 1);
        }
        let array = self
            .decode_array(placement, 0)?
            .ok_or("a block placement is neither a slice nor an array")?;
        (0..array.len())
            .map(|index| match self.element(&array, index, 0)?.as_integer() {
                Some(position) => usize::try_from(position)
                    .ok()
                    .filter(|position| *position < columns)
                    .ok_or_else(|| outside(i128::from(position))),
                None => Err("a block placement holds a non-integer".to_string()),
            })
            .collect()
    }

    /// An Index's attributes (`_new_Index(cls, {"data": ..., "name": ...})`).
    fn index_attributes(&self, index: &Value) -> Result<&'a Value, String> {
        let pickle = self.pickle;
        let (_, _, arguments, _) = pickle
            .object(index)
            .ok_or("an axis is not a pandas Index")?;
        arguments
            .get(1)
            .filter(|value| pickle.dict(value).is_some())
            .ok_or_else(|| "an Index without attributes".to_string())
    }

    /// `(start, stop, step)` of a RangeIndex's attributes.
    fn range_of(&self, attributes: &Value) -> Result<(i64, i64, i64), String> {
        let number = |key: &str, default: i64| match self.pickle.dict_get(attributes, key) {
            None | Some(Value::None) => Ok(default),
            Some(Value::Integer(number)) => Ok(*number),
            Some(other) => Err(format!("a RangeIndex's {key} is {other:?}")),
        };
        Ok((number("start", 0)?, number("stop", 0)?, number("step", 1)?))
    }

    /// The number of labels of an Index (RangeIndex included).
    fn index_length(&self, index: &Value) -> Result<usize, String> {
        let attributes = self.index_attributes(index)?;
        if let Some(data) = self.pickle.dict_get(attributes, "data") {
            let array = self
                .decode_array(data, 0)?
                .ok_or("an Index's data is not an array")?;
            return Ok(array.len());
        }
        let (start, stop, step) = self.range_of(attributes)?;
        let length = range_length(start, stop, step)?;
        // The length only has to agree with the blocks, which are checked against it.
        usize::try_from(length).map_err(|_| format!("a RangeIndex of {length} labels"))
    }

    /// Labels of an Index (RangeIndex included), at most one per byte of the pickle.
    fn index_labels(&self, index: &Value) -> Result<Vec<String>, String> {
        let attributes = self.index_attributes(index)?;
        if let Some(data) = self.pickle.dict_get(attributes, "data") {
            let array = self
                .decode_array(data, 0)?
                .ok_or("an Index's data is not an array")?;
            return (0..array.len())
                .map(|position| {
                    Ok::<_, String>(match self.element(&array, position, 0)? {
                        PythonValue::Text(text) => text,
                        PythonValue::Integer(number) => number.to_string(),
                        other => format!("{other:?}"),
                    })
                })
                .collect();
        }
        let (start, stop, step) = self.range_of(attributes)?;
        let length = range_length(start, stop, step)?;
        if length > self.pickle.input_len as u128 {
            return Err(format!(
                "a RangeIndex({start}, {stop}, {step}) of {length} column labels in a pickle of {} bytes",
                self.pickle.input_len
            ));
        }
        Ok((0..length as i128)
            .map(|index| (i128::from(start) + index * i128::from(step)).to_string())
            .collect())
    }
}
