#!/usr/bin/env python3
"""Builds the tiny random Whisper fixture and its reference outputs for `models/tests/whisper_*`.

Writes `models/tests/fixtures/whisper_tiny/`:

- `config.json`, `generation_config.json`, `model.safetensors` (float16 weights): a random
  `WhisperForConditionalGeneration` (d_model 64, 2 encoder + 2 decoder layers, 4 heads,
  80 mel bins, 1500 source positions), saved by `save_pretrained`;
- `tokenizer.json`: a byte-level BPE trained here on a few sentences, plus Whisper's special
  tokens (`<|endoftext|>`, `<|startoftranscript|>`, three languages, `<|translate|>`,
  `<|transcribe|>`, `<|startoflm|>`, `<|startofprev|>`, `<|nocaptions|>`, `<|notimestamps|>`);
- `audio_1s.wav` (16 kHz mono int16) and `audio_1s.flac` (the same samples, if `sox` exists);
- `reference.safetensors` (float32 / int64):
  - `mel_1s [80, 100]`: log-mel of 1 s of the analytic test signal without padding
    (`padding="longest"`), `mel_30s [80, 3000]`: log-mel of 30 s of it,
    `mel_wav [80, 3000]` is *not* stored (the Rust test checks the WAV's 30 s window against
    `mel_wav_head [80, 100]`, its first 100 frames, and the model outputs below);
  - `encoder_out [1500, 64]`: encoder output for the WAV's padded mel;
  - `prompt [2, 4]`, `greedy [2, N]` (generated ids after the prompt, `-1` padded after
    `<|endoftext|>`), `logits [2, S, vocab]` for prompt + greedy ids, samples: the WAV and
    the analytic 30 s signal.
- `reference.json`: the same ids as lists, the decoded texts, the max abs difference between
  transformers' numpy and torch mel paths, and the smallest top-1/top-2 logit margin seen in
  greedy decoding (so a reader can judge how robust the id comparison is).

The mel references come from `WhisperFeatureExtractor._np_extract_fbank_features` (float64
STFT, the path transformers takes without torch); model outputs come from the float32 model
loaded back from the float16 file, so the Rust side sees exactly the same weights.

Greedy decoding is a plain argmax loop over `model(...)` logits with the two logits processors
transformers' `generate` applies for Whisper: `suppress_tokens` at every step and
`begin_suppress_tokens` at the first generated step; it stops at `<|endoftext|>`.

Run with the tools venv (torch, transformers==4.57.6):
    tools/.venv/bin/python tools/make_whisper_fixtures.py
"""

import json
import math
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "models" / "tests" / "fixtures" / "whisper_tiny"
SR = 16000
MAX_NEW = 12

SPECIALS = [
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|en|>",
    "<|de|>",
    "<|fr|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nocaptions|>",
    "<|notimestamps|>",
]

TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "she sells sea shells by the sea shore",
    "speech recognition with flexible low rank adapters",
    "one two three four five six seven eight nine ten",
    "hello world this is a tiny whisper tokenizer",
]


def test_signal(n: int) -> np.ndarray:
    """The analytic test signal (same formula as `test_signal` in models/tests/whisper_mel.rs).

    Computed in float64, returned as float32.
    """
    t = np.arange(n, dtype=np.float64) / SR
    env = 0.5 * (1.0 + np.sin(2.0 * math.pi * 0.7 * t))
    x = 0.3 * np.sin(2.0 * math.pi * 440.0 * t)
    x += 0.2 * env * np.sin(2.0 * math.pi * 1234.5 * t + 0.3)
    x += 0.1 * np.sin(2.0 * math.pi * (200.0 * t + 25.0 * t * t))
    x += 0.05 * np.sin(2.0 * math.pi * 3571.0 * t) * np.cos(2.0 * math.pi * 3.0 * t)
    return x.astype(np.float32)


