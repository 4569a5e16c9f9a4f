//! A run's networks as bundles: the best epoch or the last checkpoint.

use super::checkpoint::{self, Checkpoints};
use super::{RECIPE_FILE, Recipe};
use crate::data::split;
use anyhow::{Result, bail};
use burn::prelude::*;
use petal_shared::{Bundle, BundleMeta, Network, NetworkConfig};
use std::path::{Path, PathBuf};

/// Which saved network of a run to export (`petal export --checkpoint`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Snapshot {
    /// The epoch with the best validation accuracy.
    Best,
    /// The last checkpoint.
    Last,
}

/// A run's network (on `device`, inference mode) and the bundle metadata that describes it.
pub fn exported(run_dir: &Path, which: Snapshot, device: &Device) -> Result<(BundleMeta, Network)> {
    if !run_dir.join(RECIPE_FILE).is_file() {
        bail!(
            "{} is not a run folder: no {RECIPE_FILE}",
            run_dir.display()
        );
    }
    let recipe = Recipe::load(&run_dir.join(RECIPE_FILE))?;
    let split_path = run_dir.join("split.json");
    if !split_path.is_file() {
        bail!("{} is not a run folder: no split.json", run_dir.display());
    }
    let classes = split::SplitFile::read(&split_path)?.classes;
    let ckpt = Checkpoints::new(run_dir)?;
    let state = ckpt.load_state()?;
    let (file, epoch) = match which {
        Snapshot::Best => (
            checkpoint::BEST_FILE.to_string(),
            state.best.map_or(0, |b| b.epoch),
        ),
        Snapshot::Last => (state.model_file.clone(), state.epochs_done()),
    };
    let config = NetworkConfig::new(recipe.arch, classes.len());
    let model = ckpt.load_model(&file, &config, device)?;
    let mut meta = BundleMeta::new(recipe.arch, classes, recipe.image_size, recipe.resize);
    meta.source = format!("petal train {} (epoch {epoch})", run_dir.display());
    Ok((meta, model))
}

/// Writes the best epoch's network as `out/bundle`.
pub(super) fn export_best(out: &Path, device: &Device) -> Result<PathBuf> {
    let (meta, model) = exported(out, Snapshot::Best, device)?;
    let dir = out.join("bundle");
    Bundle::new(meta, model)?.save(&dir)?;
    Ok(dir)
}
