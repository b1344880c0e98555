//! Training the Flexi-LoRA router (SPEC 2.2) on the base model's frozen token embeddings:
//! mean-pooled prompt embeddings -> easy/hard classes, noisy cross-entropy, then frozen and
//! saved next to its class -> rank map.

use std::path::Path;

use burn::module::AutodiffModule;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use flexi_burn::{ClassRankMap, Phase, Router, RouterConfig, masked_mean_pool};
use models::llama::Llama;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::params::{load_tensors, read_safetensors, to_safetensors, trainable_tensors};

/// Mean-pooled embeddings `[n][d_model]` of prompts, from the model's own token embedding.
pub fn pooled_embeddings<B: Backend>(
    model: &Llama<B>,
    prompts: &[Vec<u32>],
    batch_size: usize,
) -> Vec<Vec<f32>> {
    let device = model.embed_tokens.weight.device();
    let mut out = Vec::with_capacity(prompts.len());
    for chunk in prompts.chunks(batch_size.max(1)) {
        let s = chunk.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let mut ids = Vec::with_capacity(chunk.len() * s);
        let mut mask = Vec::with_capacity(chunk.len() * s);
        for p in chunk {
            ids.extend(p.iter().map(|t| *t as i64));
            ids.extend(std::iter::repeat_n(0i64, s - p.len()));
            mask.extend(std::iter::repeat_n(1f32, p.len()));
            mask.extend(std::iter::repeat_n(0f32, s - p.len()));
        }
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [chunk.len(), s]), &device);
        let mask = Tensor::<B, 2>::from_data(TensorData::new(mask, [chunk.len(), s]), &device);
        let emb = model.embed_tokens.forward(ids); // [b, s, d]
        let d = emb.dims()[2];
        let pooled = masked_mean_pool(emb, mask)
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .unwrap_or_default();
        out.extend(pooled.chunks(d).map(<[f32]>::to_vec));
    }
    out
}

/// Router training settings (the paper leaves depth and noise open; SPEC 5).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterTraining {
    /// Hidden width (`None`: linear router).
    pub hidden: Option<usize>,
    /// Logit noise std in training.
    pub noise_std: f64,
    /// Passes over the labelled set.
    pub epochs: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Batch size.
    pub batch_size: usize,
    /// Seed of init, order and noise.
    pub seed: u64,
}

impl Default for RouterTraining {
    fn default() -> Self {
        Self {
            hidden: Some(64),
            noise_std: 1.0,
            epochs: 50,
            lr: 1e-3,
            batch_size: 32,
            seed: 42,
        }
    }
}

/// What is saved next to the router's weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouterMeta {
    /// Width of the pooled embedding.
    pub d_model: usize,
    /// Classes.
    pub num_classes: usize,
    /// Hidden width.
    pub hidden: Option<usize>,
    /// Class -> rank map, e.g. `(2,8)`.
    pub class_ranks: String,
    /// Training accuracy at the end.
    pub train_accuracy: f64,
    /// How it was trained.
    pub training: RouterTraining,
}

/// Standardises nothing: embeddings are used as the model gives them. Trains a router on
/// `features [n][d]` with class `labels`; returns it and its training accuracy.
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
    let d = features[0].len();
    B::seed(device, cfg.seed);
    let mut router: Router<B> = RouterConfig::new(d)
        .with_num_classes(num_classes)
        .with_hidden(cfg.hidden)
        .with_noise_std(cfg.noise_std)
        .try_init(device)?;
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
    let all: Vec<usize> = (0..features.len()).collect();
    let pred = router.valid().predict(to_tensor(&all).inner());
    let acc = pred.iter().zip(labels).filter(|(p, y)| p == y).count() as f64 / labels.len() as f64;
    Ok((router, acc))
}

/// Writes `router.safetensors` and `router.json` into `dir`.
pub fn save_router<B: AutodiffBackend>(
    router: &Router<B>,
    meta: &RouterMeta,
    dir: &Path,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| TrainError::Io {
        path: dir.to_path_buf(),
        source: e,
    })?;
    let weights = to_safetensors(&trainable_tensors(router))?;
    let w = dir.join("router.safetensors");
    std::fs::write(&w, weights).map_err(|e| TrainError::Io { path: w, source: e })?;
    let m = dir.join("router.json");
    let json = serde_json::to_vec_pretty(meta).map_err(|e| TrainError::Model(e.to_string()))?;
    std::fs::write(&m, json).map_err(|e| TrainError::Io { path: m, source: e })?;
    Ok(())
}

/// Loads a router saved by [`save_router`], with its class -> rank map.
pub fn load_router<B: AutodiffBackend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(Router<B>, ClassRankMap, RouterMeta)> {
    let m = dir.join("router.json");
    let bytes = std::fs::read(&m).map_err(|e| TrainError::Io {
        path: m.clone(),
        source: e,
    })?;
    let meta: RouterMeta = serde_json::from_slice(&bytes).map_err(|e| TrainError::Checkpoint {
        path: m.clone(),
        message: format!("not a router description: {e}"),
    })?;
    let map: ClassRankMap = meta.class_ranks.parse()?;
    let router: Router<B> = RouterConfig::new(meta.d_model)
        .with_num_classes(meta.num_classes)
        .with_hidden(meta.hidden)
        .with_noise_std(meta.training.noise_std)
        .try_init(device)?;
    let w = dir.join("router.safetensors");
    let router = load_tensors(router, &read_safetensors(&w)?, &w)?;
    Ok((router, map, meta))
}

/// Router ranks of pooled prompt embeddings (argmax, no noise) through the class map.
pub fn route<B: AutodiffBackend>(
    router: &Router<B>,
    map: &ClassRankMap,
    features: &[Vec<f32>],
    device: &B::Device,
) -> Result<Vec<usize>> {
    if features.is_empty() {
        return Ok(Vec::new());
    }
    let d = features[0].len();
    let flat: Vec<f32> = features.iter().flatten().copied().collect();
    let x =
        Tensor::<B::InnerBackend, 2>::from_data(TensorData::new(flat, [features.len(), d]), device);
    Ok(router.valid().route(x, map)?)
}
