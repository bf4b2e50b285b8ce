//! Export to a PostgreSQL table with pgvector columns, upserted by chunk id in one
//! transaction.
//!
//! The table: `id uuid PRIMARY KEY`, `embedding vector(N)` (the chunk's text) and `signature
//! vector(N)` (its signature, NULL for a chunk without one), each with an HNSW (or IVFFlat)
//! index for cosine distance; `keywords tsvector` (Quiver's keyword terms, names weighted `A`
//! and body `D`) with a GIN index; the payload fields users filter on as columns (`text`,
//! `path`, `language`, `symbol`, `start_line`, `end_line`, `source_subdir`, `collection`,
//! `model`), the whole payload as `jsonb`, and the chunk's fingerprint. The table's comment
//! records the model and width, checked before any later export writes. A table from an
//! earlier export (no `signature` or `keywords`) gets the new columns, and every row again, in
//! the export's transaction.
//!
//! [`search_sql`] is the SQL docs/exports.md gives for each search mode.

use crate::{send_changes, ExportError, Progress, Result, Schema, StoreHit, StoreQuery, Summary};
use ::postgres::{Client, NoTls, Transaction};
use quiver_index::keywords::{self, NAMES_WEIGHT};
use quiver_index::{IndexSettings, SearchMode, Store, FUSION_DEPTH, KEYWORD_OVERLAP};
use serde_json::{json, Value};
use std::collections::HashMap;

/// The text-search configuration of the `keywords` column and of the queries: English
/// stemming and stop words over the terms Quiver splits identifiers into.
pub const TEXT_SEARCH_CONFIG: &str = "english";
/// `hnsw.ef_search` for the searches (pgvector's default is 40): measured with
/// `quiver eval --store`, a wider search brings the vector ranking to Quiver's exact one.
pub const SEARCH_EF: usize = 400;
/// `ivfflat.probes` for the searches of an IVFFlat table (100 lists; pgvector's default probes
/// one): a tenth of the lists.
pub const IVFFLAT_PROBES: usize = 10;

/// How the vector columns are indexed: the PostgreSQL index access method (`--vector-index`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IndexMethod {
    /// Graph index: best recall/speed, slower to build. pgvector ≥ 0.5.
    #[default]
    Hnsw,
    /// List index: faster to build; its lists are fixed from the rows present when it is built.
    IvfFlat,
}

pub struct PostgresExport {
    client: Client,
    /// The quoted, possibly schema-qualified name, ready for SQL.
    table_sql: String,
    /// As the user gave it, for messages.
    table: String,
    index: IndexMethod,
}

/// Rows sent between progress reports (all in the one transaction).
const SEND_BATCH: usize = 256;

impl PostgresExport {
    /// `url`: a libpq-style URL or key=value string (`postgres://user@host:5432/db`).
    pub fn connect(url: &str, table: &str, index: IndexMethod) -> Result<Self> {
        let table_sql = quote_table_name(table)?;
        let failed = |source| ExportError::Postgres {
            table: table.to_string(),
            source,
        };
        let mut client = Client::connect(url, NoTls).map_err(failed)?;
        // The search effort of this session's queries (an export runs none).
        client
            .batch_execute(&format!(
                "SET hnsw.ef_search = {SEARCH_EF}; SET ivfflat.probes = {IVFFLAT_PROBES}"
            ))
            .map_err(failed)?;
        Ok(PostgresExport {
            client,
            table_sql,
            table: table.to_string(),
            index,
        })
    }

