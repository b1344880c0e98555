#!/usr/bin/env python3
"""Builds the tiny random Llama fixtures of `models/tests/fixtures/` and their references.

Pinned reference stack: transformers==4.57.6, torch (CPU), peft, safetensors, tokenizers.

    python3 -m venv tools/.venv
    tools/.venv/bin/pip install torch transformers==4.57.6 peft safetensors
    tools/.venv/bin/python tools/make_llama_fixtures.py [--out models/tests/fixtures]

Every fixture directory looks like a Hugging Face model directory (config.json,
model.safetensors or a sharded model.safetensors.index.json, tokenizer.json) plus:

- `reference.safetensors`: `input_ids` / `attention_mask` [2, S] int64 (a left-padded batch
  of two), `position_ids` [2, S] (cumsum(mask) - 1, as `generate` computes them), `logits`
  [2, S, V] float32, `greedy_ids` [2, N] int64 (greedy continuation, no eos stop), `generate_ids`
  [2, <=N] (transformers' `generate`: stops at eos, pads with 0),
  `text_ids` int64 (the tokenizer's ids of `TEXT`, without special tokens), and, where an
  adapter is built, `lora_logits`, `lora_loss` [1] and `grad.<module>.lora_A|lora_B`
  (e.g. `grad.layers.0.self_attn.q_proj.lora_A`) for the shifted cross-entropy loss with
  labels = ids, -100 on padding and on each row's first real token;
- `adapter/` (PEFT `adapter_model.safetensors` + `adapter_config.json`), r=4 on q_proj,v_proj
  with a non-zero B;
- `bf16/`: the same model saved in bfloat16 with logits of that bf16 model evaluated in
  float32 (weights upcast), `reference.safetensors`.

The fixtures are deterministic (fixed seeds) and small (a few hundred KB each).
"""

import argparse
import json
import os
import shutil

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

import transformers
from transformers import LlamaConfig, LlamaForCausalLM

assert transformers.__version__ == "4.57.6", f"need transformers 4.57.6, have {transformers.__version__}"

TEXT = "The quick brown fox jumps over the lazy dog. Hello, world!"
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world! Hello there, how are you today?",
    "Question: what is two plus two? Answer: four.",
    "A tiny Llama model for tests: rotary embeddings, grouped query attention.",
    "Flexi-LoRA gives every sample its own rank.",
] * 20

