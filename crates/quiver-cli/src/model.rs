//! Loading a model for a command, with the error context users need.

use anyhow::Context;
use quiver_embed::{resolve_model, Device, Embedder, EmbedderOptions};

pub fn load_embedder(
    spec: &str,
    max_length: Option<usize>,
    device: Device,
) -> anyhow::Result<Embedder> {
    load_embedder_with(
        spec,
        &EmbedderOptions {
            max_length,
            device,
            ..EmbedderOptions::default()
        },
    )
}

pub fn load_embedder_with(spec: &str, options: &EmbedderOptions) -> anyhow::Result<Embedder> {
    let dir = resolve_model(spec).with_context(|| format!("finding model {spec}"))?;
    Embedder::load(&dir, options).with_context(|| format!("loading model {}", dir.display()))
}
