//! Time to load a model and embed one query, as a command-line search does:
//! `cargo run --release -p quiver-embed --example load_time -- MODEL_DIR [few-row]`.
use quiver_embed::{EmbedOptions, Embedder, EmbedderOptions, TextTokenizer};
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().expect("a model folder"));
    let few_row_kernels = args.next().is_some_and(|a| a == "few-row");
    let started = Instant::now();
    let tokenizer = TextTokenizer::load(&dir, 256).expect("tokenizer");
    let tokenizer_s = started.elapsed().as_secs_f64();
    drop(tokenizer);
    let started = Instant::now();
    let embedder = Embedder::load(
        &dir,
        &EmbedderOptions {
            few_row_kernels,
            ..EmbedderOptions::default()
        },
    )
    .expect("model");
    let load_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let vectors = embedder
        .embed(
            &["parse the header of an email message"],
            &EmbedOptions::default(),
        )
        .expect("embed");
    let embed_s = started.elapsed().as_secs_f64();
    println!(
        "tokenizer alone {:.1} ms, load (tokenizer included) {:.1} ms, one query {:.1} ms ({} dims)",
        tokenizer_s * 1e3,
        load_s * 1e3,
        embed_s * 1e3,
        vectors[0].len()
    );
}
