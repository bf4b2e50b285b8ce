//! `quiver embed` end to end: the real binary, the real all-MiniLM-L6-v2 weights.

use std::path::{Path, PathBuf};
use std::process::Output;

mod common;

use common::{model_dir, quiver, quiver_with_env, temp_dir};

/// With no --quantize, `quiver embed` runs the default number format: the same vectors as
/// naming it, and f32 ones only where the default is f32.
#[test]
fn the_default_format_is_the_machines() {
    let model = model_dir();
    let model = model.to_str().unwrap();
    let text = "def add(a, b): return a + b\n";
    let run = |extra: &[&str]| {
        let mut args = vec!["embed", "--model", model];
        args.extend_from_slice(extra);
        let output = quiver(&args, text);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    };
    let default = run(&[]);
    let named = quiver_embed::Quantization::for_this_machine().name();
    assert_eq!(default, run(&["--quantize", named]));
    let f32 = run(&["--quantize", "f32"]);
    assert_eq!(default == f32, named == "none");
}

#[test]
fn embeds_lines_to_jsonl_in_order() {
    let model = model_dir();
    let output = quiver(
        &[
            "embed",
            "--model",
            model.to_str().unwrap(),
            "--dimensions",
            "64",
        ],
        "def add(a, b): return a + b\nhow do I add two numbers\n\n",
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for (index, line) in lines.iter().enumerate() {
        assert_eq!(line["index"], index);
        let vector: Vec<f32> = serde_json::from_value(line["embedding"].clone()).unwrap();
        assert_eq!(vector.len(), 64);
        let norm: f32 = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
    }
}

#[test]
fn writes_npy_from_a_jsonl_file() {
    let model = model_dir();
    let dir = temp_dir("npy");
    let input = dir.join("texts.jsonl");
    std::fs::write(
        &input,
        "{\"text\": \"fn main() {}\"}\n{\"text\": \"hello\", \"id\": 7}\n",
    )
    .unwrap();
    let out = dir.join("vectors.npy");
    let output = quiver(
        &[
            "embed",
            input.to_str().unwrap(),
            "--model",
            model.to_str().unwrap(),
            "--format",
            "npy",
            "--output",
            out.to_str().unwrap(),
        ],
        "",
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let bytes = std::fs::read(&out).unwrap();
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = String::from_utf8_lossy(&bytes[10..10 + header_len]);
    assert!(header.contains("(2, 384)"), "{header}");
    assert_eq!(bytes.len() - 10 - header_len, 2 * 384 * 4);
}

fn assert_fails_naming(output: &Output, needle: &str) {
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
}

#[test]
fn empty_input_is_a_clear_error() {
    let model = model_dir();
    let output = quiver(&["embed", "--model", model.to_str().unwrap()], "");
    assert_fails_naming(&output, "no input texts in standard input");
}

/// This build has no CUDA backend (CI builds the binary without the feature): `--device cuda`
/// is refused naming the device, never run on the CPU instead; `auto` runs on the CPU, with
/// the CPU's vectors.
#[test]
fn devices_this_build_lacks_are_refused_and_auto_keeps_to_the_cpu() {
    let model = model_dir();
    let model = model.to_str().unwrap();
    // From a file: a refused run may end before it would read standard input.
    let dir = temp_dir("embed-devices");
    let input = dir.join("texts.txt");
    std::fs::write(&input, "def add(a, b): return a + b\n").unwrap();
    let input = input.to_str().unwrap();
    let run = |device: &str| quiver(&["embed", input, "--model", model, "--device", device], "");
    assert_fails_naming(
        &run("cuda:1"),
        "device `cuda:1` is not available in this build",
    );
    assert_fails_naming(&run("cuda:0,cuda:1"), "cuda:0,cuda:1");
    assert_fails_naming(&run("tpu"), "tpu");
    let on_cpu = run("cpu");
    let auto = run("auto");
    assert!(
        auto.status.success(),
        "{}",
        String::from_utf8_lossy(&auto.stderr)
    );
    assert_eq!(auto.stdout, on_cpu.stdout);
}

/// A copy of the model folder with one file replaced (or removed).
fn model_with(name: &str, file: &str, body: Option<&str>) -> PathBuf {
    quiver_embed::testing::model_variant("all-MiniLM-L6-v2", name, file, body)
}

fn embed_with(model: &Path) -> Output {
    quiver(&["embed", "--model", model.to_str().unwrap()], "hello\n")
}

#[test]
fn broken_model_folders_name_the_file() {
    let missing_weights = model_with("no-weights", "model.safetensors", None);
    assert_fails_naming(&embed_with(&missing_weights), "model.safetensors");
    let bad_config = model_with(
        "bad-config",
        "config.json",
        Some("{\"model_type\": \"bert\", \"hidden_size\": \"big\"}"),
    );
    assert_fails_naming(&embed_with(&bad_config), "config.json");
    let unknown = model_with(
        "unknown-arch",
        "config.json",
        Some("{\"model_type\": \"mamba\"}"),
    );
    assert_fails_naming(&embed_with(&unknown), "supported: bert");
    let bad_modules = model_with("bad-modules", "modules.json", Some("not json"));
    assert_fails_naming(&embed_with(&bad_modules), "modules.json");
    let bad_tokenizer = model_with("bad-tokenizer", "tokenizer.json", Some("{}"));
    assert_fails_naming(&embed_with(&bad_tokenizer), "tokenizer.json");
}

#[test]
fn default_model_id_fails_offline_with_instructions_when_not_cached() {
    let empty_cache = temp_dir("empty-hf-home");
    let output = quiver_with_env(
        &["embed", "--model", "sentence-transformers/all-MiniLM-L6-v2"],
        "hello\n",
        &[("HF_HOME", &empty_cache), ("HF_HUB_CACHE", Path::new(""))],
    );
    assert_fails_naming(&output, "HF_HUB_OFFLINE");
    assert_fails_naming(&output, "--model");
}
