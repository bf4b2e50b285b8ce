//! Faults and abuse, end to end: what a crash, a bad destination, a concurrent run, a huge
//! input, a read-only or corrupted index, non-finite numbers, a hostile HTTP client and a
//! closed pipe each lead to. Every test here failed on the code before these guarantees.

mod common;

use common::server::start;
use common::{copy_tree, index, model_dir, quiver, search, temp_dir, write};
use serde_json::Value;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MAIL_PY: &str = r#"import smtplib


def send_email(address, subject, body):
    """Send an email message to one address over SMTP."""
    server = smtplib.SMTP("localhost")
    server.sendmail("noreply@example.com", [address], subject + "\n\n" + body)
    server.quit()


def parse_config(path):
    """Read a JSON configuration file and return its settings as a dict."""
    import json
    with open(path) as handle:
        return json.load(handle)
"#;

fn tree(name: &str) -> common::TempDir {
    let root = temp_dir(name);
    write(&root, "mail.py", MAIL_PY);
    write(
        &root,
        "docs/guide.md",
        "# Guide\n\n## Installing\n\nDownload the release archive and unpack it into your path.\n",
    );
    root
}

/// `quiver index ROOT --model <the test model> EXTRA`, whatever its outcome.
fn index_run(root: &Path, extra: &[&str]) -> std::process::Output {
    let model = model_dir();
    let mut args = vec![
        "index",
        root.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    quiver(&args, "")
}

fn index_dir(root: &Path) -> String {
    root.join(".quiver").to_str().expect("utf-8").to_string()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn failed_with(output: &std::process::Output, needle: &str) {
    assert!(!output.status.success(), "expected a failure");
    let message = stderr(output);
    assert!(message.contains(needle), "{needle:?} not in: {message}");
    assert!(!message.contains("panicked"), "{message}");
}

// 1. Exports write into what they are given, never replace it.

#[test]
fn exports_stream_into_fifos_and_devices_and_keep_files_as_they_were() {
    let root = tree("export-dest");
    index(&root, &[]);
    let index = index_dir(&root);
    // A FIFO stays a FIFO, and its reader gets every line.
    let fifo = root.join("chunks.fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo")
        .success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read_to_string(fifo).expect("read fifo"))
    };
    let output = quiver(
        &["export", &index, "--to", "jsonl", fifo.to_str().unwrap()],
        "",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let streamed = reader.join().expect("reader");
    assert!(streamed.lines().count() >= 2, "{streamed}");
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
    // /dev/null is written to, not replaced (this runs as root in CI).
    let output = quiver(&["export", &index, "--to", "jsonl", "/dev/null"], "");
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(std::fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());
    // `-` is standard output.
    let output = quiver(&["export", &index, "--to", "jsonl", "-"], "");
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).lines().count(),
        streamed.lines().count()
    );
    // A private file stays private; a symlink stays a link to the file it names.
    let private = root.join("private.jsonl");
    std::fs::write(&private, "old").unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
    let link = root.join("link.jsonl");
    std::os::unix::fs::symlink(&private, &link).unwrap();
    let output = quiver(
        &["export", &index, "--to", "jsonl", link.to_str().unwrap()],
        "",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    let metadata = std::fs::metadata(&private).unwrap();
    assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::read_to_string(&private).unwrap(), streamed);
    // A symlink planted at the old temporary name is not followed.
    let victim = root.join("victim");
    std::fs::write(&victim, "precious").unwrap();
    let target = root.join("out.jsonl");
    std::os::unix::fs::symlink(&victim, root.join("out.jsonl.partial")).unwrap();
    let output = quiver(
        &["export", &index, "--to", "jsonl", target.to_str().unwrap()],
        "",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    // A failed export leaves no partial file behind.
    let missing_dir = root.join("no-such-dir").join("x.jsonl");
    let output = quiver(
        &[
            "export",
            &index,
            "--to",
            "jsonl",
            missing_dir.to_str().unwrap(),
        ],
        "",
    );
    failed_with(&output, "no-such-dir");
    let partials: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("quiver-partial"))
        .collect();
    assert!(partials.is_empty(), "{partials:?}");
}