LLAMA3_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
]
CHATML_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def build_tokenizer(specials, bos, vocab_size):
    """A byte-level BPE trained on a tiny corpus, like the GPT-2/Llama-3 tokenizers."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    if bos is not None:
        bos_id = tok.token_to_id(bos)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def position_ids_from_mask(mask):
    pos = mask.long().cumsum(-1) - 1
    return pos.masked_fill(mask == 0, 1)


def left_pad(seqs, pad):
    n = max(len(s) for s in seqs)
    ids = torch.tensor([[pad] * (n - len(s)) + s for s in seqs], dtype=torch.long)
    mask = torch.tensor([[0] * (n - len(s)) + [1] * len(s) for s in seqs], dtype=torch.long)
    return ids, mask


@torch.no_grad()
def greedy(model, ids, mask, steps):
    """Greedy continuation by recomputing the whole sequence (no eos stop)."""
    out = []
    for _ in range(steps):
        logits = model(
            input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)
        ).logits[:, -1, :]
        top2 = logits.topk(2, dim=-1).values
        margin = (top2[:, 0] - top2[:, 1]).min().item()
        assert margin > 1e-3, f"greedy step too close to a tie ({margin}); change the seed"
        nxt = logits.argmax(-1, keepdim=True)
        out.append(nxt)
        ids = torch.cat([ids, nxt], dim=1)
        mask = torch.cat([mask, torch.ones_like(nxt)], dim=1)
    return torch.cat(out, dim=1)


def reference(model, ids, mask, steps):
    with torch.no_grad():
        logits = model(
            input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)
        ).logits.float()
    gen = greedy(model, ids, mask, steps)
    # The same through `generate` (its own position ids and KV cache), as a cross-check.
    with torch.no_grad():
        hf = model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=False,
            max_new_tokens=steps,
            pad_token_id=0,
        )[:, ids.shape[1]:]
    eos = model.config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    for h, g in zip(hf.tolist(), gen.tolist()):
        # `generate` stops a sample at its first eos and pads it with 0 afterwards.
        n = next((i + 1 for i, t in enumerate(g) if t in eos), len(g))
        assert h[:n] == g[:n] and all(t == 0 for t in h[n:]), f"generate {h} != greedy {g}"
    return {
        "input_ids": ids.contiguous(),
        "attention_mask": mask.contiguous(),
        "position_ids": position_ids_from_mask(mask).contiguous(),
        "logits": logits.contiguous(),
        "greedy_ids": gen.contiguous(),
        "generate_ids": hf.contiguous(),
    }


def lora_reference(model, ids, mask, adapter_dir):
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    peft_model = get_peft_model(model, cfg)
    g = torch.Generator().manual_seed(7)
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    # Ignore padding and each row's first real token: in a left-padded row the first token
    # would be "predicted" from a padding position, whose fully masked attention row is
    # ill-defined (eager and sdpa disagree there, and so do their gradients).
    first = (mask.cumsum(-1) == 1) & (mask == 1)
    labels = ids.masked_fill(mask == 0, -100).masked_fill(first, -100)
    out = peft_model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=position_ids_from_mask(mask),
        labels=labels,
    )
    out.loss.backward()
    res = {
        "lora_logits": out.logits.detach().float().contiguous(),
        "lora_loss": out.loss.detach().reshape(1).float(),
    }
    for name, p in peft_model.named_parameters():
        if "lora_" in name:
            # base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight
            key = "layers." + name.split(".layers.", 1)[1].replace(".default.weight", "")
            res["grad." + key] = p.grad.detach().float().contiguous()
    peft_model.save_pretrained(adapter_dir)
    # PEFT stores target_modules from a set: sort it so the fixture is reproducible.
    cfg_path = os.path.join(adapter_dir, "adapter_config.json")
    with open(cfg_path) as f:
        adapter_cfg = json.load(f)
    adapter_cfg["target_modules"] = sorted(adapter_cfg["target_modules"])
    with open(cfg_path, "w") as f:
        json.dump(adapter_cfg, f, indent=2, sort_keys=True)
    # PEFT writes a README.md model card; the fixture does not need it.
    readme = os.path.join(adapter_dir, "README.md")
    if os.path.exists(readme):
        os.remove(readme)
    peft_model.unload()
    return res


def make_fixture(out, name, cfg_kwargs, specials, bos, chat, seed, shard=None, lora=False, bf16=False):
    d = os.path.join(out, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    torch.manual_seed(seed)
    tok = build_tokenizer(specials, bos, vocab_size=300)
    assert tok.get_vocab_size() <= cfg_kwargs["vocab_size"]
    tok.save(os.path.join(d, "tokenizer.json"))
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"chat_format": chat, "bos_token": bos}, f, indent=1)

    config = LlamaConfig(attn_implementation="eager", **cfg_kwargs)
    model = LlamaForCausalLM(config).eval()
    kwargs = {"safe_serialization": True}
    if shard:
        kwargs["max_shard_size"] = shard
    model.save_pretrained(d, **kwargs)
    gen_cfg = os.path.join(d, "generation_config.json")
    if os.path.exists(gen_cfg):
        os.remove(gen_cfg)

    text_ids = tok.encode(TEXT, add_special_tokens=False).ids
    prompts = [text_ids[:11], text_ids[3:8]]
    if bos is not None:
        bos_id = tok.token_to_id(bos)
        prompts = [[bos_id] + p for p in prompts]
    ids, mask = left_pad(prompts, pad=0)
    ref = reference(model, ids, mask, steps=8)
    ref["text_ids"] = torch.tensor(text_ids, dtype=torch.long)
    if lora:
        model.train()
        ref.update(lora_reference(model, ids, mask, os.path.join(d, "adapter")))
        model.eval()
    save_file(ref, os.path.join(d, "reference.safetensors"))

    if bf16:
        bd = os.path.join(d, "bf16")
        os.makedirs(bd)
        half = LlamaForCausalLM(config)
        half.load_state_dict(model.state_dict())
        half = half.to(torch.bfloat16)
        half.save_pretrained(bd, safe_serialization=True)
        if os.path.exists(os.path.join(bd, "generation_config.json")):
            os.remove(os.path.join(bd, "generation_config.json"))
        # Reload the saved bf16 file in float32 (exact upcast, RoPE buffers in f32 as usual).
        upcast = LlamaForCausalLM.from_pretrained(bd, dtype=torch.float32, attn_implementation="eager").eval()
        with torch.no_grad():
            logits = upcast(
                input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)
            ).logits.float()
        save_file(
            {"input_ids": ids, "attention_mask": mask, "logits": logits.contiguous()},
            os.path.join(bd, "reference.safetensors"),
        )
    print(f"{name}: {sorted(os.listdir(d))}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "models", "tests", "fixtures"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)

    # Fixture 1: GQA (4 heads, 2 KV heads), llama3 rope scaling, tied embeddings.
    make_fixture(
        args.out,
        "tiny_tied",
        dict(
            vocab_size=320,
            hidden_size=64,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            rms_norm_eps=1e-5,
            rope_theta=500000.0,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            },
            tie_word_embeddings=True,
            initializer_range=0.2,
            bos_token_id=0,
            eos_token_id=[1, 4],
        ),
        LLAMA3_SPECIALS,
        "<|begin_of_text|>",
        "llama3",
        seed=1,
        lora=True,
        bf16=True,
    )
    # Fixture 2: untied embeddings, no rope scaling, head_dim 8 != hidden / heads = 12,
    # 1 KV head (MQA), sharded checkpoint, ChatML tokenizer.
    make_fixture(
        args.out,
        "tiny_untied",
        dict(
            vocab_size=304,
            hidden_size=48,
            intermediate_size=80,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=8,
            max_position_embeddings=48,
            rms_norm_eps=1e-6,
            rope_theta=10000.0,
            rope_scaling=None,
            tie_word_embeddings=False,
            initializer_range=0.2,
            bos_token_id=1,
            eos_token_id=2,
        ),
        CHATML_SPECIALS,
        None,
        "chatml",
        seed=2,
        shard="60KB",
    )


if __name__ == "__main__":
    main()
