//! Losses on a model's outputs, each returning the scalar loss and its
//! gradient with respect to the model's output (what the executor's backward
//! pass starts from).
//!
//! The formulas are PyTorch's, so a recipe ported from PyTorch trains the same:
//! - [`cross_entropy`]: `F.cross_entropy(logits, y, label_smoothing=ε)`, mean over
//!   the batch; with smoothing the target is `(1-ε)·onehot + ε/C`.
//! - [`mse`]: `F.mse_loss(pred, target)`, mean over every element.
//! - [`kl_distillation`]: Hinton et al. (2015) knowledge distillation,
//!   `T² · F.kl_div(log_softmax(s/T), softmax(t/T), reduction="batchmean")`; the
//!   `T²` keeps the gradient's size independent of the temperature.
//!
//! Softmaxes subtract the row maximum first and sums accumulate in f64, so
//! large logits neither overflow nor lose the small terms.

use shrink_tensor::Tensor;

/// A loss given inputs it cannot use; every variant says which argument is wrong.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum LossError {
    #[error("{what}: expected {expected}, found shape {found:?}")]
    Shape {
        what: &'static str,
        expected: String,
        found: Vec<usize>,
    },
    #[error("label {label} of sample {sample} is outside 0..{classes}")]
    Label {
        sample: usize,
        label: i64,
        classes: usize,
    },
    #[error("{what} must be f32, found {found}")]
    DType {
        what: &'static str,
        found: shrink_tensor::DType,
    },
    #[error("{what} must be {rule}, got {value}")]
    Param {
        what: &'static str,
        rule: &'static str,
        value: f32,
    },
}

pub type Result<T, E = LossError> = std::result::Result<T, E>;

/// A loss value and the gradient of that value with respect to the model output
/// (same shape as the output).
#[derive(Debug, Clone, PartialEq)]
pub struct LossValue {
    pub loss: f32,
    pub grad: Tensor,
}

/// `[B, C]` logits as an f32 slice with its two dimensions.
fn rows<'a>(t: &'a Tensor, what: &'static str) -> Result<(&'a [f32], usize, usize)> {
    if t.rank() != 2 || t.shape()[1] == 0 {
        return Err(LossError::Shape {
            what,
            expected: "[batch, classes] with classes > 0".into(),
            found: t.shape().to_vec(),
        });
    }
    let v = t.as_slice::<f32>().map_err(|_| LossError::DType {
        what,
        found: t.dtype(),
    })?;
    Ok((v, t.shape()[0], t.shape()[1]))
}

/// Log-softmax of one row divided by `temperature`, in f64.
fn log_softmax(row: &[f32], temperature: f64) -> Vec<f64> {
    let max = row.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64)) / temperature;
    let shifted: Vec<f64> = row.iter().map(|&x| x as f64 / temperature - max).collect();
    let lse = shifted.iter().map(|z| z.exp()).sum::<f64>().ln();
    shifted.into_iter().map(|z| z - lse).collect()
}

/// Mean cross-entropy of `logits` `[B, C]` against class indices, with optional
/// label smoothing `ε ∈ [0, 1]`: per sample `-(1-ε)·log p_y - ε/C · Σ_c log p_c`.
/// Gradient: `(softmax(logits) - q) / B` with `q` the smoothed one-hot target.
pub fn cross_entropy(logits: &Tensor, labels: &[i64], label_smoothing: f32) -> Result<LossValue> {
    let (x, b, c) = rows(logits, "logits")?;
    if labels.len() != b {
        return Err(LossError::Shape {
            what: "labels",
            expected: format!("{b} labels (one per row of the logits)"),
            found: vec![labels.len()],
        });
    }
    if !(0.0..=1.0).contains(&label_smoothing) {
        return Err(LossError::Param {
            what: "label smoothing",
            rule: "in [0, 1]",
            value: label_smoothing,
        });
    }
    let eps = label_smoothing as f64;
    let mut total = 0.0f64;
    let mut grad = vec![0.0f32; b * c];
    for (i, &label) in labels.iter().enumerate() {
        let y = usize::try_from(label)
            .ok()
            .filter(|&y| y < c)
            .ok_or(LossError::Label {
                sample: i,
                label,
                classes: c,
            })?;
        let lp = log_softmax(&x[i * c..(i + 1) * c], 1.0);
        let smooth: f64 = lp.iter().sum::<f64>() / c as f64;
        total += -(1.0 - eps) * lp[y] - eps * smooth;
        for (k, g) in grad[i * c..(i + 1) * c].iter_mut().enumerate() {
            let q = eps / c as f64 + if k == y { 1.0 - eps } else { 0.0 };
            *g = ((lp[k].exp() - q) / b as f64) as f32;
        }
    }
    Ok(LossValue {
        loss: (total / b.max(1) as f64) as f32,
        grad: Tensor::from_vec(vec![b, c], grad).expect("b*c elements"),
    })
}

