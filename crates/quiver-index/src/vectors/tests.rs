use super::*;
use crate::store::{Batch, ChunkRecord, FileRecord};
use std::path::{Path, PathBuf};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("quiver-vectors-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// One file's chunk: its text vector and, when given, its signature vector.
struct Chunk<'a> {
    path: &'a str,
    language: &'a str,
    vector: Vec<f32>,
    signature: Option<Vec<f32>>,
}

fn commit(store: &mut Store, chunks: &[Chunk<'_>]) {
    store.commit(&batch(chunks)).unwrap();
}

fn batch(chunks: &[Chunk<'_>]) -> Batch {
    let mut batch = Batch {
        files: Vec::new(),
        touched: Vec::new(),
        vectors: Vec::new(),
    };
    for chunk in chunks {
        // The vector's bits name its text, so a changed vector is a changed chunk.
        let key: String = chunk
            .vector
            .iter()
            .chain(chunk.signature.iter().flatten())
            .map(|x| format!("{:08x}", x.to_bits()))
            .collect();
        let embed_hash = format!("t{key}");
        let signature_hash = chunk.signature.as_ref().map(|_| format!("s{key}"));
        batch
            .vectors
            .push((embed_hash.clone(), chunk.vector.clone()));
        if let (Some(hash), Some(vector)) = (&signature_hash, &chunk.signature) {
            batch.vectors.push((hash.clone(), vector.clone()));
        }
        let record = ChunkRecord {
            chunk_id: format!("{}:0", chunk.path),
            uid: 1,
            uuid: String::new(),
            file: chunk.path.into(),
            path: chunk.path.into(),
            seq: 0,
            source: "repo".into(),
            language: chunk.language.into(),
            symbol: None,
            kind: None,
            parent: None,
            start_line: 1,
            end_line: 1,
            start_byte: 0,
            end_byte: 1,
            content_hash: key.clone(),
            text: key,
            embed_hash,
            signature_hash,
            metadata: None,
        };
        let file = FileRecord {
            path: chunk.path.into(),
            size: 1,
            mtime_ns: 1,
            content_hash: "h".into(),
        };
        batch.files.push((file, vec![record]));
    }
    batch
}

fn chunk<'a>(path: &'a str, vector: &[f32]) -> Chunk<'a> {
    Chunk {
        path,
        language: "rust",
        vector: vector.to_vec(),
        signature: None,
    }
}

/// The files in the vector files' directory of the index in `dir` whose names start with
/// `prefix`.
fn vector_files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir.join(DIR))
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(prefix)
        })
        .collect()
}

use crate::store::test_writer as writer;

/// The paths of the `k` best chunks for `query`, through `index`.
fn ranked_paths(store: &Store, index: &VectorIndex, query: &[f32], k: usize) -> Vec<String> {
    let all = SearchFilter::default();
    let ids: Vec<i64> = index
        .nearest(query, k, &all)
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    store
        .chunks_by_id(&ids)
        .unwrap()
        .into_iter()
        .map(|chunk| chunk.unwrap().path)
        .collect()
}

#[test]
fn a_chunk_scores_by_its_better_vector() {
    let dir = scratch("better");
    let mut store = writer(&dir, 2);
    commit(
        &mut store,
        &[
            Chunk {
                signature: Some(vec![0.0, 2.0]),
                ..chunk("a.rs", &[3.0, 0.0])
            },
            chunk("b.rs", &[0.6, 0.8]),
            // A signature of another width is ignored.
            Chunk {
                signature: Some(vec![1.0]),
                ..chunk("c.rs", &[1.0, 0.0])
            },
        ],
    );
    let index = VectorIndex::open(&store).unwrap();
    assert!(index.is_mapped());
    assert_eq!(index.len(), 3);
    let all = SearchFilter::default();
    let ranked = index.nearest(&[0.0, 1.0], 3, &all).unwrap();
    assert_eq!(ranked_paths(&store, &index, &[0.0, 1.0], 3)[0], "a.rs");
    assert!((ranked[0].1 - 1.0).abs() < 1e-6, "{ranked:?}");
    assert!((ranked[1].1 - 0.8).abs() < 1e-6, "{ranked:?}");
    assert!(ranked[2].1.abs() < 1e-6, "{ranked:?}");
    let by_text = index.nearest(&[1.0, 0.0], 3, &all).unwrap();
    assert!((by_text[0].1 - 1.0).abs() < 1e-6, "{by_text:?}");
    // A query of another width is an error, not an empty ranking.
    let error = index.nearest(&[1.0, 0.0, 0.0], 3, &all).unwrap_err();
    assert!(error.to_string().contains("3 dimensions"), "{error}");
}

