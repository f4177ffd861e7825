//! Fashion-MNIST from the asset cache against the shared, independently made
//! sample (shared/data/fashion/test_sample_{x,y}.npy: the first 256 test
//! images and labels, written by the reference-model tooling from the Debian
//! package's files).

use shrink_data::{npy::read_npy, Dataset, Split};
use std::path::PathBuf;

fn shared(name: &str) -> PathBuf {
    let p = shrink_data::shared_data_dir()
        .expect("shared/data not found (set SHRINK_SHARED)")
        .join("fashion")
        .join(name);
    assert!(p.is_file(), "reference file {} is missing", p.display());
    p
}

fn open(split: Split) -> Dataset {
    Dataset::open("fashion-mnist", split).unwrap_or_else(|e| {
        panic!("Fashion-MNIST is missing ({e}); run scripts/fetch-assets fashion")
    })
}

#[test]
fn test_split_matches_the_reference_sample() {
    let d = open(Split::Test);
    assert_eq!(d.len(), 10_000);
    assert_eq!(d.image_shape(), &[28, 28]);
    assert!(d.labels.iter().all(|&y| (0..10).contains(&y)));
    // Every class is present, 1000 each in the test split.
    for c in 0..10 {
        assert_eq!(d.labels.iter().filter(|&&y| y == c).count(), 1000);
    }
    let x = read_npy(shared("test_sample_x.npy")).unwrap();
    let y = read_npy(shared("test_sample_y.npy")).unwrap();
    let first = d.take(256);
    assert_eq!(first.images.shape(), x.shape());
    assert_eq!(first.images, x);
    assert_eq!(first.labels, y.to_i64_vec());

    // The first batch is f32 [B,1,28,28] = pixel / 255, as the shared models expect.
    let (bx, by) = d.batches(32).next().unwrap().unwrap();
    assert_eq!(bx.shape(), &[32, 1, 28, 28]);
    assert_eq!(by, y.to_i64_vec()[..32]);
    let px = x.as_slice::<u8>().unwrap();
    let fx = bx.as_slice::<f32>().unwrap();
    for i in 0..32 * 784 {
        assert_eq!(fx[i], px[i] as f32 / 255.0);
    }
}

#[test]
fn train_split_has_60000_images() {
    let d = open(Split::Train);
    assert_eq!(d.len(), 60_000);
    assert_eq!(d.images.shape(), &[60_000, 28, 28]);
}

#[test]
fn explicit_directory_spec_and_raw_idx() {
    // The cache directory named explicitly gives the same data.
    let dir = shrink_data::cache_dir().join("fashion-mnist");
    let d = Dataset::open(&format!("fashion-mnist:{}", dir.display()), Split::Test).unwrap();
    assert_eq!(d.take(5), open(Split::Test).take(5));
}
