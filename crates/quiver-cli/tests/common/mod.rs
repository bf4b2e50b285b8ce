//! Helpers shared by the CLI tests: the test model, the binary run offline, scratch folders.
#![allow(dead_code)] // each test file uses its own subset

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub fn model_dir() -> PathBuf {
    quiver_embed::testing::fetched_model_dir("all-MiniLM-L6-v2")
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

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("quiver-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
pub mod server;
