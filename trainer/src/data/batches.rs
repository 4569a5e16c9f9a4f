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
/// Images each thread should get per parallel pass. Photos take from half to twice the mean
/// time to decode, and a pass ends with its slowest thread: with a batch of 32 on 16 cores (2
/// images each) the others wait a good part of every pass. Decoding several batches per pass
/// evens that out.
const IMAGES_PER_THREAD: usize = 8;
/// At most this many batches per pass (their pixels are held until the pass ends).
const MAX_GROUP: usize = 8;

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

/// One sample decoded and preprocessed: its tensor and label, or why it was skipped.
type Decoded = Result<(Vec<f32>, i64), Skipped>;

/// Decodes sample `i` of a batch; eval preprocessing unless `augment` is given.
fn load_sample(i: usize, s: &Sample, pre: &Preprocessor, augment: Option<Augmented>) -> Decoded {
    let fail = |e: String| (s.path.clone(), e);
    let bytes = std::fs::read(&s.path).map_err(|e| fail(e.to_string()))?;
    let img = pre.decode(&bytes).map_err(|e| fail(e.to_string()))?;
    let tensor = match augment {
        // One RNG per sample, seeded by (batch seed, position): the same seed gives the same
        // batch whatever the thread scheduling and however batches are grouped.
        Some(a) => a.augment.apply(
            &img,
            pre,
            &mut StdRng::seed_from_u64(a.seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        ),
        None => pre.tensor_from_image(&img),
    };
    Ok((tensor, s.label as i64))
}

/// Assembles one batch from its decoded samples, in order.
fn assemble(decoded: impl Iterator<Item = Decoded>) -> Batch {
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

/// Decodes several batches in one parallel pass over all their samples (each with its own
/// batch's augmentation), so that no core waits at the end of every batch.
fn load_group<'a>(group: &[(&[Sample], Option<Augmented<'a>>)], pre: &Preprocessor) -> Vec<Batch> {
    let jobs: Vec<(usize, usize, &Sample)> = group
        .iter()
        .enumerate()
        .flat_map(|(b, (samples, _))| samples.iter().enumerate().map(move |(i, s)| (b, i, s)))
        .collect();
    let mut decoded: Vec<Decoded> = jobs
        .par_iter()
        .map(|&(b, i, s)| load_sample(i, s, pre, group[b].1))
        .collect();
    let mut batches = Vec::with_capacity(group.len());
    for (samples, _) in group.iter().rev() {
        let tail = decoded.split_off(decoded.len() - samples.len());
        batches.push(assemble(tail.into_iter()));
    }
    batches.reverse();
    batches
}

/// Batches per parallel pass for batches of `batch_size` on this many threads.
fn group_size(batch_size: usize) -> usize {
    let per_pass = IMAGES_PER_THREAD * rayon::current_num_threads();
    per_pass.div_ceil(batch_size.max(1)).clamp(1, MAX_GROUP)
}

/// Runs `consume(step, batch)` over `batches` (each a list of samples, numbered from
/// `first_step`) while a producer thread decodes the next ones, a few batches per parallel pass
/// ([`group_size`]). `augment` maps a step to its augmentation (`None`: eval preprocessing).
/// `consume` returns `false` to stop early.
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
            let group = group_size(batches.first().map_or(1, Vec::len));
            for (g, chunk) in batches.chunks(group).enumerate() {
                let first = first_step + g * group;
                let jobs: Vec<_> = chunk
                    .iter()
                    .enumerate()
                    .map(|(i, samples)| (samples.as_slice(), augment(first + i)))
                    .collect();
                for (i, batch) in load_group(&jobs, pre).into_iter().enumerate() {
                    // The consumer hung up: it stopped early or failed.
                    if tx.send((first + i, batch)).is_err() {
                        return;
                    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::augment::Augment;

    /// One batch decoded alone, on all cores: what the grouped path must reproduce.
    fn load_batch(samples: &[Sample], pre: &Preprocessor, augment: Option<Augmented>) -> Batch {
        let decoded: Vec<Decoded> = samples
            .par_iter()
            .enumerate()
            .map(|(i, s)| load_sample(i, s, pre, augment))
            .collect();
        assemble(decoded.into_iter())
    }

    /// Batches decoded in groups are the batches decoded one at a time, bit for bit (and in
    /// order), with a failing file in the middle.
    #[test]
    fn grouped_decoding_gives_the_same_batches() {
        let photos =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/photos");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&photos)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files.insert(3, photos.join("no-such-photo.jpg"));
        let samples: Vec<Sample> = files
            .into_iter()
            .enumerate()
            .map(|(i, path)| Sample { path, label: i % 3 })
            .collect();
        let batches: Vec<Vec<Sample>> = samples.chunks(3).map(<[Sample]>::to_vec).collect();
        let pre = Preprocessor::new(40, 32).unwrap();
        let augment = Augment::recipe(32);
        let aug = |step: usize| {
            Some(Augmented {
                augment: &augment,
                seed: 100 + step as u64,
            })
        };

        let one_by_one: Vec<Batch> = batches
            .iter()
            .enumerate()
            .map(|(i, b)| load_batch(b, &pre, aug(5 + i)))
            .collect();
        let mut streamed = Vec::new();
        for_each_batch(batches.clone(), 5, &pre, aug, |step, batch| {
            streamed.push((step, batch));
            Ok(true)
        })
        .unwrap();
        assert_eq!(streamed.len(), one_by_one.len());
        for (i, ((step, got), want)) in streamed.iter().zip(&one_by_one).enumerate() {
            assert_eq!(*step, 5 + i);
            assert_eq!(got.labels, want.labels);
            assert_eq!(got.failed, want.failed);
            assert!(
                got.images
                    .iter()
                    .zip(&want.images)
                    .all(|(a, b)| a.to_bits() == b.to_bits())
            );
            assert_eq!(got.images.len(), want.images.len());
        }
        assert_eq!(
            one_by_one[1].failed.len(),
            1,
            "the missing photo is reported"
        );

        let grouped = load_group(
            &batches
                .iter()
                .enumerate()
                .map(|(i, b)| (b.as_slice(), aug(5 + i)))
                .collect::<Vec<_>>(),
            &pre,
        );
        for (got, want) in grouped.iter().zip(&one_by_one) {
            assert_eq!(got.labels, want.labels);
            assert!(
                got.images
                    .iter()
                    .zip(&want.images)
                    .all(|(a, b)| a.to_bits() == b.to_bits())
            );
        }
    }
}
