//! Hugging Face Hub ids for `--model-dir`: `t5-small`, `google/flan-t5-base` or
//! `Qwen/Qwen2.5-0.5B-Instruct` resolve to a local snapshot in the standard Hub cache, downloaded
//! once and read from the cache afterwards.
//!
//! The Hub's documented layouts, as the `huggingface_hub` Python library uses them:
//! - revision info `{endpoint}/api/models/{repo}/revision/{revision}` (commit `sha`, file list),
//! - files `{endpoint}/{repo}/resolve/{commit}/{file}`,
//! - cache `{cache}/models--{org}--{name}/refs/{revision}` (the commit) and
//!   `{cache}/models--{org}--{name}/snapshots/{commit}/{file}`.
//!
//! Snapshot files are written in place (no `blobs/` symlinks): the Python library reads such a
//! snapshot as a cache hit, and it works where symlinks do not.
//!
//! Environment, as in `huggingface_hub`: `HF_ENDPOINT` (default `https://huggingface.co`),
//! `HF_HUB_CACHE`, else `HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else
//! `~/.cache/huggingface/hub`; `HF_TOKEN`, else the file `HF_TOKEN_PATH` or `HF_HOME/token`;
//! `HF_HUB_OFFLINE=1` never touches the network. When the Hub cannot be reached, a cached
//! snapshot is used with a warning.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{CliError, Result};

/// The revision resolved.
const REVISION: &str = "main";

/// Files fetched beside the weights when the repository has them.
const SIDE_FILES: [&str; 5] = [
    gems_models::CONFIG_FILE,
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

/// Where the Hub is and how to talk to it.
#[derive(Clone, Debug, PartialEq)]
pub struct HubConfig {
    /// Base URL, without a trailing slash.
    pub endpoint: String,
    /// The cache directory (holding `models--*` folders).
    pub cache: PathBuf,
    /// Access token, sent as a bearer token.
    pub token: Option<String>,
    /// Never use the network.
    pub offline: bool,
}

impl HubConfig {
    /// The configuration from the process environment.
    pub fn from_env() -> Self {
        Self::from_vars(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    /// The configuration from environment variables looked up by `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let home = var("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| var("HOME").map(|h| Path::new(&h).join(".cache")))
                .unwrap_or_else(|| PathBuf::from(".cache"))
                .join("huggingface")
        });
        let cache = var("HF_HUB_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join("hub"));
        let token = var("HF_TOKEN").or_else(|| {
            let path = var("HF_TOKEN_PATH")
                .map(PathBuf::from)
                .unwrap_or_else(|| home.join("token"));
            fs::read_to_string(path)
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
        });
        let offline = var("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "on" | "yes" | "true"
            )
        });
        Self {
            endpoint: var("HF_ENDPOINT")
                .unwrap_or_else(|| "https://huggingface.co".into())
                .trim_end_matches('/')
                .to_string(),
            cache,
            token,
            offline,
        }
    }
}

/// `given` itself when it is a directory; else, when it reads as a Hub id, the local snapshot
/// of that repository (downloaded on first use).
pub fn model_directory(given: &Path) -> Result<PathBuf> {
    if given.is_dir() {
        return Ok(given.to_path_buf());
    }
    match given.to_str().filter(|text| is_repo_id(text)) {
        Some(repo) => resolve(repo, &HubConfig::from_env()),
        None => Err(CliError::run(
            given,
            "no such model directory (and not a Hugging Face Hub id like `t5-small` or `Qwen/Qwen2.5-0.5B-Instruct`)",
        )),
    }
}

