//! Importing PEFT adapters: a LoRA or AdaLoRA adapter directory written by PEFT
//! (`adapter_config.json` + `adapter_model.safetensors`) onto a Llama or a Whisper.
//!
//! PEFT's own rules are followed (peft 0.21):
//! - `target_modules` as a list matches a module whose name equals an entry or ends with
//!   `.entry`, restricted by `layers_to_transform` / `layers_pattern`; as a string it is a
//!   regular expression the whole module name must match. `exclude_modules` likewise.
//! - `rank_pattern` / `alpha_pattern`: the first key (in file order) whose regex matches the
//!   end of the module name (`(.*\.)?(key)$`) gives that module's `r` / `lora_alpha`.
//! - The LoRA update is `lora_alpha / r` (`lora_alpha / sqrt(r)` with `use_rslora`) times
//!   `B A`. AdaLoRA's is `lora_alpha / (init_r + 1e-5)` times `B diag(E) A`, its saved
//!   `rank_pattern` (a mask over `init_r` per module) telling how many components each module
//!   kept (the state dict holds only those).
//!
//! Each module's factors go into the first `r` components of our nested adapter with the
//! module's scale (and AdaLoRA's `E`) folded into `B`, so that the model at its `r_max`
//! computes exactly PEFT's update; modules of other ranks are zero-padded. Options PEFT has
//! and this import does not (DoRA, bias training, `modules_to_save`, ...) are refused with
//! the field named.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use burn::tensor::TensorData;
use burn::tensor::backend::{AutodiffBackend, Backend};
use flexi_burn::params::with_values;
use flexi_burn::{Adapters, FlexiLinear, ScalePolicy};
use infer::weights::{HostTensor, to_safetensors, trainable_tensors};
use regex::Regex;
use safetensors::Dtype;
use serde::Deserialize;
use serde_json::Value;

use crate::checkpoint::{CheckpointState, Checkpoints};
use crate::config::{AdapterSettings, Method, TrainConfig};
use crate::error::{Result, TrainError};
use crate::run::RunInfo;

/// The config file of a PEFT adapter directory.
pub const CONFIG_FILE: &str = "adapter_config.json";
/// The weights file of a PEFT adapter directory.
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// PEFT's `target_modules` (or `exclude_modules`).
#[derive(Clone, Debug)]
pub enum Modules {
    /// Names, each matching a module of that name or ending in `.name`.
    List(Vec<String>),
    /// A regular expression the whole module name must match.
    Regex(Regex),
}

impl Modules {
    fn matches(&self, key: &str) -> bool {
        match self {
            Modules::List(names) => names
                .iter()
                .any(|t| key == t || key.ends_with(&format!(".{t}"))),
            Modules::Regex(re) => re.is_match(key),
        }
    }
}

/// Which PEFT method the adapter is.
#[derive(Clone, Debug)]
pub enum PeftKind {
    /// LoRA.
    Lora,
    /// AdaLoRA: components per module start at `init_r`; `kept` is the saved `rank_pattern`
    /// (module name -> mask over `init_r`), empty when pruning never ran.
    Adalora {
        /// `init_r`.
        init_r: usize,
        /// The saved `rank_pattern`.
        kept: BTreeMap<String, Vec<bool>>,
    },
}

/// A PEFT adapter's `adapter_config.json`.
#[derive(Clone, Debug)]
pub struct PeftConfig {
    /// The file it was read from.
    pub path: PathBuf,
    /// LoRA or AdaLoRA.
    pub kind: PeftKind,
    /// `r` (LoRA).
    pub r: usize,
    /// `lora_alpha`.
    pub lora_alpha: f64,
    /// `use_rslora` (LoRA).
    pub use_rslora: bool,
    /// `target_modules`.
    pub targets: Modules,
    /// `exclude_modules`.
    pub exclude: Option<Modules>,
    /// `layers_to_transform` (with a list of target names only, as in PEFT).
    pub layers: Option<Vec<usize>>,
    /// `layers_pattern`.
    pub layers_pattern: Vec<String>,
    /// `rank_pattern` (LoRA), in file order.
    pub rank_pattern: Vec<(Regex, String, usize)>,
    /// `alpha_pattern` (LoRA), in file order.
    pub alpha_pattern: Vec<(Regex, String, f64)>,
    /// `lora_dropout`.
    pub dropout: f64,
}