#[test]
fn import_refuses_an_npy_export_whose_files_come_from_two_runs() {
    let first = tree("npy-mix-a");
    index(&first, &[]);
    let second = temp_dir("npy-mix-b");
    write(
        &second,
        "other.py",
        "def other():\n    \"\"\"Something else entirely.\"\"\"\n    return 1\n",
    );
    write(&second, "more.md", "# More\n\nText of another tree.\n");
    write(&second, "third.md", "# Third\n\nA third file.\n");
    index(&second, &[]);
    let (dir_a, dir_b) = (first.join("npy"), second.join("npy"));
    for (root, dir) in [(&first, &dir_a), (&second, &dir_b)] {
        let output = quiver(
            &[
                "export",
                &index_dir(root),
                "--to",
                "npy",
                dir.to_str().unwrap(),
            ],
            "",
        );
        assert!(output.status.success(), "{}", stderr(&output));
    }
    // What a run killed half-way through its renames would leave: new vectors, old metadata.
    std::fs::copy(dir_b.join("embeddings.npy"), dir_a.join("embeddings.npy")).unwrap();
    let target = temp_dir("npy-mix-import");
    let output = import_into(&dir_a, &target);
    failed_with(&output, "embeddings.npy");
    failed_with(&output, "does not match the digest");
    // Nothing was imported.
    let status = json_status(&target.join("idx"));
    assert_eq!(
        status["stats"]["chunks"].as_u64().unwrap_or(0),
        0,
        "{status}"
    );
}

/// `quiver import FROM --index TARGET/idx`.
fn import_into(from: &Path, target: &Path) -> std::process::Output {
    let index = target.join("idx");
    quiver(
        &[
            "import",
            from.to_str().unwrap(),
            "--index",
            index.to_str().unwrap(),
        ],
        "",
    )
}

fn json_status(index_dir: &Path) -> Value {
    let output = quiver(
        &["status", "--index", index_dir.to_str().unwrap(), "--json"],
        "",
    );
    serde_json::from_slice(&output.stdout).unwrap_or(Value::Null)
}

// 2. Settings are checked before anything is changed.

#[test]
fn a_width_the_model_cannot_give_leaves_the_index_as_it_was() {
    let root = tree("bad-width");
    index(&root, &[]);
    let output = index_run(&root, &["--reembed", "--dimensions", "1000"]);
    failed_with(&output, "1000");
    let status = json_status(&root.join(".quiver"));
    assert_eq!(status["dimension"], 384, "{status}");
    assert!(status["stats"]["chunks"].as_u64().unwrap() >= 2, "{status}");
    // A plain run still works, and search still finds things.
    let report = index(&root, &[]);
    assert_eq!(report["chunks_embedded"], 0, "{report}");
    let hits = search(&root, "send an email over SMTP", &["--mode", "vector"]);
    assert!(hits[0]["chunk"]["path"] == "mail.py", "{hits:?}");
}

// 3. One writer at a time.

#[test]
fn a_second_writer_is_refused_naming_the_first() {
    let root = tree("locked");
    index(&root, &[]);
    let held = quiver_index::Store::open_writer(&root.join(".quiver")).expect("lock");
    let output = index_run(&root, &["--reembed", "--dimensions", "256"]);
    failed_with(
        &output,
        &format!("another quiver index is running on {}", index_dir(&root)),
    );
    failed_with(&output, &format!("(pid {})", std::process::id()));
    // Readers are not held up.
    let hits = search(&root, "SMTP", &["--mode", "keyword"]);
    assert!(!hits.is_empty());
    drop(held);
    let status = json_status(&root.join(".quiver"));
    assert_eq!(status["dimension"], 384);
}

