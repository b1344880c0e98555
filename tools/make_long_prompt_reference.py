#!/usr/bin/env python3
"""Reference for a long left-padded prompt on the tiny tied Llama (`models/tests/fixtures/tiny_tied`).

The tiny fixtures have a 64-position context, too short to reach the code that cuts causal
attention into query blocks and runs the halves of a long sequence on two threads
(`models/src/sdpa.rs`: 128 rows and up). This reference uses the same weights with
`max_position_embeddings = 512` (the llama3 RoPE of the fixture depends only on its
`rope_scaling`, not on this field) and a batch of two random prompts of 300 and 233 tokens.

Writes `models/tests/fixtures/tiny_tied/long_prompt/reference.safetensors`:
`input_ids` / `attention_mask` [2, 300] int64 (left padding), `positions` [P] int64 (the
sequence positions whose logits are kept: every 13th and the last), `logits` [2, P, V]
float32, `greedy_ids` [2, 6] int64 (greedy continuation by recomputation, no eos stop).

Pinned reference stack: transformers==4.57.6, torch (CPU), safetensors.

    /path/to/venv/bin/python tools/make_long_prompt_reference.py
"""

import os

import torch
from safetensors.torch import save_file

import transformers
from transformers import LlamaConfig, LlamaForCausalLM

assert transformers.__version__ == "4.57.6", f"need transformers 4.57.6, have {transformers.__version__}"

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE = os.path.join(HERE, "..", "models", "tests", "fixtures", "tiny_tied")
LENGTHS = (300, 233)
STEPS = 6


def position_ids_from_mask(mask):
    pos = mask.long().cumsum(-1) - 1
    return pos.masked_fill(mask == 0, 1)


def main():
    config = LlamaConfig.from_pretrained(FIXTURE)
    config.max_position_embeddings = 512
    model = LlamaForCausalLM.from_pretrained(FIXTURE, config=config, dtype=torch.float32)
    model.eval()
    # Eager attention: the reference is the plain softmax(q k^T + mask) v.
    model.config._attn_implementation = "eager"

    g = torch.Generator().manual_seed(20261206)
    n = max(LENGTHS)
    seqs = [torch.randint(5, config.vocab_size, (k,), generator=g).tolist() for k in LENGTHS]
    pad = 0
    ids = torch.tensor([[pad] * (n - len(s)) + s for s in seqs], dtype=torch.long)
    mask = torch.tensor([[0] * (n - len(s)) + [1] * len(s) for s in seqs], dtype=torch.long)

    with torch.no_grad():
        logits = model(
            input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)
        ).logits
        positions = torch.tensor(sorted(set(range(0, n, 13)) | {n - 1}), dtype=torch.long)
        kept = logits[:, positions, :].contiguous()

        out, cur_ids, cur_mask = [], ids, mask
        for _ in range(STEPS):
            last = model(
                input_ids=cur_ids,
                attention_mask=cur_mask,
                position_ids=position_ids_from_mask(cur_mask),
            ).logits[:, -1, :]
            top2 = last.topk(2, dim=-1).values
            margin = (top2[:, 0] - top2[:, 1]).min().item()
            assert margin > 1e-3, f"greedy step too close to a tie ({margin}); change the seed"
            nxt = last.argmax(-1, keepdim=True)
            out.append(nxt)
            cur_ids = torch.cat([cur_ids, nxt], dim=1)
            cur_mask = torch.cat([cur_mask, torch.ones_like(nxt)], dim=1)

    out_dir = os.path.join(FIXTURE, "long_prompt")
    os.makedirs(out_dir, exist_ok=True)
    save_file(
        {
            "input_ids": ids.contiguous(),
            "attention_mask": mask.contiguous(),
            "positions": positions,
            "logits": kept,
            "greedy_ids": torch.cat(out, dim=1).contiguous(),
        },
        os.path.join(out_dir, "reference.safetensors"),
    )
    print(f"wrote {out_dir}/reference.safetensors: logits {tuple(kept.shape)}")


if __name__ == "__main__":
    main()
