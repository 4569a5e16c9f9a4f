//! Safe, atomic unpacking of a `.tar.gz` that holds one top-level folder.
//!
//! Everything is extracted into a temporary folder beside the target, and the top-level folder
//! is renamed into place only when the whole archive came out cleanly: the target either does
//! not exist or is complete. Entries that would land outside the target (`..`, absolute paths)
//! and links (which could point anywhere) are refused rather than skipped, because an archive
//! that contains them is not the one we meant to download.

use anyhow::{Context, Result, bail};
use flate2::read::GzDecoder;
use std::fs::{self, File};
use std::io::BufReader;
use std::path::{Component, Path, PathBuf};
use tar::EntryType;

/// Unpacks `archive` and moves its `top` folder to `parent/top`; returns that path.
pub fn unpack_tgz(archive: &Path, parent: &Path, top: &str) -> Result<PathBuf> {
    let target = parent.join(top);
    if target.exists() {
        bail!("{} already exists", target.display());
    }
    // Beside the target, so the final rename stays on one file system (and is atomic); removed
    // with everything in it if anything below fails.
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{top}.unpack-"))
        .tempdir_in(parent)
        .with_context(|| format!("cannot create a temporary folder in {}", parent.display()))?;
    let file = File::open(archive).with_context(|| format!("cannot read {}", archive.display()))?;
    let mut tar = tar::Archive::new(GzDecoder::new(BufReader::new(file)));
    let bad = |what: String| anyhow::anyhow!("{}: {what}", archive.display());
    let entries = tar
        .entries()
        .map_err(|e| bad(format!("not a tar.gz archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("corrupt archive: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| bad(format!("corrupt entry name: {e}")))?
            .into_owned();
        check_entry_path(&path).map_err(|why| bad(format!("entry {}: {why}", path.display())))?;
        match entry.header().entry_type() {
            EntryType::Regular | EntryType::Continuous | EntryType::Directory => {}
            // pax metadata for the whole archive (e.g. `git archive`'s comment): not a file.
            EntryType::XGlobalHeader => continue,
            other => {
                return Err(bad(format!(
                    "entry {}: unsupported entry type {other:?} (only files and folders are unpacked)",
                    path.display()
                )));
            }
        }
        let unpacked = entry
            .unpack_in(tmp.path())
            .with_context(|| format!("{}: cannot unpack {}", archive.display(), path.display()))?;
        // `unpack_in` returns false for paths it refuses to write; `check_entry_path` should
        // have caught them already.
        if !unpacked {
            return Err(bad(format!(
                "entry {} points outside the target folder",
                path.display()
            )));
        }
    }
    let unpacked = tmp.path().join(top);
    if !unpacked.is_dir() {
        return Err(bad(format!("no top-level {top}/ folder in the archive")));
    }
    fs::rename(&unpacked, &target)
        .with_context(|| format!("cannot move {} to {}", unpacked.display(), target.display()))?;
    Ok(target)
}

/// Refuses entry paths that are absolute or climb out with `..`.
fn check_entry_path(path: &Path) -> Result<(), &'static str> {
    for component in path.components() {
        match component {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err("contains '..' (points outside the target folder)"),
            Component::RootDir | Component::Prefix(_) => {
                return Err("is an absolute path (points outside the target folder)");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_entry_path;
    use std::path::Path;

    #[test]
    fn entry_paths_that_escape_are_refused() {
        assert!(check_entry_path(Path::new("flower_photos/daisy/1.jpg")).is_ok());
        assert!(check_entry_path(Path::new("./flower_photos/LICENSE.txt")).is_ok());
        assert!(check_entry_path(Path::new("../evil")).is_err());
        assert!(check_entry_path(Path::new("flower_photos/../../evil")).is_err());
        assert!(check_entry_path(Path::new("/etc/evil")).is_err());
    }
}
