#!/usr/bin/env bash
# Side-by-side speed comparison: flexi-burn (`cargo xtask bench ...`) against PyTorch +
# transformers + PEFT (`tools/bench_torch.py`) on the same machine, in one run, one case per
# process on each side (so peak RSS is per case), the two sides alternating case by case so
# that machine noise hits both alike. Prints the Markdown table of tools/bench_table.py.
#
#   tools/bench.sh [--python PATH] [--out DIR] [--shape smollm2-135m] [--quick]
#
# --python: a Python with torch, transformers==4.57.6 and peft (default: $TORCH_PYTHON or
# python3). --quick: fewer iterations (smoke test). Run on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."

python="${TORCH_PYTHON:-python3}"
out="target/bench"
shape="smollm2-135m"
iters=5
warmup=2
while [ $# -gt 0 ]; do
  case "$1" in
    --python) python="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --shape) shape="$2"; shift 2 ;;
    --quick) iters=2; warmup=1; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
"$python" -c 'import torch, transformers, peft' 2>/dev/null || {
  echo "bench.sh: $python lacks torch/transformers/peft (pip install torch transformers==4.57.6 peft)" >&2
  exit 2
}
mkdir -p "$out"
threads=$(nproc)
cargo build --release -p xtask --quiet
xtask="${CARGO_TARGET_DIR:-target}/release/xtask"

common=(--shape "$shape" --threads "$threads" --iters "$iters" --warmup "$warmup")
# case name | xtask arguments | bench_torch.py arguments (empty: flexi-burn only)
cases=(
  "train-lora|train --method lora --rank 8|train-lora --rank 8"
  "train-flexi|train --method flexi --ranks 2,8|"
  "train-dylora|train --method dylora --rank 8|"
  "train-full|train --method full|train-full"
  "decode-b1|decode --batch 1|decode --batch 1"
  "decode-b8|decode --batch 8|decode --batch 8"
  "prefill-512|prefill --seq 512|prefill --seq 512"
)
for c in "${cases[@]}"; do
  IFS='|' read -r name ours theirs <<<"$c"
  echo "== $name" >&2
  # shellcheck disable=SC2086
  "$xtask" bench $ours "${common[@]}" --json "$out/$name.flexi-burn.json" >&2
  if [ -n "$theirs" ]; then
    # shellcheck disable=SC2086
    "$python" tools/bench_torch.py $theirs "${common[@]}" --json "$out/$name.pytorch.json"
  fi
done
echo "== whisper" >&2
"$xtask" bench whisper --threads "$threads" --iters "$iters" --warmup "$warmup" \
  --json "$out/whisper.flexi-burn.json" >&2
"$python" tools/bench_torch.py whisper --threads "$threads" --iters "$iters" --warmup "$warmup" \
  --json "$out/whisper.pytorch.json"

python3 tools/bench_table.py "$out"/*.json --out "$out/table.md"
