//! Saving and restoring every piece of optimizer state, so that a resumed run continues
//! bit for bit.
//!
//! One safetensors file: float32 tensors (bases, moments, knowledge bases) under names such as
//! `weights/<path>/shared/basis`, and a JSON header in the metadata entry `gems` with the
//! configuration, step counters, gate statistics and refresh counts (which, with the seed, fix
//! every future random sketch: no generator state needs saving).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::Path;

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::adam::AdamMoments;
use crate::config::GemsConfig;
use crate::error::{GemsError, Result};
use crate::null_space::{KnowledgeBasis, NullSpace};
use crate::optimizer::{GemsOptimizer, OptimizerState, ParamPlan, WeightState};
use crate::projector::{Projector, Side};
use crate::subspace::{Subspace, WeightSubspaces};

const FORMAT: &str = "gems-optimizer-state";
/// Version 2 added the per-row bias-correction masses of every moment pair; version 3 a trained
/// slice of a full-moment weight, no longer written: the trained rows of a vocabulary matrix are
/// now a parameter of their own, so a file with a slice fails the shape check of its moments.
/// Version 4 added the knowledge parts weight decay keeps (an older file has none: they are
/// taken again from the weights at the next decay).
const VERSION: u32 = 4;
/// The oldest version that loads.
const OLDEST_VERSION: u32 = 2;
const HEADER_KEY: &str = "gems";

#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    version: u32,
    config: GemsConfig,
    step: u64,
    num_tasks: Option<usize>,
    gate_sums: Vec<f64>,
    weights: BTreeMap<String, WeightHeader>,
    null_space: BTreeMap<String, KnowledgeHeader>,
    /// Paths of the weights whose knowledge part is saved (`knowledge_parts/<path>`).
    #[serde(default)]
    knowledge_parts: Vec<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum WeightHeader {
    Full {
        steps: u64,
    },
    LowRank {
        columns_side: bool,
        refreshes: u64,
        refresh_offset: u64,
        shared_steps: u64,
        task_steps: Vec<u64>,
    },
}

#[derive(Serialize, Deserialize)]
struct KnowledgeHeader {
    input_axis: usize,
    retained_energy: f64,
    has_basis: bool,
}

impl GemsOptimizer {
    /// Writes the whole state to `path` atomically (a temporary file renamed into place).
    pub fn save_state(&self, path: &Path) -> Result<()> {
        let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        let mut push = |name: String, tensor: &Tensor<2>| {
            let dims = tensor.dims().to_vec();
            let values = tensor
                .to_data()
                .try_into_vec_as::<f32>()
                .expect("float tensors convert to f32");
            tensors.push((
                name,
                dims,
                values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ));
        };
        let push_subspace =
            |push: &mut dyn FnMut(String, &Tensor<2>), prefix: String, s: &Subspace| {
                push(format!("{prefix}/basis"), &s.projector.basis);
                push(format!("{prefix}/first"), &s.moments.first);
                push(format!("{prefix}/second"), &s.moments.second);
                push(format!("{prefix}/first_mass"), &s.moments.first_mass);
                push(format!("{prefix}/second_mass"), &s.moments.second_mass);
            };

        let mut weights = BTreeMap::new();
        for (path, state) in &self.state.weights {
            let header = match state {
                WeightState::Full(moments) => {
                    push(format!("weights/{path}/first"), &moments.first);
                    push(format!("weights/{path}/second"), &moments.second);
                    push(format!("weights/{path}/first_mass"), &moments.first_mass);
                    push(format!("weights/{path}/second_mass"), &moments.second_mass);
                    WeightHeader::Full {
                        steps: moments.steps,
                    }
                }
                WeightState::LowRank(subspaces) => {
                    push_subspace(
                        &mut push,
                        format!("weights/{path}/shared"),
                        &subspaces.shared,
                    );
                    for (task, subspace) in subspaces.tasks.iter().enumerate() {
                        push_subspace(&mut push, format!("weights/{path}/task{task}"), subspace);
                    }
                    WeightHeader::LowRank {
                        columns_side: subspaces.shared.projector.side == Side::Columns,
                        refreshes: subspaces.refreshes,
                        refresh_offset: subspaces.refresh_offset,
                        shared_steps: subspaces.shared.moments.steps,
                        task_steps: subspaces.tasks.iter().map(|t| t.moments.steps).collect(),
                    }
                }
            };
            weights.insert(path.clone(), header);
        }
        let mut null_space = BTreeMap::new();
        for (path, knowledge) in self.null_space.iter() {
            if let Some(basis) = &knowledge.basis {
                push(format!("null_space/{path}"), basis);
            }
            null_space.insert(
                path.clone(),
                KnowledgeHeader {
                    input_axis: knowledge.input_axis,
                    retained_energy: knowledge.retained_energy,
                    has_basis: knowledge.basis.is_some(),
                },
            );
        }

        for (path, part) in &self.state.knowledge_parts {
            push(format!("knowledge_parts/{path}"), part);
        }

        let header = Header {
            format: FORMAT.into(),
            version: VERSION,
            config: self.config.clone(),
            step: self.state.step,
            num_tasks: self.state.num_tasks,
            gate_sums: self.state.gate_sums.clone(),
            weights,
            null_space,
            knowledge_parts: self.state.knowledge_parts.keys().cloned().collect(),
        };
        let header = serde_json::to_string(&header).expect("the state header serialises");
        write_safetensors(path, &tensors, HEADER_KEY, header)
    }