def wav_signal(n: int) -> np.ndarray:
    """The WAV fixture's content: a vowel-like harmonic tone with a pitch glide, as int16."""
    t = np.arange(n, dtype=np.float64) / SR
    f0 = 120.0 + 40.0 * t
    phase = 2.0 * math.pi * (120.0 * t + 20.0 * t * t)
    x = np.zeros(n)
    for k in range(1, 12):
        x += (0.4 / k) * np.sin(k * phase) * (1.0 + 0.5 * np.cos(2.0 * math.pi * k * f0 / 2000.0))
    x *= 0.5 * (1.0 - np.cos(2.0 * math.pi * t / t[-1]))  # fade in and out
    return np.round(np.clip(x, -1.0, 1.0) * 20000.0).astype(np.int16)


def build_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    tok.train_from_iterator(TEXTS, trainer)
    tok.add_special_tokens(SPECIALS)
    return tok


def np_mel(fe: WhisperFeatureExtractor, audio: np.ndarray, pad: bool) -> np.ndarray:
    if pad:
        padded = np.zeros(fe.n_samples, dtype=np.float32)
        padded[: min(len(audio), fe.n_samples)] = audio[: fe.n_samples]
        audio = padded
    return fe._np_extract_fbank_features(audio[None, :], "cpu")[0].astype(np.float32)


