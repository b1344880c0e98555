#!/usr/bin/env python3
"""Reference logits of a Llama GGUF file from transformers 4.57.6, which dequantises the file
itself (`from_pretrained(dir, gguf_file=...)`, gguf-py underneath) and undoes llama.cpp's Q/K
permutation. For the ignored test `models/tests/gguf_llama.rs::smollm2_logits_match_transformers`.

Writes OUT.safetensors with, for every prompt k, `input_ids.k` (i64 [1, T]) and `logits.k`
(f32 [1, T, vocab]), float32 throughout.

    tools/.venv/bin/python tools/gguf_logits.py MODEL.gguf OUT.safetensors
"""

import os
import sys

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPTS = [
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
    "<|im_start|>assistant\n",
    "The quick brown fox jumps over the lazy dog. In 2024, 12345 people",
]


def main():
    path, out = sys.argv[1], sys.argv[2]
    d, f = os.path.dirname(os.path.abspath(path)), os.path.basename(path)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    model.eval()
    tensors = {}
    for k, p in enumerate(PROMPTS):
        ids = torch.tensor([tok.encode(p, add_special_tokens=False)])
        with torch.no_grad():
            logits = model(input_ids=ids).logits.float()
        tensors[f"input_ids.{k}"] = ids.to(torch.int64).contiguous()
        tensors[f"logits.{k}"] = logits.contiguous()
        top = logits[0, -1].topk(3)
        print(f"prompt {k}: {ids.shape[1]} tokens, next-token top-3 {top.indices.tolist()}")
    save_file(tensors, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
