//! Writing float32 matrices in NumPy's `.npy` format (version 1.0).
//!
//! The format is a fixed magic string, a Python-dict header padded to 64 bytes, then raw
//! little-endian data; a dependency for that would be larger than the code.

use std::io::Write;

pub fn write_npy_f32<W: Write>(writer: &mut W, rows: &[Vec<f32>]) -> std::io::Result<()> {
    let cols = rows.first().map_or(0, Vec::len);
    if rows.iter().any(|row| row.len() != cols) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "rows of different lengths cannot form a matrix",
        ));
    }
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {}), }}",
        rows.len(),
        cols
    );
    // Magic (6) + version (2) + length (2) + header + newline must be a multiple of 64.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    writer.write_all(b"\x93NUMPY\x01\x00")?;
    writer.write_all(&(header.len() as u16).to_le_bytes())?;
    writer.write_all(header.as_bytes())?;
    for row in rows {
        for value in row {
            writer.write_all(&value.to_le_bytes())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_aligned_and_data_follows() {
        let mut bytes = Vec::new();
        write_npy_f32(&mut bytes, &[vec![1.0, 2.0], vec![3.0, 4.0]]).expect("writes");
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + header_len) % 64, 0);
        let header = std::str::from_utf8(&bytes[10..10 + header_len]).expect("ascii");
        assert!(header.contains("'shape': (2, 2)") && header.ends_with('\n'));
        let data = &bytes[10 + header_len..];
        assert_eq!(data.len(), 16);
        assert_eq!(
            f32::from_le_bytes([data[12], data[13], data[14], data[15]]),
            4.0
        );
        assert!(write_npy_f32(&mut Vec::new(), &[vec![1.0], vec![]]).is_err());
    }
}
