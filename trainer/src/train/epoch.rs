//! One epoch of a run: its batches in their seeded order, every step through the replicas,
//! losses read back in bulk, and what the epoch leaves in the run folder.

use super::Recipe;
use super::checkpoint::{Best, Checkpoints, EpochMetrics, State};
use super::losses::{PendingLosses, READ_LOSS_EVERY};
use super::metrics_file::write_metrics;
use super::parallel::Replicas;
use super::run_folder::{CURVES_FILE, METRICS_FILE};
use super::stops::INTERRUPT;
use crate::data::Sample;
use crate::data::augment::Augment;
use crate::data::batches::{Augmented, Batch, batch_seed, for_each_batch};
use crate::plot::{EpochPoint, training_curves_png};
use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use petal_shared::{Network, Preprocessor};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

/// What an epoch trains on and how its photos are prepared.
pub(super) struct EpochData<'a> {
    pub train: &'a [Sample],
    pub recipe: &'a Recipe,
    pub pre: &'a Preprocessor,
    pub augment: &'a Augment,
}

/// How an epoch's steps ended.
pub(super) struct EpochSteps {
    /// Ctrl-C stopped it after the step in progress.
    pub interrupted: bool,
    /// The first step (1-based) whose loss was not a number in f32, with that loss.
    pub diverged: Option<(usize, f32)>,
    /// Training images per second over the epoch (or its resumed part).
    pub images_per_s: f64,
}

/// Trains epoch `epoch` at learning rate `lr` from `state.step` on; `state` keeps the step
/// reached and the epoch's summed losses, `skipped` every unreadable file met.
pub(super) fn train(
    replicas: &mut Replicas,
    state: &mut State,
    skipped: &mut BTreeSet<PathBuf>,
    data: &EpochData<'_>,
    (epoch, lr): (usize, f64),
    bar: &ProgressBar,
) -> Result<EpochSteps> {
    let EpochData {
        train,
        recipe,
        pre,
        augment,
    } = *data;
    let chunks = epoch_batches(train, recipe, epoch, state.step);
    let mut interrupted = false;
    let mut diverged = None;
    let (started, seen_before) = (std::time::Instant::now(), state.partial_seen);
    let mut pending = PendingLosses::default();
    let f16 = replicas.optimization().scaler.is_some();
    replicas.epoch(lr, |stepper| {
        for_each_batch(
            chunks,
            state.step,
            pre,
            |step| {
                recipe.augment.then(|| Augmented {
                    augment,
                    seed: batch_seed(recipe.seed, epoch, step),
                })
            },
            |step, batch: Batch| {
                for (path, err) in &batch.failed {
                    if skipped.insert(path.clone()) {
                        log::warn!("skipping {}: {err}", path.display());
                    }
                }
                let seed = batch_seed(recipe.seed, epoch, step);
                for (loss, n) in stepper.step(batch, recipe.image_size, seed)? {
                    pending.push(loss, n, step + 1);
                }
                state.step = step + 1;
                bar.inc(1);
                let log_now = recipe.log_every > 0 && state.step.is_multiple_of(recipe.log_every);
                if log_now || pending.len() >= READ_LOSS_EVERY {
                    let bad = pending.add_to(state)?;
                    // In f16 a non-finite loss is the scaler's business (it skipped the step
                    // and lowered the scale); in f32 nothing brings the network back.
                    if bad.is_some() && !f16 {
                        diverged = bad;
                        return Ok(false);
                    }
                    let mean = state.partial_loss / state.partial_seen.max(1) as f64;
                    bar.set_message(format!("loss {mean:.4} lr {lr:.2e}"));
                    if log_now {
                        log::info!("epoch {epoch} step {}: train loss {mean:.4}", state.step);
                    }
                }
                interrupted = INTERRUPT.load(Ordering::SeqCst);
                Ok(!interrupted)
            },
        )
    })?;
    let bad = pending.add_to(state)?;
    if !f16 {
        diverged = diverged.or(bad);
    }
    let images_per_s =
        (state.partial_seen - seen_before) as f64 / started.elapsed().as_secs_f64().max(1e-9);
    Ok(EpochSteps {
        interrupted,
        diverged,
        images_per_s,
    })
}

/// The run's progress bar: every step of every epoch, `done` of them already.
pub(super) fn progress_bar(steps: usize, done: usize) -> ProgressBar {
    let bar = ProgressBar::new(steps as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(done as u64);
    bar
}

/// Epoch `epoch`'s batches of training samples, in its seeded order, from step `skip` on (a
/// resumed epoch continues where it stopped).
fn epoch_batches(train: &[Sample], recipe: &Recipe, epoch: usize, skip: usize) -> Vec<Vec<Sample>> {
    let mut order: Vec<usize> = (0..train.len()).collect();
    if recipe.shuffle {
        order.shuffle(&mut StdRng::seed_from_u64(batch_seed(
            recipe.seed,
            epoch,
            usize::MAX,
        )));
    }
    order
        .chunks(recipe.batch_size)
        .skip(skip)
        .map(|idx| idx.iter().map(|&i| train[i].clone()).collect())
        .collect()
}

/// After an epoch's validation: keeps the network if it is the best so far, logs the row to
/// `metrics.csv` and redraws the curves (so a long run can be watched from its folder).
pub(super) fn record_epoch(
    state: &mut State,
    row: EpochMetrics,
    valid: &Network,
    ckpt: &Checkpoints,
    out: &Path,
) -> Result<()> {
    // The first epoch, and then any with strictly higher accuracy (NaN: no validation
    // split, so the latest epoch is the best one).
    let improved = state
        .best
        .is_none_or(|b| row.val_accuracy > b.val_accuracy || row.val_accuracy.is_nan());
    if improved {
        state.best = Some(Best {
            epoch: row.epoch,
            val_accuracy: row.val_accuracy,
        });
        ckpt.save_best(valid)?;
    }
    state.metrics.push(row);
    write_metrics(&out.join(METRICS_FILE), &state.metrics)?;
    let points: Vec<EpochPoint> = state.metrics.iter().map(EpochMetrics::point).collect();
    if let Err(e) = training_curves_png(&points, &out.join(CURVES_FILE)) {
        log::warn!("cannot draw the training curves: {e:#}");
    }
    Ok(())
}