/// A JSON object's entries in file order (PEFT takes the first matching pattern key).
struct Ordered(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Ordered, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    out.push(entry);
                }
                Ok(Ordered(out))
            }
            fn visit_unit<E>(self) -> std::result::Result<Ordered, E> {
                Ok(Ordered(Vec::new()))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
struct Patterns {
    #[serde(default)]
    rank_pattern: Option<Ordered>,
    #[serde(default)]
    alpha_pattern: Option<Ordered>,
}

impl PeftConfig {
    /// Reads `dir/adapter_config.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(CONFIG_FILE);
        if !dir.is_dir() {
            return Err(TrainError::Adapter {
                path: dir.to_path_buf(),
                key: "directory".into(),
                message: "not a directory (expected a PEFT adapter directory with \
                          adapter_config.json and adapter_model.safetensors)"
                    .into(),
            });
        }
        let text = std::fs::read_to_string(&path).map_err(|e| TrainError::Adapter {
            path: path.clone(),
            key: CONFIG_FILE.into(),
            message: format!("cannot read it ({e}); a PEFT adapter directory has one"),
        })?;
        Self::parse(&text, &path)
    }

    /// Parses the text of an `adapter_config.json` read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let bad = |key: &str, message: String| TrainError::Adapter {
            path: path.to_path_buf(),
            key: key.into(),
            message,
        };
        let v: Value =
            serde_json::from_str(text).map_err(|e| bad("json", format!("not valid JSON: {e}")))?;
        if !v.is_object() {
            return Err(bad("json", "expected a JSON object".into()));
        }
        let present = |k: &str| v.get(k).is_some_and(|x| !x.is_null());
        // Options whose effect this import does not reproduce.
        let refuse = |key: &str, what: &str| {
            Err(bad(
                key,
                format!(
                    "{what} is not supported by flexi-burn's import (plain LoRA / AdaLoRA only)"
                ),
            ))
        };
        if v.get("use_dora").and_then(Value::as_bool) == Some(true) {
            return refuse("use_dora", "DoRA");
        }
        if v.get("lora_bias").and_then(Value::as_bool) == Some(true) {
            return refuse("lora_bias", "a LoRA bias");
        }
        if let Some(b) = v.get("bias").and_then(Value::as_str)
            && b != "none"
        {
            return refuse("bias", &format!("training biases (bias = {b:?})"));
        }
        if v.get("fan_in_fan_out").and_then(Value::as_bool) == Some(true) {
            return refuse("fan_in_fan_out", "fan_in_fan_out (GPT-2 Conv1D layers)");
        }
        for key in [
            "modules_to_save",
            "layer_replication",
            "target_parameters",
            "trainable_token_indices",
        ] {
            if present(key)
                && v[key] != Value::Array(vec![])
                && v[key] != Value::Object(Default::default())
            {
                return refuse(key, key);
            }
        }
        let peft_type = v.get("peft_type").and_then(Value::as_str).ok_or_else(|| {
            bad(
                "peft_type",
                "missing (expected \"LORA\" or \"ADALORA\")".into(),
            )
        })?;
        let number = |key: &str| -> Result<f64> {
            v.get(key)
                .and_then(Value::as_f64)
                .filter(|x| x.is_finite())
                .ok_or_else(|| bad(key, "missing or not a finite number".into()))
        };
        let count = |key: &str| -> Result<usize> {
            v.get(key)
                .and_then(Value::as_u64)
                .filter(|r| *r > 0)
                .map(|r| r as usize)
                .ok_or_else(|| bad(key, "missing or not a positive integer".into()))
        };
        let modules = |key: &str| -> Result<Option<Modules>> {
            match v.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Regex::new(&format!("^(?:{s})$"))
                    .map(|re| Some(Modules::Regex(re)))
                    .map_err(|e| {
                        bad(
                            key,
                            format!("not a regular expression this import reads: {e}"),
                        )
                    }),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|t| {
                        t.as_str()
                            .map(str::to_string)
                            .ok_or_else(|| bad(key, format!("expected strings, found {t}")))
                    })
                    .collect::<Result<Vec<_>>>()
                    .map(|l| Some(Modules::List(l))),
                Some(other) => Err(bad(
                    key,
                    format!("expected a list or a regex string, found {other}"),
                )),
            }
        };
        let targets =
            modules("target_modules")?.ok_or_else(|| bad("target_modules", "missing".into()))?;
        let exclude = modules("exclude_modules")?;
        let layers = match v.get("layers_to_transform") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => Some(vec![
                n.as_u64()
                    .ok_or_else(|| bad("layers_to_transform", "expected a layer index".into()))?
                    as usize,
            ]),
            Some(Value::Array(items)) if items.is_empty() => None,
            Some(Value::Array(items)) => Some(
                items
                    .iter()
                    .map(|i| {
                        i.as_u64().map(|i| i as usize).ok_or_else(|| {
                            bad(
                                "layers_to_transform",
                                format!("expected layer indices, found {i}"),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>>>()?,
            ),
            Some(other) => {
                return Err(bad(
                    "layers_to_transform",
                    format!("expected indices, found {other}"),
                ));
            }
        };
        let layers_pattern = match v.get("layers_pattern") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_string))
                .collect(),
            Some(other) => {
                return Err(bad(
                    "layers_pattern",
                    format!("expected names, found {other}"),
                ));
            }
        };
        let dropout = v.get("lora_dropout").and_then(Value::as_f64).unwrap_or(0.0);
        let use_rslora = match v.get("use_rslora") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(bad("use_rslora", "expected true or false".into())),
        };
        let patterns: Patterns = serde_json::from_str(text)
            .map_err(|e| bad("rank_pattern", format!("expected an object: {e}")))?;
        let pattern_key = |field: &str, key: &str| -> Result<Regex> {
            Regex::new(&format!(r"^(?:(.*\.)?({key}))$")).map_err(|e| {
                bad(
                    field,
                    format!("key {key:?} is not a regular expression: {e}"),
                )
            })
        };
        let lora_alpha = number("lora_alpha")?;
        let (kind, r, rank_pattern, alpha_pattern) = match peft_type {
            "LORA" => {
                let mut rank_pattern = Vec::new();
                for (k, val) in patterns.rank_pattern.map(|o| o.0).unwrap_or_default() {
                    let r = val.as_u64().filter(|r| *r > 0).ok_or_else(|| {
                        bad(
                            "rank_pattern",
                            format!("{k:?}: expected a positive integer, found {val}"),
                        )
                    })?;
                    rank_pattern.push((pattern_key("rank_pattern", &k)?, k, r as usize));
                }
                let mut alpha_pattern = Vec::new();
                for (k, val) in patterns.alpha_pattern.map(|o| o.0).unwrap_or_default() {
                    let a = val.as_f64().filter(|a| a.is_finite()).ok_or_else(|| {
                        bad(
                            "alpha_pattern",
                            format!("{k:?}: expected a number, found {val}"),
                        )
                    })?;
                    alpha_pattern.push((pattern_key("alpha_pattern", &k)?, k, a));
                }
                (PeftKind::Lora, count("r")?, rank_pattern, alpha_pattern)
            }
            "ADALORA" => {
                let init_r = count("init_r")?;
                let mut kept = BTreeMap::new();
                for (k, val) in patterns.rank_pattern.map(|o| o.0).unwrap_or_default() {
                    let mask: Vec<bool> = val
                        .as_array()
                        .and_then(|m| m.iter().map(Value::as_bool).collect())
                        .ok_or_else(|| {
                            bad(
                                "rank_pattern",
                                format!("{k:?}: expected a list of booleans"),
                            )
                        })?;
                    if mask.len() != init_r {
                        return Err(bad(
                            "rank_pattern",
                            format!(
                                "{k:?}: a mask of {} entries, init_r is {init_r}",
                                mask.len()
                            ),
                        ));
                    }
                    // Saved keys name the parameter (`...q_proj.lora_E`); the module is its parent.
                    let module = k.strip_suffix(".lora_E").unwrap_or(&k).to_string();
                    kept.insert(module, mask);
                }
                (
                    PeftKind::Adalora { init_r, kept },
                    init_r,
                    Vec::new(),
                    Vec::new(),
                )
            }
            other => {
                return Err(bad(
                    "peft_type",
                    format!("{other:?} is not supported (expected \"LORA\" or \"ADALORA\")"),
                ));
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            kind,
            r,
            lora_alpha,
            use_rslora,
            targets,
            exclude,
            layers,
            layers_pattern,
            rank_pattern,
            alpha_pattern,
            dropout,
        })
    }

    /// Whether PEFT puts an adapter on the module named `key` (`model.layers.0.self_attn.q_proj`).
    pub fn targets(&self, key: &str) -> bool {
        if self.exclude.as_ref().is_some_and(|e| e.matches(key)) {
            return false;
        }
        if !self.targets.matches(key) {
            return false;
        }
        let (Modules::List(_), Some(layers)) = (&self.targets, &self.layers) else {
            return true;
        };
        // PEFT: the first numbered segment after `layers_pattern` (any segment if none).
        let index = if self.layers_pattern.is_empty() {
            Regex::new(r"^.*?\.[^.]*\.(\d+)\.")
                .ok()
                .and_then(|re| re.captures(key).map(|c| c[1].to_string()))
        } else {
            self.layers_pattern.iter().find_map(|p| {
                Regex::new(&format!(r"^(?:.*?\.)?{p}\.(\d+)\."))
                    .ok()
                    .and_then(|re| re.captures(key).map(|c| c[1].to_string()))
            })
        };
        index
            .and_then(|i| i.parse::<usize>().ok())
            .is_some_and(|i| layers.contains(&i))
    }

    /// The adapter PEFT builds on module `key` (when [`Self::targets`] it): its rank, the
    /// scale of its update, and the tensor names in the weights file.
    pub fn module(&self, key: &str) -> ModuleSpec {
        match &self.kind {
            PeftKind::Lora => {
                let r = self
                    .rank_pattern
                    .iter()
                    .find(|(re, _, _)| re.is_match(key))
                    .map_or(self.r, |(_, _, r)| *r);
                let alpha = self
                    .alpha_pattern
                    .iter()
                    .find(|(re, _, _)| re.is_match(key))
                    .map_or(self.lora_alpha, |(_, _, a)| *a);
                let scale = if self.use_rslora {
                    alpha / (r as f64).sqrt()
                } else {
                    alpha / r as f64
                };
                ModuleSpec {
                    r,
                    scale,
                    a: format!("base_model.model.{key}.lora_A.weight"),
                    b: format!("base_model.model.{key}.lora_B.weight"),
                    e: None,
                }
            }
            PeftKind::Adalora { init_r, kept } => {
                let r = kept
                    .get(key)
                    .map_or(*init_r, |m| m.iter().filter(|k| **k).count());
                // PEFT: `scaling = lora_alpha` (or r when lora_alpha <= 0), divided by the
                // `ranknum` of the module as created, `init_r` (kept when resized on load).
                let alpha = if self.lora_alpha > 0.0 {
                    self.lora_alpha
                } else {
                    *init_r as f64
                };
                ModuleSpec {
                    r,
                    scale: alpha / (*init_r as f64 + 1e-5),
                    a: format!("base_model.model.{key}.lora_A"),
                    b: format!("base_model.model.{key}.lora_B"),
                    e: Some(format!("base_model.model.{key}.lora_E")),
                }
            }
        }
    }
}

