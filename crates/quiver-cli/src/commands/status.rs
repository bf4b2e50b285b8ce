use crate::location;
use anyhow::bail;
use clap::Args;
use quiver_embed::Quantization;
use quiver_index::Store;
use std::path::PathBuf;

#[derive(Args)]
pub struct StatusArgs {
    /// Index directory (default: .quiver/ here or in a parent directory).
    #[arg(long, value_name = "DIR")]
    index: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: StatusArgs) -> anyhow::Result<()> {
    let index_dir = location::find(args.index)?;
    let store = Store::open(&index_dir, false)?;
    let Some(settings) = store.settings()? else {
        bail!(
            "the index at {} is empty: run `quiver index` first",
            index_dir.display()
        );
    };
    let stats = store.stats()?;
    let root = store.meta("root")?;
    if args.json {
        let summary = serde_json::json!({
            "index": index_dir,
            "root": root,
            "model": settings.model,
            "dimension": settings.dimension,
            "normalize": settings.normalize,
            "document_prompt": settings.document_prompt,
            "query_prompt": settings.query_prompt,
            "quantization": settings.quantization.name(),
            "chunking": store.meta("chunking")?,
            "stats": stats,
        });
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    println!("index:     {}", index_dir.display());
    if let Some(root) = root {
        println!("root:      {root}");
    }
    println!(
        "model:     {} ({} dimensions, {})",
        settings.model,
        settings.dimension,
        match settings.quantization {
            Quantization::None => "f32",
            other => other.name(),
        }
    );
    if let Some(prompt) = &settings.query_prompt {
        println!(
            "prompts:   query {prompt:?}, document {:?}",
            settings.document_prompt
        );
    }
    println!("files:     {}", stats.files);
    println!(
        "chunks:    {} ({} distinct vectors)",
        stats.chunks, stats.vectors
    );
    let languages: Vec<String> = stats
        .languages
        .iter()
        .map(|(language, n)| format!("{language} {n}"))
        .collect();
    println!("languages: {}", languages.join(", "));
    println!(
        "size:      {:.1} MiB",
        stats.database_bytes as f64 / (1 << 20) as f64
    );
    Ok(())
}
