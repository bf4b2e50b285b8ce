//! Export to a Qdrant collection through Qdrant's REST API (`/collections/...`), as documented
//! by Qdrant: one unnamed dense vector per point, cosine distance, the chunk's UUID as point id,
//! its payload (plus [`FINGERPRINT_KEY`]) as point payload, keyword payload indexes on the
//! fields users filter by.

use crate::files::ExportRecord;
use crate::{ExportError, Plan, Progress, Result, Schema, Summary, FINGERPRINT_KEY};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

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
        records: &[ExportRecord],
        progress: Progress<'_>,
    ) -> Result<Summary> {
        self.ensure_collection(schema)?;
        let existing = self.existing_points(schema)?;
        let plan = Plan::new(records, &existing);
        self.ensure_payload_indexes()?;
        let total = plan.upserts.len();
        let mut sent = 0;
        for batch in plan.upserts.chunks(self.options.batch_size.max(1)) {
            let points: Vec<Value> = batch
                .iter()
                .map(|(record, print)| point(record, print))
                .collect();
            self.request(
                "PUT",
                &format!("/collections/{}/points?wait=true", self.collection),
                Some(json!({ "points": points })),
            )?;
            sent += batch.len();
            progress(sent, total);
        }
        for batch in plan.deletes.chunks(self.options.batch_size.max(1)) {
            self.request(
                "POST",
                &format!("/collections/{}/points/delete?wait=true", self.collection),
                Some(json!({ "points": batch })),
            )?;
        }
        Ok(plan.summary())
    }

    fn ensure_collection(&self, schema: &Schema) -> Result<()> {
        let path = format!("/collections/{}", self.collection);
        match self.request_optional("GET", &path, None)? {
            Some(info) => self.check_vector_size(&info, schema),
            None => {
                tracing::info!(collection = %self.collection, "creating Qdrant collection");
                self.request(
                    "PUT",
                    &path,
                    Some(json!({
                        "vectors": { "size": schema.dimension, "distance": "Cosine" }
                    })),
                )
                .map(drop)
            }
        }
    }

    fn check_vector_size(&self, info: &Value, schema: &Schema) -> Result<()> {
        let vectors = &info["result"]["config"]["params"]["vectors"];
        let Some(size) = vectors["size"].as_u64() else {
            return Err(self.refused(
                "the collection uses named vectors; Quiver writes one unnamed vector per point"
                    .into(),
            ));
        };
        if size as usize != schema.dimension {
            return Err(self.refused(format!(
                "the collection holds {size}-dimensional vectors; this index has {} ({})",
                schema.dimension, schema.model
            )));
        }
        Ok(())
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

fn point(record: &ExportRecord, print: &str) -> Value {
    let mut payload = record.payload.clone();
    payload[FINGERPRINT_KEY] = Value::from(print);
    json!({ "id": record.id, "vector": record.vector, "payload": payload })
}
