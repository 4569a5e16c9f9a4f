//! One writer per run folder: `petal train` and `petal train --resume` hold an exclusive OS
//! lock on `RUN_DIR/train.lock` while they run. The operating system releases it when the
//! process ends however it ends (`kill -9` included), so a stale lock never blocks a resume,
//! and a second writer is refused at once instead of interleaving its checkpoints with the
//! first one's. Readers (`eval`, `export`, `predict` on the run's files) take no lock: every
//! file they read is replaced atomically.
//!
//! The lock is `flock`-style (std's `File::try_lock`); the file also holds the holder's process
//! id, so the refusal can say who holds it.

use anyhow::{Context, Result, bail};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;

pub const LOCK_FILE: &str = "train.lock";

/// The held lock of a run folder; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// Takes the lock of `run_dir` (which must exist), or says which process holds it.
    pub fn acquire(run_dir: &Path) -> Result<Self> {
        let path = run_dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => bail!(held_by(run_dir, &path, &mut file)),
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        let pid = std::process::id();
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{pid}"))
            .and_then(|()| file.flush())
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Self { _file: file })
    }
}

/// The refusal: the folder, and the holder's process id when it has written it yet.
fn held_by(run_dir: &Path, path: &Path, file: &mut File) -> String {
    let mut text = String::new();
    let holder = match file.read_to_string(&mut text).ok().map(|_| text.trim()) {
        Some(pid) if !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) => {
            format!("process {pid}")
        }
        _ => "another process".to_string(),
    };
    format!(
        "{} is being trained by {holder} (it holds {}): one run folder takes one writer; wait \
         for it to finish or stop it, then continue with --resume {0}",
        run_dir.display(),
        path.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A second lock on the same folder is refused naming the holder; it is free again once
    /// the first is dropped. (flock locks belong to the open file, so this holds within one
    /// process as between two; the integration tests check two processes.)
    #[test]
    fn a_second_writer_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path()).unwrap();
        let err = RunLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&format!("process {}", std::process::id()))
                && err.contains(&dir.path().display().to_string())
                && err.contains(LOCK_FILE),
            "{err}"
        );
        drop(first);
        RunLock::acquire(dir.path()).unwrap();
    }
}
