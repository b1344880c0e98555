"""Adapters made by PEFT itself, for the import tests (issue 15).

Writes three PEFT adapter directories with `save_pretrained`, each next to the logits PEFT
computes after reloading it with `PeftModel.from_pretrained` (`peft_logits.safetensors`:
`input_ids`, `logits`), so that `train/tests/peft_import.rs` checks our import against PEFT
without Python:

- `tiny_tied/peft_import_lora`: LoRA r=4, alpha 8 on the tiny Llama with `target_modules` a
  regex (k_proj of layer 0 only; q_proj, v_proj, down_proj of every layer), a `rank_pattern`
  (v_proj 2, layer 1's q_proj 6) and an `alpha_pattern` (down_proj 3); random A and B.
- `tiny_tied/peft_import_adalora`: AdaLoRA (init_r 6 -> target_r 3 on q, v, o) trained 8 steps
  with `update_and_allocate`, so its saved `rank_pattern` keeps different counts per layer and
  the state dict is cut to them (PEFT's own layout with `lora_E`).
- `whisper_tiny/peft_lora`: rsLoRA r=4, alpha 16 on the tiny Whisper's q_proj, v_proj, fc1
  (encoder and decoder, self- and cross-attention); logits of fixed decoder ids given the
  log-mel of `audio_1s.wav` padded to 30 s.

  /root/torchvenv/bin/python tools/peft_import_fixtures.py   (transformers 4.57.6, peft 0.21)

`--check-whisper-export DIR` instead loads DIR (our `cargo xtask export` of the imported
Whisper adapter) onto the tiny Whisper with PEFT, fails on any warning, and compares its logits
with the committed `whisper_tiny/peft_lora/peft_logits.safetensors`.
"""

import sys
import warnings
import wave
from pathlib import Path

import numpy as np
import torch
from peft import AdaLoraConfig, LoraConfig, PeftModel, get_peft_model
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, WhisperFeatureExtractor, WhisperForConditionalGeneration

FIX = Path(__file__).resolve().parent.parent / "models" / "tests" / "fixtures"
IDS = torch.tensor([[0, 17, 42, 99, 150, 7, 301, 64, 250, 3, 88, 120]])


def llama():
    return AutoModelForCausalLM.from_pretrained(FIX / "tiny_tied", torch_dtype=torch.float32).eval()


def tidy(out: Path):
    """Makes the saved config reproducible: PEFT writes a list `target_modules` from a set (its
    order varies run to run) and the base's absolute path."""
    import json

    path = out / "adapter_config.json"
    cfg = json.loads(path.read_text())
    if isinstance(cfg.get("target_modules"), list):
        cfg["target_modules"] = sorted(cfg["target_modules"])
    cfg["base_model_name_or_path"] = Path(cfg["base_model_name_or_path"]).name
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    (out / "README.md").unlink(missing_ok=True)


def reload_and_write(out: Path, build_base, inputs: dict, in_memory: torch.Tensor):
    """Reloads `out` with PEFT, checks it against the in-memory model, writes the logits."""
    tidy(out)
    model = PeftModel.from_pretrained(build_base(), out).eval()
    with torch.no_grad():
        logits = model(**inputs).logits[0]
    diff = (logits - in_memory).abs().max().item()
    assert diff < 1e-5, f"{out}: reloaded logits differ from the trained model's by {diff}"
    ids = inputs.get("input_ids", inputs.get("decoder_input_ids"))
    save_file({"input_ids": ids[0].contiguous(), "logits": logits.contiguous()}, out / "peft_logits.safetensors")
    print(f"{out.relative_to(FIX)}: logits {tuple(logits.shape)}, reload diff {diff:.1e}")


