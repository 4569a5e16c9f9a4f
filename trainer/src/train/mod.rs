//! The training loop: the recipe's stages in order (frozen backbone → fine-tuning → SGD
//! polish), augmented batches decoded ahead on all cores, validation at each epoch end,
//! `metrics.csv`, checkpoints after every epoch (and on Ctrl-C), and the best epoch exported
//! as a bundle.
//!
//! A run folder holds everything a resumed run needs: `run.json` (data and weights),
//! `recipe.toml` (the resolved recipe), `split.json` and `checkpoints/`.

pub mod checkpoint;
mod export;
pub mod lock;
mod losses;
mod metrics_file;
pub mod parallel;
pub mod recipe;
pub mod scaler;
mod stage;
pub mod step;
mod stops;

pub use crate::data::split::Split;
pub use checkpoint::EpochMetrics;
pub use export::{Snapshot, exported};
pub use parallel::Placement;
pub use recipe::Recipe;
pub use stops::{Diverged, Interrupted, handle_ctrl_c};

use crate::backend::PrecisionArg;
use crate::data::Sample;
use crate::data::augment::Augment;
use crate::data::batches::{Augmented, Batch, batch_seed, for_each_batch};
use crate::data::split;
use crate::plot::{EpochPoint, training_curves_png};
use anyhow::{Context, Result, bail};
use burn::prelude::*;
use checkpoint::{Best, Checkpoints, State};
use export::export_best;
use indicatif::{ProgressBar, ProgressStyle};
use losses::{PendingLosses, READ_LOSS_EVERY};
use metrics_file::write_metrics;
use parallel::Replicas;
use petal_shared::classify::cross_entropy;
use petal_shared::fs::write_atomic;
use petal_shared::import::{Head, load_torchvision};
use petal_shared::runtime::{Images, Runtime, RuntimeOptions};
use petal_shared::{Bundle, ComputePrecision, Network, NetworkConfig, Preprocessor};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use step::Optimization;
use stops::INTERRUPT;

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

/// A new run never overwrites one that has a checkpoint.
fn refuse_a_started_run(out: &Path) -> Result<()> {
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

/// Continues the run in `run_dir` from its last checkpoint (or from the start if it stopped
/// before the first one).
/// `precision`: what the command line asked for; a run keeps the number format it started in
/// (its checkpoints hold that format's optimiser state and loss scale), so only `auto` or the
/// recorded one are accepted.
pub fn resume(
    run_dir: &Path,
    placement: &Placement,
    precision: PrecisionArg,
) -> Result<TrainSummary> {
    let spec_path = run_dir.join(RUN_FILE);
    let spec: RunSpec =
        serde_json::from_slice(&std::fs::read(&spec_path).with_context(|| {
            format!("{} is not a run folder: no {RUN_FILE}", run_dir.display())
        })?)
        .with_context(|| format!("{} is damaged", spec_path.display()))?;
    let _lock = lock::RunLock::acquire(run_dir)?;
    let recipe = Recipe::load(&run_dir.join(RECIPE_FILE))?;
    if precision != PrecisionArg::Auto && precision != recipe.precision {
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
        scaler: (precision == ComputePrecision::F16)
            .then(|| state.scaler.clone().unwrap_or_default()),
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
        let chunks = epoch_batches(&split.train, recipe, epoch, state.step);
        let mut interrupted = false;
        // The first step whose loss is not finite, with that loss.
        let mut diverged = None;
        let (started, seen_before) = (std::time::Instant::now(), state.partial_seen);
        let mut pending = PendingLosses::default();
        let f16 = replicas.optimization().scaler.is_some();
        replicas.epoch(lr, |stepper| {
            for_each_batch(
                chunks,
                state.step,
                &pre,
                |step| {
                    recipe.augment.then(|| Augmented {
                        augment: &augment,
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
                    let log_now = recipe.log_every > 0 && state.step % recipe.log_every == 0;
                    if log_now || pending.len() >= READ_LOSS_EVERY {
                        let bad = pending.add_to(&mut state)?;
                        // In f16 a non-finite loss is the scaler's business (it skipped the
                        // step and lowered the scale); in f32 nothing brings the network back.
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
        let bad = pending.add_to(&mut state)?;
        if !f16 {
            diverged = diverged.or(bad);
        }
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
        if let Some((step, loss)) = diverged {
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
        if interrupted {
            bar.abandon();
            ckpt.save(&mut state, model, &replicas.optimization().optimizer)?;
            return Err(Interrupted {
                run_dir: out.to_path_buf(),
            }
            .into());
        }

        let images_per_s =
            (state.partial_seen - seen_before) as f64 / started.elapsed().as_secs_f64().max(1e-9);
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

/// Stops a run that diverged at `at`: exports the best epoch so far as the run's bundle (a
/// diverged run still leaves a usable model) and names the last good checkpoint.
fn stop_diverged(
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

/// The network the run continues from: the checkpoint when resuming, else torchvision's
/// weights with a new head, else a fresh network — seeded, so it starts the same every run.
fn starting_model(
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

/// The run's progress bar: every step of every epoch, `done` of them already.
fn progress_bar(steps: usize, done: usize) -> ProgressBar {
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
fn record_epoch(
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

/// Mean loss and accuracy of `model` (inference mode) on `samples`, through the same runtime
/// and the same predicted-class rule as `petal eval` (so a run's validation accuracy and `eval`
/// on the same images agree); `None` when none could be read.
fn evaluate(
    model: &Network,
    samples: &[Sample],
    pre: &Preprocessor,
    batch_size: usize,
    device: &Device,
) -> Result<Option<(f64, f64)>> {
    let runtime = Runtime::new(model.clone(), device, RuntimeOptions::default())?;
    let side = pre.image_size;
    let (mut loss_sum, mut correct, mut count) = (0.0, 0usize, 0usize);
    let chunks = samples.chunks(batch_size).map(<[Sample]>::to_vec).collect();
    for_each_batch(
        chunks,
        0,
        pre,
        |_| None,
        |_, batch| {
            let n = batch.labels.len();
            if n == 0 {
                return Ok(true);
            }
            let logits = runtime.logits(&Images::new(batch.images, n, side, side)?)?;
            for (i, &label) in batch.labels.iter().enumerate() {
                let label = usize::try_from(label).context("a negative label")?;
                loss_sum += cross_entropy(logits.row(i), label);
                correct += usize::from(logits.predicted(i) == label);
            }
            count += n;
            Ok(true)
        },
    )?;
    Ok((count > 0).then(|| (loss_sum / count as f64, correct as f64 / count as f64)))
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
