//! Gradient clipping, as `torch.nn.utils.clip_grad_norm_` and `clip_grad_value_`.
//!
//! Clipping by global norm rescales every gradient by the same factor, so the
//! update keeps its direction and only its length is bounded; clipping by
//! value clamps each element and does change the direction.

/// Rescales `grads` so their joint L2 norm is at most `max_norm`; returns the
/// norm before clipping. As in PyTorch the factor is
/// `min(1, max_norm / (norm + 1e-6))`, so gradients already inside the ball are
/// left untouched and a zero gradient never divides by zero. A non-finite norm
/// is returned as is (the caller decides; the trainer stops on it).
pub fn clip_grad_norm(grads: &mut [&mut [f32]], max_norm: f32) -> f32 {
    let sq: f64 = grads
        .iter()
        .flat_map(|g| g.iter())
        .map(|&x| x as f64 * x as f64)
        .sum();
    let norm = sq.sqrt() as f32;
    let coef = (max_norm as f64 / (norm as f64 + 1e-6)).min(1.0) as f32;
    if norm.is_finite() && coef < 1.0 {
        for g in grads.iter_mut() {
            g.iter_mut().for_each(|x| *x *= coef);
        }
    }
    norm
}

/// Clamps every gradient element into `[-clip, clip]`.
pub fn clip_grad_value(grads: &mut [&mut [f32]], clip: f32) {
    let c = clip.abs();
    for g in grads.iter_mut() {
        g.iter_mut().for_each(|x| *x = x.clamp(-c, c));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_norm_rescales_all_tensors_by_one_factor() {
        let (mut a, mut b) = (vec![3.0f32, 0.0], vec![0.0f32, 4.0, 0.0]);
        let norm = clip_grad_norm(&mut [&mut a, &mut b], 1.0);
        assert_eq!(norm, 5.0);
        let k = 1.0 / (5.0 + 1e-6);
        assert!((a[0] - 3.0 * k as f32).abs() < 1e-7);
        assert!((b[1] - 4.0 * k as f32).abs() < 1e-7);
        let joint: f32 = a.iter().chain(&b).map(|x| x * x).sum::<f32>().sqrt();
        assert!(joint <= 1.0 && joint > 0.9999);
    }

    #[test]
    fn small_and_zero_gradients_are_untouched() {
        let mut a = vec![0.1f32, -0.2];
        assert!((clip_grad_norm(&mut [&mut a], 10.0) - 0.223_606_8).abs() < 1e-6);
        assert_eq!(a, vec![0.1, -0.2]);
        let mut z = vec![0.0f32; 3];
        assert_eq!(clip_grad_norm(&mut [&mut z], 1.0), 0.0);
        assert_eq!(z, vec![0.0; 3]);
        let mut n = vec![f32::NAN, 1.0];
        assert!(clip_grad_norm(&mut [&mut n], 1.0).is_nan());
    }

    #[test]
    fn value_clipping_clamps_elementwise() {
        let mut a = vec![-3.0f32, 0.5, 2.0];
        clip_grad_value(&mut [&mut a], 1.0);
        assert_eq!(a, vec![-1.0, 0.5, 1.0]);
    }
}
