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

use std::collections::HashMap;

use crate::convert::pickle::{Node, Pickle, Value};
use crate::convert::python_literal::PythonValue;

/// A decoded table.
#[derive(Debug)]
pub(crate) struct Frame {
    /// Column names in order.
    pub columns: Vec<String>,
    data: Vec<Vec<PythonValue>>,
    /// Number of rows.
    pub rows: usize,
}

impl Frame {
    /// The cells of column `name`.
    pub fn column(&self, name: &str) -> Option<&[PythonValue]> {
        self.columns
            .iter()
            .position(|column| column == name)
            .map(|index| self.data[index].as_slice())
    }
}

enum ArrayData {
    Integer(Vec<i64>),
    Float(Vec<f64>),
    Object(Vec<Value>),
}

struct Array {
    shape: Vec<usize>,
    fortran: bool,
    data: ArrayData,
}

impl Array {
    fn len(&self) -> usize {
        match &self.data {
            ArrayData::Integer(values) => values.len(),
            ArrayData::Float(values) => values.len(),
            ArrayData::Object(values) => values.len(),
        }
    }

    /// Element (row, column) of a 2-D array, or element `column` of a 1-D one (row 0).
    fn cell(&self, pickle: &Pickle, row: usize, column: usize) -> PythonValue {
        let index = match self.shape.as_slice() {
            [rows, columns] if self.fortran => column * rows + row,
            [_, columns] => row * columns + column,
            _ => column,
        };
        match &self.data {
            ArrayData::Integer(values) => PythonValue::Integer(values[index]),
            ArrayData::Float(values) => PythonValue::Float(values[index]),
            ArrayData::Object(values) => to_cell(pickle, &values[index]),
        }
    }
}

fn is_numpy(module: &str, core: &str) -> bool {
    module == format!("numpy.core.{core}") || module == format!("numpy._core.{core}")
}

/// Decodes a numpy array (or the array inside an extension array).
fn decode_array(pickle: &Pickle, value: &Value) -> Result<Option<Array>, String> {
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
        let shape = shape_of(pickle, &parts[0])?;
        let fortran = matches!(parts[2], Value::Bool(true));
        return array_from(pickle, &parts[1], shape, fortran, &parts[3]).map(Some);
    }
    if is_numpy(module, "numeric") && name == "_frombuffer" {
        let [buffer, dtype, shape, order] = arguments else {
            return Err("numpy _frombuffer with unexpected arguments".to_string());
        };
        let shape = shape_of(pickle, shape)?;
        let fortran = matches!(order, Value::Text(text) if &**text == "F");
        return array_from(pickle, dtype, shape, fortran, buffer).map(Some);
    }
    // Extension arrays (e.g. pandas' StringArray) keep their numpy array in their state.
    if let Some(state) = state {
        for part in pickle
            .sequence(state)
            .unwrap_or(std::slice::from_ref(state))
        {
            if let Some(array) = decode_array(pickle, part)? {
                return Ok(Some(array));
            }
        }
    }
    Ok(None)
}

fn shape_of(pickle: &Pickle, value: &Value) -> Result<Vec<usize>, String> {
    let dimensions = pickle
        .sequence(value)
        .ok_or("a numpy shape is not a tuple")?;
    dimensions
        .iter()
        .map(|dimension| match dimension {
            Value::Integer(size) if *size >= 0 => Ok(*size as usize),
            other => Err(format!("bad numpy dimension {other:?}")),
        })
        .collect()
}

