#!/usr/bin/env python3
"""Pairs PyTorch and flexi-burn benchmark results and prints a Markdown table (stdlib only).

    python3 tools/bench_table.py RESULT.json... [--out TABLE.md]

Each file holds one result object (or a list of them) as written by `tools/bench_torch.py` or
its flexi-burn counterpart: {"side": "pytorch" | "flexi-burn", "case", "params", "tok_s",
"peak_rss_mb", ...}. Parameter names may use dashes or underscores. A flexi-burn result is
paired with the PyTorch result of the same case and key parameters:

    train-lora: shape, batch, seq, rank        train-full: shape, batch, seq
    decode: shape, batch, prompt_len, new_tokens, rank
    prefill: shape, batch, seq, rank           whisper: whisper_shape (or shape), new_tokens

(an unknown case uses all of shape, whisper_shape, batch, seq, prompt_len, new_tokens, rank).
Several results with the same key on one side pair up in file order (`tools/bench.sh --repeat
N` names them NAME.SIDE.rKK.json, so the K-th of each side pair up); whatever is left unpaired
gets its own row with "-" for the other side. ratio = flexi-burn tok/s / PyTorch tok/s. Where a
case has several pairs, a second table gives the median and the range of its ratios.
"""

import argparse
import json
import statistics
import sys

CASE_ORDER = ["train-lora", "train-full", "decode", "prefill", "whisper"]
ALL_KEYS = ["shape", "batch", "seq", "prompt_len", "new_tokens", "rank"]
CASE_KEYS = {
    "train-lora": ["shape", "batch", "seq", "rank"],
    "train-full": ["shape", "batch", "seq"],
    "decode": ["shape", "batch", "prompt_len", "new_tokens", "rank"],
    "prefill": ["shape", "batch", "seq", "rank"],
    "whisper": ["shape", "new_tokens"],
}
SIDES = ("pytorch", "flexi-burn")
LABELS = {"batch": "batch", "seq": "seq", "prompt_len": "prompt", "new_tokens": "new",
          "rank": "rank"}


def load(paths):
    results = []
    for path in paths:
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, ValueError) as e:
            sys.exit(f"{path}: {e}")
        for r in data if isinstance(data, list) else [data]:
            if not isinstance(r, dict) or r.get("side") not in SIDES or "case" not in r:
                sys.exit(f"{path}: not a benchmark result (needs side in {SIDES} and case)")
            params = {k.replace("-", "_"): v for k, v in (r.get("params") or {}).items()}
            if params.get("shape") is None:  # whisper results name their shape whisper_shape
                params["shape"] = params.get("whisper_shape")
            r["params"] = params
            results.append(r)
    return results


def key(r):
    names = CASE_KEYS.get(r["case"], ALL_KEYS)
    return (r["case"],) + tuple((n, norm(r["params"].get(n))) for n in names)


def norm(v):
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def num(v, digits=None):
    if v is None:
        return "-"
    v = float(v)
    if digits is None:
        digits = 2 if v < 10 else 1 if v < 100 else 0
    return f"{v:.{digits}f}"


def rows(results):
    groups = {}
    for r in results:
        groups.setdefault(key(r), {s: [] for s in SIDES})[r["side"]].append(r)
    out = []
    for k, sides in groups.items():
        pt, fb = sides["pytorch"], sides["flexi-burn"]
        for i in range(max(len(pt), len(fb))):
            out.append((k, pt[i] if i < len(pt) else None, fb[i] if i < len(fb) else None))

    def order(row):
        case = row[0][0]
        rank = CASE_ORDER.index(case) if case in CASE_ORDER else len(CASE_ORDER)
        return (rank, case, [(0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v))
                             for _, v in row[0][1:]])

    return sorted(out, key=order)


def settings(k, pt, fb):
    parts = [f"{LABELS[n]} {v}" for n, v in k[1:] if n != "shape" and v is not None]
    threads = [r.get("threads") for r in (pt, fb) if r is not None]
    if threads and all(t is not None for t in threads):
        parts.append("threads " + "/".join(str(t) for t in dict.fromkeys(threads)))
    return ", ".join(parts)


def table(results):
    head = ["case", "shape", "settings", "PyTorch tok/s", "flexi-burn tok/s",
            "ratio (flexi/pytorch)", "PyTorch peak RSS MB", "flexi-burn peak RSS MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for k, pt, fb in rows(results):
        shape = dict(k[1:]).get("shape")
        pt_tok = pt.get("tok_s") if pt else None
        fb_tok = fb.get("tok_s") if fb else None
        ratio = f"{fb_tok / pt_tok:.2f}x" if pt_tok and fb_tok is not None else "-"
        cells = [k[0], shape or "-", settings(k, pt, fb) or "-", num(pt_tok), num(fb_tok), ratio,
                 num(pt.get("peak_rss_mb") if pt else None, 0),
                 num(fb.get("peak_rss_mb") if fb else None, 0)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def ratio_ranges(results):
    """Median, lowest and highest ratio of every case measured in more than one pair."""
    ratios = {}
    for k, pt, fb in rows(results):
        if pt and fb and pt.get("tok_s") and fb.get("tok_s") is not None:
            ratios.setdefault(k, []).append(fb["tok_s"] / pt["tok_s"])
    lines = []
    for k, rs in ratios.items():
        if len(rs) < 2:
            continue
        rs = sorted(rs)
        median = statistics.median(rs)
        shape = dict(k[1:]).get("shape") or "-"
        lines.append(f"| {k[0]} | {shape} | {settings(k, None, None) or '-'} | {len(rs)} | "
                     f"{median:.2f}x | {rs[0]:.2f}x - {rs[-1]:.2f}x |")
    if not lines:
        return ""
    head = ("\nRatios over the alternated pairs (flexi-burn tok/s / PyTorch tok/s):\n\n"
            "| case | shape | settings | pairs | median | range |\n|---|---|---|---|---|---|\n")
    return head + "\n".join(lines) + "\n"


def relative_to_lora(results):
    """flexi-burn's other training methods against its own LoRA step of the same shape (the
    Flexi-LoRA goal: a mixed-rank step within 2 % of LoRA-8's)."""
    ours = [r for r in results if r.get("side") == "flexi-burn"]
    lines = []
    seen = {}
    for r in ours:
        case = r.get("case", "")
        if not case.startswith("train-") or case == "train-lora":
            continue
        key = {k: r["params"].get(k) for k in ("shape", "batch", "seq")}
        base = [x for x in ours if x.get("case") == "train-lora"
                and all(x["params"].get(k) == v for k, v in key.items())]
        # The i-th result of a method against the i-th LoRA step (same repeat of bench.sh).
        i = seen.get((case, tuple(key.values())), 0)
        seen[(case, tuple(key.values()))] = i + 1
        if base:
            b = base[min(i, len(base) - 1)]
            ratio = r["ms_median"] / b["ms_median"]
            lines.append(f"| {case} | {r['ms_median']:.0f} | {b['ms_median']:.0f} | {ratio:.3f} |")
    if not lines:
        return ""
    head = ("\nflexi-burn step time relative to its own LoRA step (same shape and batch):\n\n"
            "| case | ms / step | train-lora ms / step | ratio |\n|---|---|---|---|\n")
    return head + "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description="Markdown table of PyTorch vs flexi-burn results.")
    p.add_argument("results", nargs="+", metavar="RESULT.json")
    p.add_argument("--out", metavar="FILE", help="also write the table here")
    a = p.parse_args(argv)
    results = load(a.results)
    text = table(results) + ratio_ranges(results) + relative_to_lora(results)
    sys.stdout.write(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
