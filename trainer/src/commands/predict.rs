//! `petal predict`: top classes for a few images.

use crate::backend::Compute;
use crate::exit::Finished;
use crate::inference;
use anyhow::Result;
use petal_shared::classify::Prediction;
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;

/// Print the most likely classes of each image.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Bundle folder (as written by `petal import`, `petal export` or `petal train`).
    #[arg(short, long)]
    model: PathBuf,
    /// Images to classify.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// How many classes to show per image.
    #[arg(short = 'k', long, default_value_t = 5)]
    top_k: usize,
    /// Print a JSON array (one object per image) instead of text.
    #[arg(long)]
    json: bool,
    /// Include the raw logits in the JSON output.
    #[arg(long, requires = "json")]
    logits: bool,
    /// Images per forward pass.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Classify JPEGs cut off before their end (the missing part reads as grey) instead of
    /// refusing them with "image file is truncated"; each such file gets a warning.
    #[arg(long)]
    allow_truncated: bool,
}

#[derive(Serialize)]
struct Record<'a> {
    file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    top: Option<&'a [Prediction]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    logits: Option<&'a [f32]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

pub fn run(args: Args, compute: Compute) -> Result<Finished> {
    let (backend, precision) = compute.resolve()?;
    let mut classifier = inference::load(&args.model, &backend.device, precision, false)?;
    classifier.preprocessor.allow_truncated = args.allow_truncated;
    let outcomes = inference::classify_files(&classifier, &args.images, args.batch_size, |_| {})?;
    let k = args.top_k.max(1);
    let preds: Vec<Option<Vec<Prediction>>> = outcomes
        .iter()
        .map(|o| o.as_ref().ok().map(|l| classifier.top_k(l, k)))
        .collect();

    let mut failed = 0;
    for (path, outcome) in args.images.iter().zip(&outcomes) {
        if let Err(e) = outcome {
            eprintln!("error: {}: {e}", path.display());
            failed += 1;
        }
    }

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        let records: Vec<Record> = args
            .images
            .iter()
            .zip(&outcomes)
            .zip(&preds)
            .map(|((path, outcome), pred)| Record {
                file: path.display().to_string(),
                top: pred.as_deref(),
                logits: outcome
                    .as_ref()
                    .ok()
                    .filter(|_| args.logits)
                    .map(Vec::as_slice),
                error: outcome.as_ref().err().map(String::as_str),
            })
            .collect();
        serde_json::to_writer_pretty(&mut out, &records)?;
        writeln!(out)?;
    } else {
        for (path, pred) in args.images.iter().zip(&preds) {
            let Some(pred) = pred else { continue };
            writeln!(out, "{}", path.display())?;
            for p in pred {
                writeln!(out, "  {:>7.3}%  {}", p.prob * 100.0, p.label)?;
            }
        }
    }
    Ok(Finished::skipping(failed))
}