/// The dtype's type code (`i8`, `f8`, `O8`, ...) and byte order.
fn dtype_of(pickle: &Pickle, value: &Value) -> Result<(String, bool), String> {
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
    pickle: &Pickle,
    dtype: &Value,
    shape: Vec<usize>,
    fortran: bool,
    raw: &Value,
) -> Result<Array, String> {
    let (code, big_endian) = dtype_of(pickle, dtype)?;
    let count: usize = shape.iter().product();
    if code.starts_with('O') {
        let elements = pickle
            .sequence(raw)
            .ok_or("an object array without a list of elements")?
            .to_vec();
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
    let (kind, width) = code.split_at(1);
    let width: usize = width
        .parse()
        .map_err(|_| format!("numpy dtype {code:?} is not supported"))?;
    if bytes.len() != count * width {
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
        ("i", 1 | 2 | 4 | 8) => ArrayData::Integer(
            chunks
                .map(|chunk| {
                    let shift = 64 - 8 * width as u32;
                    ((word(chunk) << shift) as i64) >> shift
                })
                .collect(),
        ),
        ("u" | "b", 1 | 2 | 4 | 8) => ArrayData::Integer(
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

/// Converts a Python value into a cell.
fn to_cell(pickle: &Pickle, value: &Value) -> PythonValue {
    match value {
        Value::None => PythonValue::None,
        Value::Bool(flag) => PythonValue::Bool(*flag),
        Value::Integer(number) => PythonValue::Integer(*number),
        Value::Float(number) if number.is_nan() => PythonValue::None,
        Value::Float(number) => PythonValue::Float(*number),
        Value::Text(text) => PythonValue::Text(text.to_string()),
        Value::Bytes(bytes) => PythonValue::Opaque(format!("{} bytes", bytes.len())),
        Value::Node(_) => {
            if let Some(elements) = pickle.sequence(value) {
                return PythonValue::List(
                    elements
                        .iter()
                        .map(|element| to_cell(pickle, element))
                        .collect(),
                );
            }
            match pickle.object(value) {
                Some((module, "scalar", [dtype, Value::Bytes(bytes)], _))
                    if is_numpy(module, "multiarray") =>
                {
                    match array_from(pickle, dtype, vec![1], false, &Value::Bytes(bytes.clone())) {
                        Ok(array) => array.cell(pickle, 0, 0),
                        Err(message) => PythonValue::Opaque(message),
                    }
                }
                _ => match decode_array(pickle, value) {
                    Ok(Some(array)) => PythonValue::List(
                        (0..array.len())
                            .map(|index| array.cell(pickle, 0, index))
                            .collect(),
                    ),
                    Ok(None) => PythonValue::Opaque(describe(pickle, value)),
                    Err(message) => PythonValue::Opaque(message),
                },
            }
        }
    }
}

fn describe(pickle: &Pickle, value: &Value) -> String {
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

fn key_text(value: &Value) -> String {
    match value {
        Value::Text(text) => text.to_string(),
        Value::Integer(number) => number.to_string(),
        other => format!("{other:?}"),
    }
}

/// Decodes the pickle's root as a table.
pub(crate) fn frame_from_pickle(pickle: &Pickle) -> Result<Frame, String> {
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
        return frame_from_manager(pickle, manager);
    }
    if let Some(entries) = pickle.dict(root) {
        return frame_from_dict(pickle, entries);
    }
    if let Some(rows) = pickle.sequence(root) {
        let rows: Vec<&[(Value, Value)]> = rows
            .iter()
            .map(|row| {
                pickle
                    .dict(row)
                    .ok_or("a list whose elements are not dicts")
            })
            .collect::<Result<_, _>>()?;
        return Ok(frame_from_rows(pickle, &rows));
    }
    Err(format!(
        "the pickle holds {}, not a pandas DataFrame or a to_dict() of one",
        describe(pickle, root)
    ))
}

fn frame_from_rows(pickle: &Pickle, rows: &[&[(Value, Value)]]) -> Frame {
    let mut columns: Vec<String> = Vec::new();
    let mut position: HashMap<String, usize> = HashMap::new();
    for row in rows {
        for (key, _) in row.iter() {
            let name = key_text(key);
            if !position.contains_key(&name) {
                position.insert(name.clone(), columns.len());
                columns.push(name);
            }
        }
    }
    let mut data = vec![vec![PythonValue::None; rows.len()]; columns.len()];
    for (index, row) in rows.iter().enumerate() {
        for (key, value) in row.iter() {
            data[position[&key_text(key)]][index] = to_cell(pickle, value);
        }
    }
    Frame {
        columns,
        data,
        rows: rows.len(),
    }
}

fn frame_from_dict(pickle: &Pickle, entries: &[(Value, Value)]) -> Result<Frame, String> {
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
            return Ok(frame_from_rows(pickle, &inner));
        }
        // {column: {row: value}} (orient "dict"): rows in the first column's order.
        let rows = inner.first().map_or(0, |column| column.len());
        let columns = entries.iter().map(|(key, _)| key_text(key)).collect();
        let data = inner
            .iter()
            .map(|column| {
                column
                    .iter()
                    .map(|(_, value)| to_cell(pickle, value))
                    .collect()
            })
            .collect();
        return Ok(Frame {
            columns,
            data,
            rows,
        });
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
                .map(|value| to_cell(pickle, value))
                .collect::<Vec<_>>(),
        );
    }
    let rows = data.first().map_or(0, Vec::len);
    if data.iter().any(|column| column.len() != rows) {
        return Err("columns of different lengths".to_string());
    }
    Ok(Frame {
        columns,
        data,
        rows,
    })
}

fn frame_from_manager(pickle: &Pickle, manager: &Value) -> Result<Frame, String> {
    let (_, _, arguments, state) = pickle
        .object(manager)
        .ok_or("the DataFrame's block manager is not an object")?;
    let (axes, blocks): (&[Value], Vec<(Value, Value)>) = if arguments.len() >= 2
        && pickle.sequence(&arguments[0]).is_some()
    {
        // Recent pandas: BlockManager((blocks...), [axes]) with _unpickle_block(values, placement, ndim).
        let axes = pickle
            .sequence(&arguments[1])
            .ok_or("block manager axes are not a list")?;
        let blocks = pickle
            .sequence(&arguments[0])
            .expect("checked above")
            .iter()
            .map(|block| match pickle.object(block) {
                Some((_, _, [values, placement, ..], _)) => Ok((values.clone(), placement.clone())),
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
                Ok((values.clone(), placement.clone()))
            })
            .collect::<Result<_, String>>()?;
        (axes, blocks)
    };
    let columns = index_labels(pickle, axes.first().ok_or("no column axis")?)?;
    let rows = match axes.get(1) {
        Some(index) => index_labels(pickle, index)?.len(),
        None => 0,
    };
    let mut data: Vec<Option<Vec<PythonValue>>> = vec![None; columns.len()];
    for (values, placement) in blocks {
        let array =
            decode_array(pickle, &values)?.ok_or("a block's values are not a numpy array")?;
        let positions = placement_positions(pickle, &placement)?;
        for (offset, column) in positions.into_iter().enumerate() {
            let slot = data
                .get_mut(column)
                .ok_or("a block places a column outside the frame")?;
            let cells = (0..rows)
                .map(|row| {
                    if array.shape.len() == 2 {
                        array.cell(pickle, offset, row)
                    } else {
                        array.cell(pickle, 0, row)
                    }
                })
                .collect();
            *slot = Some(cells);
        }
    }
    let data = data
        .into_iter()
        .enumerate()
        .map(|(index, cells)| {
            cells.ok_or_else(|| format!("column {} has no block", columns[index]))
        })
        .collect::<Result<_, _>>()?;
    Ok(Frame {
        columns,
        data,
        rows,
    })
}

/// Column positions of a block: a `slice(start, stop, step)` or an integer array.
fn placement_positions(pickle: &Pickle, placement: &Value) -> Result<Vec<usize>, String> {
    if let Some(("builtins" | "__builtin__", "slice", arguments, _)) = pickle.object(placement) {
        let number = |value: Option<&Value>, default: i64| match value {
            Some(Value::Integer(number)) => *number,
            _ => default,
        };
        let start = number(arguments.first(), 0);
        let stop = number(arguments.get(1), 0);
        let step = number(arguments.get(2), 1).max(1);
        return Ok((start..stop)
            .step_by(step as usize)
            .map(|position| position as usize)
            .collect());
    }
    if let Some(("pandas._libs.internals", "BlockPlacement", [inner, ..], _)) =
        pickle.object(placement)
    {
        return placement_positions(pickle, inner);
    }
    let array = decode_array(pickle, placement)?
        .ok_or("a block placement is neither a slice nor an array")?;
    (0..array.len())
        .map(|index| match array.cell(pickle, 0, index).as_integer() {
            Some(position) if position >= 0 => Ok(position as usize),
            _ => Err("a block placement holds a non-integer".to_string()),
        })
        .collect()
}

/// Labels of an Index (`_new_Index(cls, {"data": ..., "name": ...})`, RangeIndex included).
fn index_labels(pickle: &Pickle, index: &Value) -> Result<Vec<String>, String> {
    let (_, _, arguments, _) = pickle
        .object(index)
        .ok_or("an axis is not a pandas Index")?;
    let attributes = arguments
        .get(1)
        .filter(|value| pickle.dict(value).is_some())
        .ok_or("an Index without attributes")?;
    if let Some(data) = pickle.dict_get(attributes, "data") {
        let array = decode_array(pickle, data)?.ok_or("an Index's data is not an array")?;
        return Ok((0..array.len())
            .map(|position| match array.cell(pickle, 0, position) {
                PythonValue::Text(text) => text,
                PythonValue::Integer(number) => number.to_string(),
                other => format!("{other:?}"),
            })
            .collect());
    }
    let number = |key: &str, default: i64| match pickle.dict_get(attributes, key) {
        Some(Value::Integer(number)) => *number,
        _ => default,
    };
    let (start, stop, step) = (
        number("start", 0),
        number("stop", 0),
        number("step", 1).max(1),
    );
    Ok((start..stop)
        .step_by(step as usize)
        .map(|label| label.to_string())
        .collect())
}
