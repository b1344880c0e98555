//! The router's input, defined once (SPEC 2.2), and routers saved to and loaded from disk.
//!
//! A router reads the base model's **frozen token embedding, mean-pooled over the prompt's
//! tokens** (padding excluded). The prompt is the task template of the example (with the
//! model's chat template when [`RouterInput::chat_template`] is set), encoded and cut from the
//! left to [`RouterInput::max_len`] tokens. [`RouterInput`] records that definition next to
//! the router's weights (`router.json`), and every use of a router checks it against the model
//! and prompts it is given: a router trained on one model, cut or template and used with
//! another is an error naming the field, never a silent change of input or a panic in a matmul.
//!
//! Files: `router.safetensors` (the router's weights, f32, by module path) and `router.json`
//! ([`RouterMeta`]).

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use datasets::Example;
use flexi_burn::{ClassRankMap, Router, RouterConfig, masked_mean_pool};
use models::llama::Llama;
use serde::{Deserialize, Serialize};

use crate::error::{InferError, Result};
use crate::text::LmText;
use crate::weights::{load_tensors, module_tensors, read_safetensors, to_safetensors};

/// Prompts per batch when pooling embeddings.
const POOL_BATCH: usize = 16;

/// What a router reads: the definition of its input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterInput {
    /// The base model whose token embedding is pooled (its path as given; informational).
    pub model: String,
    /// Width of the embedding (the router's input width).
    pub d_model: usize,
    /// Rows of the embedding (the tokenizer's ids must index the same table).
    pub vocab_size: usize,
    /// Prompts are cut from the left to this many tokens.
    pub max_len: usize,
    /// The chat template the prompts were rendered with (`None`: plain task prompts).
    pub chat_template: Option<String>,
}

impl RouterInput {
    /// The input definition of a router over `model`'s embedding, with `text`'s prompts cut to
    /// `max_len` tokens.
    pub fn new<B: Backend>(
        model_name: impl Into<String>,
        model: &Llama<B>,
        text: &LmText,
        max_len: usize,
    ) -> Self {
        let [vocab_size, d_model] = model.embed_tokens.weight.dims();
        Self {
            model: model_name.into(),
            d_model,
            vocab_size,
            max_len,
            chat_template: text.chat_template_name(),
        }
    }

    /// Checks that `model` and `text` give this input; `dir` names the router in the error.
    pub fn check<B: Backend>(&self, model: &Llama<B>, text: &LmText, dir: &Path) -> Result<()> {
        let [vocab, d] = model.embed_tokens.weight.dims();
        let mismatch = |field, trained: String, used: String| InferError::RouterMismatch {
            dir: dir.to_path_buf(),
            field,
            trained,
            used,
        };
        if d != self.d_model {
            return Err(mismatch(
                "the model's hidden size (d_model)",
                self.d_model.to_string(),
                d.to_string(),
            ));
        }
        if vocab != self.vocab_size {
            return Err(mismatch(
                "the model's vocab_size",
                self.vocab_size.to_string(),
                vocab.to_string(),
            ));
        }
        let used = text.chat_template_name();
        if used != self.chat_template {
            let show = |t: &Option<String>| t.clone().unwrap_or_else(|| "none".into());
            return Err(mismatch(
                "the chat template",
                show(&self.chat_template),
                show(&used),
            ));
        }
        if self.max_len < 2 {
            return Err(mismatch("max_len", self.max_len.to_string(), ">= 2".into()));
        }
        Ok(())
    }

    /// The router's input for each example: its prompt, cut to `max_len` tokens, embedded by
    /// `model`'s token embedding and mean-pooled, `[n][d_model]`.
    pub fn features<B: Backend>(
        &self,
        model: &Llama<B>,
        text: &LmText,
        examples: &[&Example],
    ) -> Result<Vec<Vec<f32>>> {
        let prompts: Vec<Vec<u32>> = examples
            .iter()
            .map(|e| text.encode_prompt(e, self.max_len, 1))
            .collect::<Result<_>>()?;
        Ok(pooled_embeddings(model, &prompts, POOL_BATCH))
    }
}

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