/// Mean squared error over every element; gradient `2 (pred - target) / n`.
pub fn mse(pred: &Tensor, target: &Tensor) -> Result<LossValue> {
    if pred.shape() != target.shape() {
        return Err(LossError::Shape {
            what: "target",
            expected: format!("the prediction's shape {:?}", pred.shape()),
            found: target.shape().to_vec(),
        });
    }
    let p = pred.as_slice::<f32>().map_err(|_| LossError::DType {
        what: "prediction",
        found: pred.dtype(),
    })?;
    let t = target.as_slice::<f32>().map_err(|_| LossError::DType {
        what: "target",
        found: target.dtype(),
    })?;
    let n = p.len().max(1) as f64;
    let mut total = 0.0f64;
    let grad: Vec<f32> = p
        .iter()
        .zip(t)
        .map(|(&a, &b)| {
            let d = a as f64 - b as f64;
            total += d * d;
            (2.0 * d / n) as f32
        })
        .collect();
    Ok(LossValue {
        loss: (total / n) as f32,
        grad: Tensor::new(pred.shape().to_vec(), shrink_tensor::TensorData::F32(grad))
            .expect("same shape"),
    })
}

/// Hinton distillation loss of `student` logits against `teacher` logits (both
/// `[B, C]`) at temperature `T`:
/// `T²/B · Σ_i Σ_c p_t(c) (log p_t(c) − log p_s(c))` with `p = softmax(z/T)`.
/// Gradient with respect to the student logits: `T/B · (p_s − p_t)`.
pub fn kl_distillation(student: &Tensor, teacher: &Tensor, temperature: f32) -> Result<LossValue> {
    let (s, b, c) = rows(student, "student logits")?;
    let (t, tb, tc) = rows(teacher, "teacher logits")?;
    if (tb, tc) != (b, c) {
        return Err(LossError::Shape {
            what: "teacher logits",
            expected: format!("the student's shape [{b}, {c}]"),
            found: vec![tb, tc],
        });
    }
    if !(temperature.is_finite() && temperature > 0.0) {
        return Err(LossError::Param {
            what: "temperature",
            rule: "finite and > 0",
            value: temperature,
        });
    }
    let temp = temperature as f64;
    let mut total = 0.0f64;
    let mut grad = vec![0.0f32; b * c];
    for i in 0..b {
        let ls = log_softmax(&s[i * c..(i + 1) * c], temp);
        let lt = log_softmax(&t[i * c..(i + 1) * c], temp);
        for k in 0..c {
            let pt = lt[k].exp();
            // PyTorch's kl_div uses xlogy: a zero target probability adds 0.
            if pt > 0.0 {
                total += pt * (lt[k] - ls[k]);
            }
            grad[i * c + k] = (temp / b as f64 * (ls[k].exp() - pt)) as f32;
        }
    }
    Ok(LossValue {
        loss: (temp * temp * total / b.max(1) as f64) as f32,
        grad: Tensor::from_vec(vec![b, c], grad).expect("b*c elements"),
    })
}

