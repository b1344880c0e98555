//! Fine-tune a Llama with Flexi-LoRA from a Burn application, through the library alone:
//! label the training set with the base model, train the router, fine-tune, save.
//!
//! ```text
//! cargo run --release -p train --example flexi_fine_tune -- MODEL DATA OUT
//! ```
//!
//! `MODEL` is a Hugging Face directory or a `.gguf` file, `DATA` a training file in any format
//! `datasets` reads (GSM8K, MRQA, ...). Writes `OUT/labels`, `OUT/router` and the run in
//! `OUT/run`, which `flexi_evaluate` (or `cargo xtask eval --run OUT/run`) loads.

use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::backend::{Autodiff, Flex};
use infer::EvalSettings;
use train::workflow::{self, BaseModel, FitSpec, RouterSpec, TextModel};
use train::{Method, TrainConfig};

type B = Flex;
type Ad = Autodiff<Flex>;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, data, out] = <[String; 3]>::try_from(args)
        .map_err(|_| anyhow::anyhow!("usage: flexi_fine_tune MODEL DATA OUT"))?;
    let (model, data, out) = (
        PathBuf::from(model),
        PathBuf::from(data),
        PathBuf::from(out),
    );
    let device = Default::default();

    let examples = workflow::read_examples(&data, None)?;
    let base = TextModel::<B>::load(&model, true, &device)?;
    // Prompt + answer fit the model's context.
    let max_len = base.model.config.max_position_embeddings.min(256);
    let base = BaseModel::from(base);
    let settings = EvalSettings {
        batch_size: 4,
        max_new_tokens: 6,
        max_len,
        progress: false,
    };

    // 1. Label: the base model's score on each example -> easy / hard, balanced.
    let labels = workflow::label(&base, &examples, &settings, None, 3)?;
    labels.write(&out.join("labels"))?;
    let c = labels.counts();
    println!("labels: {} easy, {} hard", c.easy, c.hard);

    // 2. The router over the base model's pooled prompt embeddings: easy -> 2, hard -> 8.
    let spec = RouterSpec {
        text_layer: None,
        class_ranks: "2,8".parse()?,
        training: train::router::RouterTraining {
            epochs: 200,
            lr: 1e-2,
            seed: 5,
            ..Default::default()
        },
        max_len: max_len * 3 / 4,
        audio_feature: Default::default(),
    };
    let router = workflow::fit_router::<Ad>(&base, &examples, &labels.balanced, &spec, &device)?;
    router.save(&out.join("router"))?;
    println!(
        "router: training accuracy {:.1} %",
        100.0 * router.meta.train_accuracy
    );

    // 3. Fine-tune with Flexi-LoRA (2,8): each example at its router rank.
    let config = TrainConfig {
        method: Method::Flexi {
            class_ranks: "2,8".into(),
        },
        batch_size: 4,
        max_steps: 3,
        max_len,
        lr: 1e-2,
        seed: 7,
        ..Default::default()
    };
    let spec = FitSpec {
        init_adapter: None,
        allow_upcast: false,
        model,
        config,
        router: Some(out.join("router")),
        chat: true,
        out: out.join("run"),
        resume: false,
        progress: false,
        shards: 1,
        parallel: None,
        recompute_layers: false,
    };
    let fitted = workflow::fit::<Ad>(&spec, &examples, device).context("fine-tuning")?;
    println!(
        "trained {} steps: loss {:.4} -> {:.4} ({})",
        fitted.summary.losses.len(),
        fitted.info.first_loss,
        fitted.info.last_loss,
        spec.out.display()
    );
    Ok(())
}
