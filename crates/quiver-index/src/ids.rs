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
    let digits = hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &digits[..8],
        &digits[8..12],
        &digits[12..16],
        &digits[16..20],
        &digits[20..]
    )
}

/// Hex SHA-256 of some bytes: content hashes of files, chunks and embedded texts.
pub fn content_hash(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// `bytes` in lowercase hex, two digits each. By table rather than `format!` per byte: an
/// import of a million chunks hashes two million values.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 15)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_the_usual_lowercase_hex() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        // SHA-256 of "abc" (FIPS 180-2, appendix B.1).
        assert_eq!(
            content_hash(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

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
