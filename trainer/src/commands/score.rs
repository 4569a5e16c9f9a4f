//! `petal score`: every image of a folder → one CSV row (Kaggle-submission style).

use crate::backend::Compute;
use crate::data::folder::list_images;
use crate::exit::Finished;
use crate::inference;
use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use petal_shared::Precision;
use petal_shared::classify::{predicted_class, softmax};
use petal_shared::files::relative;
pub use petal_shared::score_csv::Columns;
use petal_shared::score_csv::{ScoreRow, score_csv};
use std::path::{Path, PathBuf};

/// Classify every image under a folder into a CSV: file, predicted class, probability.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(short, long)]
    pub model: PathBuf,
    /// Folder of images (searched recursively, sorted).
    #[arg(long)]
    pub images: PathBuf,
    /// Output CSV.
    #[arg(short, long, alias = "out")]
    pub output: PathBuf,
    /// Header names for the file and class columns (e.g. `id,label`).
    #[arg(long, default_value = "file,label")]
    pub columns: Columns,
    /// Add one probability column per class.
    #[arg(long)]
    pub probs: bool,
    /// Test-time augmentation: average each image's probabilities with its mirror image's.
    #[arg(long)]
    pub tta: bool,
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Classify JPEGs cut off before their end (the missing part reads as grey) instead of
    /// refusing them with "image file is truncated"; each such file gets a warning.
    #[arg(long)]
    pub allow_truncated: bool,
}

/// How to score: everything but the model, the folder and the output file.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub columns: Columns,
    /// One probability column per class.
    pub probs: bool,
    /// Average each image's probabilities with its mirror image's.
    pub tta: bool,
    pub batch_size: usize,
    pub allow_truncated: bool,
}

/// Rows written and files that could not be read.
pub struct ScoreReport {
    pub rows: usize,
    pub failed: Vec<(PathBuf, String)>,
}

/// Classifies every image under `images` with the bundle at `model` on `device` in
/// `precision` and writes the CSV to `output` (atomically: a failed run leaves no half file).
pub fn score(
    model: &Path,
    images: &Path,
    output: &Path,
    options: &Options,
    device: Device,
    precision: Precision,
) -> Result<ScoreReport> {
    let mut classifier = inference::load(model, &device, precision, options.tta)?;
    classifier.preprocessor.allow_truncated = options.allow_truncated;
    let files = list_images(images)?;
    if files.is_empty() {
        bail!("no images under {}", images.display());
    }
    let bar = indicatif::ProgressBar::new(files.len() as u64);
    let outcomes =
        inference::classify_files(&classifier, &files, options.batch_size.max(1), |n| {
            bar.inc(n as u64)
        })?;
    bar.finish_and_clear();

    let mut rows = Vec::with_capacity(files.len());
    let mut failed = Vec::new();
    for (path, outcome) in files.iter().zip(outcomes) {
        match outcome {
            Ok(logits) => {
                let probs = softmax(&logits);
                let best = predicted_class(&logits);
                rows.push(ScoreRow {
                    file: relative(path, images),
                    label: classifier.classes()[best].clone(),
                    prob: probs[best],
                    probs,
                });
            }
            Err(e) => failed.push((path.clone(), e)),
        }
    }
    let report = ScoreReport {
        rows: rows.len(),
        failed,
    };
    let class_columns = options.probs.then(|| classifier.classes());
    let bytes = score_csv(&options.columns, class_columns, rows)?.into_bytes();
    petal_shared::fs::write_atomic(output, &bytes)
        .with_context(|| format!("cannot write {}", output.display()))?;
    Ok(report)
}

pub fn run(args: Args, compute: Compute) -> Result<Finished> {
    let options = Options {
        columns: args.columns,
        probs: args.probs,
        tta: args.tta,
        batch_size: args.batch_size,
        allow_truncated: args.allow_truncated,
    };
    let (backend, precision) = compute.resolve()?;
    let report = score(
        &args.model,
        &args.images,
        &args.output,
        &options,
        backend.device,
        precision,
    )?;
    for (path, err) in &report.failed {
        eprintln!("warning: skipped {}: {err}", path.display());
    }
    println!(
        "wrote {} rows to {} ({} unreadable)",
        report.rows,
        args.output.display(),
        report.failed.len()
    );
    Ok(Finished::skipping(report.failed.len()))
}
