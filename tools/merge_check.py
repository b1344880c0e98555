"""Checks a merged checkpoint (`cargo xtask merge`) with transformers 4.57.6: it loads as a
plain model and its logits equal the ones `cargo xtask logits --model MERGED --ids ...` wrote.

  python tools/merge_check.py --merged DIR --logits F.safetensors [--tol 1e-4] [--write OUT]

With `--write OUT.safetensors`, transformers' logits of the merged model for the same ids are
saved (`input_ids`, `logits`): a test fixture (`tiny_tied/lora8_peft/merged_logits.safetensors`).
"""

import argparse
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--merged", required=True)
    ap.add_argument("--logits", required=True)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--write", help="save transformers' logits here (a test fixture)")
    a = ap.parse_args()
    ours = load_file(a.logits)
    model = AutoModelForCausalLM.from_pretrained(a.merged, dtype=torch.float32).eval()
    with torch.no_grad():
        theirs = model(input_ids=ours["input_ids"].reshape(1, -1)).logits[0]
    diff = (theirs - ours["logits"].reshape(theirs.shape)).abs().max().item()
    print(f"transformers {a.merged}: max abs logit diff vs flexi-burn {diff:.3e}")
    if a.write:
        from safetensors.torch import save_file

        save_file({"input_ids": ours["input_ids"].contiguous(), "logits": theirs.contiguous()}, a.write)
    sys.exit(0 if diff <= a.tol else 1)


if __name__ == "__main__":
    main()
