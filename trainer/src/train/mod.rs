//! The training loop: seeded stratified split, augmented batches decoded on all cores, Adam with
//! the recipe's step schedule, validation every epoch, `metrics.csv`, the best model exported as
//! a bundle.

mod split;

pub use split::Split;

use crate::data::ImageFolder;
use crate::data::augment::Augment;
use anyhow::{Context, Result, bail};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use indicatif::{ProgressBar, ProgressStyle};
use petal_shared::import::{Head, load_torchvision};
use petal_shared::{Arch, Bundle, BundleMeta, Preprocessor, ResNet, ResNetConfig};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rayon::prelude::*;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What a training run needs to know.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub arch: Arch,
    pub pretrained: Option<PathBuf>,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    /// The learning rate is halved every this many epochs.
    pub lr_step_epochs: usize,
    pub seed: u64,
    pub image_size: usize,
    pub resize: usize,
}

/// The outcome of a run.
#[derive(Debug)]
pub struct TrainSummary {
    pub best_epoch: usize,
    pub best_val_accuracy: f64,
    pub test_accuracy: Option<f64>,
    pub skipped_files: usize,
    pub bundle: PathBuf,
}

/// A file that could not be used, and why.
type Skipped = (PathBuf, String);

/// A decoded batch: images `[N, 3, S, S]` flattened, labels, and the files that failed.
struct Batch {
    images: Vec<f32>,
    labels: Vec<i64>,
    failed: Vec<Skipped>,
}

fn load_batch(
    samples: &[crate::data::Sample],
    pre: &Preprocessor,
    augment: Option<(&Augment, u64)>,
) -> Batch {
    let decoded: Vec<Result<(Vec<f32>, i64), Skipped>> = samples
        .par_iter()
        .enumerate()
        .map(|(i, s)| {
            let fail = |e: String| (s.path.clone(), e);
            let bytes = std::fs::read(&s.path).map_err(|e| fail(e.to_string()))?;
            let img = pre.decode(&bytes).map_err(|e| fail(e.to_string()))?;
            let tensor = match augment {
                // One RNG per sample, seeded by (run seed, position): the same seed gives the
                // same batches whatever the thread scheduling.
                Some((aug, seed)) => aug.apply(
                    &img,
                    pre,
                    &mut StdRng::seed_from_u64(
                        seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                    ),
                ),
                None => pre.tensor_from_image(&img),
            };
            Ok((tensor, s.label as i64))
        })
        .collect();
    let mut batch = Batch {
        images: Vec::new(),
        labels: Vec::new(),
        failed: Vec::new(),
    };
    for d in decoded {
        match d {
            Ok((t, l)) => {
                batch.images.extend(t);
                batch.labels.push(l);
            }
            Err(f) => batch.failed.push(f),
        }
    }
    batch
}

/// Moves a batch's pixels (no copy) and labels onto `device`.
fn to_tensors(
    images: Vec<f32>,
    labels: &[i64],
    side: usize,
    device: &Device,
) -> (Tensor<4>, Tensor<1, Int>) {
    let n = labels.len();
    let x = Tensor::<4>::from_data(TensorData::new(images, [n, 3, side, side]), device);
    let y = Tensor::<1, Int>::from_data(TensorData::new(labels.to_vec(), [n]), device);
    (x, y)
}

/// Mean loss and accuracy of `model` (inference mode) on `samples`.
fn evaluate(
    model: &ResNet,
    samples: &[crate::data::Sample],
    pre: &Preprocessor,
    batch_size: usize,
    device: &Device,
) -> Result<(f64, f64)> {
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    let (mut loss_sum, mut correct, mut count) = (0.0, 0usize, 0usize);
    for chunk in samples.chunks(batch_size) {
        let mut batch = load_batch(chunk, pre, None);
        if batch.labels.is_empty() {
            continue;
        }
        let (x, y) = to_tensors(
            std::mem::take(&mut batch.images),
            &batch.labels,
            pre.crop,
            device,
        );
        let logits = model.forward(x);
        let n = batch.labels.len();
        loss_sum += f64::from(loss_fn.forward(logits.clone(), y).into_scalar::<f32>()) * n as f64;
        let pred: Vec<i64> = logits
            .argmax(1)
            .into_data()
            .convert::<i64>()
            .try_to_vec::<i64>()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        correct += pred
            .iter()
            .zip(&batch.labels)
            .filter(|(p, l)| p == l)
            .count();
        count += n;
    }
    if count == 0 {
        bail!("no readable validation images");
    }
    Ok((loss_sum / count as f64, correct as f64 / count as f64))
}