// 4. A huge text costs what the model reads of it, not its size.

#[test]
fn a_huge_line_is_embedded_within_a_small_memory_limit() {
    let dir = temp_dir("huge-line");
    let words = "parse the configuration file and return its settings ";
    let huge = words.repeat(40_000_000 / words.len());
    let prefix = &huge[..words.len() * 400];
    std::fs::write(dir.join("huge.txt"), format!("{huge}\n")).unwrap();
    std::fs::write(dir.join("prefix.txt"), format!("{prefix}\n")).unwrap();
    let model = model_dir();
    let embed = |file: &str| {
        // RLIMIT_DATA in KiB: 1.5 GiB, where tokenising 40 MB whole took over 4 GiB.
        let script = "ulimit -d 1500000; exec \"$0\" embed --model \"$1\" \"$2\"";
        Command::new("bash")
            .args(["-c", script, env!("CARGO_BIN_EXE_quiver")])
            .arg(&model)
            .arg(dir.join(file))
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .expect("run quiver embed")
    };
    let whole = embed("huge.txt");
    assert!(whole.status.success(), "{}", stderr(&whole));
    let start = embed("prefix.txt");
    assert!(start.status.success(), "{}", stderr(&start));
    let vector = |output: &std::process::Output| -> Vec<f32> {
        let line: Value = serde_json::from_slice(&output.stdout).expect("one JSON line");
        serde_json::from_value(line["embedding"].clone()).expect("vector")
    };
    // Both are cut to the same first 256 tokens.
    let (a, b) = (vector(&whole), vector(&start));
    let largest = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(largest < 1e-5, "vectors differ by {largest}");
}

// 5. A read-only index can be read.

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Runs quiver as a user who may read the index but not write it: `nobody` when this runs as
/// root (who may write anything), the same user after the index is made read-only otherwise.
fn quiver_read_only(index: &Path, args: &[&str]) -> std::process::Output {
    let mut command = if running_as_root() {
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_quiver"));
        command
    } else {
        for entry in std::fs::read_dir(index).unwrap() {
            let path = entry.unwrap().path();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
        }
        std::fs::set_permissions(index, std::fs::Permissions::from_mode(0o555)).unwrap();
        Command::new(env!("CARGO_BIN_EXE_quiver"))
    };
    command
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .env("HOME", "/tmp")
        .stdin(Stdio::null())
        .output()
        .expect("run quiver")
}

#[test]
fn a_read_only_index_can_be_searched_inspected_and_exported() {
    let root = tree("read-only");
    // A copy of the model that the other user can read wherever the test models are kept.
    let model = temp_dir("read-only-model");
    copy_tree(&model_dir(), &model);
    let output = quiver(
        &[
            "index",
            root.to_str().unwrap(),
            "--model",
            model.to_str().unwrap(),
        ],
        "",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let index = root.join(".quiver");
    let out = temp_dir("read-only-out");
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).unwrap();
    for dir in [&root, &index] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let dir = index.to_str().unwrap();
    let exported = out.join("chunks.jsonl");
    for args in [
        vec!["search", "send an email", "--index", dir, "--json"],
        vec![
            "search", "SMTP", "--index", dir, "--mode", "keyword", "--json",
        ],
        vec!["status", "--index", dir, "--json"],
        vec!["status", "--index", dir, "--verify"],
        vec!["export", dir, "--to", "jsonl", exported.to_str().unwrap()],
    ] {
        let output = quiver_read_only(&index, &args);
        assert!(output.status.success(), "{args:?}: {}", stderr(&output));
    }
    assert!(std::fs::read_to_string(&exported).unwrap().lines().count() >= 2);
    // Writing is refused with a message naming the index, not a panic.
    let output = quiver_read_only(
        &index,
        &[
            "index",
            root.to_str().unwrap(),
            "--model",
            model.to_str().unwrap(),
        ],
    );
    failed_with(&output, dir);
}

// 6. NaN and infinity are refused, naming where they are.

