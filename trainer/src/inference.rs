//! Running a bundle on image files: decode in parallel, batch, forward, read back.

use anyhow::{Context, Result};
use burn::prelude::*;
use petal_shared::classify::softmax;
use petal_shared::model::FoldedResNet;
use petal_shared::{Bundle, BundleMeta, ComputePrecision, Network as Model, Preprocessor};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// A loaded bundle on a device, ready to classify.
pub struct Classifier {
    pub meta: BundleMeta,
    pub preprocessor: Preprocessor,
    /// Test-time augmentation: average the probabilities of each image and its mirror image.
    pub tta: bool,
    net: Network,
}

/// The network that computes the logits.
enum Network {
    /// burn's module on a GPU, or on the CPU for a network the folded form does not cover.
    /// Boxed: the module's struct is large and there is one per process.
    Burn { model: Box<Model>, device: Device },
    /// A ResNet on the CPU: BatchNorm folded into the convolutions, channels-last kernels.
    Folded(FoldedResNet),
}

impl Network {
    fn burn(model: Model, device: Device, precision: ComputePrecision) -> Self {
        Network::Burn {
            model: Box::new(model.with_precision(precision)),
            device,
        }
    }
}

/// One input's outcome: its logits, or why it could not be read. With test-time augmentation
/// the "logits" are the log of the averaged probabilities, so a softmax of them gives exactly
/// that average and every consumer stays the same.
pub type Outcome = Result<Vec<f32>, String>;

impl Classifier {
    /// Loads a bundle for inference on `device`, computing in `precision`. On the CPU a ResNet
    /// is folded for inference ([`FoldedResNet`], f32) unless `PETAL_NO_FOLD` is set (a switch
    /// for comparisons).
    pub fn load(path: &Path, device: Device, precision: ComputePrecision) -> Result<Self> {
        let fold = device == Device::flex() && std::env::var_os("PETAL_NO_FOLD").is_none();
        let Bundle { meta, model } = Bundle::load(path, &device)
            .with_context(|| format!("cannot load bundle {}", path.display()))?;
        let net = match model.into_resnet() {
            // The burn module is dropped once folded: only one copy of the weights stays.
            Ok(resnet) if fold => Network::Folded(
                FoldedResNet::new(resnet)
                    .with_context(|| format!("cannot prepare {} for the CPU", path.display()))?,
            ),
            Ok(resnet) => Network::burn(resnet.into(), device, precision),
            Err(other) => Network::burn(*other, device, precision),
        };
        Ok(Self {
            preprocessor: meta.preprocessor(),
            meta,
            tta: false,
            net,
        })
    }

    pub fn classes(&self) -> &[String] {
        &self.meta.classes
    }

    /// Logits for a batch of preprocessed `[3, S, S]` tensors.
    pub fn logits(&self, inputs: &[Vec<f32>]) -> Result<Vec<Vec<f32>>> {
        let side = self.preprocessor.image_size;
        let flat: Vec<f32> = inputs.iter().flatten().copied().collect();
        let classes = self.meta.classes.len();
        let rows = |values: Vec<f32>| -> Vec<Vec<f32>> {
            values.chunks(classes).map(<[f32]>::to_vec).collect()
        };
        if !self.tta {
            return Ok(rows(self.forward(flat, inputs.len(), side)?));
        }
        // Each image's mirror: reverse every row of every channel plane.
        let mut mirrored = flat.clone();
        mirrored.chunks_mut(side).for_each(<[f32]>::reverse);
        let plain = self.forward(flat, inputs.len(), side)?;
        let mirrored = self.forward(mirrored, inputs.len(), side)?;
        Ok(plain
            .chunks(classes)
            .zip(mirrored.chunks(classes))
            .map(|(a, b)| {
                softmax(a)
                    .iter()
                    .zip(softmax(b))
                    .map(|(p, q)| ((f64::from(*p) + f64::from(q)) / 2.0).ln() as f32)
                    .collect()
            })
            .collect())
    }

    /// `[n, 3, side, side]` images → `[n, classes]` logits, row-major.
    fn forward(&self, images: Vec<f32>, n: usize, side: usize) -> Result<Vec<f32>> {
        match &self.net {
            Network::Folded(net) => Ok(net.forward(&images, n, side, side)),
            Network::Burn { model, device } => {
                let x = Tensor::<4>::from_data(TensorData::new(images, [n, 3, side, side]), device);
                model
                    .forward(x)
                    .into_data()
                    .try_to_vec::<f32>()
                    .map_err(|e| anyhow::anyhow!("cannot read logits back: {e:?}"))
            }
        }
    }

    /// Logits for every file, `batch_size` at a time; unreadable files give an error message
    /// naming the problem and do not stop the others.
    pub fn classify_files(
        &self,
        files: &[PathBuf],
        batch_size: usize,
        mut progress: impl FnMut(usize),
    ) -> Result<Vec<Outcome>> {
        let preprocessor = &self.preprocessor;
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
            // Decoding runs one batch ahead of the network on its own thread (and rayon's
            // pool), so the cores the forward pass leaves idle prepare the next photos.
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Result<Vec<f32>, String>>>(1);
            scope.spawn(move || {
                for chunk in files.chunks(batch_size.max(1)) {
                    let decoded = chunk.par_iter().map(decode).collect();
                    if tx.send(decoded).is_err() {
                        break; // the network side stopped on an error
                    }
                }
            });
            let mut outcomes = Vec::with_capacity(files.len());
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
                    self.logits(&inputs)?
                }
                .into_iter();
                for error in errors {
                    outcomes.push(match error {
                        None => Ok(logits.next().expect("one logits row per decoded image")),
                        Some(e) => Err(e),
                    });
                }
                progress(count);
            }
            Ok(outcomes)
        })
    }
}
