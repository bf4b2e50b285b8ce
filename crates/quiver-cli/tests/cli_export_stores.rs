//! `quiver export --to postgres` against a real PostgreSQL with pgvector (started by
//! `scripts/test-postgres`, or the one QUIVER_TEST_POSTGRES_URL names), and `--to qdrant`
//! against the stand-in in `common/fake_qdrant.rs`, or a real Qdrant when QDRANT_URL is set.

mod common;

use common::{
    fake_qdrant, index, model_dir, postgres_url, qdrant_url, quiver, search, temp_dir, write,
    TempDir,
};
use postgres::{Client, NoTls};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;

const ENGINE_RS: &str = r#"
/// Retries a failed network request with exponential backoff and jitter.
pub fn retry_with_backoff(attempts: u32) -> Result<(), Error> {
    for attempt in 0..attempts {
        if send().is_ok() { return Ok(()); }
        sleep(Duration::from_millis(100 << attempt));
    }
    Err(Error::GaveUp)
}

/// Parses a TOML configuration file into settings.
pub fn parse_settings(text: &str) -> Settings {
    toml::from_str(text).unwrap_or_default()
}
"#;

const STORE_PY: &str = r#"
def save_user(db, user):
    """Insert or update a user row in the database."""
    db.execute("INSERT INTO users VALUES (?, ?)", (user.id, user.name))


def hash_password(password, salt):
    """Derive a password hash with PBKDF2 and a random salt."""
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 100_000)
"#;

fn tree(name: &str) -> TempDir {
    let root = temp_dir(name);
    write(&root, "src/engine.rs", ENGINE_RS);
    write(&root, "app/store.py", STORE_PY);
    write(
        &root,
        "docs/install.md",
        "# Install\n\nDownload the archive, unpack it and put the binary on your PATH.\n",
    );
    root
}

fn export(root: &Path, to: &[&str], extra: &[&str]) -> Output {
    let index_dir = root.join(".quiver");
    let mut args = vec!["export", index_dir.to_str().expect("utf-8"), "--to"];
    args.extend_from_slice(to);
    args.extend_from_slice(extra);
    quiver(&args, "")
}

fn succeeded(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(output.status.success(), "export failed: {stderr}");
    stderr
}

/// Chunk ids of the index, from its JSONL export.
fn index_chunk_ids(root: &Path) -> BTreeSet<String> {
    let file = root.join("all.jsonl");
    succeeded(&export(
        root,
        &["jsonl", file.to_str().expect("utf-8")],
        &[],
    ));
    std::fs::read_to_string(&file)
        .expect("written")
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line).expect("JSON");
            value["payload"]["chunk_id"]
                .as_str()
                .expect("chunk id")
                .to_string()
        })
        .collect()
}

fn query_vector(text: &str) -> Vec<f32> {
    let model = model_dir();
    let output = quiver(
        &["embed", "--model", model.to_str().expect("utf-8")],
        &format!("{text}\n"),
    );
    assert!(output.status.success());
    let line: Value = serde_json::from_slice(&output.stdout).expect("JSON line");
    serde_json::from_value(line["embedding"].clone()).expect("vector")
}

