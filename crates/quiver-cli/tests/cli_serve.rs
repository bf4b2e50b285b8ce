//! `quiver serve` end to end: the real binary on a loopback port, a real HTTP client, the real
//! all-MiniLM-L6-v2 weights.

mod common;

use base64::Engine;
use common::server::{start, Reply, Served};
use common::{copy_tree, model_dir, quiver, temp_dir};
use serde_json::{json, Value};

fn model() -> String {
    model_dir().to_str().expect("utf-8").to_string()
}

fn serve(extra: &[&str]) -> Served {
    let model = model();
    let mut args = vec!["--model", model.as_str()];
    args.extend_from_slice(extra);
    start(&args, &[])
}

fn vectors(value: &Value) -> Vec<Vec<f32>> {
    serde_json::from_value(value.clone()).expect("array of vectors")
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

/// What `quiver embed` gives for the same texts, offline.
fn offline_vectors(texts: &[&str], extra: &[&str]) -> Vec<Vec<f32>> {
    offline_vectors_of(&model(), texts, extra)
}

fn offline_vectors_of(model: &str, texts: &[&str], extra: &[&str]) -> Vec<Vec<f32>> {
    let mut args = vec!["embed", "--model", model];
    args.extend_from_slice(extra);
    let jsonl: Vec<String> = texts
        .iter()
        .map(|t| json!({ "text": t }).to_string())
        .collect();
    let output = quiver(&args, &jsonl.join("\n"));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .lines()
        .map(|line| {
            let row: Value = serde_json::from_str(line).expect("JSONL");
            serde_json::from_value(row["embedding"].clone()).expect("vector")
        })
        .collect()
}

fn assert_error(reply: &Reply, status: u16, needle: &str) {
    assert_eq!(reply.status, status, "{}", reply.body);
    let message = reply.body["error"]["message"]
        .as_str()
        .or(reply.body["error"].as_str())
        .unwrap_or_else(|| panic!("no JSON error in {}", reply.body));
    assert!(message.contains(needle), "{message:?} lacks {needle:?}");
}

/// `/embed` of an input over all-MiniLM-L6-v2's 256 tokens: 413 as sent, 200 with `truncate`
/// (that reply is returned).
fn refused_unless_truncated(server: &Served, inputs: Value) -> Reply {
    assert_error(
        &server.post("/embed", &json!({ "inputs": inputs }).to_string()),
        413,
        "256 tokens",
    );
    let cut = server.post(
        "/embed",
        &json!({"inputs": inputs, "truncate": true}).to_string(),
    );
    assert_eq!(cut.status, 200, "{}", cut.body);
    cut
}

const TEXTS: [&str; 3] = [
    "def add(a, b):\n    return a + b",
    "fn main() { println!(\"hi\"); }",
    "How do I parse a config file?",
];

#[test]
fn embedding_routes_give_the_offline_vectors() {
    let server = serve(&[]);
    let offline = offline_vectors(&TEXTS, &[]);

    let openai = server.post(
        "/v1/embeddings",
        &json!({"input": TEXTS, "model": "x"}).to_string(),
    );
    assert_eq!(openai.status, 200, "{}", openai.body);
    assert_eq!(openai.body["object"], "list");
    // A local folder is named by its own name, not its path on the server.
    assert_eq!(openai.body["model"], "all-MiniLM-L6-v2");
    let data = openai.body["data"].as_array().expect("data");
    assert_eq!(data.len(), 3);
    for (i, item) in data.iter().enumerate() {
        assert_eq!(item["index"], i);
        let vector: Vec<f32> = serde_json::from_value(item["embedding"].clone()).unwrap();
        assert!(cosine(&vector, &offline[i]) > 0.99999, "text {i}");
    }
    let tokens = openai.body["usage"]["prompt_tokens"].as_u64().unwrap();
    let counted = server.post("/tokenize", &json!({"inputs": TEXTS}).to_string());
    let expected: usize = counted
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_array().unwrap().len())
        .sum();
    assert_eq!(tokens as usize, expected);

    let single = server.post(
        "/v1/embeddings",
        &json!({"input": TEXTS[1], "encoding_format": "base64"}).to_string(),
    );
    let encoded = single.body["data"][0]["embedding"]
        .as_str()
        .expect("base64 string");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    let decoded: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert!(cosine(&decoded, &offline[1]) > 0.99999);

    let tei = server.post("/embed", &json!({"inputs": TEXTS}).to_string());
    assert_eq!(tei.status, 200, "{}", tei.body);
    for (got, want) in vectors(&tei.body).iter().zip(&offline) {
        assert!(cosine(got, want) > 0.99999);
    }

    let short = offline_vectors(&TEXTS[..1], &["--dimensions", "64"]);
    let matryoshka = server.post(
        "/embed",
        &json!({"inputs": TEXTS[0], "dimensions": 64}).to_string(),
    );
    let got = &vectors(&matryoshka.body)[0];
    assert_eq!(got.len(), 64);
    assert!(cosine(got, &short[0]) > 0.99999);
    let openai_dims = server.post(
        "/v1/embeddings",
        &json!({"input": TEXTS[0], "dimensions": 64}).to_string(),
    );
    assert_eq!(
        openai_dims.body["data"][0]["embedding"]
            .as_array()
            .unwrap()
            .len(),
        64
    );

    let similarity = server.post(
        "/similarity",
        &json!({"inputs": {"source_sentence": TEXTS[0], "sentences": [TEXTS[0], TEXTS[2]]}})
            .to_string(),
    );
    let scores: Vec<f32> = serde_json::from_value(similarity.body.clone()).expect("scores");
    assert!((scores[0] - 1.0).abs() < 1e-4, "{scores:?}");
    assert!((scores[1] - cosine(&offline[0], &offline[2])).abs() < 1e-4);

    let none = server.post(
        "/similarity",
        &json!({"inputs": {"source_sentence": "a", "sentences": []}, "parameters": {"truncation_direction": "Left"}})
            .to_string(),
    );
    assert_eq!((none.status, none.body.clone()), (200, json!([])));
    let no_tokens = server.post("/tokenize", &json!({"inputs": []}).to_string());
    assert_eq!((no_tokens.status, no_tokens.body.clone()), (200, json!([])));
    // An empty text is embedded as sentence-transformers embeds it: its special tokens.
    let empty = server.post("/embed", &json!({"inputs": ""}).to_string());
    assert_eq!(empty.status, 200, "{}", empty.body);
    assert!(cosine(&vectors(&empty.body)[0], &offline_vectors(&[""], &[])[0]) > 0.99999);

    // TEI's compat route: a client posting to the server's own URL.
    let compat = server.post("/", &json!({"inputs": [TEXTS[2]]}).to_string());
    assert!(cosine(&vectors(&compat.body)[0], &offline[2]) > 0.99999);
    let compat_similarity = server.post(
        "/",
        &json!({"inputs": {"source_sentence": TEXTS[0], "sentences": [TEXTS[2]]}, "parameters": {}})
            .to_string(),
    );
    let compat_scores: Vec<f32> = serde_json::from_value(compat_similarity.body).expect("scores");
    assert!((compat_scores[0] - scores[1]).abs() < 1e-5);

    let info = server.get("/info");
    assert_eq!(info.body["dimensions"], 384);
    assert_eq!(info.body["max_input_length"], 256);
    // TEI's `Info` fields.
    assert_eq!(
        info.body["model_type"],
        json!({"embedding": {"pooling": "mean"}})
    );
    // The default number format, as TEI names dtypes.
    let dtype = match quiver_embed::Quantization::for_this_machine() {
        quiver_embed::Quantization::Bf16 => "bfloat16",
        _ => "float32",
    };
    assert_eq!(info.body["model_dtype"], dtype);
    assert!(info.body["tokenization_workers"].as_u64().unwrap() >= 1);
}

