//! torchvision's ResNet family (v1.5): ResNet-18/34/50/101/152. Field names follow
//! torchvision (`conv1`, `bn1`, `layer1..4`, `fc`, `downsample`), so a torchvision
//! `state_dict` maps onto it with the few rules in `family`; [`FoldedResNet`] is its CPU
//! inference form.

mod block;
#[cfg(test)]
mod class_maps_tests;
mod family;
mod folded;

pub use block::{BasicBlock, Block, Bottleneck, Downsample};
pub(crate) use family::FAMILY;
pub use folded::{FoldError, FoldedNetwork, FoldedResNet};

use crate::model::{Arch, BatchNorm, BlockKind, Family, Maps, Precision};
use block::{bn, conv};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;

/// Builds a [`ResNet`]: the depth and the size of the classification head.
#[derive(Config, Debug)]
pub struct ResNetConfig {
    /// One of the ResNet depths ([`Family::ResNet`]).
    pub arch: Arch,
    /// Outputs of `fc` (1000 for ImageNet weights; the user's class count after fine-tuning).
    pub num_classes: usize,
}

/// torchvision's ResNet: stem (`conv1`, `bn1`, ReLU, max-pool), four stages of residual
/// blocks, global average pooling and the linear head `fc`.
#[derive(Module, Debug)]
pub struct ResNet {
    pub conv1: burn::nn::conv::Conv2d,
    pub bn1: BatchNorm,
    pub maxpool: MaxPool2d,
    pub layer1: Vec<Block>,
    pub layer2: Vec<Block>,
    pub layer3: Vec<Block>,
    pub layer4: Vec<Block>,
    pub avgpool: AdaptiveAvgPool2d,
    pub fc: Linear,
    /// How the convolutions and `fc` compute; not part of the weights.
    #[module(skip)]
    pub precision: Precision,
}

/// Every intermediate activation of one forward pass, for parity tests and feature extraction.
#[derive(Debug, Clone)]
pub struct Stages {
    /// After the max-pool: `[N, 64, H/4, W/4]`.
    pub stem: Tensor<4>,
    /// `[N, 64·e, H/4, W/4]` (e = 1 for basic blocks, 4 for bottlenecks).
    pub layer1: Tensor<4>,
    /// `[N, 128·e, H/8, W/8]`.
    pub layer2: Tensor<4>,
    /// `[N, 256·e, H/16, W/16]`.
    pub layer3: Tensor<4>,
    /// `[N, 512·e, H/32, W/32]`.
    pub layer4: Tensor<4>,
    /// Global average of `layer4`: `[N, 512·e]`.
    pub pooled: Tensor<2>,
    /// `fc(pooled)`: `[N, num_classes]`.
    pub logits: Tensor<2>,
}

impl ResNetConfig {
    /// A freshly initialised network (torchvision's init: Kaiming-normal convs, unit BN).
    ///
    /// # Panics
    /// If `arch` is not a ResNet ([`NetworkConfig`](crate::model::NetworkConfig) builds any arch).
    pub fn init(&self, device: &Device) -> ResNet {
        let Family::ResNet { kind, blocks } = self.arch.family() else {
            panic!("{} is not a ResNet", self.arch);
        };
        let mut in_channels = 64;
        let mut stage = |planes: usize, blocks: usize, stride: usize| -> Vec<Block> {
            (0..blocks)
                .map(|i| {
                    let stride = if i == 0 { stride } else { 1 };
                    let block = Block::new(kind, in_channels, planes, stride, device);
                    in_channels = planes * kind.expansion();
                    block
                })
                .collect()
        };
        let [b1, b2, b3, b4] = blocks;
        let layer1 = stage(64, b1, 1);
        let layer2 = stage(128, b2, 2);
        let layer3 = stage(256, b3, 2);
        let layer4 = stage(512, b4, 2);
        ResNet {
            conv1: conv(3, 64, 7, 2, device),
            bn1: bn(64, device),
            maxpool: MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(),
            layer1,
            layer2,
            layer3,
            layer4,
            avgpool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            fc: LinearConfig::new(self.arch.feature_dim(), self.num_classes).init(device),
            precision: Precision::F32,
        }
    }
}

fn run(blocks: &[Block], x: Tensor<4>, precision: Precision) -> Tensor<4> {
    blocks
        .iter()
        .fold(x, |x, block| block.forward(x, precision))
}

