//! Bundles on disk. Every file is written atomically (temporary file, fsync, rename) and
//! `petal.json` last, so a folder with `petal.json` always holds a complete bundle.

use super::{Bundle, BundleError, META_FILE};
use crate::fs::write_atomic;
use burn::prelude::*;
use std::path::Path;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl Bundle {
    /// Loads the bundle in folder `dir` (or the folder holding `dir` if it names `petal.json`).
    pub fn load(dir: &Path, device: &Device) -> Result<Self, BundleError> {
        let dir = if dir.file_name().is_some_and(|n| n == META_FILE) {
            dir.parent().unwrap_or(Path::new("."))
        } else {
            dir
        };
        let meta_path = dir.join(META_FILE);
        let meta_json = std::fs::read(&meta_path).map_err(io_err(&meta_path))?;
        let meta = super::BundleMeta::from_json(&meta_json).map_err(|e| match e {
            BundleError::Metadata(m) => {
                BundleError::Metadata(format!("{}: {m}", meta_path.display()))
            }
            other => other,
        })?;
        let weights_path = dir.join(&meta.weights);
        let weights = std::fs::read(&weights_path).map_err(io_err(&weights_path))?;
        Self::from_bytes(&meta_json, weights, device)
    }

    /// Writes the bundle into folder `dir` (created if needed), replacing any bundle there.
    pub fn save(&self, dir: &Path) -> Result<(), BundleError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let weights = self.weights_bytes()?;
        let weights_path = dir.join(&self.meta.weights);
        write_atomic(&weights_path, &weights).map_err(io_err(&weights_path))?;
        let meta_path = dir.join(META_FILE);
        write_atomic(&meta_path, self.meta.to_json().as_bytes()).map_err(io_err(&meta_path))?;
        Ok(())
    }
}
