use crate::location;
use anyhow::bail;
use clap::Args;
use quiver_index::Store;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct StatusArgs {
    /// Index directory (default: .quiver/ here or in a parent directory).
    #[arg(long, value_name = "DIR")]
    index: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// Read everything in the index and check it (database pages, every chunk's and vector's
    /// checksum); exits with an error naming what is damaged. `quiver index --repair` mends it.
    #[arg(long)]
    verify: bool,
}

pub fn run(args: StatusArgs) -> anyhow::Result<()> {
    let index_dir = location::find(args.index)?;
    let store = Store::open(&index_dir)?;
    if args.verify {
        return verify(&store, &index_dir, args.json);
    }
    let status = store.status()?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    outln!("index:     {}", index_dir.display());
    if let Some(root) = &status.root {
        outln!("root:      {root}");
    }
    outln!(
        "model:     {} ({} dimensions, {})",
        status.model,
        status.dimension,
        match status.quantization {
            "none" => "f32",
            other => other,
        }
    );
    if let Some(prompt) = &status.query_prompt {
        outln!(
            "prompts:   query {prompt:?}, document {:?}",
            status.document_prompt
        );
    }
    outln!(
        "keywords:  weight {} in hybrid search",
        status.keyword_weight
    );
    let stats = &status.stats;
    outln!("files:     {}", stats.files);
    outln!(
        "chunks:    {} ({} distinct vectors)",
        stats.chunks,
        stats.vectors
    );
    let languages: Vec<String> = stats
        .languages
        .iter()
        .map(|(language, n)| format!("{language} {n}"))
        .collect();
    outln!("languages: {}", languages.join(", "));
    outln!(
        "size:      {:.1} MiB",
        stats.database_bytes as f64 / (1 << 20) as f64
    );
    if let Some(files) = &status.vector_files {
        outln!(
            "vectors:   {} rows ({} deleted), {}, {:.1} MiB{}",
            files.rows,
            files.deleted_rows,
            match files.ivf_lists {
                Some(lists) => format!("IVF of {lists} lists"),
                None => "scanned exactly".to_string(),
            },
            files.bytes as f64 / (1 << 20) as f64,
            if files.current {
                ""
            } else {
                " (stale: the next search or run rewrites them)"
            }
        );
    }
    Ok(())
}

fn verify(store: &Store, index_dir: &Path, json: bool) -> anyhow::Result<()> {
    let report = store.verify()?;
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "index": index_dir,
                "sound": report.is_sound(),
                "verification": report,
            }))?
        );
    } else {
        outln!(
            "checked {} chunks and {} vectors in {}",
            report.chunks,
            report.vectors,
            index_dir.display()
        );
        for line in &report.structure {
            outln!("damaged database page: {line}");
        }
        for (what, names) in [
            ("damaged chunk", &report.damaged_chunks),
            ("damaged vector of text", &report.damaged_vectors),
            ("chunk without its vector", &report.missing_vectors),
        ] {
            for name in names.iter().take(20) {
                outln!("{what}: {name}");
            }
            if names.len() > 20 {
                outln!("... and {} more of those", names.len() - 20);
            }
        }
        if let Some((rows, chunks)) = report.keyword_rows_mismatch {
            outln!("keyword index: {rows} rows for {chunks} chunks");
        }
    }
    if !report.is_sound() {
        bail!(
            "the index at {} is damaged: run `quiver index --repair` to rebuild what is damaged",
            index_dir.display()
        );
    }
    if !json {
        outln!("no damage found");
    }
    Ok(())
}