/// One adapted module of a PEFT adapter.
#[derive(Clone, Debug, PartialEq)]
pub struct ModuleSpec {
    /// Its rank.
    pub r: usize,
    /// The factor PEFT applies to `B A` (`B diag(E) A`).
    pub scale: f64,
    /// `lora_A` tensor name (`[r, in]`).
    pub a: String,
    /// `lora_B` tensor name (`[out, r]`).
    pub b: String,
    /// AdaLoRA's `lora_E` tensor name (`[r, 1]`).
    pub e: Option<String>,
}

/// A PEFT adapter directory read into memory: its config and its tensors.
pub struct PeftAdapter {
    /// The directory.
    pub dir: PathBuf,
    /// `adapter_config.json`.
    pub config: PeftConfig,
    /// `adapter_model.safetensors` (its path).
    pub weights: PathBuf,
    tensors: BTreeMap<String, (Dtype, Vec<usize>, Vec<f32>)>,
}

/// Where the modules an adapter file adapts differ from what a model offers, or the tensors
/// are not what the config says.
fn tensor_err(path: &Path, key: &str, message: String) -> TrainError {
    TrainError::Adapter {
        path: path.to_path_buf(),
        key: key.into(),
        message,
    }
}

impl PeftAdapter {
    /// Reads `dir/adapter_config.json` and `dir/adapter_model.safetensors`.
    pub fn open(dir: &Path) -> Result<Self> {
        let config = PeftConfig::read(dir)?;
        let weights = dir.join(WEIGHTS_FILE);
        let bytes = std::fs::read(&weights)
            .map_err(|e| tensor_err(&weights, WEIGHTS_FILE, format!("cannot read it ({e})")))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| tensor_err(&weights, "header", format!("not a safetensors file: {e}")))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let values = models::format::checkpoint::decode_f32(view.dtype(), view.data())
                .ok_or_else(|| {
                    tensor_err(
                        &weights,
                        &name,
                        format!("dtype {:?}; expected F32, F16 or BF16", view.dtype()),
                    )
                })?;
            tensors.insert(name, (view.dtype(), view.shape().to_vec(), values));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            weights,
            tensors,
        })
    }

    /// The module names (`model.layers.0.self_attn.q_proj`) the weights file adapts.
    pub fn modules(&self) -> Result<BTreeSet<String>> {
        let mut out = BTreeSet::new();
        for name in self.tensors.keys() {
            let rest = name.strip_prefix("base_model.model.").ok_or_else(|| {
                tensor_err(
                    &self.weights,
                    name,
                    "not a PEFT adapter key (expected base_model.model.<module>.lora_A...)".into(),
                )
            })?;
            let module = ["lora_A", "lora_B", "lora_E"].iter().find_map(|f| {
                rest.strip_suffix(&format!(".{f}.weight"))
                    .or_else(|| rest.strip_suffix(&format!(".{f}")))
            });
            let module = module.ok_or_else(|| {
                tensor_err(
                    &self.weights,
                    name,
                    "not a LoRA factor (lora_A, lora_B or lora_E); DoRA magnitudes, embedding \
                     adapters and saved modules are not supported"
                        .into(),
                )
            })?;
            out.insert(module.to_string());
        }
        Ok(out)
    }

    /// The projection names (`q_proj`, `fc1`, ...) the file adapts, sorted; each checked by
    /// `known` (the model's adaptable projection names).
    pub fn kinds(&self, known: &impl Fn(&str) -> bool) -> Result<Vec<String>> {
        let mut kinds = BTreeSet::new();
        for module in self.modules()? {
            let kind = module.rsplit('.').next().unwrap_or(&module).to_string();
            if !known(&kind) {
                return Err(tensor_err(
                    &self.weights,
                    &module,
                    format!(
                        "adapts {kind:?}, which this model cannot adapt (not one of its projections)"
                    ),
                ));
            }
            kinds.insert(kind);
        }
        if kinds.is_empty() {
            return Err(tensor_err(
                &self.weights,
                "tensors",
                "no LoRA tensors".into(),
            ));
        }
        Ok(kinds.into_iter().collect())
    }

    /// The projection names a model needs adapters on to hold this adapter: those of
    /// [`Self::kinds`] and, for a list `target_modules`, each entry's (a list entry naming no
    /// projection the model has is an error, as in PEFT).
    pub fn build_targets(&self, known: impl Fn(&str) -> bool) -> Result<Vec<String>> {
        let mut kinds = self.kinds(&known)?;
        if let Modules::List(names) = &self.config.targets {
            for name in names {
                let kind = name.rsplit('.').next().unwrap_or(name);
                if !known(kind) {
                    return Err(TrainError::Adapter {
                        path: self.config.path.clone(),
                        key: "target_modules".into(),
                        message: format!("{name:?} names no projection this model can adapt"),
                    });
                }
                kinds.push(kind.to_string());
            }
        }
        kinds.sort();
        kinds.dedup();
        Ok(kinds)
    }

    /// The rank our adapter needs to hold every module (the largest module rank, at least 1).
    pub fn max_rank(&self) -> Result<usize> {
        Ok(self
            .modules()?
            .iter()
            .filter(|m| self.config.targets(m))
            .map(|m| self.config.module(m).r)
            .max()
            .unwrap_or(0)
            .max(1))
    }

    fn take(
        &self,
        used: &mut BTreeSet<String>,
        name: &str,
        shape: &[usize],
        base: Option<Dtype>,
        allow_upcast: bool,
    ) -> Result<Vec<f32>> {
        let (dtype, got, values) = self.tensors.get(name).ok_or_else(|| {
            tensor_err(
                &self.weights,
                name,
                format!(
                    "missing: {} targets this module, so PEFT expects this tensor",
                    self.config.path.display()
                ),
            )
        })?;
        if got.as_slice() != shape {
            return Err(tensor_err(
                &self.weights,
                name,
                format!(
                    "shape {got:?}, the model needs {shape:?} (an adapter for another model or \
                     hidden size?)"
                ),
            ));
        }
        if let Some(base) = base
            && *dtype != Dtype::F32
            && *dtype != base
            && !allow_upcast
        {
            return Err(tensor_err(
                &self.weights,
                name,
                format!(
                    "dtype {dtype:?} but the base model's weights are {base:?}; convert the adapter \
                     to the base's dtype (or pass --allow-upcast: {dtype:?} -> F32 is exact)"
                ),
            ));
        }
        used.insert(name.to_string());
        Ok(values.clone())
    }
}