#[test]
fn the_files_follow_each_commit_by_difference() {
    let dir = scratch("follow");
    let mut store = writer(&dir, 2);
    // Others enough that two deleted rows do not call for a rewrite.
    let others: Vec<String> = (0..10).map(|i| format!("other/{i}.rs")).collect();
    let mut chunks: Vec<Chunk<'_>> = others.iter().map(|p| chunk(p, &[-0.5, -0.5])).collect();
    chunks.extend([
        chunk("a.rs", &[1.0, 0.0]),
        chunk("b.rs", &[0.0, 1.0]),
        chunk("c.rs", &[0.7, 0.7]),
    ]);
    commit(&mut store, &chunks);
    assert_eq!(sync(&store).unwrap(), Synced::Rewritten { rows: 13 });
    assert_eq!(sync(&store).unwrap(), Synced::Current);
    // b.rs changes, c.rs leaves, d.rs arrives.
    commit(
        &mut store,
        &[chunk("b.rs", &[-1.0, 0.0]), chunk("d.rs", &[0.0, 1.0])],
    );
    store.remove_files(&["c.rs".to_string()]).unwrap();
    assert_eq!(
        sync(&store).unwrap(),
        Synced::Updated {
            added: 2,
            deleted: 2
        }
    );
    let told = status(&store).unwrap().unwrap();
    assert!(told.current && told.ivf_lists.is_none(), "{told:?}");
    assert_eq!((told.rows, told.deleted_rows), (15, 2));
    commit(&mut store, &[chunk("e.rs", &[0.1, 0.1])]);
    assert!(!status(&store).unwrap().unwrap().current);
    store.remove_files(&["e.rs".to_string()]).unwrap();
    sync(&store).unwrap();
    let reader = Store::open(&dir).unwrap();
    let index = VectorIndex::open(&reader).unwrap();
    assert!(index.is_mapped());
    assert_eq!(index.len(), 13);
    assert_eq!(
        ranked_paths(&reader, &index, &[0.0, 1.0], 3),
        ["d.rs", "a.rs", "b.rs"]
    );
    assert_eq!(ranked_paths(&reader, &index, &[-1.0, 0.0], 1), ["b.rs"]);
}

#[test]
fn a_bulk_load_writes_the_files_a_sync_would_and_makes_them_current() {
    let chunks = [
        Chunk {
            signature: Some(vec![0.0, 2.0]),
            ..chunk("a.rs", &[3.0, 0.0])
        },
        Chunk {
            language: "python",
            ..chunk("b.py", &[0.6, 0.8])
        },
        Chunk {
            signature: Some(vec![1.0]),
            ..chunk("c.rs", &[1.0, 0.0])
        },
        chunk("d.rs", &[0.0, -1.0]),
    ];
    let (first, second) = chunks.split_at(2);
    let synced = scratch("bulk-synced");
    let mut store = writer(&synced, 2);
    commit(&mut store, first);
    commit(&mut store, second);
    assert_eq!(sync(&store).unwrap(), Synced::Rewritten { rows: 5 });

    let loaded = scratch("bulk-loaded");
    let mut store = writer(&loaded, 2);
    store
        .commit_batches(|sink| {
            sink.defer_indexes()?;
            sink.apply(&batch(first))?;
            sink.apply(&batch(second))
        })
        .unwrap();
    assert_eq!(sync(&store).unwrap(), Synced::Current);
    for name in ["rows-1.bin", "vectors-1.f32", "paths-1.jsonl"] {
        let read = |dir: &Path| std::fs::read(dir.join(DIR).join(name)).unwrap();
        assert_eq!(read(&loaded), read(&synced), "{name}");
    }
    let index = VectorIndex::open(&store).unwrap();
    assert_eq!(
        ranked_paths(&store, &index, &[0.0, 1.0], 2),
        ["a.rs", "b.py"]
    );

    // A chunk whose vector came in an earlier batch leaves the files to the next sync.
    let split = scratch("bulk-split");
    let mut store = writer(&split, 2);
    let mut without_vector = batch(second);
    let mut with_vector = batch(first);
    with_vector.vectors.append(&mut without_vector.vectors);
    store
        .commit_batches(|sink| {
            sink.defer_indexes()?;
            sink.apply(&with_vector)?;
            sink.apply(&without_vector)
        })
        .unwrap();
    assert_eq!(sync(&store).unwrap(), Synced::Rewritten { rows: 5 });
}

