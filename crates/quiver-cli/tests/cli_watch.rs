//! `quiver watch`: the index follows edits, creations, deletions and renames; churn in ignored
//! directories runs nothing; a burst of writes is one run. And `quiver search --max-tokens`.

mod common;

use common::{index, index_with, json_of, quiver, search, temp_dir, tiny_model, write};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

/// A running `quiver watch`, with its stderr lines as they come.
struct Watching {
    child: Child,
    lines: Receiver<String>,
}

impl Watching {
    fn start(root: &Path) -> Watching {
        let mut child = Command::new(env!("CARGO_BIN_EXE_quiver"))
            .args(["watch", root.to_str().unwrap(), "--model"])
            // Keyword searches check what is indexed: a tiny model keeps 1,000 files quick.
            .arg(tiny_model("roberta"))
            .env("HF_HUB_OFFLINE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let watching = Watching { child, lines };
        watching.next_line_containing("watching", Duration::from_secs(120));
        watching
    }

    fn next_line_containing(&self, text: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => continue,
                Err(_) => panic!("no line with {text:?} within {within:?}"),
            }
        }
    }

    /// Run summaries printed within `wait`.
    fn runs_within(&self, wait: Duration) -> Vec<String> {
        let deadline = Instant::now() + wait;
        let mut runs = Vec::new();
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if line.contains(" changed, ") {
                runs.push(line);
            }
        }
        runs
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keyword_paths(root: &Path, query: &str) -> Vec<String> {
    search(root, query, &["--mode", "keyword"])
        .iter()
        .map(|hit| hit["chunk"]["path"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_index_follows_the_tree_and_a_burst_of_writes_is_one_run() {
    let root = temp_dir("watch");
    write(&root, ".gitignore", "generated/\n");
    write(
        &root,
        "src/billing.py",
        "def tally_receipts(rows):\n    return sum(rows)\n",
    );
    let watching = Watching::start(&root);

    // Churn where the walk never looks: build output, dependencies, ignored paths, .git.
    for i in 0..300 {
        write(&root, &format!("target/debug/obj{i}.o"), "x");
        write(&root, &format!("node_modules/pkg/m{i}.js"), "x");
        write(&root, &format!("generated/g{i}.py"), "def g(): pass\n");
        write(&root, &format!(".git/objects/o{i}"), "x");
    }
    let runs = watching.runs_within(Duration::from_secs(2));
    assert!(runs.is_empty(), "ignored churn ran the indexer: {runs:?}");

    // An edit, a new file, a deletion and a rename, each followed.
    write(
        &root,
        "src/billing.py",
        "def refund_invoice(lines):\n    return -sum(lines)\n",
    );
    watching.next_line_containing(" changed, ", Duration::from_secs(10));
    assert_eq!(keyword_paths(&root, "refund_invoice"), ["src/billing.py"]);
    assert!(keyword_paths(&root, "tally_receipts").is_empty());
    std::fs::rename(root.join("src/billing.py"), root.join("src/invoices.py")).unwrap();
    watching.next_line_containing(" changed, ", Duration::from_secs(10));
    assert_eq!(keyword_paths(&root, "refund_invoice"), ["src/invoices.py"]);
    std::fs::remove_file(root.join("src/invoices.py")).unwrap();
    watching.next_line_containing(" removed, ", Duration::from_secs(10));
    assert!(keyword_paths(&root, "refund_invoice").is_empty());
    let _ = watching.runs_within(Duration::from_secs(1));

    // A branch switch: 1,000 files written at once are one run.
    for i in 0..1000 {
        write(
            &root,
            &format!("src/gen/module_{i}.py"),
            format!("def generated_function_{i}():\n    return {i}\n"),
        );
    }
    let started = Instant::now();
    let run = watching.next_line_containing(" changed, ", Duration::from_secs(120));
    eprintln!(
        "the burst's run ended {:?} after the writes",
        started.elapsed()
    );
    assert!(run.starts_with("quiver: 1000 changed"), "{run}");
    let more = watching.runs_within(Duration::from_secs(2));
    assert!(more.is_empty(), "more runs after the burst's: {more:?}");
    assert_eq!(
        keyword_paths(&root, "generated_function_777")[0],
        "src/gen/module_777.py"
    );
}

#[test]
fn search_max_tokens_packs_whole_definitions_into_the_budget() {
    let root = temp_dir("pack");
    let long_body: String = (0..120)
        .map(|i| format!("    total_{i} = parse_ledger_entry(entries[{i}])\n"))
        .collect();
    write(
        &root,
        "ledger.py",
        format!(
            "def reconcile_ledger(entries):\n{long_body}    return entries\n\n\n\
             def ledger_summary(entries):\n    return len(entries)\n"
        ),
    );
    index(&root, &["--chunk-tokens", "256"]);
    let index = root.join(".quiver");
    let packed_search = |budget: &str| {
        json_of(&[
            "search",
            "reconcile ledger entries",
            "--index",
            index.to_str().unwrap(),
            "--max-tokens",
            budget,
            "--json",
        ])
    };
    let packed = packed_search("100000");
    let definitions = packed["definitions"].as_array().unwrap();
    // The long function was cut into pieces; the pack gives it whole, once.
    let reconcile: Vec<_> = definitions
        .iter()
        .filter(|d| d["symbol"] == "reconcile_ledger")
        .collect();
    assert_eq!(reconcile.len(), 1, "{packed:#}");
    assert!(reconcile[0]["chunk_ids"].as_array().unwrap().len() > 1);
    let text = reconcile[0]["text"].as_str().unwrap();
    assert!(text.starts_with("def reconcile_ledger(entries):"));
    assert!(text.contains("total_119 = parse_ledger_entry(entries[119])"));
    assert!(packed["tokens"].as_u64().unwrap() <= 100000);
    // A budget the long function does not fit leaves it out and keeps what fits.
    let small = packed_search("40");
    assert!(small["tokens"].as_u64().unwrap() <= 40);
    let symbols: Vec<&str> = small["definitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["symbol"].as_str())
        .collect();
    assert_eq!(symbols, ["ledger_summary"], "{small:#}");
    let zero = quiver(
        &[
            "search",
            "x",
            "--index",
            index.to_str().unwrap(),
            "--max-tokens",
            "0",
        ],
        "",
    );
    assert!(!zero.status.success());
    assert!(String::from_utf8_lossy(&zero.stderr).contains("--max-tokens"));
}

#[test]
fn serve_with_watch_answers_searches_with_code_written_after_it_started() {
    let root = temp_dir("serve-watch");
    write(&root, "net.py", "def open_socket(host):\n    return host\n");
    index_with(&tiny_model("roberta"), &root, &[]);
    let index = root.join(".quiver");
    let server = common::server::start(&["--index", index.to_str().unwrap(), "--watch"], &[]);
    let paths = |query: &str| {
        let reply = server.post(
            "/search",
            &serde_json::json!({"query": query, "mode": "keyword"}).to_string(),
        );
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.body["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|hit| hit["chunk"]["path"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(paths("open_socket"), ["net.py"]);
    write(
        &root,
        "sort.py",
        "def bubble_sort(items):\n    return sorted(items)\n",
    );
    let written = Instant::now();
    while paths("bubble_sort").is_empty() {
        assert!(
            written.elapsed() < Duration::from_secs(3),
            "the new file was not searchable within 3 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // (The tiny model's short budget cuts even this file in two chunks.)
    assert!(paths("bubble_sort").iter().all(|path| path == "sort.py"));
    // --watch needs an index to follow.
    let refused = quiver(&["serve", "--watch", "--port", "0"], "");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--index"));
}
