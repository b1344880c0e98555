"""Checks a flexi-burn PEFT export with PEFT itself (transformers 4.57.6 + peft).

Loads the base model and the exported adapter with `peft.PeftModel.from_pretrained`, fails on
any warning (unknown keys, missing keys, ...), and compares the logits of `--ids` with the ones
`cargo xtask logits --model BASE --adapter ADAPTER --rank R --ids ... --out F` wrote.

  python tools/peft_export_check.py --base DIR --adapter DIR --logits F.safetensors [--tol 1e-4]

With `--write OUT.safetensors`, PEFT's own logits for the same ids are saved too (`input_ids`,
`logits`): the committed reference of a test fixture, so that the test needs no Python.
"""

import argparse
import sys
import warnings

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--logits", required=True, help="xtask logits output (input_ids, logits)")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--write", help="save PEFT's logits here (a test fixture)")
    a = ap.parse_args()
    ours = load_file(a.logits)
    ids = ours["input_ids"].reshape(1, -1)
    base = AutoModelForCausalLM.from_pretrained(a.base, torch_dtype=torch.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = PeftModel.from_pretrained(base, a.adapter)
    relevant = [w for w in caught if "peft" in str(w.filename) or "adapter" in str(w.message).lower()]
    for w in relevant:
        print(f"warning: {w.message}")
    model.eval()
    with torch.no_grad():
        theirs = model(input_ids=ids).logits[0]
    diff = (theirs - ours["logits"].reshape(theirs.shape)).abs().max().item()
    print(f"peft {a.adapter}: {len(relevant)} warnings, max abs logit diff vs flexi-burn {diff:.3e}")
    if a.write:
        from safetensors.torch import save_file

        save_file({"input_ids": ours["input_ids"].contiguous(), "logits": theirs.contiguous()}, a.write)
    if relevant or diff > a.tol:
        sys.exit(1)


if __name__ == "__main__":
    main()