#[test]
fn token_ids_decode_and_token_states() {
    let server = serve(&[]);
    let text = TEXTS[2];
    let tokens = server.post("/tokenize", &json!({"inputs": text}).to_string());
    let ids: Vec<u64> = tokens.body[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_u64().unwrap())
        .collect();
    let by_text = vectors(
        &server
            .post("/embed", &json!({"inputs": text}).to_string())
            .body,
    );
    let by_ids = vectors(
        &server
            .post("/embed", &json!({"inputs": ids}).to_string())
            .body,
    );
    assert!(cosine(&by_text[0], &by_ids[0]) > 0.99999);
    let openai = server.post("/v1/embeddings", &json!({"input": [ids]}).to_string());
    let openai_vector: Vec<f32> =
        serde_json::from_value(openai.body["data"][0]["embedding"].clone()).unwrap();
    assert!(cosine(&openai_vector, &by_text[0]) > 0.99999);
    assert_eq!(
        openai.body["usage"]["prompt_tokens"].as_u64().unwrap() as usize,
        ids.len()
    );
    // Ids past the max length are cut like text, or refused without `truncate`.
    let long: Vec<u64> = std::iter::repeat_n(2023, 300).collect();
    refused_unless_truncated(&server, json!(long));

    let decoded = server.post(
        "/decode",
        &json!({"ids": [ids.clone(), ids.clone()], "skip_special_tokens": false}).to_string(),
    );
    let texts: Vec<String> = serde_json::from_value(decoded.body).unwrap();
    assert_eq!(texts.len(), 2);
    assert!(texts[0].starts_with("[CLS] how do i parse"), "{}", texts[0]);
    let plain = server.post("/decode", &json!({"ids": ids}).to_string());
    assert_eq!(plain.body, json!(["how do i parse a config file?"]));

    let states = server.post("/embed_all", &json!({"inputs": [text, "x"]}).to_string());
    let states: Vec<Vec<Vec<f32>>> = serde_json::from_value(states.body).unwrap();
    assert_eq!(states.len(), 2);
    assert_eq!(states[0].len(), ids.len());
    assert!(states[0].iter().all(|row| row.len() == 384));
    // Mean pooling of the token states is the embedding.
    let mut mean = vec![0.0f32; 384];
    for row in &states[0] {
        mean.iter_mut().zip(row).for_each(|(m, x)| *m += x);
    }
    assert!(cosine(&mean, &by_text[0]) > 0.99999);
}

