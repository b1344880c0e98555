#!/usr/bin/env bash
# GPU side-by-side bench (BENCHMARKS.md, "On a GPU"): run from the repository root on a machine
# with CUDA and a Python with torch, transformers and peft. It expects gpu/xtask.gz: a stripped,
# gzipped `xtask` built with `cargo build -p xtask --features cuda` (built elsewhere: the cuda
# backend loads libcuda at run time). Results land in $OUT/results2.tgz (OUT defaults to ./gpu-out).
set -uo pipefail
OUT="${OUT:-gpu-out}"; mkdir -p "$OUT"
gunzip -c gpu/xtask.gz > /tmp/xtask && chmod +x /tmp/xtask
B=/tmp/xtask
R=/tmp/res; mkdir -p $R
pack() { tar czf $OUT/results2.tgz -C $R .; }
python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)" > $R/versions.txt 2>&1; tail -n 1 $R/versions.txt
ours() { name=$1; shift; timeout 60 $B bench "$@" --backend cuda --json $R/$name.flexi-burn.json > $R/$name.flexi-burn.log 2>&1; tail -n 1 $R/$name.flexi-burn.log; }
theirs() { name=$1; shift; timeout 60 python3 tools/bench_torch.py "$@" --device cuda --json $R/$name.pytorch.json > $R/$name.pytorch.log 2>&1; tail -n 1 $R/$name.pytorch.log; }
ours train-lora train --method lora --rank 8; theirs train-lora train-lora --rank 8; theirs train-lora-tf32 train-lora --rank 8 --tf32; pack
ours decode-b1 decode --batch 1; theirs decode-b1 decode --batch 1; pack
ours decode-b8 decode --batch 8; theirs decode-b8 decode --batch 8; pack
ours prefill-512 prefill --seq 512; theirs prefill-512 prefill --seq 512; pack
ours train-full train --method full; theirs train-full train-full --tf32; pack
ours train-lora-b16x512 train --method lora --rank 8 --batch 16 --seq 512 --iters 3 --warmup 1; theirs train-lora-b16x512 train-lora --rank 8 --batch 16 --seq 512 --iters 3 --warmup 1 --tf32; pack
ours train-lora-1b train --shape llama-3.2-1b --method lora --rank 8 --batch 8 --seq 512 --iters 3 --warmup 1; theirs train-lora-1b train-lora --shape llama-3.2-1b --rank 8 --batch 8 --seq 512 --iters 3 --warmup 1 --tf32; pack
echo "== portability"
timeout 150 $B portability --backend cuda --fixtures models/tests/fixtures --json $R/portability.json > $R/portability.log 2>&1; sed -n '/^| backend/,/^$/p' $R/portability.log; tail -n 2 $R/portability.log; pack
