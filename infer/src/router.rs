//! The router's input, defined once (SPEC 2.2), and routers saved to and loaded from disk.
//!
//! A **text** router reads the base model's **frozen token embedding, mean-pooled over the
//! prompt's tokens** (padding excluded). The prompt is the task template of the example (with the
//! model's chat template when [`RouterInput::chat_template`] is set), encoded and cut from the
//! left to [`RouterInput::max_len`] tokens. [`RouterInput`] records that definition next to
//! the router's weights (`router.json`), and every use of a router checks it against the model
//! and prompts it is given: a router trained on one model, cut or template and used with
//! another is an error naming the field, never a silent change of input or a panic in a matmul.
//!
//! An **audio** router reads a frozen representation of the utterance from the base Whisper,
//! **mean-pooled over the frames that hold the utterance** (the zero padding of the 30 s
//! window excluded): see [`AudioFeature`] for the choices and the measurement behind the
//! default. Trailing exact zeros of the samples are not part of the utterance, so the same
//! recording padded with any amount of trailing silence gives the same input. Audio longer
//! than one 30 s window is routed by its first window.
//!
//! Files: `router.safetensors` (the router's weights, f32, by module path) and `router.json`
//! ([`RouterMeta`]).

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use datasets::Example;
use flexi_burn::SampleRanks;
use flexi_burn::{ClassRankMap, Router, RouterConfig, masked_mean_pool};
use models::llama::{Llama, PaddedBatch};
use models::whisper::{HOP_LENGTH, MelExtractor, N_SAMPLES, Padding, Whisper};
use serde::{Deserialize, Serialize};

use crate::error::{InferError, Result};
use crate::text::LmText;
use crate::weights::{load_tensors, module_tensors, read_safetensors, to_safetensors};

/// Prompts per batch when pooling embeddings.
const POOL_BATCH: usize = 16;

/// What a router reads: the definition of its input, text or audio (`"modality"` in
/// `router.json`; files written before audio routers existed have none and are text).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "modality", rename_all = "snake_case")]
pub enum RouterInput {
    /// Prompts through a Llama's token embedding.
    Text(TextInput),
    /// Utterances through a Whisper's frozen stem or encoder.
    Audio(AudioInput),
}

impl RouterInput {
    /// Width of the router's input vector.
    pub fn width(&self) -> usize {
        match self {
            RouterInput::Text(t) => t.d_model,
            RouterInput::Audio(a) => a.width,
        }
    }

    /// The base model the input was defined on (its path as given).
    pub fn model(&self) -> &str {
        match self {
            RouterInput::Text(t) => &t.model,
            RouterInput::Audio(a) => &a.model,
        }
    }

    fn describe(&self) -> String {
        match self {
            RouterInput::Text(_) => "text (a Llama's token embedding over prompts)".into(),
            RouterInput::Audio(a) => format!(
                "audio (a Whisper's {} over utterances)",
                a.feature.describe()
            ),
        }
    }

    /// The text input, or [`InferError::RouterMismatch`] naming the modality.
    pub fn text(&self, dir: &Path) -> Result<&TextInput> {
        match self {
            RouterInput::Text(t) => Ok(t),
            other => Err(InferError::RouterMismatch {
                dir: dir.to_path_buf(),
                field: "the router's input modality",
                trained: other.describe(),
                used: RouterInput::Text(TextInput::default()).describe(),
            }),
        }
    }

    /// The audio input, or [`InferError::RouterMismatch`] naming the modality.
    pub fn audio(&self, dir: &Path) -> Result<&AudioInput> {
        match self {
            RouterInput::Audio(a) => Ok(a),
            other => Err(InferError::RouterMismatch {
                dir: dir.to_path_buf(),
                field: "the router's input modality",
                trained: other.describe(),
                used: "audio (a Whisper over utterances)".into(),
            }),
        }
    }
}

