//! `quiver export --to postgres` against a real PostgreSQL with pgvector (started by
//! `scripts/test-postgres`, or the one QUIVER_TEST_POSTGRES_URL names), and `--to qdrant`
//! against the stand-in in `common/fake_qdrant.rs`, or a real Qdrant when QDRANT_URL is set.

mod common;

use common::{fake_qdrant, index, json_of, model_dir, quiver, search, temp_dir, write};
use postgres::{Client, NoTls};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
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

fn tree(name: &str) -> PathBuf {
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

fn postgres_url() -> String {
    if let Ok(url) = std::env::var("QUIVER_TEST_POSTGRES_URL") {
        return url;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/test-postgres");
    let output = std::process::Command::new(script)
        .arg("start")
        .output()
        .expect("run scripts/test-postgres");
    assert!(
        output.status.success(),
        "scripts/test-postgres start: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
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
    let ours: Vec<String> = search(&root, query, &["--mode", "vector", "-k", "4"])
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
fn qdrant_export_creates_retries_and_updates_incrementally() {
    let qdrant = fake_qdrant::start();
    let root = tree("export-qdrant");
    index(&root, &[]);
    // The first two upserts fail with 503 and are retried.
    qdrant.state.lock().expect("lock").failing_upserts = 2;
    let to = ["qdrant", qdrant.url.as_str()];
    let first = succeeded(&export(&root, &to, &["--collection", "code"]));
    assert!(first.contains("deleted 0, left 0 unchanged"), "{first}");
    let jsonl = root.join("all.jsonl");
    let ids = index_chunk_ids(&root);
    {
        let state = qdrant.state.lock().expect("lock");
        let collection = &state.collections["code"];
        assert_eq!(collection.size, 384);
        assert_eq!(collection.distance, "Cosine");
        assert_eq!(
            collection.payload_indexes,
            ["path", "language", "source_subdir"]
        );
        // Points are the JSONL export's records, plus the fingerprint.
        for line in std::fs::read_to_string(&jsonl).expect("jsonl").lines() {
            let record: Value = serde_json::from_str(line).expect("JSON");
            let (vector, payload) = &collection.points[record["id"].as_str().expect("id")];
            let expected: Vec<f32> = serde_json::from_value(record["vector"].clone()).expect("v");
            assert_eq!(vector, &expected);
            assert_eq!(payload["path"], record["payload"]["path"]);
            assert_eq!(payload["text"], record["payload"]["text"]);
            assert!(payload["quiver_fingerprint"].is_string());
        }
        assert_eq!(collection.points.len(), ids.len());
    }

    let again = succeeded(&export(&root, &to, &["--collection", "code"]));
    assert!(again.contains("sent 0 new or changed chunks"), "{again}");

    write(&root, "app/store.py", STORE_PY.replace("PBKDF2", "scrypt"));
    std::fs::remove_file(root.join("docs/install.md")).expect("remove");
    index(&root, &[]);
    let sent_before = qdrant.state.lock().expect("lock").upserted_points;
    let changed = succeeded(&export(
        &root,
        &to,
        &["--collection", "code", "--batch-size", "1"],
    ));
    let state = qdrant.state.lock().expect("lock");
    let sent = state.upserted_points - sent_before;
    assert!(sent >= 1 && sent < ids.len(), "sent {sent}: {changed}");
    let stored: BTreeSet<String> = state.collections["code"]
        .points
        .values()
        .map(|(_, payload)| payload["chunk_id"].as_str().expect("id").to_string())
        .collect();
    drop(state);
    assert_eq!(stored, index_chunk_ids(&root));

    // A collection of another width is refused and left alone.
    let narrow = tree("export-qdrant-narrow");
    index(&narrow, &["--dimensions", "128"]);
    let refused = export(&narrow, &to, &["--collection", "code"]);
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("384-dimensional"), "{message}");
    assert_eq!(
        qdrant.state.lock().expect("lock").collections["code"]
            .points
            .len(),
        stored.len()
    );
}

#[test]
fn qdrant_export_against_a_real_server_when_qdrant_url_is_set() {
    let Ok(url) = std::env::var("QDRANT_URL") else {
        eprintln!("QDRANT_URL is not set: the fake-server test above covers the export");
        return;
    };
    let root = tree("export-qdrant-real");
    index(&root, &[]);
    let collection = format!("quiver_test_{}", std::process::id());
    let first = succeeded(&export(
        &root,
        &["qdrant", &url],
        &["--collection", &collection],
    ));
    assert!(first.contains("left 0 unchanged"), "{first}");
    let again = succeeded(&export(
        &root,
        &["qdrant", &url],
        &["--collection", &collection],
    ));
    assert!(again.contains("sent 0 new or changed chunks"), "{again}");
    let info = json_of(&[
        "status",
        "--index",
        root.join(".quiver").to_str().expect("utf-8"),
        "--json",
    ]);
    let chunks = info["stats"]["chunks"].as_u64().expect("count");
    let count: Value = ureq::post(&format!("{url}/collections/{collection}/points/count"))
        .send_json(serde_json::json!({"exact": true}))
        .expect("count")
        .into_json()
        .expect("JSON");
    assert_eq!(count["result"]["count"].as_u64(), Some(chunks));
    ureq::delete(&format!("{url}/collections/{collection}"))
        .call()
        .expect("drop collection");
}