#[test]
fn damaged_files_are_written_again_and_a_torn_append_is_ignored() {
    let dir = scratch("damaged");
    let mut store = writer(&dir, 2);
    commit(
        &mut store,
        &[chunk("a.rs", &[1.0, 0.0]), chunk("b.rs", &[0.0, 1.0])],
    );
    sync(&store).unwrap();
    let file = |prefix: &str| vector_files(&dir, prefix).remove(0);
    // A run that died mid-append left bytes past the manifest's counts.
    use std::io::Write;
    let mut rows = std::fs::OpenOptions::new()
        .append(true)
        .open(file("rows-"))
        .unwrap();
    rows.write_all(&[7; 13]).unwrap();
    let index = VectorIndex::open(&store).unwrap();
    assert!(index.is_mapped());
    assert_eq!(index.len(), 2);
    commit(&mut store, &[chunk("c.rs", &[0.6, 0.8])]);
    assert_eq!(
        sync(&store).unwrap(),
        Synced::Updated {
            added: 1,
            deleted: 0
        }
    );
    let index = VectorIndex::open(&store).unwrap();
    assert_eq!(ranked_paths(&store, &index, &[0.6, 0.8], 1), ["c.rs"]);
    // A vectors file cut short is found out, and the files written anew.
    let vectors = file("vectors-");
    let length = std::fs::metadata(&vectors).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&vectors)
        .unwrap()
        .set_len(length - 4)
        .unwrap();
    let index = VectorIndex::open(&store).unwrap();
    assert!(index.is_mapped());
    assert_eq!(ranked_paths(&store, &index, &[0.6, 0.8], 3)[0], "c.rs");
    assert!(!vectors.exists(), "the old epoch's files are removed");
    // An unreadable manifest too.
    std::fs::write(dir.join(DIR).join("manifest.json"), b"{not json").unwrap();
    assert!(matches!(
        sync(&store).unwrap(),
        Synced::Rewritten { rows: 3 }
    ));
}

#[test]
fn a_reader_that_cannot_write_reads_the_database() {
    let dir = scratch("locked");
    let mut store = writer(&dir, 2);
    commit(
        &mut store,
        &[chunk("a.rs", &[1.0, 0.0]), chunk("b.rs", &[0.0, 1.0])],
    );
    // The writer holds the lock and has not brought the files up to date.
    let reader = Store::open(&dir).unwrap();
    let index = VectorIndex::open(&reader).unwrap();
    assert!(!index.is_mapped());
    assert!(!VectorIndex::files_ready(&reader).unwrap());
    assert_eq!(
        ranked_paths(&reader, &index, &[0.0, 1.0], 2),
        ["b.rs", "a.rs"]
    );
    sync(&store).unwrap();
    assert!(VectorIndex::files_ready(&reader).unwrap());
    drop(store);
    // With the writer gone, a reader brings stale files up to date itself.
    let mut store = writer(&dir, 2);
    commit(&mut store, &[chunk("c.rs", &[-1.0, 0.0])]);
    drop(store);
    let index = VectorIndex::open(&reader).unwrap();
    assert!(index.is_mapped());
    assert_eq!(ranked_paths(&reader, &index, &[-1.0, 0.0], 1), ["c.rs"]);
}

/// Clustered unit-ish vectors from a fixed seed.
fn clustered(count: usize, dimension: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut state = seed;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let centres: Vec<Vec<f32>> = (0..64)
        .map(|_| (0..dimension).map(|_| next()).collect())
        .collect();
    (0..count)
        .map(|i| {
            let centre = &centres[i % centres.len()];
            centre.iter().map(|c| c + 0.3 * next()).collect()
        })
        .collect()
}

