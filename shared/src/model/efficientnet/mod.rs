//! torchvision's EfficientNet (Tan & Le, "EfficientNet: Rethinking Model Scaling for
//! Convolutional Neural Networks"), B0, one definition for every burn backend.
//!
//! The network is a 3×3 stride-2 stem, seven stages of MBConv blocks (inverted residuals:
//! 1×1 expansion, depthwise convolution, squeeze-excitation, 1×1 projection), a 1×1
//! convolution to 1280 channels, global average pooling, dropout and the linear classifier.
//! Every convolution is followed by torchvision's default `BatchNorm2d` (eps 1e-5, momentum
//! 0.1), which is Petal's [`BatchNorm`] default, and all activations are SiLU.
//!
//! Field names follow torchvision's structure (`stem`, `stage1..stage7` for `features.1..7`,
//! `last_conv` for `features.8`, `classifier` for `classifier.1`); `family` holds the
//! few rules that map torchvision's `nn.Sequential` indices onto them.

mod family;

pub(crate) use family::FAMILY;

use crate::model::stochastic_depth::drop_path;
use crate::model::{Arch, BatchNorm, BatchNormConfig, Family, Maps, Precision};
use burn::module::{Flag, Initializer, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::{relu, sigmoid, silu};

/// Expansion ratio of each stage's blocks (torchvision's `_efficientnet_conf`, the same for
/// B0 to B7).
const EXPAND: [usize; 7] = [1, 6, 6, 6, 6, 6, 6];
/// Depthwise kernel of each stage.
const KERNEL: [usize; 7] = [3, 3, 5, 3, 5, 5, 3];
/// Stride of each stage's first block (the others stride 1).
const STRIDE: [usize; 7] = [1, 2, 2, 2, 1, 2, 1];

/// Builds an [`EfficientNet`]: the size and the classification head.
#[derive(Config, Debug)]
pub struct EfficientNetConfig {
    /// One of the EfficientNet sizes ([`Family::EfficientNet`]).
    pub arch: Arch,
    /// Outputs of the head (1000 for ImageNet weights; the user's class count after
    /// fine-tuning).
    pub num_classes: usize,
    /// Total stochastic depth: block `i` of `n` skips its residual branch in training with
    /// probability `stochastic_depth · i / n` (torchvision's rule, so the last block's
    /// probability stays below this value). torchvision trains EfficientNet with 0.2.
    #[config(default = 0.2)]
    pub stochastic_depth: f64,
    /// Dropout before the classifier in training (torchvision's B0: 0.2).
    #[config(default = 0.2)]
    pub dropout: f64,
}

/// torchvision's EfficientNet: `features.0` (stem), `features.1..=7` (MBConv stages),
/// `features.8` (1×1 convolution to `4 × widths[6]` channels), average pooling, then
/// `classifier` = dropout + linear layer.
#[derive(Module, Debug)]
pub struct EfficientNet {
    /// `features.0`: 3×3 stride-2 convolution, BatchNorm, SiLU.
    pub stem: ConvBn,
    /// `features.1`.
    pub stage1: Vec<MBConv>,
    /// `features.2`.
    pub stage2: Vec<MBConv>,
    /// `features.3`.
    pub stage3: Vec<MBConv>,
    /// `features.4`.
    pub stage4: Vec<MBConv>,
    /// `features.5`.
    pub stage5: Vec<MBConv>,
    /// `features.6`.
    pub stage6: Vec<MBConv>,
    /// `features.7`.
    pub stage7: Vec<MBConv>,
    /// `features.8`: 1×1 convolution to the head's width, BatchNorm, SiLU.
    pub last_conv: ConvBn,
    /// `classifier.0`: active only in training (autodiff device, not frozen).
    pub dropout: Dropout,
    /// `classifier.1`.
    pub classifier: Linear,
    /// How the convolutions and the classifier compute; not part of the weights.
    #[module(skip)]
    pub precision: Precision,
}

/// A bias-free convolution followed by BatchNorm (torchvision's `Conv2dNormActivation`
/// without its activation, which the caller applies: the projection of an MBConv has none).
/// torchvision's keys `….0.*` and `….1.*` map to `conv` and `bn`.
#[derive(Module, Debug)]
pub struct ConvBn {
    pub conv: Conv2d,
    pub bn: BatchNorm,
}

/// Squeeze-and-excitation: per-channel gates from the block's pooled activations,
/// `x · sigmoid(fc2(silu(fc1(mean(x)))))`, with 1×1 convolutions `fc1`, `fc2` (with bias).
#[derive(Module, Debug)]
pub struct SqueezeExcitation {
    pub fc1: Conv2d,
    pub fc2: Conv2d,
}

/// torchvision's `MBConv`: `expand` (absent when the expansion ratio is 1), `depthwise`,
/// `se`, `project`; the input is added back when the block keeps its shape.
#[derive(Module, Debug)]
pub struct MBConv {
    /// 1×1 convolution to `expand_ratio ×` the input channels, BatchNorm, SiLU.
    pub expand: Option<ConvBn>,
    /// `k × k` depthwise convolution (one group per channel), BatchNorm, SiLU.
    pub depthwise: ConvBn,
    pub se: SqueezeExcitation,
    /// 1×1 convolution to the output channels, BatchNorm, no activation.
    pub project: ConvBn,
    /// Whether the input is added to the output (stride 1 and as many outputs as inputs).
    pub residual: bool,
    /// Stochastic-depth probability of this block (used only with the residual).
    pub drop_prob: f64,
    /// Whether the block trains (stochastic depth on); cleared by `freeze`, like burn's
    /// `Dropout`.
    pub training: Param<Flag>,
}

/// Every intermediate activation of one forward pass, for parity tests. torchvision's
/// `features[i]` outputs are `stem` (i = 0), `stages[i - 1]` (1..=7) and `last` (8).
#[derive(Debug, Clone)]
pub struct EfficientNetStages {
    /// After the stem: `[N, 32, H/2, W/2]` (B0).
    pub stem: Tensor<4>,
    /// Each stage's output, `[N, C, H/s, W/s]` with (C, s) = (16, 2), (24, 4), (40, 8),
    /// (80, 16), (112, 16), (192, 32), (320, 32) for B0.
    pub stages: Vec<Tensor<4>>,
    /// After `features.8`: `[N, 1280, H/32, W/32]` (B0).
    pub last: Tensor<4>,
    /// Pooled: `[N, 1280]`.
    pub features: Tensor<2>,
    /// `[N, num_classes]`.
    pub logits: Tensor<2>,
}

/// torchvision's conv init, `kaiming_normal_(mode="fan_out")`: N(0, 2 / fan_out) with
/// PyTorch's fan-out `out_channels · k · k`, which ignores groups. burn's own Kaiming fan-out
/// divides by the groups, which would make a depthwise convolution's weights √C times larger.
fn conv_init(out_channels: usize, kernel: usize) -> Initializer {
    Initializer::Normal {
        mean: 0.0,
        std: (2.0 / (out_channels * kernel * kernel) as f64).sqrt(),
    }
}

/// A `k × k` convolution with torchvision's padding `(k - 1) / 2`.
fn conv(
    channels: [usize; 2],
    kernel: usize,
    stride: usize,
    groups: usize,
    bias: bool,
    device: &Device,
) -> Conv2d {
    let p = (kernel - 1) / 2;
    let mut conv = Conv2dConfig::new(channels, [kernel, kernel])
        .with_stride([stride, stride])
        .with_groups(groups)
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .with_bias(bias)
        .with_initializer(conv_init(channels[1], kernel))
        .init(device);
    conv.bias = conv.bias.map(|b| Param::from_tensor(b.val().zeros_like()));
    conv
}

/// torchvision's classifier init: uniform in ±1/√out_features, zero bias.
fn linear(d_in: usize, d_out: usize, device: &Device) -> Linear {
    let range = 1.0 / (d_out as f64).sqrt();
    let mut layer = LinearConfig::new(d_in, d_out)
        .with_initializer(Initializer::Uniform {
            min: -range,
            max: range,
        })
        .init(device);
    layer.bias = layer.bias.map(|b| Param::from_tensor(b.val().zeros_like()));
    layer
}

impl ConvBn {
    fn new(
        channels: [usize; 2],
        kernel: usize,
        stride: usize,
        groups: usize,
        device: &Device,
    ) -> Self {
        Self {
            conv: conv(channels, kernel, stride, groups, false, device),
            bn: BatchNormConfig::new(channels[1]).init(device),
        }
    }

    /// `[N, C_in, H, W]` → `[N, C_out, H / stride, W / stride]` (rounded up).
    pub fn forward(&self, x: Tensor<4>, precision: Precision) -> Tensor<4> {
        self.bn.forward(precision.conv(&self.conv, x))
    }

    fn out_channels(&self) -> usize {
        self.conv.weight.dims()[0]
    }
}

impl SqueezeExcitation {
    /// `[N, C, H, W]` → `[N, C, H, W]`.
    pub fn forward(&self, x: Tensor<4>, precision: Precision) -> Tensor<4> {
        let [n, c, h, w] = x.dims();
        let pooled = x
            .clone()
            .reshape([n, c, h * w])
            .mean_dim(2)
            .reshape([n, c, 1, 1]);
        let scale = silu(precision.conv(&self.fc1, pooled));
        let scale = sigmoid(precision.conv(&self.fc2, scale));
        x * scale
    }
}

impl MBConv {
    /// torchvision's block for `input → output` channels; `squeeze` is computed from the
    /// block's input channels (`max(1, input / 4)`), not the expanded ones.
    fn new(
        channels: [usize; 2],
        expand_ratio: usize,
        kernel: usize,
        stride: usize,
        drop_prob: f64,
        device: &Device,
    ) -> Self {
        let [input, output] = channels;
        let expanded = input * expand_ratio;
        let squeeze = (input / 4).max(1);
        Self {
            expand: (expanded != input).then(|| ConvBn::new([input, expanded], 1, 1, 1, device)),
            depthwise: ConvBn::new([expanded, expanded], kernel, stride, expanded, device),
            se: SqueezeExcitation {
                fc1: conv([expanded, squeeze], 1, 1, 1, true, device),
                fc2: conv([squeeze, expanded], 1, 1, 1, true, device),
            },
            project: ConvBn::new([expanded, output], 1, 1, 1, device),
            residual: stride == 1 && input == output,
            drop_prob,
            training: Param::from_bool(true),
        }
    }

    /// `[N, C_in, H, W]` → `[N, C_out, H / stride, W / stride]` (rounded up).
    pub fn forward(&self, x: Tensor<4>, precision: Precision) -> Tensor<4> {
        let mut y = x.clone();
        if let Some(expand) = &self.expand {
            y = silu(expand.forward(y, precision));
        }
        let y = silu(self.depthwise.forward(y, precision));
        let y = self
            .project
            .forward(self.se.forward(y, precision), precision);
        if self.residual {
            x + drop_path(y, self.drop_prob, &self.training)
        } else {
            y
        }
    }

    /// The block's BatchNorm layers, in order.
    fn batch_norms(&self) -> impl Iterator<Item = &BatchNorm> {
        self.expand
            .iter()
            .chain([&self.depthwise, &self.project])
            .map(|c| &c.bn)
    }
}

impl EfficientNetConfig {
    /// A freshly initialised network (torchvision's init).
    ///
    /// # Panics
    /// If `arch` is not an EfficientNet ([`NetworkConfig`](crate::model::NetworkConfig) builds any
    /// arch).
    pub fn init(&self, device: &Device) -> EfficientNet {
        let Family::EfficientNet {
            stem,
            widths,
            depths,
        } = self.arch.family()
        else {
            panic!("{} is not an EfficientNet", self.arch);
        };
        let total: usize = depths.iter().sum();
        let mut index = 0;
        let mut input = stem;
        let stages: [Vec<MBConv>; 7] = std::array::from_fn(|s| {
            (0..depths[s])
                .map(|i| {
                    let stride = if i == 0 { STRIDE[s] } else { 1 };
                    let drop_prob = self.stochastic_depth * index as f64 / total as f64;
                    let block = MBConv::new(
                        [input, widths[s]],
                        EXPAND[s],
                        KERNEL[s],
                        stride,
                        drop_prob,
                        device,
                    );
                    index += 1;
                    input = widths[s];
                    block
                })
                .collect()
        });
        let [stage1, stage2, stage3, stage4, stage5, stage6, stage7] = stages;
        let features = self.arch.feature_dim();
        EfficientNet {
            stem: ConvBn::new([3, stem], 3, 2, 1, device),
            stage1,
            stage2,
            stage3,
            stage4,
            stage5,
            stage6,
            stage7,
            last_conv: ConvBn::new([widths[6], features], 1, 1, 1, device),
            dropout: DropoutConfig::new(self.dropout).init(),
            classifier: linear(features, self.num_classes, device),
            precision: Precision::F32,
        }
    }
}

/// `[N, C, h, w]` → `[N, C]`, the mean over positions.
fn pool(x: Tensor<4>) -> Tensor<2> {
    let [n, c, h, w] = x.dims();
    x.reshape([n, c, h * w]).mean_dim(2).reshape([n, c])
}

impl EfficientNet {
    /// Classification logits.
    ///
    /// - `images`: `[N, 3, H, W]`, normalised (224 for ImageNet weights; any size from 1
    ///   works, each stride-2 layer rounds up)
    /// - returns: `[N, num_classes]`
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.head(self.last_stage(images))
    }

    /// The same network computing in `precision` (see [`Precision`]); the weights
    /// stay f32.
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// Pooled features before the head's dropout and linear layer: `[N, 3, H, W]` →
    /// `[N, feature_dim]`.
    pub fn features(&self, images: Tensor<4>) -> Tensor<2> {
        pool(self.last_stage(images))
    }

    /// `[N, 3, H, W]` → the output of `features.8`, `[N, feature_dim, H/32, W/32]`.
    pub fn last_stage(&self, images: Tensor<4>) -> Tensor<4> {
        let p = self.precision;
        let x = self.stem(images);
        let x = self
            .blocks()
            .into_iter()
            .fold(x, |x, stage| run(stage, x, p));
        self.last_conv(x)
    }

    /// The head on the last stage's output (average pooling, dropout in training, the linear
    /// layer): `[N, feature_dim, h, w]` → `[N, num_classes]`.
    pub fn head(&self, last: Tensor<4>) -> Tensor<2> {
        let pooled = self.dropout.forward(pool(last));
        self.precision.linear(&self.classifier, pooled)
    }

    /// The same computation as [`forward`](Self::forward) in evaluation, keeping every
    /// stage's output.
    pub fn stages(&self, images: Tensor<4>) -> EfficientNetStages {
        let p = self.precision;
        let stem = self.stem(images);
        let mut x = stem.clone();
        let mut stages = Vec::with_capacity(7);
        for stage in self.blocks() {
            x = run(stage, x, p);
            stages.push(x.clone());
        }
        let last = self.last_conv(x);
        let features = pool(last.clone());
        let logits = self.precision.linear(&self.classifier, features.clone());
        EfficientNetStages {
            stem,
            stages,
            last,
            features,
            logits,
        }
    }

    /// Logits and class maps: the linear layer applied to the last stage at every position
    /// (CAM; see [`crate::cam`]). Dropout is the identity outside training, so the head is
    /// average pooling then a linear layer, as for a ResNet.
    ///
    /// - `images`: `[N, 3, H, W]`
    /// - returns: `([N, classes], [N, H/32, W/32, classes])`; each map's mean is its logit.
    pub fn class_maps(&self, images: Tensor<4>) -> (Tensor<2>, Tensor<4>) {
        let last = self.last_stage(images);
        let [n, c, h, w] = last.dims();
        let logits = self.precision.linear(&self.classifier, pool(last.clone()));
        let positions = last.permute([0, 2, 3, 1]).reshape([n * h * w, c]);
        let maps = self.precision.linear(&self.classifier, positions);
        let classes = maps.dims()[1];
        (logits, maps.reshape([n, h, w, classes]))
    }

    /// Logits, class maps and Grad-CAM maps of every class from one pass (see [`Maps`]). The
    /// head is average pooling then a linear layer, so each logit's gradient at every
    /// position is the class's weights over the grid's size: Grad-CAM is the positive part of
    /// the class map without the class's bias, over the grid's size.
    pub fn maps(&self, images: Tensor<4>) -> Maps {
        let (logits, cam) = self.class_maps(images);
        let [_, h, w, classes] = cam.dims();
        let unbiased = match &self.classifier.bias {
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

    /// The seven MBConv stages, `features.1..=7`.
    pub fn blocks(&self) -> [&Vec<MBConv>; 7] {
        [
            &self.stage1,
            &self.stage2,
            &self.stage3,
            &self.stage4,
            &self.stage5,
            &self.stage6,
            &self.stage7,
        ]
    }

    /// The seven MBConv stages, to change in place.
    pub fn blocks_mut(&mut self) -> [&mut Vec<MBConv>; 7] {
        [
            &mut self.stage1,
            &mut self.stage2,
            &mut self.stage3,
            &mut self.stage4,
            &mut self.stage5,
            &mut self.stage6,
            &mut self.stage7,
        ]
    }

    /// Every BatchNorm layer, stem first.
    pub fn batch_norms(&self) -> Vec<&BatchNorm> {
        std::iter::once(&self.stem.bn)
            .chain(
                self.blocks()
                    .into_iter()
                    .flatten()
                    .flat_map(MBConv::batch_norms),
            )
            .chain(std::iter::once(&self.last_conv.bn))
            .collect()
    }

    /// Folds every BatchNorm's pending running-statistics update into its stored value (see
    /// [`ResNet::sync_running_stats`](super::ResNet::sync_running_stats): burn keeps the
    /// latest training step's update aside until the next one). Call it on the thread that
    /// ran the training steps.
    pub fn sync_running_stats(&self) {
        for bn in self.batch_norms() {
            bn.running_mean.value_sync();
            bn.running_var.value_sync();
        }
    }

    /// Number of classes the head predicts.
    pub fn num_classes(&self) -> usize {
        self.classifier.weight.dims()[1]
    }

    /// The size this network has (read from its layers).
    pub fn arch(&self) -> Arch {
        let blocks = self.blocks();
        let family = Family::EfficientNet {
            stem: self.stem.out_channels(),
            widths: blocks.map(|s| s.last().map_or(0, |b| b.project.out_channels())),
            depths: blocks.map(Vec::len),
        };
        Arch::from_family(family).expect("EfficientNetConfig only builds torchvision's sizes")
    }

    /// Replaces the classifier's linear layer with a freshly initialised one for
    /// `num_classes` outputs.
    pub fn with_new_head(mut self, num_classes: usize) -> Self {
        let device = self.classifier.weight.device();
        let [features, _] = self.classifier.weight.dims();
        self.classifier = linear(features, num_classes, &device);
        self
    }

    /// `features.0`: `[N, 3, H, W]` → `[N, stem, H/2, W/2]`.
    fn stem(&self, images: Tensor<4>) -> Tensor<4> {
        silu(self.stem.forward(images, self.precision))
    }

    /// `features.8`: `[N, widths[6], h, w]` → `[N, feature_dim, h, w]`.
    fn last_conv(&self, x: Tensor<4>) -> Tensor<4> {
        silu(self.last_conv.forward(x, self.precision))
    }
}

fn run(blocks: &[MBConv], x: Tensor<4>, precision: Precision) -> Tensor<4> {
    blocks
        .iter()
        .fold(x, |x, block| block.forward(x, precision))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    #[test]
    fn shapes_follow_torchvision() {
        let device = Device::flex();
        let model = EfficientNetConfig::new(Arch::EfficientNetB0, 5).init(&device);
        let s = model.stages(Tensor::<4>::zeros([2, 3, 64, 64], &device));
        assert_eq!(s.stem.dims(), [2, 32, 32, 32]);
        let dims: Vec<[usize; 4]> = s.stages.iter().map(Tensor::dims).collect();
        assert_eq!(
            dims,
            [
                [2, 16, 32, 32],
                [2, 24, 16, 16],
                [2, 40, 8, 8],
                [2, 80, 4, 4],
                [2, 112, 4, 4],
                [2, 192, 2, 2],
                [2, 320, 2, 2],
            ]
        );
        assert_eq!(s.last.dims(), [2, 1280, 2, 2]);
        assert_eq!(s.features.dims(), [2, 1280]);
        assert_eq!(s.logits.dims(), [2, 5]);
        assert_eq!(model.num_classes(), 5);
        assert_eq!(model.arch(), Arch::EfficientNetB0);
        let (logits, maps) = model.class_maps(Tensor::<4>::zeros([1, 3, 64, 64], &device));
        assert_eq!((logits.dims(), maps.dims()), ([1, 5], [1, 2, 2, 5]));
    }

    #[test]
    fn parameter_count_matches_torchvision() {
        // `sum(p.numel() for p in efficientnet_b0().parameters())` (torchvision 0.14) plus the
        // BatchNorm running mean/var buffers (42,016 values), which burn's `num_params` also
        // counts.
        let device = Device::flex();
        let model = EfficientNetConfig::new(Arch::EfficientNetB0, 1000).init(&device);
        assert_eq!(model.num_params(), 5_288_548 + 42_016);
        assert_eq!(model.batch_norms().len(), 49);
    }

    #[test]
    fn blocks_follow_torchvisions_table() {
        let device = Device::flex();
        let model = EfficientNetConfig::new(Arch::EfficientNetB0, 5).init(&device);
        let blocks: Vec<&MBConv> = model.blocks().into_iter().flatten().collect();
        assert_eq!(blocks.len(), 16);
        // Only the first stage (ratio 1) has no expansion.
        assert!(model.stage1[0].expand.is_none());
        assert!(blocks[1..].iter().all(|b| b.expand.is_some()));
        // The residual is every block but each stage's first (which changes the width).
        let residual = blocks.iter().filter(|b| b.residual).count();
        assert_eq!(residual, 16 - 7);
        // Depthwise: one group per channel; squeeze-excitation on a quarter of the input.
        let b = &model.stage6[0];
        assert_eq!(b.depthwise.conv.groups, 672);
        assert_eq!(b.depthwise.conv.weight.dims(), [672, 1, 5, 5]);
        assert_eq!(b.se.fc1.weight.dims(), [28, 672, 1, 1]);
        assert_eq!(model.stage1[0].se.fc1.weight.dims(), [8, 32, 1, 1]);
    }

    #[test]
    fn stochastic_depth_rises_linearly_below_the_total() {
        let device = Device::flex();
        let model = EfficientNetConfig::new(Arch::EfficientNetB0, 5).init(&device);
        let probs: Vec<f64> = model
            .blocks()
            .into_iter()
            .flatten()
            .map(|b| b.drop_prob)
            .collect();
        // torchvision: `0.2 * block_id / 16`.
        for (i, p) in probs.iter().enumerate() {
            assert!((p - 0.2 * i as f64 / 16.0).abs() < 1e-12, "block {i}: {p}");
        }
        assert!((probs[15] - 0.1875).abs() < 1e-12);
    }

    #[test]
    fn f16_logits_stay_near_f32() {
        let device = Device::flex();
        let model = EfficientNetConfig::new(Arch::EfficientNetB0, 5).init(&device);
        let x = Tensor::<4>::random([1, 3, 64, 64], Distribution::Default, &device);
        let full = model.forward(x.clone());
        let half = model.with_precision(Precision::F16).forward(x);
        let gap = (half - full.clone()).abs().max().into_scalar::<f32>();
        let scale = full.abs().max().into_scalar::<f32>();
        assert!(
            gap > 0.0,
            "the f16 path gave exactly the f32 logits: it did not run"
        );
        assert!(
            gap < 3e-2 * scale.max(1e-3),
            "f16 vs f32: {gap} (scale {scale})"
        );
    }

    #[test]
    fn weights_round_trip_through_burnpack() {
        use super::super::{Network, NetworkConfig};
        use burn::store::BurnpackStore;
        let device = Device::flex();
        let original = NetworkConfig::new(Arch::EfficientNetB0, 3).init(&device);
        let mut store = BurnpackStore::from_bytes(None);
        original.save_tensors(&mut store).unwrap();
        let bytes = store.get_bytes().unwrap();
        let mut loaded = NetworkConfig::new(Arch::EfficientNetB0, 3).init(&device);
        let result = loaded
            .load_tensors(&mut BurnpackStore::from_bytes(Some(bytes)))
            .unwrap();
        assert!(
            result.errors.is_empty() && result.missing.is_empty(),
            "{result:?}"
        );
        assert!(matches!(loaded, Network::EfficientNet(_)));
        let x = Tensor::<4>::ones([1, 3, 32, 32], &device);
        assert_eq!(
            original.forward(x.clone()).into_data(),
            loaded.forward(x).into_data()
        );
    }

    #[test]
    fn convolutions_start_as_torchvisions_kaiming_fan_out() {
        // A depthwise 5×5 convolution over 672 channels: std √(2 / (672·25)) ≈ 0.0109, where
        // a fan-out divided by the groups would give √(2/25) ≈ 0.28.
        let device = Device::flex();
        let model = EfficientNetConfig::new(Arch::EfficientNetB0, 5).init(&device);
        let w = model.stage6[0].depthwise.conv.weight.val();
        let std = w.square().mean().sqrt().into_scalar::<f32>();
        let want = (2.0f32 / (672.0 * 25.0)).sqrt();
        assert!((std / want - 1.0).abs() < 0.05, "std {std} vs {want}");
    }
}
