//! The trainer's fused AdamW gives Burn's AdamW bit for bit on the CPU backend: parameters and
//! both moments after several steps, with and without weight decay, with the parameters'
//! buffers shared (copy on write) or not, and a half-precision parameter (Burn's path).

use burn::backend::{Autodiff, Flex};
use burn::module::{Module, Param, ParamId};
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamWConfig, AdaptiveMomentumState, GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Distribution, Tensor, TensorData};
use flexi_burn::host::{AdamWStep, AdamWTensors, try_adamw_host};
use train::optim::FusedAdamW;

type B = Autodiff<Flex>;

#[derive(Module, Debug)]
struct Net<B: Backend> {
    a: Linear<B>,
    b: Linear<B>,
    scale: Param<Tensor<B, 1>>,
}

impl Net<B> {
    fn new(device: &burn::tensor::Device<B>) -> Self {
        B::seed(device, 7);
        let net = Self {
            // 45 000 weights: more than one chunk of the parallel update.
            a: LinearConfig::new(64, 700).init(device),
            b: LinearConfig::new(700, 36).init(device),
            scale: Param::from_tensor(Tensor::ones([36], device)),
        };
        // Burn initialises parameters lazily, each clone on its own: draw them now.
        let _ = params(&net);
        net
    }
}

impl<B: Backend> Net<B> {
    fn loss(&self, x: Tensor<B, 2>) -> Tensor<B, 1> {
        let h = self.a.forward(x).tanh();
        let y = self.b.forward(h) * self.scale.val().unsqueeze::<2>();
        (y.clone() * y).mean()
    }
}

fn bits<const D: usize>(t: Tensor<Flex, D>) -> Vec<u32> {
    t.into_data()
        .to_vec::<f32>()
        .unwrap()
        .into_iter()
        .map(f32::to_bits)
        .collect()
}

/// Bit-equal lists of tensors, or a short report of where they differ.
fn same(a: &[Vec<u32>], b: &[Vec<u32>], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: tensor count");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(x.len(), y.len(), "{what}: tensor {i} length");
        let differ: Vec<usize> = (0..x.len()).filter(|&j| x[j] != y[j]).collect();
        if let Some(&j) = differ.first() {
            panic!(
                "{what}: tensor {i}: {} of {} values differ, first at {j}: {} vs {}",
                differ.len(),
                x.len(),
                f32::from_bits(x[j]),
                f32::from_bits(y[j])
            );
        }
    }
}

fn params(net: &Net<B>) -> Vec<Vec<u32>> {
    let inner = |t: Tensor<B, 2>| bits(t.inner());
    let inner1 = |t: Tensor<B, 1>| bits(t.inner());
    vec![
        inner(net.a.weight.val()),
        inner1(net.a.bias.as_ref().unwrap().val()),
        inner(net.b.weight.val()),
        inner1(net.b.bias.as_ref().unwrap().val()),
        inner1(net.scale.val()),
    ]
}

