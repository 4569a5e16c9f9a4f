//! Petal's networks, one definition each for every burn backend, behind one type:
//! [`Network`] (built by [`NetworkConfig`] from an [`Arch`]).
//!
//! Each family lives in its own folder, with everything that differs per family: the module,
//! its torchvision key rules (one table, read both ways: [`KeyRule`]), how its weight files are
//! recognised, its published weights and default resize (its [`FamilyInfo`], listed in
//! [`FAMILIES`]), its parameter groups, precision and running-statistics hooks.
//!
//! - [`ResNet`]: torchvision's ResNet-18/34/50/101/152 (v1.5); [`FoldedResNet`] is its CPU
//!   inference form.
//! - [`ConvNeXt`]: torchvision's ConvNeXt-T.
//! - [`EfficientNet`]: torchvision's EfficientNet-B0.

mod arch;
mod batch_norm;
mod convnext;
mod efficientnet;
pub mod family;
pub mod keys;
mod network;
mod precision;
mod resnet;
mod stochastic_depth;

pub use arch::{Arch, BlockKind, Family, ParseArchError};
pub use batch_norm::{BatchNorm, BatchNormConfig};
pub use convnext::{
    ConvNeXt, ConvNeXtBlock, ConvNeXtConfig, ConvNeXtStage, ConvNeXtStages, Downsampling,
};
pub use efficientnet::{
    ConvBn, EfficientNet, EfficientNetConfig, EfficientNetStages, MBConv, SqueezeExcitation,
};
pub use family::{Detected, FAMILIES, FamilyInfo, Generation, Published};
pub use keys::KeyRule;
pub use network::{Maps, Network, NetworkConfig, ParamGroup};
pub use precision::Precision;
pub use resnet::{
    BasicBlock, Block, Bottleneck, Downsample, FoldError, FoldedNetwork, FoldedResNet, ResNet,
    ResNetConfig, Stages,
};
