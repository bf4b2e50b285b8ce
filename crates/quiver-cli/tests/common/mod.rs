//! Helpers shared by the CLI tests: the test model, the binary run offline, scratch folders,
//! indexing and searching a tree.
#![allow(dead_code)] // each test file uses its own subset

use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub fn model_dir() -> PathBuf {
    quiver_embed::testing::fetched_model_dir("all-MiniLM-L6-v2")
}

/// A tiny random-weight model (`quiver-embed`'s fixtures): fast where only the pipeline
/// matters, not the vectors' quality.
pub fn tiny_model(architecture: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../quiver-embed/tests/fixtures/tiny")
        .join(architecture)
}

pub fn quiver(args: &[&str], stdin: &str) -> Output {
    quiver_with_env(args, stdin, &[])
}

/// Runs the binary offline, with `env` added (an empty value removes that variable).
pub fn quiver_with_env(args: &[&str], stdin: &str, env: &[(&str, &Path)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_quiver"));
    command.args(args).env("HF_HUB_OFFLINE", "1");
    for (key, value) in env {
        if value.as_os_str().is_empty() {
            command.env_remove(key);
        } else {
            command.env(key, value);
        }
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// A real copy of a folder and everything in it (a model to alter, or to give another owner).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A test's scratch folder, removed with everything in it when the value is dropped (a failed
/// test's too: it drops while unwinding). Before, the folders stayed, and each run of the
/// tests left about 500 MB in the temp folder.
pub struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn temp_dir(name: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!("quiver-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}
pub mod server;

pub fn write(root: &Path, relative: &str, contents: impl AsRef<[u8]>) {
    let path = root.join(relative);
    std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
    std::fs::write(path, contents).expect("write");
}

/// Runs quiver, asserts success, parses standard output as JSON.
pub fn json_of(args: &[&str]) -> Value {
    let output = quiver(args, "");
    assert!(
        output.status.success(),
        "quiver {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON on stdout")
}

pub fn index(root: &Path, extra: &[&str]) -> Value {
    index_with(&model_dir(), root, extra)
}

/// `quiver index ROOT --model MODEL --json EXTRA...`, its report.
pub fn index_with(model: &Path, root: &Path, extra: &[&str]) -> Value {
    let mut args = vec![
        "index",
        root.to_str().expect("utf-8"),
        "--model",
        model.to_str().expect("utf-8"),
        "--json",
    ];
    args.extend_from_slice(extra);
    json_of(&args)
}

pub fn search(root: &Path, query: &str, extra: &[&str]) -> Vec<Value> {
    let index_dir = root.join(".quiver");
    let mut args = vec![
        "search",
        query,
        "--index",
        index_dir.to_str().expect("utf-8"),
        "--json",
    ];
    args.extend_from_slice(extra);
    json_of(&args).as_array().expect("an array of hits").clone()
}
pub mod fake_qdrant;

/// The PostgreSQL with pgvector `scripts/test-postgres` starts, or the one
/// QUIVER_TEST_POSTGRES_URL names.
pub fn postgres_url() -> String {
    if let Ok(url) = std::env::var("QUIVER_TEST_POSTGRES_URL") {
        return url;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/test-postgres");
    let output = std::process::Command::new(script)
        .arg("start")
        .output()
        .expect("run scripts/test-postgres");
    assert!(
        output.status.success(),
        "scripts/test-postgres start: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

/// The Qdrant server `scripts/test-qdrant` starts (from ../shared/qdrant/ or
/// QUIVER_QDRANT_BIN), or the one QDRANT_URL names; `None` when there is neither.
pub fn qdrant_url() -> Option<String> {
    if let Ok(url) = std::env::var("QDRANT_URL") {
        return Some(url);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/test-qdrant");
    let output = std::process::Command::new(script)
        .arg("start")
        .output()
        .expect("run scripts/test-qdrant");
    if output.status.code() == Some(3) {
        eprintln!(
            "no Qdrant server (QDRANT_URL unset, no binary): {}",
            String::from_utf8_lossy(&output.stderr)
        );
        return None;
    }
    assert!(
        output.status.success(),
        "scripts/test-qdrant start: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(
        String::from_utf8(output.stdout)
            .expect("utf-8")
            .trim()
            .to_string(),
    )
}

const VERBS: [&str; 6] = ["parse", "render", "compress", "validate", "sort", "merge"];
pub const NOUNS: [&str; 16] = [
    "invoice", "shipment", "customer", "ledger", "token", "sensor", "route", "schedule", "ticket",
    "profile", "payment", "cache", "report", "session", "image", "config",
];

/// `{Said} the given {noun} record before it is {done}.`, where the verb is said in other
/// words (`parse` as "Read"): a model alone matches the pairs less well than a map learnt
/// from them, so a fitted adapter has something to add.
pub fn record_sentence(verb: &str, noun: &str, done: &str) -> String {
    let said = match verb {
        "parse" => "Read",
        "render" => "Draw",
        "compress" => "Shrink",
        "validate" => "Check",
        "sort" => "Order",
        _ => "Combine",
    };
    format!("{said} the given {noun} record before it is {done}.")
}

/// A Python module of 96 functions `{verb}_{noun}`, each with a body that says what it does
/// and the docstring `describe(verb, noun)`: enough pairs to fit a query adapter on.
pub fn documented_module(mut describe: impl FnMut(&'static str, &'static str) -> String) -> String {
    let mut module = String::new();
    for verb in VERBS {
        for noun in NOUNS {
            module.push_str(&format!(
                "def {verb}_{noun}(value):\n    \"\"\"{}\"\"\"\n    return {verb}_step(value, kind=\"{noun}\")\n\n\n",
                describe(verb, noun)
            ));
        }
    }
    module
}