/// What is saved next to the router's weights (`router.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouterMeta {
    /// What the router reads.
    pub input: RouterInput,
    /// Classes.
    pub num_classes: usize,
    /// Class -> rank map, e.g. `(2,8)`.
    pub class_ranks: String,
    /// Training accuracy at the end.
    pub train_accuracy: f64,
    /// How it was trained (hidden width, noise, ...).
    pub training: RouterTraining,
}

/// A trained router with its class -> rank map and input definition.
#[derive(Debug)]
pub struct TrainedRouter<B: Backend> {
    /// The classifier.
    pub router: Router<B>,
    /// Class -> rank.
    pub map: ClassRankMap,
    /// Its description.
    pub meta: RouterMeta,
    /// Where it was loaded from (for messages).
    pub dir: PathBuf,
}

impl<B: Backend> TrainedRouter<B> {
    /// Loads `router.json` + `router.safetensors` from `dir` (any backend).
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self> {
        let m = dir.join("router.json");
        let bytes = std::fs::read(&m).map_err(|e| InferError::Io {
            path: m.clone(),
            source: e,
        })?;
        let meta: RouterMeta =
            serde_json::from_slice(&bytes).map_err(|e| InferError::Checkpoint {
                path: m.clone(),
                message: format!("not a router description: {e}"),
            })?;
        let map: ClassRankMap = meta.class_ranks.parse()?;
        let router: Router<B> = RouterConfig::new(meta.input.d_model)
            .with_num_classes(meta.num_classes)
            .with_hidden(meta.training.hidden)
            .with_noise_std(meta.training.noise_std)
            .try_init(device)?;
        let w = dir.join("router.safetensors");
        let router = load_tensors(router, &read_safetensors(&w)?, &w)?;
        Ok(Self {
            router,
            map,
            meta,
            dir: dir.to_path_buf(),
        })
    }

    /// Per-example ranks: the router's class of each example's input through the class map.
    /// Checks first that `model` and `text` give the input the router was trained on.
    pub fn route(
        &self,
        model: &Llama<B>,
        text: &LmText,
        examples: &[&Example],
    ) -> Result<Vec<usize>> {
        self.meta.input.check(model, text, &self.dir)?;
        let feats = self.meta.input.features(model, text, examples)?;
        self.route_features(&feats)
    }

    /// Ranks of already computed router inputs `[n][d_model]`.
    pub fn route_features(&self, features: &[Vec<f32>]) -> Result<Vec<usize>> {
        if features.is_empty() {
            return Ok(Vec::new());
        }
        let d = self.meta.input.d_model;
        if let Some(bad) = features.iter().find(|f| f.len() != d) {
            return Err(InferError::Invalid(format!(
                "router input of width {}, the router in {} reads {d}",
                bad.len(),
                self.dir.display()
            )));
        }
        let flat: Vec<f32> = features.iter().flatten().copied().collect();
        let device = self.router.output.weight.device();
        let x = Tensor::<B, 2>::from_data(TensorData::new(flat, [features.len(), d]), &device);
        Ok(self.router.route(x, &self.map)?)
    }
}

/// Writes `router.safetensors` and `router.json` into `dir` (a router of any backend).
pub fn save_router<B: Backend>(router: &Router<B>, meta: &RouterMeta, dir: &Path) -> Result<()> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |e| InferError::Io { path, source: e }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let weights = to_safetensors(&module_tensors(router))?;
    let w = dir.join("router.safetensors");
    std::fs::write(&w, weights).map_err(io(&w))?;
    let m = dir.join("router.json");
    let json = serde_json::to_vec_pretty(meta)
        .map_err(|e| InferError::Invalid(format!("serialising the router description: {e}")))?;
    std::fs::write(&m, json).map_err(io(&m))?;
    Ok(())
}
