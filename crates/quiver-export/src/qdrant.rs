//! Export to a Qdrant collection through Qdrant's REST API (`/collections/...`), as documented
//! by Qdrant. Each point is a chunk: its UUID as point id, its payload (plus
//! [`FINGERPRINT_KEY`]) as payload, and two named vectors:
//! - [`VECTOR`]: a multivector `[text, signature]` (the text alone for a chunk without a
//!   signature), cosine, compared by `max_sim`: for one query vector that is the better of the
//!   two cosines, which is how `quiver search --mode vector` scores a chunk;
//! - [`KEYWORD`]: a sparse vector of the chunk's BM25 term weights over Quiver's keyword tokens
//!   ([`quiver_index::keywords`]), with Qdrant's `idf` modifier: a query of weight 1 per token
//!   scores BM25 as `--mode keyword` does, up to Qdrant's IDF formula.
//!
//! The collection's metadata records the model, the width and the average chunk length the
//! BM25 weights used (kept while the index's own stays within 10 %, so an update sends only
//! what changed). Keyword payload indexes cover the fields users filter by.

use crate::files::ExportRecord;
use crate::{
    send_changes, ExportError, Progress, Result, Schema, StoreHit, StoreQuery, Summary,
    FINGERPRINT_KEY,
};
use quiver_index::keywords::{self, SparseVector};
use quiver_index::{
    rescale_bounds, IndexSettings, SearchMode, Store, FUSION_DEPTH, KEYWORD_OVERLAP,
};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

/// The dense multivector's name: text and signature vectors.
pub const VECTOR: &str = "vector";
/// The sparse vector's name: BM25 keyword weights.
pub const KEYWORD: &str = "keyword";
/// Candidates Qdrant's HNSW search keeps (`hnsw_ef`; unset, Qdrant searches narrower):
/// measured with `quiver eval --store`, a wider search brings Qdrant's vector ranking to
/// Quiver's exact one (docs/exports.md).
pub const SEARCH_EF: usize = 400;
/// How far the index's average chunk length may drift from the one the collection's keyword
/// weights used before they are all computed again.
const AVERAGE_LENGTH_DRIFT: f64 = 0.1;

/// Payload fields that get a keyword index, so filtered searches stay fast.
pub const INDEXED_FIELDS: &[&str] = &["path", "language", "source_subdir"];

/// How a [`QdrantExport`] talks to the server.
#[derive(Debug, Clone)]
pub struct QdrantOptions {
    /// Points per upsert request.
    pub batch_size: usize,
    /// Attempts per request when the server is unreachable, overloaded (429) or failing (5xx).
    pub attempts: u32,
    /// Wait before the second attempt; doubled for each one after.
    pub first_backoff: Duration,
    pub api_key: Option<String>,
    pub timeout: Duration,
}

impl Default for QdrantOptions {
    fn default() -> Self {
        QdrantOptions {
            batch_size: 256,
            attempts: 5,
            first_backoff: Duration::from_millis(500),
            api_key: None,
            timeout: Duration::from_secs(60),
        }
    }
}

pub struct QdrantExport {
    base: String,
    collection: String,
    options: QdrantOptions,
    agent: ureq::Agent,
}