/// A text router's input.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextInput {
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
    /// What is pooled: absent, the token embedding (the paper's router); `l`, the frozen base
    /// model's hidden states after its first `l` decoder layers (`num_hidden_layers`: the
    /// final-normed output), which costs one forward pass of those layers per prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<usize>,
}

impl TextInput {
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
            layer: None,
        }
    }

    /// This input with the hidden states after `layer` decoder layers pooled instead of the
    /// token embedding (`None`: the embedding).
    pub fn with_layer(mut self, layer: Option<usize>) -> Self {
        self.layer = layer;
        self
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
        let layers = model.config.num_hidden_layers;
        if let Some(l) = self.layer
            && l > layers
        {
            return Err(mismatch(
                "the pooled layer (the model's num_hidden_layers is smaller)",
                l.to_string(),
                layers.to_string(),
            ));
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
        match self.layer {
            None => Ok(pooled_embeddings(model, &prompts, POOL_BATCH)),
            Some(l) => pooled_hidden(model, &prompts, l, POOL_BATCH),
        }
    }
}

/// The frozen representation of an utterance an audio router pools.
///
/// Measured on the synthetic espeak-ng set with Whisper tiny.en (`cargo xtask router
/// --holdout 0.25` on labels of the base model's WER; see `docs/speech.md`): the held-out
/// accuracy of each choice is written there, and the default is the best of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AudioFeature {
    /// The log-mel spectrogram itself (`num_mel_bins` wide): the cheapest input, no network.
    LogMel,
    /// The encoder's frozen stem: both convolutions and the positions (`d_model` wide).
    ConvStem,
    /// The frozen encoder's output at rank 0, i.e. the base model's (`d_model` wide).
    #[default]
    Encoder,
}

impl AudioFeature {
    /// Every choice, in the order of the docs.
    pub const ALL: [AudioFeature; 3] = [
        AudioFeature::LogMel,
        AudioFeature::ConvStem,
        AudioFeature::Encoder,
    ];

    /// The name used in `router.json` and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            AudioFeature::LogMel => "log_mel",
            AudioFeature::ConvStem => "conv_stem",
            AudioFeature::Encoder => "encoder",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            AudioFeature::LogMel => "log-mel spectrogram",
            AudioFeature::ConvStem => "encoder conv stem + positions",
            AudioFeature::Encoder => "frozen encoder output",
        }
    }
}

impl std::fmt::Display for AudioFeature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for AudioFeature {
    type Err = InferError;
    fn from_str(s: &str) -> Result<Self> {
        AudioFeature::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                InferError::Invalid(format!(
                    "unknown audio router feature {s:?}: expected log_mel, conv_stem or encoder"
                ))
            })
    }
}

/// An audio router's input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioInput {
    /// The base Whisper (its path as given; informational).
    pub model: String,
    /// What is pooled.
    pub feature: AudioFeature,
    /// Width of the pooled vector (the router's input width).
    pub width: usize,
    /// The model's mel bins.
    pub n_mels: usize,
    /// The model's hidden size.
    pub d_model: usize,
}

/// Samples per encoder position (two mel hops: the stem's second convolution has stride 2).
const SAMPLES_PER_POSITION: usize = 2 * HOP_LENGTH;

impl AudioInput {
    /// The input definition of a router over `feature` of `model`.
    pub fn new<B: Backend>(
        model_name: impl Into<String>,
        model: &Whisper<B>,
        feature: AudioFeature,
    ) -> Self {
        let (n_mels, d_model) = (model.config.num_mel_bins, model.config.d_model);
        Self {
            model: model_name.into(),
            feature,
            width: match feature {
                AudioFeature::LogMel => n_mels,
                AudioFeature::ConvStem | AudioFeature::Encoder => d_model,
            },
            n_mels,
            d_model,
        }
    }