/// `steps` steps of Burn's AdamW and of ours from the same weights and inputs; `shared` keeps
/// a clone of our model alive across each step (its buffers are then not ours to write).
fn compare(weight_decay: f32, steps: usize, shared: bool) {
    let device = Default::default();
    let mut burn_net = Net::<B>::new(&device);
    let mut ours = burn_net.clone();
    let mut burn_opt = AdamWConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.999)
        .with_epsilon(1e-8)
        .with_weight_decay(weight_decay)
        .init::<B, Net<B>>();
    let mut our_opt = FusedAdamW::init::<B, Net<B>>(0.9, 0.999, 1e-8, weight_decay);
    for step in 0..steps {
        let x = Tensor::<B, 2>::random([8, 64], Distribution::Normal(0.0, 1.0), &device);
        let lr = 1e-3 * (step + 1) as f64;
        let g = GradientsParams::from_grads(burn_net.loss(x.clone()).backward(), &burn_net);
        burn_net = burn_opt.step(lr, burn_net, g);
        let g = GradientsParams::from_grads(ours.loss(x).backward(), &ours);
        let keep = shared.then(|| ours.clone());
        ours = our_opt.step(lr, ours, g);
        if let Some(before) = keep {
            // The clone still holds the weights from before the step.
            assert_ne!(params(&before), params(&ours));
        }
        same(&params(&burn_net), &params(&ours), &format!("step {step}"));
    }
    // The moments and time steps too (a clone keeps its parameters' ids).
    let (mut a, mut b) = (burn_opt.to_record(), our_opt.to_record());
    assert_eq!(a.len(), 5);
    assert_eq!(b.len(), 5);
    let mut moments = |id: ParamId, d2: bool| {
        let (ra, rb) = (a.remove(&id).unwrap(), b.remove(&id).unwrap());
        let flat = |m: AdaptiveMomentumState<Flex, 2>| (m.time, bits(m.moment_1), bits(m.moment_2));
        if d2 {
            let (sa, sb) = (ra.into_state::<2>(), rb.into_state::<2>());
            assert_eq!(flat(sa.momentum), flat(sb.momentum));
        } else {
            let (sa, sb) = (ra.into_state::<1>(), rb.into_state::<1>());
            let (ma, mb) = (sa.momentum, sb.momentum);
            assert_eq!(ma.time, steps);
            assert_eq!(ma.time, mb.time);
            assert_eq!(bits(ma.moment_1), bits(mb.moment_1));
            assert_eq!(bits(ma.moment_2), bits(mb.moment_2));
        }
    };
    moments(ours.a.weight.id, true);
    moments(ours.a.bias.as_ref().unwrap().id, false);
    moments(ours.b.weight.id, true);
    moments(ours.b.bias.as_ref().unwrap().id, false);
    moments(ours.scale.id, false);
}

#[test]
fn fused_adamw_equals_burns_bit_for_bit() {
    compare(0.01, 5, false);
}

#[test]
fn fused_adamw_without_weight_decay_equals_burns() {
    compare(0.0, 3, false);
}

#[test]
fn fused_adamw_with_shared_buffers_equals_burns_and_leaves_the_clone_alone() {
    compare(0.01, 3, true);
}

#[test]
fn host_update_declines_what_it_does_not_cover() {
    let device = Default::default();
    let step = AdamWStep {
        beta_1: 0.9,
        beta_2: 0.999,
        epsilon: 1e-8,
        weight_decay: 0.0,
        lr: 1e-3,
        time: 1,
    };
    let t = |dtype: DType| AdamWTensors::<Flex, 1> {
        param: Tensor::from_data(TensorData::from([1.0f32, 2.0]), (&device, dtype)),
        grad: Tensor::from_data(TensorData::from([0.5f32, -0.5]), (&device, dtype)),
        moments: None,
    };
    // f32 on flex: taken. First step: m1 = 0.1 g, m2 = 0.001 g^2, delta = g / (|g| + eps).
    let (p, m1, m2) = try_adamw_host(t(DType::F32), &step).unwrap_or_else(|_| panic!("taken"));
    let p = p.into_data().to_vec::<f32>().unwrap();
    assert!((p[0] - (1.0 - 1e-3)).abs() < 1e-7 && (p[1] - (2.0 + 1e-3)).abs() < 1e-7);
    let f1 = 1.0 - 0.9f32;
    assert_eq!(
        m1.into_data().to_vec::<f32>().unwrap(),
        vec![0.5 * f1, -0.5 * f1]
    );
    let expected = 0.25 * (1.0 - 0.999f32);
    assert_eq!(m2.into_data().to_vec::<f32>().unwrap(), vec![expected; 2]);
    // f16: Burn's update.
    assert!(try_adamw_host(t(DType::F16), &step).is_err());
    // Under autodiff: Burn's update.
    let ad = AdamWTensors::<B, 1> {
        param: Tensor::from_data([1.0f32, 2.0], &device),
        grad: Tensor::from_data([0.5f32, -0.5], &device),
        moments: None,
    };
    assert!(try_adamw_host(ad, &step).is_err());
    // Shapes that differ: Burn's update (which reports them).
    let odd = AdamWTensors::<Flex, 1> {
        param: Tensor::from_data([1.0f32, 2.0], &device),
        grad: Tensor::from_data([0.5f32, -0.5, 1.0], &device),
        moments: None,
    };
    assert!(try_adamw_host(odd, &step).is_err());
}