    /// Restores the state saved by [`GemsOptimizer::save_state`] onto `device`, replacing the
    /// current state and knowledge bases. The file must have been written with the same
    /// configuration as this optimizer's.
    pub fn load_state(&mut self, path: &Path, device: &Device) -> Result<()> {
        let bytes = read_file(path)?;
        let (file, header): (_, Header) =
            read_safetensors(path, &bytes, HEADER_KEY, (FORMAT, OLDEST_VERSION..=VERSION))?;
        let differing = differing_fields(&header.config, &self.config);
        if !differing.is_empty() {
            return Err(state_error(
                path,
                format!(
                    "written with a different optimizer configuration (fields: {}); resume with \
                     the configuration the run started with",
                    differing.join(", ")
                ),
            ));
        }

        let load = |name: &str| -> Result<Tensor<2>> {
            let view = file
                .tensor(name)
                .map_err(|_| state_error(path, format!("tensor `{name}` is missing")))?;
            let dims: [usize; 2] = view
                .shape()
                .try_into()
                .map_err(|_| state_error(path, format!("tensor `{name}` is not 2-D")))?;
            if view.dtype() != Dtype::F32 {
                return Err(state_error(path, format!("tensor `{name}` is not float32")));
            }
            let values = f32_values(view.data());
            // A NaN or infinity in any basis, moment or mass would spread to every weight.
            if let Some(value) = values.iter().find(|v| !v.is_finite()) {
                return Err(state_error(path, format!("tensor `{name}` holds {value}")));
            }
            Ok(Tensor::from_data(TensorData::new(values, dims), device))
        };
        let load_moments = |prefix: &str, steps: u64| -> Result<AdamMoments> {
            Ok(AdamMoments {
                first: load(&format!("{prefix}/first"))?,
                second: load(&format!("{prefix}/second"))?,
                first_mass: load(&format!("{prefix}/first_mass"))?,
                second_mass: load(&format!("{prefix}/second_mass"))?,
                steps,
            })
        };
        let load_subspace = |prefix: &str, side: Side, steps: u64| -> Result<Subspace> {
            Ok(Subspace {
                projector: Projector {
                    basis: load(&format!("{prefix}/basis"))?,
                    side,
                },
                moments: load_moments(prefix, steps)?,
            })
        };

        let mut weights = BTreeMap::new();
        for (name, weight) in header.weights {
            let state = match weight {
                WeightHeader::Full { steps } => {
                    WeightState::Full(load_moments(&format!("weights/{name}"), steps)?)
                }
                WeightHeader::LowRank {
                    columns_side,
                    refreshes,
                    refresh_offset,
                    shared_steps,
                    task_steps,
                } => {
                    let side = if columns_side {
                        Side::Columns
                    } else {
                        Side::Rows
                    };
                    let shared =
                        load_subspace(&format!("weights/{name}/shared"), side, shared_steps)?;
                    let tasks = task_steps
                        .into_iter()
                        .enumerate()
                        .map(|(t, steps)| {
                            load_subspace(&format!("weights/{name}/task{t}"), side, steps)
                        })
                        .collect::<Result<Vec<_>>>()?;
                    WeightState::LowRank(WeightSubspaces::new(
                        shared,
                        tasks,
                        refreshes,
                        refresh_offset,
                    ))
                }
            };
            weights.insert(name, state);
        }
        let mut null_space = NullSpace::new();
        for (name, knowledge) in header.null_space {
            let basis = if knowledge.has_basis {
                Some(load(&format!("null_space/{name}"))?)
            } else {
                None
            };
            null_space.insert(
                name,
                KnowledgeBasis {
                    basis,
                    input_axis: knowledge.input_axis,
                    retained_energy: knowledge.retained_energy,
                },
            );
        }

        let knowledge_parts = header
            .knowledge_parts
            .into_iter()
            .map(|name| Ok((name.clone(), load(&format!("knowledge_parts/{name}"))?)))
            .collect::<Result<BTreeMap<_, _>>>()?;

        self.state = OptimizerState {
            step: header.step,
            num_tasks: header.num_tasks,
            gate_sums: header.gate_sums,
            weights,
            knowledge_parts,
        };
        self.null_space = null_space;
        self.complements.clear();
        // The state's bases were made with the state's own knowledge bases.
        self.refresh_pending.clear();
        Ok(())
    }
}