impl ResNet {
    /// Classification logits.
    ///
    /// - `images`: `[N, 3, H, W]`, normalised (H, W ≥ 32; 224 for ImageNet weights)
    /// - returns: `[N, num_classes]`
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.head(self.last_stage(images))
    }

    /// The same network computing in `precision` (see [`Precision`]); the weights stay f32.
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// Pooled features before the head: `[N, 3, H, W]` → `[N, feature_dim]`.
    pub fn features(&self, images: Tensor<4>) -> Tensor<2> {
        self.pool(self.last_stage(images))
    }

    /// The last stage's output: `[N, 3, H, W]` → `[N, feature_dim, H/32, W/32]`.
    pub fn last_stage(&self, images: Tensor<4>) -> Tensor<4> {
        let x = self.stem(images);
        let p = self.precision;
        run(
            &self.layer4,
            run(
                &self.layer3,
                run(&self.layer2, run(&self.layer1, x, p), p),
                p,
            ),
            p,
        )
    }

    /// The head on the last stage's output (average pooling, then `fc`):
    /// `[N, feature_dim, h, w]` → `[N, num_classes]`.
    pub fn head(&self, last: Tensor<4>) -> Tensor<2> {
        self.precision.linear(&self.fc, self.pool(last))
    }

    /// The same computation as [`forward`](Self::forward), keeping every stage's output.
    pub fn stages(&self, images: Tensor<4>) -> Stages {
        let stem = self.stem(images);
        let p = self.precision;
        let layer1 = run(&self.layer1, stem.clone(), p);
        let layer2 = run(&self.layer2, layer1.clone(), p);
        let layer3 = run(&self.layer3, layer2.clone(), p);
        let layer4 = run(&self.layer4, layer3.clone(), p);
        let pooled = self.pool(layer4.clone());
        let logits = self.precision.linear(&self.fc, pooled.clone());
        Stages {
            stem,
            layer1,
            layer2,
            layer3,
            layer4,
            pooled,
            logits,
        }
    }

    /// Every BatchNorm layer, stem first.
    pub fn batch_norms(&self) -> Vec<&BatchNorm> {
        let blocks = [&self.layer1, &self.layer2, &self.layer3, &self.layer4];
        std::iter::once(&self.bn1)
            .chain(blocks.into_iter().flatten().flat_map(Block::batch_norms))
            .collect()
    }

    /// Folds every BatchNorm's pending running-statistics update into its stored value. burn
    /// keeps the latest training step's update aside until the next one, so without this a
    /// saved or evaluated network would lag its own training by one step. Call it on the
    /// thread that ran the training steps.
    pub fn sync_running_stats(&self) {
        for bn in self.batch_norms() {
            bn.running_mean.value_sync();
            bn.running_var.value_sync();
        }
    }

    /// The depth this network has (read from its blocks).
    pub fn arch(&self) -> Arch {
        let kind = match self.layer1.first() {
            Some(Block::Bottleneck(_)) => BlockKind::Bottleneck,
            _ => BlockKind::Basic,
        };
        let blocks = [&self.layer1, &self.layer2, &self.layer3, &self.layer4].map(Vec::len);
        Arch::from_family(Family::ResNet { kind, blocks })
            .expect("ResNetConfig only builds torchvision's depths")
    }

    /// Logits and class maps: the head applied to the last stage at every position (CAM; see
    /// [`crate::cam`]).
    ///
    /// - `images`: `[N, 3, H, W]`
    /// - returns: `([N, classes], [N, H/32, W/32, classes])`; each map's mean is its logit.
    pub fn class_maps(&self, images: Tensor<4>) -> (Tensor<2>, Tensor<4>) {
        let stages = self.stages(images);
        let [n, c, h, w] = stages.layer4.dims();
        let positions = stages.layer4.permute([0, 2, 3, 1]).reshape([n * h * w, c]);
        let maps = self.precision.linear(&self.fc, positions);
        let classes = maps.dims()[1];
        (stages.logits, maps.reshape([n, h, w, classes]))
    }

    /// Logits, class maps and Grad-CAM maps of every class from one pass (see [`Maps`]). The
    /// head is average pooling then `fc`, so each logit's gradient at every position is the
    /// class's weights over the grid's size: Grad-CAM is the positive part of the class map
    /// without the class's bias, over the grid's size.
    pub fn maps(&self, images: Tensor<4>) -> Maps {
        let (logits, cam) = self.class_maps(images);
        let [_, h, w, classes] = cam.dims();
        let unbiased = match &self.fc.bias {
            Some(bias) => cam.clone() - bias.val().reshape([1, 1, 1, classes]),
            None => cam.clone(),
        };
        let grad_cam = relu(unbiased).div_scalar((h * w) as f32);
        Maps {
            logits,
            cam,
            grad_cam,
        }
    }

    /// Number of classes the head predicts.
    pub fn num_classes(&self) -> usize {
        self.fc.weight.shape().dims::<2>()[1]
    }

    /// `[N, 3, H, W]` → `[N, 64, H/4, W/4]`.
    fn stem(&self, images: Tensor<4>) -> Tensor<4> {
        let x = relu(self.bn1.forward(self.precision.conv(&self.conv1, images)));
        self.maxpool.forward(x)
    }

    /// `[N, C, h, w]` → `[N, C]`.
    fn pool(&self, x: Tensor<4>) -> Tensor<2> {
        self.avgpool.forward(x).flatten(1, 3)
    }

    /// Replaces the head with a freshly initialised one for `num_classes` outputs.
    pub fn with_new_head(mut self, num_classes: usize) -> Self {
        let device = self.fc.weight.device();
        let [features, _] = self.fc.weight.shape().dims::<2>();
        self.fc = LinearConfig::new(features, num_classes).init(&device);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_follow_torchvision() {
        let device = Device::flex();
        for (arch, feat) in [(Arch::ResNet18, 512), (Arch::ResNet50, 2048)] {
            let model = ResNetConfig::new(arch, 7).init(&device);
            let x = Tensor::<4>::zeros([2, 3, 64, 64], &device);
            let s = model.stages(x);
            assert_eq!(s.stem.dims(), [2, 64, 16, 16]);
            assert_eq!(s.layer1.dims(), [2, feat / 8, 16, 16]);
            assert_eq!(s.layer4.dims(), [2, feat, 2, 2]);
            assert_eq!(s.pooled.dims(), [2, feat]);
            assert_eq!(s.logits.dims(), [2, 7]);
            assert_eq!(model.num_classes(), 7);
        }
    }

    #[test]
    fn parameter_counts_match_torchvision() {
        // torchvision with 1000 classes: `sum(p.numel() for p in m.parameters())` plus the
        // BatchNorm running mean/var buffers, which burn's `num_params` also counts.
        let device = Device::flex();
        let count = |arch| ResNetConfig::new(arch, 1000).init(&device).num_params();
        assert_eq!(count(Arch::ResNet18), 11_689_512 + 9_600);
        assert_eq!(count(Arch::ResNet50), 25_557_032 + 53_120);
    }
}
