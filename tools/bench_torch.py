#!/usr/bin/env python3
"""PyTorch / transformers / PEFT reference side of the flexi-burn speed benchmarks.

One case per process (so `peak_rss_mb` is that case's own peak), one JSON object out:

    /root/torchvenv/bin/python tools/bench_torch.py CASE [options] --json OUT.json

Pinned stack: transformers==4.57.6, torch (CPU), peft. No downloads: every model is built from
a config object with random weights (float32). `tools/bench_table.py` pairs these results with
the flexi-burn ones (same JSON layout, `"side": "flexi-burn"`).

Common settings
---------------
- `--shape smollm2-135m | llama-3.2-1b`: a `LlamaConfig`
  - smollm2-135m: vocab 49152, hidden 576, intermediate 1536, 30 layers, 9 heads, 3 kv heads,
    head_dim 64, rms_norm_eps 1e-5, rope_theta 100000, tied embeddings, max_pos 8192;
  - llama-3.2-1b: vocab 128256, hidden 2048, intermediate 8192, 16 layers, 32 heads, 8 kv heads,
    head_dim 64, rms_norm_eps 1e-5, rope_theta 500000, rope_scaling llama3 (factor 32,
    low_freq_factor 1, high_freq_factor 4, original_max_position_embeddings 8192), tied
    embeddings, max_pos 131072.
  `LlamaForCausalLM(config)` in float32, `attn_implementation=--attn` (sdpa | eager, default
  sdpa), built right after `torch.manual_seed(--seed)` (default 0).
- `--threads N` (default `os.cpu_count()`) -> `torch.set_num_threads(N)`.
- `--warmup W` (default 2) untimed iterations, then `--iters N` (default 5) timed ones, each
  timed with `time.perf_counter`. `ms` lists every timed iteration, `ms_median` is their median,
  `tok_s = tokens / (ms_median / 1000)`.
- Token ids: uniform in [0, vocab) from a `torch.Generator` seeded with `--seed`, drawn once
  and reused by every iteration; no padding (attention_mask all ones).
- LoRA (PEFT `LoraConfig`): `--rank` (8), `--alpha` (16), `--targets`
  (q_proj,k_proj,v_proj,o_proj), lora_dropout 0, bias "none", task_type CAUSAL_LM.

Cases
-----
1. `train-lora` (`--batch 4 --seq 128 --answer-frac 0.5`): LoRA via PEFT (lora_B = 0 as PEFT
   initialises it), `model.train()`. Labels = input ids with the first
   `P = floor(seq * (1 - answer_frac) + 0.5)` positions of every row set to -100 (round half
   away from zero, like Rust's `f64::round`; the loss covers the "answer" part only, as in SFT).
   `--precision bf16|f16` (flexi-burn's `train --precision`): the base model is cast to that
   type before PEFT wraps it (PEFT's `autocast_adapter_dtype` keeps the LoRA weights in f32),
   the forward runs under `torch.autocast(dtype)`, AdamW's state is f32; f16 scales the loss
   with `torch.amp.GradScaler` (init 65536, unscaled before clipping). Unlike flexi-burn, the
   residual stream and norms' weights are then in the half type too (PyTorch's usual recipe).
   One iteration = one optimizer step: `model(ids, attention_mask, labels, use_cache=False)`
   (transformers' shifted mean cross-entropy), `loss.backward()`,
   `clip_grad_norm_(trainable, 1.0)`, `AdamW(trainable, lr 1e-4, betas (0.9, 0.999), eps 1e-8,
   weight_decay 0)` `.step()`, `zero_grad(set_to_none=True)`. tokens = batch * seq.
2. `train-full`: the same step with every parameter of the plain model trainable (no PEFT).
   `--precision bf16|f16`: the weights stay f32 and the forward runs under
   `torch.autocast(dtype)` (PyTorch's AMP; f16 with the same `GradScaler`).
3. `decode` (`--batch 1` (or 8) `--prompt-len 32 --new-tokens 64`): eval, `inference_mode`,
   the LoRA above attached through PEFT, NOT merged, every lora_B re-initialised normal(0, 0.02)
   (after lora_A, from the same global seed stream) so the adapter is not a no-op. Greedy
   decoding with the KV cache as an explicit loop (no `generate`, no eos stop): prefill the
   prompt (`use_cache=True, logits_to_keep=1`), argmax -> token 1, then `new_tokens - 1`
   single-token steps feeding back the argmax (attention_mask grown by one column of ones per
   step). Exactly `new_tokens` tokens per row. One iteration = the whole loop incl. prefill.
   tokens = batch * new_tokens. Extra: `prefill_ms_median`, `step_ms_median` (per-iteration
   (total - prefill) / (new_tokens - 1), median over iterations), `step_tok_s`
   (batch / step seconds), `generated_shape`.
4. `prefill` (`--seq 512`, `--batch 1`): same unmerged LoRA model, `inference_mode`; one forward
   of the prompt with `use_cache=True, logits_to_keep=1`. tokens = batch * seq.
5. `whisper` (`--whisper-shape tiny.en`: WhisperConfig vocab 51864, 80 mel bins, d_model 384,
   4 + 4 layers, 6 heads, ffn 1536, max_source_positions 1500, max_target_positions 448,
   decoder_start_token_id 50257; random float32, eval, `inference_mode`). One iteration =
   encoder forward on a random log-mel [1, 80, 3000] (30 s), then greedy decoding of
   `--new-tokens` (64) tokens after the prompt [50257, 50362] (<|startoftranscript|>,
   <|notimestamps|>) with the decoder's KV cache (self-attention cache grows, cross-attention
   K/V computed once at the prompt step): `model.model.decoder(...)` + `model.proj_out` on the
   last position, argmax, no eos stop, no token suppression. tokens = new_tokens.
   Extra: `encode_ms_median`, `step_ms_median` (as in decode), `generated_shape`.

JSON fields
-----------
side ("pytorch"), case, params (every setting, dashes as underscores; settings a case does not
use are null), ms, ms_median, tokens, tok_s, peak_rss_mb (`ru_maxrss / 1024` at the end),
import_rss_mb (the same, taken after importing torch / transformers / peft and before building
anything: the libraries' own share of the peak, ~0.7 GB for a CUDA build of torch), threads,
versions {torch, transformers, peft, python}, env (the OMP_* / MKL_* / KMP_* / GOMP_* variables
that were set), plus per case:
- train-*: loss (per timed iteration, before the step), grad_norm (per timed iteration, before
  clipping), trainable_params, total_params, loss_tokens (labelled positions after the shift);
- decode: prefill_ms_median, step_ms_median, step_tok_s, generated_shape, first_ids (row 0's
  first 8 generated ids), trainable_params (LoRA), total_params;
- prefill: trainable_params, total_params;
- whisper: encode_ms_median, prompt_ms_median (the prompt step after the encoder),
  step_ms_median, step_tok_s, generated_shape, first_ids.

On a machine shared with other busy processes, OpenMP's default spin-waiting makes multi-thread
torch runs pathologically slow (seen: 37x on 2 busy cores); `OMP_WAIT_POLICY=PASSIVE` avoids
that. The script sets nothing itself; `env` records what was set.
"""