/// Writes float32 `tensors` (name, shape, little-endian bytes) and a JSON `header` under the
/// metadata entry `header_key` as one safetensors file, atomically.
pub(crate) fn write_safetensors(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<u8>)],
    header_key: &str,
    header: String,
) -> Result<()> {
    let views = tensors
        .iter()
        .map(|(name, dims, bytes)| {
            let view = TensorView::new(Dtype::F32, dims.clone(), bytes)
                .expect("sizes match by construction");
            (name.clone(), view)
        })
        .collect::<Vec<_>>();
    // Streamed to the file: the state is not copied a second time into one buffer.
    let metadata = Some(HashMap::from([(header_key.into(), header)]));
    write_atomically(path, |temporary| {
        safetensors::serialize_to_file(views, metadata, temporary)
            .map_err(|e| std::io::Error::other(format!("could not serialise: {e}")))
    })
}

/// The bytes of the file at `path`; the error names it.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|e| state_error(path, format!("cannot read: {e}")))
}

/// The name and version every header written by [`write_safetensors`] carries.
#[derive(Deserialize)]
struct Stamp {
    format: String,
    version: u32,
}

/// The tensors of a safetensors file's `bytes` and its JSON header under the metadata entry
/// `header_key`, refusing a file whose header is not of the format and versions given; errors
/// name `path`.
pub(crate) fn read_safetensors<'a, H: DeserializeOwned>(
    path: &Path,
    bytes: &'a [u8],
    header_key: &str,
    (format, versions): (&str, std::ops::RangeInclusive<u32>),
) -> Result<(SafeTensors<'a>, H)> {
    let file = SafeTensors::deserialize(bytes)
        .map_err(|e| state_error(path, format!("not a safetensors file: {e}")))?;
    let (_, metadata) = SafeTensors::read_metadata(bytes)
        .map_err(|e| state_error(path, format!("unreadable header: {e}")))?;
    let json = metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get(header_key))
        .ok_or_else(|| state_error(path, format!("no `{header_key}` header")))?;
    let malformed =
        |e: serde_json::Error| state_error(path, format!("malformed `{header_key}` header: {e}"));
    let stamp: Stamp = serde_json::from_str(json).map_err(malformed)?;
    if stamp.format != format || !versions.contains(&stamp.version) {
        let wanted = match (versions.start(), versions.end()) {
            (oldest, newest) if oldest == newest => format!("v{newest}"),
            (oldest, newest) => format!("v{oldest} to v{newest}"),
        };
        return Err(state_error(
            path,
            format!(
                "format {} v{} is not {format} {wanted}",
                stamp.format, stamp.version
            ),
        ));
    }
    let header = serde_json::from_str(json).map_err(malformed)?;
    Ok((file, header))
}

