//! The indexing step that keeps an index's query adapter fitted to its repository: mine (doc
//! comment → definition) pairs from the stored chunks, embed each comment's first sentence as a
//! query, fit, store.

use super::{held_out, FitOptions, HeldOut, QueryAdapter};
use crate::error::{IndexError, Result};
use crate::indexer::IndexProgress;
use crate::store::{IndexSettings, Store};
use quiver_chunk::{doc_comment, first_sentence, Language};
use quiver_embed::Embedder;
use std::collections::HashMap;
use std::path::Path;

/// Pairs a fit uses at most (a deterministic sample beyond): enough to fit a map of a few
/// hundred thousand weights, and a bound on the time embedding the comments takes.
pub const MAX_PAIRS: usize = 20_000;

/// Chunks changed since the last fit, as a share of the index, that call for a new fit: a few
/// edits do not change what a repository's comments say, and a fit embeds every comment.
const REFIT_SHARE: f64 = 0.1;

/// Meta key: chunks embedded since the adapter was fitted.
const CHANGED_SINCE_FIT: &str = "adapter_changed_chunks";

/// Meta key: the pairs the last mining found.
const PAIRS_FOUND: &str = "adapter_pairs_found";

/// Meta key: "1" when the last fit was declined, its held-out pairs ranked no higher with it.
const DECLINED: &str = "adapter_declined";

/// What [`refresh`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Refreshed {
    /// The pairs of the adapter fitted now, when one was.
    pub pairs: Option<usize>,
    /// The trial fit that decided whether to keep one, when one ran.
    pub held_out: Option<HeldOut>,
}

/// One (doc comment, definition) pair: the comment's first sentence, the key of the vector
/// its query should land near, and the key of the definition's chunk text vector (the same
/// key when the definition has no signature vector).
#[derive(Debug, Clone, PartialEq)]
pub struct DocPair {
    /// The definition's file.
    pub path: String,
    pub query: String,
    pub target_hash: String,
    pub text_hash: String,
}

/// The pairs an index's chunks hold: every chunk that starts a documented definition gives its
/// doc comment's first sentence (3 to 60 words) and its signature vector (header and signature,
/// which holds none of the comment's words), else its own vector. A sentence that documents two
/// definitions says nothing about which one, so it is left out.
pub fn mine_pairs(store: &Store) -> Result<Vec<DocPair>> {
    let mut pairs: Vec<DocPair> = Vec::new();
    store.for_each_chunk(|chunk| {
        if chunk.symbol.is_none() {
            return Ok(());
        }
        let language = Language::from_path(Path::new(&chunk.path));
        let Some(doc) = doc_comment(language, &chunk.text) else {
            return Ok(());
        };
        let query = first_sentence(&doc);
        let words = query.split_whitespace().count();
        if (3..=60).contains(&words) {
            pairs.push(DocPair {
                path: chunk.path,
                query,
                target_hash: chunk
                    .signature_hash
                    .unwrap_or_else(|| chunk.embed_hash.clone()),
                text_hash: chunk.embed_hash,
            });
        }
        Ok(())
    })?;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for pair in &pairs {
        *counts.entry(pair.query.to_lowercase()).or_default() += 1;
    }
    pairs.retain(|pair| counts[&pair.query.to_lowercase()] == 1);
    if pairs.len() > MAX_PAIRS {
        pairs.sort_by_key(|pair| crate::ids::content_hash(pair.query.as_bytes()));
        pairs.truncate(MAX_PAIRS);
    }
    Ok(pairs)
}

