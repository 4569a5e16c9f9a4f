//! A run folder: what it holds (`run.json`, `recipe.toml`, `split.json`, `checkpoints/`,
//! `metrics.csv`, `curves.png`, `bundle/`), and the network a run starts or continues from.

use super::Recipe;
use super::checkpoint::{self, Checkpoints, State};
use anyhow::{Context, Result, bail};
use burn::prelude::*;
use petal_shared::import::{Head, load_torchvision};
use petal_shared::{Network, NetworkConfig};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const RUN_FILE: &str = "run.json";
pub const RECIPE_FILE: &str = "recipe.toml";
pub const METRICS_FILE: &str = "metrics.csv";
pub const CURVES_FILE: &str = "curves.png";

/// What a run trains on, recorded in `run.json` so that `--resume` needs nothing else.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    pub data: PathBuf,
    /// torchvision weights the run started from; `None` trains from scratch.
    pub pretrained: Option<PathBuf>,
}

impl RunSpec {
    /// The spec `run_dir` was started with.
    pub fn load(run_dir: &Path) -> Result<Self> {
        let path = run_dir.join(RUN_FILE);
        let bytes = std::fs::read(&path)
            .with_context(|| format!("{} is not a run folder: no {RUN_FILE}", run_dir.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("{} is damaged", path.display()))
    }
}

/// A new run never overwrites one that has a checkpoint.
pub(super) fn refuse_a_started_run(out: &Path) -> Result<()> {
    if out
        .join("checkpoints")
        .join(checkpoint::STATE_FILE)
        .exists()
    {
        bail!(
            "{} already holds a training run: continue it with --resume {0}, or pick another --out",
            out.display()
        );
    }
    Ok(())
}

/// The network the run continues from: the checkpoint when resuming, else torchvision's
/// weights with a new head, else a fresh network — seeded, so it starts the same every run.
pub(super) fn starting_model(
    spec: &RunSpec,
    recipe: &Recipe,
    state: &State,
    ckpt: &Checkpoints,
    config: &NetworkConfig,
    device: &Device,
) -> Result<Network> {
    device.seed(recipe.seed);
    if !state.model_file.is_empty() {
        // Progress goes to stderr with the progress bar; stdout carries results (and stays
        // clean JSON for `petal demo --json`).
        eprintln!(
            "resuming after epoch {} (stage '{}', step {})",
            state.epochs_done(),
            recipe.stages.get(state.stage).map_or("done", |s| &s.name),
            state.step
        );
        return ckpt.load_model(&state.model_file, config, device);
    }
    Ok(match &spec.pretrained {
        Some(path) => {
            let head = if recipe.keep_head {
                Head::Keep
            } else {
                Head::Replace
            };
            load_torchvision(path, recipe.arch, config.num_classes, head, device)?.0
        }
        None => config.init(device),
    })
}