/// Little-endian float32 bytes as values.
pub(crate) fn f32_values(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

impl GemsOptimizer {
    /// Checks that the state (restored with [`GemsOptimizer::load_state`]) fits `module`: every
    /// entry belongs to one of its parameters, and every basis, moment and knowledge basis has
    /// the shape that parameter implies. A state saved for another model, or damaged, is refused
    /// here instead of failing inside the next step; errors name `path`, the file the state was
    /// read from.
    pub fn check_state_fits<M: Module>(&self, module: &M, path: &Path) -> Result<()> {
        let file = path;
        let tasks = self.state.num_tasks.unwrap_or(0);
        let plans: BTreeMap<String, ParamPlan> = self
            .plan(module, tasks)
            .into_iter()
            .map(|plan| (plan.path.clone(), plan))
            .collect();
        let mismatch = |path: &str, what: &str, found: [usize; 2], expected: String| {
            Err(state_error(
                file,
                format!(
                    "the state of `{path}` does not fit the model: {what} is {found:?}, expected {expected}"
                ),
            ))
        };
        let shape_of = |path: &str| {
            plans.get(path).map(|plan| &plan.shape).ok_or_else(|| {
                state_error(
                    file,
                    format!("holds the state of `{path}`, which the model does not have"),
                )
            })
        };
        // A moment pair and the correction masses of its rows.
        let check_moments = |path: &str, moments: &AdamMoments, dims: [usize; 2]| {
            for (what, tensor, expected) in [
                ("a first moment", &moments.first, dims),
                ("a second moment", &moments.second, dims),
                (
                    "a first moment's correction mass",
                    &moments.first_mass,
                    [dims[0], 1],
                ),
                (
                    "a second moment's correction mass",
                    &moments.second_mass,
                    [dims[0], 1],
                ),
            ] {
                if tensor.dims() != expected {
                    return mismatch(path, what, tensor.dims(), format!("{expected:?}"));
                }
            }
            Ok(())
        };
        for (path, state) in &self.state.weights {
            let shape = shape_of(path)?;
            if self.frozen().contains(path) {
                return Err(state_error(
                    file,
                    format!("holds the state of `{path}`, which is frozen in this run"),
                ));
            }
            match state {
                WeightState::Full(moments) => {
                    check_moments(path, moments, crate::optimizer::matrix_shape(shape))?
                }
                WeightState::LowRank(subspaces) => {
                    let [rows, cols] = match shape[..] {
                        [rows, cols] => [rows, cols],
                        _ => {
                            return Err(state_error(
                                file,
                                format!(
                                    "the state of `{path}` is low-rank, but the parameter has shape {shape:?}"
                                ),
                            ));
                        }
                    };
                    let every = self.config.refresh_every;
                    if subspaces.refresh_offset >= every {
                        return Err(state_error(
                            file,
                            format!(
                                "the state of `{path}` refreshes at offset {}, beyond refresh_every ({every})",
                                subspaces.refresh_offset
                            ),
                        ));
                    }
                    // Task subspaces, one per task, exactly where the plan gives them a rank.
                    let with_tasks = plans[path].ranks.is_some_and(|r| r.task > 0) && tasks > 1;
                    let expected = if with_tasks { tasks } else { 0 };
                    if subspaces.tasks.len() != expected {
                        return Err(state_error(
                            file,
                            format!(
                                "the state of `{path}` has {} task subspaces, expected {expected}",
                                subspaces.tasks.len()
                            ),
                        ));
                    }
                    let canonical = match subspaces.shared.projector.side {
                        Side::Rows => [rows, cols],
                        Side::Columns => [cols, rows],
                    };
                    for subspace in std::iter::once(&subspaces.shared).chain(&subspaces.tasks) {
                        let basis = subspace.projector.basis.dims();
                        if basis[0] != canonical[0]
                            || subspace.projector.side != subspaces.shared.projector.side
                        {
                            return mismatch(
                                path,
                                "a basis",
                                basis,
                                format!("[{}, rank]", canonical[0]),
                            );
                        }
                        check_moments(path, &subspace.moments, [basis[1], canonical[1]])?;
                    }
                }
            }
        }
        for (path, knowledge) in self.null_space.iter() {
            let shape = shape_of(path)?;
            if let Some(basis) = &knowledge.basis {
                let inputs = shape.get(knowledge.input_axis).copied().unwrap_or(0);
                if basis.dims()[0] != inputs {
                    return mismatch(
                        path,
                        "the knowledge basis",
                        basis.dims(),
                        format!("[{inputs}, k]"),
                    );
                }
            }
        }
        for (path, part) in &self.state.knowledge_parts {
            let shape = shape_of(path)?;
            let expected = match (self.null_space.get(path), shape.as_slice()) {
                (Some(knowledge), &[rows, cols]) => knowledge.knowledge_part_shape([rows, cols]),
                _ => None,
            };
            if expected != Some(part.dims()) {
                return mismatch(
                    path,
                    "the knowledge part kept for weight decay",
                    part.dims(),
                    match expected {
                        Some(expected) => format!("{expected:?}"),
                        None => "none (the weight has no knowledge basis)".into(),
                    },
                );
            }
        }
        Ok(())
    }
}

/// Writes `bytes` to `path` through a temporary file in the same folder, flushed to disk and
/// renamed into place, so that a crash never leaves a half-written file under `path`.
pub fn write_file_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomically(path, |temporary| {
        fs::File::create(temporary)?.write_all(bytes)
    })
}