    /// Brings the table to `records` in one transaction: creates the extension, table and
    /// index when missing (refusing a width or model mismatch), upserts new and changed rows,
    /// deletes rows the index no longer has.
    pub fn sync(
        &mut self,
        schema: &Schema,
        store: &Store,
        settings: &IndexSettings,
        progress: Progress<'_>,
    ) -> Result<Summary> {
        let table = self.table.clone();
        let db = |source| ExportError::Postgres {
            table: table.clone(),
            source,
        };
        let table_sql = self.table_sql.clone();
        let index = self.index;
        let mut transaction = self.client.transaction().map_err(db)?;
        transaction
            .batch_execute("CREATE EXTENSION IF NOT EXISTS vector")
            .map_err(db)?;
        match stored_schema(&mut transaction, &table_sql).map_err(db)? {
            Some(stored) => {
                check_schema(&table, &stored, schema)?;
                if !stored.has_keywords {
                    tracing::info!(%table, "adding the signature and keywords columns");
                    add_layout_2_columns(&mut transaction, &table_sql, schema, index)
                        .map_err(db)?;
                }
            }
            None => create_table(&mut transaction, &table_sql, schema, index).map_err(db)?,
        }
        let existing = existing_rows(&mut transaction, &table_sql).map_err(db)?;
        let upsert = transaction
            .prepare(&format!(
                "INSERT INTO {table_sql} (id, embedding, text, path, language, symbol, start_line, \
                 end_line, source_subdir, collection, model, payload, fingerprint, signature, \
                 keywords) \
                 VALUES ($1::text::uuid, $2::real[]::vector, $3, $4, $5, $6, $7, $8, $9, $10, \
                 $11, $12::text::jsonb, $13, $14::real[]::vector, \
                 setweight(to_tsvector('{TEXT_SEARCH_CONFIG}', $15), 'A') || \
                 setweight(to_tsvector('{TEXT_SEARCH_CONFIG}', $16), 'D')) \
                 ON CONFLICT (id) DO UPDATE SET embedding = EXCLUDED.embedding, \
                 signature = EXCLUDED.signature, keywords = EXCLUDED.keywords, \
                 text = EXCLUDED.text, path = EXCLUDED.path, language = EXCLUDED.language, \
                 symbol = EXCLUDED.symbol, start_line = EXCLUDED.start_line, \
                 end_line = EXCLUDED.end_line, source_subdir = EXCLUDED.source_subdir, \
                 collection = EXCLUDED.collection, model = EXCLUDED.model, \
                 payload = EXCLUDED.payload, fingerprint = EXCLUDED.fingerprint"
            ))
            .map_err(db)?;
        let plan = send_changes(
            store,
            settings,
            &existing,
            "",
            SEND_BATCH,
            progress,
            |batch| {
                for (record, print) in batch {
                    let field = |name: &str| record.payload[name].as_str().map(str::to_string);
                    let line = |name: &str| record.payload[name].as_i64().map(|n| n as i32);
                    let (names, text) = record.keyword_texts();
                    transaction
                        .execute(
                            &upsert,
                            &[
                                &record.id,
                                &record.vector,
                                &field("text"),
                                &field("path"),
                                &field("language"),
                                &field("symbol"),
                                &line("start_line"),
                                &line("end_line"),
                                &field("source_subdir"),
                                &field("collection"),
                                &field("model"),
                                &record.payload.to_string(),
                                print,
                                &record.signature,
                                &keywords::terms(&names),
                                &keywords::terms(text),
                            ],
                        )
                        .map_err(db)?;
                }
                Ok(())
            },
        )?;
        if !plan.deletes.is_empty() {
            transaction
                .execute(
                    &format!("DELETE FROM {table_sql} WHERE id::text = ANY($1)"),
                    &[&plan.deletes],
                )
                .map_err(db)?;
        }
        transaction.commit().map_err(db)?;
        Ok(plan.summary())
    }
}

/// The model and width recorded on an existing table, or `None` when there is no such table.
fn stored_schema(
    transaction: &mut Transaction<'_>,
    table_sql: &str,
) -> std::result::Result<Option<StoredSchema>, ::postgres::Error> {
    let row = transaction.query_one(
        "SELECT to_regclass($1)::text, obj_description(to_regclass($1), 'pg_class'), \
         (SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
          WHERE attrelid = to_regclass($1) AND attname = 'embedding' AND NOT attisdropped), \
         EXISTS (SELECT 1 FROM pg_attribute \
          WHERE attrelid = to_regclass($1) AND attname = 'keywords' AND NOT attisdropped)",
        &[&table_sql],
    )?;
    let exists: Option<String> = row.get(0);
    if exists.is_none() {
        return Ok(None);
    }
    let comment: Option<String> = row.get(1);
    let column: Option<String> = row.get(2);
    let has_keywords: bool = row.get(3);
    Ok(Some(StoredSchema {
        comment,
        column,
        has_keywords,
    }))
}