fn chunk_ids_in(client: &mut Client, table: &str) -> BTreeSet<String> {
    client
        .query(&format!("SELECT payload->>'chunk_id' FROM {table}"), &[])
        .expect("select")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[test]
fn postgres_export_is_searchable_incremental_and_checked() {
    let url = postgres_url();
    let table = format!("chunks_{}", std::process::id());
    let root = tree("export-postgres");
    index(&root, &[]);
    let first = succeeded(&export(&root, &["postgres", &url], &["--table", &table]));
    assert!(first.contains("deleted 0, left 0 unchanged"), "{first}");
    let mut client = Client::connect(&url, NoTls).expect("connect");
    assert_eq!(chunk_ids_in(&mut client, &table), index_chunk_ids(&root));

    // Nearest neighbours by SQL, through the HNSW index (on a table this small the planner
    // would rather scan it) = Quiver's own vector search.
    client
        .batch_execute("SET enable_seqscan = off")
        .expect("set");
    let query = "retry a request that failed";
    let ours: Vec<String> = search(
        &root,
        query,
        &["--mode", "vector", "-k", "4", "--no-priors"],
    )
    .iter()
    .map(|hit| hit["chunk"]["chunk_id"].as_str().expect("id").to_string())
    .collect();
    let vector = query_vector(query);
    let sql = format!(
        "SELECT payload->>'chunk_id' FROM {table} ORDER BY embedding <=> $1::real[]::vector LIMIT 4"
    );
    let plan: Vec<String> = client
        .query(&format!("EXPLAIN {sql}"), &[&vector])
        .expect("explain")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(plan.join("\n").contains("embedding_idx"), "{plan:?}");
    let theirs: Vec<String> = client
        .query(&sql, &[&vector])
        .expect("search")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(ours, theirs);
    // Nothing changed: nothing sent.
    let again = succeeded(&export(&root, &["postgres", &url], &["--table", &table]));
    assert!(again.contains("sent 0 new or changed chunks"), "{again}");

    // One file changed, one removed: only those rows move.
    write(
        &root,
        "app/store.py",
        STORE_PY.replace("PBKDF2", "scrypt").as_str(),
    );
    std::fs::remove_file(root.join("docs/install.md")).expect("remove");
    index(&root, &[]);
    let changed = succeeded(&export(&root, &["postgres", &url], &["--table", &table]));
    assert!(!changed.contains("sent 0 "), "{changed}");
    assert!(!changed.contains("deleted 0,"), "{changed}");
    assert_eq!(chunk_ids_in(&mut client, &table), index_chunk_ids(&root));

    // An index of another width is refused before anything is written.
    let narrow = tree("export-postgres-narrow");
    index(&narrow, &["--dimensions", "128"]);
    let before = chunk_ids_in(&mut client, &table);
    let refused = export(&narrow, &["postgres", &url], &["--table", &table]);
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("vector(384)"), "{message}");
    assert_eq!(chunk_ids_in(&mut client, &table), before);

    // A failure half-way leaves the table as it was: a trigger rejects one changed row.
    client
        .batch_execute(&format!(
            "CREATE FUNCTION reject_{table}() RETURNS trigger AS $$ BEGIN \
               IF NEW.text LIKE '%argon2%' THEN RAISE EXCEPTION 'rejected by test'; END IF; \
               RETURN NEW; END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER reject BEFORE INSERT OR UPDATE ON {table} \
               FOR EACH ROW EXECUTE FUNCTION reject_{table}();"
        ))
        .expect("trigger");
    let fingerprints = |client: &mut Client| -> Vec<(String, String)> {
        client
            .query(
                &format!("SELECT id::text, fingerprint FROM {table} ORDER BY id"),
                &[],
            )
            .expect("select")
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect()
    };
    let before = fingerprints(&mut client);
    write(
        &root,
        "src/engine.rs",
        ENGINE_RS.replace("jitter", "full jitter"),
    );
    write(&root, "app/store.py", STORE_PY.replace("PBKDF2", "argon2"));
    index(&root, &[]);
    let failed = export(&root, &["postgres", &url], &["--table", &table]);
    assert!(!failed.status.success());
    assert!(String::from_utf8_lossy(&failed.stderr).contains("rejected by test"));
    assert_eq!(fingerprints(&mut client), before);
    client
        .batch_execute(&format!(
            "DROP TABLE {table}; DROP FUNCTION reject_{table}();"
        ))
        .expect("drop");
}

#[test]
fn qdrant_export_retries_what_a_retry_can_fix() {
    // The stand-in server is only for what a real one will not do on demand: fail with 503.
    let qdrant = fake_qdrant::start();
    let root = tree("export-qdrant");
    index(&root, &[]);
    qdrant.state.lock().expect("lock").failing_upserts = 2;
    let to = ["qdrant", qdrant.url.as_str()];
    let first = succeeded(&export(&root, &to, &["--collection", "code"]));
    assert!(first.contains("deleted 0, left 0 unchanged"), "{first}");
    let state = qdrant.state.lock().expect("lock");
    assert_eq!(state.failing_upserts, 0, "both failures were met");
    let stored: BTreeSet<String> = state.collections["code"]
        .points
        .values()
        .map(|(_, payload)| payload["chunk_id"].as_str().expect("id").to_string())
        .collect();
    drop(state);
    assert_eq!(stored, index_chunk_ids(&root));
}

const FIDELITY_QUERIES: [&str; 20] = [
    "split an identifier into words",
    "camelCase to separate words",
    "detect the programming language from a file extension",
    "parse source code into a syntax tree",
    "chunk a markdown document by headings",
    "context header prepended to each chunk",
    "token budget for a chunk",
    "split a long function into pieces",
    "signature of a function definition",
    "enclosing class of a method",
    "line numbers of a chunk",
    "byte offsets start and end",
    "merge small neighbouring definitions",
    "prose paragraphs and sentences",
    "language name aliases like py and rust",
    "tree-sitter grammar for each language",
    "fixed windows of lines",
    "count tokens with the tokenizer",
    "docstring comments above a function",
    "segment text at blank lines",
];

