//! `infer` on its own: evaluation with every rank policy on a tiny adapted Llama, the rules
//! evaluation enforces, weights files by module path, routers saved and loaded on a plain
//! backend, and the text side (prompts, BOS, stop tokens).

use std::path::PathBuf;

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use datasets::{Example, Task};
use flexi_burn::{RankSchedule, RouterConfig, inference_ranks};
use infer::router::{
    RouterInput, RouterMeta, RouterTraining, TextInput, TrainedRouter, save_router,
};
use infer::weights::{load_tensors, module_tensors, read_safetensors, to_safetensors};
use infer::{EvalSettings, LmText, RankPolicy, evaluate};
use models::llama::{AdapterConfig, Checkpoint, Llama, LlamaConfig, Target, build_llama};

type B = Flex;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models/tests/fixtures")
        .join(name)
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("infer-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The tiny Llama's shape with random weights and a rank-4 adapter on q and v whose `B` is
/// non-zero, so every rank gives other outputs.
fn adapted_model() -> Llama<B> {
    let config = LlamaConfig::from_dir(fixture("tiny_tied")).unwrap();
    let adapter = AdapterConfig::new(vec![Target::Q, Target::V], 4, 8.0);
    let mut ckpt = Checkpoint::random(11);
    let mut model = build_llama::<B>(&config, &mut ckpt, &adapter, &Default::default()).unwrap();
    // Both factors set deterministically (A's default init is Burn's unseeded random, which
    // made the "ranks matter" assertion below fail about once in a few dozen runs).
    for (_, l) in flexi_burn::Adapters::adapters_mut(&mut model) {
        let [r_a, d_in] = l.lora_a.dims();
        let a: Vec<f32> = (0..r_a * d_in)
            .map(|i| ((i * 53 % 29) as f32 - 14.0) * 0.02)
            .collect();
        l.lora_a = l
            .lora_a
            .clone()
            .map(|t| Tensor::from_data(TensorData::new(a, [r_a, d_in]), &t.device()));
        let [d_out, r] = l.lora_b.dims();
        let values: Vec<f32> = (0..d_out * r)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.05)
            .collect();
        l.lora_b = l
            .lora_b
            .clone()
            .map(|t| Tensor::from_data(TensorData::new(values, [d_out, r]), &t.device()));
    }
    model
}

fn examples(n: usize) -> Vec<Example> {
    (0..n)
        .map(|i| Example {
            id: format!("q{i}"),
            task: Task::Qa,
            source: "tiny".into(),
            question: format!("What is item {i}?"),
            context: Some(format!(
                "Item {i} is a {} stone.",
                ["red", "blue", "green"][i % 3]
            )),
            target: "stone".into(),
            answers: vec!["stone".into()],
            audio: None,
        })
        .collect()
}

fn settings(batch_size: usize) -> EvalSettings {
    EvalSettings {
        batch_size,
        max_new_tokens: 5,
        max_len: 60,
        progress: false,
    }
}

fn text() -> LmText {
    LmText::load(&fixture("tiny_tied"), false).unwrap()
}

#[test]
fn per_example_ranks_in_a_mixed_batch_answer_as_each_rank_alone() {
    let model = adapted_model();
    let text = text();
    let ex = examples(6);
    let ranks = vec![0, 4, 2, 4, 1, 0];
    let mixed = evaluate(
        &model,
        &text,
        &ex,
        &RankPolicy::PerExample(ranks.clone()),
        &settings(6),
        "tiny",
    )
    .unwrap();
    let got: Vec<usize> = mixed.predictions.iter().map(|p| p.rank).collect();
    assert_eq!(got, ranks);
    // Each example alone at its rank (batch of one, fixed schedule) answers the same.
    for (i, e) in ex.iter().enumerate() {
        let alone = evaluate(
            &model,
            &text,
            std::slice::from_ref(e),
            &RankPolicy::Schedule {
                schedule: RankSchedule::Fixed { rank: ranks[i] },
                seed: 0,
            },
            &settings(1),
            "tiny",
        )
        .unwrap();
        assert_eq!(
            alone.predictions[0].prediction, mixed.predictions[i].prediction,
            "example {i}"
        );
    }
    // The ranks matter: rank 4 everywhere answers differently from the base somewhere.
    let base = evaluate(&model, &text, &ex, &RankPolicy::Base, &settings(6), "tiny").unwrap();
    let full = evaluate(
        &model,
        &text,
        &ex,
        &RankPolicy::PerExample(vec![4; 6]),
        &settings(6),
        "tiny",
    )
    .unwrap();
    assert!(
        base.predictions
            .iter()
            .zip(&full.predictions)
            .any(|(a, b)| a.prediction != b.prediction)
    );
    // Accounting: mean rank and activated parameters per input (q and v of 2 layers, 64 -> 64
    // and 64 -> 32: (64 + 64) + (64 + 32) per layer and unit of rank).
    let per_rank = 2 * ((64 + 64) + (64 + 32));
    assert_eq!(flexi_burn::params::lora_params_per_rank(&model), per_rank);
    let mean = ranks.iter().sum::<usize>() as f64 / 6.0;
    assert!((mixed.mean_rank - mean).abs() < 1e-12);
    assert!((mixed.activated_params - mean * per_rank as f64).abs() < 1e-9);
    assert_eq!(base.activated_params, 0.0);
}