struct StoredSchema {
    /// The table's comment: Quiver's JSON record of model and width, for tables it created.
    comment: Option<String>,
    /// `vector(384)`, or another type, or none.
    column: Option<String>,
    /// Whether it has the `signature` and `keywords` columns (exports before them had not).
    has_keywords: bool,
}

fn check_schema(table: &str, stored: &StoredSchema, schema: &Schema) -> Result<()> {
    let refused = |message: String| ExportError::Refused {
        destination: format!("PostgreSQL table {table}"),
        message,
    };
    let wanted_column = format!("vector({})", schema.dimension);
    match stored.column.as_deref() {
        Some(column) if column == wanted_column => {}
        Some(column) => {
            return Err(refused(format!(
                "its `embedding` column is {column}; this index has {wanted_column} ({})",
                schema.model
            )))
        }
        None => {
            return Err(refused(
                "it exists without an `embedding` column: not a table Quiver exported".into(),
            ))
        }
    }
    let recorded: Option<Value> = stored
        .comment
        .as_deref()
        .and_then(|comment| serde_json::from_str(comment).ok());
    let model = recorded
        .as_ref()
        .and_then(|value| value["quiver_model"].as_str());
    match model {
        Some(model) if model == schema.model => Ok(()),
        Some(model) => Err(refused(format!(
            "it holds vectors of model {model:?}; this index uses {:?}. Export to a new table",
            schema.model
        ))),
        None => Err(refused(
            "its comment does not record a Quiver model: not a table Quiver exported".into(),
        )),
    }
}

fn create_table(
    transaction: &mut Transaction<'_>,
    table_sql: &str,
    schema: &Schema,
    index: IndexMethod,
) -> std::result::Result<(), ::postgres::Error> {
    let dimension = schema.dimension;
    let comment = json!({
        "quiver_model": schema.model,
        "dimension": dimension,
        "quiver_version": env!("CARGO_PKG_VERSION"),
    })
    .to_string();
    transaction.batch_execute(&format!(
        "CREATE TABLE {table_sql} (
            id uuid PRIMARY KEY,
            embedding vector({dimension}) NOT NULL,
            signature vector({dimension}),
            keywords tsvector,
            text text,
            path text,
            language text,
            symbol text,
            start_line integer,
            end_line integer,
            source_subdir text,
            collection text,
            model text,
            payload jsonb NOT NULL,
            fingerprint text NOT NULL
        );
        CREATE INDEX ON {table_sql} USING {};
        CREATE INDEX ON {table_sql} USING {};
        CREATE INDEX ON {table_sql} USING gin (keywords);
        CREATE INDEX ON {table_sql} (path);
        COMMENT ON TABLE {table_sql} IS {};",
        index.method("embedding"),
        index.method("signature"),
        quote_literal(&comment)
    ))
}

/// Brings a table of an earlier export to this one's columns, marking every row to be sent
/// again.
fn add_layout_2_columns(
    transaction: &mut Transaction<'_>,
    table_sql: &str,
    schema: &Schema,
    index: IndexMethod,
) -> std::result::Result<(), ::postgres::Error> {
    let dimension = schema.dimension;
    transaction.batch_execute(&format!(
        "ALTER TABLE {table_sql} ADD COLUMN IF NOT EXISTS signature vector({dimension}),
             ADD COLUMN IF NOT EXISTS keywords tsvector;
         CREATE INDEX ON {table_sql} USING {};
         CREATE INDEX ON {table_sql} USING gin (keywords);
         UPDATE {table_sql} SET fingerprint = 'layout 1';",
        index.method("signature"),
    ))
}