/// Brings the index's adapter up to date after a run that embedded `changed` chunks: fits one
/// when the index has none or enough changed since the last fit, and keeps it when it ranks
/// the definitions of pairs held out of a trial fit higher ([`held_out`]); removes it when the
/// index no longer has [`super::MIN_PAIRS`] pairs or it no longer helps.
pub fn refresh(
    store: &Store,
    embedder: &Embedder,
    settings: &IndexSettings,
    changed: usize,
    progress: &dyn IndexProgress,
) -> Result<Refreshed> {
    let since_fit = store
        .meta(CHANGED_SINCE_FIT)?
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0)
        + changed;
    let current = store.query_adapter()?;
    let chunks = store.chunk_count()?;
    let changed_enough = since_fit as f64 >= REFIT_SHARE * chunks.max(1) as f64;
    let stale = match &current {
        // An index that had too few pairs, or whose adapter did not help, is mined again only
        // once enough changed too.
        None => {
            let too_few = store
                .meta(PAIRS_FOUND)?
                .and_then(|v| v.parse::<usize>().ok())
                .is_some_and(|found| found < super::MIN_PAIRS);
            let declined = store.meta(DECLINED)?.as_deref() == Some("1");
            !(too_few || declined) || changed_enough
        }
        Some(adapter) => adapter.dimension() != settings.dimension || changed_enough,
    };
    if !stale {
        store.set_meta(CHANGED_SINCE_FIT, &since_fit.to_string())?;
        return Ok(Refreshed::default());
    }
    let pairs = mine_pairs(store)?;
    store.set_meta(PAIRS_FOUND, &pairs.len().to_string())?;
    let (adapter, held_out) = if pairs.len() < super::MIN_PAIRS {
        (None, None)
    } else {
        fit_pairs(store, embedder, settings, &pairs, progress)?
    };
    let declined = held_out.is_some_and(|trial| !trial.helps());
    store.set_query_adapter(adapter.as_ref())?;
    store.set_meta(DECLINED, if declined { "1" } else { "0" })?;
    store.set_meta(CHANGED_SINCE_FIT, "0")?;
    Ok(Refreshed {
        pairs: adapter.map(|a| a.pairs()),
        held_out,
    })
}

/// Embeds the pairs' sentences as queries and fits an adapter on them, kept only where the
/// held-out trial says it helps: the adapter (`None` too when too few pairs have vectors) and
/// the trial.
pub fn fit_pairs(
    store: &Store,
    embedder: &Embedder,
    settings: &IndexSettings,
    pairs: &[DocPair],
    progress: &dyn IndexProgress,
) -> Result<(Option<QueryAdapter>, Option<HeldOut>)> {
    let d = settings.dimension;
    let options = settings.query_options();
    let mut queries = Vec::with_capacity(pairs.len() * d);
    let mut targets = Vec::with_capacity(pairs.len() * d);
    let mut siblings = Vec::with_capacity(pairs.len() * d);
    for batch in pairs.chunks(256) {
        if progress.interrupted() {
            return Err(IndexError::Interrupted);
        }
        let texts: Vec<&str> = batch.iter().map(|p| p.query.as_str()).collect();
        let vectors = embedder.embed(&texts, &options)?;
        for (pair, vector) in batch.iter().zip(vectors) {
            let Some(target) = store.vector_of(&pair.target_hash)? else {
                continue;
            };
            // A definition without a signature vector is searched by its text vector alone.
            let sibling = if pair.text_hash == pair.target_hash {
                target.clone()
            } else {
                let Some(sibling) = store.vector_of(&pair.text_hash)? else {
                    continue;
                };
                sibling
            };
            if vector.len() != d || target.len() != d || sibling.len() != d {
                continue;
            }
            queries.extend(unit(vector));
            targets.extend(unit(target));
            siblings.extend(unit(sibling));
        }
    }
    // Pairs whose vectors are missing drop out; with too few left nothing is fitted, and no
    // trial runs, so a trial in the result always means the adapter was judged by it.
    if queries.len() < super::MIN_PAIRS * d {
        return Ok((None, None));
    }
    let fit = FitOptions::default();
    let trial = held_out(&queries, &targets, Some(&siblings), d, &fit);
    if trial.is_some_and(|trial| !trial.helps()) {
        return Ok((None, trial));
    }
    let adapter = QueryAdapter::fit_with_siblings(&queries, &targets, Some(&siblings), d, &fit);
    Ok((adapter, trial))
}

fn unit(mut v: Vec<f32>) -> Vec<f32> {
    quiver_embed::l2_normalize(&mut v);
    v
}