#[test]
fn a_large_index_searches_its_ivf_and_filters_keep_recall() {
    let dir = scratch("ivf");
    let dimension = 64;
    let mut store = writer(&dir, dimension);
    let count = ivf::MIN_ROWS + 5_000;
    let vectors = clustered(count, dimension, 7);
    let paths: Vec<String> = (0..count).map(|i| format!("src/{i}.rs")).collect();
    // One in fifty chunks is Python: a filter that leaves too few rows for the IVF.
    let chunks: Vec<Chunk<'_>> = vectors
        .iter()
        .zip(&paths)
        .enumerate()
        .map(|(i, (vector, path))| Chunk {
            language: if i % 50 == 0 { "python" } else { "rust" },
            ..chunk(path, vector)
        })
        .collect();
    commit(&mut store, &chunks);
    sync(&store).unwrap();
    let index = VectorIndex::open(&store).unwrap();
    assert!(index.has_ivf());
    assert_eq!(
        status(&store).unwrap().unwrap().ivf_lists,
        Some(ivf::lists_for(count))
    );
    // Queries near indexed chunks, as real queries land near what they are after.
    let noise = clustered(50, dimension, 99);
    let queries: Vec<Vec<f32>> = noise
        .iter()
        .enumerate()
        .map(|(i, noise)| {
            let near = &vectors[i * 397 % count];
            near.iter().zip(noise).map(|(x, n)| x + 0.1 * n).collect()
        })
        .collect();
    let recall = |filter: &SearchFilter| {
        let mut found = 0;
        for query in &queries {
            let truth = index.nearest_exact(query, 10, filter).unwrap();
            let truth: Vec<i64> = truth.iter().map(|hit| hit.0).collect();
            let got = index.nearest(query, 10, filter).unwrap();
            found += got.iter().filter(|hit| truth.contains(&hit.0)).count();
        }
        found as f64 / (10 * queries.len()) as f64
    };
    let all = SearchFilter::default();
    let whole = recall(&all);
    assert!(whole >= 0.9, "recall@10 through the IVF: {whole}");
    let python = SearchFilter::new(vec!["python".into()], None).unwrap();
    assert_eq!(recall(&python), 1.0, "a narrow filter is answered exactly");
    let got = index.nearest(&queries[0], 10, &python).unwrap();
    let ids: Vec<i64> = got.iter().map(|hit| hit.0).collect();
    for chunk in store.chunks_by_id(&ids).unwrap() {
        assert_eq!(chunk.unwrap().language, "python");
    }
    // A filter that leaves more rows than the IVF's threshold is applied as its lists are
    // scanned.
    let rust = SearchFilter::new(vec!["rust".into()], None).unwrap();
    let filtered = recall(&rust);
    assert!(
        filtered >= 0.9,
        "recall@10 with a filter in the IVF: {filtered}"
    );
    let narrow = SearchFilter::new(vec!["rust".into()], Some("src/1*.rs")).unwrap();
    assert_eq!(
        recall(&narrow),
        1.0,
        "a narrow path filter is answered exactly"
    );
    // Rows appended after the IVF was trained are added to its lists: a new chunk equal to a
    // query is its best match.
    commit(&mut store, &[chunk("new.rs", &queries[1])]);
    sync(&store).unwrap();
    let index = VectorIndex::open(&store).unwrap();
    assert_eq!(ranked_paths(&store, &index, &queries[1], 1), ["new.rs"]);
    drop(index);
    // A damaged IVF (a list id past the lists, a short codes file) is written anew, not
    // searched.
    let lists = vector_files(&dir, "lists-").remove(0);
    let mut bytes = std::fs::read(&lists).unwrap();
    bytes[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    std::fs::write(&lists, bytes).unwrap();
    assert!(matches!(sync(&store).unwrap(), Synced::Rewritten { .. }));
    let codes = vector_files(&dir, "codes-").remove(0);
    let length = std::fs::metadata(&codes).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&codes)
        .unwrap()
        .set_len(length / 2)
        .unwrap();
    assert!(matches!(sync(&store).unwrap(), Synced::Rewritten { .. }));
    let index = VectorIndex::open(&store).unwrap();
    assert!(index.has_ivf());
    assert_eq!(ranked_paths(&store, &index, &queries[1], 1), ["new.rs"]);
    drop((index, store));
    // 180 MB: not left behind by every run.
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_index_grown_past_its_ivf_trains_a_new_one() {
    let dir = scratch("retrain");
    let dimension = 8;
    let mut store = writer(&dir, dimension);
    let first = ivf::MIN_ROWS + 1_000;
    let total = first * ivf::RETRAIN_GROWTH + 1_000;
    let vectors = clustered(total, dimension, 5);
    let paths: Vec<String> = (0..total).map(|i| format!("src/{i}.rs")).collect();
    let chunks: Vec<Chunk<'_>> = vectors
        .iter()
        .zip(&paths)
        .map(|(vector, path)| chunk(path, vector))
        .collect();
    commit(&mut store, &chunks[..first]);
    sync(&store).unwrap();
    assert_eq!(
        status(&store).unwrap().unwrap().ivf_lists,
        Some(ivf::lists_for(first))
    );
    // Grown by less than the factor, the rows join the lists trained on the first ones.
    let middle = first * 2;
    commit(&mut store, &chunks[first..middle]);
    assert!(matches!(sync(&store).unwrap(), Synced::Updated { .. }));
    assert_eq!(
        status(&store).unwrap().unwrap().ivf_lists,
        Some(ivf::lists_for(first))
    );
    commit(&mut store, &chunks[middle..]);
    assert!(matches!(sync(&store).unwrap(), Synced::Updated { .. }));
    assert_eq!(
        status(&store).unwrap().unwrap().ivf_lists,
        Some(ivf::lists_for(total))
    );
    // The layout trained before is gone from disk.
    assert_eq!(vector_files(&dir, "centroids-").len(), 1);
    let index = VectorIndex::open(&store).unwrap();
    assert!(index.has_ivf());
    for row in [3, first + 7, total - 2] {
        let found = ranked_paths(&store, &index, &vectors[row], 1);
        assert_eq!(found, [paths[row].as_str()], "row {row}");
    }
    drop((index, store));
    let _ = std::fs::remove_dir_all(&dir);
}
