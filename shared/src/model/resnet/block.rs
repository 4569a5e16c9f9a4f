//! Residual blocks as torchvision builds them (ResNet v1.5: a bottleneck strides on its 3×3).

use crate::model::{BatchNorm, BatchNormConfig, BlockKind, Precision};
use burn::module::Initializer;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;

/// torchvision's conv init: Kaiming normal, fan-out, ReLU gain.
fn kaiming_fan_out() -> Initializer {
    Initializer::KaimingNormal {
        gain: std::f64::consts::SQRT_2,
        fan_out_only: true,
    }
}

/// A bias-free `k × k` convolution with "same"-style padding `k / 2`.
pub(crate) fn conv(
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    device: &Device,
) -> Conv2d {
    let p = kernel / 2;
    Conv2dConfig::new([in_channels, out_channels], [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .with_bias(false)
        .with_initializer(kaiming_fan_out())
        .init(device)
}

pub(crate) fn bn(channels: usize, device: &Device) -> BatchNorm {
    BatchNormConfig::new(channels).init(device)
}

/// The projection shortcut (`downsample.0` conv 1×1 + `downsample.1` BN in torchvision).
#[derive(Module, Debug)]
pub struct Downsample {
    pub conv: Conv2d,
    pub bn: BatchNorm,
}

impl Downsample {
    fn new(in_channels: usize, out_channels: usize, stride: usize, device: &Device) -> Self {
        Self {
            conv: conv(in_channels, out_channels, 1, stride, device),
            bn: bn(out_channels, device),
        }
    }

    /// `[N, C_in, H, W]` → `[N, C_out, H / stride, W / stride]`.
    pub fn forward(&self, x: Tensor<4>, precision: Precision) -> Tensor<4> {
        self.bn.forward(precision.conv(&self.conv, x))
    }
}

/// Two 3×3 convolutions (ResNet-18/34); the first one strides.
#[derive(Module, Debug)]
pub struct BasicBlock {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub conv2: Conv2d,
    pub bn2: BatchNorm,
    pub downsample: Option<Downsample>,
}

/// 1×1 reduce → 3×3 (strided) → 1×1 expand ×4 (ResNet-50/101/152).
#[derive(Module, Debug)]
pub struct Bottleneck {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub conv2: Conv2d,
    pub bn2: BatchNorm,
    pub conv3: Conv2d,
    pub bn3: BatchNorm,
    pub downsample: Option<Downsample>,
}

/// One residual block of either kind. The variant name does not appear in torchvision's keys;
/// the import skips it.
// Blocks are built once and live in a `Vec`; boxing the larger variant would save a few hundred
// bytes per block at the price of an indirection in every forward.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Block {
    Basic(BasicBlock),
    Bottleneck(Bottleneck),
}

impl Block {
    /// The block's BatchNorm layers, shortcut included.
    pub fn batch_norms(&self) -> Vec<&BatchNorm> {
        let (mut norms, downsample) = match self {
            Block::Basic(b) => (vec![&b.bn1, &b.bn2], &b.downsample),
            Block::Bottleneck(b) => (vec![&b.bn1, &b.bn2, &b.bn3], &b.downsample),
        };
        norms.extend(downsample.as_ref().map(|d| &d.bn));
        norms
    }

    /// A block taking `in_channels` to `planes * expansion` channels, striding by `stride`.
    pub fn new(
        kind: BlockKind,
        in_channels: usize,
        planes: usize,
        stride: usize,
        device: &Device,
    ) -> Self {
        let out_channels = planes * kind.expansion();
        let downsample = (stride != 1 || in_channels != out_channels)
            .then(|| Downsample::new(in_channels, out_channels, stride, device));
        match kind {
            BlockKind::Basic => Block::Basic(BasicBlock {
                conv1: conv(in_channels, planes, 3, stride, device),
                bn1: bn(planes, device),
                conv2: conv(planes, planes, 3, 1, device),
                bn2: bn(planes, device),
                downsample,
            }),
            BlockKind::Bottleneck => Block::Bottleneck(Bottleneck {
                conv1: conv(in_channels, planes, 1, 1, device),
                bn1: bn(planes, device),
                conv2: conv(planes, planes, 3, stride, device),
                bn2: bn(planes, device),
                conv3: conv(planes, out_channels, 1, 1, device),
                bn3: bn(out_channels, device),
                downsample,
            }),
        }
    }

    /// `[N, C_in, H, W]` → `[N, C_out, H / stride, W / stride]`, convolutions in `precision`.
    pub fn forward(&self, x: Tensor<4>, precision: Precision) -> Tensor<4> {
        let conv = |conv: &Conv2d, x| precision.conv(conv, x);
        match self {
            Block::Basic(b) => {
                let identity = match &b.downsample {
                    Some(d) => d.forward(x.clone(), precision),
                    None => x.clone(),
                };
                let out = relu(b.bn1.forward(conv(&b.conv1, x)));
                let out = b.bn2.forward(conv(&b.conv2, out));
                relu(out + identity)
            }
            Block::Bottleneck(b) => {
                let identity = match &b.downsample {
                    Some(d) => d.forward(x.clone(), precision),
                    None => x.clone(),
                };
                let out = relu(b.bn1.forward(conv(&b.conv1, x)));
                let out = relu(b.bn2.forward(conv(&b.conv2, out)));
                let out = b.bn3.forward(conv(&b.conv3, out));
                relu(out + identity)
            }
        }
    }
}
