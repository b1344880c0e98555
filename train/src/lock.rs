//! One writer per run directory: an OS advisory lock on `DIR/.lock`.
//!
//! [`RunLock::acquire`] takes an exclusive lock (`flock` on Unix, `LockFileEx` on Windows,
//! through `std::fs::File::try_lock`) on `DIR/.lock` and writes the holder's pid and start
//! time into it. A second run on the same directory, in this process or another, gets
//! [`TrainError::Locked`] naming the directory and the holder instead of interleaving its
//! checkpoints, metrics and `run.json` with the first. The operating system releases the lock
//! when the holder exits, however it exits (a SIGKILLed run included), so a `.lock` file left
//! behind never blocks the next run: only a live holder does. The file itself stays (removing
//! it would let two runs lock two different files of the same name).
//!
//! [`crate::workflow::fit`] holds the lock of its output directory for the whole run; the
//! command line (`xtask label`, `router`, `eval`) holds it on the directories it writes.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// The lock file's name inside a run directory.
pub const LOCK_FILE: &str = ".lock";

/// Who holds a run directory (the contents of its `.lock`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    /// The holder's process id.
    pub pid: u32,
    /// When it took the lock, UTC, RFC 3339 (`2026-12-03T18:40:00Z`).
    pub started: String,
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {}, started {}", self.pid, self.started)
    }
}

/// An exclusive lock on a run directory, released when dropped (or when the process ends).
#[derive(Debug)]
pub struct RunLock {
    file: File,
    dir: PathBuf,
}

impl RunLock {
    /// Creates `dir` if needed and locks it, or fails at once with [`TrainError::Locked`]
    /// when another run holds it (no waiting).
    pub fn acquire(dir: &Path) -> Result<RunLock> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TrainError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(TrainError::Locked {
                    dir: dir.to_path_buf(),
                    holder: holder_of(&path),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(&path)(e)),
        }
        let me = LockHolder {
            pid: std::process::id(),
            started: utc_now(),
        };
        let json = serde_json::to_string(&me).map_err(|e| TrainError::Model(e.to_string()))?;
        file.set_len(0).map_err(io(&path))?;
        file.write_all(json.as_bytes()).map_err(io(&path))?;
        file.flush().map_err(io(&path))?;
        Ok(RunLock {
            file,
            dir: dir.to_path_buf(),
        })
    }

    /// The locked directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Clear the holder before the lock goes (closing the file releases it), so a later
        // reader never names a finished run.
        let _ = self.file.set_len(0);
    }
}

/// The holder recorded in a lock file, as the error shows it.
fn holder_of(path: &Path) -> String {
    let mut text = String::new();
    let read = File::open(path).and_then(|mut f| f.read_to_string(&mut text));
    match read
        .ok()
        .and_then(|_| serde_json::from_str::<LockHolder>(&text).ok())
    {
        Some(h) => h.to_string(),
        // The holder has locked but not yet written its pid.
        None => format!("pid unknown: {} names no holder yet", path.display()),
    }
}

/// Now, UTC, RFC 3339 to the second.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

/// Seconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ`.
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_256_000 + 67_200), "2026-12-03T18:40:00Z");
    }

    #[test]
    fn a_second_lock_is_refused_until_the_first_is_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        let first = RunLock::acquire(&dir).unwrap();
        assert_eq!(first.dir(), dir);
        let holder: LockHolder =
            serde_json::from_slice(&std::fs::read(dir.join(LOCK_FILE)).unwrap()).unwrap();
        assert_eq!(holder.pid, std::process::id());
        let err = RunLock::acquire(&dir).unwrap_err();
        assert!(matches!(&err, TrainError::Locked { dir: d, .. } if *d == dir));
        assert_eq!(
            err.to_string(),
            format!(
                "{} is in use by another run (pid {}, started {}); wait for it to finish or \
                 choose another output directory",
                dir.display(),
                std::process::id(),
                holder.started
            )
        );
        drop(first);
        // Released: the file stays, emptied, and the next run takes it.
        assert_eq!(std::fs::read(dir.join(LOCK_FILE)).unwrap(), b"");
        let again = RunLock::acquire(&dir).unwrap();
        drop(again);
    }

    #[test]
    fn a_stale_lock_file_does_not_block() {
        // What a SIGKILLed run leaves: its record, but no lock (the OS dropped it).
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join(LOCK_FILE),
            r#"{"pid":4194304,"started":"2026-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        let lock = RunLock::acquire(tmp.path()).unwrap();
        let holder: LockHolder =
            serde_json::from_slice(&std::fs::read(tmp.path().join(LOCK_FILE)).unwrap()).unwrap();
        assert_eq!(holder.pid, std::process::id());
        drop(lock);
    }

    #[test]
    fn a_holder_that_has_not_written_yet_is_reported_as_unknown() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(LOCK_FILE);
        let raw = File::create(&path).unwrap();
        raw.try_lock().unwrap();
        let err = RunLock::acquire(tmp.path()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{} is in use by another run (pid unknown: {} names no holder yet); wait for it \
                 to finish or choose another output directory",
                tmp.path().display(),
                path.display()
            )
        );
    }
}