impl IndexMethod {
    /// The index's `USING` clause for a vector column.
    fn method(self, column: &str) -> String {
        match self {
            // Wider than pgvector's defaults (m 16, ef_construction 64): query embeddings lie
            // apart from the chunks', and on the eval corpus (EmbeddingGemma, 5,825 chunks) the
            // defaults found 92.5 % of the exact top 10 even at ef_search 400; these, 100 %.
            IndexMethod::Hnsw => {
                format!("hnsw ({column} vector_cosine_ops) WITH (m = 32, ef_construction = 200)")
            }
            IndexMethod::IvfFlat => {
                format!("ivfflat ({column} vector_cosine_ops) WITH (lists = 100)")
            }
        }
    }
}

/// The SQL that searches an exported table as `quiver search --mode MODE` searches the index
/// (docs/exports.md prints it for a table named `chunks`). Parameters: vector mode `$1` the
/// query's embedding (`real[]`), `$2` k; keyword mode `$1` the query's terms
/// ([`keywords::terms`], or the query's own words), `$2` k; hybrid `$1` embedding, `$2` terms,
/// `$3` the keyword weight, `$4` k. Each row: `chunk_id`, `score`.
///
/// Vector: the better of the text and signature cosines, from the best k of each column's
/// index. Keyword: `ts_rank` with the names weighted as Quiver's BM25 weighs them, normalised
/// by the log of the chunk's length (PostgreSQL has no BM25). Hybrid: Quiver's fusion (each
/// ranking's best 100 rescaled to 0..1, combined by [`quiver_index::fused_score`]).
pub fn search_sql(mode: SearchMode, table_sql: &str) -> String {
    let vector = |query: &str, limit: &str| {
        format!(
            "SELECT id, max(score) AS score FROM (
    (SELECT id, 1 - (embedding <=> {query}) AS score FROM {table_sql}
     ORDER BY embedding <=> {query} LIMIT {limit})
    UNION ALL
    (SELECT id, 1 - (signature <=> {query}) AS score FROM {table_sql}
     WHERE signature IS NOT NULL ORDER BY signature <=> {query} LIMIT {limit})
  ) best GROUP BY id ORDER BY score DESC LIMIT {limit}"
        )
    };
    let body_weight = 1.0 / NAMES_WEIGHT;
    let keyword = |terms: &str, limit: &str| {
        format!(
            "SELECT id, ts_rank('{{{body_weight:.6}, 0, 0, 1}}', keywords, query, 1)::float8 AS score
  FROM {table_sql},
    (SELECT replace(plainto_tsquery('{TEXT_SEARCH_CONFIG}', {terms})::text, '&', '|')::tsquery
     AS query) q
  WHERE keywords @@ query ORDER BY score DESC LIMIT {limit}"
        )
    };
    let chunk_ids = |ranking: &str| {
        format!(
            "SELECT t.payload->>'chunk_id' AS chunk_id, r.score::float8 AS score FROM (
  {ranking}
) r JOIN {table_sql} t USING (id) ORDER BY r.score DESC"
        )
    };
    match mode {
        SearchMode::Vector => chunk_ids(&vector("$1::real[]::vector", "$2")),
        SearchMode::Keyword => chunk_ids(&keyword("$1", "$2")),
        SearchMode::Hybrid => {
            let depth = FUSION_DEPTH.to_string();
            format!(
                "WITH v AS ({}),
k AS ({}),
rescaled AS (
  SELECT id, CASE WHEN max(score) OVER () > min(score) OVER ()
    THEN (score - min(score) OVER ()) / (max(score) OVER () - min(score) OVER ())
    ELSE 1 END AS v, 0::float8 AS k FROM v
  UNION ALL
  SELECT id, 0::float8, CASE WHEN max(score) OVER () > min(score) OVER ()
    THEN (score - min(score) OVER ()) / (max(score) OVER () - min(score) OVER ())
    ELSE 1 END FROM k),
fused AS (SELECT id, sum(v) + $3 * sum(k) * (1 - {KEYWORD_OVERLAP:?} * sum(v)) AS score
  FROM rescaled GROUP BY id ORDER BY score DESC LIMIT $4)
{}",
                vector("$1::real[]::vector", &depth),
                keyword("$2", &depth),
                chunk_ids("SELECT id, score FROM fused")
            )
        }
    }
}