import argparse
import json
import math
import os
import platform
import resource
import statistics
import sys
import time

import peft
import torch

import transformers
from transformers import LlamaConfig, LlamaForCausalLM

CASES = ("train-lora", "train-full", "decode", "prefill", "whisper")

SHAPES = {
    "smollm2-135m": dict(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        head_dim=64,
        rms_norm_eps=1e-5,
        rope_theta=100000.0,
        tie_word_embeddings=True,
        max_position_embeddings=8192,
    ),
    "llama-3.2-1b": dict(
        vocab_size=128256,
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=64,
        rms_norm_eps=1e-5,
        rope_theta=500000.0,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 32.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
        tie_word_embeddings=True,
        max_position_embeddings=131072,
    ),
}

WHISPER_SHAPES = {
    "tiny.en": dict(
        vocab_size=51864,
        num_mel_bins=80,
        d_model=384,
        encoder_layers=4,
        decoder_layers=4,
        encoder_attention_heads=6,
        decoder_attention_heads=6,
        encoder_ffn_dim=1536,
        decoder_ffn_dim=1536,
        max_source_positions=1500,
        max_target_positions=448,
        decoder_start_token_id=50257,
        bos_token_id=50257,
        eos_token_id=50256,
        pad_token_id=50256,
    ),
}
WHISPER_PROMPT = [50257, 50362]  # <|startoftranscript|>, <|notimestamps|> (English-only vocab)

