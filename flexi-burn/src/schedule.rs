//! Rank schedules: which rank each sample gets, in training and at inference (SPEC 2.3).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::{FlexiError, Result};
use crate::lora::SampleRanks;

/// Whether ranks are drawn for a training step or for inference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// An optimizer step.
    Train,
    /// Evaluation / generation.
    Inference,
}

/// How ranks are assigned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RankSchedule {
    /// LoRA-r: the same rank for every sample, always.
    Fixed {
        /// The rank.
        rank: usize,
    },
    #[serde(rename = "dylora")]
    /// DyLoRA: one rank `b ~ U{1..r_max}` per training step for the whole model; a fixed
    /// `eval_rank` at inference. `frozen` detaches components `1..b-1` (only the b-th learns).
    DyLoRA {
        /// Largest rank drawn.
        r_max: usize,
        /// Reference-code "frozen" mode.
        frozen: bool,
        /// Rank used at inference.
        eval_rank: usize,
    },
    #[serde(rename = "dylora_plus")]
    /// DyLoRA+: a random rank per batch both in training and at inference.
    DyLoRAPlus {
        /// Largest rank drawn.
        r_max: usize,
    },
    /// Flexi-LoRA: the router's per-sample ranks, identical in training and inference.
    Routed,
}

impl RankSchedule {
    /// Largest rank this schedule can produce (`None` for [`RankSchedule::Routed`], whose ranks
    /// come from the class->rank map).
    pub fn max_rank(&self) -> Option<usize> {
        match self {
            RankSchedule::Fixed { rank } => Some(*rank),
            RankSchedule::DyLoRA {
                r_max, eval_rank, ..
            } => Some((*r_max).max(*eval_rank)),
            RankSchedule::DyLoRAPlus { r_max } => Some(*r_max),
            RankSchedule::Routed => None,
        }
    }

    /// Checks the schedule against an adapter's `r_max`.
    pub fn validate(&self, adapter_r_max: usize) -> Result<()> {
        let check = |field: &'static str, value: usize| {
            if value == 0 || value > adapter_r_max {
                Err(FlexiError::InvalidConfig {
                    field,
                    value: value.to_string(),
                    expected: "a rank in 1..=r_max of the adapter",
                })
            } else {
                Ok(())
            }
        };
        match self {
            RankSchedule::Fixed { rank } => check("rank", *rank),
            RankSchedule::DyLoRA {
                r_max, eval_rank, ..
            } => check("r_max", *r_max).and(check("eval_rank", *eval_rank)),
            RankSchedule::DyLoRAPlus { r_max } => check("r_max", *r_max),
            RankSchedule::Routed => Ok(()),
        }
    }
}

/// Draws ranks from a [`RankSchedule`] with a seeded generator: the same seed gives the same
/// sequence of ranks.
#[derive(Clone, Debug)]
pub struct RankSampler {
    schedule: RankSchedule,
    rng: StdRng,
}

impl RankSampler {
    /// A sampler for `schedule`, seeded.
    pub fn new(schedule: RankSchedule, seed: u64) -> Self {
        Self {
            schedule,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The schedule.
    pub fn schedule(&self) -> &RankSchedule {
        &self.schedule
    }

    /// The generator's state, for checkpoints (restore with [`RankSampler::set_rng`]).
    pub fn rng(&self) -> &StdRng {
        &self.rng
    }

    /// Restores the generator's state.
    pub fn set_rng(&mut self, rng: StdRng) {
        self.rng = rng;
    }

    /// Ranks for one batch of `batch` samples. `routed` are the router's ranks, required for
    /// [`RankSchedule::Routed`] and ignored otherwise.
    pub fn ranks(
        &mut self,
        batch: usize,
        phase: Phase,
        routed: Option<&[usize]>,
    ) -> Result<SampleRanks> {
        if batch == 0 {
            return Err(FlexiError::EmptyBatch);
        }
        Ok(match (&self.schedule, phase) {
            (RankSchedule::Fixed { rank }, _) => SampleRanks::uniform(batch, *rank),
            (RankSchedule::DyLoRA { r_max, frozen, .. }, Phase::Train) => {
                let b = self.rng.random_range(1..=*r_max);
                SampleRanks::uniform(batch, b).with_frozen_prefix(*frozen)
            }
            (RankSchedule::DyLoRA { eval_rank, .. }, Phase::Inference) => {
                SampleRanks::uniform(batch, *eval_rank)
            }
            (RankSchedule::DyLoRAPlus { r_max }, _) => {
                SampleRanks::uniform(batch, self.rng.random_range(1..=*r_max))
            }
            (RankSchedule::Routed, _) => {
                let routed = routed.ok_or(FlexiError::InvalidConfig {
                    field: "schedule",
                    value: "routed".into(),
                    expected: "router ranks for every batch of a routed schedule",
                })?;
                if routed.len() != batch {
                    return Err(FlexiError::BatchMismatch {
                        ranks: routed.len(),
                        batch,
                    });
                }
                SampleRanks::new(routed.to_vec())
            }
        })
    }
}

/// Mixes a seed and a counter (SplitMix64), so each step or batch has its own stream.
pub fn mix(seed: u64, counter: u64) -> u64 {
    let mut z = seed ^ counter.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The inference ranks of batch `batch_index` (0-based, in the order batches are run) of an
/// evaluation seeded by `seed`: the one definition every evaluation (text and speech) and the
/// tests use. Each batch draws from its own generator, seeded from `(seed, batch_index)`, so a
/// batch's ranks do not depend on how many batches ran before it. LoRA and DyLoRA give their
/// fixed (eval) rank; DyLoRA+ one random rank per batch; a routed schedule the router's ranks.
pub fn inference_ranks(
    schedule: &RankSchedule,
    seed: u64,
    batch_index: usize,
    n: usize,
    routed: Option<&[usize]>,
) -> Result<SampleRanks> {
    let mut s = RankSampler::new(schedule.clone(), mix(seed ^ 0xe7, batch_index as u64));
    s.ranks(n, Phase::Inference, routed)
}
