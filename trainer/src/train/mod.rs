//! The training loop: the recipe's stages in order (frozen backbone → fine-tuning → SGD
//! polish), augmented batches decoded ahead on all cores, validation at each epoch end,
//! `metrics.csv`, checkpoints after every epoch (and on Ctrl-C), and the best epoch exported
//! as a bundle.
//!
//! This module orchestrates: stages, epochs, checkpoints, metrics, interruption. An epoch's
//! steps are in `epoch`, one step in `step`, validation in `validation`, what a run folder
//! holds in `run_folder` (everything a resumed run needs).

pub mod checkpoint;
mod epoch;
mod export;
pub mod lock;
mod losses;
mod metrics_file;
pub mod parallel;
pub mod recipe;
mod run_folder;
pub mod scaler;
mod stage;
pub mod step;
mod stops;
mod validation;

pub use crate::data::split::Split;
pub use checkpoint::EpochMetrics;
pub use export::{Snapshot, exported};
pub use parallel::Placement;
pub use recipe::Recipe;
pub use run_folder::{CURVES_FILE, METRICS_FILE, RECIPE_FILE, RUN_FILE, RunSpec};
pub use stops::{Diverged, Interrupted, handle_ctrl_c};

use crate::backend::PrecisionChoice;
use crate::data::Sample;
use crate::data::augment::Augment;
use crate::data::split;
use anyhow::{Context, Result, bail};
use burn::prelude::*;
use checkpoint::{Checkpoints, State};
use epoch::{EpochData, progress_bar, record_epoch};
use parallel::Replicas;
use petal_shared::fs::write_atomic;
use petal_shared::{Bundle, Network, NetworkConfig, Precision, Preprocessor};
use run_folder::{refuse_a_started_run, starting_model};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use step::Optimization;
use stops::stop_diverged;
use validation::evaluate;

/// The outcome of a run.
#[derive(Debug)]
pub struct TrainSummary {
    pub epochs: usize,
    pub best_epoch: usize,
    pub best_val_accuracy: f64,
    pub test_accuracy: Option<f64>,
    pub skipped_files: usize,
    pub bundle: PathBuf,
}

/// Checks the data folder (layout, classes, images) without training.
pub fn check_data(spec: &RunSpec, recipe: &Recipe) -> Result<()> {
    split::open(&spec.data, recipe.holdout()).map(|_| ())
}

/// Starts a new run in `out` (which must not hold one already).
pub fn start(
    spec: &RunSpec,
    recipe: &Recipe,
    out: &Path,
    placement: &Placement,
) -> Result<TrainSummary> {
    refuse_a_started_run(out)?;
    recipe.validate()?;
    // A bad data folder is an error before anything is written.
    check_data(spec, recipe)?;
    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create run folder {}", out.display()))?;
    let _lock = lock::RunLock::acquire(out)?;
    // Again under the lock: a run started in the same folder a moment ago has written its
    // first checkpoint by now, or still holds the lock.
    refuse_a_started_run(out)?;
    let write = |name: &str, text: &str| {
        let path = out.join(name);
        write_atomic(&path, text.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))
    };
    write(RUN_FILE, &serde_json::to_string_pretty(spec)?)?;
    write(RECIPE_FILE, &recipe.to_toml())?;
    run(spec, recipe, out, placement, false)
}

/// Continues the run in `run_dir` from its last checkpoint (or from the start if it stopped
/// before the first one).
/// `precision`: what the command line asked for; a run keeps the number format it started in
/// (its checkpoints hold that format's optimiser state and loss scale), so only `auto` or the
/// recorded one are accepted.
pub fn resume(
    run_dir: &Path,
    placement: &Placement,
    precision: PrecisionChoice,
) -> Result<TrainSummary> {
    let spec = RunSpec::load(run_dir)?;
    let _lock = lock::RunLock::acquire(run_dir)?;
    let recipe = Recipe::load(&run_dir.join(RECIPE_FILE))?;
    if precision != PrecisionChoice::Auto && precision != recipe.precision {
        bail!(
            "{} trains in {} (its {RECIPE_FILE}), and a resumed run keeps its number format: \
             resume without --precision {}, or start a new run",
            run_dir.display(),
            recipe.precision.name(),
            precision.name()
        );
    }
    run(&spec, &recipe, run_dir, placement, true)
}

