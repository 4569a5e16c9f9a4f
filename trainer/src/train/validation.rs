//! Validation (and the test split's score) during training: the network in inference mode
//! through the shared runtime, so the numbers are those `petal eval` gives on the same images.

use crate::data::Sample;
use crate::data::batches::for_each_batch;
use anyhow::{Context, Result};
use burn::prelude::*;
use petal_shared::classify::cross_entropy;
use petal_shared::runtime::{Images, Runtime, RuntimeOptions};
use petal_shared::{Network, Preprocessor};

/// Mean loss and accuracy of `model` (inference mode) on `samples`, through the same runtime
/// and the same predicted-class rule as `petal eval` (so a run's validation accuracy and `eval`
/// on the same images agree); `None` when none could be read.
pub(super) fn evaluate(
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
            let logits = runtime.logits(Images::new(batch.images, n, side, side)?)?;
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