/// The chunk ids and scores of `quiver search --mode MODE -k 10` for each query.
fn quiver_rankings(root: &Path, mode: &str) -> Vec<Vec<(String, f64)>> {
    FIDELITY_QUERIES
        .iter()
        .map(|query| {
            search(root, query, &["--mode", mode, "-k", "10", "--no-priors"])
                .iter()
                .map(|hit| {
                    (
                        hit["chunk"]["chunk_id"].as_str().expect("id").to_string(),
                        hit["score"].as_f64().expect("score"),
                    )
                })
                .collect()
        })
        .collect()
}

fn store_rankings(
    target: &quiver_export::Target,
    mode: quiver_index::SearchMode,
    vectors: &[Vec<f32>],
) -> Vec<Vec<(String, f64)>> {
    let mut client = quiver_export::StoreClient::connect(target).expect("connect");
    FIDELITY_QUERIES
        .iter()
        .zip(vectors)
        .map(|(query, vector)| {
            let hits = client
                .search(&quiver_export::StoreQuery {
                    text: query,
                    vector,
                    mode,
                    k: 10,
                    keyword_weight: quiver_index::DEFAULT_KEYWORD_WEIGHT,
                })
                .expect("store search");
            hits.into_iter().map(|h| (h.chunk_id, h.score)).collect()
        })
        .collect()
}

/// Asserts two vector rankings are the same chunks in the same order, where scores differ.
fn assert_same_ranking(store: &str, ours: &[Vec<(String, f64)>], theirs: &[Vec<(String, f64)>]) {
    for ((query, ours), theirs) in FIDELITY_QUERIES.iter().zip(ours).zip(theirs) {
        assert_eq!(ours.len(), theirs.len(), "{store}, {query:?}");
        for (i, ((our_id, our_score), (their_id, their_score))) in
            ours.iter().zip(theirs).enumerate()
        {
            assert!(
                (our_score - their_score).abs() < 1e-4,
                "{store}, {query:?}, rank {}: score {our_score} here, {their_score} there",
                i + 1
            );
            // Equal scores may come in either order; any other difference is a wrong ranking.
            let tied = ours
                .iter()
                .chain(theirs)
                .any(|(id, score)| id == their_id && (score - our_score).abs() < 1e-5);
            assert!(
                our_id == their_id || tied,
                "{store}, {query:?}, rank {}: {our_id} here, {their_id} there\n{ours:?}\n{theirs:?}",
                i + 1
            );
        }
    }
}

/// Mean share of Quiver's top 10 that the store's top 10 also holds.
fn overlap(ours: &[Vec<(String, f64)>], theirs: &[Vec<(String, f64)>]) -> f64 {
    let shares: Vec<f64> = ours
        .iter()
        .zip(theirs)
        .filter(|(ours, _)| !ours.is_empty())
        .map(|(ours, theirs)| {
            let theirs: BTreeSet<&String> = theirs.iter().map(|(id, _)| id).collect();
            let common = ours.iter().filter(|(id, _)| theirs.contains(id)).count();
            common as f64 / ours.len() as f64
        })
        .collect();
    shares.iter().sum::<f64>() / shares.len().max(1) as f64
}

