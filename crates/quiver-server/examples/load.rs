//! A bounded load client for `quiver serve` (used by bench/serve/run and bench/serve/search):
//! every client thread sends its share of a fixed list of requests over one keep-alive
//! connection, then the run prints latency percentiles and throughput as one JSON line.
//!
//!   cargo run --release -p quiver-server --example load -- URL TEXTS.jsonl CLIENTS REQUESTS [TEXTS_PER_REQUEST | search:MODE]
//!
//! TEXTS.jsonl holds one {"text": ...} per line; requests cycle through it. Each request is a
//! `POST /v1/embeddings` of TEXTS_PER_REQUEST texts (1), or with `search:keyword`,
//! `search:vector` or `search:hybrid` a `POST /search` of one text in that mode.

use std::io::BufRead;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        eprintln!("usage: load URL TEXTS.jsonl CLIENTS REQUESTS [TEXTS_PER_REQUEST]");
        std::process::exit(2);
    }
    let base = args[0].trim_end_matches('/');
    let texts = read_texts(&args[1]);
    let clients: usize = parse(&args[2], "CLIENTS");
    let requests: usize = parse(&args[3], "REQUESTS");
    let search = args.get(4).and_then(|a| a.strip_prefix("search:"));
    let per_request: usize = match (search, args.get(4)) {
        (None, Some(n)) => parse(n, "TEXTS_PER_REQUEST"),
        _ => 1,
    };
    let url = match search {
        Some(_) => format!("{base}/search"),
        None => format!("{base}/v1/embeddings"),
    };
    if texts.is_empty() || clients == 0 {
        eprintln!("load: no texts or no clients");
        std::process::exit(2);
    }
    let started = Instant::now();
    let results: Vec<(Vec<Duration>, usize, usize)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|client| {
                let (url, texts) = (&url, &texts);
                scope.spawn(move || {
                    run_client(url, texts, client, clients, requests, per_request, search)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect()
    });
    let wall = started.elapsed().as_secs_f64();
    let mut latencies: Vec<Duration> = results.iter().flat_map(|r| r.0.clone()).collect();
    let tokens: usize = results.iter().map(|r| r.1).sum();
    let failures: usize = results.iter().map(|r| r.2).sum();
    latencies.sort();
    let percentile = |p: f64| {
        let index = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies
            .get(index)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "{}",
        serde_json::json!({
            "clients": clients,
            "requests": latencies.len(),
            "failures": failures,
            "texts_per_request": per_request,
            "tokens": tokens,
            "seconds": wall,
            "tokens_per_second": tokens as f64 / wall,
            "requests_per_second": latencies.len() as f64 / wall,
            "p50_ms": percentile(0.50),
            "p90_ms": percentile(0.90),
            "p99_ms": percentile(0.99),
        })
    );
}

/// Sends requests client, client + clients, ... < requests; returns latencies, tokens, failures.
fn run_client(
    url: &str,
    texts: &[String],
    client: usize,
    clients: usize,
    requests: usize,
    per_request: usize,
    search: Option<&str>,
) -> (Vec<Duration>, usize, usize) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(120))
        .build();
    let mut latencies = Vec::new();
    let (mut tokens, mut failures) = (0, 0);
    for request in (client..requests).step_by(clients) {
        let input: Vec<&str> = (0..per_request)
            .map(|i| texts[(request * per_request + i) % texts.len()].as_str())
            .collect();
        let body = match search {
            Some(mode) => serde_json::json!({ "query": input[0], "mode": mode, "k": 10 }),
            None => serde_json::json!({ "input": input, "truncate": true }),
        }
        .to_string();
        let sent = Instant::now();
        let reply = agent
            .post(url)
            .set("content-type", "application/json")
            .send_string(&body);
        match reply.map(|r| r.into_json::<serde_json::Value>()) {
            Ok(Ok(value)) if search.is_none() || value["results"].is_array() => {
                latencies.push(sent.elapsed());
                tokens += value["usage"]["prompt_tokens"].as_u64().unwrap_or(0) as usize;
            }
            _ => failures += 1,
        }
    }
    (latencies, tokens, failures)
}

fn read_texts(path: &str) -> Vec<String> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| {
        eprintln!("load: cannot read {path}: {e}");
        std::process::exit(2);
    });
    std::io::BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| {
            let value: serde_json::Value = serde_json::from_str(&line).ok()?;
            value["text"].as_str().map(str::to_string)
        })
        .collect()
}

fn parse(text: &str, name: &str) -> usize {
    text.parse().unwrap_or_else(|_| {
        eprintln!("load: {name} must be a number, got {text:?}");
        std::process::exit(2);
    })
}
