//! torchvision's `StochasticDepth(p, "row")`, shared by the families whose residual blocks
//! skip their branch at random in training (ConvNeXt, EfficientNet).

use burn::module::{Flag, Param};
use burn::prelude::*;
use burn::tensor::Distribution;

/// `branch` (`[N, C, H, W]`) with each sample's values dropped with probability `prob` and the
/// kept ones scaled by `1 / (1 - prob)`, in training only: on an autodiff device, in a block
/// whose `training` flag is set (cleared by `freeze`, like burn's `Dropout`).
pub(crate) fn drop_path(branch: Tensor<4>, prob: f64, training: &Param<Flag>) -> Tensor<4> {
    let device = branch.device();
    if !training.is_enabled() || !device.is_autodiff() || prob == 0.0 {
        return branch;
    }
    let keep = 1.0 - prob;
    let mask = Tensor::<4>::random(
        [branch.dims()[0], 1, 1, 1],
        Distribution::Bernoulli(keep),
        &device,
    );
    branch * mask.div_scalar(keep)
}
