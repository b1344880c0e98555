//! A Hugging Face `tokenizers` tokenizer from GGUF tokenizer metadata.
//!
//! Supported: `tokenizer.ggml.model = "gpt2"` (byte-level BPE) with the pre-tokenizers
//! llama.cpp names in `tokenizer.ggml.pre`:
//!
//! | `pre` | pre-tokenizer (as in the original `tokenizer.json`) |
//! | --- | --- |
//! | `smollm`, `starcoder`, `refact` | single digits, then GPT-2 byte-level regex |
//! | `gpt-2`, `default` (or absent) | GPT-2 byte-level regex |
//! | `llama-bpe` (Llama 3) | Llama 3 split regex, then byte-level without regex, `ignore_merges` |
//!
//! The vocabulary is `tokenizer.ggml.tokens` (id = index), merges `tokenizer.ggml.merges`
//! (`"a b"` strings). Tokens of `token_type` 3 (control) become special added tokens, type 4
//! (user defined) non-special added tokens. `tokenizer.ggml.add_bos_token` adds
//! `bos_token_id` in front when encoding with special tokens. The tokenizer is built as a
//! `tokenizer.json` document ([`tokenizer_json`]) so it can also be written out.

use serde_json::{Map, Value, json};

use super::error::{GgufError, Result};
use super::reader::{GgufFile, MetaValue};

const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// llama.cpp token types (`tokenizer.ggml.token_type`).
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;

fn byte_level(add_prefix_space: bool, trim_offsets: bool, use_regex: bool) -> Value {
    json!({
        "type": "ByteLevel",
        "add_prefix_space": add_prefix_space,
        "trim_offsets": trim_offsets,
        "use_regex": use_regex,
    })
}

/// A `tokenizer.json` document equivalent to the file's tokenizer metadata.
pub fn tokenizer_json(file: &GgufFile) -> Result<Value> {
    let err = |reason: String| GgufError::Tokenizer {
        path: file.path().to_path_buf(),
        reason,
    };
    let model = file.get_str("tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(err(format!(
            "unsupported tokenizer.ggml.model {model:?} (supported: \"gpt2\" byte-level BPE)"
        )));
    }
    let pre = file
        .opt("tokenizer.ggml.pre", "string", |v| {
            v.as_str().map(str::to_owned)
        })?
        .unwrap_or_else(|| "default".into());
    let (pre_tokenizer, ignore_merges) = match pre.as_str() {
        "smollm" | "starcoder" | "refact" => (
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true},
                byte_level(false, true, true),
            ]}),
            false,
        ),
        "gpt-2" | "gpt2" | "default" => (byte_level(false, true, true), false),
        "llama-bpe" | "llama3" => (
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated",
                 "invert": false},
                byte_level(false, true, false),
            ]}),
            true,
        ),
        other => {
            return Err(err(format!(
                "unsupported tokenizer.ggml.pre {other:?} (supported: smollm, starcoder, \
                 refact, gpt-2, default, llama-bpe)"
            )));
        }
    };

    let tokens = file.get_array("tokenizer.ggml.tokens")?;
    let mut vocab = Map::with_capacity(tokens.len());
    let mut names = Vec::with_capacity(tokens.len());
    for (id, t) in tokens.iter().enumerate() {
        let t = t
            .as_str()
            .ok_or_else(|| err(format!("tokenizer.ggml.tokens[{id}] is not a string")))?;
        if vocab.insert(t.to_owned(), json!(id)).is_some() {
            return Err(err(format!(
                "token {t:?} appears twice (second at id {id})"
            )));
        }
        names.push(t);
    }
    let merges: Vec<Value> = file
        .get_array("tokenizer.ggml.merges")?
        .iter()
        .enumerate()
        .map(|(i, m)| match m.as_str() {
            Some(s) if s.split(' ').count() == 2 => Ok(json!(s)),
            _ => Err(err(format!(
                "tokenizer.ggml.merges[{i}] = {m:?} is not two tokens separated by a space"
            ))),
        })
        .collect::<Result<_>>()?;
    let types: Vec<i64> = match file.get("tokenizer.ggml.token_type") {
        None => vec![1; tokens.len()],
        Some(v) => {
            let items = v.as_array().ok_or_else(|| {
                err("tokenizer.ggml.token_type is not an array of integers".into())
            })?;
            if items.len() != tokens.len() {
                return Err(err(format!(
                    "tokenizer.ggml.token_type has {} entries for {} tokens",
                    items.len(),
                    tokens.len()
                )));
            }
            items
                .iter()
                .map(|t| {
                    t.as_i64()
                        .ok_or_else(|| err("tokenizer.ggml.token_type holds a non-integer".into()))
                })
                .collect::<Result<_>>()?
        }
    };
    let added: Vec<Value> = types
        .iter()
        .enumerate()
        .filter(|(_, t)| **t == CONTROL || **t == USER_DEFINED)
        .map(|(id, t)| {
            json!({
                "id": id,
                "content": names[id],
                "single_word": false,
                "lstrip": false,
                "rstrip": false,
                "normalized": *t != CONTROL,
                "special": *t == CONTROL,
            })
        })
        .collect();

    let id_key = |key: &str| -> Result<Option<u64>> {
        let id = file.opt(key, "integer", MetaValue::as_u64)?;
        if let Some(id) = id.filter(|&id| id as usize >= tokens.len()) {
            return Err(err(format!(
                "{key} = {id} is outside the {} tokens",
                tokens.len()
            )));
        }
        Ok(id)
    };
    let bos = id_key("tokenizer.ggml.bos_token_id")?;
    id_key("tokenizer.ggml.eos_token_id")?;
    id_key("tokenizer.ggml.padding_token_id")?;
    let add_bos = file
        .opt("tokenizer.ggml.add_bos_token", "bool", MetaValue::as_bool)?
        .unwrap_or(false);
    let post = match (add_bos, bos) {
        (true, Some(bos)) => {
            let b = names[bos as usize];
            json!({"type": "Sequence", "processors": [
                byte_level(true, false, true),
                {"type": "TemplateProcessing",
                 "single": [{"SpecialToken": {"id": b, "type_id": 0}},
                            {"Sequence": {"id": "A", "type_id": 0}}],
                 "pair": [{"SpecialToken": {"id": b, "type_id": 0}},
                          {"Sequence": {"id": "A", "type_id": 0}},
                          {"SpecialToken": {"id": b, "type_id": 1}},
                          {"Sequence": {"id": "B", "type_id": 1}}],
                 "special_tokens": {b: {"id": b, "ids": [bos], "tokens": [b]}}},
            ]})
        }
        (true, None) => {
            return Err(err(
                "tokenizer.ggml.add_bos_token is true but bos_token_id is missing".into(),
            ));
        }
        (false, _) => byte_level(true, false, true),
    };
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post,
        "decoder": byte_level(true, true, true),
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": ignore_merges,
            "vocab": Value::Object(vocab),
            "merges": merges,
        },
    }))
}

/// The file's tokenizer as a `tokenizers::Tokenizer`.
pub fn tokenizer(file: &GgufFile) -> Result<tokenizers::Tokenizer> {
    let doc = tokenizer_json(file)?.to_string();
    doc.parse::<tokenizers::Tokenizer>()
        .map_err(|e| GgufError::Tokenizer {
            path: file.path().to_path_buf(),
            reason: format!("building the tokenizer failed: {e}"),
        })
}