/// What happens to adapter components the PEFT adapter does not set (modules it does not
/// target, components beyond a module's rank).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fill {
    /// Zeroed: the model computes exactly the PEFT model (import).
    Zero,
    /// Kept as initialised (`B = 0`, so they add nothing yet, but `A` is random and they
    /// train): continuing training from an adapter into a larger rank.
    Keep,
}

/// What [`apply`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct Applied {
    /// Modules set from the adapter.
    pub modules: usize,
    /// Adapted layers of the model the adapter does not target.
    pub untouched: usize,
    /// The largest module rank.
    pub max_rank: usize,
}

/// The PEFT module name of one of our adapter paths (`layers.0.self_attn.q_proj.Adapted` ->
/// `model.layers.0.self_attn.q_proj`; the same for Whisper's `encoder.layers.0...`).
pub fn module_key(path: &str) -> String {
    format!("model.{}", path.strip_suffix(".Adapted").unwrap_or(path))
}

/// Sets every adapted layer of `model` that `adapter` targets from its factors: module `m` of
/// rank `r` and scale `s_m` goes into components `0..r` with `B` scaled by
/// `s_m / s(r_max)` (and AdaLoRA's `E`), so the model at `r_max` computes PEFT's update.
/// `base` is the dtype of the base model's weights (a half-precision adapter on an f32 base is
/// refused unless `allow_upcast`).
pub fn apply<B: Backend, M: Adapters<B>>(
    model: &mut M,
    adapter: &PeftAdapter,
    fill: Fill,
    base: Option<Dtype>,
    allow_upcast: bool,
) -> Result<Applied> {
    let cfg = &adapter.config;
    let mut used = BTreeSet::new();
    let (mut modules, mut untouched, mut max_rank) = (0, 0, 0);
    for (path, layer) in model.adapters_mut() {
        let key = module_key(&path);
        if !cfg.targets(&key) {
            untouched += 1;
            if fill == Fill::Zero {
                let (r_max, d_in, d_out) = (layer.r_max(), layer.d_input(), layer.d_output());
                set_factors(layer, vec![0.0; r_max * d_in], vec![0.0; d_out * r_max]);
            }
            continue;
        }
        if layer.lora_e.is_some() {
            return Err(tensor_err(
                &adapter.weights,
                &key,
                "the model has AdaLoRA's SVD-form adapter; load PEFT adapters into a LoRA-family \
                 model"
                    .into(),
            ));
        }
        let spec = cfg.module(&key);
        let (r_max, d_in, d_out) = (layer.r_max(), layer.d_input(), layer.d_output());
        let r = spec.r;
        if r > r_max {
            return Err(tensor_err(
                &adapter.weights,
                &spec.a,
                format!("rank {r} is above the model's r_max = {r_max}"),
            ));
        }
        let a = adapter.take(&mut used, &spec.a, &[r, d_in], base, allow_upcast)?;
        let b = adapter.take(&mut used, &spec.b, &[d_out, r], base, allow_upcast)?;
        let e = match &spec.e {
            Some(name) => Some(adapter.take(&mut used, name, &[r, 1], base, allow_upcast)?),
            None => None,
        };
        let fold = spec.scale / layer.scale_at(r_max);
        let (mut a_all, mut b_all) = match fill {
            Fill::Zero => (vec![0.0; r_max * d_in], vec![0.0; d_out * r_max]),
            Fill::Keep => (
                HostTensor::of(layer.lora_a.val()).values,
                HostTensor::of(layer.lora_b.val()).values,
            ),
        };
        a_all[..r * d_in].copy_from_slice(&a);
        for j in 0..r {
            let col = e.as_ref().map_or(1.0, |e| e[j] as f64) * fold;
            for o in 0..d_out {
                let v = b[o * r + j];
                b_all[o * r_max + j] = if col == 1.0 {
                    v
                } else {
                    (v as f64 * col) as f32
                };
            }
        }
        set_factors(layer, a_all, b_all);
        modules += 1;
        max_rank = max_rank.max(r);
    }
    let unused: Vec<&String> = adapter
        .tensors
        .keys()
        .filter(|k| !used.contains(*k))
        .collect();
    if let Some(first) = unused.first() {
        let modules: BTreeSet<String> = adapter
            .modules()?
            .into_iter()
            .filter(|m| unused.iter().any(|u| u.contains(&format!("{m}.lora_"))))
            .collect();
        let example = modules.iter().next().cloned().unwrap_or_default();
        let targeted = cfg.targets(&example);
        return Err(tensor_err(
            &adapter.weights,
            first,
            format!(
                "{} tensor(s) left unread: the file adapts {} module(s) ({}) {}",
                unused.len(),
                modules.len(),
                modules
                    .iter()
                    .take(3)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                if targeted {
                    "that this model does not have (an adapter for another architecture?)"
                } else {
                    "that its target_modules do not select"
                }
            ),
        ));
    }
    if modules == 0 {
        return Err(TrainError::Adapter {
            path: cfg.path.clone(),
            key: "target_modules".into(),
            message: "selects no module of this model".into(),
        });
    }
    Ok(Applied {
        modules,
        untouched,
        max_rank,
    })
}

