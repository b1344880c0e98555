#!/usr/bin/env python3
"""Reference GGUF dequantisation with the `gguf` package (llama.cpp's gguf-py), for the Rust
reader's ignored-by-default test `models/tests/gguf_real.rs`.

Writes one safetensors file with
  - `tensor.<gguf name>`: f32 dequantised values, GGUF row-major layout (no Q/K unpermute), for
    a few chosen tensors (one of every type the file uses);
  - `stats.<gguf name>`: f64 [sum, sum |x|, max |x|] of every tensor of the file;
  - `blocks.<TYPE>.bytes` (u8) and `blocks.<TYPE>.values` (f32): random blocks of every type
    the Rust reader supports (finite f16 scales), dequantised by gguf-py, so K-quants the file
    does not use are checked too;
and prints the quant types the file uses. When `transformers` is importable it also writes
`OUT.tokens.json`: token ids (without special tokens added) of a few texts from transformers'
GGUF tokenizer loading (`AutoTokenizer.from_pretrained(dir, gguf_file=...)`).

    tools/.venv/bin/pip install gguf safetensors numpy
    tools/.venv/bin/python tools/check_gguf.py MODEL.gguf OUT.safetensors
"""

import json
import os
import sys
from collections import Counter

import numpy as np
from gguf import GGUFReader
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType as T
from gguf.quants import dequantize
from safetensors.numpy import save_file

CHOSEN = [
    "token_embd.weight",
    "blk.0.attn_q.weight",
    "blk.0.attn_k.weight",
    "blk.0.ffn_down.weight",
    "blk.29.attn_v.weight",
    "blk.0.attn_norm.weight",
    "output_norm.weight",
]

# Byte offsets of the f16 scales in each block (kept finite in the random blocks).
F16_AT = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}


def random_blocks(ty, n_blocks, rng):
    block, size = GGML_QUANT_SIZES[ty]
    raw = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    for at in F16_AT[ty]:
        scales = rng.normal(0, 0.05, size=n_blocks).astype(np.float16)
        raw[:, at:at + 2] = scales.view(np.uint8).reshape(n_blocks, 2)
    values = dequantize(raw.reshape(-1), ty).astype(np.float32).reshape(-1)
    assert values.size == n_blocks * block
    return raw.reshape(-1), values


def main():
    path, out = sys.argv[1], sys.argv[2]
    reader = GGUFReader(path)
    types = Counter(t.tensor_type.name for t in reader.tensors)
    print("quant types:", dict(types))
    tensors = {}
    for t in reader.tensors:
        x = dequantize(t.data, t.tensor_type).astype(np.float64)
        tensors[f"stats.{t.name}"] = np.array(
            [x.sum(), np.abs(x).sum(), np.abs(x).max()], dtype=np.float64)
        if t.name in CHOSEN:
            # gguf-py gives the numpy (row-major) shape: ne reversed.
            tensors[f"tensor.{t.name}"] = np.ascontiguousarray(x.astype(np.float32))
            print(f"{t.name}: {t.tensor_type.name} {list(x.shape)} first {x.reshape(-1)[:4]}")
    rng = np.random.default_rng(0)
    for ty in F16_AT:
        raw, values = random_blocks(ty, 16, rng)
        tensors[f"blocks.{ty.name}.bytes"] = raw
        tensors[f"blocks.{ty.name}.values"] = values
    save_file(tensors, out)
    print(f"wrote {len(tensors)} arrays to {out}")
    tokens(path, out + ".tokens.json")


TEXTS = [
    "Hello world",
    "What is the capital of France?",
    "In 2024, 12345 people paid $3.50 each.",
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "  leading spaces,\ttabs\n\nand newlines  ",
    "Ünïcödé, 中文, emoji 🤗 and accents: café naïve",
    "def f(x):\n    return x**2  # square",
    "don't won't I'm we'll they've",
]


def tokens(path, out):
    try:
        from transformers import AutoTokenizer
    except ImportError:
        print("transformers not importable: no token reference")
        return
    tok = AutoTokenizer.from_pretrained(
        os.path.dirname(os.path.abspath(path)), gguf_file=os.path.basename(path))
    cases = [{"text": t, "ids": tok.encode(t, add_special_tokens=False)} for t in TEXTS]
    with open(out, "w") as f:
        json.dump(cases, f, ensure_ascii=False, indent=1)
    print(f"wrote {len(cases)} tokenised texts to {out}")


if __name__ == "__main__":
    main()
