//! `quiver models list` and `quiver models info ID`: the registry of known models, and what a
//! model folder says about itself.

use anyhow::Context;
use clap::{Args, Subcommand};
use quiver_embed::{
    find_model, resolve_local_model, ModelCard, SentenceTransformerConfig, KNOWN_MODELS,
    KNOWN_RERANKERS,
};
use quiver_runtime::models::{is_supported, supported_architectures};
use quiver_runtime::ModelConfig;
use quiver_runtime::CLASSIFIER_ARCHITECTURES;
use serde_json::{json, Value};

#[derive(Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    command: ModelsCommand,
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Every model Quiver knows: architecture, dimensions, max tokens, pooling, device, support.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One model: a known id (full or short), or a model folder / cached hub id, read from disk.
    Info {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: ModelsArgs) -> anyhow::Result<()> {
    match args.command {
        ModelsCommand::List { json } => list(json),
        ModelsCommand::Info { id, json } => info(&id, json),
    }
}

fn card_json(card: &ModelCard) -> Value {
    let mut value = serde_json::to_value(card).unwrap_or(Value::Null);
    value["supported"] = json!(card.supported());
    value["prompts"] = json!(card
        .prompts
        .iter()
        .map(|(name, text)| (name.to_string(), text.to_string()))
        .collect::<std::collections::BTreeMap<_, _>>());
    value
}

fn list(as_json: bool) -> anyhow::Result<()> {
    if as_json {
        let mut cards: Vec<Value> = KNOWN_MODELS
            .iter()
            .map(|card| {
                let mut value = card_json(card);
                value["task"] = json!("embed");
                value
            })
            .collect();
        cards.extend(KNOWN_RERANKERS.iter().map(|card| {
            let mut value = serde_json::to_value(card).unwrap_or(Value::Null);
            value["task"] = json!("rerank");
            value["supported"] = json!(CLASSIFIER_ARCHITECTURES.contains(&card.architecture));
            value
        }));
        outln!("{}", serde_json::to_string_pretty(&cards)?);
        return Ok(());
    }
    outln!(
        "{:<58} {:<12} {:>5} {:>6} {:<9} {:<4} supported",
        "model",
        "architecture",
        "dims",
        "tokens",
        "pooling",
        "on"
    );
    for card in KNOWN_MODELS {
        outln!(
            "{:<58} {:<12} {:>5} {:>6} {:<9} {:<4} {}",
            card.id,
            card.architecture,
            card.dimensions,
            card.max_tokens,
            card.pooling,
            device_name(card),
            if card.supported() { "yes" } else { "not yet" }
        );
    }
    outln!(
        "\n{:<58} {:<38} {:>6} supported",
        "reranker",
        "architecture",
        "tokens"
    );
    for card in KNOWN_RERANKERS {
        let supported = CLASSIFIER_ARCHITECTURES.contains(&card.architecture);
        outln!(
            "{:<58} {:<38} {:>6} {}",
            card.id,
            card.architecture,
            card.max_tokens,
            if supported { "yes" } else { "not yet" }
        );
    }
    outln!(
        "\nArchitectures this build runs: {}; rerankers: {}",
        supported_architectures().collect::<Vec<_>>().join(", "),
        CLASSIFIER_ARCHITECTURES.join(", ")
    );
    outln!("Rerankers' real weights are not tested here: {TINY_NOTE}");
    Ok(())
}

const TINY_NOTE: &str = "each architecture is checked on a tiny random-weight model \
                         against transformers";

fn device_name(card: &ModelCard) -> &'static str {
    match card.device {
        quiver_embed::RecommendedDevice::Cpu => "cpu",
        quiver_embed::RecommendedDevice::Gpu => "gpu",
    }
}

fn info(id: &str, as_json: bool) -> anyhow::Result<()> {
    let value = match find_model(id) {
        Some(card) => card_json(card),
        None => folder_info(id)?,
    };
    if as_json {
        outln!("{}", serde_json::to_string_pretty(&value)?);
    } else if let Some(fields) = value.as_object() {
        for (key, field) in fields {
            let shown = match field {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            outln!("{key:<22} {shown}");
        }
    }
    Ok(())
}

/// What a model folder (or a cached hub id) says about itself; nothing is downloaded.
fn folder_info(id: &str) -> anyhow::Result<Value> {
    let dir = resolve_local_model(id).with_context(|| {
        format!(
            "{id} is not a model Quiver knows (see `quiver models list`), a model folder, or a \
             cached hub model"
        )
    })?;
    let config = ModelConfig::read(&dir)?;
    let st = SentenceTransformerConfig::read(&dir)?;
    let raw: Value = serde_json::from_str(&std::fs::read_to_string(&config.path)?)
        .with_context(|| format!("reading {}", config.path.display()))?;
    let supported = is_supported(&config.model_type);
    Ok(json!({
        "id": id,
        "folder": dir.display().to_string(),
        "architecture": config.model_type,
        "dimensions": raw.get("hidden_size"),
        "max_tokens": st.max_seq_length.or_else(|| raw.get("max_position_embeddings").and_then(Value::as_u64).map(|n| n as usize)),
        "pooling": st.pooling.name(),
        "normalize": st.normalize,
        "prompts": st.prompts,
        "default_prompt_name": st.default_prompt_name,
        "supported": supported,
        "note": if supported {
            String::new()
        } else {
            format!("architecture `{}` is not supported yet; supported: {}", config.model_type, supported_architectures().collect::<Vec<_>>().join(", "))
        },
    }))
}
