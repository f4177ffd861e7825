//! Learning-rate schedules with PyTorch's `lr_scheduler` semantics.
//!
//! PyTorch computes most schedules recursively (each rate from the previous
//! one) in f64, and its cosine schedule keeps going past `T_max` (the rate
//! climbs back up: it is periodic with period `2·T_max`). We reproduce the
//! recursions exactly rather than the closed forms, so the rates agree with
//! PyTorch to the last bit and a resumed run replays the same sequence.
//!
//! A "step" is whatever the trainer advances the schedule by: one optimiser
//! update (the default, matching `scheduler.step()` per batch) or one epoch.

use std::f64::consts::PI;

/// The shape of the learning-rate curve, relative to a base rate.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// The base rate throughout.
    Constant,
    /// `StepLR`: multiply by `gamma` every `step_size` steps.
    Step { step_size: u64, gamma: f64 },
    /// `CosineAnnealingLR`: half a cosine from the base rate down to `eta_min`
    /// over `t_max` steps.
    Cosine { t_max: u64, eta_min: f64 },
    /// `LinearLR(start_factor, end_factor=1, total_iters=steps)` for the first
    /// `steps` steps, then `then` started afresh from the base rate (what
    /// `SequentialLR([LinearLR, then], milestones=[steps])` does).
    Warmup {
        steps: u64,
        start_factor: f64,
        then: Box<Schedule>,
    },
}

impl Schedule {
    /// The rates of steps `0..n` for base rate `base`.
    pub fn rates(&self, base: f64, n: u64) -> Vec<f64> {
        let mut s = Scheduler::new(self.clone(), base);
        (0..n)
            .map(|_| {
                let lr = s.lr();
                s.step();
                lr
            })
            .collect()
    }

    /// The rate at step `t` (replays the recursion from step 0).
    pub fn rate_at(&self, base: f64, t: u64) -> f64 {
        let mut s = Scheduler::new(self.clone(), base);
        for _ in 0..t {
            s.step();
        }
        s.lr()
    }
}

/// A schedule being followed: the current step and rate.
#[derive(Debug, Clone, PartialEq)]
pub struct Scheduler {
    schedule: Schedule,
    base: f64,
    /// PyTorch's `last_epoch`: steps taken so far.
    t: u64,
    lr: f64,
    /// For `Warmup`: the follow-up schedule once the warm-up is over.
    inner: Option<Box<Scheduler>>,
}

impl Scheduler {
    pub fn new(schedule: Schedule, base: f64) -> Scheduler {
        let (lr, inner) = match &schedule {
            // No warm-up at all: the follow-up schedule from the start.
            Schedule::Warmup { steps: 0, then, .. } => {
                let inner = Scheduler::new((**then).clone(), base);
                (inner.lr, Some(Box::new(inner)))
            }
            Schedule::Warmup { start_factor, .. } => (base * start_factor, None),
            _ => (base, None),
        };
        Scheduler {
            schedule,
            base,
            t: 0,
            lr,
            inner,
        }
    }

    /// The rate for the current step.
    pub fn lr(&self) -> f64 {
        match &self.inner {
            Some(inner) => inner.lr(),
            None => self.lr,
        }
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.t
    }

    /// Advances one step (PyTorch's `scheduler.step()`).
    pub fn step(&mut self) {
        self.t += 1;
        let t = self.t;
        let lr = self.lr;
        self.lr = match &self.schedule {
            Schedule::Constant => lr,
            Schedule::Step { step_size, gamma } => {
                if *step_size > 0 && t.is_multiple_of(*step_size) {
                    lr * gamma
                } else {
                    lr
                }
            }
            Schedule::Cosine { t_max, eta_min } => {
                let (tm, eta) = ((*t_max).max(1) as f64, *eta_min);
                let tf = t as f64;
                if (t as i64 - 1 - tm as i64).rem_euclid(2 * tm as i64) == 0 {
                    lr + (self.base - eta) * (1.0 - (PI / tm).cos()) / 2.0
                } else {
                    (1.0 + (PI * tf / tm).cos()) / (1.0 + (PI * (tf - 1.0) / tm).cos()) * (lr - eta)
                        + eta
                }
            }
            Schedule::Warmup {
                steps,
                start_factor,
                then,
            } => {
                if let Some(inner) = self.inner.as_mut() {
                    inner.step();
                    return;
                }
                if t >= *steps {
                    let inner = Scheduler::new((**then).clone(), self.base);
                    self.lr = inner.lr();
                    self.inner = Some(Box::new(inner));
                    return;
                }
                let (total, s) = (*steps as f64, *start_factor);
                lr * (1.0 + (1.0 - s) / (total * s + (t as f64 - 1.0) * (1.0 - s)))
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bit-for-bit equality with PyTorch's rates (printed by bench/train_fixtures.py).
    fn assert_same(ours: &[f64], torch: &[f64]) {
        assert_eq!(ours, torch);
    }

    #[test]
    fn cosine_follows_torch_including_past_t_max() {
        let s = Schedule::Cosine {
            t_max: 5,
            eta_min: 0.001,
        };
        assert_same(
            &s.rates(0.1, 12),
            &[
                0.1,
                0.0905463412215599,
                0.06579634122155989,
                0.035203658778440096,
                0.010453658778440105,
                0.001,
                0.010453658778440102,
                0.03520365877844012,
                0.06579634122155993,
                0.09054634122155995,
                0.10000000000000005,
                0.09054634122155998,
            ],
        );
        // And the closed form, to within rounding.
        for (t, lr) in s.rates(0.1, 6).iter().enumerate() {
            let closed = 0.001 + 0.099 * (1.0 + (PI * t as f64 / 5.0).cos()) / 2.0;
            assert!((lr - closed).abs() < 1e-15, "{t}: {lr} vs {closed}");
        }
    }

    #[test]
    fn step_and_warmup_follow_torch() {
        let step = Schedule::Step {
            step_size: 3,
            gamma: 0.5,
        };
        assert_same(
            &step.rates(0.1, 8),
            &[0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025],
        );
        let warm = Schedule::Warmup {
            steps: 4,
            start_factor: 0.25,
            then: Box::new(Schedule::Constant),
        };
        let r = warm.rates(0.1, 6);
        assert_same(
            &r[..4],
            &[
                0.025,
                0.043750000000000004,
                0.06250000000000001,
                0.08125000000000002,
            ],
        );
        // After the warm-up the follow-up schedule restarts from the base rate.
        assert_same(&r[4..], &[0.1, 0.1]);
    }

    #[test]
    fn warmup_then_cosine_restarts_the_cosine_at_the_milestone() {
        let cos = Schedule::Cosine {
            t_max: 6,
            eta_min: 0.0,
        };
        let s = Schedule::Warmup {
            steps: 2,
            start_factor: 0.5,
            then: Box::new(cos.clone()),
        };
        let r = s.rates(1.0, 8);
        assert_same(&r[..2], &[0.5, 0.75]);
        assert_same(&r[2..], &cos.rates(1.0, 6));
        assert_eq!(s.rate_at(1.0, 5), r[5]);
        let zero = Schedule::Warmup {
            steps: 0,
            start_factor: 0.1,
            then: Box::new(cos.clone()),
        };
        assert_same(&zero.rates(1.0, 6), &cos.rates(1.0, 6));
    }
}