fn set_factors<B: Backend>(layer: &mut FlexiLinear<B>, a: Vec<f32>, b: Vec<f32>) {
    let (r_max, d_in, d_out) = (layer.r_max(), layer.d_input(), layer.d_output());
    layer.lora_a = with_values(layer.lora_a.clone(), TensorData::new(a, [r_max, d_in]));
    layer.lora_b = with_values(layer.lora_b.clone(), TensorData::new(b, [d_out, r_max]));
}

/// The dtype of a Hugging Face base model's weights (the first tensor of `model.safetensors`
/// or of the first shard); `None` for other formats (GGUF, CTranslate2: quantised or mixed).
pub fn base_dtype(model: &Path) -> Option<Dtype> {
    let file = if model.join("model.safetensors").is_file() {
        model.join("model.safetensors")
    } else {
        let index: Value = serde_json::from_slice(
            &std::fs::read(model.join("model.safetensors.index.json")).ok()?,
        )
        .ok()?;
        let shard = index["weight_map"].as_object()?.values().next()?.as_str()?;
        model.join(shard)
    };
    let mut f = std::fs::File::open(file).ok()?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).ok()?;
    let n = u64::from_le_bytes(len).min(100 << 20) as usize;
    let mut header = vec![0u8; n];
    f.read_exact(&mut header).ok()?;
    let header: Value = serde_json::from_slice(&header).ok()?;
    let dtype = header
        .as_object()?
        .iter()
        .find(|(k, _)| *k != "__metadata__")?
        .1["dtype"]
        .as_str()?
        .to_string();
    match dtype.as_str() {
        "F32" => Some(Dtype::F32),
        "F16" => Some(Dtype::F16),
        "BF16" => Some(Dtype::BF16),
        _ => None,
    }
}