    /// Checks that `model` gives this input; `dir` names the router in the error.
    pub fn check<B: Backend>(&self, model: &Whisper<B>, dir: &Path) -> Result<()> {
        let mismatch = |field, trained: usize, used: usize| InferError::RouterMismatch {
            dir: dir.to_path_buf(),
            field,
            trained: trained.to_string(),
            used: used.to_string(),
        };
        if model.config.num_mel_bins != self.n_mels {
            return Err(mismatch(
                "the model's num_mel_bins",
                self.n_mels,
                model.config.num_mel_bins,
            ));
        }
        if model.config.d_model != self.d_model {
            return Err(mismatch(
                "the model's hidden size (d_model)",
                self.d_model,
                model.config.d_model,
            ));
        }
        Ok(())
    }

    /// The router's input for each utterance (`(name, 16 kHz mono samples)`), `[n][width]`.
    /// Silent (all-zero) or empty audio is an error naming the input.
    pub fn features<B: Backend>(
        &self,
        model: &Whisper<B>,
        audios: &[(String, Vec<f32>)],
    ) -> Result<Vec<Vec<f32>>> {
        let extractor = MelExtractor::new(self.n_mels);
        let device = model.encoder.conv1.weight.device();
        let mut out = Vec::with_capacity(audios.len());
        for chunk in audios.chunks(AUDIO_POOL_BATCH) {
            let mut mels = Vec::with_capacity(chunk.len());
            let mut lens = Vec::with_capacity(chunk.len());
            for (name, samples) in chunk {
                let utterance = utterance_samples(name, samples)?;
                mels.push(extractor.log_mel(utterance, Padding::ThirtySeconds, name)?);
                lens.push(utterance.len());
            }
            let mel = model.mel_batch(&mels, &device)?; // [b, n_mels, 3000]
            let (x, per) = match self.feature {
                AudioFeature::LogMel => (mel.swap_dims(1, 2), HOP_LENGTH), // [b, 3000, n_mels]
                AudioFeature::ConvStem => (model.encoder.stem(mel)?, SAMPLES_PER_POSITION),
                AudioFeature::Encoder => {
                    let base = SampleRanks::new(vec![0; chunk.len()]);
                    (model.encode(mel, &base)?, SAMPLES_PER_POSITION)
                }
            };
            let [b, t, d] = x.dims();
            let mut mask = Vec::with_capacity(b * t);
            for len in &lens {
                let held = len.div_ceil(per).clamp(1, t);
                mask.extend(std::iter::repeat_n(1f32, held));
                mask.extend(std::iter::repeat_n(0f32, t - held));
            }
            let mask = Tensor::<B, 2>::from_data(TensorData::new(mask, [b, t]), &device);
            let pooled = masked_mean_pool(x, mask)
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .map_err(|e| InferError::Invalid(format!("reading pooled features: {e:?}")))?;
            out.extend(pooled.chunks(d).map(<[f32]>::to_vec));
        }
        Ok(out)
    }
}

/// Utterances per batch when pooling audio features.
const AUDIO_POOL_BATCH: usize = 8;

/// The part of `samples` that holds the utterance: the first 30 s window without its trailing
/// exact zeros. Empty or all-zero audio is an error naming `name`.
pub fn utterance_samples<'a>(name: &str, samples: &'a [f32]) -> Result<&'a [f32]> {
    let window = &samples[..samples.len().min(N_SAMPLES)];
    match window.iter().rposition(|s| *s != 0.0) {
        Some(last) => Ok(&window[..=last]),
        None if samples.is_empty() => Err(InferError::Invalid(format!(
            "{name}: the audio is empty (0 samples)"
        ))),
        None => Err(InferError::Invalid(format!(
            "{name}: the audio is silent (every sample of its first 30 s is 0); a transcribed \
             utterance needs speech"
        ))),
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
        let emb = model.embed_tokens.forward(ids); // [b, s, d]
        out.extend(pool_rows(emb, mask));
    }
    out
}

