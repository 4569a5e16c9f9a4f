//! `petal score`: every image of a folder → one CSV row (Kaggle-submission style).

use crate::backend::DeviceArg;
use crate::data::folder::list_images;
use crate::inference::Classifier;
use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use petal_shared::classify::{softmax, top_k_indices};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

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
    #[arg(long, default_value = "file,label", value_parser = parse_columns)]
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

/// Header names of the file and class columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    pub file: String,
    pub label: String,
}

impl Default for Columns {
    fn default() -> Self {
        Columns {
            file: "file".into(),
            label: "label".into(),
        }
    }
}

fn parse_columns(s: &str) -> Result<Columns, String> {
    match s.split(',').map(str::trim).collect::<Vec<_>>()[..] {
        [file, label] if !file.is_empty() && !label.is_empty() => Ok(Columns {
            file: file.into(),
            label: label.into(),
        }),
        _ => Err(format!(
            "expected two names separated by a comma (e.g. id,label), got '{s}'"
        )),
    }
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

/// Classifies every image under `images` with the bundle at `model` on `device` and writes
/// the CSV to `output` (atomically: a failed run leaves no half file).
pub fn score(
    model: &Path,
    images: &Path,
    output: &Path,
    options: &Options,
    device: Device,
) -> Result<ScoreReport> {
    let mut classifier = Classifier::load(model, device)?;
    classifier.tta = options.tta;
    classifier.preprocessor.allow_truncated = options.allow_truncated;
    let files = list_images(images)?;
    if files.is_empty() {
        bail!("no images under {}", images.display());
    }
    let bar = indicatif::ProgressBar::new(files.len() as u64);
    let outcomes =
        classifier.classify_files(&files, options.batch_size.max(1), |n| bar.inc(n as u64))?;
    bar.finish_and_clear();

    let mut csv = csv::Writer::from_writer(Vec::new());
    let mut header = vec![
        options.columns.file.clone(),
        options.columns.label.clone(),
        "prob".to_string(),
    ];
    if options.probs {
        header.extend(classifier.classes().iter().cloned());
    }
    csv.write_record(&header)?;
    let mut report = ScoreReport {
        rows: 0,
        failed: Vec::new(),
    };
    for (path, outcome) in files.iter().zip(outcomes) {
        match outcome {
            Ok(logits) => {
                let probs = softmax(&logits);
                let best = top_k_indices(&probs, 1)[0];
                let name = relative(path, images);
                let mut row = vec![
                    name,
                    classifier.classes()[best].clone(),
                    format!("{:.6}", probs[best]),
                ];
                if options.probs {
                    row.extend(probs.iter().map(|p| format!("{p:.6}")));
                }
                csv.write_record(&row)?;
                report.rows += 1;
            }
            Err(e) => report.failed.push((path.clone(), e)),
        }
    }
    let bytes = csv.into_inner().context("cannot finish the CSV")?;
    petal_shared::bundle::write_atomic(output, &bytes)
        .with_context(|| format!("cannot write {}", output.display()))?;
    Ok(report)
}

fn relative(path: &Path, root: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

pub fn run(args: Args, device: DeviceArg) -> Result<ExitCode> {
    let options = Options {
        columns: args.columns,
        probs: args.probs,
        tta: args.tta,
        batch_size: args.batch_size,
        allow_truncated: args.allow_truncated,
    };
    let device = device.resolve()?.device;
    let report = score(&args.model, &args.images, &args.output, &options, device)?;
    for (path, err) in &report.failed {
        eprintln!("warning: skipped {}: {err}", path.display());
    }
    println!(
        "wrote {} rows to {} ({} unreadable)",
        report.rows,
        args.output.display(),
        report.failed.len()
    );
    Ok(crate::cli::exit_for_skipped(report.failed.len()))
}