#[test]
fn exported_stores_rank_as_quiver_does() {
    use quiver_index::SearchMode;
    let Some(qdrant) = qdrant_url() else {
        return;
    };
    let postgres = postgres_url();
    // A real codebase: this repository's chunker, about a hundred chunks.
    let root = temp_dir("export-fidelity");
    let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("../quiver-chunk/src");
    common::copy_tree(&sources, &root.join("src"));
    index(&root, &[]);
    let collection = format!("quiver_fidelity_{}", std::process::id());
    let table = format!("fidelity_{}", std::process::id());
    succeeded(&export(
        &root,
        &["qdrant", &qdrant],
        &["--collection", &collection],
    ));
    succeeded(&export(
        &root,
        &["postgres", &postgres],
        &["--table", &table],
    ));
    // Nothing changed: nothing sent (the keyword weights' average length is kept).
    let again = succeeded(&export(
        &root,
        &["qdrant", &qdrant],
        &["--collection", &collection],
    ));
    assert!(again.contains("sent 0 new or changed chunks"), "{again}");
    // An index of another width is refused before anything is written.
    let narrow = tree("export-qdrant-narrow");
    index(&narrow, &["--dimensions", "128"]);
    let refused = export(
        &narrow,
        &["qdrant", &qdrant],
        &["--collection", &collection],
    );
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("384-dimensional"), "{message}");

    let model = model_dir();
    let embedded = quiver(
        &["embed", "--model", model.to_str().expect("utf-8")],
        &FIDELITY_QUERIES.join("\n"),
    );
    assert!(embedded.status.success());
    let vectors: Vec<Vec<f32>> = String::from_utf8_lossy(&embedded.stdout)
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line).expect("JSON line");
            serde_json::from_value(value["embedding"].clone()).expect("vector")
        })
        .collect();
    assert_eq!(vectors.len(), FIDELITY_QUERIES.len());

    let options = |collection: &str, table: &str| quiver_export::TargetOptions {
        collection: Some(collection.to_string()),
        table: Some(table.to_string()),
        ..Default::default()
    };
    let stores = [
        (
            "Qdrant",
            quiver_export::Target::parse("qdrant", &qdrant, options(&collection, &table))
                .expect("target"),
        ),
        (
            "PostgreSQL",
            quiver_export::Target::parse("postgres", &postgres, options(&collection, &table))
                .expect("target"),
        ),
    ];
    let ours_vector = quiver_rankings(&root, "vector");
    let ours_keyword = quiver_rankings(&root, "keyword");
    let ours_hybrid = quiver_rankings(&root, "hybrid");
    let mut report = Vec::new();
    for (name, target) in &stores {
        let vector = store_rankings(target, SearchMode::Vector, &vectors);
        assert_same_ranking(name, &ours_vector, &vector);
        let keyword = overlap(
            &ours_keyword,
            &store_rankings(target, SearchMode::Keyword, &vectors),
        );
        let hybrid = overlap(
            &ours_hybrid,
            &store_rankings(target, SearchMode::Hybrid, &vectors),
        );
        report.push(format!(
            "{name}: vector top-10 = Quiver's for all {} queries; overlap@10 with Quiver's \
             keyword {keyword:.3}, hybrid {hybrid:.3}",
            FIDELITY_QUERIES.len()
        ));
        // Qdrant scores the same BM25 (its IDF formula aside); PostgreSQL has ts_rank only.
        let (keyword_floor, hybrid_floor) = if *name == "Qdrant" {
            (0.8, 0.8)
        } else {
            (0.3, 0.5)
        };
        assert!(keyword >= keyword_floor, "{}", report.join("\n"));
        assert!(hybrid >= hybrid_floor, "{}", report.join("\n"));
    }
    eprintln!("{}", report.join("\n"));

    // A collection made by an earlier export (one unnamed vector per point) is refused,
    // saying how to go on, and left as it was.
    let old = format!("{collection}_old");
    ureq::put(&format!("{qdrant}/collections/{old}"))
        .send_json(serde_json::json!({"vectors": {"size": 384, "distance": "Cosine"}}))
        .expect("create");
    let refused = export(&root, &["qdrant", &qdrant], &["--collection", &old]);
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains(&format!("curl -X DELETE {qdrant}/collections/{old}")),
        "{message}"
    );
    for name in [&collection, &old] {
        ureq::delete(&format!("{qdrant}/collections/{name}"))
            .call()
            .expect("drop");
    }

    // A table of an earlier export (no signature or keywords columns) is brought up to date,
    // every row sent again, and then ranks as Quiver does.
    let mut client = Client::connect(&postgres, NoTls).expect("connect");
    client
        .batch_execute(&format!(
            "ALTER TABLE {table} DROP COLUMN signature, DROP COLUMN keywords"
        ))
        .expect("drop columns");
    let migrated = succeeded(&export(
        &root,
        &["postgres", &postgres],
        &["--table", &table],
    ));
    let chunks = index_chunk_ids(&root).len();
    assert!(
        migrated.contains(&format!("sent {chunks} new or changed")),
        "{migrated}"
    );
    assert_same_ranking(
        "PostgreSQL after migration",
        &ours_vector,
        &store_rankings(&stores[1].1, SearchMode::Vector, &vectors),
    );
    client
        .batch_execute(&format!("DROP TABLE {table}"))
        .expect("drop");
}