/// `h [b, s, d]` mean-pooled over the positions whose `mask` (`b * s`, row-major) is 1: one
/// `d`-vector per row.
fn pool_rows<B: Backend>(h: Tensor<B, 3>, mask: Vec<f32>) -> Vec<Vec<f32>> {
    let [b, s, d] = h.dims();
    let mask = Tensor::<B, 2>::from_data(TensorData::new(mask, [b, s]), &h.device());
    let pooled = masked_mean_pool(h, mask)
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .unwrap_or_default();
    pooled.chunks(d).map(<[f32]>::to_vec).collect()
}

/// Mean-pooled hidden states `[n][d_model]` of prompts after the first `layers` decoder layers
/// of `model` at rank 0 (left-padded batches; padding excluded from the mean).
pub fn pooled_hidden<B: Backend>(
    model: &Llama<B>,
    prompts: &[Vec<u32>],
    layers: usize,
    batch_size: usize,
) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(prompts.len());
    for chunk in prompts.chunks(batch_size.max(1)) {
        let batch = PaddedBatch::left_pad(chunk, 0);
        let h = model.hidden_after(&batch, layers)?; // [b, s, d]
        let mask: Vec<f32> = batch
            .mask
            .iter()
            .flat_map(|row| row.iter().map(|m| f32::from(u8::from(*m))))
            .collect();
        out.extend(pool_rows(h, mask));
    }
    Ok(out)
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
    /// Fraction of each class held out to measure accuracy on unseen inputs (0: none; the
    /// router then trains on every labelled input).
    pub holdout: f64,
    /// Standardise each input feature with the training set's mean and standard deviation
    /// (`None`: yes for audio routers, no for text routers, as measured in `docs/speech.md`;
    /// a saved router records what was used, and one saved without it had none).
    pub standardize: Option<bool>,
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
            holdout: 0.0,
            standardize: None,
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
    /// Accuracy on the held-out inputs ([`RouterTraining::holdout`] > 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heldout_accuracy: Option<f64>,
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
        let bad = |e: serde_json::Error| InferError::Checkpoint {
            path: m.clone(),
            message: format!("not a router description: {e}"),
        };
        let mut value: serde_json::Value = serde_json::from_slice(&bytes).map_err(bad)?;
        // Routers written before audio routers existed read text and name no modality.
        if let Some(input) = value.get_mut("input").and_then(|i| i.as_object_mut())
            && !input.contains_key("modality")
        {
            input.insert("modality".into(), "text".into());
        }
        let meta: RouterMeta = serde_json::from_value(value).map_err(bad)?;
        let map: ClassRankMap = meta.class_ranks.parse()?;
        let router: Router<B> = RouterConfig::new(meta.input.width())
            .with_num_classes(meta.num_classes)
            .with_hidden(meta.training.hidden)
            .with_noise_std(meta.training.noise_std)
            .with_standardize(meta.training.standardize.unwrap_or(false))
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
        let input = self.meta.input.text(&self.dir)?;
        input.check(model, text, &self.dir)?;
        let feats = input.features(model, text, examples)?;
        self.route_features(&feats)
    }

    /// Per-utterance ranks (`(name, 16 kHz mono samples)`): the router's class of each
    /// utterance's pooled audio feature through the class map. Checks first that `model`
    /// gives the input the router was trained on.
    pub fn route_audio(
        &self,
        model: &Whisper<B>,
        audios: &[(String, Vec<f32>)],
    ) -> Result<Vec<usize>> {
        let input = self.meta.input.audio(&self.dir)?;
        input.check(model, &self.dir)?;
        let feats = input.features(model, audios)?;
        self.route_features(&feats)
    }

    /// Ranks of already computed router inputs `[n][width]`.
    pub fn route_features(&self, features: &[Vec<f32>]) -> Result<Vec<usize>> {
        if features.is_empty() {
            return Ok(Vec::new());
        }
        let d = self.meta.input.width();
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
