//! Training the Flexi-LoRA router (SPEC 2.2): router inputs (defined once, in
//! [`infer::router::RouterInput`]) -> easy/hard classes, noisy cross-entropy, then frozen and
//! saved next to its class -> rank map and input definition. Loading and applying a saved
//! router is inference: [`infer::router::TrainedRouter`].

use burn::module::AutodiffModule;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use flexi_burn::{Phase, Router, RouterConfig};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

pub use infer::router::{
    RouterInput, RouterMeta, RouterTraining, TrainedRouter, pooled_embeddings, save_router,
};

use crate::error::{Result, TrainError};

/// Trains a router on `features [n][d]` with class `labels`; returns it and its training
/// accuracy. With `cfg.standardize == Some(true)` the router standardises its input with the
/// mean and standard deviation of `features`; otherwise features are used as given.
pub fn train_router<B: AutodiffBackend>(
    features: &[Vec<f32>],
    labels: &[usize],
    num_classes: usize,
    cfg: &RouterTraining,
    device: &B::Device,
) -> Result<(Router<B>, f64)> {
    if features.is_empty() || features.len() != labels.len() {
        return Err(TrainError::EmptyData(format!(
            "router: {} feature rows for {} labels",
            features.len(),
            labels.len()
        )));
    }
    if cfg.epochs == 0 {
        return Err(TrainError::Config {
            key: "router.epochs".into(),
            message: "0 epochs would save an untrained router; give at least 1".into(),
        });
    }
    let d = features[0].len();
    if let Some(bad) = features.iter().position(|f| f.len() != d) {
        return Err(TrainError::EmptyData(format!(
            "router: feature row {bad} has width {}, row 0 has {d}",
            features[bad].len()
        )));
    }
    B::seed(device, cfg.seed);
    let mut router: Router<B> = RouterConfig::new(d)
        .with_num_classes(num_classes)
        .with_hidden(cfg.hidden)
        .with_noise_std(cfg.noise_std)
        .with_standardize(cfg.standardize.unwrap_or(false))
        .try_init(device)?
        .with_input_stats(features);
    let mut optim = AdamConfig::new().init();
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut order: Vec<usize> = (0..features.len()).collect();
    let to_tensor = |idx: &[usize]| {
        let flat: Vec<f32> = idx
            .iter()
            .flat_map(|&i| features[i].iter().copied())
            .collect();
        Tensor::<B, 2>::from_data(TensorData::new(flat, [idx.len(), d]), device)
    };
    for _ in 0..cfg.epochs {
        order.shuffle(&mut rng);
        for chunk in order.chunks(cfg.batch_size.max(1)) {
            let y: Vec<usize> = chunk.iter().map(|&i| labels[i]).collect();
            let loss = router.loss(router.forward(to_tensor(chunk)), &y, Phase::Train, &mut rng);
            let grads = GradientsParams::from_grads(loss.backward(), &router);
            router = optim.step(cfg.lr, router, grads);
        }
    }
    let acc = accuracy(&router.valid(), features, labels, device);
    Ok((router, acc))
}

/// The fraction of `features` whose predicted class (no noise) is the label.
pub fn accuracy<B: burn::tensor::backend::Backend>(
    router: &Router<B>,
    features: &[Vec<f32>],
    labels: &[usize],
    device: &B::Device,
) -> f64 {
    if features.is_empty() {
        return f64::NAN;
    }
    let d = features[0].len();
    let flat: Vec<f32> = features.iter().flatten().copied().collect();
    let x = Tensor::<B, 2>::from_data(TensorData::new(flat, [features.len(), d]), device);
    let pred = router.predict(x);
    pred.iter().zip(labels).filter(|(p, y)| p == y).count() as f64 / labels.len() as f64
}

/// Splits indices `0..labels.len()` into (train, held out): a `fraction` of each class, drawn
/// with `seed`, is held out (at least one of a class with two or more members).
pub fn stratified_split(labels: &[usize], fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x401d_0007);
    let classes = labels.iter().copied().max().map_or(0, |m| m + 1);
    let (mut train, mut held) = (Vec::new(), Vec::new());
    for c in 0..classes {
        let mut members: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == c).collect();
        members.shuffle(&mut rng);
        let k = ((members.len() as f64 * fraction).round() as usize)
            .max(usize::from(fraction > 0.0 && members.len() >= 2))
            .min(members.len().saturating_sub(1));
        held.extend_from_slice(&members[..k]);
        train.extend_from_slice(&members[k..]);
    }
    train.sort_unstable();
    held.sort_unstable();
    (train, held)
}
