#!/usr/bin/env python3
"""Greedy Whisper transcripts from the reference implementation, CTranslate2 itself, on a
CTranslate2 model directory, for the ignored test `models/tests/ct2_whisper_real.rs`.

Features are transformers' WhisperFeatureExtractor log-mel (30 s padding, the same recipe the
Rust front end implements); decoding is `ctranslate2.models.Whisper.generate` with
beam_size=1 (greedy), the model's suppress lists (`suppress_tokens=[-1]`,
`suppress_blank=True`) and compute_type float32 (float16 weights widened, as the Rust loader
does). The prompt is `<|startoftranscript|><|notimestamps|>` for English-only models.

Writes OUT.json: {utterance id: {"ids": [...], "text": "..."}} for every WAV under WAV_DIR.

    tools/.venv/bin/pip install ctranslate2 transformers
    tools/.venv/bin/python tools/ct2_whisper_reference.py CT2_DIR WAV_DIR OUT.json
"""

import json
import os
import sys
import wave

import ctranslate2
import numpy as np
from transformers import WhisperFeatureExtractor
from tokenizers import Tokenizer


def read_wav(path):
    with wave.open(path, "rb") as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1 and w.getsampwidth() == 2
        data = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    return data.astype(np.float32) / 32768.0


def main():
    model_dir, wav_dir, out = sys.argv[1:4]
    model = ctranslate2.models.Whisper(model_dir, device="cpu", compute_type="float32")
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    fe = WhisperFeatureExtractor(feature_size=80)
    prompt = [tok.token_to_id("<|startoftranscript|>")]
    if model.is_multilingual:
        prompt += [tok.token_to_id("<|en|>"), tok.token_to_id("<|transcribe|>")]
    prompt.append(tok.token_to_id("<|notimestamps|>"))
    wavs = sorted(
        os.path.join(d, f) for d, _, fs in os.walk(wav_dir) for f in fs if f.endswith(".wav"))
    results = {}
    for path in wavs:
        audio = read_wav(path)
        feats = fe(audio, sampling_rate=16000, return_tensors="np").input_features
        r = model.generate(ctranslate2.StorageView.from_array(np.ascontiguousarray(feats)),
                           [prompt], beam_size=1, max_length=448,
                           suppress_blank=True, suppress_tokens=[-1])[0]
        ids = [i for i in r.sequences_ids[0] if i not in prompt]
        text = tok.decode(ids, skip_special_tokens=True).strip()
        uid = os.path.splitext(os.path.basename(path))[0]
        results[uid] = {"ids": ids, "text": text}
        print(uid, text)
    with open(out, "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {len(results)} transcripts to {out}")


if __name__ == "__main__":
    main()