impl PostgresExport {
    /// Runs [`search_sql`] for `query`; the best `query.k` chunks, best first.
    pub fn search(&mut self, query: &StoreQuery<'_>) -> Result<Vec<StoreHit>> {
        let sql = search_sql(query.mode, &self.table_sql);
        let k = query.k as i64;
        let terms = keywords::terms(query.text);
        let vector: Vec<f32> = query.vector.to_vec();
        let rows = match query.mode {
            SearchMode::Vector => self.client.query(&sql, &[&vector, &k]),
            SearchMode::Keyword => self.client.query(&sql, &[&terms, &k]),
            SearchMode::Hybrid => self
                .client
                .query(&sql, &[&vector, &terms, &query.keyword_weight, &k]),
        };
        let rows = rows.map_err(|source| ExportError::Postgres {
            table: self.table.clone(),
            source,
        })?;
        Ok(rows
            .iter()
            .map(|row| StoreHit {
                chunk_id: row.get(0),
                score: row.get(1),
            })
            .collect())
    }
}

fn existing_rows(
    transaction: &mut Transaction<'_>,
    table_sql: &str,
) -> std::result::Result<HashMap<String, String>, ::postgres::Error> {
    Ok(transaction
        .query(
            &format!("SELECT id::text, fingerprint FROM {table_sql}"),
            &[],
        )?
        .into_iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect())
}

/// `name` or `schema.name`, each part letters, digits and `_`, quoted for SQL.
fn quote_table_name(name: &str) -> Result<String> {
    let bad = |message| ExportError::BadName {
        what: "--table",
        name: name.to_string(),
        message,
    };
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() > 2 {
        return Err(bad("use `table` or `schema.table`"));
    }
    let valid = |part: &&str| {
        !part.is_empty()
            && part.len() <= 63
            && !part.starts_with(|c: char| c.is_ascii_digit())
            && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if !parts.iter().all(valid) {
        return Err(bad(
            "each part must be letters, digits and '_', not starting with a digit",
        ));
    }
    Ok(parts
        .iter()
        .map(|part| format!("\"{part}\""))
        .collect::<Vec<_>>()
        .join("."))
}

fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_give_the_sql_the_search_runs() {
        let docs = include_str!("../../../docs/exports.md");
        for mode in [SearchMode::Vector, SearchMode::Keyword, SearchMode::Hybrid] {
            let sql = search_sql(mode, "chunks");
            assert!(
                docs.contains(&sql),
                "docs/exports.md lacks the {mode:?} query:\n{sql}"
            );
        }
    }

    #[test]
    fn table_names_are_checked_and_quoted() {
        assert_eq!(quote_table_name("chunks").unwrap(), "\"chunks\"");
        assert_eq!(
            quote_table_name("rag.code_chunks").unwrap(),
            "\"rag\".\"code_chunks\""
        );
        for bad in ["", "a.b.c", "x; DROP TABLE y", "1abc", "a\"b", "sch."] {
            assert!(quote_table_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_stored_schema_must_match() {
        let schema = Schema {
            model: "m".into(),
            dimension: 3,
        };
        let stored = |column: &str, model: &str| StoredSchema {
            has_keywords: true,
            column: Some(column.into()),
            comment: Some(json!({ "quiver_model": model }).to_string()),
        };
        assert!(check_schema("t", &stored("vector(3)", "m"), &schema).is_ok());
        let wrong_width = check_schema("t", &stored("vector(4)", "m"), &schema).unwrap_err();
        assert!(
            wrong_width.to_string().contains("vector(4)"),
            "{wrong_width}"
        );
        let wrong_model = check_schema("t", &stored("vector(3)", "other"), &schema).unwrap_err();
        assert!(
            wrong_model.to_string().contains("\"other\""),
            "{wrong_model}"
        );
        let foreign = StoredSchema {
            has_keywords: true,
            column: Some("vector(3)".into()),
            comment: None,
        };
        let foreign = check_schema("t", &foreign, &schema).unwrap_err();
        assert!(
            matches!(foreign, ExportError::Refused { .. })
                && foreign.to_string().contains("not a table Quiver exported"),
            "{foreign}"
        );
    }
}