/// Trains on `data`, writing `split.json`, `metrics.csv` and `bundle/` into `out`.
pub fn train(
    cfg: &TrainConfig,
    data: &ImageFolder,
    out: &Path,
    device: &Device,
) -> Result<TrainSummary> {
    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create run folder {}", out.display()))?;
    let split = Split::stratified(data, 0.1, 0.1, cfg.seed);
    split.write(&out.join("split.json"), data)?;
    log::info!(
        "split: {} train, {} val, {} test",
        split.train.len(),
        split.val.len(),
        split.test.len()
    );

    let pre = Preprocessor::new(cfg.resize, cfg.image_size)?;
    let augment = Augment::recipe(cfg.image_size as u32);
    let train_device = device.clone().autodiff();
    let classes = data.classes.len();
    let mut model = match &cfg.pretrained {
        Some(path) => load_torchvision(path, cfg.arch, classes, Head::Replace, &train_device)?.0,
        None => ResNetConfig::new(cfg.arch, classes).init(&train_device),
    };
    // torch's Adam epsilon (burn defaults to 1e-5).
    let mut optim = AdamConfig::new().with_epsilon(1e-8).init();
    let loss_fn = CrossEntropyLossConfig::new().init(&train_device);

    let metrics_path = out.join("metrics.csv");
    let mut metrics = std::fs::File::create(&metrics_path)
        .with_context(|| format!("cannot write {}", metrics_path.display()))?;
    writeln!(metrics, "epoch,lr,train_loss,val_loss,val_accuracy")?;

    let steps_per_epoch = split.train.len().div_ceil(cfg.batch_size);
    let bar = ProgressBar::new((steps_per_epoch * cfg.epochs) as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut skipped = std::collections::BTreeSet::new();
    let mut best: Option<(usize, f64, ResNet)> = None;
    for epoch in 1..=cfg.epochs {
        let lr = cfg.lr * 0.5f64.powi(((epoch - 1) / cfg.lr_step_epochs.max(1)) as i32);
        let mut order: Vec<usize> = (0..split.train.len()).collect();
        order.shuffle(&mut rng);
        let (mut loss_sum, mut seen) = (0.0, 0usize);
        bar.set_prefix(format!("epoch {epoch}/{}", cfg.epochs));
        for (step, idx) in order.chunks(cfg.batch_size).enumerate() {
            let samples: Vec<_> = idx.iter().map(|&i| split.train[i].clone()).collect();
            let seed = cfg
                .seed
                .wrapping_mul(1_000_003)
                .wrapping_add((epoch * 100_000 + step) as u64);
            let mut batch = load_batch(&samples, &pre, Some((&augment, seed)));
            for (path, err) in &batch.failed {
                if skipped.insert(path.clone()) {
                    log::warn!("skipping {}: {err}", path.display());
                }
            }
            // BatchNorm needs more than one value per channel to train.
            if batch.labels.len() < 2 {
                continue;
            }
            let (x, y) = to_tensors(
                std::mem::take(&mut batch.images),
                &batch.labels,
                cfg.image_size,
                &train_device,
            );
            let loss = loss_fn.forward(model.forward(x), y);
            let value = f64::from(loss.clone().into_scalar::<f32>());
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(lr, model, grads);
            loss_sum += value * batch.labels.len() as f64;
            seen += batch.labels.len();
            bar.set_message(format!("loss {:.3}", loss_sum / seen.max(1) as f64));
            bar.inc(1);
        }
        let valid = model.valid();
        let (val_loss, val_acc) = evaluate(&valid, &split.val, &pre, cfg.batch_size, device)?;
        let train_loss = loss_sum / seen.max(1) as f64;
        writeln!(
            metrics,
            "{epoch},{lr},{train_loss:.6},{val_loss:.6},{val_acc:.6}"
        )?;
        metrics.flush()?;
        // Printed even when the bar is hidden (no terminal), so logs show every epoch.
        bar.suspend(|| {
            println!("epoch {epoch}: train loss {train_loss:.4}, val loss {val_loss:.4}, val accuracy {:.1}%", val_acc * 100.0)
        });
        if best.as_ref().is_none_or(|(_, acc, _)| val_acc > *acc) {
            best = Some((epoch, val_acc, valid));
        }
    }
    bar.finish_and_clear();

    let (best_epoch, best_val_accuracy, best_model) = best.context("no epoch ran")?;
    // The exported bundle round-trips bit-exactly, so the in-memory model is the one to test.
    let test_accuracy = if split.test.is_empty() {
        None
    } else {
        Some(evaluate(&best_model, &split.test, &pre, cfg.batch_size, device)?.1)
    };
    let mut meta = BundleMeta::new(cfg.arch, data.classes.clone(), cfg.image_size, cfg.resize);
    meta.source = format!("petal train {} (epoch {best_epoch})", out.display());
    let bundle_dir = out.join("bundle");
    Bundle::new(meta, best_model)?.save(&bundle_dir)?;

    Ok(TrainSummary {
        best_epoch,
        best_val_accuracy,
        test_accuracy,
        skipped_files: skipped.len(),
        bundle: bundle_dir,
    })
}
