//! Petal's one number-format type: what a network computes in (f32 throughout, or mixed
//! precision, where the convolutions and the head multiply f16 operands — tensor cores on GPUs
//! that have them — and everything else stays f32), and what a bundle's weights are stored in.

use burn::nn::conv::Conv2d;
use burn::nn::{Linear, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::FloatDType;
use burn::tensor::module::{conv2d, linear};
use burn::tensor::ops::ConvOptions;
use serde::{Deserialize, Serialize};

/// How a network ([`Network`](super::Network)) computes its convolutions and linear layers,
/// or how a bundle stores its weights.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Every operation in f32.
    #[default]
    F32,
    /// Mixed precision: convolution and linear operands are rounded to f16 (weights from their
    /// f32 master copy at every use), the products come back as f32. BatchNorm, ReLU, residual
    /// sums, pooling and the loss stay f32, and so do the parameters, their gradients and the
    /// optimiser's state. Casts are differentiable, so gradients flow through the same
    /// roundings in reverse.
    F16,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
        }
    }

    /// `conv` applied to `x` (`[N, C_in, H, W]` → `[N, C_out, H', W']`) in this precision.
    /// Petal's networks pad symmetrically (or not at all), which is what is read here.
    pub(crate) fn conv(self, conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
        match self {
            Precision::F32 => conv.forward(x),
            Precision::F16 => {
                let padding = match conv.padding {
                    PaddingConfig2d::Valid => [0, 0],
                    PaddingConfig2d::Explicit(top, left, bottom, right) => {
                        debug_assert!(top == bottom && left == right, "asymmetric padding");
                        [top, left]
                    }
                    PaddingConfig2d::Same => conv.kernel_size.map(|k| k / 2),
                };
                let options = ConvOptions::new(conv.stride, padding, conv.dilation, conv.groups);
                conv2d(
                    x.cast(FloatDType::F16),
                    conv.weight.val().cast(FloatDType::F16),
                    conv.bias.as_ref().map(|b| b.val().cast(FloatDType::F16)),
                    options,
                )
                .cast(FloatDType::F32)
            }
        }
    }

    /// `layer` applied to `x` (`[N, in]` → `[N, out]`) in this precision.
    pub(crate) fn linear(self, layer: &Linear, x: Tensor<2>) -> Tensor<2> {
        match self {
            Precision::F32 => layer.forward(x),
            Precision::F16 => linear(
                x.cast(FloatDType::F16),
                layer.weight.val().cast(FloatDType::F16),
                layer.bias.as_ref().map(|b| b.val().cast(FloatDType::F16)),
            )
            .cast(FloatDType::F32),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "f16" | "fp16" | "float16" | "half" => Ok(Precision::F16),
            other => Err(format!("unknown precision {other:?} (expected f32 or f16)")),
        }
    }
}
