//! Labelled image datasets: loading by a short spec, scaling, batching.

use crate::{cache_dir, cifar, idx, npy, DataError, Result};
use shrink_tensor::{DType, Tensor, TensorData};
use std::path::{Path, PathBuf};

/// Which part of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

/// How stored pixels become model inputs: `x = (pixel / scale - mean[c]) / std[c]`,
/// with `mean`/`std` either one value or one per channel.
///
/// The default is `pixel / 255` with no normalisation, because that is what the
/// shared Fashion-MNIST reference models were trained on; a wrong scaling does
/// not fail loudly, it just costs accuracy, so the default must match them.
/// `scale` divides (as torchvision's `ToTensor` does) rather than multiplying
/// by `1/255`, which would differ from PyTorch's inputs in the last bit.
#[derive(Debug, Clone, PartialEq)]
pub struct Scaling {
    pub scale: f32,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Default for Scaling {
    fn default() -> Self {
        Scaling {
            scale: 255.0,
            mean: vec![0.0],
            std: vec![1.0],
        }
    }
}

impl Scaling {
    /// Leaves values as stored (for data that is already float and normalised).
    pub fn identity() -> Scaling {
        Scaling {
            scale: 1.0,
            mean: vec![0.0],
            std: vec![1.0],
        }
    }
}

/// Images (u8 or f32, `[N, ...]`) with one i64 label per image.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub images: Tensor,
    pub labels: Vec<i64>,
    /// Applied by [`Dataset::batches`]; `pixel / 255` for u8 images, identity for floats.
    pub scaling: Scaling,
}

impl Dataset {
    /// Pairs images and labels, checking that the counts agree.
    pub fn new(images: Tensor, labels: Vec<i64>) -> std::result::Result<Dataset, String> {
        if images.rank() == 0 || images.shape()[0] != labels.len() {
            return Err(format!(
                "{} labels for images of shape {:?}",
                labels.len(),
                images.shape()
            ));
        }
        let scaling = match images.dtype() {
            DType::U8 => Scaling::default(),
            DType::F32 => Scaling::identity(),
            other => return Err(format!("images must be u8 or f32, found {other}")),
        };
        Ok(Dataset {
            images,
            labels,
            scaling,
        })
    }

    /// Opens a dataset by spec:
    /// - `fashion-mnist` / `mnist`: IDX files in `$SHRINK_CACHE/<name>`
    /// - `fashion-mnist:DIR`, `mnist:DIR`: IDX files (`.gz` or raw) in DIR
    /// - `cifar10:DIR`: CIFAR-10 binary batches in DIR (or DIR/cifar-10-batches-bin)
    /// - `npz:FILE`: arrays `x`/`y` (or `x_train`/`y_train`, `x_test`/`y_test`)
    pub fn open(spec: &str, split: Split) -> Result<Dataset> {
        let (kind, arg) = match spec.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (spec, None),
        };
        let spec_err = |msg: String| DataError::Spec {
            spec: spec.to_string(),
            msg,
        };
        let dataset = match (kind, arg) {
            ("fashion-mnist" | "mnist", dir) => {
                let dir = dir
                    .map(PathBuf::from)
                    .unwrap_or_else(|| cache_dir().join(kind));
                require_dir(spec, &dir)?;
                open_idx_dir(&dir, split)?
            }
            ("cifar10", Some(dir)) => {
                let mut dir = PathBuf::from(dir);
                require_dir(spec, &dir)?;
                if dir.join("cifar-10-batches-bin").is_dir() {
                    dir = dir.join("cifar-10-batches-bin");
                }
                let files: Vec<PathBuf> = match split {
                    Split::Train => (1..=5)
                        .map(|i| dir.join(format!("data_batch_{i}.bin")))
                        .collect(),
                    Split::Test => vec![dir.join("test_batch.bin")],
                };
                let (x, y) = cifar::read_batches(&files)?;
                Dataset::new(x, y).map_err(spec_err)?
            }
            ("npz", Some(file)) => open_npz(Path::new(file), split)?,
            _ => {
                return Err(spec_err(
                    "unknown dataset spec (expected fashion-mnist[:DIR], mnist[:DIR], \
                     cifar10:DIR or npz:FILE)"
                        .into(),
                ))
            }
        };
        Ok(dataset)
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Shape of one image as stored (e.g. `[28, 28]`, `[3, 32, 32]`).
    pub fn image_shape(&self) -> &[usize] {
        &self.images.shape()[1..]
    }

    /// Labels as an i64 tensor `[N]`.
    pub fn labels_tensor(&self) -> Tensor {
        Tensor::from_vec(vec![self.labels.len()], self.labels.clone()).expect("length matches")
    }

    pub fn with_scaling(mut self, scaling: Scaling) -> Dataset {
        self.scaling = scaling;
        self
    }

    /// The first `n` examples (all of them if there are fewer).
    pub fn take(&self, n: usize) -> Dataset {
        self.range(0, n.min(self.len()))
    }