#[test]
fn a_model_with_a_nan_weight_is_refused_naming_file_and_tensor() {
    // A dense layer's weight (copied at load) and the word table (left in the mapped file).
    for (case, tensor_name) in [
        "attention.self.query.weight",
        "embeddings.word_embeddings.weight",
    ]
    .into_iter()
    .enumerate()
    {
        let model = temp_dir(&format!("nan-model-{case}"));
        copy_tree(&model_dir(), &model);
        let weights = model.join("model.safetensors");
        let mut bytes = std::fs::read(&weights).unwrap();
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
        let (name, tensor) = header
            .as_object()
            .unwrap()
            .iter()
            .find(|(name, t)| name.ends_with(tensor_name) && t["dtype"] == "F32")
            .expect("an f32 tensor");
        let start = 8 + header_len + tensor["data_offsets"][0].as_u64().unwrap() as usize;
        bytes[start + 40..start + 44].copy_from_slice(&f32::NAN.to_le_bytes());
        std::fs::write(&weights, bytes).unwrap();
        let output = quiver(
            &["embed", "--model", model.to_str().unwrap()],
            "some text\n",
        );
        failed_with(&output, "model.safetensors");
        failed_with(&output, name);
        assert!(output.stdout.is_empty());
    }
}

#[test]
fn an_export_with_a_nan_vector_is_refused_naming_file_and_row() {
    let root = tree("nan-import");
    index(&root, &[]);
    let npy = root.join("npy");
    let output = quiver(
        &[
            "export",
            &index_dir(&root),
            "--to",
            "npy",
            npy.to_str().unwrap(),
        ],
        "",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    // Row 1, value 3 becomes NaN; the digest is made to match, as a careless tool would.
    let path = npy.join("embeddings.npy");
    let mut bytes = std::fs::read(&path).unwrap();
    let data = bytes.len() - {
        let info: Value =
            serde_json::from_str(&std::fs::read_to_string(npy.join("model_info.json")).unwrap())
                .unwrap();
        info["chunks"].as_u64().unwrap() as usize * 384 * 4
    };
    let at = data + (384 + 3) * 4;
    bytes[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let info_path = npy.join("model_info.json");
    let mut info: Value =
        serde_json::from_str(&std::fs::read_to_string(&info_path).unwrap()).unwrap();
    info["files"]["embeddings.npy"] = quiver_export::files::file_digest(&bytes).into();
    std::fs::write(&info_path, info.to_string()).unwrap();
    let target = temp_dir("nan-import-target");
    let output = import_into(&npy, &target);
    failed_with(&output, "embeddings.npy");
    failed_with(&output, "row 1 holds a NaN");
}

// 7. Damage on disk is detected, named, and repaired.

/// Flips one bit in every occurrence of `needle` in `file` (free pages can hold stale copies
/// of a row beside the live one).
fn flip_bit_in(file: &Path, needle: &[u8]) {
    let mut bytes = std::fs::read(file).unwrap();
    let places: Vec<usize> = bytes
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(at, _)| at)
        .collect();
    assert!(!places.is_empty(), "the bytes are in the file");
    for at in places {
        bytes[at + needle.len() / 2] ^= 0x10;
    }
    std::fs::write(file, bytes).unwrap();
}

#[test]
fn flipped_bits_are_detected_named_and_repaired() {
    let root = tree("bit-flips");
    index(&root, &[]);
    let index = root.join(".quiver");
    let database = index.join("index.sqlite");
    let store = quiver_index::Store::open(&index).unwrap();
    let chunks = store.all_chunks().unwrap();
    let guide = chunks.iter().find(|c| c.path == "docs/guide.md").unwrap();
    let vector = store.vector_of(&guide.embed_hash).unwrap().unwrap();
    drop(store);
    let before = search(&root, "unpack the release archive", &["--mode", "vector"]);
    // One bit in a chunk's text, one in another chunk's vector.
    flip_bit_in(&database, b"noreply@example.com");
    let vector_bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
    flip_bit_in(&database, &vector_bytes[100..140]);

    let dir = index.to_str().unwrap();
    let output = quiver(&["status", "--index", dir, "--verify"], "");
    failed_with(&output, "damaged");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(report.contains("damaged chunk: default:"), "{report}");
    assert!(report.contains("mail.py"), "{report}");
    assert!(report.contains("damaged vector of text"), "{report}");
    for mode in ["vector", "keyword"] {
        let output = quiver(
            &["search", "email over SMTP", "--index", dir, "--mode", mode],
            "",
        );
        failed_with(&output, "fails its checksum");
        failed_with(&output, "--repair");
    }

    let output = index_run(&root, &["--repair", "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    // Only what was lost is embedded again.
    assert!(report["chunks_embedded"].as_u64().unwrap() <= 2, "{report}");
    let output = quiver(&["status", "--index", dir, "--verify"], "");
    assert!(output.status.success(), "{}", stderr(&output));
    let after = search(&root, "unpack the release archive", &["--mode", "vector"]);
    assert_eq!(
        before[0]["chunk"]["chunk_id"],
        after[0]["chunk"]["chunk_id"]
    );
    let score = |hits: &[Value]| hits[0]["score"].as_f64().unwrap();
    assert!((score(&before) - score(&after)).abs() < 1e-5);
}

#[test]
fn a_database_that_cannot_be_opened_is_set_aside_and_rebuilt() {
    let root = tree("structure");
    index(&root, &[]);
    let index = root.join(".quiver");
    let database = index.join("index.sqlite");
    let mut bytes = std::fs::read(&database).unwrap();
    bytes[..16].copy_from_slice(b"not a database!\0");
    std::fs::write(&database, bytes).unwrap();
    let dir = index.to_str().unwrap();
    let output = quiver(&["status", "--index", dir], "");
    failed_with(&output, "damaged");
    let output = index_run(&root, &["--repair"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("moved it to"),
        "{}",
        stderr(&output)
    );
    let set_aside = std::fs::read_dir(&index)
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().contains(".damaged-"));
    assert!(set_aside);
    let hits = search(&root, "send an email over SMTP", &["--mode", "vector"]);
    assert_eq!(hits[0]["chunk"]["path"], "mail.py");
}

// 8. The server: no silent open door, no held sockets, no rebinding, no paths.

fn model_arg() -> String {
    model_dir().to_str().unwrap().to_string()
}

#[test]
fn an_empty_api_key_is_an_error_not_an_open_server() {
    let model = model_arg();
    let started = Instant::now();
    let output = quiver(&["serve", "--model", &model, "--api-key", ""], "");
    failed_with(&output, "API key is empty");
    let mut command = Command::new(env!("CARGO_BIN_EXE_quiver"));
    let output = command
        .args(["serve", "--model", &model, "--port", "0"])
        .env("QUIVER_API_KEY", "")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    failed_with(&output, "API key is empty");
    // Refused before the model loads, let alone a port opens.
    assert!(started.elapsed() < Duration::from_secs(60));
}

/// Reads from `stream` until the server closes it; how long that took (None: still open
/// after `limit`).
fn closed_within(stream: &mut std::net::TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buffer = [0u8; 1024];
    while started.elapsed() < limit {
        match stream.read(&mut buffer) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => continue, // a 408 or similar before the close
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(started.elapsed()),
        }
    }
    None
}

#[test]
fn idle_and_slow_connections_are_closed_and_hosts_are_checked() {
    let model = model_arg();
    let server = start(
        &[
            "--model",
            &model,
            "--header-timeout",
            "1",
            "--body-timeout",
            "1",
        ],
        &[],
    );
    let address = server.base.trim_start_matches("http://").to_string();
    // A connection that sends nothing.
    let mut idle = std::net::TcpStream::connect(&address).unwrap();
    assert!(
        closed_within(&mut idle, Duration::from_secs(10)).is_some(),
        "an idle connection stayed open"
    );
    // Headers a byte at a time, slower than the timeout allows.
    let mut slow = std::net::TcpStream::connect(&address).unwrap();
    let started = Instant::now();
    let request = b"POST /embed HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    let mut closed = false;
    for byte in request.iter().cycle().take(200) {
        if slow.write_all(&[*byte]).is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        if started.elapsed() > Duration::from_secs(10) {
            break;
        }
    }
    assert!(
        closed || closed_within(&mut slow, Duration::from_secs(1)).is_some(),
        "a slow client kept its connection"
    );
    // A body that never completes gets a 408.
    let mut stalled = std::net::TcpStream::connect(&address).unwrap();
    stalled
        .write_all(
            b"POST /embed HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n\
              content-length: 100\r\n\r\n{\"inputs\":",
        )
        .unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reply = String::new();
    let _ = stalled.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");

    // DNS rebinding: a foreign Host is refused, the server's own names are not.
    let raw = |host: &str| -> String {
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        write!(
            stream,
            "GET /info HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap();
        reply
    };
    let refused = raw("attacker.example");
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    assert!(
        refused.contains("--allowed-host attacker.example"),
        "{refused}"
    );
    let port = address.rsplit(':').next().unwrap();
    for host in [format!("localhost:{port}"), address.clone(), "[::1]".into()] {
        let reply = raw(&host);
        assert!(reply.starts_with("HTTP/1.1 200"), "{host}: {reply}");
        // /info names no path of the server's.
        assert!(!reply.contains(&model), "{reply}");
        assert!(!reply.contains("model_dir"), "{reply}");
    }
}

#[test]
fn allowed_hosts_and_api_keys_open_the_host_check() {
    let model = model_arg();
    let named = start(
        &["--model", &model, "--allowed-host", "quiver.internal"],
        &[],
    );
    let address = named.base.trim_start_matches("http://").to_string();
    let status_for = |address: &str, host: &str, key: Option<&str>| -> String {
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
        write!(
            stream,
            "GET /info HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap();
        reply.lines().next().unwrap_or_default().to_string()
    };
    assert!(status_for(&address, "quiver.internal:8080", None).contains("200"));
    assert!(status_for(&address, "other.internal", None).contains("403"));
    let keyed = start(&["--model", &model, "--api-key", "s3cret"], &[]);
    let address = keyed.base.trim_start_matches("http://").to_string();
    assert!(status_for(&address, "any.example", Some("s3cret")).contains("200"));
}

#[test]
fn a_damaged_index_answers_500_without_naming_server_paths() {
    let root = tree("serve-damaged");
    index(&root, &[]);
    let index = root.join(".quiver");
    flip_bit_in(&index.join("index.sqlite"), b"noreply@example.com");
    let model = model_arg();
    let server = start(
        &["--model", &model, "--index", index.to_str().unwrap()],
        &[],
    );
    let reply = server.post(
        "/search",
        r#"{"query": "email over SMTP", "mode": "keyword", "k": 5}"#,
    );
    assert_eq!(reply.status, 500, "{}", reply.body);
    let text = reply.body.to_string();
    assert!(text.contains("damaged"), "{text}");
    assert!(!text.contains(index.to_str().unwrap()), "{text}");
    assert!(!text.contains("/tmp"), "{text}");
}

// 9. A closed pipe ends a command quietly.

#[test]
fn a_closed_pipe_ends_search_quietly() {
    let root = tree("pipe");
    index(&root, &[]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args([
            "search",
            "email",
            "--index",
            &index_dir(&root),
            "--mode",
            "keyword",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // `| head -0`: the reader is gone before anything is written.
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let message = stderr(&output);
    assert!(!message.contains("panicked"), "{message}");
    assert!(message.is_empty(), "{message}");
    assert!(output.status.success(), "{:?}", output.status);
}