#[test]
fn a_schedule_draws_its_inference_stream_batch_by_batch() {
    let model = adapted_model();
    let text = text();
    let ex = examples(7);
    let schedule = RankSchedule::DyLoRAPlus { r_max: 4 };
    let report = evaluate(
        &model,
        &text,
        &ex,
        &RankPolicy::Schedule {
            schedule: schedule.clone(),
            seed: 9,
        },
        &settings(2),
        "tiny",
    )
    .unwrap();
    // Batches run in order of prompt length (stable sort).
    let lens: Vec<usize> = ex
        .iter()
        .map(|e| text.encode_prompt(e, 60, 5).unwrap().len())
        .collect();
    let mut order: Vec<usize> = (0..ex.len()).collect();
    order.sort_by_key(|&i| lens[i]);
    for (bi, chunk) in order.chunks(2).enumerate() {
        let want = inference_ranks(&schedule, 9, bi, chunk.len(), None).unwrap();
        for (&i, &r) in chunk.iter().zip(want.as_slice()) {
            assert_eq!(report.predictions[i].rank, r, "batch {bi}");
        }
    }
}

#[test]
fn bad_evaluation_inputs_are_errors() {
    let model = adapted_model();
    let text = text();
    let ex = examples(3);
    let err = |policy: RankPolicy, ex: &[Example], batch: usize| {
        evaluate(&model, &text, ex, &policy, &settings(batch), "tiny")
            .unwrap_err()
            .to_string()
    };
    assert!(err(RankPolicy::PerExample(vec![1, 2]), &ex, 2).contains("2 per-example ranks for 3"));
    assert!(err(RankPolicy::Base, &ex, 0).contains("batch_size"));
    assert!(err(RankPolicy::Base, &[], 2).contains("no example"));
    let mut dup = ex.clone();
    dup[2].id = "q0".into();
    let e = err(RankPolicy::Base, &dup, 2);
    assert!(e.contains("\"q0\"") && e.contains("more than once"), "{e}");
    // A rank above the adapter's r_max is refused, not a panic in a layer.
    assert!(err(RankPolicy::PerExample(vec![1, 9, 0]), &ex, 3).contains('9'));
}

#[test]
fn weights_round_trip_by_module_path_and_mismatches_are_named() {
    let model = adapted_model();
    let tensors = module_tensors(&model);
    assert!(tensors.contains_key("layers.0.self_attn.q_proj.Adapted.lora_b"));
    let dir = scratch("weights");
    let path = dir.join("w.safetensors");
    std::fs::write(&path, to_safetensors(&tensors).unwrap()).unwrap();
    let read = read_safetensors(&path).unwrap();
    assert_eq!(read, tensors);
    // Loading into a fresh model (other random weights) restores every tensor exactly.
    let config = LlamaConfig::from_dir(fixture("tiny_tied")).unwrap();
    let adapter = AdapterConfig::new(vec![Target::Q, Target::V], 4, 8.0);
    let fresh = build_llama::<B>(
        &config,
        &mut Checkpoint::random(99),
        &adapter,
        &Default::default(),
    )
    .unwrap();
    let loaded = load_tensors(fresh, &read, &path).unwrap();
    assert_eq!(module_tensors(&loaded), tensors);
    // A tensor of another shape, and one with no parameter, name themselves and the file.
    let mut bad = read.clone();
    let key = "layers.1.self_attn.v_proj.Adapted.lora_a";
    bad.get_mut(key).unwrap().shape = vec![2, 32];
    bad.insert(
        "layers.9.mlp.nothing".into(),
        infer::weights::HostTensor {
            shape: vec![1],
            values: vec![0.0],
        },
    );
    let e = load_tensors(loaded, &bad, &path).unwrap_err().to_string();
    assert!(
        e.contains("w.safetensors") && e.contains(key) && e.contains("layers.9.mlp.nothing"),
        "{e}"
    );
    assert!(read_safetensors(&dir.join("none.safetensors")).is_err());
}

