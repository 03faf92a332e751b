//! The layout of a run directory, the name of everything in it, and atomic writes into it.
//!
//! ```text
//! RUN/config.toml             CONFIG: the resolved settings
//!     manifest.json           MANIFEST: version, settings, data fingerprint, status, timing
//!     base/                   BASE_MODEL: a from-scratch run's initial weights (for
//!                             `gems analyze retention`)
//!     best/                   BEST_MODEL: the best model on validation so far
//!     checkpoint/             CHECKPOINT: the latest training checkpoint
//!         model/                  MODEL: the model (LoRA adapters merged)
//!         optimizer.safetensors   OPTIMIZER_STATE: every basis, moment and counter
//!         progress.json           PROGRESS: step, epoch, position, best validation, curves
//!         lora.bpk                LORA_RECORD: LoRA runs only, the unmerged adapters
//!     model/                  MODEL: the final model (the best on validation, else the last)
//!     metrics.json            METRICS: test metrics, both protocols, with the popularity / BM25 floor
//!     curves.json             CURVES: losses, learning rate, gate, validation, per-layer conflict
//!     plots/                  PLOTS: LOSS_PLOT, GATE_PLOT, VALIDATION_PLOT (SVG)
//!     memory.json             MEMORY_ESTIMATE: the memory expected before training started
//!     gems.lock               LOCK: locked by the `gems train` working on the run (its pid)
//! ```
//!
//! Every model folder (`base/`, `best/`, `model/`, `checkpoint/model/`) is a Hugging Face
//! directory (`model.safetensors`, `config.json`) with the run's tokenizer (TOKENIZER) and item
//! identifiers (IDENTIFIERS) beside the weights. Folders are replaced whole (see
//! [`replace_directory`]): `X.partial` is a new copy being written, `X.old` the previous one
//! while it is moved aside. `gems train` holds an exclusive lock on LOCK (which names its
//! process) while it works on the run.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{CliError, Result};

