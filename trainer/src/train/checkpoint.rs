//! Checkpoints in the run folder, written so that a crash at any moment leaves a usable one:
//!
//! ```text
//! RUN_DIR/checkpoints/
//!   state.json                 where the run stands; written last, atomically
//!   e0003-s00000.model.bpk     the network (burnpack, f32, parameter ids kept for the optimiser)
//!   e0003-s00000.optim.bpk     the optimiser's state
//!   best.bpk                   the network of the best epoch by validation accuracy
//! ```
//! Files that `state.json` no longer names are deleted after it is written.

use super::scaler::LossScaler;
use anyhow::{Context, Result, bail};
use burn::optim::ModuleOptimizer;
use burn::prelude::*;
use burn::store::BurnpackStore;
use burn::tensor::Bytes;
use petal_shared::fs::write_atomic;
use petal_shared::{Network, NetworkConfig};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const STATE_FILE: &str = "state.json";
pub const BEST_FILE: &str = "best.bpk";
const FORMAT: u32 = 1;

/// One row of `metrics.csv`; the field order is the file's column order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub lr: f64,
    pub train_loss: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    pub stage: String,
}

/// The best epoch so far.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Best {
    pub epoch: usize,
    pub val_accuracy: f64,
}

/// Where a run stands. The shuffling and augmentation are pure functions of (seed, epoch,
/// step), so this is all the random state a resumed run needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub format: u32,
    /// Index of the stage in progress (`stages.len()` when training has finished).
    pub stage: usize,
    /// Epochs finished within that stage.
    pub stage_epoch: usize,
    /// Steps finished within the epoch in progress (non-zero after an interruption).
    pub step: usize,
    /// Sum of the losses and the number of images of those steps.
    pub partial_loss: f64,
    pub partial_seen: usize,
    pub best: Option<Best>,
    pub metrics: Vec<EpochMetrics>,
    /// Files skipped as unreadable so far.
    pub skipped: Vec<PathBuf>,
    pub model_file: String,
    pub optim_file: String,
    /// The loss scale of a mixed-precision run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaler: Option<LossScaler>,
}

impl Default for State {
    /// A run that has not trained yet.
    fn default() -> Self {
        Self {
            format: FORMAT,
            stage: 0,
            stage_epoch: 0,
            step: 0,
            partial_loss: 0.0,
            partial_seen: 0,
            best: None,
            metrics: Vec::new(),
            skipped: Vec::new(),
            model_file: String::new(),
            optim_file: String::new(),
            scaler: None,
        }
    }
}

impl State {
    /// Epochs finished over all stages.
    pub fn epochs_done(&self) -> usize {
        self.metrics.len()
    }
}

/// The checkpoint folder of a run.
pub struct Checkpoints {
    dir: PathBuf,
}

fn model_bytes(model: &Network) -> Result<Vec<u8>> {
    let mut store = BurnpackStore::from_bytes(None);
    model
        .save_tensors(&mut store)
        .map_err(|e| anyhow::anyhow!("cannot serialise the network: {e}"))?;
    Ok(store
        .get_bytes()
        .map_err(|e| anyhow::anyhow!("cannot serialise the network: {e}"))?
        .to_vec())
}

impl Checkpoints {
    pub fn new(run_dir: &Path) -> Result<Self> {
        let dir = run_dir.join("checkpoints");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Self { dir })
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.dir.join(name);
        write_atomic(&path, bytes).with_context(|| format!("cannot write {}", path.display()))
    }

    fn read(&self, name: &str) -> Result<Vec<u8>> {
        let path = self.dir.join(name);
        std::fs::read(&path).with_context(|| format!("cannot read checkpoint {}", path.display()))
    }

    /// Saves the network, the optimiser and then `state` (which is updated to name them).
    pub fn save(&self, state: &mut State, model: &Network, optim: &ModuleOptimizer) -> Result<()> {
        let stem = format!("e{:04}-s{:05}", state.epochs_done() + 1, state.step);
        state.model_file = format!("{stem}.model.bpk");
        state.optim_file = format!("{stem}.optim.bpk");
        self.write(&state.model_file, &model_bytes(model)?)?;
        let optim_bytes = optim
            .into_bytes()
            .map_err(|e| anyhow::anyhow!("cannot serialise the optimiser: {e}"))?;
        self.write(&state.optim_file, &optim_bytes)?;
        self.write(STATE_FILE, serde_json::to_string_pretty(state)?.as_bytes())?;
        // Only now are older checkpoints garbage.
        for entry in std::fs::read_dir(&self.dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let ours = name.ends_with(".model.bpk") || name.ends_with(".optim.bpk");
            if ours && name != state.model_file && name != state.optim_file {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(())
    }

    pub fn save_best(&self, model: &Network) -> Result<()> {
        self.write(BEST_FILE, &model_bytes(model)?)
    }

    pub fn exists(&self) -> bool {
        self.dir.join(STATE_FILE).is_file()
    }

    pub fn load_state(&self) -> Result<State> {
        let state: State = serde_json::from_slice(&self.read(STATE_FILE)?)
            .with_context(|| format!("{} is damaged", self.dir.join(STATE_FILE).display()))?;
        if state.format != FORMAT {
            bail!(
                "{} has checkpoint format {}; this petal reads format {FORMAT}",
                self.dir.display(),
                state.format
            );
        }
        Ok(state)
    }

    /// A network from a checkpoint file, with the parameter ids the optimiser state refers to.
    pub fn load_model(
        &self,
        file: &str,
        config: &NetworkConfig,
        device: &Device,
    ) -> Result<Network> {
        let mut model = config.init(device);
        let mut store = BurnpackStore::from_bytes(Some(Bytes::from_bytes_vec(self.read(file)?)));
        let result = model
            .load_tensors(&mut store)
            .map_err(|e| anyhow::anyhow!("cannot load {}: {e}", self.dir.join(file).display()))?;
        if !result.missing.is_empty() || !result.errors.is_empty() {
            bail!(
                "{} does not fit a {} network with {} classes",
                self.dir.join(file).display(),
                config.arch,
                config.num_classes
            );
        }
        Ok(model)
    }

    pub fn load_optim(&self, file: &str, fresh: ModuleOptimizer) -> Result<ModuleOptimizer> {
        fresh
            .from_bytes(Bytes::from_bytes_vec(self.read(file)?))
            .map_err(|e| anyhow::anyhow!("cannot load {}: {e}", self.dir.join(file).display()))
    }
}
