//! Chunk identifiers: a readable hierarchical id and the numeric and UUID forms vector stores
//! want, all derived from the same string so they agree across runs and machines.

use sha2::{Digest, Sha256};

/// `{id_prefix}:{source}:{path}:chunk:{n}`, where `source` is the repository (the indexed
/// root's name) or, for pre-chunked input, the subdirectory the chunk file sits in.
pub fn chunk_id(id_prefix: &str, source: &str, path: &str, n: usize) -> String {
    format!("{id_prefix}:{source}:{path}:chunk:{n}")
}

/// The first 8 bytes of SHA-256(`id`), with the top bit cleared so the number is a positive
/// signed 64-bit integer (SQLite, PostgreSQL `bigint`) as well as an unsigned one (Qdrant).
pub fn numeric_id(id: &str) -> i64 {
    let digest = Sha256::digest(id.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(bytes) & (u64::MAX >> 1)) as i64
}

/// A UUID from the first 16 bytes of SHA-256(`id`), marked version 8 (custom) per RFC 9562.
pub fn uuid(id: &str) -> String {
    let digest = Sha256::digest(id.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Hex SHA-256 of some bytes: content hashes of files, chunks and embedded texts.
pub fn content_hash(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_well_formed() {
        let id = chunk_id("default", "quiver", "src/main.rs", 3);
        assert_eq!(id, "default:quiver:src/main.rs:chunk:3");
        assert_eq!(numeric_id(&id), numeric_id(&id.clone()));
        assert!(numeric_id(&id) >= 0);
        assert_ne!(
            numeric_id(&id),
            numeric_id("default:quiver:src/main.rs:chunk:4")
        );
        let u = uuid(&id);
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "8");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"));
        // SHA-256("abc") starts ba7816bf8f01cfea...
        assert_eq!(&content_hash(b"abc")[..16], "ba7816bf8f01cfea");
    }

    /// Qdrant points and PostgreSQL rows are keyed on these forms: a change here would orphan
    /// every point exported before it. The literals were computed apart from this code
    /// (Python's hashlib, by the rule in the doc comments).
    #[test]
    fn exported_id_forms_are_pinned() {
        for (id, numeric, uuid_form) in [
            (
                "default:quiver:src/main.rs:chunk:3",
                3575244229327454750,
                "b19dd1af-2254-821e-bdce-5aa38172db6a",
            ),
            (
                "default:quiver:src/main.rs:chunk:0",
                1468225479213108497,
                "94602f4b-5aac-8d11-b6db-a6bf98d54dd3",
            ),
            (
                "docs:handbook:guide/intro.md:chunk:12",
                3791661695157830922,
                "349eb039-0056-850a-84eb-725ec2a4009e",
            ),
        ] {
            assert_eq!(numeric_id(id), numeric, "{id}");
            assert_eq!(uuid(id), uuid_form, "{id}");
        }
    }
}