fn run(
    spec: &RunSpec,
    recipe: &Recipe,
    out: &Path,
    placement: &Placement,
    resuming: bool,
) -> Result<TrainSummary> {
    // Validation, checkpoints and export run on the first device.
    let device = &placement.devices[0];
    let (classes, split) = split::open(&spec.data, recipe.holdout())?;
    split.write_or_check(&out.join("split.json"), &spec.data, &classes, resuming)?;
    log::info!(
        "split: {} train, {} val, {} test",
        split.train.len(),
        split.val.len(),
        split.test.len()
    );

    let pre = Preprocessor::new(recipe.resize, recipe.image_size)?;
    let augment = Augment::recipe(recipe.image_size as u32);
    let train_device = device.clone().autodiff();
    let config = NetworkConfig::new(recipe.arch, classes.len());
    let ckpt = Checkpoints::new(out)?;
    let mut state = if resuming && ckpt.exists() {
        ckpt.load_state()?
    } else {
        State::default()
    };
    let precision = recipe.precision.on(device)?;
    let mut model = starting_model(spec, recipe, &state, &ckpt, &config, &train_device)?
        .with_precision(precision);
    if !recipe.stochastic_depth {
        model = model.without_stochastic_depth();
    }
    let optimization = Optimization {
        // Replaced by the first stage's optimiser before the first step.
        optimizer: stage::optimizer(recipe.stages.first().context("the recipe has no stage")?),
        // f16 gradients need the loss scaled up (see `scaler`); f32 ones do not.
        scaler: (precision == Precision::F16).then(|| state.scaler.clone().unwrap_or_default()),
    };
    let mut replicas = Replicas::new(
        model,
        optimization,
        placement
            .devices
            .iter()
            .map(|d| d.clone().autodiff())
            .collect(),
        placement.collective,
    )?;

    let steps_per_epoch = split.train.len().div_ceil(recipe.batch_size);
    let total_epochs: usize = recipe.stages.iter().map(|s| s.epochs).sum();
    let bar = progress_bar(
        steps_per_epoch * total_epochs,
        steps_per_epoch * state.epochs_done() + state.step,
    );
    let mut skipped: BTreeSet<PathBuf> = state.skipped.iter().cloned().collect();
    // The stage the replicas' optimiser serves; `None` before the first stage sets it.
    let mut optimizer_stage: Option<usize> = None;

    while state.stage < recipe.stages.len() {
        let stage = &recipe.stages[state.stage];
        let schedule = recipe.schedule(state.stage);
        if state.stage_epoch >= stage.epochs {
            state.stage += 1;
            state.stage_epoch = 0;
            continue;
        }
        replicas.map_models(|model| stage::set_trainable(model, stage.trainable));
        // The optimiser (with the stage it serves) carries over into a stage that continues the
        // schedule. A checkpoint's optimiser belongs to the stage in progress, or to the one
        // before when the checkpoint was taken at a stage boundary.
        let mid_stage = state.stage_epoch > 0 || state.step > 0;
        match optimizer_stage {
            Some(s) if s == state.stage || schedule.continues => {}
            None if !state.optim_file.is_empty() && (mid_stage || schedule.continues) => {
                replicas
                    .set_optimizer(ckpt.load_optim(&state.optim_file, stage::optimizer(stage))?);
            }
            _ => replicas.set_optimizer(stage::optimizer(stage)),
        }
        optimizer_stage = Some(state.stage);

        let epoch = state.epochs_done() + 1;
        let lr = schedule.lr_at(state.stage_epoch);
        bar.set_prefix(format!("epoch {epoch}/{total_epochs} {}", stage.name));
        let data = EpochData {
            train: &split.train,
            recipe,
            pre: &pre,
            augment: &augment,
        };
        let steps = epoch::train(
            &mut replicas,
            &mut state,
            &mut skipped,
            &data,
            (epoch, lr),
            &bar,
        )?;
        // Where this epoch stopped being a number, if it did.
        let diverged_at = |step, loss| Diverged {
            run_dir: out.to_path_buf(),
            epoch,
            step,
            stage: stage.name.clone(),
            lr,
            loss,
            last_good: None,
            bundle: None,
        };
        if let Some((step, loss)) = steps.diverged {
            bar.abandon();
            return Err(stop_diverged(
                diverged_at(step, f64::from(loss)),
                &state,
                &ckpt,
                device,
            ));
        }
        let skipped_before = state.scaler.as_ref().map_or(0, |s| s.skipped_steps);
        let scaler = replicas.optimization().scaler.clone();
        state.scaler.clone_from(&scaler);
        // The replicas' epoch left the leader's BatchNorm statistics current.
        let model = replicas.model();
        state.skipped = skipped.iter().cloned().collect();
        if steps.interrupted {
            bar.abandon();
            ckpt.save(&mut state, model, &replicas.optimization().optimizer)?;
            return Err(Interrupted {
                run_dir: out.to_path_buf(),
            }
            .into());
        }

        let images_per_s = steps.images_per_s;
        let valid = model.valid();
        let validation = evaluate(&valid, &split.val, &pre, recipe.batch_size, device)?;
        // No validation split (or no readable image in it): NaN, the best epoch is the last.
        let (val_loss, val_accuracy) = validation.unwrap_or((f64::NAN, f64::NAN));
        let train_loss = state.partial_loss / state.partial_seen.max(1) as f64;
        // A network whose weights overflowed can still give finite training losses for a
        // step or two; validation (when there is any) catches it before it is saved.
        if validation.is_some() && !val_loss.is_finite() {
            bar.abandon();
            return Err(stop_diverged(
                diverged_at(steps_per_epoch, val_loss),
                &state,
                &ckpt,
                device,
            ));
        }
        let overflow = match &scaler {
            Some(s) => format!(
                ", loss scale {}, {} steps skipped (f16 overflow)",
                s.scale,
                s.skipped_steps - skipped_before
            ),
            None => String::new(),
        };
        bar.suspend(|| {
            eprintln!(
                "epoch {epoch} ({}): train loss {train_loss:.4}, val loss {val_loss:.4}, val accuracy {:.1}%, lr {lr:.3e}, {images_per_s:.1} img/s{overflow}",
                stage.name,
                val_accuracy * 100.0
            )
        });
        let row = EpochMetrics {
            epoch,
            lr,
            train_loss,
            val_loss,
            val_accuracy,
            stage: stage.name.clone(),
        };
        record_epoch(&mut state, row, &valid, &ckpt, out)?;
        state.stage_epoch += 1;
        state.step = 0;
        state.partial_loss = 0.0;
        state.partial_seen = 0;
        if state.stage_epoch == stage.epochs {
            state.stage += 1;
            state.stage_epoch = 0;
        }
        ckpt.save(&mut state, model, &replicas.optimization().optimizer)?;
    }
    bar.finish_and_clear();
    finish(out, &split.test, &pre, recipe, device, &state)
}