/// Has `write` create the file it is given (a temporary sibling of `path`), then flushes it to
/// disk and renames it to `path`; the temporary is removed on failure.
fn write_atomically(path: &Path, write: impl FnOnce(&Path) -> std::io::Result<()>) -> Result<()> {
    let file_name = path
        .file_name()
        .ok_or_else(|| state_error(path, "not a file path".into()))?;
    let temporary = path.with_file_name(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let written = || -> std::io::Result<()> {
        write(&temporary)?;
        fs::File::open(&temporary)?.sync_all()?;
        fs::rename(&temporary, path)
    };
    written().map_err(|e| {
        let _ = fs::remove_file(&temporary);
        state_error(path, format!("cannot write: {e}"))
    })
}

/// An error about the state file (or knowledge-basis file) at `path`.
pub(crate) fn state_error(path: &Path, message: String) -> GemsError {
    GemsError::State {
        path: path.to_path_buf(),
        message,
    }
}

/// Top-level configuration fields whose values differ, leaving out `diagnostics`, which changes
/// no update ([`GemsOptimizer::set_diagnostics`]).
fn differing_fields(saved: &GemsConfig, current: &GemsConfig) -> Vec<String> {
    let saved = serde_json::to_value(saved).expect("configs serialise");
    let current = serde_json::to_value(current).expect("configs serialise");
    match (saved, current) {
        (serde_json::Value::Object(saved), serde_json::Value::Object(current)) => saved
            .iter()
            .filter(|(key, _)| key.as_str() != "diagnostics")
            .filter(|(key, value)| current.get(*key) != Some(value))
            .map(|(key, _)| key.clone())
            .collect(),
        _ => unreachable!("configs serialise to objects"),
    }
}
