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
    #[serde(with = "any_f64")]
    pub lr: f64,
    #[serde(with = "any_f64")]
    pub train_loss: f64,
    /// NaN when the run has no validation split.
    #[serde(with = "any_f64")]
    pub val_loss: f64,
    #[serde(with = "any_f64")]
    pub val_accuracy: f64,
    pub stage: String,
}

impl EpochMetrics {
    /// This epoch on the training curves.
    pub fn point(&self) -> crate::plot::EpochPoint {
        crate::plot::EpochPoint {
            epoch: self.epoch,
            train_loss: self.train_loss,
            val_loss: self.val_loss,
            val_accuracy: self.val_accuracy,
        }
    }
}

/// The best epoch so far.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Best {
    pub epoch: usize,
    #[serde(with = "any_f64")]
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
    #[serde(with = "any_f64")]
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

/// Any `f64`, NaN and infinities included, in a form that reads back. JSON has no number for
/// them and serde_json writes them as `null`, which then fails to read as a number: a run
/// without a validation split (validation loss NaN) would not read its own `state.json`. Finite
/// values stay JSON numbers; the others are written as the strings `"NaN"`, `"inf"` and
/// `"-inf"` (the spellings Rust and the `csv` file of the same rows use); `null` from an older
/// file reads as NaN. In CSV the field is the number's text, as before.
mod any_f64 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(value: &f64, s: S) -> Result<S::Ok, S::Error> {
        if value.is_finite() {
            s.serialize_f64(*value)
        } else {
            s.serialize_str(&value.to_string())
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Number(f64),
        Text(String),
        Null(()),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Number(v) => Ok(v),
            Repr::Null(()) => Ok(f64::NAN),
            Repr::Text(text) => match text.trim() {
                "NaN" | "nan" => Ok(f64::NAN),
                "inf" | "+inf" | "infinity" => Ok(f64::INFINITY),
                "-inf" | "-infinity" => Ok(f64::NEG_INFINITY),
                other => other
                    .parse()
                    .map_err(|_| D::Error::custom(format!("expected a number, got {other:?}"))),
            },
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(train_loss: f64, val_loss: f64) -> EpochMetrics {
        EpochMetrics {
            epoch: 1,
            lr: 1e-3,
            train_loss,
            val_loss,
            val_accuracy: 0.5,
            stage: "finetune".into(),
        }
    }

    /// NaN and infinities are written as named values and read back as themselves: the state
    /// file of a run without validation (or of one that diverged) is still readable.
    #[test]
    fn state_with_non_finite_values_reads_back() {
        let state = State {
            partial_loss: f64::INFINITY,
            best: Some(Best {
                epoch: 1,
                val_accuracy: f64::NAN,
            }),
            metrics: vec![row(f64::NEG_INFINITY, f64::NAN), row(0.25, 0.5)],
            ..State::default()
        };
        let text = serde_json::to_string_pretty(&state).unwrap();
        assert!(!text.contains("null"), "{text}");
        assert!(text.contains("\"val_loss\": \"NaN\""), "{text}");
        assert!(text.contains("\"partial_loss\": \"inf\""), "{text}");
        assert!(text.contains("\"train_loss\": \"-inf\""), "{text}");
        let back: State = serde_json::from_str(&text).unwrap();
        assert_eq!(back.partial_loss, f64::INFINITY);
        assert!(back.best.unwrap().val_accuracy.is_nan());
        assert_eq!(back.metrics[0].train_loss, f64::NEG_INFINITY);
        assert!(back.metrics[0].val_loss.is_nan());
        assert_eq!(back.metrics[1], state.metrics[1]);
    }

    /// A file written before non-finite values were named (`null`) still reads; anything else
    /// that is not a number is refused with what was found.
    #[test]
    fn null_reads_as_nan_and_other_text_is_refused() {
        let mut value = serde_json::to_value(row(0.5, 0.5)).unwrap();
        value["val_loss"] = serde_json::Value::Null;
        let back: EpochMetrics = serde_json::from_value(value.clone()).unwrap();
        assert!(back.val_loss.is_nan());
        value["val_loss"] = "lots".into();
        let err = serde_json::from_value::<EpochMetrics>(value).unwrap_err();
        assert!(err.to_string().contains("\"lots\""), "{err}");
    }
}