/// A run directory.
#[derive(Clone, Debug)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// A directory for outputs at `root` (created if missing), such as an analysis's.
    pub fn create(root: &Path) -> Result<Self> {
        fs::create_dir_all(root.join(PLOTS))
            .map_err(|e| CliError::io(root, "cannot create the run directory", e))?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// A new run at `root`, locked for this process. The directory must be absent or empty:
    /// nothing of the user's is overwritten, and an earlier run is resumed (`--resume`), never
    /// restarted over.
    pub fn create_new(root: &Path) -> Result<(Self, RunLock)> {
        check_new_run(root)?;
        fs::create_dir_all(root)
            .map_err(|e| CliError::io(root, "cannot create the run directory", e))?;
        let lock = RunLock::acquire(root)?;
        // Again under the lock: another process may have started a run here meanwhile.
        check_new_run(root)?;
        let run = Self::create(root)?;
        Ok((run, lock))
    }

    /// Removes everything a new run wrote when it failed before its first checkpoint, so that
    /// the same command can simply be run again; `created`: whether the run made the directory.
    pub fn discard_unstarted(&self, created: bool) -> Result<()> {
        let started = [CHECKPOINT, "checkpoint.old", BEST_MODEL, MODEL]
            .iter()
            .any(|name| self.path(name).exists());
        if started {
            return Ok(());
        }
        let entries = fs::read_dir(&self.root)
            .map_err(|e| CliError::io(&self.root, "cannot list the run directory", e))?;
        for entry in entries.flatten() {
            let path = entry.path();
            let removed = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            removed.map_err(|e| CliError::io(&path, "cannot remove", e))?;
        }
        if created {
            fs::remove_dir(&self.root).map_err(|e| CliError::io(&self.root, "cannot remove", e))?;
        }
        Ok(())
    }

    /// An existing run, locked for this process to train further: what a crash left half done
    /// is finished (a folder moved aside but not replaced is moved back) and stale temporary
    /// files are removed.
    pub fn resume(root: &Path) -> Result<(Self, RunLock)> {
        let run = Self::open(root)?;
        let lock = RunLock::acquire(root)?;
        for folder in [CHECKPOINT, BEST_MODEL, MODEL, BASE_MODEL] {
            recover_directory(&run.path(folder))?;
        }
        for folder in [root.to_path_buf(), run.path(PLOTS)] {
            sweep_temporaries(&folder)?;
        }
        Ok((run, lock))
    }

    /// An existing run at `root`.
    pub fn open(root: &Path) -> Result<Self> {
        if !root.join(CONFIG).is_file() {
            return Err(CliError::run(
                root,
                "not a run directory (no config.toml); give the --out directory of `gems train`",
            ));
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A file or folder of the run.
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Writes `value` as pretty JSON to `name`, atomically.
    pub fn write_json(&self, name: &str, value: &impl Serialize) -> Result<()> {
        write_json(&self.path(name), value)
    }

    /// Writes `text` to `name`, atomically.
    pub fn write_text(&self, name: &str, text: &str) -> Result<()> {
        gems_core::checkpoint::write_file_atomically(&self.path(name), text.as_bytes())?;
        Ok(())
    }
}

/// Settings file of a run.
pub const CONFIG: &str = "config.toml";
/// Manifest of a run.
pub const MANIFEST: &str = "manifest.json";
/// Test metrics of a run.
pub const METRICS: &str = "metrics.json";
/// Curves of a run.
pub const CURVES: &str = "curves.json";
/// Folder of a run's plots.
pub const PLOTS: &str = "plots";
/// Training loss per task.
pub const LOSS_PLOT: &str = "plots/loss.svg";
/// Gate value per task.
pub const GATE_PLOT: &str = "plots/gate.svg";
/// Validation NDCG@10 per task.
pub const VALIDATION_PLOT: &str = "plots/validation.svg";
/// Final model folder of a run; also the model folder inside a checkpoint.
pub const MODEL: &str = "model";
/// Folder of the best model on validation so far.
pub const BEST_MODEL: &str = "best";
/// Folder of a from-scratch run's initial weights.
pub const BASE_MODEL: &str = "base";
/// Latest checkpoint folder of a run.
pub const CHECKPOINT: &str = "checkpoint";
/// Lock file of a run being trained (it holds the process id of the holder).
pub const LOCK: &str = "gems.lock";
/// The memory estimate made before training (see `crate::memory`).
pub const MEMORY_ESTIMATE: &str = "memory.json";
/// Optimizer state file of a checkpoint.
pub const OPTIMIZER_STATE: &str = "optimizer.safetensors";
/// Progress file of a checkpoint.
pub const PROGRESS: &str = "progress.json";
/// Unmerged model record of a LoRA checkpoint.
pub const LORA_RECORD: &str = "lora.bpk";
/// Tokenizer file beside a run's model weights.
pub const TOKENIZER: &str = "tokenizer.json";
/// Item identifiers file beside a run's model weights.
pub const IDENTIFIERS: &str = "identifiers.json";
/// Hugging Face configuration file of a model folder.
pub use gems_models::CONFIG_FILE as MODEL_CONFIG;

/// Writes `value` as pretty JSON to `path`, atomically.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("values serialise to JSON");
    gems_core::checkpoint::write_file_atomically(path, text.as_bytes())?;
    Ok(())
}

/// Reads JSON from `path`, naming the file (and line) on failure.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = fs::read_to_string(path).map_err(|e| CliError::io(path, "cannot read", e))?;
    serde_json::from_str(&text).map_err(|e| CliError::run(path, format!("line {}: {e}", e.line())))
}

/// Refuses `root` for a new run unless it is absent or empty (a lock file aside).
fn check_new_run(root: &Path) -> Result<()> {
    if !root.exists() {
        return Ok(());
    }
    if root.join(CONFIG).exists() {
        return Err(CliError::run(
            root,
            format!(
                "already holds a run; continue it with --resume {}, or remove it or choose another --out",
                root.display()
            ),
        ));
    }
    let entries =
        fs::read_dir(root).map_err(|e| CliError::io(root, "cannot list the directory", e))?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| CliError::io(root, "cannot list the directory", e))?;
        if entry.file_name() != LOCK {
            found.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    found.sort();
    match found.first() {
        None => Ok(()),
        Some(first) => Err(CliError::run(
            root,
            format!(
                "is not empty ({first}{}) and not a run; a new run needs a new or empty directory, so that nothing in it is overwritten",
                match found.len() - 1 {
                    0 => String::new(),
                    more => format!(" and {more} more"),
                }
            ),
        )),
    }
}

