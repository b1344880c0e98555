//! PEFT import (issue 15): adapters made by PEFT itself (`tools/peft_import_fixtures.py`,
//! transformers 4.57.6 + peft 0.21) imported as runs give PEFT's logits; export -> import ->
//! export is byte-identical; `--resume-from-adapter` starts training from the adapter; bad
//! adapters are refused naming the file and the key.

use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, Flex};
use flexi_burn::SampleRanks;
use models::llama::PaddedBatch;
use models::whisper::{MelExtractor, Padding, load_audio, to_f32_vec};
use safetensors::{Dtype, SafeTensors};
use train::peft::{ImportSpec, import_peft};
use train::run::RunModel;
use train::workflow::{self, FitSpec};
use train::{FlexiRun, Method, TrainConfig, TrainError};

type B = Flex;
type Ad = Autodiff<Flex>;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models/tests/fixtures")
        .join(name)
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("flexi-peft-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `input_ids` (i64) and `logits` (f32) of a `peft_logits.safetensors`.
fn peft_logits(path: &Path) -> (Vec<u32>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let ids = st.tensor("input_ids").unwrap();
    assert_eq!(ids.dtype(), Dtype::I64);
    let ids = ids
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32)
        .collect();
    let logits = st.tensor("logits").unwrap();
    let logits = logits
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (ids, logits)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

fn import(model: PathBuf, adapter: PathBuf, out: PathBuf) -> train::Result<train::peft::Imported> {
    import_peft::<Ad>(
        &ImportSpec {
            model,
            adapter,
            out,
            chat: false,
            max_len: 64,
            allow_upcast: false,
        },
        Default::default(),
    )
}

/// Logits `[n, vocab]` of a text run at `rank`, and of its base (rank 0).
fn text_logits(run: &FlexiRun<B>, ids: &[u32], rank: usize) -> (Vec<f32>, Vec<f32>) {
    let RunModel::Text { model, .. } = &run.model else {
        panic!("a text run")
    };
    let batch = PaddedBatch::left_pad(&[ids.to_vec()], 0);
    let at = |r| {
        model
            .forward(&batch, &SampleRanks::uniform(1, r))
            .unwrap()
            .into_data()
            .to_vec::<f32>()
            .unwrap()
    };
    (at(rank), at(0))
}

#[test]
fn a_peft_lora_with_a_regex_and_rank_and_alpha_patterns_gives_pefts_logits() {
    // r = 4, alpha 8; target_modules a regex (k_proj of layer 0 only); rank_pattern v_proj 2,
    // layer 1's q_proj 6; alpha_pattern down_proj 3. The run is LoRA-6 with alpha 12 (scale 2
    // = PEFT's default 8/4), the other modules' scales folded into B, ranks zero-padded.
    let dir = tmp("lora");
    let adapter = fixture("tiny_tied/peft_import_lora");
    let run_dir = dir.join("run");
    let imported = import(fixture("tiny_tied"), adapter.clone(), run_dir.clone()).unwrap();
    assert_eq!(imported.rank, 6);
    assert_eq!(
        imported.applied.modules, 7,
        "k_proj of layer 0, q/v/down of both layers"
    );
    assert_eq!(
        imported.applied.untouched, 1,
        "layer 1's k_proj is not targeted"
    );
    assert_eq!(imported.info.config.adapter.alpha, 12.0);
    assert_eq!(
        imported.info.config.adapter.targets,
        ["down_proj", "k_proj", "q_proj", "v_proj"]
    );
    let run = FlexiRun::<B>::load(&run_dir, &Default::default()).unwrap();
    assert_eq!(run.method(), "lora-6");
    let (ids, want) = peft_logits(&adapter.join("peft_logits.safetensors"));
    let (got, base) = text_logits(&run, &ids, 6);
    let d = max_diff(&got, &want);
    let moved = max_diff(&base, &want);
    println!("peft lora import: max abs diff to PEFT {d:.2e}, adapter moves logits {moved:.2e}");
    assert!(d <= 1e-4, "{d}");
    assert!(moved > 1e-2, "{moved}");
}

#[test]
fn a_peft_adalora_adapter_with_its_rank_pattern_gives_pefts_logits() {
    // PEFT's own AdaLoRA layout: lora_A / lora_E / lora_B cut to each module's kept
    // components (5, 4, 4, 2, 2, 1 of init_r 6), scale lora_alpha / (init_r + 1e-5).
    let dir = tmp("adalora");
    let adapter = fixture("tiny_tied/peft_import_adalora");
    let run_dir = dir.join("run");
    let imported = import(fixture("tiny_tied"), adapter.clone(), run_dir.clone()).unwrap();
    assert_eq!(imported.rank, 5);
    assert_eq!(imported.applied.modules, 6);
    let run = FlexiRun::<B>::load(&run_dir, &Default::default()).unwrap();
    let (ids, want) = peft_logits(&adapter.join("peft_logits.safetensors"));
    let (got, base) = text_logits(&run, &ids, 5);
    let d = max_diff(&got, &want);
    let moved = max_diff(&base, &want);
    println!("peft adalora import: max abs diff to PEFT {d:.2e}, adapter moves logits {moved:.2e}");
    assert!(d <= 1e-4, "{d}");
    assert!(moved > 1e-3, "{moved}");
}

#[test]
fn a_peft_whisper_adapter_gives_pefts_logits_and_exports_back_to_the_same_bytes() {
    // rsLoRA r = 4, alpha 16 on q_proj, v_proj, fc1: encoder and decoder, self- and
    // cross-attention (PEFT's list entries match every module ending in that name).
    let dir = tmp("whisper");
    let wdir = fixture("whisper_tiny");
    let adapter = wdir.join("peft_lora");
    let run_dir = dir.join("run");
    let imported = import(wdir.clone(), adapter.clone(), run_dir.clone()).unwrap();
    assert_eq!(imported.rank, 4);
    // Encoder: 2 layers x (q, v, fc1); decoder: 2 x (self q, v, cross q, v, fc1).
    assert_eq!(imported.applied.modules, 2 * 3 + 2 * 5);
    let run = FlexiRun::<B>::load(&run_dir, &Default::default()).unwrap();
    let RunModel::Speech { model, .. } = &run.model else {
        panic!("a speech run")
    };
    let (ids, want) = peft_logits(&adapter.join("peft_logits.safetensors"));
    let wav = load_audio(wdir.join("audio_1s.wav")).unwrap();
    let mel = MelExtractor::new(80)
        .log_mel(&wav, Padding::ThirtySeconds, "wav")
        .unwrap();
    let device = Default::default();
    let logits = |rank| {
        let ranks = SampleRanks::uniform(1, rank);
        let enc = model
            .encode(
                model
                    .mel_batch(std::slice::from_ref(&mel), &device)
                    .unwrap(),
                &ranks,
            )
            .unwrap();
        let ids = model
            .ids_tensor(std::slice::from_ref(&ids), &device)
            .unwrap();
        let mut cache = model.new_cache();
        to_f32_vec(model.decode(ids, &enc, &mut cache, &ranks).unwrap()).unwrap()
    };
    let (got, base) = (logits(4), logits(0));
    let d = max_diff(&got, &want);
    let moved = max_diff(&base, &want);
    println!("peft whisper import: max abs diff to PEFT {d:.2e}, adapter moves logits {moved:.2e}");
    assert!(d <= 1e-4, "{d}");
    assert!(moved > 1e-2, "{moved}");
    // Merged into an HF checkpoint (`W0 + s B A` in each projection), reloaded here without
    // an adapter: the run at rank 4. The fixture is f16, so the merge is checked on an f32
    // copy of it (in f16 the merged weights round to 2^-11 relative: 1.1e-3 on these logits).
    let base32 = f32_copy(&wdir, &dir.join("whisper_f32"));
    let run32 = dir.join("run32");
    import(base32, adapter.clone(), run32.clone()).unwrap();
    let run32 = FlexiRun::<B>::load(&run32, &device).unwrap();
    let RunModel::Speech { model: model32, .. } = &run32.model else {
        panic!("a speech run")
    };
    let merged = dir.join("merged");
    let m = train::export::merge_hf(&run32, None, &merged).unwrap();
    assert_eq!((m.rank, m.replaced), (4, 16));
    let plain = models::ct2::load_whisper_any::<B>(
        &merged,
        &models::whisper::WhisperAdapter::none(),
        &device,
    )
    .unwrap();
    let logits_of = |w: &models::whisper::Whisper<B>, rank| {
        let ranks = SampleRanks::uniform(1, rank);
        let enc = w
            .encode(
                w.mel_batch(std::slice::from_ref(&mel), &device).unwrap(),
                &ranks,
            )
            .unwrap();
        let mut cache = w.new_cache();
        let ids = w.ids_tensor(std::slice::from_ref(&ids), &device).unwrap();
        to_f32_vec(w.decode(ids, &enc, &mut cache, &ranks).unwrap()).unwrap()
    };
    let dm = max_diff(&logits_of(&plain, 0), &logits_of(model32, 4));
    println!("whisper merged (f32) at rank 4 vs the run: max abs diff {dm:.2e}");
    assert!(dm <= 1e-5, "{dm}");
    // Export (Whisper target names) -> import -> export: the same bytes.
    let x1 = dir.join("x1");
    train::export::export_peft(&run, None, &x1).unwrap();
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(x1.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(
        cfg["target_modules"],
        serde_json::json!(["fc1", "q_proj", "v_proj"])
    );
    assert_eq!(cfg["use_rslora"], true);
    assert!(cfg["task_type"].is_null());
    assert_round_trip(&wdir, &x1, &dir.join("again"));
}

/// A safetensors file with every tensor converted to `dtype` (F32, F16 or BF16).
fn converted(bytes: &[u8], dtype: Dtype) -> Vec<u8> {
    use models::format::checkpoint::{decode_f32, encode_f32};
    let st = SafeTensors::deserialize(bytes).unwrap();
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            let values = decode_f32(v.dtype(), v.data()).unwrap();
            (n, v.shape().to_vec(), encode_f32(&values, dtype).unwrap())
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = data
        .iter()
        .map(|(n, s, r)| {
            let v = safetensors::tensor::TensorView::new(dtype, s.clone(), r).unwrap();
            (n.clone(), v)
        })
        .collect();
    safetensors::serialize(views, None).unwrap()
}

/// A copy of a Hugging Face Whisper directory with its weights converted to f32.
fn f32_copy(from: &Path, to: &Path) -> PathBuf {
    std::fs::create_dir_all(to).unwrap();
    for f in ["config.json", "generation_config.json", "tokenizer.json"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
    let bytes = std::fs::read(from.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    assert!(st.tensors().iter().all(|(_, v)| v.dtype() == Dtype::F16));
    std::fs::write(to.join("model.safetensors"), converted(&bytes, Dtype::F32)).unwrap();
    to.to_path_buf()
}

/// Imports the export `x1` onto `base` and exports it again: both files byte-identical.
fn assert_round_trip(base: &Path, x1: &Path, dir: &Path) {
    let run_dir = dir.join("run");
    import(base.to_path_buf(), x1.to_path_buf(), run_dir.clone()).unwrap();
    let run = FlexiRun::<B>::load(&run_dir, &Default::default()).unwrap();
    let x2 = dir.join("x2");
    train::export::export_peft(&run, None, &x2).unwrap();
    for file in ["adapter_config.json", "adapter_model.safetensors"] {
        let (a, b) = (
            std::fs::read(x1.join(file)).unwrap(),
            std::fs::read(x2.join(file)).unwrap(),
        );
        assert!(a == b, "{file} differs after export -> import -> export");
    }
}

/// A trained tiny Llama run (`method`, learned or fixed scale) in `dir`.
fn trained(dir: &Path, method: Method, scale: flexi_burn::ScalePolicy) -> PathBuf {
    let data = dir.join("math.jsonl");
    let lines: Vec<String> = (0..8)
        .map(|i| {
            serde_json::json!({"question": format!("What is {i} plus {i}?"), "answer": format!("{i} + {i} = {}\n#### {}", 2 * i, 2 * i)})
                .to_string()
        })
        .collect();
    std::fs::write(&data, lines.join("\n") + "\n").unwrap();
    let examples = workflow::read_examples(&data, None).unwrap();
    let mut config = TrainConfig {
        method,
        batch_size: 4,
        max_steps: 2,
        max_len: 64,
        lr: 2e-2,
        seed: 3,
        ..Default::default()
    };
    config.adapter.scale = scale;
    let out = dir.join("trained");
    fit(config, out.clone(), None, &examples);
    out
}

fn fit(config: TrainConfig, out: PathBuf, init: Option<PathBuf>, examples: &[datasets::Example]) {
    let spec = FitSpec {
        init_adapter: init,
        allow_upcast: false,
        model: fixture("tiny_tied"),
        config,
        router: None,
        chat: false,
        out,
        resume: false,
        progress: false,
        shards: 1,
        parallel: None,
        recompute_layers: false,
    };
    workflow::fit::<Ad>(&spec, examples, Default::default()).unwrap();
}

#[test]
fn export_import_export_is_byte_identical_and_training_resumes_from_the_adapter() {
    let dir = tmp("roundtrip");
    // A DyLoRA run exported at rank 3 (of 4), and the PEFT-made LoRA with patterns imported
    // and exported (folded scales, zero padding): each round trip gives the same bytes.
    let run_dir = trained(
        &dir,
        Method::Dylora {
            r_max: 4,
            frozen: false,
            eval_rank: 3,
        },
        flexi_burn::ScalePolicy::AlphaOverRank,
    );
    let run = FlexiRun::<B>::load(&run_dir, &Default::default()).unwrap();
    let x1 = dir.join("dylora-x1");
    train::export::export_peft(&run, None, &x1).unwrap();
    assert_round_trip(&fixture("tiny_tied"), &x1, &dir.join("dylora"));

    let imported = dir.join("imported");
    import(
        fixture("tiny_tied"),
        fixture("tiny_tied/peft_import_lora"),
        imported.clone(),
    )
    .unwrap();
    let peft_run = FlexiRun::<B>::load(&imported, &Default::default()).unwrap();
    let x1 = dir.join("patterns-x1");
    train::export::export_peft(&peft_run, None, &x1).unwrap();
    assert_round_trip(&fixture("tiny_tied"), &x1, &dir.join("patterns"));

    // `--resume-from-adapter`: LoRA-8 (alpha 16, scale 2) from the rank-6 export. At lr 0 the
    // trained run is the adapter: its logits at rank 8 equal the imported run's at 6
    // (components 6 and 7 start with B = 0).
    let data = dir.join("math.jsonl");
    let examples = workflow::read_examples(&data, None).unwrap();
    let mut config = TrainConfig {
        method: Method::Lora { rank: 8 },
        batch_size: 4,
        max_steps: 1,
        max_len: 64,
        lr: 0.0,
        warmup_steps: 0,
        seed: 9,
        ..Default::default()
    };
    config.adapter.targets = ["q_proj", "k_proj", "v_proj", "down_proj"]
        .map(String::from)
        .to_vec();
    let resumed = dir.join("resumed");
    fit(config.clone(), resumed.clone(), Some(x1.clone()), &examples);
    let resumed_run = FlexiRun::<B>::load(&resumed, &Default::default()).unwrap();
    assert_eq!(
        resumed_run.info.as_ref().unwrap().adapter_from,
        Some(x1.clone())
    );
    let ids = [0u32, 17, 42, 99, 150, 7, 301, 64];
    let (want, _) = text_logits(&peft_run, &ids, 6);
    let (got, _) = text_logits(&resumed_run, &ids, 8);
    let d = max_diff(&got, &want);
    println!("resume-from-adapter at lr 0: max abs diff to the adapter {d:.2e}");
    assert!(d <= 1e-5, "{d}");
    // With a learning rate, training moves on from the adapter.
    config.lr = 1e-2;
    config.max_steps = 2;
    let moved = dir.join("moved");
    fit(config, moved.clone(), Some(x1.clone()), &examples);
    let moved_run = FlexiRun::<B>::load(&moved, &Default::default()).unwrap();
    let (after, _) = text_logits(&moved_run, &ids, 8);
    assert!(max_diff(&after, &want) > 1e-4);
    // A rank below the adapter's is refused, naming the tensor.
    let small = TrainConfig {
        method: Method::Lora { rank: 2 },
        ..TrainConfig::default()
    };
    let spec = FitSpec {
        init_adapter: Some(x1.clone()),
        allow_upcast: false,
        model: fixture("tiny_tied"),
        config: small,
        router: None,
        chat: false,
        out: dir.join("small"),
        resume: false,
        progress: false,
        shards: 1,
        parallel: None,
        recompute_layers: false,
    };
    let err = workflow::fit::<Ad>(&spec, &examples, Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("adapter_model.safetensors")
            && err.contains("lora_A.weight")
            && err.contains("above the model's r_max = 2"),
        "{err}"
    );
}

/// Copies a fixture adapter into `dir`, letting `edit` change its config and tensors.
fn edited(
    dir: &Path,
    from: &Path,
    edit_config: impl FnOnce(&mut serde_json::Value),
    dtype: Option<Dtype>,
) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(from.join("adapter_config.json")).unwrap()).unwrap();
    edit_config(&mut cfg);
    std::fs::write(dir.join("adapter_config.json"), cfg.to_string()).unwrap();
    let bytes = std::fs::read(from.join("adapter_model.safetensors")).unwrap();
    let out = match dtype {
        None => bytes,
        Some(dtype) => converted(&bytes, dtype),
    };
    std::fs::write(dir.join("adapter_model.safetensors"), out).unwrap();
    dir.to_path_buf()
}

#[test]
fn bad_adapters_are_refused_naming_the_file_and_the_key() {
    let dir = tmp("bad");
    let llama = fixture("tiny_tied");
    let lora = fixture("tiny_tied/adapter");
    let err = |model: &Path, adapter: &Path, name: &str| -> String {
        let e = import(model.to_path_buf(), adapter.to_path_buf(), dir.join(name)).unwrap_err();
        assert!(matches!(e, TrainError::Adapter { .. }), "{e:?}");
        e.to_string()
    };
    // No adapter_config.json.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = err(&llama, &empty, "r1");
    assert!(
        e.contains("adapter_config.json") && e.contains("cannot read it"),
        "{e}"
    );
    // An adapter of another architecture: Whisper's (fc1) onto the Llama.
    let e = err(&llama, &fixture("whisper_tiny/peft_lora"), "r2");
    assert!(
        e.contains("adapter_model.safetensors")
            && e.contains("model.decoder.layers.0.fc1")
            && e.contains("cannot adapt"),
        "{e}"
    );
    // Another hidden size: the tiny Llama's adapter (hidden 64) onto the untied one (48).
    let e = err(&fixture("tiny_untied"), &lora, "r3");
    assert!(
        e.contains("adapter_model.safetensors")
            && e.contains("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight")
            && e.contains("[4, 64]")
            && e.contains("[4, 48]"),
        "{e}"
    );
    // A target module the model lacks: the config asks for o_proj, the file has none.
    let a = edited(
        &dir.join("extra-target"),
        &lora,
        |c| c["target_modules"] = serde_json::json!(["q_proj", "v_proj", "o_proj"]),
        None,
    );
    let e = err(&llama, &a, "r4");
    assert!(
        e.contains("base_model.model.model.layers.0.self_attn.o_proj.lora_A.weight")
            && e.contains("missing"),
        "{e}"
    );
    // Tensors for modules the config does not select.
    let a = edited(
        &dir.join("unselected"),
        &lora,
        |c| c["target_modules"] = serde_json::json!(["q_proj"]),
        None,
    );
    let e = err(&llama, &a, "r5");
    assert!(
        e.contains("v_proj") && e.contains("target_modules do not select"),
        "{e}"
    );
    // A bf16 adapter on the f32 base: refused unless upcasting is asked for.
    let a = edited(&dir.join("bf16"), &lora, |_| {}, Some(Dtype::BF16));
    let e = err(&llama, &a, "r6");
    assert!(
        e.contains("adapter_model.safetensors")
            && e.contains("lora_A.weight")
            && e.contains("BF16"),
        "{e}"
    );
    import_peft::<Ad>(
        &ImportSpec {
            model: llama.clone(),
            adapter: a,
            out: dir.join("r6-upcast"),
            chat: false,
            max_len: 64,
            allow_upcast: true,
        },
        Default::default(),
    )
    .unwrap();
    // Options the import does not reproduce, named by their field.
    for (field, value) in [
        ("use_dora", serde_json::json!(true)),
        ("modules_to_save", serde_json::json!(["lm_head"])),
        ("peft_type", serde_json::json!("IA3")),
        ("target_modules", serde_json::json!("(unclosed")),
    ] {
        let a = edited(&dir.join(field), &lora, |c| c[field] = value.clone(), None);
        let e = err(&llama, &a, &format!("r-{field}"));
        assert!(
            e.contains("adapter_config.json") && e.contains(field),
            "{e}"
        );
    }
    // An existing run is never overwritten.
    let e = import(llama.clone(), lora.clone(), dir.join("r6-upcast")).unwrap_err();
    assert!(e.to_string().contains("already holds a run"), "{e}");
}

#[test]
fn a_merged_checkpoint_gives_transformers_and_pefts_logits() {
    // The LoRA-8 export (`tiny_tied/lora8_peft`) imported and merged into the base's HF files:
    // loaded here as a plain model, its logits equal transformers' on the same merged files
    // (`merged_logits.safetensors`, tools/merge_check.py --write) and PEFT's on the adapter.
    let dir = tmp("merged");
    let tiny = fixture("tiny_tied");
    let adapter = tiny.join("lora8_peft");
    let run_dir = dir.join("run");
    import(tiny.clone(), adapter.clone(), run_dir.clone()).unwrap();
    let run = FlexiRun::<B>::load(&run_dir, &Default::default()).unwrap();
    let merged = dir.join("merged");
    let m = train::export::merge_hf(&run, None, &merged).unwrap();
    assert_eq!((m.rank, m.replaced), (8, 8));
    let plain = models::llama::load_llama::<B>(
        &merged,
        &models::llama::AdapterConfig::none(),
        &Default::default(),
    )
    .unwrap();
    let (ids, transformers) = peft_logits(&adapter.join("merged_logits.safetensors"));
    let (_, peft) = peft_logits(&adapter.join("peft_logits.safetensors"));
    let batch = PaddedBatch::left_pad(&[ids], 0);
    let ours: Vec<f32> = plain
        .forward(&batch, &SampleRanks::uniform(1, 0))
        .unwrap()
        .into_data()
        .to_vec()
        .unwrap();
    let (dt, dp) = (max_diff(&ours, &transformers), max_diff(&ours, &peft));
    println!("merged lora-8: max abs diff to transformers {dt:.2e}, to PEFT's adapter {dp:.2e}");
    assert!(dt <= 1e-4 && dp <= 1e-4, "{dt} {dp}");
}
