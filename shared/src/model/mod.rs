//! torchvision's ResNet family (v1.5), one definition for every burn backend.
//!
//! Field names follow torchvision (`conv1`, `bn1`, `layer1..4`, `fc`, `downsample`) so that a
//! torchvision `state_dict` maps onto this module with the few rules kept in `crate::import`.

mod arch;
mod block;
mod folded;
mod precision;
mod resnet;

pub use arch::{Arch, BlockKind, ParseArchError};
pub use block::{BasicBlock, Block, Bottleneck, Downsample};
pub use folded::{FoldError, FoldedResNet};
pub use precision::ComputePrecision;
pub use resnet::{ResNet, ResNetConfig, Stages};