/// An exclusive lock on a run directory, held until it is dropped or the process ends however
/// it ends (the operating system releases it): one `gems train` at a time works on a run.
#[derive(Debug)]
pub struct RunLock {
    _file: fs::File,
}

impl RunLock {
    /// Takes the lock of the directory `root`, or fails naming the process that holds it.
    pub fn acquire(root: &Path) -> Result<Self> {
        let path = root.join(LOCK);
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| CliError::io(&path, "cannot open the lock file", e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&path).unwrap_or_default();
                let holder = match holder.trim() {
                    "" => "another gems process".to_string(),
                    pid => format!("another gems process ({pid})"),
                };
                return Err(CliError::run(
                    root,
                    format!(
                        "{holder} is working on this run; wait for it to end or stop it, then try again"
                    ),
                ));
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(CliError::io(&path, "cannot lock the run directory", e));
            }
        }
        file.set_len(0)
            .and_then(|()| writeln!(file, "pid {}", std::process::id()))
            .map_err(|e| CliError::io(&path, "cannot write the lock file", e))?;
        Ok(Self { _file: file })
    }
}

/// Removes the temporary files that a killed process left in `folder` (atomic writes go through
/// `.NAME.tmp-PID`); call it only while holding the run's lock, when no other process writes there.
fn sweep_temporaries(folder: &Path) -> Result<()> {
    let Ok(entries) = fs::read_dir(folder) else {
        return Ok(());
    };
    let own = format!(".tmp-{}", std::process::id());
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let temporary = name.starts_with('.')
            && name
                .rsplit_once(".tmp-")
                .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
        if temporary && !name.ends_with(&own) {
            let path = entry.path();
            fs::remove_file(&path)
                .map_err(|e| CliError::io(&path, "cannot remove a stale temporary file", e))?;
            tracing::info!(
                "removed {}, left by a process that was killed",
                path.display()
            );
        }
    }
    Ok(())
}

/// Finishes what a crash between the two renames of [`replace_directory`] left: `target` is
/// missing and its previous complete copy is aside as `target.old`, which is moved back.
pub fn recover_directory(target: &Path) -> Result<()> {
    let old = sibling(target, "old");
    if !target.exists() && old.is_dir() {
        fs::rename(&old, target)
            .map_err(|e| CliError::io(&old, "cannot move the previous copy back", e))?;
        tracing::warn!(
            "recovered {} from the copy an interrupted replacement left aside",
            target.display()
        );
    }
    Ok(())
}

/// Replaces the directory `target` by what `fill` writes, so that `target` is always either the
/// old complete directory or the new complete one: `fill` writes into `target.partial`, which
/// is renamed into place after the old one is moved aside (as `target.old`, removed last).
///
/// The last complete copy is never deleted: a `target.old` without `target` (a crash between the
/// two renames) is moved back first; a `target.old` beside `target` is a superseded copy; a
/// `target.partial` is never complete. A failing `fill` removes its partial copy.
pub fn replace_directory(target: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    recover_directory(target)?;
    let partial = sibling(target, "partial");
    let old = sibling(target, "old");
    for leftover in [&partial, &old] {
        if leftover.exists() {
            fs::remove_dir_all(leftover)
                .map_err(|e| CliError::io(leftover, "cannot remove a leftover", e))?;
        }
    }
    fs::create_dir_all(&partial).map_err(|e| CliError::io(&partial, "cannot create", e))?;
    if let Err(error) = fill(&partial) {
        let _ = fs::remove_dir_all(&partial);
        return Err(error);
    }
    if target.exists()
        && let Err(e) = fs::rename(target, &old)
    {
        let _ = fs::remove_dir_all(&partial);
        return Err(CliError::io(target, "cannot move aside", e));
    }
    if let Err(e) = fs::rename(&partial, target) {
        if old.exists() {
            let _ = fs::rename(&old, target);
        }
        let _ = fs::remove_dir_all(&partial);
        return Err(CliError::io(target, "cannot move into place", e));
    }
    if old.exists() {
        // The new copy is complete and in place: a failure here only leaves a superseded copy,
        // which the next replacement removes.
        if let Err(e) = fs::remove_dir_all(&old) {
            tracing::warn!("cannot remove {}: {e}", old.display());
        }
    }
    Ok(())
}

