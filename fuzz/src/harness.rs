//! One function per reader of an untrusted file: each takes the fuzzer's bytes, feeds them
//! through the same entry points a user's file goes through, and returns. Errors are the
//! expected outcome for most inputs; a panic, an abort (an allocation sized by an unchecked
//! length) or a hang is a bug.
//!
//! The fuzz targets in `fuzz/fuzz_targets/` call these on nightly (`cargo fuzz run NAME`); the
//! stable test suite includes this file (`xtask/tests/fuzz_regressions.rs`) and replays the
//! committed corpora and the regression inputs through the same functions, so CI checks every
//! bug the fuzzer found stays fixed without running the fuzzer.
//!
//! Inputs made of several files (a sharded checkpoint, a PEFT adapter directory, a config with
//! its generation config) are split at [`SEP`]; the first byte of some inputs picks a variant
//! (see each function).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::backend::Flex;
use datasets::Format;
use datasets::readers::{ReadOptions, read_all};
use models::format::Checkpoint;

/// Separates the files of a multi-file input.
pub const SEP: &[u8] = b"\n--8<--\n";

/// The project's small test checkpoints (`models/tests/fixtures`): the tiny Llama and Whisper
/// that configs and adapters are loaded against.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures")
}

/// A scratch directory unique to this call, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("flexi-fuzz-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory in the temp dir");
        Self(dir)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("scratch subdirectory");
        }
        std::fs::write(&path, bytes).expect("scratch file");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn split(data: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut rest = data;
    while let Some(i) = rest.windows(SEP.len()).position(|w| w == SEP) {
        parts.push(&rest[..i]);
        rest = &rest[i + SEP.len()..];
    }
    parts.push(rest);
    parts
}

/// Reads every tensor of a checkpoint at its stored shape.
fn read_every_tensor(ckpt: &mut Checkpoint) {
    for name in ckpt.names() {
        if let Some(shape) = ckpt.shape(&name) {
            let _ = ckpt.take(&name, &shape);
        }
    }
    let _ = ckpt.finish(|_| false);
}

/// A GGUF file: header, metadata, tensor index, every tensor dequantised (every quantisation
/// the reader supports), the Llama config, tensor mapping and tokenizer built from it.
pub fn gguf(data: &[u8]) {
    let Ok(file) = models::gguf::GgufFile::from_bytes("fuzz.gguf", data.to_vec()) else {
        return;
    };
    for t in file.tensors() {
        let _ = file.tensor_bytes(&t.name);
        let _ = file.dequantize(&t.name);
    }
    let _ = models::gguf::llama_config(&file);
    let _ = models::gguf::tokenizer(&file);
    if let Ok(mut ckpt) = models::gguf::llama_checkpoint(&file) {
        read_every_tensor(&mut ckpt);
    }
}

/// A CTranslate2 `model.bin`: header, variable index, every variable converted to f32, the
/// Whisper spec check, config and tensor mapping.
pub fn ct2(data: &[u8]) {
    let Ok(model) = models::ct2::Ct2Model::from_bytes("model.bin", data.to_vec()) else {
        return;
    };
    for v in model.variables() {
        let _ = model.raw(&v.name);
        let _ = model.to_f32(&v.name);
        let _ = model.scalar_i64(&v.name);
    }
    let _ = models::ct2::check_whisper_spec(&model);
    let _ = models::ct2::whisper_hf_tensors(&model);
    let _ = models::ct2::whisper_config_json(&model, Path::new("/nonexistent-fuzz-dir"));
}

/// Safetensors checkpoints. First byte even: one `model.safetensors` (the rest of the input).
/// Odd: a sharded checkpoint, the rest split at [`SEP`] into `model.safetensors.index.json`
/// and shards `model-0000K-of-0000N.safetensors`.
pub fn safetensors(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let dir = Scratch::new();
    if mode % 2 == 0 {
        dir.write("model.safetensors", rest);
    } else {
        let parts = split(rest);
        let n = parts.len() - 1;
        dir.write("model.safetensors.index.json", parts[0]);
        for (k, part) in parts[1..].iter().enumerate() {
            dir.write(&format!("model-{:05}-of-{n:05}.safetensors", k + 1), part);
        }
    }
    if let Ok(mut ckpt) = Checkpoint::open(&dir.0) {
        read_every_tensor(&mut ckpt);
    }
}

/// A PEFT adapter directory: `adapter_config.json` [`SEP`] `adapter_model.safetensors`, loaded
/// onto the tiny Llama fixture by both readers: `train::peft` (what `import`,
/// `--resume-from-adapter` and `generate --adapter` use: LoRA and AdaLoRA, regex targets,
/// rank/alpha patterns) and the plain-LoRA `models::llama::load_llama_with_peft`.
pub fn peft_adapter(data: &[u8]) {
    let parts = split(data);
    let dir = Scratch::new();
    dir.write("adapter_config.json", parts[0]);
    if let Some(weights) = parts.get(1) {
        dir.write("adapter_model.safetensors", weights);
    }
    let base = fixtures().join("tiny_tied");
    let _ = train::peft::load_llama_with_adapter::<Flex>(
        &base,
        &dir.0,
        false,
        flexi_burn::Precision::F32,
        &Default::default(),
    );
    let _ = models::llama::load_llama_with_peft::<Flex>(&base, &dir.0, &Default::default());
}