def lora():
    torch.manual_seed(1)
    cfg = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=r"model\.layers\.0\.self_attn\.k_proj|model\.layers\.\d+\.(self_attn\.(q_proj|v_proj)|mlp\.down_proj)",
        rank_pattern={"v_proj": 2, "layers.1.self_attn.q_proj": 6},
        alpha_pattern={"down_proj": 3.0},
        init_lora_weights=False,
    )
    model = get_peft_model(llama(), cfg).eval()
    with torch.no_grad():
        logits = model(input_ids=IDS).logits[0]
    out = FIX / "tiny_tied" / "peft_import_lora"
    model.save_pretrained(out)
    reload_and_write(out, llama, {"input_ids": IDS}, logits)


def adalora():
    torch.manual_seed(2)
    total = 8
    cfg = AdaLoraConfig(
        init_r=6,
        target_r=3,
        tinit=2,
        tfinal=2,
        deltaT=1,
        total_step=total,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj", "o_proj"],
    )
    model = get_peft_model(llama(), cfg)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-2)
    gen = torch.Generator().manual_seed(3)
    for step in range(total):
        x = torch.randint(0, 320, (4, 16), generator=gen)
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        model.base_model.update_and_allocate(step)
        opt.zero_grad()
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=IDS).logits[0]
    out = FIX / "tiny_tied" / "peft_import_adalora"
    model.save_pretrained(out)
    kept = {k: sum(v) for k, v in model.peft_config["default"].rank_pattern.items()}
    print(f"adalora kept counts: {kept}")
    reload_and_write(out, llama, {"input_ids": IDS}, logits)


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        assert w.getframerate() == 16000 and w.getsampwidth() == 2 and w.getnchannels() == 1
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return pcm.astype(np.float32) / 32768.0


WDIR = FIX / "whisper_tiny"


def whisper_base():
    return WhisperForConditionalGeneration.from_pretrained(WDIR, torch_dtype=torch.float32).eval()


def whisper_mel() -> np.ndarray:
    fe = WhisperFeatureExtractor(feature_size=80)
    audio = read_wav(WDIR / "audio_1s.wav")
    padded = np.zeros(fe.n_samples, dtype=np.float32)
    padded[: len(audio)] = audio
    return fe._np_extract_fbank_features(padded[None, :], "cpu")[0].astype(np.float32)


def check_whisper_export(adapter: str):
    from safetensors.torch import load_file

    ref = load_file(WDIR / "peft_lora" / "peft_logits.safetensors")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = PeftModel.from_pretrained(whisper_base(), adapter).eval()
    relevant = [w for w in caught if "peft" in str(w.filename) or "adapter" in str(w.message).lower()]
    for w in relevant:
        print(f"warning: {w.message}")
    inputs = {"input_features": torch.from_numpy(whisper_mel())[None], "decoder_input_ids": ref["input_ids"][None]}
    with torch.no_grad():
        logits = model(**inputs).logits[0]
    diff = (logits - ref["logits"]).abs().max().item()
    print(f"peft {adapter}: {len(relevant)} warnings, max abs logit diff to the fixture {diff:.3e}")
    if relevant or diff > 1e-5:
        sys.exit(1)


def whisper():
    torch.manual_seed(4)
    wdir = WDIR
    base = whisper_base
    mel = whisper_mel()
    cfg = LoraConfig(
        r=4,
        lora_alpha=16,
        use_rslora=True,
        target_modules=["q_proj", "v_proj", "fc1"],
        init_lora_weights=False,
    )
    model = get_peft_model(base(), cfg).eval()
    ids = torch.tensor([[303, 304, 306, 310, 40, 41, 57, 90]])
    inputs = {"input_features": torch.from_numpy(mel)[None], "decoder_input_ids": ids}
    with torch.no_grad():
        logits = model(**inputs).logits[0]
    out = wdir / "peft_lora"
    model.save_pretrained(out)
    reload_and_write(out, base, inputs, logits)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--check-whisper-export":
        check_whisper_export(sys.argv[2])
        sys.exit(0)
    lora()
    adalora()
    whisper()