/// The file that marks a directory the user named (a dataset's `--out`) as written by
/// [`replace_named_directory`], so that a sibling `X.partial` or `X.old` holding it is known to
/// be gems's temporary copy and not a folder of the user's.
pub const REPLACEMENT_MARK: &str = ".gems-replaced";

/// [`replace_directory`] for a directory the user named, whose siblings may be the user's own:
/// `X.partial` and `X.old` are recovered or removed only when they carry [`REPLACEMENT_MARK`],
/// which every copy written here (and the previous `X`, before it is moved aside) is given.
/// A sibling without it is never touched: the replacement is refused before anything changes.
pub fn replace_named_directory(
    target: &Path,
    fill: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    recover_named_directory(target)?;
    for suffix in ["partial", "old"] {
        let sibling = sibling(target, suffix);
        if sibling.exists() && !sibling.join(REPLACEMENT_MARK).is_file() {
            return Err(CliError::run(
                &sibling,
                format!(
                    "in the way: gems writes {} through this name and would replace it, but it is not a copy gems made; move or remove it",
                    target.display()
                ),
            ));
        }
    }
    if target.is_dir() {
        mark(target)?;
    }
    replace_directory(target, |folder| {
        mark(folder)?;
        fill(folder)
    })
}

/// [`recover_directory`] for a directory the user named: a `target.old` without
/// [`REPLACEMENT_MARK`] is the user's, and stays where it is.
pub fn recover_named_directory(target: &Path) -> Result<()> {
    if sibling(target, "old").join(REPLACEMENT_MARK).is_file() {
        recover_directory(target)?;
    }
    Ok(())
}

fn mark(folder: &Path) -> Result<()> {
    let path = folder.join(REPLACEMENT_MARK);
    fs::write(
        &path,
        "written by gems, which replaces this directory whole through the siblings NAME.partial and NAME.old\n",
    )
    .map_err(|e| CliError::io(&path, "cannot write", e))
}

/// `target` if complete, else the copy a crash between the two renames of
/// [`replace_directory`] left aside.
pub fn complete_directory(target: &Path) -> Option<PathBuf> {
    [target.to_path_buf(), sibling(target, "old")]
        .into_iter()
        .find(|p| p.is_dir())
}