#[test]
fn tokenize_reports_offsets_in_the_input() {
    let server = serve(&[]);
    let reply = server.post("/tokenize", &json!({"inputs": "hello world"}).to_string());
    let tokens = reply.body[0].as_array().expect("tokens");
    let texts: Vec<&str> = tokens.iter().map(|t| t["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["[CLS]", "hello", "world", "[SEP]"]);
    assert_eq!(tokens[2]["start"], 6);
    assert_eq!(tokens[2]["stop"], 11);
    assert_eq!(tokens[0]["special"], true);
    let bare = server.post(
        "/tokenize",
        &json!({"inputs": "hello world", "add_special_tokens": false}).to_string(),
    );
    assert_eq!(bare.body[0].as_array().unwrap().len(), 2);
}

/// A model that lowercases its input (sentence-transformers' `do_lower_case`) on text whose
/// lowercase form has another length: offsets still point into the input as sent.
#[test]
fn tokenize_offsets_survive_lowercasing_of_non_ascii_text() {
    let dir = temp_dir("lowercasing-model");
    copy_tree(&model_dir(), &dir);
    std::fs::write(
        dir.join("sentence_bert_config.json"),
        r#"{"max_seq_length": 256, "do_lower_case": true}"#,
    )
    .unwrap();
    let server = start(&["--model", dir.to_str().unwrap()], &[]);
    let input = "ẞẞẞ Hello Wörld 東京";
    let reply = server.post("/tokenize", &json!({"inputs": input}).to_string());
    let tokens = reply.body[0].as_array().expect("tokens");
    let span = |wanted: &str| {
        let token = tokens
            .iter()
            .find(|t| t["text"] == wanted)
            .unwrap_or_else(|| panic!("no token {wanted} in {tokens:?}"));
        let (start, stop) = (
            token["start"].as_u64().unwrap(),
            token["stop"].as_u64().unwrap(),
        );
        &input[start as usize..stop as usize]
    };
    assert_eq!(span("hello"), "Hello");
    assert_eq!(span("東"), "東");
    assert_eq!(span("京"), "京");
    assert_eq!(span("world"), "Wörld");
}

#[test]
fn bad_requests_get_a_json_error_naming_the_problem() {
    let server = serve(&["--max-client-batch-size", "4", "--payload-limit", "20000"]);
    // TEI's routes answer 422 for every refused request but an oversized one (TEI's
    // contract); /v1/embeddings answers OpenAI's 400 for a malformed one.
    let cases: &[(&str, &str, u16, &str)] = &[
        ("/embed", r#"{"inputs": "#, 422, "invalid JSON"),
        ("/embed", "", 422, "empty"),
        ("/embed", r#"{"inputs": ["a", 7]}"#, 422, "mixes token ids"),
        ("/embed", r#"{"input": "a"}"#, 422, "missing field `inputs`"),
        ("/embed", r#"{"inputs": []}"#, 422, "empty list"),
        ("/embed", r#"{"inputs": [[]]}"#, 422, "no tokens"),
        (
            "/embed",
            r#"{"inputs": "a", "normalize": null}"#,
            422,
            "normalize",
        ),
        (
            "/embed",
            r#"{"inputs": "a", "dimensions": 999}"#,
            422,
            "999",
        ),
        (
            "/embed",
            r#"{"inputs": "a", "prompt_name": "query"}"#,
            422,
            "query",
        ),
        (
            "/embed",
            r#"{"inputs": "a", "truncation_direction": "up"}"#,
            422,
            "truncation direction",
        ),
        ("/decode", r#"{"ids": [101, 40000]}"#, 422, "ids[0][1]"),
        ("/decode", r#"{"ids": ["a"]}"#, 422, "holds a string"),
        (
            "/similarity",
            r#"{"inputs": {"source_sentence": "a", "sentences": "b"}}"#,
            422,
            "inputs.sentences",
        ),
        ("/v1/embeddings", r#"{"input": "#, 400, "invalid JSON"),
        (
            "/v1/embeddings",
            r#"{"input": ["a", [1, 99999]]}"#,
            422,
            "99999",
        ),
        (
            "/v1/embeddings",
            r#"{"input": [[1, -2]]}"#,
            422,
            "input[0][1]",
        ),
        ("/v1/embeddings", r#"{"input": []}"#, 400, "empty list"),
    ];
    for (route, body, status, needle) in cases {
        assert_error(&server.post(route, body), *status, needle);
    }
    let five = json!({"input": ["a", "b", "c", "d", "e"]}).to_string();
    assert_error(&server.post("/v1/embeddings", &five), 413, "at most 4");
    let huge = json!({"inputs": "word ".repeat(5000)}).to_string();
    assert_error(&server.post("/embed", &huge), 413, "too large");
    assert_error(&server.get("/nowhere"), 404, "no route");
    assert_error(&server.get("/embed"), 405, "GET");
    assert_error(
        &server.post("/search", "{\"query\": \"x\"}"),
        404,
        "--index",
    );

    let long = "token ".repeat(400);
    let cut = refused_unless_truncated(&server, json!(long));
    let left = server.post(
        "/embed",
        &json!({"inputs": format!("{long} tail words differ"), "truncate": true, "truncation_direction": "Left"}).to_string(),
    );
    let right_cut = vectors(&cut.body);
    assert!(
        cosine(&vectors(&left.body)[0], &right_cut[0]) < 0.9999,
        "left truncation keeps the end"
    );

    // Still serving after all of that.
    assert_eq!(server.get("/health").status, 200);
    let metrics = server.get_text("/metrics");
    assert!(
        metrics.contains("quiver_requests_total{route=\"/embed\",status=\"413\"}"),
        "{metrics}"
    );
}

#[test]
fn api_key_guards_every_route_but_health() {
    let model = model();
    let server = start(&["--model", &model], &[("QUIVER_API_KEY", "s3cret")]);
    assert_eq!(server.get("/health").status, 200);
    let body = json!({"inputs": "a"}).to_string();
    assert_error(&server.post("/embed", &body), 401, "API key");
    assert_error(
        &server.post_with("/embed", &body, Some("wrong")),
        401,
        "API key",
    );
    assert_eq!(
        server.post_with("/embed", &body, Some("s3cret")).status,
        200
    );
    let openai = server.post("/v1/embeddings", &json!({"input": "a"}).to_string());
    assert_eq!(openai.body["error"]["type"], "authentication_error");
    assert_eq!(server.get("/info").status, 401);
}

#[test]
fn concurrent_requests_share_model_calls() {
    let server = serve(&["--max-wait-ms", "50"]);
    let clients = 12;
    std::thread::scope(|scope| {
        for i in 0..clients {
            let server = &server;
            scope.spawn(move || {
                let reply = server.post(
                    "/embed",
                    &json!({"inputs": format!("query number {i}")}).to_string(),
                );
                assert_eq!(reply.status, 200);
            });
        }
    });
    let metrics = server.get_text("/metrics");
    let calls = metric(&metrics, "quiver_batch_sequences_count");
    let texts = metric(&metrics, "quiver_batch_sequences_sum");
    // The warm-up runs outside the queue, so every counted text is a request's.
    assert_eq!(texts, clients as f64);
    assert!(
        calls < clients as f64,
        "{calls} model calls for {clients} requests: no merging"
    );
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(name)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("{name} missing from {text}"))
}

#[test]
fn a_full_queue_answers_429_and_shutdown_finishes_requests_in_flight() {
    let server = serve(&["--max-concurrent-requests", "1", "--auto-truncate", "true"]);
    // About 38,000 tokens: seconds of model time, so the requests below find it busy.
    let heavy: Vec<String> = (0..150)
        .map(|i| format!("{i} {}", "lorem ipsum dolor ".repeat(90)))
        .collect();
    let heavy_body = json!({"inputs": heavy}).to_string();
    std::thread::scope(|scope| {
        let busy = scope.spawn(|| server.post("/embed", &heavy_body));
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let queued = scope.spawn(|| {
            server.post(
                "/embed",
                &json!({"inputs": "waits in the queue"}).to_string(),
            )
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        let refused = server.post(
            "/embed",
            &json!({"inputs": "finds the queue full"}).to_string(),
        );
        assert_error(&refused, 429, "queue is full");
        assert_eq!(refused.retry_after.as_deref(), Some("1"));
        assert_eq!(queued.join().unwrap().status, 200);
        assert_eq!(busy.join().unwrap().status, 200);
    });
    let in_flight = std::thread::scope(|scope| {
        let request = scope.spawn(|| server.post("/embed", &heavy_body));
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let (status, log) = server.terminate();
        (request.join().unwrap(), status, log)
    });
    let (reply, status, log) = in_flight;
    assert_eq!(reply.status, 200, "the request in flight was finished");
    assert_eq!(vectors(&reply.body).len(), 150);
    assert!(status.success(), "{status:?}");
    assert!(log.iter().any(|l| l.contains("stopped")), "{log:?}");
}

#[test]
fn search_serves_an_index_and_sees_reindexing() {
    let root = temp_dir("serve-search");
    std::fs::write(
        root.join("geometry.py"),
        "def circle_area(radius):\n    return 3.14159 * radius * radius\n",
    )
    .unwrap();
    std::fs::write(
        root.join("net.py"),
        "def open_socket(host, port):\n    return connect(host, port)\n",
    )
    .unwrap();
    let model = model();
    let root_arg = root.to_str().unwrap();
    let indexed = quiver(&["index", root_arg, "--model", &model], "");
    assert!(
        indexed.status.success(),
        "{}",
        String::from_utf8_lossy(&indexed.stderr)
    );
    let index = root.join(".quiver");
    let index_arg = index.to_str().unwrap();
    // The model comes from the index.
    let server = start(&["--index", index_arg], &[]);
    let hits = server.post(
        "/search",
        &json!({"query": "area of a circle", "k": 1}).to_string(),
    );
    assert_eq!(hits.status, 200, "{}", hits.body);
    assert_eq!(hits.body["results"][0]["chunk"]["path"], "geometry.py");
    let keyword = server.post(
        "/search",
        &json!({"query": "open_socket", "mode": "keyword"}).to_string(),
    );
    assert_eq!(keyword.body["results"][0]["chunk"]["path"], "net.py");
    assert_error(
        &server.post(
            "/search",
            &json!({"query": "x", "languages": ["klingon"]}).to_string(),
        ),
        400,
        "klingon",
    );
    assert_error(
        &server.post(
            "/search",
            &json!({"query": "x", "mode": "psychic"}).to_string(),
        ),
        422,
        "psychic",
    );
    assert_error(
        &server.post(
            "/search",
            &json!({"query": "x", "keyword_weight": -1}).to_string(),
        ),
        400,
        "keyword_weight",
    );
    // Hybrid search weighs its keyword side by the index's weight unless the request says.
    let scored = |body: Value| {
        let hits = server.post("/search", &body.to_string());
        assert_eq!(hits.status, 200, "{}", hits.body);
        hits.body["results"][0]["score"].as_f64().expect("a score")
    };
    let recorded = scored(json!({"query": "open_socket"}));
    assert_eq!(
        recorded,
        scored(json!({"query": "open_socket", "keyword_weight": 0.75}))
    );
    assert!(recorded < scored(json!({"query": "open_socket", "keyword_weight": 1.5})));

    std::fs::write(
        root.join("sort.py"),
        "def bubble_sort(items):\n    return sorted(items)\n",
    )
    .unwrap();
    let again = quiver(&["index", root_arg, "--model", &model], "");
    assert!(again.status.success());
    let fresh = server.post(
        "/search",
        &json!({"query": "sort a list of items", "k": 1, "mode": "vector"}).to_string(),
    );
    assert_eq!(fresh.body["results"][0]["chunk"]["path"], "sort.py");
    let info = server.get("/info");
    assert_eq!(info.body["index"]["chunks"], 3);
}

#[test]
fn search_follows_an_index_re_embedded_at_another_width_under_it() {
    let root = temp_dir("serve-reembed");
    for (name, body) in [
        (
            "geometry.py",
            "def circle_area(radius):\n    return 3.14159 * radius * radius\n",
        ),
        (
            "net.py",
            "def open_socket(host, port):\n    return connect(host, port)\n",
        ),
        (
            "sort.py",
            "def bubble_sort(items):\n    return sorted(items)\n",
        ),
    ] {
        std::fs::write(root.join(name), body).unwrap();
    }
    let model = model();
    let root_arg = root.to_str().unwrap();
    let index_run = |extra: &[&str]| {
        let mut args = vec!["index", root_arg, "--model", &model];
        args.extend_from_slice(extra);
        let output = quiver(&args, "");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    index_run(&[]);
    let index = root.join(".quiver");
    let server = start(&["--index", index.to_str().unwrap()], &[]);
    let query = json!({"query": "area of a circle", "k": 1, "mode": "vector"}).to_string();
    assert_eq!(
        server.post("/search", &query).body["results"][0]["chunk"]["path"],
        "geometry.py"
    );
    // Searches keep coming, from several clients, while the index is re-embedded at 128.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let answers = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let mut statuses = Vec::new();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let reply = server.post("/search", &query);
                        statuses.push((reply.status, reply.body.to_string()));
                    }
                    statuses
                })
            })
            .collect();
        index_run(&["--reembed", "--dimensions", "128"]);
        std::thread::sleep(std::time::Duration::from_millis(300));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        clients
            .into_iter()
            .flat_map(|client| client.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert!(!answers.is_empty());
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
    }
    // Once the run is done, queries are embedded at the new width and find what they did.
    let after = server.post("/search", &query);
    assert_eq!(after.status, 200, "{}", after.body);
    assert_eq!(after.body["results"][0]["chunk"]["path"], "geometry.py");
    assert_eq!(server.get("/info").body["index"]["dimensions"], 128);
    // Another model cannot be followed: a clear 409, not an empty list.
    let other = temp_dir("serve-reembed-other-model");
    copy_tree(&model_dir(), &other);
    let output = quiver(
        &[
            "index",
            root_arg,
            "--model",
            other.to_str().unwrap(),
            "--reembed",
        ],
        "",
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_error(
        &server.post("/search", &query),
        409,
        "re-embedded with model",
    );
}

#[test]
fn settings_come_from_a_toml_file_below_flags_and_environment() {
    let dir = temp_dir("serve-config");
    let config = dir.join("quiver.toml");
    std::fs::write(
        &config,
        format!(
            "model = {:?}\nmax_client_batch_size = 2\nmax_batch_tokens = 999\n",
            model()
        ),
    )
    .unwrap();
    let config_arg = config.to_str().unwrap();
    let server = start(
        &["--config", config_arg],
        &[("QUIVER_MAX_BATCH_TOKENS", "777")],
    );
    let info = server.get("/info");
    assert_eq!(info.body["max_client_batch_size"], 2);
    assert_eq!(
        info.body["max_batch_tokens"], 777,
        "environment wins over the file"
    );
    drop(server);
    let flagged = start(
        &["--config", config_arg, "--max-client-batch-size", "3"],
        &[],
    );
    assert_eq!(
        flagged.get("/info").body["max_client_batch_size"],
        3,
        "a flag wins over the file"
    );
    drop(flagged);

    std::fs::write(&config, "max_batch_tokenz = 5\n").unwrap();
    let output = quiver(&["serve", "--config", config_arg], "");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("max_batch_tokenz") && stderr.contains("quiver.toml"),
        "{stderr}"
    );

    std::fs::write(&config, "device = \"tpu\"\n").unwrap();
    let output = quiver(&["serve", "--config", config_arg], "");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("device") && stderr.contains("tpu") && stderr.contains("quiver.toml"),
        "{stderr}"
    );
}

#[test]
fn a_request_picks_the_task_adapter_of_a_model_that_has_them() {
    // The tiny jina-embeddings-v3 fixture, whose prompts are named after its adapters.
    let jina = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../quiver-embed/tests/fixtures/tiny/jina-v3");
    let jina = jina.to_str().expect("utf-8");
    let served = start(&["--model", jina], &[]);
    let texts = ["retry with backoff", "hello world"];
    let openai = |extra: Value| {
        let mut body = json!({"input": texts});
        body.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        let reply = served.post("/v1/embeddings", &body.to_string());
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.body["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|row| serde_json::from_value(row["embedding"].clone()).expect("vector"))
            .collect::<Vec<Vec<f32>>>()
    };
    let query = openai(json!({"task": "retrieval.query", "prompt_name": "retrieval.query"}));
    let by_prompt_name = openai(json!({"prompt_name": "retrieval.query"}));
    let tei = served.post(
        "/embed",
        &json!({"inputs": texts, "prompt_name": "retrieval.query"}).to_string(),
    );
    assert_eq!(tei.status, 200, "{}", tei.body);
    let offline = offline_vectors_of(jina, &texts, &["--prompt-name", "retrieval.query"]);
    for (index, vector) in query.iter().enumerate() {
        assert!(cosine(vector, &by_prompt_name[index]) > 0.99999);
        assert!(cosine(vector, &vectors(&tei.body)[index]) > 0.99999);
        assert!(cosine(vector, &offline[index]) > 0.99999);
    }
    // Another task's adapter, same prompt: other vectors.
    let text_matching = openai(json!({"task": "text-matching", "prompt_name": "retrieval.query"}));
    assert!(cosine(&query[0], &text_matching[0]) < 0.999);
    let unknown = served.post(
        "/v1/embeddings",
        &json!({"input": texts, "task": "summarization"}).to_string(),
    );
    assert_error(&unknown, 400, "summarization");
}

#[test]
fn an_int8_server_stays_close_to_the_f32_vectors() {
    let served = serve(&["--quantize", "int8"]);
    let reply = served.post("/embed", &json!({ "inputs": TEXTS }).to_string());
    assert_eq!(reply.status, 200, "{}", reply.body);
    let offline = offline_vectors(&TEXTS, &[]);
    for (got, want) in vectors(&reply.body).iter().zip(&offline) {
        let similarity = cosine(got, want);
        assert!(similarity > 0.98 && similarity < 0.999_999, "{similarity}");
    }
    // An index's queries must be embedded in the index's own format.
    let root = temp_dir("serve-int8");
    std::fs::write(root.join("a.py"), "def area(r):\n    return r * r\n").unwrap();
    let model = model();
    let root_arg = root.to_str().unwrap();
    let indexed = quiver(&["index", root_arg, "--model", &model], "");
    assert!(indexed.status.success());
    let index = root.join(".quiver");
    let refused = quiver(
        &[
            "serve",
            "--quantize",
            "int8",
            "--index",
            index.to_str().unwrap(),
        ],
        "",
    );
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    let indexed_as = format!(
        "({}); this asks for",
        quiver_embed::Quantization::for_this_machine().name()
    );
    assert!(
        stderr.contains(&indexed_as) && stderr.contains("(int8)"),
        "{stderr}"
    );
}

#[test]
fn rerank_scores_pairs_as_transformers_does_and_reranks_searches() {
    let reranker = common::tiny_model("bert-reranker");
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(reranker.join("reference.json")).unwrap())
            .unwrap();
    // The reference's pairs of its first query, with their logits.
    let query = reference["pairs"][0][0].as_str().unwrap().to_string();
    let (texts, logits): (Vec<String>, Vec<f32>) = reference["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .zip(reference["scores"].as_array().unwrap())
        .filter(|(pair, _)| pair[0] == query.as_str())
        .map(|(pair, score)| {
            (
                pair[1].as_str().unwrap().to_string(),
                score.as_f64().unwrap() as f32,
            )
        })
        .unzip();

    let root = temp_dir("serve-rerank");
    common::write(&root, "math.py", "def add(a, b):\n    return a + b\n");
    common::write(
        &root,
        "greet.py",
        "def hello():\n    print('hello world')\n",
    );
    common::index(&root, &[]);
    let index = root.join(".quiver");
    let server = start(
        &[
            "--index",
            index.to_str().unwrap(),
            "--rerank-model",
            reranker.to_str().unwrap(),
        ],
        &[],
    );
    let raw = server.post(
        "/rerank",
        &json!({"query": query, "texts": texts, "raw_scores": true, "truncate": true}).to_string(),
    );
    assert_eq!(raw.status, 200, "{}", raw.body);
    let ranks = raw.body.as_array().unwrap();
    assert_eq!(ranks.len(), texts.len());
    let scores: Vec<f32> = ranks
        .iter()
        .map(|rank| rank["score"].as_f64().unwrap() as f32)
        .collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "best first: {scores:?}"
    );
    for rank in ranks {
        let index = rank["index"].as_u64().unwrap() as usize;
        let score = rank["score"].as_f64().unwrap() as f32;
        assert!(
            (score - logits[index]).abs() <= 1e-4,
            "text {index}: {score}"
        );
        assert!(rank.get("text").is_none());
    }
    let with_text = server.post(
        "/rerank",
        &json!({"query": query, "texts": texts[..2], "return_text": true}).to_string(),
    );
    for rank in with_text.body.as_array().unwrap() {
        let index = rank["index"].as_u64().unwrap() as usize;
        assert_eq!(rank["text"], texts[index].as_str());
        let probability = 1.0 / (1.0 + (-logits[index]).exp());
        assert!((rank["score"].as_f64().unwrap() as f32 - probability).abs() <= 1e-4);
    }
    // The fixture's max length is 64 tokens: a longer pair is refused unless truncated.
    let long = "token ".repeat(100);
    assert_error(
        &server.post(
            "/rerank",
            &json!({"query": query, "texts": [long]}).to_string(),
        ),
        413,
        "64 tokens",
    );
    assert_eq!(server.get("/info").body["rerank_model"], "bert-reranker");

    let searched = server.post(
        "/search",
        &json!({"query": "add two numbers", "k": 1, "rerank": true}).to_string(),
    );
    assert_eq!(searched.status, 200, "{}", searched.body);
    let hit = &searched.body["results"][0];
    assert!(hit["search_rank"].as_u64().is_some(), "{hit}");
    let score = hit["score"].as_f64().unwrap();
    assert!(score > 0.0 && score < 1.0, "{score}");

    // Without a reranker: TEI's 424.
    let plain = serve(&[]);
    assert_error(
        &plain.post(
            "/rerank",
            &json!({"query": "q", "texts": ["t"]}).to_string(),
        ),
        424,
        "--rerank-model",
    );
}

#[test]
fn search_rerank_reorders_the_top_hits_with_a_cross_encoder() {
    let reranker = common::tiny_model("xlm-roberta-reranker");
    let root = temp_dir("search-rerank");
    common::write(&root, "a.py", "def add(a, b):\n    return a + b\n");
    common::write(
        &root,
        "b.py",
        "def read_file(path):\n    return open(path).read()\n",
    );
    common::write(
        &root,
        "c.py",
        "class Parser:\n    def parse(self, text):\n        return text.split()\n",
    );
    common::index(&root, &[]);
    let index = root.join(".quiver");
    let search = |extra: &[&str]| common::search(&root, "read a file", extra);
    let plain = search(&["-k", "3"]);
    let reranked = search(&["-k", "2", "--rerank", reranker.to_str().unwrap()]);
    assert_eq!(reranked.len(), 2);
    // Fewer candidates than -k: the reranker still reads -k hits and returns them all.
    let narrow = search(&[
        "-k",
        "3",
        "--rerank",
        reranker.to_str().unwrap(),
        "--rerank-candidates",
        "1",
    ]);
    assert_eq!(narrow.len(), 3);
    assert!(plain.iter().all(|hit| hit.get("search_rank").is_none()));
    let scores: Vec<f64> = reranked
        .iter()
        .map(|h| h["score"].as_f64().unwrap())
        .collect();
    assert!(scores[0] >= scores[1] && scores.iter().all(|s| *s > 0.0 && *s < 1.0));
    // Each reranked hit names where the search had put it, and is that very chunk.
    for hit in &reranked {
        let rank = hit["search_rank"].as_u64().unwrap() as usize;
        assert_eq!(
            plain[rank - 1]["chunk"]["chunk_id"],
            hit["chunk"]["chunk_id"]
        );
    }
    let refused = quiver(
        &[
            "search",
            "x",
            "--index",
            index.to_str().unwrap(),
            "--rerank",
            root.to_str().unwrap(),
        ],
        "",
    );
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("reranker"), "{message}");
}

#[test]
fn embed_sparse_gives_a_splade_models_nonzero_weights() {
    let splade = common::tiny_model("splade");
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(splade.join("reference.json")).unwrap())
            .unwrap();
    // The server default, few-row kernels on: SPLADE models are loaded without them. In f32, to
    // match the reference's weights one for one.
    let server = start(
        &["--model", splade.to_str().unwrap(), "--quantize", "none"],
        &[],
    );
    let texts: Vec<&str> = reference["texts"]
        .as_array()
        .unwrap()
        .iter()
        .take(3)
        .map(|t| t.as_str().unwrap())
        .collect();
    let reply = server.post("/embed_sparse", &json!({"inputs": texts}).to_string());
    assert_eq!(reply.status, 200, "{}", reply.body);
    let sparse = reply.body.as_array().unwrap();
    assert_eq!(sparse.len(), 3);
    for (text, values) in sparse.iter().enumerate() {
        let want: Vec<f64> = reference["pooled"][text]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let got = values.as_array().unwrap();
        // Every nonzero weight, by vocabulary index, and nothing else.
        assert_eq!(got.len(), want.iter().filter(|&&w| w > 0.0).count());
        for entry in got {
            let index = entry["index"].as_u64().unwrap() as usize;
            let value = entry["value"].as_f64().unwrap();
            assert!(
                (value - want[index]).abs() <= 1e-4,
                "text {text}, index {index}"
            );
        }
    }
    assert_eq!(
        server.get("/info").body["model_type"],
        json!({"embedding": {"pooling": "splade"}})
    );
    // A dense model has no sparse vectors: TEI's 424.
    let dense = serve(&[]);
    assert_error(
        &dense.post("/embed_sparse", &json!({"inputs": "a"}).to_string()),
        424,
        "SPLADE",
    );
}

#[test]
fn an_index_is_served_only_with_its_own_model_and_number_format() {
    let root = temp_dir("serve-other-model");
    common::write(&root, "math.py", "def add(a, b):\n    return a + b\n");
    common::index(&root, &[]);
    let index = root.join(".quiver");
    let index_arg = index.to_str().unwrap();
    let jina = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../quiver-embed/tests/fixtures/tiny/jina-v3");
    for (extra, asked) in [
        (
            vec!["--model", jina.to_str().unwrap()],
            &*format!(
                "jina-v3 ({})",
                quiver_embed::Quantization::for_this_machine().name()
            ),
        ),
        (vec!["--quantize", "int8"], "(int8)"),
    ] {
        let mut args = vec!["serve", "--index", index_arg, "--port", "0"];
        args.extend(extra);
        let output = quiver(&args, "");
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!("the index at {index_arg} holds vectors of"))
                && stderr.contains("this asks for")
                && stderr.contains(asked)
                && stderr.contains("Leave --model/--quantize out"),
            "{stderr}"
        );
    }
}