# Per-case defaults; a setting absent from a case's dict is not used by it (null in "params").
DEFAULTS = {
    "train-lora": dict(batch=4, seq=128, answer_frac=0.5, rank=8, alpha=16.0,
                       targets="q_proj,k_proj,v_proj,o_proj"),
    "train-full": dict(batch=4, seq=128, answer_frac=0.5),
    "decode": dict(batch=1, prompt_len=32, new_tokens=64, rank=8, alpha=16.0,
                   targets="q_proj,k_proj,v_proj,o_proj"),
    "prefill": dict(batch=1, seq=512, rank=8, alpha=16.0, targets="q_proj,k_proj,v_proj,o_proj"),
    "whisper": dict(new_tokens=64),
}
CASE_KEYS = ("batch", "seq", "prompt_len", "new_tokens", "answer_frac", "rank", "alpha",
             "targets")


def positive_int(s):
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def nonneg_int(s):
    v = int(s)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def frac(s):
    v = float(s)
    if not 0.0 < v <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {v}")
    return v


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="PyTorch reference benchmarks (one case per process, JSON out).")
    p.add_argument("case", choices=CASES)
    p.add_argument("--shape", choices=sorted(SHAPES), default="smollm2-135m")
    p.add_argument("--whisper-shape", choices=sorted(WHISPER_SHAPES), default="tiny.en")
    p.add_argument("--attn", choices=("sdpa", "eager"), default="sdpa")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=positive_int, default=os.cpu_count())
    p.add_argument("--iters", type=positive_int, default=5)
    p.add_argument("--warmup", type=nonneg_int, default=2)
    p.add_argument("--batch", type=positive_int)
    p.add_argument("--seq", type=positive_int, help="train-*: 128, prefill: 512")
    p.add_argument("--prompt-len", type=positive_int, help="decode: 32")
    p.add_argument("--new-tokens", type=positive_int, help="decode, whisper: 64")
    p.add_argument("--answer-frac", type=frac, help="train-*: 0.5")
    p.add_argument("--rank", type=positive_int, help="LoRA rank: 8")
    p.add_argument("--alpha", type=float, help="LoRA alpha: 16")
    p.add_argument("--targets", help="LoRA target modules: q_proj,k_proj,v_proj,o_proj")
    p.add_argument("--json", metavar="OUT.json", help="write the result here")
    p.add_argument("--device", default="cpu",
                   help="torch device: cpu (default) or cuda (times include a synchronize)")
    p.add_argument("--grad-ckpt", action="store_true",
                   help="train-*: gradient checkpointing (transformers' per-layer recomputation)")
    p.add_argument("--precision", choices=("f32", "bf16", "f16"), default="f32",
                   help="train-lora: frozen base weights stored in bf16/f16 with the forward "
                        "under torch.autocast in that type, LoRA weights and AdamW in f32; "
                        "train-full: f32 weights with the forward under torch.autocast "
                        "(PyTorch's AMP); f16 with torch.amp.GradScaler (flexi-burn's "
                        "--precision)")
    p.add_argument("--tf32", action="store_true",
                   help="cuda: f32 matmuls on TF32 tensor cores, as Burn's cuda backend does")
    a = p.parse_args(argv)

    used = DEFAULTS[a.case]
    for k in CASE_KEYS:
        v = getattr(a, k)
        if k not in used:
            if v is not None:
                p.error(f"--{k.replace('_', '-')} is not used by case {a.case}")
            continue
        if v is None:
            setattr(a, k, used[k])
    if a.case == "whisper":
        a.shape = None
    else:
        a.whisper_shape = None
    if a.targets is not None:
        a.targets = [t.strip() for t in a.targets.split(",") if t.strip()]
        if not a.targets:
            p.error("--targets is empty")
    if a.case == "whisper":
        limit = WHISPER_SHAPES[a.whisper_shape]["max_target_positions"]
        if len(WHISPER_PROMPT) + a.new_tokens > limit:
            p.error(f"prompt + --new-tokens exceeds max_target_positions {limit}")
    return a


