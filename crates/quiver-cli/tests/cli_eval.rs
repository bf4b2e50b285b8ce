//! `quiver eval` end to end on a tiny dataset: the real index and search path, real weights.

mod common;

use common::{json_of, model_dir, postgres_url, qdrant_url, quiver, temp_dir};
use serde_json::Value;

fn tiny_dataset(name: &str) -> common::TempDir {
    let dir = temp_dir(name);
    let corpus = dir.join("corpus/python/pkg");
    std::fs::create_dir_all(&corpus).expect("mkdir");
    // Docstrings blanked, as the builder leaves them: line numbers unchanged.
    let source = "import math\n\n\ndef circle_area(radius):\n\n    return math.pi * radius ** 2\n\n\ndef send_email(address, body):\n\n    import smtplib\n    smtplib.SMTP('localhost').sendmail('me', [address], body)\n";
    std::fs::write(corpus.join("shapes.py"), source).expect("write");
    let queries = [
        (
            "Compute the area of a circle from its radius.",
            4,
            "circle_area",
        ),
        ("Send an email message to an address.", 9, "send_email"),
    ];
    let lines: Vec<String> = queries
        .iter()
        .map(|(query, line, symbol)| {
            serde_json::json!({
                "id": format!("python/pkg/shapes.py:{line}"),
                "query": query,
                "language": "python",
                "path": "python/pkg/shapes.py",
                "line": line,
                "symbol": symbol,
            })
            .to_string()
        })
        .collect();
    std::fs::write(dir.join("queries.jsonl"), lines.join("\n")).expect("write");
    dir
}

#[test]
fn scores_quiver_and_the_baseline() {
    let dir = tiny_dataset("eval-dataset-1");
    let model = model_dir();
    let args = [
        "eval",
        dir.to_str().expect("utf-8"),
        "--model",
        model.to_str().expect("utf-8"),
        "--chunk-tokens",
        "64",
        "--baseline-lines",
        "5",
        "--json",
    ];
    let output = quiver(&args, "");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reports: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let reports = reports.as_array().expect("one report per system");
    assert_eq!(reports.len(), 2);
    let quiver_modes = reports[0]["modes"].as_array().expect("modes");
    assert_eq!(quiver_modes.len(), 3);
    for mode in quiver_modes {
        let overall = &mode["overall"];
        assert_eq!(overall["queries"], 2);
        // Two small chunks per system: every target is within the top 10.
        assert_eq!(overall["recall_at_10"], 1.0, "{mode}");
        let ndcg = overall["ndcg_at_10"].as_f64().expect("number");
        assert!(ndcg > 0.0 && ndcg <= 1.0);
        assert_eq!(mode["by_language"]["python"]["queries"], 2);
    }
    // The vector mode finds each function first: the queries are unambiguous.
    assert_eq!(quiver_modes[0]["mode"], "vector");
    assert_eq!(
        quiver_modes[0]["overall"]["recall_at_1"], 1.0,
        "{}",
        quiver_modes[0]
    );
    assert_eq!(reports[1]["modes"][0]["mode"], "vector");
    assert!(reports[0]["indexing"]["chunks"].as_u64().expect("count") >= 2);

    // A second run reuses the indexes and keeps the figures of the run that built them.
    let again: Value = serde_json::from_slice(&quiver(&args, "").stdout).expect("JSON");
    assert_eq!(
        again[0]["indexing"]["chunks"],
        reports[0]["indexing"]["chunks"]
    );
    assert_eq!(again[0]["modes"], reports[0]["modes"]);
}

/// `quiver eval DIR --no-baseline --mode vector --scope SCOPE EXTRA... --json`, its report.
fn vector_eval(dir: &std::path::Path, scope: &str, extra: &[&str]) -> Value {
    let model = model_dir();
    let mut args = vec![
        "eval",
        dir.to_str().expect("utf-8"),
        "--model",
        model.to_str().expect("utf-8"),
        "--no-baseline",
        "--mode",
        "vector",
        "--scope",
        scope,
        "--json",
    ];
    args.extend_from_slice(extra);
    json_of(&args)
}

#[test]
fn scope_package_keeps_other_packages_out_of_a_querys_results() {
    let dir = tiny_dataset("eval-dataset-scope");
    // Another package holds the same function with its docstring kept: searched among the
    // whole corpus it outranks the query's own, whose docstring the dataset blanked.
    let other = dir.join("corpus/python/other");
    std::fs::create_dir_all(&other).expect("mkdir");
    std::fs::write(
        other.join("geometry.py"),
        "import math\n\n\ndef circle_area(radius):\n    \"\"\"Compute the area of a circle from its radius.\"\"\"\n    return math.pi * radius ** 2\n",
    )
    .expect("write");
    let recall_at_1 = |scope: &str| -> f64 {
        let reports = vector_eval(&dir, scope, &["--no-adapt"]);
        reports[0]["modes"][0]["overall"]["recall_at_1"]
            .as_f64()
            .expect("a number")
    };
    assert!(
        recall_at_1("corpus") < 1.0,
        "the documented copy comes first"
    );
    assert_eq!(recall_at_1("package"), 1.0);
}

#[test]
fn scope_package_fits_each_package_its_own_adapter() {
    let dir = tiny_dataset("eval-dataset-package-adapter");
    // A package documented enough to fit an adapter on (96 pairs), beside `pkg` (none).
    let records = dir.join("corpus/python/records");
    std::fs::create_dir_all(&records).expect("mkdir");
    let module =
        common::documented_module(|verb, noun| common::record_sentence(verb, noun, "stored"));
    std::fs::write(records.join("records.py"), module).expect("write");
    let reports = vector_eval(&dir, "package", &[]);
    // Kept for `records`; `pkg` has no pairs at all.
    assert_eq!(
        reports[0]["package_adapters"],
        serde_json::json!({"kept": 1, "enough_pairs": 1, "with_pairs": 1})
    );
    let modes: Vec<&str> = reports[0]["modes"]
        .as_array()
        .expect("modes")
        .iter()
        .filter_map(|m| m["mode"].as_str())
        .collect();
    assert_eq!(modes, ["vector", "vector, no adapter"]);
}

