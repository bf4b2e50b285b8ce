//! `quiver watch`: index a tree, then keep its index fresh as files change. Also the
//! tree-and-model flags `quiver mcp` shares, and the updater both build from them.

use crate::location;
use crate::model::{load_embedder, QuantizeArg};
use crate::progress::IndexBar;
use anyhow::{bail, Context};
use clap::Args;
use quiver_embed::Device;
use quiver_index::{
    watch, IndexError, IndexOptions, IndexUpdater, Input, RunModel, Store, WatchOptions,
};
use std::path::PathBuf;
use std::sync::Arc;

/// The tree to keep indexed, and how.
#[derive(Args)]
pub struct TreeArgs {
    /// The codebase or document tree.
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// Index directory (default: .quiver/ under the tree).
    #[arg(long, value_name = "DIR")]
    pub index: Option<PathBuf>,
    /// Model folder or hub id (default: the index's model, else all-MiniLM-L6-v2).
    #[arg(long, short, env = "QUIVER_MODEL")]
    pub model: Option<String>,
    /// Number format of the model's dense layers for a new index: none (f32), int8 or bf16
    /// (default: the index's, else bf16 where the CPU multiplies bf16 natively (AMX, AVX-512
    /// BF16), else none).
    #[arg(long, value_enum)]
    pub quantize: Option<QuantizeArg>,
    #[arg(long, env = "QUIVER_DEVICE", default_value = "cpu", help = super::DEVICE_HELP)]
    pub device: Device,
}

#[derive(Args)]
pub struct WatchArgs {
    #[command(flatten)]
    tree: TreeArgs,
}

/// An updater for the tree: the index's model and chunking when it exists, the flags' (or the
/// defaults) for a new one. A model other than the index's is refused: re-embedding is
/// `quiver index --reembed`'s decision.
pub fn updater(args: &TreeArgs) -> anyhow::Result<Arc<IndexUpdater>> {
    if !args.path.is_dir() {
        bail!("{} is not a directory", args.path.display());
    }
    let root = args
        .path
        .canonicalize()
        .with_context(|| format!("resolving {}", args.path.display()))?;
    let index_dir = location::for_root(args.index.clone(), &root);
    let store = match Store::open(&index_dir) {
        Ok(store) => Some(store),
        Err(IndexError::NoIndex(_)) => None,
        Err(error) => return Err(error.into()),
    };
    let stored = store.as_ref().map(Store::settings).transpose()?.flatten();
    let run = RunModel::following(
        &index_dir,
        stored.as_ref(),
        args.model.as_deref(),
        args.quantize.map(Into::into),
    )?;
    let embedder = load_embedder(&run.model_id, args.device, run.quantization)?;
    let mut options = IndexOptions::new(Input::Tree { root }, run.model_id.clone(), &index_dir);
    if let Some(store) = &store {
        options = options.like_last_run(store)?;
    }
    Ok(Arc::new(IndexUpdater::new(
        Arc::new(embedder),
        options,
        &index_dir,
    )))
}

pub fn run(args: WatchArgs) -> anyhow::Result<()> {
    let updater = updater(&args.tree)?;
    let root = updater.options().input.root().display().to_string();
    let progress = IndexBar::new();
    let report = updater
        .update(&progress)
        .with_context(|| format!("indexing {root}"))?;
    progress.finish();
    eprintln!("quiver: {}", report.summary());
    eprintln!("quiver: watching {root} for changes (Ctrl-C to stop)");
    let _watcher = watch(updater, WatchOptions::default(), |outcome| match outcome {
        Ok(report) => eprintln!("quiver: {}", report.summary()),
        Err(error) => eprintln!("quiver: updating the index failed: {error}"),
    })?;
    // Every run commits a batch at a time, so Ctrl-C (the default action: exit) loses nothing
    // committed.
    loop {
        std::thread::park();
    }
}
