use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The five ResNet depths torchvision publishes ImageNet weights for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    ResNet18,
    ResNet34,
    ResNet50,
    ResNet101,
    ResNet152,
}

/// Which residual block a depth is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// Two 3×3 convolutions (ResNet-18/34).
    Basic,
    /// 1×1 → 3×3 → 1×1 with a 4× wider output (ResNet-50/101/152).
    Bottleneck,
}

impl BlockKind {
    /// Output channels per "planes" of a block (torchvision's `expansion`).
    pub const fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

impl Arch {
    pub const ALL: [Arch; 5] = [
        Arch::ResNet18,
        Arch::ResNet34,
        Arch::ResNet50,
        Arch::ResNet101,
        Arch::ResNet152,
    ];

    /// Number of residual blocks in `layer1..layer4`.
    pub const fn blocks(self) -> [usize; 4] {
        match self {
            Arch::ResNet18 => [2, 2, 2, 2],
            Arch::ResNet34 | Arch::ResNet50 => [3, 4, 6, 3],
            Arch::ResNet101 => [3, 4, 23, 3],
            Arch::ResNet152 => [3, 8, 36, 3],
        }
    }

    pub const fn block_kind(self) -> BlockKind {
        match self {
            Arch::ResNet18 | Arch::ResNet34 => BlockKind::Basic,
            _ => BlockKind::Bottleneck,
        }
    }

    /// Width of the pooled feature vector that feeds `fc`.
    pub const fn feature_dim(self) -> usize {
        512 * self.block_kind().expansion()
    }

    /// The depth with this block layout, if any (used to name what a weight file contains).
    pub fn from_layout(kind: BlockKind, blocks: [usize; 4]) -> Option<Arch> {
        Arch::ALL
            .into_iter()
            .find(|a| a.block_kind() == kind && a.blocks() == blocks)
    }

    pub const fn name(self) -> &'static str {
        match self {
            Arch::ResNet18 => "resnet18",
            Arch::ResNet34 => "resnet34",
            Arch::ResNet50 => "resnet50",
            Arch::ResNet101 => "resnet101",
            Arch::ResNet152 => "resnet152",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown architecture '{0}' (expected resnet18, resnet34, resnet50, resnet101 or resnet152)"
)]
pub struct ParseArchError(pub String);

impl FromStr for Arch {
    type Err = ParseArchError;

    /// Accepts `resnet101`, `ResNet101`, `resnet-101` and `101`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm: String = s
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .collect::<String>()
            .to_ascii_lowercase();
        let depth = norm.strip_prefix("resnet").unwrap_or(&norm);
        Arch::ALL
            .into_iter()
            .find(|a| a.name()["resnet".len()..] == *depth)
            .ok_or_else(|| ParseArchError(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_spellings() {
        assert_eq!("resnet101".parse(), Ok(Arch::ResNet101));
        assert_eq!("ResNet-18".parse(), Ok(Arch::ResNet18));
        assert_eq!("50".parse(), Ok(Arch::ResNet50));
        assert!(
            "resnet19"
                .parse::<Arch>()
                .unwrap_err()
                .to_string()
                .contains("resnet19")
        );
    }

    #[test]
    fn layout_identifies_depth() {
        for a in Arch::ALL {
            assert_eq!(Arch::from_layout(a.block_kind(), a.blocks()), Some(a));
        }
        assert_eq!(Arch::from_layout(BlockKind::Basic, [3, 4, 23, 3]), None);
    }
}