def llama(args):
    config = LlamaConfig(**SHAPES[args.shape], attn_implementation=args.attn)
    torch.manual_seed(args.seed)
    return LlamaForCausalLM(config).to(torch.float32).to(args.device)


def token_ids(args, batch, length, vocab):
    g = torch.Generator().manual_seed(args.seed)
    ids = torch.randint(0, vocab, (batch, length), generator=g, dtype=torch.long)
    return ids.to(args.device)


def sync(args):
    """Waits for the device's queued work (GPU timings)."""
    if str(args.device).startswith("cuda"):
        torch.cuda.synchronize()


def lora_config(args):
    from peft import LoraConfig, TaskType

    return LoraConfig(r=args.rank, lora_alpha=args.alpha, target_modules=args.targets,
                      lora_dropout=0.0, bias="none", task_type=TaskType.CAUSAL_LM)


HALF = {"bf16": torch.bfloat16, "f16": torch.float16}


def lora_model(args, random_b):
    from peft import get_peft_model

    base = llama(args)
    if getattr(args, "precision", "f32") != "f32":
        # Every base weight stored in the half type; PEFT keeps the adapter in f32
        # (autocast_adapter_dtype, its default).
        base = base.to(HALF[args.precision])
    model = get_peft_model(base, lora_config(args), autocast_adapter_dtype=True)
    if random_b:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0.0, 0.02)
    return model


def count(params):
    return sum(p.numel() for p in params)


def timed(args, fn):
    """Runs fn() warmup + iters times; returns the timed ms and fn's results."""
    for _ in range(args.warmup):
        fn()
    sync(args)
    ms, results = [], []
    for _ in range(args.iters):
        t0 = time.perf_counter()
        r = fn()
        sync(args)
        ms.append((time.perf_counter() - t0) * 1e3)
        results.append(r)
    return ms, results


def case_train(args, lora):
    if lora:
        model = lora_model(args, random_b=False)
    else:
        model = llama(args)
    if args.grad_ckpt:
        # Non-reentrant checkpointing works with frozen inputs (LoRA) without
        # enable_input_require_grads.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    vocab = SHAPES[args.shape]["vocab_size"]
    ids = token_ids(args, args.batch, args.seq, vocab)
    mask = torch.ones_like(ids)
    prompt = int(math.floor(args.seq * (1.0 - args.answer_frac) + 0.5))
    labels = ids.clone()
    labels[:, :prompt] = -100
    loss_tokens = int((labels[:, 1:] != -100).sum())
    if loss_tokens == 0:
        sys.exit("no labelled positions: raise --seq or --answer-frac")
    opt = torch.optim.AdamW(trainable, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    if any(p.dtype != torch.float32 for p in trainable):
        sys.exit(f"trainable parameters not in f32: {sorted({str(p.dtype) for p in trainable})}")
    half = HALF.get(args.precision)
    # f16: PyTorch's dynamic loss scaling (flexi-burn's LossScale follows the same rule).
    scaler = torch.amp.GradScaler(args.device, init_scale=65536.0) \
        if args.precision == "f16" else None

    def step():
        if half is not None:
            with torch.autocast(device_type=str(args.device).split(":")[0], dtype=half):
                out = model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False)
        else:
            out = model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False)
        loss = out.loss
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
        else:
            loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach()), float(norm)

    ms, res = timed(args, step)
    losses = [r[0] for r in res]
    if not all(math.isfinite(x) for x in losses):
        sys.exit(f"non-finite loss: {losses}")
    return ms, args.batch * args.seq, dict(
        loss=losses,
        grad_norm=[r[1] for r in res],
        trainable_params=count(trainable),
        total_params=count(model.parameters()),
        loss_tokens=loss_tokens,
    )