def main() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    OUT.mkdir(parents=True, exist_ok=True)

    tok = build_tokenizer()
    vocab = tok.get_vocab_size(with_added_tokens=True)
    ids = {s: tok.token_to_id(s) for s in SPECIALS}
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    space = tok.token_to_id("Ġ")

    cfg = WhisperConfig(
        vocab_size=vocab,
        num_mel_bins=80,
        encoder_layers=2,
        encoder_attention_heads=4,
        decoder_layers=2,
        decoder_attention_heads=4,
        encoder_ffn_dim=256,
        decoder_ffn_dim=256,
        d_model=64,
        max_source_positions=1500,
        max_target_positions=448,
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        decoder_start_token_id=sot,
        suppress_tokens=[],
        begin_suppress_tokens=[space, eot],
        init_std=0.1,
        activation_function="gelu",
        tie_word_embeddings=True,
    )
    model = WhisperForConditionalGeneration(cfg).eval()
    # Random norms and biases too (HF initialises them to 1 / 0), so a mapping mistake shows.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))

    fe = WhisperFeatureExtractor(feature_size=80)
    wav = wav_signal(SR)
    wav_f = wav.astype(np.float32) / 32768.0
    sig30 = test_signal(30 * SR)
    mel_1s = np_mel(fe, test_signal(SR), pad=False)
    mel_1s_128 = np_mel(WhisperFeatureExtractor(feature_size=128), test_signal(SR), pad=False)
    mel_30s = np_mel(fe, sig30, pad=True)
    mel_wav = np_mel(fe, wav_f, pad=True)
    assert mel_1s.shape == (80, 100), mel_1s.shape
    assert mel_30s.shape == (80, 3000), mel_30s.shape
    # The torch path, for information.
    torch_30 = fe._torch_extract_fbank_features(sig30[None, :].copy(), "cpu")[0]
    np_vs_torch = float(np.abs(torch_30 - mel_30s).max())

    # Unsuppressed greedy to pick suppress_tokens that matter: the first free choice of each
    # sample after the begin-suppressed step is put into suppress_tokens.
    feats = torch.from_numpy(np.stack([mel_wav, mel_30s]))
    prompt = [sot, ids["<|en|>"], ids["<|transcribe|>"], ids["<|notimestamps|>"]]

    def greedy(model, suppress, begin_suppress):
        with torch.no_grad():
            enc = model.model.encoder(feats).last_hidden_state
            seqs = [list(prompt) for _ in range(2)]
            done = [False, False]
            margin = float("inf")
            for step in range(MAX_NEW):
                dec_ids = torch.tensor(seqs)
                logits = model(encoder_outputs=(enc,), decoder_input_ids=dec_ids).logits[:, -1]
                logits = logits.clone()
                logits[:, suppress] = -float("inf")
                if step == 0:
                    logits[:, begin_suppress] = -float("inf")
                top2 = torch.topk(logits, 2, dim=-1).values
                for b in range(2):
                    if done[b]:
                        seqs[b].append(eot)
                        continue
                    margin = min(margin, float(top2[b, 0] - top2[b, 1]))
                    nxt = int(logits[b].argmax())
                    seqs[b].append(nxt)
                    done[b] = nxt == eot
                if all(done):
                    break
            return enc, seqs, margin

    _, free, _ = greedy(model, [], [space, eot])
    suppress = sorted({free[0][len(prompt) + 1], free[1][len(prompt) + 1], ids["<|translate|>"],
                       ids["<|startoflm|>"], ids["<|startofprev|>"], ids["<|nocaptions|>"]})
    cfg.suppress_tokens = suppress
    model.config.suppress_tokens = suppress
    model.generation_config.suppress_tokens = suppress
    model.generation_config.begin_suppress_tokens = [space, eot]
    model.generation_config.is_multilingual = True
    model.generation_config.lang_to_id = {"<|en|>": ids["<|en|>"], "<|de|>": ids["<|de|>"],
                                          "<|fr|>": ids["<|fr|>"]}
    model.generation_config.task_to_id = {"translate": ids["<|translate|>"],
                                          "transcribe": ids["<|transcribe|>"]}
    model.generation_config.no_timestamps_token_id = ids["<|notimestamps|>"]

    # Save as float16, load back as float32: references use exactly the stored weights.
    model.half().save_pretrained(OUT, safe_serialization=True)
    tok.save(str(OUT / "tokenizer.json"))
    model = WhisperForConditionalGeneration.from_pretrained(OUT, torch_dtype=torch.float32).eval()

    enc, seqs, margin = greedy(model, suppress, [space, eot])
    with torch.no_grad():
        logits = model(encoder_outputs=(enc,), decoder_input_ids=torch.tensor(seqs)).logits
    gen = [s[len(prompt):] for s in seqs]
    # Trim after the first <|endoftext|> (kept), pad with -1.
    trimmed = []
    for g in gen:
        out = []
        for t in g:
            out.append(t)
            if t == eot:
                break
        trimmed.append(out)
    width = max(len(g) for g in trimmed)
    greedy_arr = np.full((2, width), -1, dtype=np.int64)
    for b, g in enumerate(trimmed):
        greedy_arr[b, : len(g)] = g

    with wave.open(str(OUT / "audio_1s.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(wav.tobytes())
    if shutil.which("sox"):
        subprocess.run(["sox", str(OUT / "audio_1s.wav"), str(OUT / "audio_1s.flac")], check=True)

    save_file(
        {
            "mel_1s": mel_1s,
            "mel_1s_128": mel_1s_128,
            "mel_30s": mel_30s,
            "mel_wav_head": np.ascontiguousarray(mel_wav[:, :100]),
            "encoder_out": enc[0].numpy().astype(np.float32),
            "prompt": np.array([prompt, prompt], dtype=np.int64),
            "greedy": greedy_arr,
            "logits": logits.numpy().astype(np.float32),
        },
        str(OUT / "reference.safetensors"),
    )
    texts = [tok.decode([t for t in g if t >= 0], skip_special_tokens=True) for g in trimmed]
    (OUT / "reference.json").write_text(
        json.dumps(
            {
                "prompt": prompt,
                "greedy": trimmed,
                "texts": texts,
                "special_ids": ids,
                "suppress_tokens": suppress,
                "begin_suppress_tokens": [space, eot],
                "mel_numpy_vs_torch_max_abs": np_vs_torch,
                "greedy_min_top2_margin": margin,
                "transformers": __import__("transformers").__version__,
                "torch": torch.__version__,
            },
            indent=2,
        )
        + "\n"
    )
    print("vocab", vocab, "prompt", prompt, "greedy", trimmed, "texts", texts)
    print("np vs torch mel", np_vs_torch, "margin", margin)
    for p in sorted(OUT.iterdir()):
        print(f"{p.stat().st_size:>9} {p.name}")


if __name__ == "__main__":
    main()
