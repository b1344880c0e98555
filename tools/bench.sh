#!/usr/bin/env bash
# Side-by-side speed comparison: flexi-burn (`cargo xtask bench ...`) against PyTorch +
# transformers + PEFT (`tools/bench_torch.py`) on the same machine, in one run, one case per
# process on each side (so peak RSS is per case), the two sides alternating case by case so
# that machine noise hits both alike. Prints the Markdown table of tools/bench_table.py.
#
#   tools/bench.sh [--python PATH] [--out DIR] [--shape smollm2-135m] [--quick] [--repeat N]
#
# --out: where the results go (default target/bench/DATE-TIME; an existing directory must
# hold no results yet). --python: a Python with torch, transformers==4.57.6 and peft
# (default: $TORCH_PYTHON or python3). --quick: fewer iterations (smoke test). --repeat N
# (1-99, default 1): run every case N times, the two sides alternating each time; the table
# gets a row per pair and the range of the ratios per case (a virtual machine's speed can
# move by a third within minutes, and one pair per case cannot tell that from a real
# difference). Run on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."

python="${TORCH_PYTHON:-python3}"
out="target/bench/$(date +%Y%m%d-%H%M%S)"
shape="smollm2-135m"
iters=5
warmup=2
repeat=1
while [ $# -gt 0 ]; do
  case "$1" in
    --python) python="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --shape) shape="$2"; shift 2 ;;
    --quick) iters=2; warmup=1; shift ;;
    --repeat) repeat="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
"$python" -c 'import torch, transformers, peft' 2>/dev/null || {
  echo "bench.sh: $python lacks torch/transformers/peft (pip install torch transformers==4.57.6 peft)" >&2
  exit 2
}
case "$repeat" in
  [1-9] | [1-9][0-9]) ;;
  *) echo "--repeat takes a number from 1 to 99, not '$repeat'" >&2; exit 2 ;;
esac
mkdir -p "$out"
if compgen -G "$out/*.json" >/dev/null; then
  echo "bench.sh: $out already holds results (*.json); pass another --out or move them away" >&2
  exit 2
fi
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
# Result files are NAME.SIDE.rKK.json: the table pairs the K-th result of each side.
for k in $(seq -f %02g 1 "$repeat"); do
  for c in "${cases[@]}"; do
    IFS='|' read -r name ours theirs <<<"$c"
    echo "== $name (pair $k of $repeat)" >&2
    # shellcheck disable=SC2086
    "$xtask" bench $ours "${common[@]}" --json "$out/$name.flexi-burn.r$k.json" >&2
    if [ -n "$theirs" ]; then
      # shellcheck disable=SC2086
      "$python" tools/bench_torch.py $theirs "${common[@]}" --json "$out/$name.pytorch.r$k.json"
    fi
  done
  echo "== whisper (pair $k of $repeat)" >&2
  "$xtask" bench whisper --threads "$threads" --iters "$iters" --warmup "$warmup" \
    --json "$out/whisper.flexi-burn.r$k.json" >&2
  "$python" tools/bench_torch.py whisper --threads "$threads" --iters "$iters" --warmup "$warmup" \
    --json "$out/whisper.pytorch.r$k.json"
done

python3 tools/bench_table.py "$out"/*.json --out "$out/table.md"
echo "bench.sh: results and table.md in $out" >&2