def case_decode(args):
    model = lora_model(args, random_b=True)
    model.eval()
    vocab = SHAPES[args.shape]["vocab_size"]
    prompt = token_ids(args, args.batch, args.prompt_len, vocab)
    n = args.new_tokens

    @torch.inference_mode()
    def run():
        t0 = time.perf_counter()
        mask = torch.ones_like(prompt)
        out = model(input_ids=prompt, attention_mask=mask, use_cache=True, logits_to_keep=1)
        nxt = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
        sync(args)
        t_prefill = time.perf_counter() - t0
        past = out.past_key_values
        generated = [nxt]
        ones = torch.ones((args.batch, 1), dtype=mask.dtype, device=mask.device)
        for _ in range(n - 1):
            mask = torch.cat([mask, ones], dim=1)
            out = model(input_ids=nxt, attention_mask=mask, past_key_values=past,
                        use_cache=True, logits_to_keep=1)
            past = out.past_key_values
            nxt = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
            generated.append(nxt)
        sync(args)
        total = time.perf_counter() - t0
        return t_prefill, total, torch.cat(generated, dim=1)

    ms, res = timed(args, run)
    gen = res[-1][2]
    if tuple(gen.shape) != (args.batch, n):
        sys.exit(f"generated shape {tuple(gen.shape)}, expected {(args.batch, n)}")
    extra = split_times(res, n, args.batch, "prefill_ms_median")
    extra.update(
        generated_shape=list(gen.shape),
        first_ids=gen[0, :8].tolist(),
        trainable_params=count(p for p in model.parameters() if p.requires_grad),
        total_params=count(model.parameters()),
    )
    return ms, args.batch * n, extra


def split_times(res, n, batch, first_name):
    first = statistics.median(r[0] * 1e3 for r in res)
    extra = {first_name: first}
    if n > 1:
        step = statistics.median((r[1] - r[0]) * 1e3 / (n - 1) for r in res)
        extra.update(step_ms_median=step, step_tok_s=batch / (step / 1e3))
    else:
        extra.update(step_ms_median=None, step_tok_s=None)
    return extra


def case_prefill(args):
    model = lora_model(args, random_b=True)
    model.eval()
    vocab = SHAPES[args.shape]["vocab_size"]
    ids = token_ids(args, args.batch, args.seq, vocab)
    mask = torch.ones_like(ids)

    @torch.inference_mode()
    def run():
        out = model(input_ids=ids, attention_mask=mask, use_cache=True, logits_to_keep=1)
        return tuple(out.logits.shape)

    ms, res = timed(args, run)
    if res[-1] != (args.batch, 1, vocab):
        sys.exit(f"logits shape {res[-1]}, expected {(args.batch, 1, vocab)}")
    return ms, args.batch * args.seq, dict(
        trainable_params=count(p for p in model.parameters() if p.requires_grad),
        total_params=count(model.parameters()),
    )


