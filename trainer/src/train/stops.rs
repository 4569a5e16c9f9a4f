//! How a run stops early: its loss stopped being a number, or Ctrl-C.

use super::RECIPE_FILE;
use super::checkpoint::{Checkpoints, State};
use super::export::export_best;
use anyhow::{Context, Result};
use burn::prelude::*;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

/// The error a run ends with when its loss stopped being a number: the learning rate is too
/// high for it (or the data holds something the network cannot digest). Nothing of the
/// diverged epoch is saved; the checkpoint before it and the best epoch's bundle stay.
#[derive(Debug)]
pub struct Diverged {
    pub run_dir: PathBuf,
    pub epoch: usize,
    /// 1-based step within the epoch; the number of steps when validation found it.
    pub step: usize,
    pub stage: String,
    pub lr: f64,
    /// The loss (or validation loss) that was not finite.
    pub loss: f64,
    /// Epochs the last good checkpoint holds (`None`: the run had none yet).
    pub last_good: Option<usize>,
    /// The best epoch's bundle, exported before stopping.
    pub bundle: Option<PathBuf>,
}

impl std::fmt::Display for Diverged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let run = self.run_dir.display();
        write!(
            f,
            "training diverged: the loss is {} at epoch {}, step {} (stage '{}', lr {:.3e}); \
             lower the stage's lr in {run}/{RECIPE_FILE} and continue with: petal train --resume {run}",
            self.loss, self.epoch, self.step, self.stage, self.lr
        )?;
        match self.last_good {
            Some(epochs) => write!(f, " (from the checkpoint after epoch {epochs}")?,
            None => write!(f, " (from the start: no epoch had finished")?,
        }
        match &self.bundle {
            Some(bundle) => write!(f, "; the best epoch's bundle is {})", bundle.display()),
            None => write!(f, ")"),
        }
    }
}

impl std::error::Error for Diverged {}

/// Set by Ctrl-C: the loop saves a checkpoint after the step in progress and stops.
pub(super) static INTERRUPT: AtomicBool = AtomicBool::new(false);

/// Ctrl-C stops the run cleanly after the current step; a second Ctrl-C exits at once (every
/// file is written atomically, so the last checkpoint stays whole).
pub fn handle_ctrl_c() -> Result<()> {
    ctrlc::set_handler(|| {
        if INTERRUPT.swap(true, Ordering::SeqCst) {
            std::process::exit(crate::exit::INTERRUPTED.into());
        }
        eprintln!("\ninterrupted: saving a checkpoint after this step (Ctrl-C again to quit now)");
    })
    .context("cannot install the Ctrl-C handler")
}

/// The error a run ends with when Ctrl-C stopped it.
#[derive(Debug)]
pub struct Interrupted {
    pub run_dir: PathBuf,
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "training interrupted; checkpoint saved. Continue with: petal train --resume {}",
            self.run_dir.display()
        )
    }
}

impl std::error::Error for Interrupted {}

/// Stops a run that diverged at `at`: exports the best epoch so far as the run's bundle (a
/// diverged run still leaves a usable model) and names the last good checkpoint.
pub(super) fn stop_diverged(
    mut at: Diverged,
    state: &State,
    ckpt: &Checkpoints,
    device: &Device,
) -> anyhow::Error {
    if state.best.is_some() {
        match export_best(&at.run_dir, device) {
            Ok(dir) => at.bundle = Some(dir),
            Err(e) => {
                return e.context("training diverged, and the best epoch could not be exported");
            }
        }
    }
    at.last_good = ckpt.exists().then(|| state.epochs_done());
    at.into()
}