/// The end of a run: the best epoch scored on the test split and exported as `bundle/`.
fn finish(
    out: &Path,
    test: &[Sample],
    pre: &Preprocessor,
    recipe: &Recipe,
    device: &Device,
    state: &State,
) -> Result<TrainSummary> {
    let best = state.best.context("the recipe ran no epoch")?;
    let (meta, best_model) = exported(out, Snapshot::Best, device)?;
    let test_accuracy =
        evaluate(&best_model, test, pre, recipe.batch_size, device)?.map(|(_, acc)| acc);
    let bundle_dir = out.join("bundle");
    Bundle::new(meta, best_model)?.save(&bundle_dir)?;
    Ok(TrainSummary {
        epochs: state.epochs_done(),
        best_epoch: best.epoch,
        best_val_accuracy: best.val_accuracy,
        test_accuracy,
        skipped_files: state.skipped.len(),
        bundle: bundle_dir,
    })
}

/// A network set up as the recipe's fine-tuning stage trains it (everything but the stem), for
/// the training benchmark.
pub fn stage_for_bench(model: Network) -> Network {
    stage::set_trainable(model, recipe::Trainable::AllButStem)
}

/// Every tensor of `model` (parameters and BatchNorm statistics), by name, for the tests of
/// what a step changes.
#[cfg(test)]
pub(crate) fn tensors(model: &Network) -> Vec<(String, Vec<f32>)> {
    use burn::store::{ModuleSnapshot, bridge};
    model
        .collect(None, None, true)
        .into_iter()
        .map(|t| {
            let data = bridge::to_data(&t).unwrap().convert::<f32>();
            (t.name.clone(), data.try_to_vec::<f32>().unwrap())
        })
        .collect()
}
