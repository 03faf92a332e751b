//! `--model-dir` with a Hugging Face Hub id, against a local HTTP server (std::net, in this test)
//! that serves the fixture models of gems-models in the Hub's URL layout, pointed to by
//! `HF_ENDPOINT`: download into the cache, cache hits with the server stopped, `HF_HUB_OFFLINE`
//! with and without a cached copy, a missing repository, sharded weights and the token.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../gems-models/tests/fixtures")
        .join(name)
}

/// A Hub stand-in serving `repos` (id → fixture directory) until dropped.
struct Hub {
    endpoint: String,
    /// Every request: "METHOD PATH | authorization header".
    requests: Arc<Mutex<Vec<String>>>,
    stop: Option<(TcpListener, JoinHandle<()>)>,
}

impl Hub {
    fn start(repos: &[(&str, &str)]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let repos: HashMap<String, PathBuf> = repos
            .iter()
            .map(|(id, dir)| (id.to_string(), fixture(dir)))
            .collect();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        let accepting = listener.try_clone().unwrap();
        let handle = std::thread::spawn(move || {
            for stream in accepting.incoming() {
                let Ok(stream) = stream else { break };
                if serve(stream, &repos, &log).is_err() {
                    // The client went away; keep serving the others.
                }
                if log.lock().unwrap().last().is_some_and(|l| l == "STOP") {
                    break;
                }
            }
        });
        Hub {
            endpoint,
            requests,
            stop: Some((listener, handle)),
        }
    }