/// Number of rows whose highest logit is at the label (ties go to the lower
/// index, as PyTorch's argmax does).
pub fn correct(logits: &Tensor, labels: &[i64]) -> Result<usize> {
    let (x, b, c) = rows(logits, "logits")?;
    if labels.len() != b {
        return Err(LossError::Shape {
            what: "labels",
            expected: format!("{b} labels"),
            found: vec![labels.len()],
        });
    }
    Ok((0..b)
        .filter(|&i| {
            let row = &x[i * c..(i + 1) * c];
            let best = (0..c).fold(0, |m, k| if row[k] > row[m] { k } else { m });
            best as i64 == labels[i]
        })
        .count())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap()
    }

    /// Central differences of `f` at `x`, element by element, in f64 steps.
    fn numeric_grad(x: &Tensor, f: impl Fn(&Tensor) -> f32) -> Vec<f32> {
        let base = x.as_slice::<f32>().unwrap().to_vec();
        (0..base.len())
            .map(|i| {
                let h = 1e-2f32;
                let mut p = base.clone();
                p[i] += h;
                let up = f(&t(x.shape(), &p)) as f64;
                p[i] -= 2.0 * h;
                let down = f(&t(x.shape(), &p)) as f64;
                ((up - down) / (2.0 * h as f64)) as f32
            })
            .collect()
    }

    fn assert_close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol, "element {i}: {x} vs {y}");
        }
    }

    const LOGITS: [f32; 8] = [1.0, 2.0, 3.0, -0.5, 0.3, -1.2, 2.5, 0.0];

    #[test]
    fn cross_entropy_matches_the_formula_by_hand() {
        // -log(e^3 / (e + e^2 + e^3)) = 0.40760596 (row 0, label 2)
        let l = cross_entropy(&t(&[1, 3], &LOGITS[..3]), &[2], 0.0).unwrap();
        assert!((l.loss - 0.407_605_96).abs() < 1e-6, "{}", l.loss);
        // gradient = softmax - onehot
        let z: f64 = [1.0f64, 2.0, 3.0].iter().map(|v| v.exp()).sum();
        let sm: Vec<f32> = [1.0f64, 2.0, 3.0]
            .iter()
            .map(|v| (v.exp() / z) as f32)
            .collect();
        assert_close(
            l.grad.as_slice().unwrap(),
            &[sm[0], sm[1], sm[2] - 1.0],
            1e-7,
        );
    }

    #[test]
    fn cross_entropy_agrees_with_torch() {
        // torch.nn.functional.cross_entropy on these logits (bench/train_fixtures.py).
        let x = t(&[2, 4], &LOGITS);
        let plain = cross_entropy(&x, &[2, 0], 0.0).unwrap().loss;
        let smooth = cross_entropy(&x, &[2, 0], 0.1).unwrap().loss;
        assert!((plain - 1.412_193_4).abs() < 2e-6, "{plain}");
        assert!((smooth - 1.488_443_4).abs() < 2e-6, "{smooth}");
    }

    #[test]
    fn cross_entropy_gradient_matches_finite_differences() {
        let x = t(&[2, 4], &LOGITS);
        for eps in [0.0, 0.2] {
            let g = cross_entropy(&x, &[3, 1], eps).unwrap().grad;
            let num = numeric_grad(&x, |x| cross_entropy(x, &[3, 1], eps).unwrap().loss);
            assert_close(g.as_slice().unwrap(), &num, 2e-4);
        }
    }

    #[test]
    fn cross_entropy_survives_huge_logits() {
        let l = cross_entropy(&t(&[1, 2], &[1000.0, -1000.0]), &[1], 0.0).unwrap();
        assert!((l.loss - 2000.0).abs() < 1e-3, "{}", l.loss);
        assert!(l
            .grad
            .as_slice::<f32>()
            .unwrap()
            .iter()
            .all(|g| g.is_finite()));
    }

    #[test]
    fn cross_entropy_rejects_bad_inputs() {
        let x = t(&[2, 4], &LOGITS);
        let e = cross_entropy(&x, &[4, 0], 0.0).unwrap_err();
        assert!(e.to_string().contains("label 4 of sample 0"), "{e}");
        assert!(cross_entropy(&x, &[1], 0.0).is_err());
        assert!(cross_entropy(&x, &[1, 1], 1.5).is_err());
        assert!(cross_entropy(&t(&[8], &LOGITS), &[1], 0.0).is_err());
    }

    #[test]
    fn mse_value_and_gradient() {
        let p = t(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let y = t(&[2, 2], &[0.5, 2.0, 1.0, 5.0]);
        let l = mse(&p, &y).unwrap();
        // (0.25 + 0 + 4 + 1) / 4
        assert!((l.loss - 1.3125).abs() < 1e-7);
        let num = numeric_grad(&p, |p| mse(p, &y).unwrap().loss);
        assert_close(l.grad.as_slice().unwrap(), &num, 1e-4);
        assert!(mse(&p, &t(&[4], &[0.0; 4])).is_err());
    }

    #[test]
    fn distillation_agrees_with_torch_and_finite_differences() {
        let s = t(&[2, 4], &LOGITS);
        let teacher = t(&[2, 4], &[0.5, 2.5, 2.0, -1.0, 1.0, -1.0, 3.0, 0.2]);
        // T² · kl_div(log_softmax(s/T), softmax(t/T), reduction="batchmean") in torch.
        let l4 = kl_distillation(&s, &teacher, 4.0).unwrap().loss;
        assert!((l4 - 0.103_430_27).abs() < 2e-6, "{l4}");
        for temp in [1.0, 4.0] {
            let g = kl_distillation(&s, &teacher, temp).unwrap().grad;
            let num = numeric_grad(&s, |s| kl_distillation(s, &teacher, temp).unwrap().loss);
            assert_close(g.as_slice().unwrap(), &num, 2e-4);
        }
        // A student equal to its teacher has zero loss and zero gradient.
        let same = kl_distillation(&teacher, &teacher, 2.0).unwrap();
        assert!(same.loss.abs() < 1e-6);
        assert!(same
            .grad
            .as_slice::<f32>()
            .unwrap()
            .iter()
            .all(|g| g.abs() < 1e-7));
        assert!(kl_distillation(&s, &teacher, 0.0).is_err());
        assert!(kl_distillation(&s, &t(&[1, 4], &LOGITS[..4]), 1.0).is_err());
    }

    #[test]
    fn correct_counts_argmax_hits() {
        let x = t(&[2, 4], &LOGITS);
        assert_eq!(correct(&x, &[2, 2]).unwrap(), 2);
        assert_eq!(correct(&x, &[0, 2]).unwrap(), 1);
        // Ties go to the lower index.
        assert_eq!(correct(&t(&[1, 2], &[1.0, 1.0]), &[0]).unwrap(), 1);
    }
}