impl QdrantExport {
    /// `url`: the server's REST address, e.g. `http://localhost:6333`.
    pub fn new(url: &str, collection: &str, options: QdrantOptions) -> Result<Self> {
        if collection.is_empty()
            || !collection
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(ExportError::BadName {
                what: "--collection",
                name: collection.into(),
                message: "use letters, digits, '_', '-' or '.'",
            });
        }
        let agent = ureq::AgentBuilder::new().timeout(options.timeout).build();
        Ok(QdrantExport {
            base: url.trim_end_matches('/').to_string(),
            collection: collection.to_string(),
            options,
            agent,
        })
    }

    /// Brings the collection to `records`: creates it if missing (refusing a width or model
    /// mismatch), upserts new and changed points in batches, then deletes points the index no
    /// longer has.
    pub fn sync(
        &self,
        schema: &Schema,
        store: &Store,
        settings: &IndexSettings,
        progress: Progress<'_>,
    ) -> Result<Summary> {
        let average_length = self.ensure_collection(schema, store.keyword_average_length()?)?;
        let existing = self.existing_points(schema)?;
        self.ensure_payload_indexes()?;
        let plan = send_changes(
            store,
            settings,
            &existing,
            &format!("keyword-average-length={average_length}"),
            self.options.batch_size,
            progress,
            |batch| {
                let texts: Vec<(String, String)> = batch
                    .iter()
                    .map(|(record, _)| {
                        let (names, text) = record.keyword_texts();
                        (names, text.to_string())
                    })
                    .collect();
                let documents = keywords::documents(&texts)
                    .map_err(|e| self.error(format!("tokenising keywords: {e}")))?;
                let points: Vec<Value> = batch
                    .iter()
                    .zip(&documents)
                    .map(|((record, print), document)| {
                        // A chunk with no tokens has no keyword side.
                        let keyword =
                            (document.length > 0).then(|| document.bm25_vector(average_length));
                        point(record, keyword, print)
                    })
                    .collect();
                self.request(
                    "PUT",
                    &format!("/collections/{}/points?wait=true", self.collection),
                    Some(json!({ "points": points })),
                )?;
                Ok(())
            },
        )?;
        for batch in plan.deletes.chunks(self.options.batch_size.max(1)) {
            self.request(
                "POST",
                &format!("/collections/{}/points/delete?wait=true", self.collection),
                Some(json!({ "points": batch })),
            )?;
        }
        Ok(plan.summary())
    }

    /// Creates the collection when missing, checks it when not; returns the average chunk
    /// length its keyword weights use (recording the index's `average_length` when it is new
    /// or has drifted).
    fn ensure_collection(&self, schema: &Schema, average_length: f64) -> Result<f64> {
        let path = format!("/collections/{}", self.collection);
        let metadata = |average_length: f64| {
            json!({ "quiver": {
                "model": schema.model,
                "dimension": schema.dimension,
                "keyword_average_length": average_length,
                "quiver_version": env!("CARGO_PKG_VERSION"),
            }})
        };
        let Some(info) = self.request_optional("GET", &path, None)? else {
            tracing::info!(collection = %self.collection, "creating Qdrant collection");
            self.request(
                "PUT",
                &path,
                Some(json!({
                    "vectors": { VECTOR: {
                        "size": schema.dimension,
                        "distance": "Cosine",
                        "multivector_config": { "comparator": "max_sim" },
                    }},
                    "sparse_vectors": { KEYWORD: { "modifier": "idf" } },
                    "metadata": metadata(average_length),
                })),
            )?;
            return Ok(average_length);
        };
        self.check_layout(&info["result"]["config"], schema)?;
        let recorded = info["result"]["config"]["metadata"]["quiver"]["keyword_average_length"]
            .as_f64()
            .filter(|&recorded| recorded > 0.0);
        match recorded {
            Some(recorded) if (average_length / recorded - 1.0).abs() <= AVERAGE_LENGTH_DRIFT => {
                Ok(recorded)
            }
            _ => {
                self.request(
                    "PATCH",
                    &path,
                    Some(json!({ "metadata": metadata(average_length) })),
                )?;
                Ok(average_length)
            }
        }
    }

    /// Refuses a collection Quiver would not have made for this index, saying how to go on.
    fn check_layout(&self, config: &Value, schema: &Schema) -> Result<()> {
        let params = &config["params"];
        let recreate = format!(
            "delete it (`curl -X DELETE {}/collections/{}`) and export again, or export to a \
             new --collection",
            self.base, self.collection
        );
        if params["vectors"]["size"].is_u64() {
            return Err(self.refused(format!(
                "the collection holds one unnamed vector per point, as earlier Quiver exports \
                 made it (text vectors only, no keywords); this export writes the named \
                 vectors {VECTOR:?} and {KEYWORD:?}: {recreate}"
            )));
        }
        let vector = &params["vectors"][VECTOR];
        let Some(size) = vector["size"].as_u64() else {
            return Err(self.refused(format!(
                "the collection has no {VECTOR:?} vector: not one Quiver exported; {recreate}"
            )));
        };
        if size as usize != schema.dimension {
            return Err(self.refused(format!(
                "the collection holds {size}-dimensional vectors; this index has {} ({})",
                schema.dimension, schema.model
            )));
        }
        let max_sim = vector["multivector_config"]["comparator"].as_str() == Some("max_sim");
        let idf = params["sparse_vectors"][KEYWORD]["modifier"].as_str() == Some("idf");
        if !max_sim || !idf {
            return Err(self.refused(format!(
                "its {VECTOR:?} vector is not a max_sim multivector or its {KEYWORD:?} sparse \
                 vector lacks the idf modifier: not one Quiver exported; {recreate}"
            )));
        }
        Ok(())
    }

    /// Runs `query` as docs/exports.md writes it for Qdrant's query API; returns the chunk ids
    /// of the best `query.k` points, best first.
    pub fn search(&self, query: &StoreQuery<'_>) -> Result<Vec<StoreHit>> {
        // The keyword vector only where the mode ranks by keywords.
        let sparse = match query.mode {
            SearchMode::Vector => SparseVector::default(),
            _ => keywords::query_vector(query.text).map_err(|error| {
                self.error(format!("reading the keywords of {:?}: {error}", query.text))
            })?,
        };
        let dense = json!({
            "query": query.vector,
            "using": VECTOR,
            "params": { "hnsw_ef": SEARCH_EF },
        });
        let keyword = json!({ "query": sparse, "using": KEYWORD });
        let path = format!("/collections/{}/points/query", self.collection);
        let body = match query.mode {
            SearchMode::Vector => with_limit(dense, query.k),
            SearchMode::Keyword if sparse.indices.is_empty() => return Ok(Vec::new()),
            SearchMode::Keyword => with_limit(keyword, query.k),
            SearchMode::Hybrid => {
                let prefetch = if sparse.indices.is_empty() {
                    vec![with_limit(dense, FUSION_DEPTH)]
                } else {
                    vec![
                        with_limit(dense, FUSION_DEPTH),
                        with_limit(keyword, FUSION_DEPTH),
                    ]
                };
                match self.fusion(&prefetch, query.keyword_weight)? {
                    Some(formula) => json!({
                        "prefetch": prefetch,
                        "query": formula,
                        "limit": query.k,
                    }),
                    None => return Ok(Vec::new()),
                }
            }
        };
        let mut body = body;
        body["with_payload"] = json!(["chunk_id"]);
        let answer = self.request("POST", &path, Some(body))?;
        answer["result"]["points"]
            .as_array()
            .map(|points| {
                points
                    .iter()
                    .filter_map(|point| {
                        Some(StoreHit {
                            chunk_id: point["payload"]["chunk_id"].as_str()?.to_string(),
                            score: point["score"].as_f64()?,
                        })
                    })
                    .collect()
            })
            .ok_or_else(|| self.error(format!("POST {path}: no points in the answer")))
    }

    /// Quiver's hybrid fusion as a Qdrant formula over the prefetches' scores: each ranking
    /// rescaled by its best and last score (read first, in one batch request) and added, the
    /// keyword side times `keyword_weight`; a point one ranking missed gets 0 from it.
    fn fusion(&self, prefetch: &[Value], keyword_weight: f64) -> Result<Option<Value>> {
        let answer = self.request(
            "POST",
            &format!("/collections/{}/points/query/batch", self.collection),
            Some(json!({ "searches": prefetch })),
        )?;
        let rankings = answer["result"].as_array().cloned().unwrap_or_default();
        // Each ranking's scores rescaled to 0..1 (0 for a point it missed).
        let mut rescaled = Vec::new();
        let mut defaults = serde_json::Map::new();
        for (i, ranking) in rankings.iter().enumerate() {
            let scores: Vec<f64> = ranking["points"]
                .as_array()
                .map(|points| points.iter().filter_map(|p| p["score"].as_f64()).collect())
                .unwrap_or_default();
            let Some((offset, span)) = rescale_bounds(scores) else {
                rescaled.push(None);
                continue;
            };
            let variable = format!("$score[{i}]");
            rescaled.push(Some(json!({ "div": {
                "left": { "sum": [variable, -offset] },
                "right": span,
            }})));
            defaults.insert(variable, json!(offset));
        }
        // `v + w·k·(1 − overlap·v)` ([`quiver_index::fused_score`]), as a sum of products.
        let mut terms = Vec::new();
        let vector = rescaled.first().cloned().flatten();
        let keyword = rescaled.get(1).cloned().flatten();
        if let Some(v) = &vector {
            terms.push(v.clone());
        }
        if let Some(k) = &keyword {
            terms.push(json!({ "mult": [keyword_weight, k] }));
            if let Some(v) = &vector {
                terms.push(json!({ "mult": [-keyword_weight * KEYWORD_OVERLAP, v, k] }));
            }
        }
        Ok((!terms.is_empty())
            .then(|| json!({ "formula": { "sum": terms }, "defaults": defaults })))
    }

    /// Every point's id and fingerprint, paging through the collection; refuses a collection
    /// with points of another model.
    fn existing_points(&self, schema: &Schema) -> Result<HashMap<String, String>> {
        let mut existing = HashMap::new();
        let mut offset = Value::Null;
        loop {
            let mut body = json!({
                "limit": 1000,
                "with_payload": ["model", FINGERPRINT_KEY],
                "with_vector": false,
            });
            if !offset.is_null() {
                body["offset"] = offset.clone();
            }
            let page = self.request(
                "POST",
                &format!("/collections/{}/points/scroll", self.collection),
                Some(body),
            )?;
            let points = page["result"]["points"].as_array().cloned();
            for point in points.unwrap_or_default() {
                let model = point["payload"]["model"].as_str().unwrap_or_default();
                if model != schema.model {
                    return Err(self.refused(format!(
                        "the collection holds vectors of model {model:?}; this index uses {:?}. \
                         Export to a new collection",
                        schema.model
                    )));
                }
                let id = point["id"].as_str().map(str::to_string);
                let print = point["payload"][FINGERPRINT_KEY]
                    .as_str()
                    .unwrap_or_default();
                if let Some(id) = id {
                    existing.insert(id, print.to_string());
                }
            }
            offset = page["result"]["next_page_offset"].clone();
            if offset.is_null() {
                return Ok(existing);
            }
        }
    }

    fn ensure_payload_indexes(&self) -> Result<()> {
        for field in INDEXED_FIELDS {
            self.request(
                "PUT",
                &format!("/collections/{}/index?wait=true", self.collection),
                Some(json!({ "field_name": field, "field_schema": "keyword" })),
            )?;
        }
        Ok(())
    }

    fn refused(&self, message: String) -> ExportError {
        ExportError::Refused {
            destination: format!("Qdrant collection {} at {}", self.collection, self.base),
            message,
        }
    }

    fn error(&self, message: String) -> ExportError {
        ExportError::Qdrant {
            url: self.base.clone(),
            message,
        }
    }

    fn request(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        self.request_optional(method, path, body.as_ref())?
            .ok_or_else(|| self.error(format!("{method} {path}: not found (404)")))
    }

    /// Sends one request, retrying what a retry can fix; `None` for 404.
    fn request_optional(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Option<Value>> {
        let url = format!("{}{}", self.base, path);
        let attempts = self.options.attempts.max(1);
        let mut backoff = self.options.first_backoff;
        let mut attempt = 1;
        loop {
            let mut request = self.agent.request(method, &url);
            if let Some(key) = &self.options.api_key {
                request = request.set("api-key", key);
            }
            let sent = match body {
                Some(body) => request.send_json(body),
                None => request.call(),
            };
            let retry_reason = match sent {
                Ok(response) => {
                    return response.into_json().map(Some).map_err(|error| {
                        self.error(format!("{method} {path}: unreadable answer: {error}"))
                    })
                }
                Err(ureq::Error::Status(404, _)) => return Ok(None),
                Err(ureq::Error::Status(code, response)) if code == 429 || code >= 500 => {
                    format!("{code} {}", response.into_string().unwrap_or_default())
                }
                Err(ureq::Error::Status(code, response)) => {
                    let detail = response.into_string().unwrap_or_default();
                    return Err(self.error(format!("{method} {path}: {code} {detail}")));
                }
                Err(ureq::Error::Transport(transport)) => transport.to_string(),
            };
            if attempt >= attempts {
                return Err(self.error(format!(
                    "{method} {path}: {retry_reason} (after {attempt} attempts)"
                )));
            }
            tracing::warn!(%url, attempt, reason = %retry_reason, "Qdrant request failed; retrying");
            std::thread::sleep(backoff);
            backoff *= 2;
            attempt += 1;
        }
    }
}

fn point(record: &ExportRecord, keyword: Option<SparseVector>, print: &str) -> Value {
    let mut payload = record.payload.clone();
    payload[FINGERPRINT_KEY] = Value::from(print);
    let mut dense = vec![&record.vector];
    dense.extend(&record.signature);
    let mut vectors = json!({ VECTOR: dense });
    // Qdrant refuses an empty sparse vector; a chunk with no keyword tokens has none.
    if let Some(keyword) = keyword.filter(|k| !k.indices.is_empty()) {
        vectors[KEYWORD] = json!(keyword);
    }
    json!({ "id": record.id, "vector": vectors, "payload": payload })
}

fn with_limit(mut query: Value, limit: usize) -> Value {
    query["limit"] = json!(limit);
    query
}