    /// Stops serving: later connections are refused.
    fn stop(&mut self) {
        if let Some((listener, handle)) = self.stop.take() {
            self.requests.lock().unwrap().push("STOP".into());
            // Wake the accept loop so that it sees the stop mark, then close the socket.
            let _ = TcpStream::connect(listener.local_addr().unwrap());
            handle.join().unwrap();
            drop(listener);
        }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(
    stream: TcpStream,
    repos: &HashMap<String, PathBuf>,
    log: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut authorization = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("authorization")
        {
            authorization = value.trim().to_string();
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    if request_line.trim().is_empty() {
        return Ok(());
    }
    log.lock()
        .unwrap()
        .push(format!("{} | {authorization}", request_line.trim()));
    let body = answer(&path, repos);
    let mut stream = stream;
    match body {
        Some(bytes) => {
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Repo-Commit: {COMMIT}\r\nConnection: close\r\n\r\n",
                bytes.len()
            )?;
            stream.write_all(&bytes)?;
        }
        None => {
            let message = b"{\"error\":\"Repository not found\"}";
            write!(
                stream,
                "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                message.len()
            )?;
            stream.write_all(message)?;
        }
    }
    stream.flush()
}

/// The Hub's layout: `/api/models/{repo}/revision/main` and `/{repo}/resolve/{commit}/{file}`.
fn answer(path: &str, repos: &HashMap<String, PathBuf>) -> Option<Vec<u8>> {
    if let Some(rest) = path.strip_prefix("/api/models/") {
        let repo = rest.strip_suffix("/revision/main")?;
        let directory = repos.get(repo)?;
        let mut names: Vec<String> = std::fs::read_dir(directory)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let siblings: Vec<serde_json::Value> = names
            .iter()
            .map(|n| serde_json::json!({ "rfilename": n }))
            .collect();
        return Some(
            serde_json::to_vec(&serde_json::json!({ "sha": COMMIT, "siblings": siblings }))
                .unwrap(),
        );
    }
    let (repo, file) = path[1..].split_once(&format!("/resolve/{COMMIT}/"))?;
    std::fs::read(repos.get(repo)?.join(file)).ok()
}

fn gems(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gems"));
    command.args(args).env("RUST_LOG", "warn");
    for name in [
        "HF_HOME",
        "HF_HUB_CACHE",
        "HF_ENDPOINT",
        "HF_TOKEN",
        "HF_TOKEN_PATH",
        "HF_HUB_OFFLINE",
    ] {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    command.output().expect("the gems binary runs")
}

fn stdout_of(output: Output) -> String {
    assert!(
        output.status.success(),
        "failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn error_of(output: Output) -> String {
    assert!(!output.status.success(), "should have failed");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr.lines().last().unwrap_or_default().to_string()
}

fn logits(model: &str, env: &[(&str, &str)]) -> Output {
    gems(
        &[
            "model",
            "logits",
            "--model-dir",
            model,
            "--input-ids",
            "1,2,3",
        ],
        env,
    )
}

#[test]
fn a_hub_id_downloads_once_then_resolves_from_the_cache() {
    let home = tempfile::tempdir().unwrap();
    let home_text = home.path().to_str().unwrap();
    let mut hub = Hub::start(&[("test-org/tiny-t5", "t5-v1_1")]);
    let endpoint = hub.endpoint.clone();
    let env = [
        ("HF_HOME", home_text),
        ("HF_ENDPOINT", endpoint.as_str()),
        ("HF_TOKEN", "secret-token"),
    ];
    let expected = stdout_of(logits(fixture("t5-v1_1").to_str().unwrap(), &[]));
    assert_eq!(stdout_of(logits("test-org/tiny-t5", &env)), expected);

    // The standard cache layout, with the commit in refs/main.
    let repo = home.path().join("hub/models--test-org--tiny-t5");
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).unwrap(),
        COMMIT
    );
    let snapshot = repo.join("snapshots").join(COMMIT);
    for file in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert_eq!(
            std::fs::read(snapshot.join(file)).unwrap(),
            std::fs::read(fixture("t5-v1_1").join(file)).unwrap(),
            "{file}"
        );
    }
    assert!(
        !snapshot.join("reference.json").exists(),
        "only model files are fetched"
    );
    let requests = hub.requests();
    assert!(
        requests
            .iter()
            .all(|r| r.ends_with("| Bearer secret-token")),
        "{requests:?}"
    );
    assert!(requests[0].starts_with("GET /api/models/test-org/tiny-t5/revision/main "));
    assert!(requests.iter().any(|r| r.starts_with(&format!(
        "GET /test-org/tiny-t5/resolve/{COMMIT}/model.safetensors "
    ))));

    // A second resolution online downloads nothing again.
    assert_eq!(stdout_of(logits("test-org/tiny-t5", &env)), expected);
    let again = hub.requests();
    assert_eq!(again.len(), requests.len() + 1, "{again:?}");
    assert!(again.last().unwrap().contains("/api/models/"));

    // With the server stopped, and offline, the cache answers.
    hub.stop();
    assert_eq!(stdout_of(logits("test-org/tiny-t5", &env)), expected);
    let mut offline = env.to_vec();
    offline.push(("HF_HUB_OFFLINE", "1"));
    assert_eq!(stdout_of(logits("test-org/tiny-t5", &offline)), expected);

    // Not cached: offline, and with the server gone.
    let error = error_of(logits("test-org/other", &offline));
    assert!(
        error.contains("test-org/other")
            && error.contains("HF_HUB_OFFLINE")
            && error.contains("not in the Hub cache"),
        "{error}"
    );
    let error = error_of(logits("test-org/other", &env));
    assert!(
        error.contains("test-org/other") && error.contains("cannot reach"),
        "{error}"
    );
}

#[test]
fn a_missing_repository_says_so_and_sharded_weights_download_whole() {
    let home = tempfile::tempdir().unwrap();
    let home_text = home.path().to_str().unwrap();
    let hub = Hub::start(&[("Qwen/tiny-untied", "qwen2-untied")]);
    let env = [
        ("HF_HOME", home_text),
        ("HF_ENDPOINT", hub.endpoint.as_str()),
    ];
    let error = error_of(logits("test-org/missing", &env));
    assert!(
        error.contains("test-org/missing") && error.contains("not found (HTTP 404)"),
        "{error}"
    );
    assert!(
        !home
            .path()
            .join("hub/models--test-org--missing/refs")
            .exists()
    );

    let expected = stdout_of(logits(fixture("qwen2-untied").to_str().unwrap(), &[]));
    assert_eq!(stdout_of(logits("Qwen/tiny-untied", &env)), expected);
    let snapshot = home
        .path()
        .join("hub/models--Qwen--tiny-untied/snapshots")
        .join(COMMIT);
    for shard in [
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ] {
        assert!(snapshot.join(shard).is_file(), "{shard}");
    }
    // No token: no authorization header.
    assert!(hub.requests().iter().all(|r| r.ends_with("| ")));
}
