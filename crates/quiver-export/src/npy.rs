//! Float32 matrices in NumPy's `.npy` format (version 1.0 written; 1.0–3.0 read).
//!
//! The format is a fixed magic string, a Python-dict header padded to 64 bytes, then raw
//! little-endian data; a dependency for that would be larger than the code.

use std::io::{Read, Write};

pub fn write_npy_f32<W: Write + ?Sized, R: AsRef<[f32]>>(
    writer: &mut W,
    rows: &[R],
) -> std::io::Result<()> {
    let cols = rows.first().map_or(0, |row| row.as_ref().len());
    if rows.iter().any(|row| row.as_ref().len() != cols) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "rows of different lengths cannot form a matrix",
        ));
    }
    write_npy_header(writer, rows.len(), cols)?;
    for row in rows {
        write_npy_row(writer, row.as_ref())?;
    }
    Ok(())
}

/// The header of a `rows` × `cols` float32 matrix, for rows written after it one at a time.
pub fn write_npy_header<W: Write + ?Sized>(
    writer: &mut W,
    rows: usize,
    cols: usize,
) -> std::io::Result<()> {
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // Magic (6) + version (2) + length (2) + header + newline must be a multiple of 64.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    writer.write_all(b"\x93NUMPY\x01\x00")?;
    writer.write_all(&(header.len() as u16).to_le_bytes())?;
    writer.write_all(header.as_bytes())
}

pub fn write_npy_row<W: Write + ?Sized>(writer: &mut W, row: &[f32]) -> std::io::Result<()> {
    for value in row {
        writer.write_all(&value.to_le_bytes())?;
    }
    Ok(())
}

/// Reads the header of a little-endian float32, C-order, two-dimensional `.npy` matrix from
/// the start of `reader`, leaving it at the first value: the matrix's (rows, columns).
pub fn read_npy_header<R: Read + ?Sized>(reader: &mut R) -> Result<(usize, usize), String> {
    let mut start = [0u8; 10];
    reader
        .read_exact(&mut start)
        .map_err(|_| "not a .npy file (no \\x93NUMPY magic)".to_string())?;
    if &start[..6] != b"\x93NUMPY" {
        return Err("not a .npy file (no \\x93NUMPY magic)".into());
    }
    let header_len = match start[6] {
        1 => u16::from_le_bytes([start[8], start[9]]) as usize,
        2 | 3 => {
            let mut high = [0u8; 2];
            reader
                .read_exact(&mut high)
                .map_err(|_| "truncated header".to_string())?;
            u32::from_le_bytes([start[8], start[9], high[0], high[1]]) as usize
        }
        version => return Err(format!("unsupported .npy version {version}")),
    };
    let mut header = vec![0u8; header_len];
    reader
        .read_exact(&mut header)
        .map_err(|_| "truncated header".to_string())?;
    let header = String::from_utf8_lossy(&header);
    if !header.contains("'descr': '<f4'") {
        return Err(format!(
            "expected float32 ('<f4') data, header says {header}"
        ));
    }
    if header.contains("'fortran_order': True") {
        return Err("Fortran-ordered arrays are not supported".into());
    }
    let shape = header
        .split("'shape': (")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .ok_or("no shape in header")?;
    let dims: Vec<usize> = shape
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| part.parse().map_err(|_| format!("bad shape ({shape})")))
        .collect::<Result<_, _>>()?;
    let [rows, cols] = dims[..] else {
        return Err(format!("expected a 2-D matrix, shape is ({shape})"));
    };
    Ok((rows, cols))
}

/// Reads one row of `cols` values from a `.npy` stream past its header.
pub fn read_npy_row<R: Read + ?Sized>(
    reader: &mut R,
    cols: usize,
    row: &mut Vec<f32>,
) -> std::io::Result<()> {
    let mut bytes = vec![0u8; cols * 4];
    reader.read_exact(&mut bytes)?;
    row.clear();
    row.extend(
        bytes
            .chunks_exact(4)
            .map(|w| f32::from_le_bytes([w[0], w[1], w[2], w[3]])),
    );
    Ok(())
}

/// Checks that `data_bytes` after the header hold exactly the float32 matrix the header's
/// shape says: a file cut short or with bytes appended is refused before any row is read.
pub fn check_npy_data_length(rows: usize, cols: usize, data_bytes: u64) -> Result<(), String> {
    let needed = (rows as u64)
        .checked_mul(cols as u64)
        .and_then(|values| values.checked_mul(4));
    if needed != Some(data_bytes) {
        return Err(format!(
            "shape ({rows}, {cols}) needs {} data bytes, the file has {data_bytes}",
            needed.map_or_else(|| "more than 2^64".to_string(), |n| n.to_string()),
        ));
    }
    Ok(())
}

/// Reads a little-endian float32, C-order, two-dimensional `.npy` matrix: its rows.
pub fn read_npy_f32(bytes: &[u8]) -> Result<Vec<Vec<f32>>, String> {
    let mut data = bytes;
    let (rows, cols) = read_npy_header(&mut data)?;
    check_npy_data_length(rows, cols, data.len() as u64)?;
    let values: Vec<f32> = data
        .chunks_exact(4)
        .map(|w| f32::from_le_bytes([w[0], w[1], w[2], w[3]]))
        .collect();
    Ok(values.chunks(cols.max(1)).map(<[f32]>::to_vec).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_length_other_than_the_shapes_is_refused() {
        assert!(check_npy_data_length(3, 4, 48).is_ok());
        assert!(check_npy_data_length(0, 384, 0).is_ok());
        let short = check_npy_data_length(3, 4, 44).unwrap_err();
        assert!(
            short.contains("needs 48 data bytes, the file has 44"),
            "{short}"
        );
        let long = check_npy_data_length(3, 4, 52).unwrap_err();
        assert!(long.contains("the file has 52"), "{long}");
        let huge = check_npy_data_length(usize::MAX, 2, 0).unwrap_err();
        assert!(huge.contains("more than"), "{huge}");
    }

    #[test]
    fn reads_back_what_it_writes_and_rejects_other_types() {
        let rows = vec![vec![1.0, -2.5, 3.0], vec![0.0, 1e-7, f32::MAX]];
        let mut bytes = Vec::new();
        write_npy_f32(&mut bytes, &rows).unwrap();
        assert_eq!(read_npy_f32(&bytes).unwrap(), rows);
        let mut doubles = bytes.clone();
        let at = doubles.windows(3).position(|w| w == b"<f4").unwrap();
        doubles[at + 2] = b'8';
        assert!(read_npy_f32(&doubles).unwrap_err().contains("<f4"));
        assert!(read_npy_f32(&bytes[..bytes.len() - 4])
            .unwrap_err()
            .contains("data bytes"));
        let not_npy = read_npy_f32(b"hello").unwrap_err();
        assert!(not_npy.contains("not a .npy file"), "{not_npy}");
    }

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
        let ragged = write_npy_f32(&mut Vec::new(), &[vec![1.0], vec![]]).unwrap_err();
        assert_eq!(ragged.kind(), std::io::ErrorKind::InvalidInput);
        assert!(ragged.to_string().contains("different lengths"), "{ragged}");
    }
}
