//! The tools an agent calls: their schemas, and what each asks of the index.

use crate::{McpServer, Progress};
use quiver_index::{
    chunk_at, definition_of, find_symbols, pack, ChunkRecord, Definition, IndexReport, IndexStatus,
    ModelTokens, SearchFilter, SearchHit, SearchMode, SearchRequest, UpdateState, PACK_CANDIDATES,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

const MAX_K: usize = 100;

/// What a tool answers: text for the model to read, and the same as JSON.
pub struct ToolOutput {
    pub text: String,
    pub structured: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// No such tool: a JSON-RPC error, not a tool result.
    #[error("unknown tool {0:?} (search, read_definition, find_symbol, index_status, reindex)")]
    Unknown(String),
    /// The call failed: a tool result with `isError`, which the agent reads and can act on.
    #[error("{0}")]
    Failed(String),
}

impl ToolError {
    fn failed(error: impl std::fmt::Display) -> ToolError {
        ToolError::Failed(error.to_string())
    }
}

/// The `tools/list` answer.
pub fn list() -> Value {
    json!([
        {
            "name": "search",
            "title": "Search the codebase",
            "description": "Searches the indexed codebase by meaning and by keywords (hybrid by default) and returns the best-matching code with its file, lines and enclosing symbol. Give `max_tokens` to get whole definitions instead of chunks, best first and without repeats, as many as fit that many tokens: use it to fill a context budget. The index follows file edits on its own.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "What to look for: a description in words, an identifier, or a code fragment."},
                    "k": {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": 10, "description": "Number of results (without max_tokens)."},
                    "mode": {"type": "string", "enum": ["hybrid", "vector", "keyword"], "default": "hybrid", "description": "hybrid: meaning and keywords fused; vector: meaning only; keyword: BM25 over identifiers and words."},
                    "languages": {"type": "array", "items": {"type": "string"}, "description": "Only these languages (python, rust, typescript, go, markdown, ...)."},
                    "path": {"type": "string", "description": "Only files whose path matches this glob, e.g. 'src/**/*.rs'."},
                    "max_tokens": {"type": "integer", "minimum": 1, "description": "Return whole definitions, best first, deduplicated, until this many tokens (the embedding model's tokenizer) are used."}
                },
                "required": ["query"],
                "additionalProperties": false
            }
        },
        {
            "name": "read_definition",
            "title": "Read a whole definition",
            "description": "Returns the whole definition (function, method, class with its members) that a search hit or a source line belongs to, with the class or module that encloses it named. Give `chunk_id` from a search result, or `location` as 'path:line'.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "chunk_id": {"type": "string", "description": "A chunk_id from a search or find_symbol result."},
                    "location": {"type": "string", "description": "A path as the index shows it and a 1-based line: 'src/app.py:42'."}
                },
                "additionalProperties": false
            }
        },
        {
            "name": "find_symbol",
            "title": "Find a symbol by name",
            "description": "Finds definitions by name (a function, method, class, type...), exactly or by prefix; `Class.method` names a member. Returns each one's kind, enclosing symbol and location.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "description": "The symbol's name, or `Parent.name`."},
                    "match": {"type": "string", "enum": ["exact", "prefix"], "default": "exact", "description": "exact (case-sensitive) or prefix (case-insensitive for ASCII)."},
                    "k": {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": 20, "description": "Most results to return."}
                },
                "required": ["name"],
                "additionalProperties": false
            }
        },
        {
            "name": "index_status",
            "title": "Index status",
            "description": "What the index holds (files, chunks, model, dimension), the tree it follows, and the background updater's state: runs so far, whether one is running, the last run's changes or error.",
            "inputSchema": {"type": "object", "properties": {}, "additionalProperties": false}
        },
        {
            "name": "reindex",
            "title": "Update the index now",
            "description": "Brings the index up to date with the files now (incremental: only changed files are embedded again) and returns what changed. The index follows edits by itself when watching is on; call this after changes made outside the watched tree or with watching off.",
            "inputSchema": {"type": "object", "properties": {}, "additionalProperties": false}
        }
    ])
}