    /// Examples `start..end` (clamped to the dataset).
    pub fn range(&self, start: usize, end: usize) -> Dataset {
        let end = end.min(self.len());
        let start = start.min(end);
        let per: usize = self.image_shape().iter().product();
        let data =
            shrink_tensor::map_data!(self.images.data(), v => v[start * per..end * per].to_vec());
        let mut shape = self.images.shape().to_vec();
        shape[0] = end - start;
        Dataset {
            images: Tensor::new(shape, data).expect("slice of a valid tensor"),
            labels: self.labels[start..end].to_vec(),
            scaling: self.scaling.clone(),
        }
    }

    /// Scaled f32 model inputs for examples `start..end`, shaped `[B, C, ...]`:
    /// single-channel `[N, H, W]` images get a channel axis (`[B, 1, H, W]`).
    pub fn inputs(&self, start: usize, end: usize) -> Result<Tensor> {
        let part = self.range(start, end);
        let mut shape = part.images.shape().to_vec();
        if shape.len() == 3 {
            shape.insert(1, 1);
        }
        let channels = if shape.len() >= 2 { shape[1] } else { 1 };
        let per_channel: usize = shape.iter().skip(2).product();
        let s = &self.scaling;
        let pick = |v: &[f32], c: usize, what: &str| -> Result<f32> {
            match v.len() {
                1 => Ok(v[0]),
                n if n == channels => Ok(v[c]),
                n => Err(DataError::Spec {
                    spec: "scaling".into(),
                    msg: format!("{what} has {n} values for {channels} channels"),
                }),
            }
        };
        let raw: Vec<f32> = match part.images.data() {
            TensorData::U8(v) => v.iter().map(|&p| p as f32).collect(),
            TensorData::F32(v) => v.clone(),
            _ => part.images.to_f32_vec(),
        };
        let mut out = raw;
        for (i, x) in out.iter_mut().enumerate() {
            let c = i.checked_div(per_channel).unwrap_or(0) % channels.max(1);
            *x = (*x / s.scale - pick(&s.mean, c, "mean")?) / pick(&s.std, c, "std")?;
        }
        Ok(Tensor::from_vec(shape, out)?)
    }

    /// Iterates over `(x, y)` batches of at most `batch` examples, in order.
    pub fn batches(&self, batch: usize) -> Batches<'_> {
        Batches {
            data: self,
            batch: batch.max(1),
            next: 0,
        }
    }
}

/// Iterator of `(f32 inputs [B, ...], labels)`; see [`Dataset::batches`].
pub struct Batches<'a> {
    data: &'a Dataset,
    batch: usize,
    next: usize,
}

impl Iterator for Batches<'_> {
    type Item = Result<(Tensor, Vec<i64>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.data.len() {
            return None;
        }
        let (start, end) = (self.next, (self.next + self.batch).min(self.data.len()));
        self.next = end;
        Some(
            self.data
                .inputs(start, end)
                .map(|x| (x, self.data.labels[start..end].to_vec())),
        )
    }
}

fn require_dir(spec: &str, dir: &Path) -> Result<()> {
    if dir.is_dir() {
        Ok(())
    } else {
        Err(DataError::Spec {
            spec: spec.to_string(),
            msg: format!(
                "directory {} does not exist; run scripts/fetch-assets to download the \
                 datasets (or point $SHRINK_CACHE at a cache that has them)",
                dir.display()
            ),
        })
    }
}