/// What to import.
#[derive(Clone, Debug)]
pub struct ImportSpec {
    /// The base model (HF directory or `.gguf` for Llama; HF or CTranslate2 for Whisper).
    pub model: PathBuf,
    /// The PEFT adapter directory.
    pub adapter: PathBuf,
    /// The run directory to write.
    pub out: PathBuf,
    /// Apply the model's chat template to prompts (text).
    pub chat: bool,
    /// Longest prompt + answer when generating (the run's `max_len`).
    pub max_len: usize,
    /// Accept a half-precision adapter on an f32 base (converted exactly).
    pub allow_upcast: bool,
}

/// What [`import_peft`] wrote.
#[derive(Debug)]
pub struct Imported {
    /// The run's description (`out/run.json`).
    pub info: RunInfo,
    /// The run's LoRA rank (the adapter's largest module rank).
    pub rank: usize,
    /// What was set.
    pub applied: Applied,
}

/// The run configuration that holds `adapter` exactly: LoRA at its largest module rank, with
/// `alpha` chosen so that the modules at the config's own `r` and `lora_alpha` need no
/// rescaling (AdaLoRA: `lora_alpha / init_r`).
pub fn run_config(adapter: &PeftAdapter, targets: Vec<String>) -> Result<TrainConfig> {
    let cfg = &adapter.config;
    let rank = adapter.max_rank()?;
    let base_r = cfg.r as f64;
    let (alpha, scale) = match (&cfg.kind, cfg.use_rslora) {
        (PeftKind::Lora, true) if rank == cfg.r => (cfg.lora_alpha, ScalePolicy::AlphaOverSqrtRank),
        (PeftKind::Lora, true) => (
            cfg.lora_alpha * (rank as f64).sqrt() / base_r.sqrt(),
            ScalePolicy::AlphaOverSqrtRank,
        ),
        _ if rank == cfg.r => (cfg.lora_alpha, ScalePolicy::AlphaOverRank),
        _ => (
            cfg.lora_alpha * rank as f64 / base_r,
            ScalePolicy::AlphaOverRank,
        ),
    };
    let alpha = if alpha > 0.0 { alpha } else { rank as f64 };
    Ok(TrainConfig {
        method: Method::Lora { rank },
        adapter: AdapterSettings {
            alpha,
            scale,
            targets,
            dropout: cfg.dropout,
        },
        ..TrainConfig::default()
    })
}

