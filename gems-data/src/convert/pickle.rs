//! A reader of Python pickles (protocols 0–5) into a plain object graph, for pandas DataFrames.
//!
//! `serde-pickle` turns unknown class instances into their bare state, losing the class name and,
//! for numpy dtypes, the type code (`'i8'` vs `'f8'`), which decoding a DataFrame's blocks needs.
//! This reader keeps everything: every `REDUCE`/`NEWOBJ` becomes an [`Node::Object`] with its
//! callable (a [`Node::Global`] naming module and attribute), its arguments and, after `BUILD`,
//! its state. Nothing is executed. Shared references (the memo) are kept as shared nodes in an
//! arena, so later mutations (`APPEND`, `SETITEMS`, `BUILD`) are seen through every reference.
//! Out-of-band buffers, persistent ids and the extension registry are not supported (pandas does
//! not use them in `to_pickle`).
//!
//! Hostile input is bounded: the memo is a map (an index near `u64::MAX` costs one entry, not a
//! table that large), every value on the stack or in a container costs at least one input byte
//! except for copies, and copies (of arguments, of `_codecs.encode` bytes) are charged to a budget
//! proportional to the input's size ([`EXPANSION_PER_BYTE`]), so that no pickle makes the reader
//! allocate more than a small multiple of its own size.

use std::collections::HashMap;
use std::rc::Rc;

/// A value on the stack or inside a container; compound values point into the arena.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Integer(i64),
    Float(f64),
    Text(Rc<str>),
    Bytes(Rc<[u8]>),
    /// A node of the arena.
    Node(usize),
}

/// A compound object.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Node {
    List(Vec<Value>),
    Tuple(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Set(Vec<Value>),
    /// `module.name`, as found by `GLOBAL`/`STACK_GLOBAL`.
    Global {
        module: String,
        name: String,
    },
    /// The result of calling `callable(*arguments)` (REDUCE, NEWOBJ, OBJ, INST), with the state set
    /// by BUILD.
    Object {
        callable: Value,
        arguments: Vec<Value>,
        state: Option<Value>,
    },
}

/// Values that decoding may copy (here and in [`crate::convert::dataframe`]) per input byte,
/// beyond the values the input spells out; plus [`EXPANSION_FLOOR`] for tiny inputs.
pub(crate) const EXPANSION_PER_BYTE: usize = 16;
/// The copy budget of an empty input.
const EXPANSION_FLOOR: usize = 1 << 16;

/// The values that decoding an input of `input_len` bytes may copy.
pub(crate) fn expansion_budget(input_len: usize) -> usize {
    EXPANSION_PER_BYTE
        .saturating_mul(input_len)
        .saturating_add(EXPANSION_FLOOR)
}

/// A decoded pickle: the arena and the root value.
pub(crate) struct Pickle {
    nodes: Vec<Node>,
    /// The pickled object.
    pub root: Value,
    /// Size of the encoded pickle in bytes (bounds what decoding it may allocate).
    pub input_len: usize,
}

impl Pickle {
    /// The node `value` points to, if it is compound.
    pub fn node(&self, value: &Value) -> Option<&Node> {
        match value {
            Value::Node(index) => self.nodes.get(*index),
            _ => None,
        }
    }

    /// `(module, name)` when `value` is a global.
    pub fn global(&self, value: &Value) -> Option<(&str, &str)> {
        match self.node(value) {
            Some(Node::Global { module, name }) => Some((module, name)),
            _ => None,
        }
    }

    /// The elements of a list or tuple.
    pub fn sequence(&self, value: &Value) -> Option<&[Value]> {
        match self.node(value) {
            Some(Node::List(elements) | Node::Tuple(elements) | Node::Set(elements)) => {
                Some(elements)
            }
            _ => None,
        }
    }

    /// The entries of a dict.
    pub fn dict(&self, value: &Value) -> Option<&[(Value, Value)]> {
        match self.node(value) {
            Some(Node::Dict(entries)) => Some(entries),
            _ => None,
        }
    }

