//! Petal's networks, one definition each for every burn backend, behind one type:
//! [`Network`] (built by [`NetworkConfig`] from an [`Arch`]).
//!
//! - [`ResNet`]: torchvision's ResNet family (v1.5). Field names follow torchvision (`conv1`,
//!   `bn1`, `layer1..4`, `fc`, `downsample`), so a torchvision `state_dict` maps onto it with
//!   the few rules kept in `crate::import`; [`FoldedResNet`] is its CPU inference form.
//! - [`ConvNeXt`]: torchvision's ConvNeXt-T.
//! - [`EfficientNet`]: torchvision's EfficientNet-B0.

mod arch;
mod batch_norm;
mod block;
mod convnext;
mod efficientnet;
mod folded;
mod network;
mod precision;
mod resnet;

pub use arch::{Arch, BlockKind, Family, ParseArchError};
pub use batch_norm::{BatchNorm, BatchNormConfig};
pub use block::{BasicBlock, Block, Bottleneck, Downsample};
pub use convnext::{
    ConvNeXt, ConvNeXtBlock, ConvNeXtConfig, ConvNeXtStage, ConvNeXtStages, Downsampling,
};
pub use efficientnet::{
    ConvBn, EfficientNet, EfficientNetConfig, EfficientNetStages, MBConv, SqueezeExcitation,
};
pub use folded::{FoldError, FoldedNetwork, FoldedResNet};
pub use network::{Maps, Network, NetworkConfig, ParamGroup};
pub use precision::ComputePrecision;
pub use resnet::{ResNet, ResNetConfig, Stages};