/// A Llama `config.json`, parsed and then loaded against the tiny Llama fixture's weights with
/// LoRA adapters on every projection (shape checks against the file before any allocation).
pub fn llama_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("config.json");
    let Ok(config) = models::llama::LlamaConfig::from_json_str(text, path) else {
        return;
    };
    let _ = config.shape();
    let Ok(mut ckpt) = Checkpoint::open(fixtures().join("tiny_tied/model.safetensors")) else {
        return;
    };
    let adapter = models::llama::AdapterConfig::new(
        models::llama::AdapterConfig::parse_targets(
            "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
        )
        .expect("valid"),
        4,
        8.0,
    );
    let _ = models::llama::build_llama::<Flex>(&config, &mut ckpt, &adapter, &Default::default());
}

/// A Whisper `config.json` [`SEP`] optional `generation_config.json`, parsed and loaded
/// against the tiny Whisper fixture's weights.
pub fn whisper_config(data: &[u8]) {
    let parts = split(data);
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(parts[0]) else {
        return;
    };
    let generation = match parts.get(1) {
        Some(g) => match serde_json::from_slice::<serde_json::Value>(g) {
            Ok(g) => Some(g),
            Err(_) => return,
        },
        None => None,
    };
    let path = Path::new("config.json");
    let Ok(config) = models::whisper::WhisperConfig::from_json(&v, generation.as_ref(), path)
    else {
        return;
    };
    let _ = config.input_frames();
    let Ok(mut ckpt) = Checkpoint::open(fixtures().join("whisper_tiny/model.safetensors")) else {
        return;
    };
    let adapter = models::whisper::WhisperAdapter::all(4, 8.0);
    let _ =
        models::whisper::build_whisper::<Flex>(&config, &mut ckpt, &adapter, &Default::default());
}

/// WAV or FLAC bytes: decoded, resampled to 16 kHz, and turned into Whisper's log-mel
/// spectrogram (80 bins, unpadded and padded to 30 s windows).
pub fn audio(data: &[u8]) {
    let Ok(audio) = models::whisper::decode_bytes(data, Path::new("fuzz.audio")) else {
        return;
    };
    let audio = audio.resampled(models::whisper::SAMPLE_RATE);
    let mel = models::whisper::MelExtractor::new(80);
    let _ = mel.log_mel(&audio.samples, models::whisper::Padding::None, "fuzz");
    for window in models::whisper::split_windows(&audio.samples)
        .into_iter()
        .take(2)
    {
        let _ = mel.log_mel(window, models::whisper::Padding::ThirtySeconds, "fuzz");
    }
}

fn read(path: &Path, format: Option<Format>, skip_bad: bool) {
    let options = ReadOptions {
        format,
        skip_bad,
        source: None,
    };
    let _ = read_all(path, &options);
}

/// The JSON data readers. First byte: bits 0-2 pick the format (GSM8K, MetaMathQA, SVAMP,
/// MultiArith, instruction, MAWPS JSON, or detection from the content), bit 3 the extension
/// (`.jsonl` or `.json`), bit 4 `skip_bad`; the rest is the file.
pub fn data_json(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let format = match mode & 7 {
        0 => Some(Format::Gsm8k),
        1 => Some(Format::MetaMathQa),
        2 => Some(Format::Svamp),
        3 => Some(Format::MultiArith),
        4 => Some(Format::Instruction),
        5 => Some(Format::MawpsJson),
        _ => None,
    };
    let name = if mode & 8 == 0 {
        "data.jsonl"
    } else {
        "data.json"
    };
    let dir = Scratch::new();
    let path = dir.write(name, rest);
    read(&path, format, mode & 16 != 0);
}

/// MRQA `.jsonl` (first byte even) or the same bytes gzip-compressed as `.jsonl.gz` (odd;
/// bit 1: `skip_bad`). The plain variant lets the fuzzer reach the record parser; the gzip one
/// feeds the decompressor raw bytes when bit 2 is set.
pub fn data_mrqa(data: &[u8]) {
    use std::io::Write;
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let dir = Scratch::new();
    let path = if mode & 1 == 0 {
        dir.write("sample.jsonl", rest)
    } else if mode & 4 == 0 {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(rest).expect("in-memory gzip");
        dir.write("sample.jsonl.gz", &gz.finish().expect("in-memory gzip"))
    } else {
        dir.write("sample.jsonl.gz", rest)
    };
    read(&path, Some(Format::Mrqa), mode & 2 != 0);
}

/// The MAWPS cross-validation CSV (first byte bit 0: `skip_bad`).
pub fn data_mawps_csv(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let dir = Scratch::new();
    let path = dir.write("mawps.csv", rest);
    read(&path, Some(Format::MawpsCsv), mode & 1 != 0);
}

/// A LibriSpeech tree whose transcript file `84-121123.trans.txt` is the input, next to two
/// real utterances (`84-121123-0000.flac` and `84-121123-0001.wav`, the Whisper fixture's
/// audio). First byte bit 0: `skip_bad`.
pub fn data_librispeech(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let dir = Scratch::new();
    let chapter = "dev-clean/84/121123";
    dir.write(&format!("{chapter}/84-121123.trans.txt"), rest);
    let audio = fixtures().join("whisper_tiny");
    if let Ok(flac) = std::fs::read(audio.join("audio_1s.flac")) {
        dir.write(&format!("{chapter}/84-121123-0000.flac"), &flac);
    }
    if let Ok(wav) = std::fs::read(audio.join("audio_1s.wav")) {
        dir.write(&format!("{chapter}/84-121123-0001.wav"), &wav);
    }
    read(
        &dir.0.join("dev-clean"),
        Some(Format::LibriSpeech),
        mode & 1 != 0,
    );
}
