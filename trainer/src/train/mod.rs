//! The training loop: the recipe's stages in order (frozen backbone → fine-tuning → SGD
//! polish), augmented batches decoded ahead on all cores, validation at each epoch end,
//! `metrics.csv`, checkpoints after every epoch (and on Ctrl-C), and the best epoch exported
//! as a bundle.
//!
//! A run folder holds everything a resumed run needs: `run.json` (data and weights),
//! `recipe.toml` (the resolved recipe), `split.json` and `checkpoints/`.

pub mod checkpoint;
pub mod lock;
pub mod recipe;
pub mod scaler;
mod stage;

pub use crate::data::split::Split;
pub use checkpoint::EpochMetrics;
pub use recipe::Recipe;

use crate::backend::PrecisionArg;
use crate::data::Sample;
use crate::data::augment::Augment;
use crate::data::batches::{Augmented, Batch, batch_seed, for_each_batch};
use crate::data::split;
use anyhow::{Context, Result, bail};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::GradientsParams;
use burn::prelude::*;
use checkpoint::{Best, Checkpoints, State};
use indicatif::{ProgressBar, ProgressStyle};
use petal_shared::classify::{softmax, top_k_indices};
use petal_shared::fs::write_atomic;
use petal_shared::import::{Head, load_torchvision};
use petal_shared::{Bundle, BundleMeta, ComputePrecision, Network, NetworkConfig, Preprocessor};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

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

/// Steps whose losses stay on the device before one read brings them all back.
const READ_LOSS_EVERY: usize = 16;

/// Training losses not read yet. Reading a value back waits for the device to finish every
/// queued kernel, so reading each step's loss would leave the GPU idle while the next step is
/// queued; the losses stay on the device and come back in one transfer every
/// [`READ_LOSS_EVERY`] steps (and before the state is saved or reported).
#[derive(Default)]
struct PendingLosses(Vec<(Tensor<1>, usize, usize)>);

impl PendingLosses {
    /// The mean loss of step `step` (1-based), a batch of `n` images (`[1]`, detached from the
    /// graph).
    fn push(&mut self, loss: Tensor<1>, n: usize, step: usize) {
        self.0.push((loss, n, step));
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    /// Adds the pending losses to the epoch's running sums, in step order: the same sums, bit
    /// for bit, as adding each step's loss as soon as it was known, so a resumed run still
    /// reproduces an uninterrupted one. A loss that is not finite is left out of the sums (in
    /// f16 the scaler skipped that step); the first such step is returned, with its loss.
    fn add_to(&mut self, state: &mut State) -> Result<Option<(usize, f32)>> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let pending = std::mem::take(&mut self.0);
        let losses = pending.iter().map(|(loss, ..)| loss.clone()).collect();
        let values = Tensor::cat(losses, 0)
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("cannot read the training losses: {e:?}"))?;
        let mut first_bad = None;
        for (value, (_, n, step)) in values.into_iter().zip(pending) {
            if !value.is_finite() {
                first_bad = first_bad.or(Some((step, value)));
                continue;
            }
            state.partial_loss += f64::from(value) * n as f64;
            state.partial_seen += n;
        }
        Ok(first_bad)
    }
}

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
static INTERRUPT: AtomicBool = AtomicBool::new(false);

