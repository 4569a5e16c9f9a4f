//! Batches for training and evaluation: decoded and augmented on all cores by rayon, a few
//! batches ahead of the training step on a producer thread, so the device never waits for JPEG
//! decoding.

use crate::data::Sample;
use crate::data::augment::Augment;
use anyhow::Result;
use burn::prelude::*;
use petal_shared::Preprocessor;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rayon::prelude::*;
use std::path::PathBuf;
use std::sync::mpsc::sync_channel;

/// How many decoded batches may wait for the training step.
const PREFETCH: usize = 2;

/// A file that could not be used, and why.
pub type Skipped = (PathBuf, String);

/// A decoded batch: images `[N, 3, S, S]` flattened, labels, and the files that failed.
pub struct Batch {
    pub images: Vec<f32>,
    pub labels: Vec<i64>,
    pub failed: Vec<Skipped>,
}

impl Batch {
    /// Moves the pixels (no copy) and labels onto `device`: `([N, 3, S, S], [N])`.
    pub fn into_tensors(self, side: usize, device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
        let n = self.labels.len();
        let x = Tensor::<4>::from_data(TensorData::new(self.images, [n, 3, side, side]), device);
        let y = Tensor::<1, Int>::from_data(TensorData::new(self.labels, [n]), device);
        (x, y)
    }
}

/// Training augmentation with the seed of one batch.
#[derive(Clone, Copy)]
pub struct Augmented<'a> {
    pub augment: &'a Augment,
    pub seed: u64,
}

/// The augmentation seed of batch `step` of `epoch`: the same run seed gives the same batches,
/// and a resumed run picks up exactly where it stopped.
pub fn batch_seed(seed: u64, epoch: usize, step: usize) -> u64 {
    seed.wrapping_mul(1_000_003)
        .wrapping_add((epoch as u64) << 32)
        .wrapping_add(step as u64)
}

/// Decodes `samples` on all cores; eval preprocessing unless `augment` is given.
pub fn load_batch(samples: &[Sample], pre: &Preprocessor, augment: Option<Augmented>) -> Batch {
    let decoded: Vec<Result<(Vec<f32>, i64), Skipped>> = samples
        .par_iter()
        .enumerate()
        .map(|(i, s)| {
            let fail = |e: String| (s.path.clone(), e);
            let bytes = std::fs::read(&s.path).map_err(|e| fail(e.to_string()))?;
            let img = pre.decode(&bytes).map_err(|e| fail(e.to_string()))?;
            let tensor = match augment {
                // One RNG per sample, seeded by (batch seed, position): the same seed gives
                // the same batch whatever the thread scheduling.
                Some(a) => a.augment.apply(
                    &img,
                    pre,
                    &mut StdRng::seed_from_u64(
                        a.seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
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

/// Runs `consume(step, batch)` over `batches` (each a list of samples, numbered from
/// `first_step`) while a producer thread decodes the next ones. `augment` maps a step to its
/// augmentation (`None`: eval preprocessing). `consume` returns `false` to stop early.
pub fn for_each_batch<'a>(
    batches: Vec<Vec<Sample>>,
    first_step: usize,
    pre: &Preprocessor,
    augment: impl Fn(usize) -> Option<Augmented<'a>> + Send,
    mut consume: impl FnMut(usize, Batch) -> Result<bool>,
) -> Result<()> {
    std::thread::scope(|scope| {
        let (tx, rx) = sync_channel(PREFETCH);
        scope.spawn(move || {
            for (i, samples) in batches.into_iter().enumerate() {
                let step = first_step + i;
                let batch = load_batch(&samples, pre, augment(step));
                // The consumer hung up: it stopped early or failed.
                if tx.send((step, batch)).is_err() {
                    break;
                }
            }
        });
        for (step, batch) in rx {
            if !consume(step, batch)? {
                break;
            }
        }
        Ok(())
    })
}