/// Imports a PEFT LoRA or AdaLoRA adapter onto `spec.model` as a run directory (`run.json`
/// and a step-0 checkpoint) that `eval`, `generate`, `export`, `merge` and
/// `train --resume-from-adapter` read like a trained run. The run is a LoRA run at the
/// adapter's largest module rank; see [`run_config`].
pub fn import_peft<B: AutodiffBackend>(spec: &ImportSpec, device: B::Device) -> Result<Imported> {
    let adapter = PeftAdapter::open(&spec.adapter)?;
    if spec.out.join(RunInfo::FILE).exists() {
        return Err(TrainError::Config {
            key: "out".into(),
            message: format!(
                "{} already holds a run (run.json); choose another directory",
                spec.out.display()
            ),
        });
    }
    let _lock = crate::lock::RunLock::acquire(&spec.out)?;
    let speech = models::auto::is_whisper(&spec.model);
    let targets = if speech {
        adapter.build_targets(|k| models::whisper::WhisperAdapter::parse_targets(k).is_ok())?
    } else {
        adapter.build_targets(|k| models::llama::AdapterConfig::parse_targets(k).is_ok())?
    };
    let mut config = run_config(&adapter, targets)?;
    config.max_len = spec.max_len;
    let base = base_dtype(&spec.model);
    let (weights, applied, params, chat) = if speech {
        let mut model = crate::asr::load_whisper_for_training::<B>(&spec.model, &config, &device)?;
        let applied = apply(&mut model, &adapter, Fill::Zero, base, spec.allow_upcast)?;
        let params = flexi_burn::ParamCount::of(&model);
        (trainable_tensors(&model), applied, params, false)
    } else {
        let text = infer::LmText::load(&spec.model, spec.chat)?;
        let mut model = crate::lm::load_for_training::<B>(&spec.model, &config, &device)?;
        text.check_vocab(model.config.vocab_size)?;
        let applied = apply(&mut model, &adapter, Fill::Zero, base, spec.allow_upcast)?;
        let params = flexi_burn::ParamCount::of(&model);
        (trainable_tensors(&model), applied, params, text.chat)
    };
    let state = CheckpointState {
        step: 0,
        seed: config.seed,
        method: config.method.label(),
        config: serde_json::to_value(&config).unwrap_or_default(),
        adalora: None,
        last_loss: 0.0,
        loss_scale: None,
    };
    Checkpoints::new(&spec.out, 2).save(
        &state,
        &[("weights.safetensors", to_safetensors(&weights)?)],
    )?;
    let info = RunInfo {
        model: spec.model.clone(),
        config: config.clone(),
        router: None,
        chat,
        examples: 0,
        seconds: 0.0,
        first_loss: 0.0,
        last_loss: 0.0,
        speech,
        trainable_params: params.trainable,
        base_params: params.total - params.trainable,
        adapter_from: Some(spec.adapter.clone()),
    };
    info.write(&spec.out)?;
    let rank = config.method.r_max()?;
    Ok(Imported {
        info,
        rank,
        applied,
    })
}

