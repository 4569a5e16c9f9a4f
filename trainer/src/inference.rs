//! Running a bundle on image files: decode in parallel, batch, forward, read back.

use anyhow::{Context, Result};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use petal_shared::{Bundle, Preprocessor};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// A loaded bundle on a device, ready to classify.
pub struct Classifier {
    pub bundle: Bundle,
    pub preprocessor: Preprocessor,
    /// Test-time augmentation: average the probabilities of each image and its mirror image.
    pub tta: bool,
    device: Device,
}

/// One input's outcome: its logits, or why it could not be read. With test-time augmentation
/// the "logits" are the log of the averaged probabilities, so a softmax of them gives exactly
/// that average and every consumer stays the same.
pub type Outcome = Result<Vec<f32>, String>;

impl Classifier {
    pub fn load(path: &Path, device: Device) -> Result<Self> {
        let bundle = Bundle::load(path, &device)
            .with_context(|| format!("cannot load bundle {}", path.display()))?;
        let preprocessor = bundle.preprocessor();
        Ok(Self {
            bundle,
            preprocessor,
            tta: false,
            device,
        })
    }

    pub fn classes(&self) -> &[String] {
        &self.bundle.meta.classes
    }

    /// Logits for a batch of preprocessed `[3, S, S]` tensors.
    pub fn logits(&self, inputs: &[Vec<f32>]) -> Result<Vec<Vec<f32>>> {
        let side = self.preprocessor.crop;
        let flat: Vec<f32> = inputs.iter().flatten().copied().collect();
        let x = Tensor::<4>::from_data(
            TensorData::new(flat, [inputs.len(), 3, side, side]),
            &self.device,
        );
        let model = &self.bundle.model;
        let out = if self.tta {
            // x: [N, 3, H, W]; flipping dimension 3 mirrors every image left to right.
            let probs =
                softmax(model.forward(x.clone()), 1) + softmax(model.forward(x.flip([3])), 1);
            probs.div_scalar(2.0).log()
        } else {
            model.forward(x)
        };
        let classes = out.dims()[1];
        let values = out
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("cannot read logits back: {e:?}"))?;
        Ok(values.chunks(classes).map(<[f32]>::to_vec).collect())
    }

    /// Logits for every file, `batch_size` at a time; unreadable files give an error message
    /// naming the problem and do not stop the others.
    pub fn classify_files(
        &self,
        files: &[PathBuf],
        batch_size: usize,
        mut progress: impl FnMut(usize),
    ) -> Result<Vec<Outcome>> {
        let mut outcomes = Vec::with_capacity(files.len());
        for chunk in files.chunks(batch_size.max(1)) {
            let decoded: Vec<Result<Vec<f32>, String>> = chunk
                .par_iter()
                .map(|path| {
                    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
                    if self.preprocessor.allow_truncated
                        && petal_shared::preprocess::jpeg_is_truncated(&bytes)
                    {
                        eprintln!(
                            "warning: {}: image file is truncated; classifying what it holds",
                            path.display()
                        );
                    }
                    self.preprocessor
                        .tensor_from_bytes(&bytes)
                        .map_err(|e| e.to_string())
                })
                .collect();
            let ok: Vec<Vec<f32>> = decoded
                .iter()
                .filter_map(|d| d.as_ref().ok().cloned())
                .collect();
            let mut logits = if ok.is_empty() {
                Vec::new()
            } else {
                self.logits(&ok)?
            }
            .into_iter();
            for d in decoded {
                outcomes.push(match d {
                    Ok(_) => Ok(logits.next().expect("one logits row per decoded image")),
                    Err(e) => Err(e),
                });
            }
            progress(chunk.len());
        }
        Ok(outcomes)
    }
}
