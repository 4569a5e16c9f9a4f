//! Running a bundle on image files: photos decoded in parallel one batch ahead of the network,
//! which runs through the shared [`Runtime`](petal_shared::runtime::Runtime).

use anyhow::{Context, Result};
use burn::prelude::*;
use petal_shared::runtime::{Classifier, RuntimeOptions};
use petal_shared::{Bundle, Precision};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// One file's logits, or why it could not be read. With test-time augmentation the "logits"
/// are the log of the averaged probabilities (see [`RuntimeOptions::mirror`]).
pub type FileLogits = Result<Vec<f32>, String>;

/// Loads the bundle at `path` for inference on `device`, computing in `precision` (a ResNet on
/// the CPU runs folded, in f32, unless `PETAL_NO_FOLD` is set: a switch for comparisons);
/// `mirror` turns on test-time augmentation.
pub fn load(
    path: &Path,
    device: &Device,
    precision: Precision,
    mirror: bool,
) -> Result<Classifier> {
    let bundle = Bundle::load(path, device)
        .with_context(|| format!("cannot load bundle {}", path.display()))?;
    let bundle = Bundle {
        model: bundle.model.with_precision(precision),
        ..bundle
    };
    let options = RuntimeOptions {
        fold: std::env::var_os("PETAL_NO_FOLD").is_none(),
        mirror,
    };
    Classifier::new(bundle, device, options)
        .with_context(|| format!("cannot prepare {} for inference", path.display()))
}

/// Logits for every file, `batch_size` at a time; unreadable files give an error message
/// naming the problem and do not stop the others.
pub fn classify_files(
    classifier: &Classifier,
    files: &[PathBuf],
    batch_size: usize,
    mut progress: impl FnMut(usize),
) -> Result<Vec<FileLogits>> {
    let preprocessor = &classifier.preprocessor;
    let decode = |path: &PathBuf| -> Result<Vec<f32>, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
        if preprocessor.allow_truncated && petal_shared::preprocess::jpeg_is_truncated(&bytes) {
            eprintln!(
                "warning: {}: image file is truncated; classifying what it holds",
                path.display()
            );
        }
        preprocessor
            .tensor_from_bytes(&bytes)
            .map_err(|e| e.to_string())
    };
    std::thread::scope(|scope| {
        // Decoding runs one batch ahead of the network on its own thread (and rayon's pool), so
        // the cores the forward pass leaves idle prepare the next photos.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Result<Vec<f32>, String>>>(1);
        scope.spawn(move || {
            for chunk in files.chunks(batch_size.max(1)) {
                let decoded = chunk.par_iter().map(decode).collect();
                if tx.send(decoded).is_err() {
                    break; // the network side stopped on an error
                }
            }
        });
        let mut results = Vec::with_capacity(files.len());
        for decoded in rx {
            let count = decoded.len();
            let mut inputs = Vec::with_capacity(count);
            let errors: Vec<Option<String>> = decoded
                .into_iter()
                .map(|d| d.map(|t| inputs.push(t)).err())
                .collect();
            let mut logits = if inputs.is_empty() {
                Vec::new()
            } else {
                classifier
                    .runtime
                    .logits(classifier.images(&inputs)?)?
                    .into_rows()
            }
            .into_iter();
            for error in errors {
                results.push(match error {
                    None => Ok(logits.next().expect("one logits row per decoded image")),
                    Some(e) => Err(e),
                });
            }
            progress(count);
        }
        Ok(results)
    })
}