/// A Llama (HF directory or `.gguf`) with a PEFT LoRA / AdaLoRA adapter, on any backend: the
/// adapter as [`import_peft`] reads it (a LoRA at its largest module rank, every module at
/// PEFT's scale), without writing a run. Returns the model and that rank.
pub fn load_llama_with_adapter<B: Backend>(
    model: &Path,
    adapter: &Path,
    allow_upcast: bool,
    precision: flexi_burn::Precision,
    device: &B::Device,
) -> Result<(models::llama::Llama<B>, usize)> {
    let adapter = PeftAdapter::open(adapter)?;
    let targets =
        adapter.build_targets(|k| models::llama::AdapterConfig::parse_targets(k).is_ok())?;
    let mut config = run_config(&adapter, targets)?;
    // The frozen matrices stored in `precision`'s type as the base is read (the adapter's
    // own tensors stay f32).
    config.precision = precision;
    let mut llama = crate::lm::load_adapted::<B>(model, &config, device)?;
    apply(
        &mut llama,
        &adapter,
        Fill::Zero,
        base_dtype(model),
        allow_upcast,
    )?;
    Ok((llama, config.method.r_max()?))
}

/// Loads `model`'s adapter from a PEFT adapter directory before training continues
/// (`train --resume-from-adapter`): components `0..r` of every targeted module, the rest as
/// initialised ([`Fill::Keep`]). The method must be LoRA-family with `r_max` at least the
/// adapter's ranks.
pub fn init_from_adapter<B: Backend, M: Adapters<B>>(
    model: &mut M,
    method: &Method,
    source: &Path,
    base_model: &Path,
    allow_upcast: bool,
) -> Result<Applied> {
    if matches!(method, Method::Full | Method::Adalora(_)) {
        return Err(TrainError::Config {
            key: "resume_from_adapter".into(),
            message: format!(
                "{} cannot start from a LoRA adapter (LoRA, DyLoRA, DyLoRA+ and Flexi-LoRA can)",
                method.label()
            ),
        });
    }
    let adapter = PeftAdapter::open(source)?;
    apply(
        model,
        &adapter,
        Fill::Keep,
        base_dtype(base_model),
        allow_upcast,
    )
}