/// Runs tool `name` with `arguments` (a JSON object or nothing).
pub fn call(
    server: &McpServer,
    name: &str,
    arguments: Value,
    progress: &Progress<'_>,
) -> Result<ToolOutput, ToolError> {
    match name {
        "search" => search(server, parse(name, arguments)?),
        "read_definition" => read_definition(server, parse(name, arguments)?),
        "find_symbol" => find_symbol(server, parse(name, arguments)?),
        "index_status" => {
            parse::<NoArguments>(name, arguments)?;
            index_status(server)
        }
        "reindex" => {
            parse::<NoArguments>(name, arguments)?;
            reindex(server, progress)
        }
        other => Err(ToolError::Unknown(other.to_string())),
    }
}

/// Arguments into their type, the error naming the tool and the field.
fn parse<T: DeserializeOwned>(tool: &str, arguments: Value) -> Result<T, ToolError> {
    let arguments = match arguments {
        Value::Null => json!({}),
        other => other,
    };
    serde_path_to_error::deserialize(arguments).map_err(|e| {
        let field = e.path().to_string();
        let at = if field == "." {
            String::new()
        } else {
            format!(" (at `{field}`)")
        };
        ToolError::Failed(format!("bad arguments for {tool}{at}: {}", e.into_inner()))
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArguments {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchArgs {
    query: String,
    k: Option<usize>,
    mode: Option<String>,
    #[serde(default)]
    languages: Vec<String>,
    path: Option<String>,
    max_tokens: Option<usize>,
}

/// A hit as an agent needs it.
#[derive(Serialize)]
struct Hit<'a> {
    chunk_id: &'a str,
    path: &'a str,
    start_line: usize,
    end_line: usize,
    language: &'a str,
    symbol: Option<&'a str>,
    kind: Option<&'a str>,
    parent: Option<&'a str>,
    score: f64,
    text: &'a str,
}

impl<'a> From<&'a SearchHit> for Hit<'a> {
    fn from(hit: &'a SearchHit) -> Self {
        let chunk = &hit.chunk;
        Hit {
            chunk_id: &chunk.chunk_id,
            path: &chunk.path,
            start_line: chunk.start_line,
            end_line: chunk.end_line,
            language: &chunk.language,
            symbol: chunk.symbol.as_deref(),
            kind: chunk.kind.as_deref(),
            parent: chunk.parent.as_deref(),
            score: hit.score,
            text: &chunk.text,
        }
    }
}

fn search(server: &McpServer, args: SearchArgs) -> Result<ToolOutput, ToolError> {
    if args.query.trim().is_empty() {
        return Err(ToolError::Failed("search: `query` is empty".into()));
    }
    let k = args.k.unwrap_or(10);
    if !(1..=MAX_K).contains(&k) {
        return Err(ToolError::Failed(format!(
            "search: `k` must be 1 to {MAX_K}, not {k}"
        )));
    }
    if args.max_tokens == Some(0) {
        return Err(ToolError::Failed(
            "search: `max_tokens` must be at least 1".into(),
        ));
    }
    let mode: SearchMode = args
        .mode
        .as_deref()
        .unwrap_or("hybrid")
        .parse()
        .map_err(|e: String| ToolError::Failed(format!("search: `mode`: {e}")))?;
    let filter = SearchFilter::from_names(&args.languages, args.path.as_deref())
        .map_err(|e| ToolError::Failed(format!("search: {e}")))?;
    let reader = server.reader()?;
    let snapshot = reader.current().map_err(ToolError::failed)?;
    server.check_follows(&snapshot.settings)?;
    let query_vector = match mode {
        SearchMode::Keyword => None,
        _ => server
            .embedder()
            .embed(&[args.query.as_str()], &snapshot.settings.query_options())
            .map_err(ToolError::failed)?
            .pop(),
    };
    let request = SearchRequest {
        query: &args.query,
        query_vector: query_vector.as_deref(),
        mode,
        k: if args.max_tokens.is_some() {
            PACK_CANDIDATES
        } else {
            k
        },
        filter: &filter,
        keyword_weight: snapshot.settings.keyword_weight,
        priors: true,
    };
    let hits = reader
        .search(&snapshot, &request)
        .map_err(ToolError::failed)?;
    let Some(max_tokens) = args.max_tokens else {
        let listed: Vec<Hit<'_>> = hits.iter().map(Hit::from).collect();
        let mut text = String::new();
        for hit in &hits {
            render_chunk(&mut text, &hit.chunk, Some(hit.score));
        }
        if hits.is_empty() {
            text.push_str("no results");
        }
        return Ok(ToolOutput {
            text,
            structured: json!({"hits": listed}),
        });
    };
    let packed = reader
        .read(|store| pack(store, &hits, max_tokens, &ModelTokens(server.embedder())))
        .map_err(ToolError::failed)?;
    let mut text = format!(
        "{} definitions, {} of {max_tokens} tokens\n\n",
        packed.definitions.len(),
        packed.tokens
    );
    for entry in &packed.definitions {
        render_definition(&mut text, &entry.definition, Some(entry.score));
    }
    Ok(ToolOutput {
        text,
        structured: serde_json::to_value(&packed).map_err(ToolError::failed)?,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadDefinitionArgs {
    chunk_id: Option<String>,
    location: Option<String>,
}

fn read_definition(server: &McpServer, args: ReadDefinitionArgs) -> Result<ToolOutput, ToolError> {
    let reader = server.reader()?;
    let definition = reader
        .read(|store| {
            let chunk = match (&args.chunk_id, &args.location) {
                (Some(id), None) => store
                    .chunk_by_chunk_id(id)?
                    .ok_or_else(|| quiver_index::IndexError::UnknownChunk { id: id.clone() })?,
                (None, Some(location)) => {
                    let (path, line) = parse_location(location)?;
                    chunk_at(store, path, line)?
                }
                _ => {
                    return Err(quiver_index::IndexError::BadFile {
                        path: "read_definition".into(),
                        message: "give exactly one of `chunk_id` and `location`".into(),
                    })
                }
            };
            definition_of(store, &chunk)
        })
        .map_err(ToolError::failed)?;
    let mut text = String::new();
    render_definition(&mut text, &definition, None);
    Ok(ToolOutput {
        text,
        structured: json!({
            "definition": definition,
            "enclosing": definition.parent,
            "module": definition.path,
        }),
    })
}

/// `path:line` into its parts; the path may itself hold colons.
fn parse_location(location: &str) -> quiver_index::Result<(&str, usize)> {
    location
        .rsplit_once(':')
        .and_then(|(path, line)| Some((path, line.trim().parse::<usize>().ok()?)))
        .filter(|(path, line)| !path.is_empty() && *line >= 1)
        .ok_or_else(|| quiver_index::IndexError::BadFile {
            path: location.into(),
            message: "a location is `path:line`, with a line from 1".into(),
        })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FindSymbolArgs {
    name: String,
    #[serde(rename = "match")]
    matching: Option<String>,
    k: Option<usize>,
}

fn find_symbol(server: &McpServer, args: FindSymbolArgs) -> Result<ToolOutput, ToolError> {
    if args.name.trim().is_empty() {
        return Err(ToolError::Failed("find_symbol: `name` is empty".into()));
    }
    let prefix = match args.matching.as_deref().unwrap_or("exact") {
        "exact" => false,
        "prefix" => true,
        other => {
            return Err(ToolError::Failed(format!(
                "find_symbol: `match` is exact or prefix, not {other:?}"
            )))
        }
    };
    let k = args.k.unwrap_or(20);
    if !(1..=MAX_K).contains(&k) {
        return Err(ToolError::Failed(format!(
            "find_symbol: `k` must be 1 to {MAX_K}, not {k}"
        )));
    }
    let reader = server.reader()?;
    let found = reader
        .read(|store| find_symbols(store, &args.name, prefix, k))
        .map_err(ToolError::failed)?;
    let mut text = String::new();
    for f in &found {
        text.push_str(&format!(
            "{}:{}-{}  {}  [{}]\n",
            f.path,
            f.start_line,
            f.end_line,
            match &f.kind {
                Some(kind) =>
                    quiver_chunk::symbol_label(Some(kind), f.parent.as_deref(), &f.symbol),
                None => format!(
                    "{} (encloses others)",
                    quiver_chunk::symbol_label(None, f.parent.as_deref(), &f.symbol)
                ),
            },
            f.chunk_id
        ));
    }
    if found.is_empty() {
        text.push_str(&format!("no symbol named {:?}", args.name));
    }
    Ok(ToolOutput {
        text,
        structured: json!({"symbols": found}),
    })
}

#[derive(Serialize)]
struct StatusOutput {
    index: Option<IndexStatus>,
    watching: bool,
    updates: UpdateState,
}

fn index_status(server: &McpServer) -> Result<ToolOutput, ToolError> {
    let index = match server.reader() {
        Ok(reader) => Some(
            reader
                .read(|store| store.status())
                .map_err(ToolError::failed)?,
        ),
        Err(_) => None,
    };
    let status = StatusOutput {
        index,
        watching: server.watching(),
        updates: server.updater().state(),
    };
    let text = serde_json::to_string_pretty(&status).map_err(ToolError::failed)?;
    Ok(ToolOutput {
        structured: serde_json::to_value(&status).map_err(ToolError::failed)?,
        text,
    })
}

fn reindex(server: &McpServer, progress: &Progress<'_>) -> Result<ToolOutput, ToolError> {
    let report: IndexReport = server
        .updater()
        .update(progress)
        .map_err(ToolError::failed)?;
    let mut text = format!("{}\n", report.summary());
    for path in &report.changed_files {
        text.push_str(&format!("changed: {path}\n"));
    }
    for path in &report.removed_files {
        text.push_str(&format!("removed: {path}\n"));
    }
    Ok(ToolOutput {
        text,
        structured: serde_json::to_value(&report).map_err(ToolError::failed)?,
    })
}

fn render_chunk(out: &mut String, chunk: &ChunkRecord, score: Option<f64>) {
    let label = chunk.symbol.as_deref().map(|symbol| {
        quiver_chunk::symbol_label(chunk.kind.as_deref(), chunk.parent.as_deref(), symbol)
    });
    render(
        out,
        &chunk.path,
        (chunk.start_line, chunk.end_line),
        label.as_deref(),
        &format!("chunk_id {}", chunk.chunk_id),
        score,
        &chunk.language,
        &chunk.text,
    );
}

fn render_definition(out: &mut String, definition: &Definition, score: Option<f64>) {
    let label = definition.symbol.as_ref().map(|_| definition.label());
    let ids = definition.chunk_ids.join(", ");
    render(
        out,
        &definition.path,
        (definition.start_line, definition.end_line),
        label.as_deref(),
        &format!("chunks {ids}"),
        score,
        &definition.language,
        &definition.text,
    );
}

#[allow(clippy::too_many_arguments)]
fn render(
    out: &mut String,
    path: &str,
    (start, end): (usize, usize),
    label: Option<&str>,
    ids: &str,
    score: Option<f64>,
    language: &str,
    text: &str,
) {
    out.push_str(&format!("{path}:{start}-{end}"));
    if let Some(label) = label {
        out.push_str(&format!("  {label}"));
    }
    if let Some(score) = score {
        out.push_str(&format!("  (score {score:.4})"));
    }
    out.push_str(&format!("  [{ids}]\n```{language}\n{text}"));
    if !text.ends_with('\n') {
        out.push('\n');
    }
    out.push_str("```\n\n");
}