/// Ctrl-C stops the run cleanly after the current step; a second Ctrl-C exits at once (every
/// file is written atomically, so the last checkpoint stays whole).
pub fn handle_ctrl_c() -> Result<()> {
    ctrlc::set_handler(|| {
        if INTERRUPT.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
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

/// Checks the data folder (layout, classes, images) without training.
pub fn check_data(spec: &RunSpec, recipe: &Recipe) -> Result<()> {
    split::open(&spec.data, recipe).map(|_| ())
}

/// Starts a new run in `out` (which must not hold one already).
pub fn start(spec: &RunSpec, recipe: &Recipe, out: &Path, device: &Device) -> Result<TrainSummary> {
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
    run(spec, recipe, out, device, false)
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
pub fn resume(run_dir: &Path, device: &Device, precision: PrecisionArg) -> Result<TrainSummary> {
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
    run(&spec, &recipe, run_dir, device, true)
}

fn run(
    spec: &RunSpec,
    recipe: &Recipe,
    out: &Path,
    device: &Device,
    resuming: bool,
) -> Result<TrainSummary> {
    let (classes, split) = split::open(&spec.data, recipe)?;
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
    // f16 gradients need the loss scaled up (see `scaler`); f32 ones do not.
    let mut scaler =
        (precision == ComputePrecision::F16).then(|| state.scaler.clone().unwrap_or_default());

    let loss_fn = CrossEntropyLossConfig::new().init(&train_device);
    let steps_per_epoch = split.train.len().div_ceil(recipe.batch_size);
    let total_epochs: usize = recipe.stages.iter().map(|s| s.epochs).sum();
    let bar = progress_bar(
        steps_per_epoch * total_epochs,
        steps_per_epoch * state.epochs_done() + state.step,
    );
    let mut skipped: BTreeSet<PathBuf> = state.skipped.iter().cloned().collect();
    let mut optim: Option<(burn::optim::ModuleOptimizer, usize)> = None;

    while state.stage < recipe.stages.len() {
        let stage = &recipe.stages[state.stage];
        let schedule = recipe.schedule(state.stage);
        if state.stage_epoch >= stage.epochs {
            state.stage += 1;
            state.stage_epoch = 0;
            continue;
        }
        model = stage::set_trainable(model, stage.trainable);
        // The optimiser (with the stage it serves) carries over into a stage that continues the
        // schedule. A checkpoint's optimiser belongs to the stage in progress, or to the one
        // before when the checkpoint was taken at a stage boundary.
        let mid_stage = state.stage_epoch > 0 || state.step > 0;
        let carried = optim.take();
        let (optimizer, _) = optim.insert(match carried {
            Some((o, s)) if s == state.stage || schedule.continues => (o, state.stage),
            None if !state.optim_file.is_empty() && (mid_stage || schedule.continues) => (
                ckpt.load_optim(&state.optim_file, stage::optimizer(stage))?,
                state.stage,
            ),
            _ => (stage::optimizer(stage), state.stage),
        });

        let epoch = state.epochs_done() + 1;
        let lr = schedule.lr_at(state.stage_epoch);
        bar.set_prefix(format!("epoch {epoch}/{total_epochs} {}", stage.name));
        let chunks = epoch_batches(&split.train, recipe, epoch, state.step);
        let mut interrupted = false;
        // The first step whose loss is not finite, with that loss.
        let mut diverged = None;
        let (started, seen_before) = (std::time::Instant::now(), state.partial_seen);
        // The optimiser takes the network by value; the slot hands it over inside the closure.
        let mut slot = Some(model);
        let mut pending = PendingLosses::default();
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
                let n = batch.labels.len();
                // BatchNorm needs more than one value per channel to train.
                if n >= 2 {
                    let current = slot
                        .take()
                        .context("the network was lost in a failed step")?;
                    let (x, y) = batch.into_tensors(recipe.image_size, &train_device);
                    // The step's own seed for what the network draws on the device (ConvNeXt's
                    // stochastic depth), so that a resumed run draws what it would have.
                    train_device.seed(batch_seed(recipe.seed, epoch, step));
                    let loss = loss_fn.forward(current.forward(x), y);
                    pending.push(loss.clone().detach(), n, step + 1);
                    let grads = match scaler.as_mut() {
                        None => Some(GradientsParams::from_grads(loss.backward(), &current)),
                        Some(scaler) => scaler.gradients(loss, &current),
                    };
                    slot = Some(match grads {
                        Some(grads) => optimizer.step(lr, current, grads),
                        // Overflowed f16 gradients: this step changes nothing.
                        None => current,
                    });
                }
                state.step = step + 1;
                bar.inc(1);
                let log_now = recipe.log_every > 0 && state.step % recipe.log_every == 0;
                if log_now || pending.len() >= READ_LOSS_EVERY {
                    let bad = pending.add_to(&mut state)?;
                    // In f16 a non-finite loss is the scaler's business (it skipped the step
                    // and lowered the scale); in f32 nothing brings the network back.
                    if bad.is_some() && scaler.is_none() {
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
        )?;
        let bad = pending.add_to(&mut state)?;
        if scaler.is_none() {
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
        state.scaler.clone_from(&scaler);
        model = slot.context("the network was lost in a failed step")?;
        // The last step's BatchNorm statistics belong in what is evaluated and saved.
        model.sync_running_stats();
        state.skipped = skipped.iter().cloned().collect();
        if interrupted {
            bar.abandon();
            ckpt.save(&mut state, &model, optimizer)?;
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
        ckpt.save(&mut state, &model, optimizer)?;
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

/// Writes the best epoch's network as `out/bundle`.
fn export_best(out: &Path, device: &Device) -> Result<PathBuf> {
    let (meta, model) = exported(out, Which::Best, device)?;
    let dir = out.join("bundle");
    Bundle::new(meta, model)?.save(&dir)?;
    Ok(dir)
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
    if let Err(e) = crate::plot::training_curves_png(&state.metrics, &out.join(CURVES_FILE)) {
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
    let (meta, best_model) = exported(out, Which::Best, device)?;
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

/// Which network of a run to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Which {
    /// The epoch with the best validation accuracy.
    Best,
    /// The last checkpoint.
    Last,
}

/// A run's network (on `device`, inference mode) and the bundle metadata that describes it.
pub fn exported(run_dir: &Path, which: Which, device: &Device) -> Result<(BundleMeta, Network)> {
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
        Which::Best => (
            checkpoint::BEST_FILE.to_string(),
            state.best.map_or(0, |b| b.epoch),
        ),
        Which::Last => (state.model_file.clone(), state.epochs_done()),
    };
    let config = NetworkConfig::new(recipe.arch, classes.len());
    let model = ckpt.load_model(&file, &config, device)?;
    let mut meta = BundleMeta::new(recipe.arch, classes, recipe.image_size, recipe.resize);
    meta.source = format!("petal train {} (epoch {epoch})", run_dir.display());
    Ok((meta, model))
}

/// A network set up as the recipe's fine-tuning stage trains it (everything but the stem), for
/// the training benchmark.
pub fn stage_for_bench(model: Network) -> Network {
    stage::set_trainable(model, recipe::Trainable::AllButStem)
}

/// Rewrites `metrics.csv` from the run's rows (so a resumed run never duplicates a row). The
/// `csv` writer quotes what needs it: a stage named `warm,up` stays one column.
fn write_metrics(path: &Path, rows: &[EpochMetrics]) -> Result<()> {
    let mut csv = csv::Writer::from_writer(Vec::new());
    for row in rows {
        csv.serialize(row)?;
    }
    let bytes = csv.into_inner().context("cannot finish metrics.csv")?;
    write_atomic(path, &bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// Mean loss and accuracy of `model` (inference mode) on `samples`; `None` when none could be
/// read.
fn evaluate(
    model: &Network,
    samples: &[Sample],
    pre: &Preprocessor,
    batch_size: usize,
    device: &Device,
) -> Result<Option<(f64, f64)>> {
    let loss_fn = CrossEntropyLossConfig::new().init(device);
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
            let labels = batch.labels.clone();
            let (x, y) = batch.into_tensors(pre.image_size, device);
            let logits = model.forward(x);
            loss_sum +=
                f64::from(loss_fn.forward(logits.clone(), y).into_scalar::<f32>()) * n as f64;
            // The predicted class by `petal eval`'s rule (top-1 of the softmax, ties to the
            // lower index), so a run's validation accuracy and `eval` on the same images agree.
            let classes = logits.dims()[1];
            let values = logits
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            correct += values
                .chunks(classes)
                .zip(&labels)
                .filter(|(row, l)| top_k_indices(&softmax(row), 1).first() == Some(&(**l as usize)))
                .count();
            count += n;
            Ok(true)
        },
    )?;
    Ok((count > 0).then(|| (loss_sum / count as f64, correct as f64 / count as f64)))
}

#[cfg(test)]
mod metrics_file_tests {
    use super::*;

    /// `metrics.csv` reads back as the rows that were written, whatever a stage is called.
    #[test]
    fn metrics_csv_round_trips_a_stage_name_with_a_comma() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(METRICS_FILE);
        let rows = vec![
            EpochMetrics {
                epoch: 1,
                lr: 0.001,
                train_loss: 1.25,
                val_loss: f64::NAN,
                val_accuracy: 0.5,
                stage: "warm,up \"1\"".into(),
            },
            EpochMetrics {
                epoch: 2,
                lr: 5e-4,
                train_loss: 0.75,
                val_loss: 0.5,
                val_accuracy: 0.625,
                stage: "finetune".into(),
            },
        ];
        write_metrics(&path, &rows).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("epoch,lr,train_loss,val_loss,val_accuracy,stage\n"),
            "{text}"
        );
        let back: Vec<EpochMetrics> = csv::Reader::from_path(&path)
            .unwrap()
            .deserialize()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[1], rows[1]);
        assert_eq!(back[0].stage, rows[0].stage);
        assert!(back[0].val_loss.is_nan());
    }
}
