//! Grad-CAM (Selvaraju et al. 2017): where the evidence for a class is, read from gradients.
//!
//! Each channel of the last stage is weighted by the mean, over the grid, of the gradient of
//! the class's logit with respect to it; the weighted channels are summed and clipped at
//! zero. Unlike [CAM](crate::cam), it takes the head's nonlinearity into account: for a
//! ResNet, whose head is average pooling and one linear layer, Grad-CAM is the positive part
//! of the class map without its bias, divided by the grid's size; ConvNeXt's LayerNorm head
//! makes them differ.
//!
//! The network itself computes as for inference: only the last stage's output is tracked by
//! burn's autodiff, so gradients flow through the head alone and nothing of the backbone is
//! kept for a backward pass.

use crate::cam::CamError;
use crate::model::Network;
use burn::prelude::*;
use burn::tensor::TensorData;
use burn::tensor::activation::relu;

/// One forward pass, ready to explain any class of each image.
pub struct GradCam {
    /// The last stage's output: `[N, C, h, w]`, without autodiff.
    last: Tensor<4>,
    /// The same values as a tracked leaf, which the head read.
    tracked: Tensor<4>,
    /// The head's output on `tracked`: `[N, classes]`.
    logits: Tensor<2>,
}

impl GradCam {
    /// Runs `model` on `images` (`[N, 3, H, W]`); the model may be on any device, with or
    /// without autodiff.
    pub fn new(model: &Network, images: Tensor<4>) -> Self {
        let last = model.last_stage(images).without_autodiff();
        let tracked = last.clone().autodiff().require_grad();
        let logits = model.head(tracked.clone());
        Self {
            last,
            tracked,
            logits,
        }
    }

    /// The logits, `[N, classes]` (the network's output, as `forward` gives it).
    pub fn logits(&self) -> Tensor<2> {
        self.logits.clone().without_autodiff()
    }

    /// The Grad-CAM of class `classes[i]` for each image `i`: `[N, h, w]`, non-negative.
    pub fn maps(self, classes: &[usize]) -> Result<Tensor<3>, CamError> {
        let [n, num_classes] = self.logits.dims();
        if classes.len() != n {
            return Err(CamError::ClassesPerImage {
                classes: classes.len(),
                n,
            });
        }
        let mut pick = vec![0f32; n * num_classes];
        for (i, &class) in classes.iter().enumerate() {
            if class >= num_classes {
                return Err(CamError::NoSuchClass {
                    class,
                    classes: num_classes,
                });
            }
            pick[i * num_classes + class] = 1.0;
        }
        // One backward pass for the whole batch: each image's logits depend on its own
        // features only, so the sum's gradient holds each image's own class gradient.
        let pick =
            Tensor::<2>::from_data(TensorData::new(pick, [n, num_classes]), &self.last.device());
        let grads = (self.logits * pick).sum().backward();
        let grad = self.tracked.grad(&grads).ok_or(CamError::NoGradient)?;
        let [n, c, h, w] = grad.dims();
        let weights = grad.reshape([n, c, h * w]).mean_dim(2); // [n, c, 1]
        let maps = (self.last.reshape([n, c, h * w]) * weights).sum_dim(1);
        Ok(relu(maps).reshape([n, h, w]))
    }
}
