//! The trainer's optimizer: Burn's AdamW, with its update fused into one in-place pass on the
//! CPU backend.
//!
//! [`FusedAdamW`] is a [`SimpleOptimizer`] whose state is Burn's own [`AdamWState`] (so
//! optimizer checkpoints are Burn's AdamW records, as before). Its update is
//! [`flexi_burn::host::try_adamw_host`] where that applies (burn-flex, f32: the same
//! arithmetic bit for bit, one pass over the cores, buffers written in place) and Burn's
//! [`AdamW`] everywhere else (other backends, half-precision parameters).

use burn::module::AutodiffModule;
use burn::optim::LearningRate;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, AdamWState, AdaptiveMomentumState, SimpleOptimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Device, Tensor};
use flexi_burn::host::{AdamWStep, AdamWTensors, try_adamw_host};

/// AdamW (decoupled weight decay), fused on the CPU backend. Build it with [`FusedAdamW::init`].
#[derive(Clone)]
pub struct FusedAdamW {
    burn: AdamW,
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
    weight_decay: f32,
}

impl FusedAdamW {
    /// The optimizer for module `M` with Burn's AdamW hyper-parameters.
    pub fn init<B: AutodiffBackend, M: AutodiffModule<B>>(
        beta_1: f32,
        beta_2: f32,
        epsilon: f32,
        weight_decay: f32,
    ) -> OptimizerAdaptor<Self, M, B> {
        let burn = AdamWConfig::new()
            .with_beta_1(beta_1)
            .with_beta_2(beta_2)
            .with_epsilon(epsilon)
            .with_weight_decay(weight_decay)
            .build();
        OptimizerAdaptor::from(Self {
            burn,
            beta_1,
            beta_2,
            epsilon,
            weight_decay,
        })
    }
}

impl<B: Backend> SimpleOptimizer<B> for FusedAdamW {
    type State<const D: usize> = AdamWState<B, D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        let (time, moments) = match state {
            // AMSGrad is off: a state with its maximum is Burn's to update.
            Some(s) if s.momentum.max_moment_2.is_some() => {
                return self.burn.step(lr, tensor, grad, Some(s));
            }
            Some(s) => (
                s.momentum.time + 1,
                Some((s.momentum.moment_1, s.momentum.moment_2)),
            ),
            None => (1, None),
        };
        let step = AdamWStep {
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            epsilon: self.epsilon,
            weight_decay: self.weight_decay,
            lr,
            time,
        };
        let t = AdamWTensors {
            param: tensor,
            grad,
            moments,
        };
        match try_adamw_host(t, &step) {
            Ok((param, moment_1, moment_2)) => {
                let momentum = AdaptiveMomentumState::new(time, moment_1, moment_2);
                (param, Some(AdamWState::new(momentum)))
            }
            Err(t) => {
                let state = t.moments.map(|(moment_1, moment_2)| {
                    AdamWState::new(AdaptiveMomentumState::new(time - 1, moment_1, moment_2))
                });
                self.burn.step(lr, t.param, t.grad, state)
            }
        }
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device<B>) -> Self::State<D> {
        <AdamW as SimpleOptimizer<B>>::to_device(state, device)
    }
}
