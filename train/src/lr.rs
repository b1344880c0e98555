//! Learning-rate schedules: linear warm-up, then constant, linear or cosine decay.

use serde::{Deserialize, Serialize};

/// The shape of the decay after warm-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decay {
    /// Stay at the peak.
    Constant,
    /// Linear from the peak to `min_lr` at the last step.
    Linear,
    /// Half a cosine from the peak to `min_lr` at the last step.
    Cosine,
}

/// Warm-up then decay, as in `transformers.get_{linear,cosine}_schedule_with_warmup`
/// (with an optional floor `min_lr`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    /// Peak learning rate.
    pub peak: f64,
    /// Linear warm-up steps from 0 to `peak`.
    pub warmup_steps: usize,
    /// Total optimizer steps.
    pub total_steps: usize,
    /// Decay after warm-up.
    pub decay: Decay,
    /// Final learning rate.
    pub min_lr: f64,
}

impl LrSchedule {
    /// Learning rate of optimizer step `step` (0-based).
    pub fn at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.peak * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
        let factor = match self.decay {
            Decay::Constant => 1.0,
            Decay::Linear => 1.0 - progress,
            Decay::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
        };
        self.min_lr + (self.peak - self.min_lr) * factor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(decay: Decay) -> LrSchedule {
        LrSchedule {
            peak: 1e-3,
            warmup_steps: 10,
            total_steps: 110,
            decay,
            min_lr: 0.0,
        }
    }

    #[test]
    fn warmup_then_decay_follow_the_formulas() {
        let lin = sched(Decay::Linear);
        assert!((lin.at(0) - 1e-4).abs() < 1e-15);
        assert!((lin.at(9) - 1e-3).abs() < 1e-15);
        assert!((lin.at(10) - 1e-3).abs() < 1e-15);
        assert!((lin.at(60) - 5e-4).abs() < 1e-15);
        assert!(lin.at(110).abs() < 1e-15);
        assert!(lin.at(500).abs() < 1e-15);
        let cos = sched(Decay::Cosine);
        assert!((cos.at(60) - 5e-4).abs() < 1e-15);
        // a quarter of the way: 0.5 (1 + cos(pi/4))
        let want = 1e-3 * 0.5 * (1.0 + (std::f64::consts::PI / 4.0).cos());
        assert!((cos.at(35) - want).abs() < 1e-15);
        assert_eq!(sched(Decay::Constant).at(100), 1e-3);
        let floor = LrSchedule {
            min_lr: 1e-5,
            ..sched(Decay::Linear)
        };
        assert!((floor.at(110) - 1e-5).abs() < 1e-15);
    }
}