fn sibling(target: &Path, suffix: &str) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!("{name}.{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_file(folder: &Path, name: &str, text: &str) -> Result<()> {
        fs::write(folder.join(name), text).map_err(|e| CliError::io(folder, "write", e))
    }

    #[test]
    fn a_directory_is_replaced_whole() {
        let folder = tempfile::tempdir().unwrap();
        let target = folder.path().join("checkpoint");
        replace_directory(&target, |p| write_file(p, "a", "1")).unwrap();
        replace_directory(&target, |p| write_file(p, "b", "2")).unwrap();
        assert!(!target.join("a").exists() && target.join("b").exists());
        // A failing fill leaves the previous directory untouched.
        let failed = replace_directory(&target, |_| Err(CliError::Settings("boom".into())));
        assert!(failed.is_err() && target.join("b").exists());
        assert_eq!(complete_directory(&target), Some(target.clone()));
        assert!(
            !sibling(&target, "partial").exists(),
            "a failed fill is cleaned up"
        );
    }

    #[test]
    fn a_crash_between_the_renames_loses_nothing() {
        let folder = tempfile::tempdir().unwrap();
        let target = folder.path().join("checkpoint");
        replace_directory(&target, |p| write_file(p, "a", "1")).unwrap();
        // The state a crash after the first rename leaves: the only complete copy is aside,
        // beside an unfinished new one.
        fs::rename(&target, sibling(&target, "old")).unwrap();
        fs::create_dir(sibling(&target, "partial")).unwrap();
        // A replacement whose writing then fails keeps the old copy, back in place.
        let failed = replace_directory(&target, |_| Err(CliError::Settings("disk full".into())));
        assert!(failed.is_err());
        assert_eq!(fs::read_to_string(target.join("a")).unwrap(), "1");
        assert!(!sibling(&target, "old").exists() && !sibling(&target, "partial").exists());
        // Recovery alone moves it back too.
        fs::rename(&target, sibling(&target, "old")).unwrap();
        recover_directory(&target).unwrap();
        assert_eq!(fs::read_to_string(target.join("a")).unwrap(), "1");
    }

    #[test]
    fn a_named_directory_leaves_the_users_own_siblings_alone() {
        let folder = tempfile::tempdir().unwrap();
        let target = folder.path().join("data");
        for suffix in ["old", "partial"] {
            let theirs = sibling(&target, suffix);
            fs::create_dir(&theirs).unwrap();
            write_file(&theirs, "precious", "mine").unwrap();
            let error = replace_named_directory(&target, |p| write_file(p, "a", "1"))
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("data.") && error.contains("in the way"),
                "{error}"
            );
            assert!(!target.exists());
            recover_named_directory(&target).unwrap();
            assert!(
                !target.exists(),
                "the user's data.{suffix} is not taken for a copy"
            );
            assert_eq!(fs::read_to_string(theirs.join("precious")).unwrap(), "mine");
            fs::remove_dir_all(&theirs).unwrap();
        }
        // Its own copies are replaced, and recovered after a crash between the renames.
        replace_named_directory(&target, |p| write_file(p, "a", "1")).unwrap();
        fs::rename(&target, sibling(&target, "old")).unwrap();
        let partial = sibling(&target, "partial");
        fs::create_dir(&partial).unwrap();
        mark(&partial).unwrap();
        replace_named_directory(&target, |p| write_file(p, "b", "2")).unwrap();
        assert!(!target.join("a").exists() && target.join("b").exists());
        assert!(!sibling(&target, "old").exists() && !partial.exists());
        // A directory the user made is marked before it is moved aside.
        let theirs = folder.path().join("theirs");
        fs::create_dir(&theirs).unwrap();
        replace_named_directory(&theirs, |_| Err(CliError::Settings("disk full".into())))
            .unwrap_err();
        assert!(theirs.join(REPLACEMENT_MARK).is_file());
    }

    #[test]
    fn a_run_is_locked_by_one_process_and_new_runs_need_an_empty_directory() {
        let folder = tempfile::tempdir().unwrap();
        let root = folder.path().join("run");
        let (run, lock) = RunDir::create_new(&root).unwrap();
        let holder = fs::read_to_string(root.join(LOCK)).unwrap();
        assert_eq!(holder.trim(), format!("pid {}", std::process::id()));
        // A second lock on the same directory (another open file description) is refused.
        let error = RunLock::acquire(&root).unwrap_err().to_string();
        assert!(error.contains(holder.trim()), "{error}");
        drop(lock);
        run.write_text(CONFIG, "seed = 1\n").unwrap();
        let error = RunDir::create_new(&root).unwrap_err().to_string();
        assert!(
            error.contains("already holds a run") && error.contains("--resume"),
            "{error}"
        );
        let other = folder.path().join("mine");
        fs::create_dir(&other).unwrap();
        fs::write(other.join("notes.txt"), "keep").unwrap();
        let error = RunDir::create_new(&other).unwrap_err().to_string();
        assert!(
            error.contains("not empty") && error.contains("notes.txt"),
            "{error}"
        );
        assert_eq!(fs::read_to_string(other.join("notes.txt")).unwrap(), "keep");
        // Resuming sweeps what a killed process left.
        let stale = root.join(".curves.json.tmp-4000000");
        fs::write(&stale, "half").unwrap();
        let (_run, _lock) = RunDir::resume(&root).unwrap();
        assert!(!stale.exists());
    }
}