/// Finds `stem` or `stem.gz` in `dir`.
fn idx_file(dir: &Path, stem: &str) -> Result<PathBuf> {
    for name in [format!("{stem}.gz"), stem.to_string()] {
        let p = dir.join(&name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(DataError::format(
        &dir.join(stem),
        "missing (neither it nor its .gz exists); run scripts/fetch-assets",
    ))
}

fn open_idx_dir(dir: &Path, split: Split) -> Result<Dataset> {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let xp = idx_file(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let yp = idx_file(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let x = idx::read_idx(&xp)?;
    let y = idx::read_idx(&yp)?;
    if y.rank() != 1 {
        return Err(DataError::format(
            &yp,
            format!("labels have shape {:?}, expected [N]", y.shape()),
        ));
    }
    Dataset::new(x, y.to_i64_vec()).map_err(|msg| DataError::format(&xp, msg))
}

fn open_npz(file: &Path, split: Split) -> Result<Dataset> {
    let arrays = npy::read_npz(file)?;
    let get = |stem: &str| -> Option<Tensor> {
        let suffixed = format!("{stem}_{}", split.name());
        arrays
            .iter()
            .find(|(k, _)| *k == suffixed)
            .or_else(|| arrays.iter().find(|(k, _)| k == stem))
            .map(|(_, t)| t.clone())
    };
    let names: Vec<&str> = arrays.iter().map(|(k, _)| k.as_str()).collect();
    let (Some(x), Some(y)) = (get("x"), get("y")) else {
        return Err(DataError::format(
            file,
            format!(
                "needs arrays x and y (or x_{0}/y_{0}); it has {names:?}",
                split.name()
            ),
        ));
    };
    if y.rank() != 1 || !(y.dtype().is_int()) {
        return Err(DataError::format(
            file,
            format!(
                "y must be integer labels [N], found {} {:?}",
                y.dtype(),
                y.shape()
            ),
        ));
    }
    let x = if x.dtype() == DType::U8 || x.dtype() == DType::F32 {
        x
    } else {
        x.cast(DType::F32)
    };
    Dataset::new(x, y.to_i64_vec()).map_err(|msg| DataError::format(file, msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Dataset {
        let x = Tensor::from_vec(vec![5, 2, 2], (0..20u8).map(|v| v * 10).collect()).unwrap();
        Dataset::new(x, vec![0, 1, 2, 3, 4]).unwrap()
    }

    #[test]
    fn batches_cover_everything_in_order_with_a_channel_axis() {
        let d = tiny();
        let batches: Vec<_> = d.batches(2).map(|b| b.unwrap()).collect();
        assert_eq!(batches.len(), 3);
        assert_eq!(batches[0].0.shape(), &[2, 1, 2, 2]);
        assert_eq!(batches[2].0.shape(), &[1, 1, 2, 2]);
        assert_eq!(batches[2].1, vec![4]);
        let x = batches[1].0.as_slice::<f32>().unwrap();
        assert_eq!(x[0], 80.0 / 255.0);
    }

    #[test]
    fn scaling_is_per_channel_when_asked() {
        let x = Tensor::from_vec(vec![1, 2, 1, 2], vec![10u8, 20, 30, 40]).unwrap();
        let d = Dataset::new(x, vec![1]).unwrap().with_scaling(Scaling {
            scale: 1.0,
            mean: vec![10.0, 20.0],
            std: vec![2.0, 5.0],
        });
        let t = d.inputs(0, 1).unwrap();
        assert_eq!(t.as_slice::<f32>().unwrap(), &[0.0, 5.0, 2.0, 4.0]);
        let bad = d.clone().with_scaling(Scaling {
            scale: 1.0,
            mean: vec![0.0; 3],
            std: vec![1.0],
        });
        assert!(bad.inputs(0, 1).is_err());
    }

    #[test]
    fn take_and_mismatched_counts() {
        let d = tiny();
        assert_eq!(d.take(3).len(), 3);
        assert_eq!(d.take(30).len(), 5);
        assert_eq!(d.take(3).images.shape(), &[3, 2, 2]);
        let x = Tensor::from_vec(vec![2, 1], vec![0u8, 1]).unwrap();
        assert!(Dataset::new(x, vec![0]).is_err());
    }

    #[test]
    fn npz_and_cifar_specs() {
        let dir = std::env::temp_dir().join(format!("shrink-ds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let x = Tensor::from_vec(vec![3, 2, 2], (0..12u8).collect()).unwrap();
        let y = Tensor::from_vec(vec![3], vec![2i64, 0, 1]).unwrap();
        let ytest = Tensor::from_vec(vec![3], vec![9i64, 9, 9]).unwrap();
        let f = dir.join("d.npz");
        npy::write_npz(&f, &[("x", &x), ("y", &y), ("y_test", &ytest)], true).unwrap();
        let spec = format!("npz:{}", f.display());
        let train = Dataset::open(&spec, Split::Train).unwrap();
        assert_eq!(train.images, x);
        assert_eq!(train.labels, vec![2, 0, 1]);
        // A split-specific array wins over the plain one.
        assert_eq!(
            Dataset::open(&spec, Split::Test).unwrap().labels,
            vec![9, 9, 9]
        );
        npy::write_npz(&f, &[("x", &x)], false).unwrap();
        let e = Dataset::open(&spec, Split::Train).unwrap_err().to_string();
        assert!(e.contains("d.npz") && e.contains("x and y"), "{e}");

        let mut rec = vec![7u8];
        rec.extend((0..3072).map(|p| (p % 251) as u8));
        std::fs::write(dir.join("test_batch.bin"), [rec.clone(), rec].concat()).unwrap();
        let c = Dataset::open(&format!("cifar10:{}", dir.display()), Split::Test).unwrap();
        assert_eq!(c.images.shape(), &[2, 3, 32, 32]);
        assert_eq!(c.labels, vec![7, 7]);
        let (bx, _) = c.batches(8).next().unwrap().unwrap();
        assert_eq!(bx.shape(), &[2, 3, 32, 32]);
        // Training batches are absent here: the error names the missing file.
        let e = Dataset::open(&format!("cifar10:{}", dir.display()), Split::Train).unwrap_err();
        assert!(e.to_string().contains("data_batch_1.bin"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_directory_points_to_fetch_assets() {
        let e = Dataset::open("mnist:/nonexistent/shrink-dir", Split::Test).unwrap_err();
        assert!(e.to_string().contains("scripts/fetch-assets"), "{e}");
        assert!(Dataset::open("imagenet", Split::Test).is_err());
    }
}
