//! Atomic checkpoints: `OUT/checkpoints/step-NNNNNN/{weights.safetensors, optimizer.bin,
//! state.json}` written into a `.tmp` directory and renamed into place, then `latest` is
//! replaced the same way. A failure while saving (a full disk) leaves the previous checkpoint
//! and `latest` untouched.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// What a checkpoint says about the run besides tensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// Optimizer steps done.
    pub step: usize,
    /// The run's seed (data order, ranks and dropout derive from `(seed, step)`).
    pub seed: u64,
    /// Method label, checked on resume.
    pub method: String,
    /// The full training configuration.
    pub config: serde_json::Value,
    /// AdaLoRA importance state, if any.
    #[serde(default)]
    pub adalora: Option<serde_json::Value>,
    /// Loss of the last step.
    pub last_loss: f64,
    /// The f16 loss scale's state (f16 runs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<flexi_burn::LossScale>,
}

/// Checkpoint directory handling.
pub struct Checkpoints {
    root: PathBuf,
    keep: usize,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` so that a reader (or a process killed mid-write) only ever sees the
/// old file or the whole new one: written to `path` + `.tmp`, synced, then renamed over it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    write_synced(&tmp, bytes)?;
    fs::rename(&tmp, path).map_err(io(path))
}

/// Keeps the lines of `metrics.jsonl` for steps up to `step` (a resumed run recomputes the
/// steps after its checkpoint and appends them again) and drops a torn last line left by a
/// killed process. Lines that do not parse are dropped too. A missing file is fine.
pub fn trim_metrics(path: &Path, step: usize) -> Result<()> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(TrainError::Io {
                path: path.to_path_buf(),
                source: e,
            });
        }
    };
    let kept: String = text
        .split_inclusive('\n')
        .filter(|line| line.ends_with('\n'))
        .filter(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                .is_some_and(|s| s as usize <= step)
        })
        .collect();
    if kept.len() == text.len() {
        return Ok(());
    }
    write_atomic(path, kept.as_bytes())
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = fs::File::create(path).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))?;
    Ok(())
}

impl Checkpoints {
    /// Checkpoints under `out/checkpoints`, keeping the newest `keep`.
    pub fn new(out: &Path, keep: usize) -> Self {
        Self {
            root: out.join("checkpoints"),
            keep: keep.max(1),
        }
    }

    /// The checkpoint root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Directory of the newest complete checkpoint, if any.
    pub fn latest(&self) -> Result<Option<PathBuf>> {
        let latest = self.root.join("latest");
        if !latest.exists() {
            return Ok(None);
        }
        let name = fs::read_to_string(&latest).map_err(io(&latest))?;
        let dir = self.root.join(name.trim());
        if !dir.join("state.json").exists() {
            return Err(TrainError::Checkpoint {
                path: dir,
                message: "`latest` points to a checkpoint without state.json".into(),
            });
        }
        Ok(Some(dir))
    }

    /// Writes a checkpoint atomically. `files` are (name, bytes) pairs written next to
    /// `state.json`.
    pub fn save(&self, state: &CheckpointState, files: &[(&str, Vec<u8>)]) -> Result<PathBuf> {
        let name = format!("step-{:06}", state.step);
        let tmp = self.root.join(format!("{name}.tmp"));
        let dir = self.root.join(&name);
        fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        for (file, bytes) in files {
            write_synced(&tmp.join(file), bytes)?;
        }
        let json = serde_json::to_vec_pretty(state).map_err(|e| TrainError::Checkpoint {
            path: tmp.clone(),
            message: e.to_string(),
        })?;
        write_synced(&tmp.join("state.json"), &json)?;
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(io(&dir))?;
        }
        fs::rename(&tmp, &dir).map_err(io(&dir))?;
        let latest_tmp = self.root.join("latest.tmp");
        write_synced(&latest_tmp, name.as_bytes())?;
        let latest = self.root.join("latest");
        fs::rename(&latest_tmp, &latest).map_err(io(&latest))?;
        self.prune(&name)?;
        Ok(dir)
    }

    /// Removes all but the newest `keep` complete checkpoints (never `current`).
    fn prune(&self, current: &str) -> Result<()> {
        let mut dirs: Vec<String> = fs::read_dir(&self.root)
            .map_err(io(&self.root))?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with("step-") && !n.ends_with(".tmp"))
            .collect();
        dirs.sort();
        let excess = dirs.len().saturating_sub(self.keep);
        for old in dirs.into_iter().take(excess) {
            if old != current {
                let p = self.root.join(&old);
                fs::remove_dir_all(&p).map_err(io(&p))?;
            }
        }
        Ok(())
    }

    /// Reads `state.json` of a checkpoint directory.
    pub fn read_state(dir: &Path) -> Result<CheckpointState> {
        let p = dir.join("state.json");
        let bytes = fs::read(&p).map_err(io(&p))?;
        serde_json::from_slice(&bytes).map_err(|e| TrainError::Checkpoint {
            path: p,
            message: format!("corrupt state.json: {e}"),
        })
    }
}
