//! `petal score`: every image of a folder → one CSV row (Kaggle-submission style).

use crate::backend::DeviceArg;
use crate::data::folder::list_images;
use crate::inference::Classifier;
use anyhow::{Context, Result, bail};
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
    #[arg(long)]
    pub out: PathBuf,
    /// Header names for the file and class columns (e.g. `id,label`).
    #[arg(long, default_value = "file,label")]
    pub columns: String,
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
    /// Compute backend (default: the fastest this build has; env PETAL_DEVICE).
    #[arg(long, value_enum, default_value_t, env = "PETAL_DEVICE")]
    pub device: DeviceArg,
}

/// Rows written and files that could not be read.
pub struct ScoreReport {
    pub rows: usize,
    pub failed: Vec<(PathBuf, String)>,
}

pub fn score(args: &Args) -> Result<ScoreReport> {
    let columns: Vec<&str> = args.columns.split(',').map(str::trim).collect();
    let [file_col, label_col] = columns[..] else {
        bail!(
            "--columns needs two names separated by a comma, got '{}'",
            args.columns
        );
    };
    let mut classifier = Classifier::load(&args.model, args.device.resolve()?.device)?;
    classifier.tta = args.tta;
    classifier.preprocessor.allow_truncated = args.allow_truncated;
    let files = list_images(&args.images)?;
    if files.is_empty() {
        bail!("no images under {}", args.images.display());
    }
    let bar = indicatif::ProgressBar::new(files.len() as u64);
    let outcomes = classifier.classify_files(&files, args.batch_size, |n| bar.inc(n as u64))?;
    bar.finish_and_clear();

    let mut csv = csv::Writer::from_writer(Vec::new());
    let mut header = vec![
        file_col.to_string(),
        label_col.to_string(),
        "prob".to_string(),
    ];
    if args.probs {
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
                let name = relative(path, &args.images);
                let mut row = vec![
                    name,
                    classifier.classes()[best].clone(),
                    format!("{:.6}", probs[best]),
                ];
                if args.probs {
                    row.extend(probs.iter().map(|p| format!("{p:.6}")));
                }
                csv.write_record(&row)?;
                report.rows += 1;
            }
            Err(e) => report.failed.push((path.clone(), e)),
        }
    }
    let bytes = csv.into_inner().context("cannot finish the CSV")?;
    petal_shared::bundle::write_atomic(&args.out, &bytes)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    Ok(report)
}

fn relative(path: &Path, root: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

pub fn run(args: Args) -> Result<ExitCode> {
    let report = score(&args)?;
    for (path, err) in &report.failed {
        eprintln!("warning: skipped {}: {err}", path.display());
    }
    println!(
        "wrote {} rows to {} ({} unreadable)",
        report.rows,
        args.out.display(),
        report.failed.len()
    );
    Ok(ExitCode::SUCCESS)
}
