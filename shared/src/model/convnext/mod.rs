//! torchvision's ConvNeXt (Liu et al., "A ConvNet for the 2020s"), one definition for every
//! burn backend.
//!
//! Field names are our own (torchvision's are `nn.Sequential` indices); `family` holds
//! the mapping from torchvision's `state_dict` keys, both ways.

mod family;

pub(crate) use family::FAMILY;

use crate::model::stochastic_depth::drop_path;
use crate::model::{Arch, Family, Maps, Precision};
use burn::module::{Flag, Initializer, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::{gelu, relu};

/// torchvision's LayerNorm epsilon for ConvNeXt (`partial(LayerNorm, eps=1e-6)`).
const LN_EPS: f64 = 1e-6;
/// torchvision's initial value of every block's layer scale.
const LAYER_SCALE: f32 = 1e-6;

/// Builds a [`ConvNeXt`]: the size and the classification head.
#[derive(Config, Debug)]
pub struct ConvNeXtConfig {
    /// One of the ConvNeXt sizes ([`Family::ConvNeXt`]).
    pub arch: Arch,
    /// Outputs of the head (1000 for ImageNet weights; the user's class count after
    /// fine-tuning).
    pub num_classes: usize,
    /// Probability of skipping the last block's residual branch in training (stochastic depth,
    /// per sample); it rises linearly from 0 at the first block. torchvision trains ConvNeXt-T
    /// with 0.1.
    #[config(default = 0.1)]
    pub stochastic_depth: f64,
}

/// torchvision's ConvNeXt: a 4×4 patchify stem, four stages of ConvNeXt blocks with a
/// LayerNorm + 2×2 convolution between them, global average pooling, LayerNorm and the linear
/// head.
#[derive(Module, Debug)]
pub struct ConvNeXt {
    /// `features.0.0`: 3 → `dims[0]`, kernel 4, stride 4.
    pub stem: Conv2d,
    /// `features.0.1`: LayerNorm over channels.
    pub stem_norm: LayerNorm,
    /// `features.1..=7`: the stages, each after its downsampling (none before the first).
    pub stages: Vec<ConvNeXtStage>,
    /// `classifier.0`: LayerNorm of the pooled features.
    pub head_norm: LayerNorm,
    /// `classifier.2`.
    pub head: Linear,
    /// How the convolutions and linear layers compute; not part of the weights.
    #[module(skip)]
    pub precision: Precision,
}

/// One stage: optional downsampling, then blocks of one width.
#[derive(Module, Debug)]
pub struct ConvNeXtStage {
    pub downsample: Option<Downsampling>,
    pub blocks: Vec<ConvNeXtBlock>,
}

/// LayerNorm over channels, then a 2×2 stride-2 convolution that doubles the width.
#[derive(Module, Debug)]
pub struct Downsampling {
    pub norm: LayerNorm,
    pub conv: Conv2d,
}

/// `x + drop_path(layer_scale · pwconv2(gelu(pwconv1(norm(dwconv(x))))))`: a 7×7 depthwise
/// convolution, LayerNorm over channels, and a 4× wider per-position MLP.
#[derive(Module, Debug)]
pub struct ConvNeXtBlock {
    pub dwconv: Conv2d,
    pub norm: LayerNorm,
    pub pwconv1: Linear,
    pub pwconv2: Linear,
    /// Per-channel scale of the residual branch: `[C, 1, 1]`.
    pub layer_scale: Param<Tensor<3>>,
    /// Stochastic-depth probability of this block.
    pub drop_prob: f64,
    /// Whether the block trains (stochastic depth on); cleared by `freeze`, like burn's
    /// `Dropout`.
    pub training: Param<Flag>,
}

/// Every intermediate activation of one forward pass, for parity tests.
#[derive(Debug, Clone)]
pub struct ConvNeXtStages {
    /// After the stem: `[N, dims[0], H/4, W/4]`.
    pub stem: Tensor<4>,
    /// Each stage's output: `[N, dims[i], H/2^(i+2), W/2^(i+2)]`.
    pub stages: Vec<Tensor<4>>,
    /// Pooled and normalised: `[N, dims[3]]`.
    pub features: Tensor<2>,
    /// `[N, num_classes]`.
    pub logits: Tensor<2>,
}

/// torchvision's init for ConvNeXt's convolutions and linear layers: normal (truncated at ±2,
/// which at σ = 0.02 truncates nothing in practice) with zero bias.
fn init_weight() -> Initializer {
    Initializer::Normal {
        mean: 0.0,
        std: 0.02,
    }
}

fn zero_bias(bias: Option<Param<Tensor<1>>>) -> Option<Param<Tensor<1>>> {
    bias.map(|b| Param::from_tensor(b.val().zeros_like()))
}

fn conv(
    channels: [usize; 2],
    kernel: usize,
    stride: usize,
    groups: usize,
    device: &Device,
) -> Conv2d {
    let p = if stride == 1 { kernel / 2 } else { 0 };
    let mut conv = Conv2dConfig::new(channels, [kernel, kernel])
        .with_stride([stride, stride])
        .with_groups(groups)
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .with_initializer(init_weight())
        .init(device);
    conv.bias = zero_bias(conv.bias);
    conv
}

fn linear(d_in: usize, d_out: usize, device: &Device) -> Linear {
    let mut layer = LinearConfig::new(d_in, d_out)
        .with_initializer(init_weight())
        .init(device);
    layer.bias = zero_bias(layer.bias);
    layer
}

fn norm(channels: usize, device: &Device) -> LayerNorm {
    LayerNormConfig::new(channels)
        .with_epsilon(LN_EPS)
        .init(device)
}

/// LayerNorm over the channels of `[N, C, H, W]` (torchvision's `LayerNorm2d`).
fn norm2d(norm: &LayerNorm, x: Tensor<4>) -> Tensor<4> {
    norm.forward(x.permute([0, 2, 3, 1])).permute([0, 3, 1, 2])
}

impl ConvNeXtConfig {
    /// A freshly initialised network (torchvision's init).
    ///
    /// # Panics
    /// If `arch` is not a ConvNeXt ([`NetworkConfig`](crate::model::NetworkConfig) builds any arch).
    pub fn init(&self, device: &Device) -> ConvNeXt {
        let Family::ConvNeXt { depths, dims } = self.arch.family() else {
            panic!("{} is not a ConvNeXt", self.arch);
        };
        let total: usize = depths.iter().sum();
        let mut index = 0;
        let stages = (0..4)
            .map(|s| {
                let dim = dims[s];
                let downsample = (s > 0).then(|| Downsampling {
                    norm: norm(dims[s - 1], device),
                    conv: conv([dims[s - 1], dim], 2, 2, 1, device),
                });
                let blocks = (0..depths[s])
                    .map(|_| {
                        let drop_prob = self.stochastic_depth * index as f64 / (total - 1) as f64;
                        index += 1;
                        ConvNeXtBlock::new(dim, drop_prob, device)
                    })
                    .collect();
                ConvNeXtStage { downsample, blocks }
            })
            .collect();
        ConvNeXt {
            stem: conv([3, dims[0]], 4, 4, 1, device),
            stem_norm: norm(dims[0], device),
            stages,
            head_norm: norm(dims[3], device),
            head: linear(dims[3], self.num_classes, device),
            precision: Precision::F32,
        }
    }
}

impl ConvNeXtBlock {
    fn new(dim: usize, drop_prob: f64, device: &Device) -> Self {
        Self {
            dwconv: conv([dim, dim], 7, 1, dim, device),
            norm: norm(dim, device),
            pwconv1: linear(dim, 4 * dim, device),
            pwconv2: linear(4 * dim, dim, device),
            layer_scale: Param::from_tensor(Tensor::full([dim, 1, 1], LAYER_SCALE, device)),
            drop_prob,
            training: Param::from_bool(true),
        }
    }

    /// `[N, C, H, W]` → `[N, C, H, W]`.
    pub fn forward(&self, x: Tensor<4>, precision: Precision) -> Tensor<4> {
        let [n, c, h, w] = x.dims();
        let y = precision.conv(&self.dwconv, x.clone());
        // The MLP runs per position: channels last, positions as rows.
        let y = y.permute([0, 2, 3, 1]).reshape([n * h * w, c]);
        let y = gelu(precision.linear(&self.pwconv1, self.norm.forward(y)));
        let y = precision.linear(&self.pwconv2, y);
        let y = y.reshape([n, h, w, c]).permute([0, 3, 1, 2]);
        let y = y * self.layer_scale.val().unsqueeze::<4>();
        x + drop_path(y, self.drop_prob, &self.training)
    }
}

impl Downsampling {
    /// `[N, C, H, W]` → `[N, 2C, H/2, W/2]`.
    fn forward(&self, x: Tensor<4>, precision: Precision) -> Tensor<4> {
        precision.conv(&self.conv, norm2d(&self.norm, x))
    }
}

impl ConvNeXtStage {
    fn forward(&self, x: Tensor<4>, precision: Precision) -> Tensor<4> {
        let x = match &self.downsample {
            Some(d) => d.forward(x, precision),
            None => x,
        };
        self.blocks.iter().fold(x, |x, b| b.forward(x, precision))
    }
}

/// `[N, C, h, w]` → `[N, C]`, the mean over positions.
fn pool(x: Tensor<4>) -> Tensor<2> {
    let [n, c, h, w] = x.dims();
    x.reshape([n, c, h * w]).mean_dim(2).reshape([n, c])
}

impl ConvNeXt {
    /// Classification logits.
    ///
    /// - `images`: `[N, 3, H, W]`, normalised (H, W multiples of 32; 224 for ImageNet weights)
    /// - returns: `[N, num_classes]`
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.head(self.last_stage(images))
    }

    /// Pooled, normalised features before the head's linear layer: `[N, 3, H, W]` →
    /// `[N, dims[3]]`.
    pub fn features(&self, images: Tensor<4>) -> Tensor<2> {
        self.head_norm.forward(pool(self.last_stage(images)))
    }

    /// The head on the last stage's output (average pooling, LayerNorm, then the linear
    /// layer): `[N, dims[3], h, w]` → `[N, num_classes]`.
    pub fn head(&self, last: Tensor<4>) -> Tensor<2> {
        self.precision
            .linear(&self.head, self.head_norm.forward(pool(last)))
    }

    /// `[N, 3, H, W]` → the last stage's output `[N, dims[3], H/32, W/32]`.
    pub fn last_stage(&self, images: Tensor<4>) -> Tensor<4> {
        let p = self.precision;
        let x = self.stem(images);
        self.stages.iter().fold(x, |x, stage| stage.forward(x, p))
    }

    fn stem(&self, images: Tensor<4>) -> Tensor<4> {
        norm2d(&self.stem_norm, self.precision.conv(&self.stem, images))
    }

    /// The same computation as [`forward`](Self::forward), keeping every stage's output.
    pub fn stages(&self, images: Tensor<4>) -> ConvNeXtStages {
        let p = self.precision;
        let stem = self.stem(images);
        let mut x = stem.clone();
        let mut stages = Vec::with_capacity(self.stages.len());
        for stage in &self.stages {
            x = stage.forward(x, p);
            stages.push(x.clone());
        }
        let features = self.head_norm.forward(pool(x));
        let logits = self.precision.linear(&self.head, features.clone());
        ConvNeXtStages {
            stem,
            stages,
            features,
            logits,
        }
    }

    /// Logits and class maps (CAM). The head normalises the *pooled* features, so a position's
    /// map value is the head applied to that position's features normalised with the pooled
    /// vector's mean and deviation: that normalisation is affine in the features, so the
    /// mean of a class's map over positions is exactly its logit, as for a ResNet.
    ///
    /// - `images`: `[N, 3, H, W]`
    /// - returns: `([N, classes], [N, H/32, W/32, classes])`
    pub fn class_maps(&self, images: Tensor<4>) -> (Tensor<2>, Tensor<4>) {
        let maps = self.maps(images);
        (maps.logits, maps.cam)
    }

    /// Logits, class maps ([`class_maps`](Self::class_maps)) and Grad-CAM maps of every class
    /// from one pass (see [`Maps`]). Grad-CAM weighs each channel of the last stage by the
    /// mean over the grid of the logit's gradient; through the head (average pooling, then
    /// LayerNorm `y = γ·x̂ + β` with `x̂ = (p - mean(p)) / σ`, then the linear layer `W`) that
    /// gradient is, for pooled features `p` of `C` channels and `g = W·γ`:
    /// `∂logit/∂p = (g - mean(g) - x̂ · mean(g·x̂)) / σ`, divided by the grid's size.
    pub fn maps(&self, images: Tensor<4>) -> Maps {
        let last = self.last_stage(images);
        let [n, c, h, w] = last.dims();
        let pooled = pool(last.clone());
        let logits = self
            .precision
            .linear(&self.head, self.head_norm.forward(pooled.clone()));
        // The pooled vector's statistics, as LayerNorm computes them (biased variance).
        let mean = pooled.clone().mean_dim(1); // [n, 1]
        let var = (pooled.clone() - mean.clone()).square().mean_dim(1);
        let std = var.add_scalar(LN_EPS).sqrt();
        let positions = last.permute([0, 2, 3, 1]).reshape([n, h * w, c]);
        let normalised =
            (positions.clone() - mean.clone().unsqueeze_dim(2)) / std.clone().unsqueeze_dim(2);
        let gamma = self.head_norm.gamma.val();
        let mut affine = normalised * gamma.clone().reshape([1, 1, c]);
        if let Some(beta) = &self.head_norm.beta {
            affine = affine + beta.val().reshape([1, 1, c]);
        }
        let cam = self
            .precision
            .linear(&self.head, affine.reshape([n * h * w, c]));
        let classes = cam.dims()[1];

        // Grad-CAM: the logits' gradients with respect to the pooled features, `[n, C, classes]`.
        let x_hat = (pooled - mean) / std.clone(); // [n, C]
        let g = self.head.weight.val() * gamma.reshape([c, 1]); // [C, classes]
        let g_mean = g.clone().mean_dim(0); // [1, classes]
        let g_x_hat = x_hat.clone().matmul(g.clone()).div_scalar(c as f32); // [n, classes]
        let grad = (g - g_mean).unsqueeze_dim::<3>(0)
            - x_hat.unsqueeze_dim::<3>(2) * g_x_hat.unsqueeze_dim::<3>(1);
        let grad = grad / std.unsqueeze_dim::<3>(2);
        let grad_cam = relu(positions.matmul(grad)).div_scalar((h * w) as f32);
        Maps {
            logits,
            cam: cam.reshape([n, h, w, classes]),
            grad_cam: grad_cam.reshape([n, h, w, classes]),
        }
    }

    /// Number of classes the head predicts.
    pub fn num_classes(&self) -> usize {
        self.head.weight.shape().dims::<2>()[1]
    }

    /// The size this network has (read from its stages).
    pub fn arch(&self) -> Arch {
        let depths: Vec<usize> = self.stages.iter().map(|s| s.blocks.len()).collect();
        let dims: Vec<usize> = self
            .stages
            .iter()
            .map(|s| s.blocks.first().map_or(0, |b| b.layer_scale.dims()[0]))
            .collect();
        let family = Family::ConvNeXt {
            depths: depths.try_into().unwrap_or_default(),
            dims: dims.try_into().unwrap_or_default(),
        };
        Arch::from_family(family).expect("ConvNeXtConfig only builds torchvision's sizes")
    }

    /// Replaces the head's linear layer with a freshly initialised one for `num_classes`
    /// outputs (its LayerNorm keeps the pretrained values).
    pub fn with_new_head(mut self, num_classes: usize) -> Self {
        let device = self.head.weight.device();
        let [features, _] = self.head.weight.shape().dims::<2>();
        self.head = linear(features, num_classes, &device);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_follow_torchvision() {
        let device = Device::flex();
        let model = ConvNeXtConfig::new(Arch::ConvNeXtTiny, 5).init(&device);
        let s = model.stages(Tensor::<4>::zeros([2, 3, 64, 64], &device));
        assert_eq!(s.stem.dims(), [2, 96, 16, 16]);
        let dims: Vec<[usize; 4]> = s.stages.iter().map(Tensor::dims).collect();
        assert_eq!(
            dims,
            [
                [2, 96, 16, 16],
                [2, 192, 8, 8],
                [2, 384, 4, 4],
                [2, 768, 2, 2]
            ]
        );
        assert_eq!(s.logits.dims(), [2, 5]);
        assert_eq!(model.num_classes(), 5);
        assert_eq!(model.arch(), Arch::ConvNeXtTiny);
    }

    #[test]
    fn parameter_count_matches_torchvision() {
        // `sum(p.numel() for p in convnext_tiny().parameters())`.
        let device = Device::flex();
        let model = ConvNeXtConfig::new(Arch::ConvNeXtTiny, 1000).init(&device);
        assert_eq!(model.num_params(), 28_589_128);
    }

    #[test]
    fn stochastic_depth_rises_linearly_to_the_configured_probability() {
        let device = Device::flex();
        let model = ConvNeXtConfig::new(Arch::ConvNeXtTiny, 5).init(&device);
        let probs: Vec<f64> = model
            .stages
            .iter()
            .flat_map(|s| s.blocks.iter().map(|b| b.drop_prob))
            .collect();
        assert_eq!(probs.len(), 18);
        assert_eq!(probs[0], 0.0);
        assert!((probs[17] - 0.1).abs() < 1e-12);
        assert!(probs.windows(2).all(|w| w[1] > w[0]));
    }
}