def case_whisper(args):
    from transformers import WhisperConfig, WhisperForConditionalGeneration
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    cfg = WHISPER_SHAPES[args.whisper_shape]
    config = WhisperConfig(**cfg, attn_implementation=args.attn)
    torch.manual_seed(args.seed)
    model = WhisperForConditionalGeneration(config).to(torch.float32).eval()
    g = torch.Generator().manual_seed(args.seed)
    mel = torch.randn((1, cfg["num_mel_bins"], 2 * cfg["max_source_positions"]), generator=g)
    prompt = torch.tensor([WHISPER_PROMPT], dtype=torch.long)
    encoder, decoder, proj = model.model.encoder, model.model.decoder, model.proj_out
    n = args.new_tokens

    @torch.inference_mode()
    def run():
        t0 = time.perf_counter()
        enc = encoder(mel).last_hidden_state
        t_enc = time.perf_counter() - t0
        past = EncoderDecoderCache(DynamicCache(), DynamicCache())
        out = decoder(input_ids=prompt, encoder_hidden_states=enc, past_key_values=past,
                      use_cache=True)
        nxt = proj(out.last_hidden_state[:, -1:, :]).argmax(dim=-1)
        t_first = time.perf_counter() - t0
        past = out.past_key_values
        generated = [nxt]
        for _ in range(n - 1):
            out = decoder(input_ids=nxt, encoder_hidden_states=enc, past_key_values=past,
                          use_cache=True)
            past = out.past_key_values
            nxt = proj(out.last_hidden_state[:, -1:, :]).argmax(dim=-1)
            generated.append(nxt)
        total = time.perf_counter() - t0
        return t_enc, t_first, total, torch.cat(generated, dim=1)

    ms, res = timed(args, run)
    gen = res[-1][3]
    if tuple(gen.shape) != (1, n):
        sys.exit(f"generated shape {tuple(gen.shape)}, expected {(1, n)}")
    extra = dict(encode_ms_median=statistics.median(r[0] * 1e3 for r in res))
    # step_ms_median: the single-token steps after the prompt step, as in decode
    extra.update(split_times([(r[1] - r[0], r[2] - r[0]) for r in res], n, 1, "prompt_ms_median"))
    extra.update(generated_shape=list(gen.shape), first_ids=gen[0, :8].tolist())
    return ms, n, extra


def main(argv=None):
    import_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.grad_ckpt and not args.case.startswith("train"):
        sys.exit("--grad-ckpt applies to the train-* cases only")
    if args.precision != "f32" and not args.case.startswith("train"):
        sys.exit("--precision applies to the train-* cases only")
    if args.device != "cpu" and args.case == "whisper":
        sys.exit("--device: the whisper case runs on the CPU only")
    torch.backends.cuda.matmul.allow_tf32 = bool(args.tf32)
    if args.case == "train-lora":
        ms, tokens, extra = case_train(args, lora=True)
    elif args.case == "train-full":
        ms, tokens, extra = case_train(args, lora=False)
    elif args.case == "decode":
        ms, tokens, extra = case_decode(args)
    elif args.case == "prefill":
        ms, tokens, extra = case_prefill(args)
    else:
        ms, tokens, extra = case_whisper(args)

    med = statistics.median(ms)
    params = {k: v for k, v in vars(args).items() if k not in ("case", "json")}
    result = {
        "side": "pytorch",
        "case": args.case,
        "params": params,
        "ms": ms,
        "ms_median": med,
        "tokens": tokens,
        "tok_s": tokens / (med / 1e3),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "import_rss_mb": import_rss,
        "threads": torch.get_num_threads(),
        "env": {k: v for k, v in sorted(os.environ.items())
                if k.startswith(("OMP_", "MKL_", "KMP_", "GOMP_"))},
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "python": platform.python_version(),
        },
    }
    result.update(extra)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
    shape = args.shape or args.whisper_shape
    settings = " ".join(f"{k}={params[k]}" for k in ("batch", "seq", "prompt_len", "new_tokens",
                                                      "rank") if params.get(k) is not None)
    more = ""
    if "loss" in result:
        more = f", loss {result['loss'][-1]:.4f}"
    if result.get("step_ms_median") is not None:
        more += f", step {result['step_ms_median']:.1f} ms"
    if "encode_ms_median" in result:
        more += f", encode {result['encode_ms_median']:.1f} ms"
    print(f"pytorch {args.case} {shape} {settings}: {med:.1f} ms/iter (median of {len(ms)}), "
          f"{result['tok_s']:.1f} tok/s, peak RSS {result['peak_rss_mb']:.0f} MB, "
          f"{result['threads']} threads{more}", file=sys.stderr)


if __name__ == "__main__":
    main()
