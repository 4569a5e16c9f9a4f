//! A ResNet compiled for CPU inference: every BatchNorm folded into the convolution before it,
//! activations kept channels-last from the stem to the head, weights packed once, and bias,
//! residual add and ReLU applied in the convolution's output pass (see `petal-kernels`).
//!
//! Only for inference: training keeps [`ResNet`], whose BatchNorm layers learn and whose
//! running statistics move. Folding is exact up to float rounding:
//! `bn(conv(x)) = γ·(W∗x − μ)/√(σ²+ε) + β = (s·W)∗x + (β − s·μ)` with `s = γ/√(σ²+ε)` per
//! output channel.

use super::{Block, ResNet};
use crate::cam::ClassMaps;
use crate::model::{BatchNorm, Network};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::prelude::*;
use petal_kernels::{Linear, Nhwc, global_avg_pool, max_pool};

/// Images pushed through the network together. A few are enough to fill every core's GEMMs;
/// more would only grow the activations held in memory (ResNet-50: ~16 MB per image).
const IMAGES_PER_PASS: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum FoldError {
    #[error("cannot read {what} for CPU inference: {message}")]
    Read { what: &'static str, message: String },
    #[error("unsupported convolution for CPU inference: {0}")]
    Unsupported(String),
}

/// One residual block after folding: its convolutions in order (each but the last followed
/// by ReLU; the last one adds the shortcut, then ReLU) and the projection shortcut, if any.
#[derive(Debug, Clone)]
struct FoldedBlock {
    convs: Vec<petal_kernels::Conv2d>,
    downsample: Option<petal_kernels::Conv2d>,
}

/// [`ResNet`]'s inference computation on the CPU, BatchNorm folded away.
#[derive(Debug, Clone)]
pub struct FoldedResNet {
    stem: petal_kernels::Conv2d,
    blocks: Vec<FoldedBlock>,
    fc: Linear,
}

/// The CPU inference form of a network whose family has one (today the ResNets), as
/// [`crate::runtime::Runtime`] runs it.
pub type FoldedNetwork = FoldedResNet;

impl Network {
    /// Whether [`fold`](Self::fold) has a form for this network's family.
    pub fn can_fold(&self) -> bool {
        matches!(self, Network::ResNet(_))
    }

    /// The network's folded CPU inference form (its BatchNorm running statistics are used).
    pub fn fold(self) -> Result<FoldedNetwork, FoldError> {
        match self {
            Network::ResNet(m) => FoldedResNet::new(m),
            other => Err(FoldError::Unsupported(format!(
                "{} has no folded CPU form",
                other.arch()
            ))),
        }
    }
}

impl FoldedResNet {
    /// Folds `model` (in inference mode: its BatchNorm running statistics are used). The
    /// network is consumed block by block, each block's tensors freed once folded, so memory
    /// holds little more than one copy of the weights at any time (pass a clone to keep it).
    pub fn new(model: ResNet) -> Result<Self, FoldError> {
        let stem = fold(&model.conv1, &model.bn1)?;
        let mut blocks = Vec::new();
        for block in [model.layer1, model.layer2, model.layer3, model.layer4]
            .into_iter()
            .flatten()
        {
            blocks.push(fold_block(&block)?);
        }
        let [d_in, d_out] = model.fc.weight.shape().dims::<2>();
        let weight = read(model.fc.weight.val(), "the head's weights")?;
        let bias = match &model.fc.bias {
            Some(b) => Some(read(b.val(), "the head's bias")?),
            None => None,
        };
        Ok(Self {
            stem,
            blocks,
            fc: Linear::new(weight, bias, d_in, d_out),
        })
    }

    /// Number of classes the head predicts.
    pub fn num_classes(&self) -> usize {
        self.fc.d_out()
    }

    /// Classification logits, as [`ResNet::forward`] computes them.
    ///
    /// - `images`: `n` normalised images, `[n, 3, h, w]` (NCHW, what preprocessing produces)
    /// - returns: `[n, num_classes]`, row-major
    ///
    /// # Panics
    /// If `images.len()` is not `n · 3 · h · w`.
    pub fn forward(&self, images: &[f32], n: usize, h: usize, w: usize) -> Vec<f32> {
        let per_image = 3 * h * w;
        assert_eq!(images.len(), n * per_image, "images for [{n}, 3, {h}, {w}]");
        let mut logits = Vec::with_capacity(n * self.num_classes());
        for chunk in images.chunks(IMAGES_PER_PASS * per_image) {
            let x = Nhwc::from_nchw(chunk, chunk.len() / per_image, 3, h, w);
            logits.extend(self.fc.forward(&self.features(x)));
        }
        logits
    }

    /// The head's bias, one value per class (Grad-CAM is the class map without it; see
    /// [`ClassMaps::grad_cam_of_linear_head`]).
    pub fn head_bias(&self) -> &[f32] {
        self.fc.bias()
    }

    /// Grad-CAM from this network's class maps (see [`ClassMaps::grad_cam_of_linear_head`]).
    pub fn grad_cam(&self, cam: &ClassMaps) -> ClassMaps {
        cam.grad_cam_of_linear_head(self.head_bias())
    }

    /// Logits, as [`forward`](Self::forward) computes them, and the class activation maps of
    /// the same pass: the head applied at every position of the last stage
    /// (`[n, h/32, w/32, num_classes]`; see [`crate::cam`]). Each map's mean is its logit.
    ///
    /// # Panics
    /// If `images.len()` is not `n · 3 · h · w`.
    pub fn forward_with_class_maps(
        &self,
        images: &[f32],
        n: usize,
        h: usize,
        w: usize,
    ) -> (Vec<f32>, ClassMaps) {
        let per_image = 3 * h * w;
        assert_eq!(images.len(), n * per_image, "images for [{n}, 3, {h}, {w}]");
        let mut logits = Vec::with_capacity(n * self.num_classes());
        let mut maps = Vec::new();
        let mut grid = (0, 0);
        for chunk in images.chunks(IMAGES_PER_PASS * per_image) {
            let x = Nhwc::from_nchw(chunk, chunk.len() / per_image, 3, h, w);
            let last = self.last_stage(x);
            grid = (last.h, last.w);
            logits.extend(self.fc.forward(&global_avg_pool(&last)));
            // Channels-last rows are positions: the head maps each one's features to classes.
            maps.extend(self.fc.forward(&last.data));
        }
        let maps = ClassMaps::new(n, grid.0, grid.1, self.num_classes(), maps);
        (logits, maps)
    }

    /// Pooled features before the head: `[n, h, w, 3]` → `[n, feature_dim]`.
    fn features(&self, x: Nhwc) -> Vec<f32> {
        global_avg_pool(&self.last_stage(x))
    }

    /// The last stage's output: `[n, h, w, 3]` → `[n, h/32, w/32, feature_dim]`.
    fn last_stage(&self, x: Nhwc) -> Nhwc {
        let mut spare = Spare::default();
        let stem = self.stem.forward(&x, None, true);
        spare.give(x);
        let mut x = max_pool(&stem, 3, 2, 1);
        spare.give(stem);
        for block in &self.blocks {
            let identity = block
                .downsample
                .as_ref()
                .map(|d| d.forward_into(&x, None, false, spare.take()));
            let (last, inner) = block
                .convs
                .split_last()
                .expect("a residual block has convolutions");
            let mut out: Option<Nhwc> = None;
            for conv in inner {
                let next = conv.forward_into(out.as_ref().unwrap_or(&x), None, true, spare.take());
                if let Some(done) = out.replace(next) {
                    spare.give(done);
                }
            }
            let out = out.expect("a residual block has at least two convolutions");
            let next = last.forward_into(
                &out,
                Some(identity.as_ref().unwrap_or(&x)),
                true,
                spare.take(),
            );
            spare.give(out);
            spare.give(std::mem::replace(&mut x, next));
            if let Some(identity) = identity {
                spare.give(identity);
            }
        }
        x
    }
}

/// Allocations of activations that are no longer needed, for the next layers' outputs.
#[derive(Default)]
struct Spare(Vec<Vec<f32>>);

impl Spare {
    /// The largest spare buffer: a layer's output is rarely larger than an earlier activation
    /// of the same pass, so it seldom has to grow.
    fn take(&mut self) -> Vec<f32> {
        let largest = (0..self.0.len()).max_by_key(|&i| self.0[i].capacity());
        largest.map_or_else(Vec::new, |i| self.0.swap_remove(i))
    }

    fn give(&mut self, x: Nhwc) {
        self.0.push(x.data);
    }
}

fn fold_block(block: &Block) -> Result<FoldedBlock, FoldError> {
    let (pairs, downsample) = match block {
        Block::Basic(b) => (vec![(&b.conv1, &b.bn1), (&b.conv2, &b.bn2)], &b.downsample),
        Block::Bottleneck(b) => (
            vec![(&b.conv1, &b.bn1), (&b.conv2, &b.bn2), (&b.conv3, &b.bn3)],
            &b.downsample,
        ),
    };
    Ok(FoldedBlock {
        convs: pairs
            .into_iter()
            .map(|(c, bn)| fold(c, bn))
            .collect::<Result<_, _>>()?,
        downsample: downsample
            .as_ref()
            .map(|d| fold(&d.conv, &d.bn))
            .transpose()?,
    })
}

/// `bn(conv(x))` as one convolution with a bias. The scale is computed in `f64` so that the
/// folded weights are the exact products rounded once.
fn fold(conv: &Conv2d, bn: &BatchNorm) -> Result<petal_kernels::Conv2d, FoldError> {
    let shape = conv.weight.shape().dims::<4>();
    let padding = match conv.padding {
        PaddingConfig2d::Explicit(t, l, b, r) if t == l && l == b && b == r => t,
        PaddingConfig2d::Valid => 0,
        ref other => return Err(FoldError::Unsupported(format!("padding {other:?}"))),
    };
    if conv.groups != 1 || conv.dilation != [1, 1] || conv.stride[0] != conv.stride[1] {
        return Err(FoldError::Unsupported(format!(
            "groups {}, dilation {:?}, stride {:?}",
            conv.groups, conv.dilation, conv.stride
        )));
    }
    let mut weight = read(conv.weight.val(), "convolution weights")?;
    let conv_bias = match &conv.bias {
        Some(b) => read(b.val(), "convolution bias")?,
        None => vec![0.0; shape[0]],
    };
    let gamma = read(bn.gamma.val(), "BatchNorm weights")?;
    let beta = read(bn.beta.val(), "BatchNorm bias")?;
    let mean = read(bn.running_mean.value(), "BatchNorm running mean")?;
    let var = read(bn.running_var.value(), "BatchNorm running variance")?;
    let per_out = weight.len() / shape[0];
    let mut bias = Vec::with_capacity(shape[0]);
    for (co, w) in weight.chunks_exact_mut(per_out).enumerate() {
        let s = f64::from(gamma[co]) / (f64::from(var[co]) + bn.epsilon).sqrt();
        w.iter_mut().for_each(|v| *v = (f64::from(*v) * s) as f32);
        bias.push(
            (f64::from(beta[co]) + (f64::from(conv_bias[co]) - f64::from(mean[co])) * s) as f32,
        );
    }
    Ok(petal_kernels::Conv2d::new(
        &weight,
        Some(&bias),
        shape,
        conv.stride[0],
        padding,
    ))
}

fn read<const D: usize>(t: Tensor<D>, what: &'static str) -> Result<Vec<f32>, FoldError> {
    t.into_data()
        .try_into_vec_as::<f32>()
        .map_err(|e| FoldError::Read {
            what,
            message: format!("{e:?}"),
        })
}