#[test]
fn queries_can_take_another_of_the_models_prompts() {
    let dir = tiny_dataset("eval-dataset-2");
    let model = common::tiny_model("jina-v3");
    let run = |prompt: &str| {
        quiver(
            &[
                "eval",
                dir.to_str().expect("utf-8"),
                "--model",
                model.to_str().expect("utf-8"),
                "--no-baseline",
                "--mode",
                "vector",
                "--query-prompt-name",
                prompt,
            ],
            "",
        )
    };
    let scored = run("text-matching");
    assert!(
        scored.status.success(),
        "{}",
        String::from_utf8_lossy(&scored.stderr)
    );
    assert!(
        String::from_utf8_lossy(&scored.stdout).contains("queries with its text-matching prompt")
    );
    let refused = run("InstructionRetrieval");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("InstructionRetrieval") && stderr.contains("retrieval.query"),
        "{stderr}"
    );
}

#[test]
fn a_folder_without_a_corpus_is_a_clear_error() {
    let dir = temp_dir("eval-not-a-dataset");
    let output = quiver(
        &[
            "eval",
            dir.to_str().expect("utf-8"),
            "--model",
            model_dir().to_str().expect("utf-8"),
        ],
        "",
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("is not a dataset") && stderr.contains("build_dataset.py"),
        "{stderr}"
    );
}

#[test]
fn scores_the_search_of_an_exported_store() {
    let dir = tiny_dataset("eval-dataset-3");
    let model = model_dir();
    let postgres = postgres_url();
    let table = format!("eval_{}", std::process::id());
    let collection = format!("quiver_eval_{}", std::process::id());
    let ranks = dir.join("ranks.jsonl");
    let mut args = vec![
        "eval",
        dir.to_str().expect("utf-8"),
        "--model",
        model.to_str().expect("utf-8"),
        "--no-baseline",
        "--json",
        "--ranks",
        ranks.to_str().expect("utf-8"),
        "--store",
        "postgres",
        &postgres,
        "--table",
        &table,
        "--collection",
        &collection,
    ];
    let qdrant = qdrant_url();
    if let Some(url) = &qdrant {
        args.extend(["--store", "qdrant", url.as_str()]);
    }
    let output = quiver(&args, "");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reports: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let reports = reports.as_array().expect("one report per system");
    let mut names = vec![format!("postgres:{table} <- ")];
    if qdrant.is_some() {
        names.push(format!("qdrant:{collection} <- "));
    }
    assert_eq!(reports.len(), 1 + names.len(), "{reports:?}");
    let ours = &reports[0]["modes"];
    let tops = |system: &str, mode: &str| -> Vec<String> {
        std::fs::read_to_string(&ranks)
            .expect("ranks")
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).expect("JSON"))
            .filter(|line| line["system"] == system && line["mode"] == mode)
            .map(|line| line["top"].to_string())
            .collect()
    };
    let our_name = reports[0]["name"].as_str().expect("name");
    for (report, prefix) in reports[1..].iter().zip(&names) {
        let name = report["name"].as_str().expect("name");
        assert!(name.starts_with(prefix.as_str()), "{name}");
        let theirs = report["modes"].as_array().expect("modes");
        assert_eq!(theirs.len(), 3);
        // The store's vector search is Quiver's: the same scores, the same top chunk per query.
        assert_eq!(theirs[0]["mode"], "vector");
        assert_eq!(theirs[0]["overall"], ours[0]["overall"], "{name}");
        assert_eq!(tops(name, "vector"), tops(our_name, "vector"));
        for mode in theirs {
            assert_eq!(mode["overall"]["queries"], 2, "{name}: {mode}");
        }
    }
    let mut client = postgres::Client::connect(&postgres, postgres::NoTls).expect("connect");
    client
        .batch_execute(&format!("DROP TABLE {table}"))
        .expect("the export made the table");
    if let Some(url) = qdrant {
        ureq::delete(&format!("{url}/collections/{collection}"))
            .call()
            .expect("the export made the collection");
    }
}

/// The indexes an evaluation builds are kept apart by number format, but record the model
/// alone: `quiver search` opens one of an int8 run with the model it names.
#[test]
fn an_index_of_a_quantized_evaluation_opens_in_quiver_search() {
    let dir = tiny_dataset("eval-dataset-int8");
    let model = model_dir();
    let dataset = dir.to_str().expect("utf-8");
    let model = model.to_str().expect("utf-8");
    json_of(&[
        "eval",
        dataset,
        "--model",
        model,
        "--quantize",
        "int8",
        "--no-baseline",
        "--json",
    ]);
    let folders = |dir: &std::path::Path| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(dir)
            .expect("a folder")
            .map(|entry| entry.expect("entry").path())
            .collect()
    };
    let models = folders(&dir.join("indexes"));
    assert_eq!(models.len(), 1, "{models:?}");
    assert!(models[0].to_string_lossy().contains("int8"), "{models:?}");
    let index = folders(&models[0]).remove(0);
    let query = "the area of a circle";
    let index = index.to_str().expect("utf-8");
    let hits = json_of(&["search", query, "--index", index, "--json"]);
    assert_eq!(hits[0]["chunk"]["symbol"], "circle_area", "{hits}");
}
