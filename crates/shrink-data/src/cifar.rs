//! CIFAR-10's binary batches (`data_batch_1.bin` … `data_batch_5.bin`,
//! `test_batch.bin`): records of one label byte followed by 3072 pixel bytes,
//! the 1024 red values first, then green, then blue (so a record is already
//! CHW, 3×32×32).

use crate::{DataError, Result};
use shrink_tensor::Tensor;
use std::path::Path;

/// Bytes of one record: label + 3×32×32 pixels.
pub const RECORD: usize = 1 + 3 * 32 * 32;

/// Reads one batch file into (u8 images [N,3,32,32], labels).
pub fn read_batch(path: impl AsRef<Path>) -> Result<(Tensor, Vec<i64>)> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    parse_batch(&bytes).map_err(|msg| DataError::format(path, msg))
}

/// Parses the bytes of a batch; the error is prefixed with the file by the caller.
pub fn parse_batch(b: &[u8]) -> std::result::Result<(Tensor, Vec<i64>), String> {
    if b.is_empty() || !b.len().is_multiple_of(RECORD) {
        return Err(format!(
            "{} bytes is not a whole number of {RECORD}-byte CIFAR-10 records",
            b.len()
        ));
    }
    let n = b.len() / RECORD;
    let mut pixels = Vec::with_capacity(n * (RECORD - 1));
    let mut labels = Vec::with_capacity(n);
    for (i, rec) in b.chunks_exact(RECORD).enumerate() {
        if rec[0] > 9 {
            return Err(format!(
                "record {i} has label {} (CIFAR-10 has 0..10)",
                rec[0]
            ));
        }
        labels.push(rec[0] as i64);
        pixels.extend_from_slice(&rec[1..]);
    }
    let x = Tensor::from_vec(vec![n, 3, 32, 32], pixels).map_err(|e| e.to_string())?;
    Ok((x, labels))
}

/// Reads and concatenates several batch files in order.
pub fn read_batches(paths: &[impl AsRef<Path>]) -> Result<(Tensor, Vec<i64>)> {
    let mut pixels: Vec<u8> = Vec::new();
    let mut labels = Vec::new();
    for p in paths {
        let (x, y) = read_batch(p)?;
        pixels.extend(x.into_vec::<u8>()?);
        labels.extend(y);
    }
    let n = labels.len();
    Ok((Tensor::from_vec(vec![n, 3, 32, 32], pixels)?, labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A generated batch: record r has label r % 10 and pixel p = (r * 7 + p) % 256.
    fn generated(n: usize) -> Vec<u8> {
        let mut b = Vec::new();
        for r in 0..n {
            b.push((r % 10) as u8);
            b.extend((0..3072).map(|p| ((r * 7 + p) % 256) as u8));
        }
        b
    }

    #[test]
    fn reads_generated_batches() {
        let dir = std::env::temp_dir().join(format!("shrink-cifar-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p1 = dir.join("data_batch_1.bin");
        let p2 = dir.join("data_batch_2.bin");
        std::fs::write(&p1, generated(3)).unwrap();
        std::fs::write(&p2, generated(12)).unwrap();
        let (x, y) = read_batch(&p1).unwrap();
        assert_eq!(x.shape(), &[3, 3, 32, 32]);
        assert_eq!(y, vec![0, 1, 2]);
        let px = x.as_slice::<u8>().unwrap();
        // Record 2, green plane (offset 1024), row 1, column 5.
        assert_eq!(
            px[2 * 3072 + 1024 + 32 + 5],
            ((2 * 7 + 1024 + 32 + 5) % 256) as u8
        );
        let (x, y) = read_batches(&[&p1, &p2]).unwrap();
        assert_eq!(x.shape()[0], 15);
        assert_eq!(y[3..], (0..12).map(|r| r % 10).collect::<Vec<i64>>()[..]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rejects_partial_records_and_bad_labels() {
        let mut b = generated(2);
        b.pop();
        assert!(parse_batch(&b).is_err());
        let mut b = generated(1);
        b[0] = 10;
        assert!(parse_batch(&b).unwrap_err().contains("label 10"));
        assert!(parse_batch(&[]).is_err());
    }
}
