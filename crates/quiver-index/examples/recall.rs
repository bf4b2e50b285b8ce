//! Recall@10 of an index's vector search against an exact scan (used by bench/scale/run).
//!
//!   cargo run --release -p quiver-index --example recall -- INDEX QUERIES.f32 [LANGUAGE [PATH_GLOB]]
//!
//! QUERIES.f32 holds query vectors as raw little-endian f32, the index's width each. Prints
//! one JSON line per filter (none; the language; the path glob): recall@10 and the median
//! milliseconds of both searches.

use quiver_index::{SearchFilter, Store, VectorIndex};
use std::io::Write;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!("usage: recall INDEX QUERIES.f32 [LANGUAGE [PATH_GLOB]]");
        std::process::exit(2);
    }
    let store = Store::open(std::path::Path::new(&args[0])).unwrap_or_else(|e| fail(&e));
    let opened = Instant::now();
    let index = VectorIndex::open(&store).unwrap_or_else(|e| fail(&e));
    let open_ms = opened.elapsed().as_secs_f64() * 1e3;
    let bytes = std::fs::read(&args[1]).unwrap_or_else(|e| fail(&e));
    let queries: Vec<Vec<f32>> = bytes
        .chunks_exact(4)
        .map(|w| f32::from_le_bytes([w[0], w[1], w[2], w[3]]))
        .collect::<Vec<f32>>()
        .chunks_exact(index.dimension().max(1))
        .map(<[f32]>::to_vec)
        .collect();
    let mut filters = vec![("none".to_string(), SearchFilter::default())];
    if let Some(language) = args.get(2) {
        let filter = SearchFilter::new(vec![language.clone()], None).unwrap_or_else(|e| fail(&e));
        filters.push((format!("language={language}"), filter));
    }
    if let Some(glob) = args.get(3) {
        let filter = SearchFilter::new(Vec::new(), Some(glob)).unwrap_or_else(|e| fail(&e));
        filters.push((format!("path={glob}"), filter));
    }
    for (name, filter) in filters {
        // Each kind of search runs back to back, as a server's run: interleaved, every exact
        // scan would push the IVF's lists out of the caches before the next query.
        let mut exact = Vec::new();
        let truths: Vec<Vec<(i64, f64)>> = queries
            .iter()
            .map(|query| {
                let started = Instant::now();
                let truth = index
                    .nearest_exact(query, 10, &filter)
                    .unwrap_or_else(|e| fail(&e));
                exact.push(started.elapsed().as_secs_f64() * 1e3);
                truth
            })
            .collect();
        let (mut found, mut wanted, mut fast) = (0, 0, Vec::new());
        for (query, truth) in queries.iter().zip(&truths) {
            let started = Instant::now();
            let got = index
                .nearest(query, 10, &filter)
                .unwrap_or_else(|e| fail(&e));
            fast.push(started.elapsed().as_secs_f64() * 1e3);
            wanted += truth.len();
            found += got
                .iter()
                .filter(|hit| truth.iter().any(|t| t.0 == hit.0))
                .count();
        }
        // A closed pipe ends the run quietly.
        let _ = writeln!(
            std::io::stdout(),
            "{{\"chunks\": {}, \"ivf\": {}, \"open_ms\": {open_ms:.1}, \"filter\": \"{name}\", \
             \"queries\": {}, \"recall_at_10\": {:.4}, \"p50_ms\": {:.3}, \"exact_p50_ms\": {:.3}}}",
            index.len(),
            index.has_ivf(),
            queries.len(),
            found as f64 / wanted.max(1) as f64,
            median(&mut fast),
            median(&mut exact),
        );
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn fail(error: &dyn std::fmt::Display) -> ! {
    eprintln!("recall: {error}");
    std::process::exit(1)
}
