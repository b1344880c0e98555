//! The trainer's optimizer: Burn's AdamW, with its update fused into one in-place pass on the
//! CPU backend.
//!
//! [`FusedAdamW`] is a [`SimpleOptimizer`] whose state, [`FusedAdamWState`], is Burn's
//! [`AdamWState`] (the same `momentum` record, so optimizer checkpoints written with Burn's
//! AdamW load) plus, for a parameter stored in a half type, its f32 master copy. Its update
//! is [`flexi_burn::host::try_adamw_host`] where that applies (burn-flex, f32: the same
//! arithmetic bit for bit, one pass over the cores, buffers written in place) and Burn's
//! [`AdamW`] everywhere else (other backends).
//!
//! Full fine-tuning under mixed precision (`precision = "bf16" | "f16"`) stores the model's
//! matrices in the half type and trains them: the forward and backward products run in that
//! type, the trainer widens each gradient to f32 as it leaves the backward pass, and the
//! update is AdamW on the f32 master (moments f32 too), rounded to the half type for the next
//! forward pass (the master weights of PyTorch's AMP / apex O2). The master starts as the
//! stored weight widened, which is exact when the checkpoint itself is in the half type.

use burn::module::AutodiffModule;
use burn::optim::LearningRate;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, AdamWState, AdaptiveMomentumState, SimpleOptimizer};
use burn::record::Record;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Device, FloatDType, Tensor};
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
        OptimizerAdaptor::from(Self::new(beta_1, beta_2, epsilon, weight_decay))
    }

    /// The per-tensor optimizer ([`SimpleOptimizer`]) with Burn's AdamW hyper-parameters.
    pub fn new(beta_1: f32, beta_2: f32, epsilon: f32, weight_decay: f32) -> Self {
        let burn = AdamWConfig::new()
            .with_beta_1(beta_1)
            .with_beta_2(beta_2)
            .with_epsilon(epsilon)
            .with_weight_decay(weight_decay)
            .build();
        Self {
            burn,
            beta_1,
            beta_2,
            epsilon,
            weight_decay,
        }
    }
}

/// [`FusedAdamW`]'s state of one parameter.
#[derive(Record, Clone)]
pub struct FusedAdamWState<B: Backend, const D: usize> {
    /// AdamW's moments (Burn's [`AdamWState`] record field).
    pub momentum: AdaptiveMomentumState<B, D>,
    /// The f32 master copy of a parameter stored in a half type (full fine-tuning under
    /// mixed precision); `None` for an f32 parameter. Absent from records written before it
    /// existed, which load as `None`.
    pub master: Option<Tensor<B, D>>,
}

impl<B: Backend, const D: usize> FusedAdamWState<B, D> {
    fn burn(self) -> (AdamWState<B, D>, Option<Tensor<B, D>>) {
        (AdamWState::new(self.momentum), self.master)
    }
}

/// Whether a parameter of type `dtype` trains on an f32 master copy.
fn is_half(dtype: DType) -> bool {
    matches!(dtype, DType::F16 | DType::BF16)
}

impl<B: Backend> SimpleOptimizer<B> for FusedAdamW {
    type State<const D: usize> = FusedAdamWState<B, D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        let (state, master) = match state.map(FusedAdamWState::burn) {
            Some((s, m)) => (Some(s), m),
            None => (None, None),
        };
        let stored = tensor.dtype();
        if !is_half(stored) {
            let (param, state) = self.step_f32(lr, tensor, grad, state);
            return (param, state.map(|s| with_master(s, None)));
        }
        // A half-stored weight: AdamW on its f32 master, rounded back for the next forward.
        let master = master.unwrap_or_else(|| tensor.cast(FloatDType::F32));
        let grad = match grad.dtype() {
            DType::F32 => grad,
            _ => grad.cast(FloatDType::F32),
        };
        let (master, state) = self.step_f32(lr, master, grad, state);
        let param = master.clone().cast(stored);
        (param, state.map(|s| with_master(s, Some(master))))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device<B>) -> Self::State<D> {
        FusedAdamWState {
            momentum: state.momentum.to_device(device),
            master: state.master.map(|m| m.to_device(device)),
        }
    }
}

fn with_master<B: Backend, const D: usize>(
    s: AdamWState<B, D>,
    master: Option<Tensor<B, D>>,
) -> FusedAdamWState<B, D> {
    FusedAdamWState {
        momentum: s.momentum,
        master,
    }
}

impl FusedAdamW {
    /// AdamW's update of a parameter of the gradient's type: fused on the host where that
    /// applies, Burn's [`AdamW`] otherwise.
    fn step_f32<B: Backend, const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<AdamWState<B, D>>,
    ) -> (Tensor<B, D>, Option<AdamWState<B, D>>) {
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
}