/// A parameter stored in a half type (full fine-tuning under mixed precision) trains on an
/// f32 master: the master follows Burn's AdamW on f32 bit for bit (from the stored weight
/// widened, with the gradients widened), and the parameter is the master rounded.
#[test]
fn half_parameters_train_on_an_f32_master() {
    use burn::optim::{AdamWState, SimpleOptimizer};
    use burn::tensor::FloatDType;
    let device = Default::default();
    let ours = FusedAdamW::new(0.9, 0.999, 1e-8, 0.01);
    let burn = AdamWConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.999)
        .with_epsilon(1e-8)
        .with_weight_decay(0.01)
        .build();
    for half in [FloatDType::BF16, FloatDType::F16] {
        Flex::seed(&device, 3);
        let w = Tensor::<Flex, 2>::random([48, 40], Distribution::Normal(0.0, 0.5), &device);
        let mut param = w.cast(half);
        let mut reference = param.clone().cast(FloatDType::F32);
        let mut state = None;
        let mut burn_state: Option<AdamWState<Flex, 2>> = None;
        for step in 0..4 {
            let g = Tensor::<Flex, 2>::random([48, 40], Distribution::Normal(0.0, 1e-2), &device);
            let lr = 1e-2 * (step + 1) as f64;
            // The gradient arrives in f32 (the trainer widens it); a half one is widened here.
            let grad = if step % 2 == 0 {
                g.clone()
            } else {
                g.clone().cast(half)
            };
            let g = if step % 2 == 0 {
                g
            } else {
                g.cast(half).cast(FloatDType::F32)
            };
            (param, state) = ours.step(lr, param, grad, state);
            (reference, burn_state) = burn.step(lr, reference, g, burn_state);
            let s = state.as_ref().expect("state");
            let master = s
                .master
                .clone()
                .expect("a half parameter keeps an f32 master");
            assert_eq!(master.dtype(), DType::F32);
            assert_eq!(param.dtype(), DType::from(half));
            same(
                &[bits(master.clone())],
                &[bits(reference.clone())],
                &format!("{half:?} step {step}"),
            );
            same(
                &[bits(param.clone().cast(FloatDType::F32))],
                &[bits(master.cast(half).cast(FloatDType::F32))],
                &format!("{half:?} rounded step {step}"),
            );
        }
        let (s, b) = (state.unwrap().momentum, burn_state.unwrap().momentum);
        assert_eq!(s.time, 4);
        same(
            &[bits(s.moment_1), bits(s.moment_2)],
            &[bits(b.moment_1), bits(b.moment_2)],
            &format!("{half:?} moments"),
        );
    }
    // An f32 parameter keeps no master.
    let p = Tensor::<Flex, 1>::from_data([1.0f32, 2.0], &device);
    let g = Tensor::<Flex, 1>::from_data([0.5f32, -0.5], &device);
    let (_, s) = ours.step(1e-3, p, g, None);
    assert!(s.unwrap().master.is_none());
}

/// Optimizer checkpoints written with Burn's own AdamW (and by this trainer before the
/// master copies existed) load: same moments, no master.
#[test]
fn burn_adamw_records_load_into_the_fused_optimizer() {
    use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
    let device = Default::default();
    let mut net = Net::<B>::new(&device);
    let mut burn_opt = AdamWConfig::new().init::<B, Net<B>>();
    for _ in 0..2 {
        let x = Tensor::<B, 2>::random([8, 64], Distribution::Normal(0.0, 1.0), &device);
        let g = GradientsParams::from_grads(net.loss(x).backward(), &net);
        net = burn_opt.step(1e-3, net, g);
    }
    let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::new();
    let bytes = recorder.record(burn_opt.to_record(), ()).unwrap();
    let ours = FusedAdamW::init::<B, Net<B>>(0.9, 0.999, 1e-8, 0.0);
    let record = recorder
        .load(bytes, &device)
        .expect("Burn's AdamW record loads");
    let ours = ours.load_record(record);
    let mut a = burn_opt.to_record();
    let mut b = ours.to_record();
    let (ra, rb) = (
        a.remove(&net.a.weight.id).unwrap(),
        b.remove(&net.a.weight.id).unwrap(),
    );
    let (sa, sb) = (ra.into_state::<2>(), rb.into_state::<2>());
    assert!(sb.master.is_none());
    assert_eq!(sb.momentum.time, 2);
    same(
        &[bits(sa.momentum.moment_1), bits(sa.momentum.moment_2)],
        &[bits(sb.momentum.moment_1), bits(sb.momentum.moment_2)],
        "loaded moments",
    );
}
