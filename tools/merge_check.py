"""Checks a merged checkpoint (`cargo xtask merge`) with transformers 4.57.6: it loads as a
plain model and its logits equal the ones `cargo xtask logits --model MERGED --ids ...` wrote.

  python tools/merge_check.py --merged DIR --logits F.safetensors [--tol 1e-4]
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
    a = ap.parse_args()
    ours = load_file(a.logits)
    model = AutoModelForCausalLM.from_pretrained(a.merged, dtype=torch.float32).eval()
    with torch.no_grad():
        theirs = model(input_ids=ours["input_ids"].reshape(1, -1)).logits[0]
    diff = (theirs - ours["logits"].reshape(theirs.shape)).abs().max().item()
    print(f"transformers {a.merged}: max abs logit diff vs flexi-burn {diff:.3e}")
    sys.exit(0 if diff <= a.tol else 1)


if __name__ == "__main__":
    main()
