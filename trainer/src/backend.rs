//! Which burn device a command runs on.

use burn::tensor::Device;
use clap::ValueEnum;

/// Compute backends this build of `petal` offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum DeviceArg {
    /// Pure-Rust CPU backend (burn's flex): always available.
    #[default]
    Cpu,
}

impl DeviceArg {
    pub fn device(self) -> Device {
        match self {
            DeviceArg::Cpu => Device::flex(),
        }
    }
}
