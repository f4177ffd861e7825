//! The IDX format of MNIST, Fashion-MNIST, EMNIST and KMNIST.
//!
//! Layout: two zero bytes, one type byte, one rank byte, then `rank` big-endian
//! u32 dimensions, then the elements big-endian in row-major order. Files are
//! usually shipped gzipped; both forms are read.

use crate::{read_maybe_gz, DataError, Result};
use shrink_tensor::{Tensor, TensorData};
use std::path::Path;

/// Reads an IDX file (`.gz` or raw) into a tensor of its stored type.
pub fn read_idx(path: impl AsRef<Path>) -> Result<Tensor> {
    let path = path.as_ref();
    let bytes = read_maybe_gz(path)?;
    parse_idx(&bytes).map_err(|msg| DataError::format(path, msg))
}

/// Parses IDX bytes; the error is a message the caller prefixes with the file.
pub fn parse_idx(b: &[u8]) -> std::result::Result<Tensor, String> {
    if b.len() < 4 {
        return Err(format!("{} bytes is too short for an IDX header", b.len()));
    }
    if b[0] != 0 || b[1] != 0 {
        return Err(format!(
            "bad IDX magic {:02x} {:02x} {:02x} {:02x} (expected 00 00 <type> <rank>)",
            b[0], b[1], b[2], b[3]
        ));
    }
    let (code, rank) = (b[2], b[3] as usize);
    let width = match code {
        0x08 | 0x09 => 1,
        0x0B => 2,
        0x0C | 0x0D => 4,
        0x0E => 8,
        other => return Err(format!("unknown IDX element type 0x{other:02x}")),
    };
    let header = 4 + 4 * rank;
    if b.len() < header {
        return Err(format!(
            "header of a rank-{rank} IDX file needs {header} bytes, the file has {}",
            b.len()
        ));
    }
    let shape: Vec<usize> = (0..rank)
        .map(|i| u32::from_be_bytes(b[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("dimensions {shape:?} overflow"))?;
    let body = &b[header..];
    let want = n
        .checked_mul(width)
        .ok_or_else(|| format!("dimensions {shape:?} overflow"))?;
    if body.len() != want {
        return Err(format!(
            "dimensions {shape:?} need {want} data bytes, the file has {}",
            body.len()
        ));
    }
    let data = match code {
        0x08 => TensorData::U8(body.to_vec()),
        0x09 => TensorData::I8(body.iter().map(|&x| x as i8).collect()),
        0x0B => TensorData::I16(
            body.chunks_exact(2)
                .map(|c| i16::from_be_bytes([c[0], c[1]]))
                .collect(),
        ),
        0x0C => TensorData::I32(
            body.chunks_exact(4)
                .map(|c| i32::from_be_bytes(c.try_into().unwrap()))
                .collect(),
        ),
        0x0D => TensorData::F32(
            body.chunks_exact(4)
                .map(|c| f32::from_be_bytes(c.try_into().unwrap()))
                .collect(),
        ),
        _ => TensorData::F64(
            body.chunks_exact(8)
                .map(|c| f64::from_be_bytes(c.try_into().unwrap()))
                .collect(),
        ),
    };
    Tensor::new(shape, data).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(code: u8, dims: &[u32]) -> Vec<u8> {
        let mut b = vec![0, 0, code, dims.len() as u8];
        for d in dims {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b
    }

    #[test]
    fn reads_u8_and_big_endian_types() {
        let mut b = header(0x08, &[2, 3]);
        b.extend_from_slice(&[1, 2, 3, 4, 5, 255]);
        let t = parse_idx(&b).unwrap();
        assert_eq!(t.shape(), &[2, 3]);
        assert_eq!(t.as_slice::<u8>().unwrap(), &[1, 2, 3, 4, 5, 255]);

        let mut b = header(0x0C, &[2]);
        b.extend_from_slice(&(-7i32).to_be_bytes());
        b.extend_from_slice(&70000i32.to_be_bytes());
        assert_eq!(
            parse_idx(&b).unwrap().as_slice::<i32>().unwrap(),
            &[-7, 70000]
        );

        let mut b = header(0x0D, &[1]);
        b.extend_from_slice(&1.5f32.to_be_bytes());
        assert_eq!(parse_idx(&b).unwrap().as_slice::<f32>().unwrap(), &[1.5]);
    }

    #[test]
    fn rejects_corrupt_files() {
        assert!(parse_idx(&[0, 0]).is_err());
        let mut bad_magic = header(0x08, &[1]);
        bad_magic[0] = 1;
        bad_magic.push(0);
        assert!(parse_idx(&bad_magic).unwrap_err().contains("magic"));
        let mut bad_type = header(0x07, &[1]);
        bad_type.push(0);
        assert!(parse_idx(&bad_type).is_err());
        // Truncated body and trailing garbage both disagree with the dimensions.
        let mut short = header(0x08, &[2, 2]);
        short.extend_from_slice(&[1, 2, 3]);
        assert!(parse_idx(&short).unwrap_err().contains("need 4 data bytes"));
        let mut long = header(0x08, &[1]);
        long.extend_from_slice(&[1, 2]);
        assert!(parse_idx(&long).is_err());
        // A header cut inside the dimensions.
        assert!(parse_idx(&header(0x08, &[5, 5])[..7]).is_err());
    }

    #[test]
    fn error_names_the_file() {
        let dir = std::env::temp_dir().join(format!("shrink-idx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("broken-idx1-ubyte");
        std::fs::write(&p, [0u8, 0, 8, 1, 0, 0, 0, 9, 1]).unwrap();
        let msg = read_idx(&p).unwrap_err().to_string();
        assert!(msg.contains("broken-idx1-ubyte"), "{msg}");
        let gz = dir.join("not-gzip.gz");
        std::fs::write(&gz, b"plain").unwrap();
        assert!(read_idx(&gz)
            .unwrap_err()
            .to_string()
            .contains("not-gzip.gz"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