/// Whether `text` has the shape of a Hub repository id: `name` or `owner/name`, each of
/// letters, digits, `-`, `_` and `.`, not starting with `.` or `-`.
pub fn is_repo_id(text: &str) -> bool {
    let parts: Vec<&str> = text.split('/').collect();
    parts.len() <= 2
        && text.len() <= 96
        && parts.iter().all(|part| {
            !part.is_empty()
                && !part.starts_with(['.', '-'])
                && !part.contains("..")
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
}

/// The snapshot directory of `repo` at [`REVISION`], from the cache or downloaded.
pub fn resolve(repo: &str, config: &HubConfig) -> Result<PathBuf> {
    let folder = config
        .cache
        .join(format!("models--{}", repo.replace('/', "--")));
    let cached = cached_snapshot(&folder);
    if config.offline {
        return cached.ok_or_else(|| {
            hub_error(
                repo,
                format!(
                    "HF_HUB_OFFLINE is set and the model is not in the Hub cache {}; download it once with the network on, or give a local directory",
                    config.cache.display()
                ),
            )
        });
    }
    let info = match revision_info(repo, config) {
        Ok(info) => info,
        Err(Failure::Unreachable(why)) => {
            return match cached {
                Some(snapshot) => {
                    tracing::warn!(
                        "{}: unreachable ({why}); using the cached snapshot {}",
                        config.endpoint,
                        snapshot.display()
                    );
                    Ok(snapshot)
                }
                None => Err(hub_error(
                    repo,
                    format!(
                        "cannot reach {} ({why}) and the model is not in the Hub cache {}; check the network or HF_ENDPOINT, or give a local directory",
                        config.endpoint,
                        config.cache.display()
                    ),
                )),
            };
        }
        Err(Failure::Refused(message)) => return Err(hub_error(repo, message)),
    };
    if !is_commit(&info.sha) {
        return Err(hub_error(
            repo,
            format!("the Hub answered an invalid commit `{}`", info.sha),
        ));
    }
    let snapshot = folder.join("snapshots").join(&info.sha);
    for file in files_to_fetch(repo, &info, config, &snapshot)? {
        let target = snapshot.join(&file);
        if !target.is_file() {
            download(repo, &info.sha, &file, config, &target)?;
        }
    }
    let reference = folder.join("refs").join(REVISION);
    fs::create_dir_all(folder.join("refs"))
        .map_err(|e| CliError::io(&folder, "cannot create the Hub cache folder", e))?;
    gems_core::checkpoint::write_file_atomically(&reference, info.sha.as_bytes())?;
    Ok(snapshot)
}

/// The snapshot that `refs/main` names, if it holds a `config.json`.
fn cached_snapshot(folder: &Path) -> Option<PathBuf> {
    let commit = fs::read_to_string(folder.join("refs").join(REVISION)).ok()?;
    let snapshot = folder.join("snapshots").join(commit.trim());
    snapshot
        .join(gems_models::CONFIG_FILE)
        .is_file()
        .then_some(snapshot)
}

fn is_commit(sha: &str) -> bool {
    sha.len() == 40 && sha.chars().all(|c| c.is_ascii_hexdigit())
}

fn hub_error(repo: &str, message: impl Into<String>) -> CliError {
    CliError::Hub {
        repo: repo.to_string(),
        message: message.into(),
    }
}

/// What the revision endpoint says.
#[derive(Deserialize)]
struct RevisionInfo {
    sha: String,
    #[serde(default)]
    siblings: Vec<Sibling>,
}

#[derive(Deserialize)]
struct Sibling {
    rfilename: String,
}

/// Why a request failed.
enum Failure {
    /// The Hub could not be reached (no answer).
    Unreachable(String),
    /// The Hub answered with an error.
    Refused(String),
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(std::time::Duration::from_secs(20)))
        .user_agent(concat!("gems-rs/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

fn get(
    url: &str,
    config: &HubConfig,
) -> std::result::Result<ureq::http::Response<ureq::Body>, Failure> {
    let mut request = agent().get(url);
    if let Some(token) = &config.token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let response = request
        .call()
        .map_err(|e| Failure::Unreachable(e.to_string()))?;
    let status = response.status().as_u16();
    match status {
        200..=299 => Ok(response),
        401 | 403 => Err(Failure::Refused(format!(
            "{url}: access denied (HTTP {status}); for a gated or private model set HF_TOKEN to a token with access"
        ))),
        404 => Err(Failure::Refused(format!(
            "{url}: not found (HTTP 404); check the repository id (and, for a private model, HF_TOKEN)"
        ))),
        _ => Err(Failure::Refused(format!("{url}: HTTP {status}"))),
    }
}

fn revision_info(repo: &str, config: &HubConfig) -> std::result::Result<RevisionInfo, Failure> {
    let url = format!("{}/api/models/{repo}/revision/{REVISION}", config.endpoint);
    let mut response = get(&url, config)?;
    let text = response
        .body_mut()
        .read_to_string()
        .map_err(|e| Failure::Unreachable(e.to_string()))?;
    serde_json::from_str(&text)
        .map_err(|e| Failure::Refused(format!("{url}: unexpected answer: {e}")))
}

/// The config, tokenizer files and safetensors weights of the revision (one file, or an index
/// and the shards it names).
fn files_to_fetch(
    repo: &str,
    info: &RevisionInfo,
    config: &HubConfig,
    snapshot: &Path,
) -> Result<Vec<String>> {
    let listed = |name: &str| info.siblings.iter().any(|s| s.rfilename == name);
    if !listed(gems_models::CONFIG_FILE) {
        return Err(hub_error(
            repo,
            "the repository has no config.json: not a transformers model",
        ));
    }
    let mut files: Vec<String> = SIDE_FILES
        .iter()
        .filter(|f| listed(f))
        .map(|f| f.to_string())
        .collect();
    if listed(gems_models::WEIGHTS_FILE) {
        files.push(gems_models::WEIGHTS_FILE.into());
    } else if listed(gems_models::WEIGHTS_INDEX_FILE) {
        let index = gems_models::WEIGHTS_INDEX_FILE;
        let path = snapshot.join(index);
        if !path.is_file() {
            download(repo, &info.sha, index, config, &path)?;
        }
        let text = fs::read_to_string(&path).map_err(|e| CliError::io(&path, "cannot read", e))?;
        let parsed: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| CliError::run(&path, format!("line {}: {e}", e.line())))?;
        let mut shards: Vec<String> = parsed["weight_map"]
            .as_object()
            .ok_or_else(|| CliError::run(&path, "no `weight_map` object"))?
            .values()
            .filter_map(|v| v.as_str().map(String::from))
            .collect();
        shards.sort();
        shards.dedup();
        files.push(index.into());
        files.extend(shards);
    } else {
        return Err(hub_error(
            repo,
            "the repository has no safetensors weights (model.safetensors or its index); gems reads safetensors only",
        ));
    }
    Ok(files)
}

/// Downloads `file` of `repo` at `commit` to `target`, through `target.incomplete`.
fn download(repo: &str, commit: &str, file: &str, config: &HubConfig, target: &Path) -> Result<()> {
    if file.contains("..") || file.starts_with('/') {
        return Err(hub_error(repo, format!("refusing the file name `{file}`")));
    }
    let url = format!("{}/{repo}/resolve/{commit}/{file}", config.endpoint);
    let response = get(&url, config).map_err(|failure| match failure {
        Failure::Unreachable(why) => hub_error(repo, format!("{url}: download failed: {why}")),
        Failure::Refused(message) => hub_error(repo, message),
    })?;
    let length = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(|e| CliError::io(parent, "cannot create", e))?;
    }
    let partial = target.with_file_name(format!(
        "{}.incomplete",
        target
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let bar = crate::progress::download_bar(length, file);
    let mut reader = bar.wrap_read(response.into_body().into_reader());
    let mut output =
        fs::File::create(&partial).map_err(|e| CliError::io(&partial, "cannot create", e))?;
    let mut buffer = vec![0u8; 1 << 16];
    let mut written = 0u64;
    loop {
        let read = reader
            .read(&mut buffer)
            .map_err(|e| hub_error(repo, format!("{url}: download interrupted: {e}")))?;
        if read == 0 {
            break;
        }
        output
            .write_all(&buffer[..read])
            .map_err(|e| CliError::io(&partial, "cannot write", e))?;
        written += read as u64;
    }
    output
        .sync_all()
        .map_err(|e| CliError::io(&partial, "cannot write", e))?;
    if length.is_some_and(|expected| expected != written) {
        return Err(hub_error(
            repo,
            format!(
                "{url}: download cut short ({written} of {} bytes)",
                length.unwrap_or(0)
            ),
        ));
    }
    bar.finish_and_clear();
    fs::rename(&partial, target).map_err(|e| CliError::io(target, "cannot move into place", e))?;
    tracing::info!("downloaded {repo}/{file} ({written} bytes)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn repository_ids_are_told_from_paths() {
        for id in [
            "t5-small",
            "google/flan-t5-base",
            "Qwen/Qwen2.5-0.5B-Instruct",
        ] {
            assert!(is_repo_id(id), "{id}");
        }
        for path in [
            "/abs/model",
            "./model",
            "a/b/c",
            "../model",
            "a/",
            "has space",
            ".hidden",
            "",
        ] {
            assert!(!is_repo_id(path), "{path}");
        }
    }

    #[test]
    fn the_environment_sets_endpoint_cache_token_and_offline_mode() {
        let folder = tempfile::tempdir().unwrap();
        let home = folder.path().join("hf");
        fs::create_dir_all(&home).unwrap();
        fs::write(home.join("token"), "from-file\n").unwrap();
        let vars = |pairs: &[(&str, &str)]| {
            let map: HashMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            HubConfig::from_vars(move |name| map.get(name).cloned())
        };
        let home_text = home.to_str().unwrap();
        let config = vars(&[
            ("HF_HOME", home_text),
            ("HF_ENDPOINT", "http://127.0.0.1:9/"),
        ]);
        assert_eq!(config.endpoint, "http://127.0.0.1:9");
        assert_eq!(config.cache, home.join("hub"));
        assert_eq!(config.token.as_deref(), Some("from-file"));
        assert!(!config.offline);
        let config = vars(&[
            ("HF_HOME", home_text),
            ("HF_HUB_CACHE", "/elsewhere"),
            ("HF_TOKEN", "from-env"),
            ("HF_HUB_OFFLINE", "1"),
        ]);
        assert_eq!(config.endpoint, "https://huggingface.co");
        assert_eq!(config.cache, PathBuf::from("/elsewhere"));
        assert_eq!(config.token.as_deref(), Some("from-env"));
        assert!(config.offline);
        let config = vars(&[("HOME", "/home/u"), ("HF_HUB_OFFLINE", "0")]);
        assert_eq!(
            config.cache,
            PathBuf::from("/home/u/.cache/huggingface/hub")
        );
        assert!(!config.offline && config.token.is_none());
    }
}