#[test]
fn a_router_saved_and_loaded_on_a_plain_backend_routes_the_same() {
    let device = Default::default();
    let model = adapted_model();
    let text = text();
    let router = RouterConfig::new(64)
        .with_hidden(Some(8))
        .init::<B>(&device);
    let meta = RouterMeta {
        input: RouterInput::Text(TextInput::new("tiny_tied", &model, &text, 40)),
        num_classes: 2,
        class_ranks: "(1,4)".into(),
        train_accuracy: 1.0,
        heldout_accuracy: None,
        training: RouterTraining {
            hidden: Some(8),
            ..Default::default()
        },
    };
    let dir = scratch("router");
    save_router(&router, &meta, &dir).unwrap();
    let loaded = TrainedRouter::<B>::load(&dir, &device).unwrap();
    assert_eq!(loaded.meta, meta);
    let ex = examples(5);
    let refs: Vec<&Example> = ex.iter().collect();
    let feats = meta
        .input
        .text(&dir)
        .unwrap()
        .features(&model, &text, &refs)
        .unwrap();
    assert_eq!(feats.len(), 5);
    assert!(feats.iter().all(|f| f.len() == 64));
    let x = Tensor::<B, 2>::from_data(TensorData::new(feats.concat(), [5, 64]), &device);
    let want = router.route(x, &loaded.map).unwrap();
    assert_eq!(loaded.route(&model, &text, &refs).unwrap(), want);
    assert!(want.iter().all(|r| [1, 4].contains(r)));
    // A router.json written before audio routers (no "modality") is a text router.
    let path = dir.join("router.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(v["input"]["modality"], "text");
    v["input"].as_object_mut().unwrap().remove("modality");
    std::fs::write(&path, v.to_string()).unwrap();
    let old = TrainedRouter::<B>::load(&dir, &device).unwrap();
    assert_eq!(old.meta, meta);
    // Features of another width are refused with the router named.
    let e = loaded
        .route_features(&[vec![0.0; 8]])
        .unwrap_err()
        .to_string();
    assert!(e.contains("width 8") && e.contains("reads 64"), "{e}");
}

#[test]
fn text_prompts_carry_one_bos_and_answers_stop_at_the_chat_turn() {
    // With the (Llama 3) chat template: the template's own <|begin_of_text|> is removed
    // because the encoder adds BOS once; answers stop at <|eot_id|>.
    let chat = LmText::load(&fixture("tiny_tied"), true).unwrap();
    assert!(chat.chat);
    let bos = chat.tokenizer.token_id("<|begin_of_text|>").unwrap();
    let eot = chat.tokenizer.token_id("<|eot_id|>").unwrap();
    let ids = chat.encode_prompt(&examples(1)[0], 64, 4).unwrap();
    assert_eq!(ids[0], bos);
    assert_eq!(ids.iter().filter(|&&t| t == bos).count(), 1, "{ids:?}");
    assert!(chat.stop_ids.contains(&eot));
    let hello = chat.tokenizer.encode("Hello", false).unwrap();
    let mut answer = hello.clone();
    answer.push(eot);
    answer.extend(chat.tokenizer.encode(" more", false).unwrap());
    assert_eq!(chat.decode_answer(&answer).unwrap(), "Hello");
    // Training targets end with the end-of-turn token; the prompt is cut from the left.
    let enc = chat.encode_train(&examples(1)[0], 24).unwrap();
    assert_eq!(enc.input_ids.len(), 24);
    assert_eq!(*enc.input_ids.last().unwrap(), eot);
    // Without a chat template, no chat tokens at all.
    let plain = text();
    assert!(!plain.chat && plain.chat_template_name().is_none());
    assert!(chat.chat_template_name().unwrap().contains("Llama3"));
    let e = plain
        .encode_prompt(&examples(1)[0], 4, 4)
        .unwrap_err()
        .to_string();
    assert!(e.contains("max_len 4"), "{e}");
}

#[test]
fn answers_cut_at_max_new_tokens_are_counted_per_example() {
    use flexi_burn::SampleRanks;
    use models::llama::{GenerationConfig, generate};
    let model = adapted_model();
    let text = text();
    let ex = examples(6);
    for max_new_tokens in [1, 5] {
        let s = EvalSettings {
            max_new_tokens,
            ..settings(3)
        };
        let report = evaluate(&model, &text, &ex, &RankPolicy::Base, &s, "tiny").unwrap();
        // Independently: each prompt generated alone, cut when it used every allowed token
        // without producing a stop token.
        let config = GenerationConfig {
            pad_token_id: text.pad_id(),
            ..GenerationConfig::greedy(max_new_tokens, text.stop_ids.clone())
        };
        let mut cut = 0;
        for (e, p) in ex.iter().zip(&report.predictions) {
            let prompt = text.encode_prompt(e, 60, max_new_tokens).unwrap();
            let out = generate(&model, &[prompt], &SampleRanks::uniform(1, 0), &config).unwrap();
            let tokens = &out.tokens[0];
            let want =
                tokens.len() == max_new_tokens && !tokens.iter().any(|t| text.stop_ids.contains(t));
            assert_eq!(
                p.truncated, want,
                "{} at max_new_tokens {max_new_tokens}",
                e.id
            );
            cut += want as usize;
        }
        assert_eq!(report.truncated, cut);
        assert_eq!(report.max_new_tokens, max_new_tokens);
        if max_new_tokens == 1 {
            // The random tiny model does not stop at its first token: every answer is cut.
            assert_eq!(cut, ex.len());
        }
    }
}

#[test]
fn a_hidden_state_router_input_pools_the_base_models_layers_without_padding() {
    // `Llama::hidden_after(batch, l)`: l = 0 is the token embedding, l = all layers the
    // final-normed output of `Llama::hidden` at rank 0; pooled over left-padded batches, each
    // prompt's vector equals its own (unpadded) one.
    use models::llama::PaddedBatch;
    let model = adapted_model();
    let n = model.config.num_hidden_layers;
    let prompts: Vec<Vec<u32>> = vec![vec![1, 5, 9, 13, 17, 21], vec![2, 4, 6], vec![7]];
    let batch = PaddedBatch::left_pad(&prompts, 0);
    let rank0 = flexi_burn::SampleRanks::uniform(3, 0);
    let last = model.hidden_after(&batch, n).unwrap();
    let full = model.hidden(&batch, &rank0).unwrap();
    assert_eq!(
        last.into_data().to_vec::<f32>().unwrap(),
        full.into_data().to_vec::<f32>().unwrap()
    );
    assert!(model.hidden_after(&batch, n + 1).is_err());
    let emb = infer::router::pooled_embeddings(&model, &prompts, 8);
    let l0 = infer::router::pooled_hidden(&model, &prompts, 0, 8).unwrap();
    for (a, b) in emb.iter().flatten().zip(l0.iter().flatten()) {
        assert!((a - b).abs() < 1e-6, "{a} {b}");
    }
    for l in [1, n] {
        let together = infer::router::pooled_hidden(&model, &prompts, l, 8).unwrap();
        let middle_differs = together[0] != emb[0];
        assert!(
            middle_differs,
            "layer {l} pools something else than the embedding"
        );
        for (i, p) in prompts.iter().enumerate() {
            let alone =
                infer::router::pooled_hidden(&model, std::slice::from_ref(p), l, 8).unwrap();
            let d = alone[0]
                .iter()
                .zip(&together[i])
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(d < 1e-5, "layer {l}, prompt {i}: {d}");
        }
    }
    // The input definition records the layer; one beyond the model is refused.
    let text = text();
    let input = TextInput::new("tiny", &model, &text, 32).with_layer(Some(1));
    let json = serde_json::to_value(&input).unwrap();
    assert_eq!(json["layer"], 1);
    input
        .check(&model, &text, std::path::Path::new("r"))
        .unwrap();
    let bad = input.clone().with_layer(Some(n + 1));
    let e = bad
        .check(&model, &text, std::path::Path::new("r"))
        .unwrap_err();
    assert!(e.to_string().contains("pooled layer"), "{e}");
    // Without a layer, the JSON is what it always was (old routers load unchanged).
    let plain = serde_json::to_value(TextInput::new("tiny", &model, &text, 32)).unwrap();
    assert!(plain.get("layer").is_none());
}