    /// The value of key `key` in a dict with text keys.
    pub fn dict_get(&self, value: &Value, key: &str) -> Option<&Value> {
        self.dict(value)?
            .iter()
            .find(|(name, _)| matches!(name, Value::Text(text) if &**text == key))
            .map(|(_, value)| value)
    }

    /// `(callable's module, callable's name, arguments, state)` when `value` is an object.
    pub fn object(&self, value: &Value) -> Option<(&str, &str, &[Value], Option<&Value>)> {
        match self.node(value) {
            Some(Node::Object {
                callable,
                arguments,
                state,
            }) => {
                let (module, name) = self.global(callable)?;
                Some((module, name, arguments, state.as_ref()))
            }
            _ => None,
        }
    }
}

const MARK: u8 = b'(';

/// Decodes a pickle.
pub(crate) fn read_pickle(bytes: &[u8]) -> Result<Pickle, String> {
    let machine = Machine {
        bytes,
        position: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        nodes: Vec::new(),
        budget: expansion_budget(bytes.len()),
    };
    machine.run()
}

struct Machine<'a> {
    bytes: &'a [u8],
    position: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u64, Value>,
    nodes: Vec<Node>,
    /// Values that may still be copied (see the module documentation).
    budget: usize,
}

impl Machine<'_> {
    fn take(&mut self, count: usize) -> Result<&[u8], String> {
        let end = self
            .position
            .checked_add(count)
            .filter(|end| *end <= self.bytes.len());
        let end = end.ok_or_else(|| {
            format!(
                "the pickle ends early (needed {count} bytes at offset {})",
                self.position
            )
        })?;
        let slice = &self.bytes[self.position..end];
        self.position = end;
        Ok(slice)
    }

    fn unsigned(&mut self, width: usize) -> Result<u64, String> {
        let bytes = self.take(width)?;
        Ok(bytes
            .iter()
            .rev()
            .fold(0u64, |value, byte| (value << 8) | u64::from(*byte)))
    }

    fn line(&mut self) -> Result<String, String> {
        let start = self.position;
        let length = self.bytes[start..]
            .iter()
            .position(|&byte| byte == b'\n')
            .ok_or_else(|| format!("a text opcode at offset {start} has no line end"))?;
        self.position = start + length + 1;
        Ok(String::from_utf8_lossy(&self.bytes[start..start + length]).into_owned())
    }

    /// Charges `count` copied values to the budget.
    fn spend(&mut self, count: usize) -> Result<(), String> {
        self.budget = self.budget.checked_sub(count).ok_or_else(|| {
            format!(
                "the pickle's shared references expand to more than {EXPANSION_PER_BYTE} values per byte of input (at offset {}); it is corrupt or crafted",
                self.position
            )
        })?;
        Ok(())
    }

    /// Values above the innermost MARK (what POP, TUPLEn and friends may consume).
    fn available(&self) -> usize {
        self.stack.len() - self.marks.last().copied().unwrap_or(0)
    }

    fn push_node(&mut self, node: Node) {
        self.nodes.push(node);
        self.stack.push(Value::Node(self.nodes.len() - 1));
    }

    fn pop(&mut self) -> Result<Value, String> {
        if self.available() == 0 {
            return Err(format!(
                "stack underflow at offset {} (nothing above the last MARK)",
                self.position
            ));
        }
        self.stack
            .pop()
            .ok_or_else(|| "stack underflow".to_string())
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let mark = self.marks.pop().ok_or("MARK missing")?;
        Ok(self.stack.split_off(mark))
    }

    fn top(&self) -> Result<&Value, String> {
        match self.available() {
            0 => Err(format!(
                "stack underflow at offset {} (nothing above the last MARK)",
                self.position
            )),
            _ => self
                .stack
                .last()
                .ok_or_else(|| "stack underflow".to_string()),
        }
    }

    fn top_node(&mut self) -> Result<&mut Node, String> {
        let index = match self.top()? {
            Value::Node(index) => *index,
            other => {
                return Err(format!(
                    "expected a container on the stack, found {other:?}"
                ));
            }
        };
        self.nodes
            .get_mut(index)
            .ok_or_else(|| format!("node {index} does not exist"))
    }

    fn memoize(&mut self, index: u64) -> Result<(), String> {
        let value = self.top()?.clone();
        self.memo.insert(index, value);
        Ok(())
    }

    fn recall(&mut self, index: u64) -> Result<(), String> {
        let value = self
            .memo
            .get(&index)
            .cloned()
            .ok_or_else(|| format!("memo entry {index} is missing"))?;
        self.stack.push(value);
        Ok(())
    }

    fn text(&mut self, length: usize) -> Result<(), String> {
        let bytes = self.take(length)?;
        let text = std::str::from_utf8(bytes).map_err(|_| "a string is not UTF-8")?;
        let value = Value::Text(Rc::from(text));
        self.stack.push(value);
        Ok(())
    }

    fn bytes_value(&mut self, length: usize) -> Result<(), String> {
        let value = Value::Bytes(Rc::from(self.take(length)?));
        self.stack.push(value);
        Ok(())
    }

    fn long(&mut self, length: usize) -> Result<(), String> {
        let bytes = self.take(length)?;
        if length > 8 {
            return Err(format!("an integer of {length} bytes does not fit 64 bits"));
        }
        let mut value: i64 = 0;
        for (shift, byte) in bytes.iter().enumerate() {
            value |= i64::from(*byte) << (8 * shift);
        }
        if length > 0 && length < 8 && bytes[length - 1] & 0x80 != 0 {
            value -= 1i64 << (8 * length);
        }
        self.stack.push(Value::Integer(value));
        Ok(())
    }

    fn set_items(&mut self, items: Vec<Value>) -> Result<(), String> {
        if !items.len().is_multiple_of(2) {
            return Err(format!(
                "SETITEMS/DICT with an odd number of values ({}) before offset {}",
                items.len(),
                self.position
            ));
        }
        let Node::Dict(entries) = self.top_node()? else {
            return Err("SETITEM(S) on a non-dict".to_string());
        };
        let mut items = items.into_iter();
        while let (Some(key), Some(value)) = (items.next(), items.next()) {
            entries.push((key, value));
        }
        Ok(())
    }

    fn append(&mut self, items: Vec<Value>) -> Result<(), String> {
        match self.top_node()? {
            Node::List(elements) | Node::Set(elements) => {
                elements.extend(items);
                Ok(())
            }
            other => Err(format!("APPEND(S)/ADDITEMS on {other:?}")),
        }
    }

    fn object(&mut self, callable: Value, arguments: Vec<Value>) {
        self.push_node(Node::Object {
            callable,
            arguments,
            state: None,
        });
    }

    /// Protocol 2's encoding of bytes, `_codecs.encode(text, "latin1")`: `Ok(None)` for other calls.
    fn encoded_bytes(
        &mut self,
        callable: &Value,
        arguments: &[Value],
    ) -> Result<Option<Rc<[u8]>>, String> {
        let encode = match callable {
            Value::Node(index) => matches!(
                self.nodes.get(*index),
                Some(Node::Global { module, name }) if module == "_codecs" && name == "encode"
            ),
            _ => false,
        };
        let (true, [Value::Text(text), Value::Text(encoding)]) = (encode, arguments) else {
            return Ok(None);
        };
        if &**encoding != "latin1" {
            return Ok(None);
        }
        self.spend(text.len())?;
        text.chars()
            .map(|character| {
                u8::try_from(character).map_err(|_| {
                    format!(
                        "_codecs.encode(..., \"latin1\") of a character beyond Latin-1 ({character:?})"
                    )
                })
            })
            .collect::<Result<_, _>>()
            .map(Some)
    }

    /// The elements of an argument tuple (a copy, charged to the budget).
    fn tuple_elements(&mut self, value: &Value) -> Result<Vec<Value>, String> {
        let elements = match value {
            Value::Node(index) => match self.nodes.get(*index) {
                Some(Node::Tuple(elements) | Node::List(elements)) => elements.clone(),
                _ => vec![value.clone()],
            },
            _ => vec![value.clone()],
        };
        self.spend(elements.len())?;
        Ok(elements)
    }

    fn run(mut self) -> Result<Pickle, String> {
        loop {
            let opcode = *self.take(1)?.first().expect("one byte");
            match opcode {
                0x80 => {
                    self.take(1)?;
                }
                0x95 => {
                    self.take(8)?;
                }
                b'.' => {
                    let root = self.pop()?;
                    return Ok(Pickle {
                        nodes: self.nodes,
                        root,
                        input_len: self.bytes.len(),
                    });
                }
                MARK => self.marks.push(self.stack.len()),
                b'0' => {
                    // As CPython: POP with nothing above the last MARK discards the MARK.
                    if self.available() == 0 && !self.marks.is_empty() {
                        self.marks.pop();
                    } else {
                        self.pop()?;
                    }
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let top = self.top()?.clone();
                    self.stack.push(top);
                }
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'J' => {
                    let value = self.unsigned(4)? as u32 as i32;
                    self.stack.push(Value::Integer(i64::from(value)));
                }
                b'K' => {
                    let value = self.unsigned(1)?;
                    self.stack.push(Value::Integer(value as i64));
                }
                b'M' => {
                    let value = self.unsigned(2)?;
                    self.stack.push(Value::Integer(value as i64));
                }
                0x8a => {
                    let length = self.unsigned(1)? as usize;
                    self.long(length)?;
                }
                0x8b => {
                    let length = self.unsigned(4)? as usize;
                    self.long(length)?;
                }
                b'I' | b'L' => {
                    let line = self.line()?;
                    let digits = line.trim_end_matches('L');
                    let value = match digits {
                        "01" => Value::Bool(true),
                        "00" => Value::Bool(false),
                        _ => Value::Integer(
                            digits
                                .parse()
                                .map_err(|_| format!("bad integer {line:?}"))?,
                        ),
                    };
                    self.stack.push(value);
                }
                b'G' => {
                    let bytes: [u8; 8] = self.take(8)?.try_into().expect("eight bytes");
                    self.stack.push(Value::Float(f64::from_be_bytes(bytes)));
                }
                b'F' => {
                    let line = self.line()?;
                    self.stack.push(Value::Float(
                        line.trim()
                            .parse()
                            .map_err(|_| format!("bad float {line:?}"))?,
                    ));
                }
                b'X' => {
                    let length = self.unsigned(4)? as usize;
                    self.text(length)?;
                }
                0x8c => {
                    let length = self.unsigned(1)? as usize;
                    self.text(length)?;
                }
                0x8d => {
                    let length = self.unsigned(8)? as usize;
                    self.text(length)?;
                }
                b'V' => {
                    let line = self.line()?;
                    self.stack.push(Value::Text(Rc::from(line.as_str())));
                }
                b'B' => {
                    let length = self.unsigned(4)? as usize;
                    self.bytes_value(length)?;
                }
                b'C' => {
                    let length = self.unsigned(1)? as usize;
                    self.bytes_value(length)?;
                }
                0x8e | 0x96 => {
                    let length = self.unsigned(8)? as usize;
                    self.bytes_value(length)?;
                }
                b'T' | b'U' => {
                    let length = if opcode == b'T' {
                        self.unsigned(4)?
                    } else {
                        self.unsigned(1)?
                    } as usize;
                    let text: String = self
                        .take(length)?
                        .iter()
                        .map(|&byte| byte as char)
                        .collect();
                    self.stack.push(Value::Text(Rc::from(text.as_str())));
                }
                b'S' => {
                    let line = self.line()?;
                    let text = line
                        .trim()
                        .trim_matches(|c| c == '\'' || c == '"')
                        .to_string();
                    self.stack.push(Value::Text(Rc::from(text.as_str())));
                }
                b']' => self.push_node(Node::List(Vec::new())),
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push_node(Node::List(items));
                }
                b'a' => {
                    let item = self.pop()?;
                    self.append(vec![item])?;
                }
                b'e' | 0x90 => {
                    let items = self.pop_mark()?;
                    self.append(items)?;
                }
                b')' => self.push_node(Node::Tuple(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.push_node(Node::Tuple(items));
                }
                0x85..=0x87 => {
                    let count = usize::from(opcode - 0x84);
                    if self.available() < count {
                        return Err(format!(
                            "stack underflow in TUPLE{count} at offset {}",
                            self.position - 1
                        ));
                    }
                    let items = self.stack.split_off(self.stack.len() - count);
                    self.push_node(Node::Tuple(items));
                }
                b'}' => self.push_node(Node::Dict(Vec::new())),
                b'd' => {
                    let items = self.pop_mark()?;
                    self.push_node(Node::Dict(Vec::new()));
                    self.set_items(items)?;
                }
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    self.set_items(vec![key, value])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?;
                }
                0x8f => self.push_node(Node::Set(Vec::new())),
                0x91 => {
                    let items = self.pop_mark()?;
                    self.push_node(Node::Set(items));
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.push_node(Node::Global { module, name });
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Text(module), Value::Text(name)) => self.push_node(Node::Global {
                            module: module.to_string(),
                            name: name.to_string(),
                        }),
                        _ => return Err("STACK_GLOBAL needs two strings".to_string()),
                    }
                }
                b'R' | 0x81 => {
                    let arguments = self.pop()?;
                    let callable = self.pop()?;
                    let arguments = self.tuple_elements(&arguments)?;
                    if let Some(bytes) = self.encoded_bytes(&callable, &arguments)? {
                        // Protocol 2 writes bytes as _codecs.encode(text, "latin1").
                        self.stack.push(Value::Bytes(bytes));
                    } else {
                        self.object(callable, arguments);
                    }
                }
                0x92 => {
                    let keywords = self.pop()?;
                    let arguments = self.pop()?;
                    let callable = self.pop()?;
                    let mut arguments = self.tuple_elements(&arguments)?;
                    arguments.push(keywords);
                    self.object(callable, arguments);
                }
                b'o' => {
                    let mut items = self.pop_mark()?;
                    if items.is_empty() {
                        return Err("OBJ without a class".to_string());
                    }
                    let callable = items.remove(0);
                    self.object(callable, items);
                }
                b'i' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let arguments = self.pop_mark()?;
                    self.nodes.push(Node::Global { module, name });
                    let callable = Value::Node(self.nodes.len() - 1);
                    self.object(callable, arguments);
                }
                b'b' => {
                    let state = self.pop()?;
                    match self.top_node()? {
                        Node::Object { state: slot, .. } => *slot = Some(state),
                        other => return Err(format!("BUILD on {other:?}")),
                    }
                }
                b'p' => {
                    let line = self.line()?;
                    let index = line
                        .trim()
                        .parse()
                        .map_err(|_| format!("bad PUT index {line:?}"))?;
                    self.memoize(index)?;
                }
                b'q' => {
                    let index = self.unsigned(1)?;
                    self.memoize(index)?;
                }
                b'r' => {
                    let index = self.unsigned(4)?;
                    self.memoize(index)?;
                }
                0x94 => {
                    let index = self.memo.len() as u64;
                    self.memoize(index)?;
                }
                b'g' => {
                    let line = self.line()?;
                    let index = line
                        .trim()
                        .parse()
                        .map_err(|_| format!("bad GET index {line:?}"))?;
                    self.recall(index)?;
                }
                b'h' => {
                    let index = self.unsigned(1)?;
                    self.recall(index)?;
                }
                b'j' => {
                    let index = self.unsigned(4)?;
                    self.recall(index)?;
                }
                other => {
                    return Err(format!(
                        "pickle opcode 0x{other:02x} at offset {} is not supported (out-of-band buffers, persistent ids and extension codes are not)",
                        self.position - 1
                    ));
                }
            }
        }
    }
}
