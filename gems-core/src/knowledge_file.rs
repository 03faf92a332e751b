//! Knowledge bases on disk, so that a run with the same model, corpus and selection skips
//! their computation.
//!
//! One safetensors file: the `[d_in, k]` float32 bases under their weight paths, and a JSON
//! header in the metadata entry `gems-knowledge` with the format version, the caller's key
//! (a [`Fingerprint`] of whatever the bases were computed from), every weight's input axis,
//! retained energy and basis shape, and a checksum of header and tensor bytes. Reading checks
//! all of it: a file that is truncated, edited, of another format version or for another key
//! is an error, never a basis.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use safetensors::Dtype;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3;

use crate::checkpoint::{
    f32_values, read_file, read_safetensors, state_error as file_error, write_safetensors,
};
use crate::error::Result;
use crate::null_space::{KnowledgeBasis, NullSpace};

/// Version of the file layout and of the basis computation; part of every cache key, so that
/// a change of either invalidates old files.
pub const FORMAT_VERSION: u32 = 1;
const FORMAT: &str = "gems-knowledge-bases";
const HEADER_KEY: &str = "gems-knowledge";

/// A 128-bit content hash (xxh3) built piece by piece: the key of a cached set of bases.
pub struct Fingerprint(Xxh3);

impl Default for Fingerprint {
    fn default() -> Self {
        Self::new()
    }
}

impl Fingerprint {
    /// A hash of nothing yet, seeded with [`FORMAT_VERSION`].
    pub fn new() -> Self {
        let mut hasher = Xxh3::new();
        hasher.update(FORMAT.as_bytes());
        hasher.update(&FORMAT_VERSION.to_le_bytes());
        Self(hasher)
    }

    /// Adds bytes, preceded by their length (so that pieces cannot run into each other).
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(&(bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }

    /// Adds the values of a float tensor, with its shape.
    pub fn update_tensor<const D: usize>(&mut self, tensor: &Tensor<D>) {
        let dims: Vec<u8> = tensor
            .dims()
            .iter()
            .flat_map(|d| (*d as u64).to_le_bytes())
            .collect();
        self.update(&dims);
        let data = tensor.to_data().convert::<f32>();
        self.update(data.as_bytes());
    }

    /// The hash as 32 hexadecimal digits.
    pub fn finish(&self) -> String {
        format!("{:032x}", self.0.digest128())
    }
}

#[derive(Clone, Serialize, Deserialize)]
struct Header {
    format: String,
    version: u32,
    key: String,
    bases: BTreeMap<String, BasisHeader>,
    /// xxh3-128 of the header with an empty checksum, then every tensor's bytes in path order.
    checksum: String,
}

#[derive(Clone, Serialize, Deserialize)]
struct BasisHeader {
    input_axis: usize,
    retained_energy: f64,
    /// `[d_in, k]`, or `None` when no direction was kept.
    shape: Option<[usize; 2]>,
}

impl Header {
    fn checksum<'a>(&self, tensors: impl Iterator<Item = (&'a str, &'a [u8])>) -> String {
        let unsigned = Header {
            checksum: String::new(),
            ..self.clone()
        };
        let mut hash = Fingerprint::new();
        hash.update(&serde_json::to_vec(&unsigned).expect("the header serialises"));
        for (path, bytes) in tensors {
            hash.update(path.as_bytes());
            hash.update(bytes);
        }
        hash.finish()
    }
}

impl NullSpace {
    /// Writes the bases to `path` (atomically: a temporary file renamed into place), recording
    /// `key`, the fingerprint of what they were computed from.
    pub fn save(&self, path: &Path, key: &str) -> Result<()> {
        let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = self
            .iter()
            .filter_map(|(name, knowledge)| {
                let basis = knowledge.basis.as_ref()?;
                let data = basis.to_data().convert::<f32>();
                Some((
                    name.clone(),
                    basis.dims().to_vec(),
                    data.as_bytes().to_vec(),
                ))
            })
            .collect();
        let mut header = Header {
            format: FORMAT.into(),
            version: FORMAT_VERSION,
            key: key.into(),
            bases: self
                .iter()
                .map(|(name, knowledge)| {
                    (
                        name.clone(),
                        BasisHeader {
                            input_axis: knowledge.input_axis,
                            retained_energy: knowledge.retained_energy,
                            shape: knowledge.basis.as_ref().map(|b| b.dims()),
                        },
                    )
                })
                .collect(),
            checksum: String::new(),
        };
        header.checksum = header.checksum(
            tensors
                .iter()
                .map(|(name, _, bytes)| (name.as_str(), bytes.as_slice())),
        );
        if let Some(folder) = path.parent() {
            fs::create_dir_all(folder)
                .map_err(|e| file_error(folder, format!("cannot create the folder: {e}")))?;
        }
        let header = serde_json::to_string(&header).expect("the header serialises");
        write_safetensors(path, &tensors, HEADER_KEY, header)
    }

    /// Reads the bases [`NullSpace::save`] wrote for `key` onto `device`. Any mismatch (format
    /// version, key, checksum, a tensor's shape or type) is an error naming the file.
    pub fn load(path: &Path, key: &str, device: &Device) -> Result<NullSpace> {
        let bytes = read_file(path)?;
        let (file, header): (_, Header) = read_safetensors(
            path,
            &bytes,
            HEADER_KEY,
            (FORMAT, FORMAT_VERSION..=FORMAT_VERSION),
        )?;
        if header.key != key {
            return Err(file_error(
                path,
                format!("computed for key {} (wanted {key})", header.key),
            ));
        }
        let mut tensors = Vec::new();
        for (name, basis) in &header.bases {
            let Some(shape) = basis.shape else { continue };
            let view = file
                .tensor(name)
                .map_err(|_| file_error(path, format!("tensor `{name}` is missing")))?;
            if view.dtype() != Dtype::F32 || view.shape() != shape {
                return Err(file_error(
                    path,
                    format!(
                        "tensor `{name}` is {:?} {:?}, the header says F32 {shape:?}",
                        view.dtype(),
                        view.shape()
                    ),
                ));
            }
            tensors.push((name.as_str(), view.data()));
        }
        if file.len() != tensors.len() {
            return Err(file_error(
                path,
                format!("{} tensors, the header lists {}", file.len(), tensors.len()),
            ));
        }
        if header.checksum(tensors.iter().copied()) != header.checksum {
            return Err(file_error(
                path,
                "checksum mismatch: the file is corrupt".into(),
            ));
        }
        let mut values = tensors
            .into_iter()
            .map(|(_, bytes)| bytes)
            .collect::<Vec<_>>()
            .into_iter();
        let mut null_space = NullSpace::new();
        for (name, knowledge) in header.bases {
            let basis = knowledge.shape.map(|shape| {
                let bytes = values.next().expect("one tensor per shaped basis");
                Tensor::from_data(TensorData::new(f32_values(bytes), shape), device)
            });
            null_space.insert(
                name,
                KnowledgeBasis {
                    basis,
                    input_axis: knowledge.input_axis,
                    retained_energy: knowledge.retained_energy,
                },
            );
        }
        Ok(null_space)
    }
}
