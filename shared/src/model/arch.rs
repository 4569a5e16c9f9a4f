use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The networks Petal builds: torchvision's five ResNet depths, its ConvNeXt-T and its
/// EfficientNet-B0, each with published ImageNet weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    ResNet18,
    ResNet34,
    ResNet50,
    ResNet101,
    ResNet152,
    #[serde(rename = "convnext_tiny")]
    ConvNeXtTiny,
    #[serde(rename = "efficientnet_b0")]
    EfficientNetB0,
}

/// The family an [`Arch`] belongs to, with the numbers that shape it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Residual blocks of `kind`, `blocks[i]` of them in `layer{i+1}`.
    ResNet { kind: BlockKind, blocks: [usize; 4] },
    /// `depths[i]` ConvNeXt blocks of width `dims[i]` in stage `i`.
    ConvNeXt {
        depths: [usize; 4],
        dims: [usize; 4],
    },
    /// A `stem`-channel stem, then `depths[i]` MBConv blocks of `widths[i]` output channels in
    /// stage `i` (torchvision's `features.{i+1}`).
    EfficientNet {
        stem: usize,
        widths: [usize; 7],
        depths: [usize; 7],
    },
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
    pub const ALL: [Arch; 7] = [
        Arch::ResNet18,
        Arch::ResNet34,
        Arch::ResNet50,
        Arch::ResNet101,
        Arch::ResNet152,
        Arch::ConvNeXtTiny,
        Arch::EfficientNetB0,
    ];

    /// The family and its shape (torchvision's `resnet.py`, `convnext.py` and
    /// `efficientnet.py` tables).
    pub const fn family(self) -> Family {
        use BlockKind::{Basic, Bottleneck};
        const fn resnet(kind: BlockKind, blocks: [usize; 4]) -> Family {
            Family::ResNet { kind, blocks }
        }
        match self {
            Arch::ResNet18 => resnet(Basic, [2, 2, 2, 2]),
            Arch::ResNet34 => resnet(Basic, [3, 4, 6, 3]),
            Arch::ResNet50 => resnet(Bottleneck, [3, 4, 6, 3]),
            Arch::ResNet101 => resnet(Bottleneck, [3, 4, 23, 3]),
            Arch::ResNet152 => resnet(Bottleneck, [3, 8, 36, 3]),
            Arch::ConvNeXtTiny => Family::ConvNeXt {
                depths: [3, 3, 9, 3],
                dims: [96, 192, 384, 768],
            },
            // `_efficientnet_conf("efficientnet_b0", width_mult=1.0, depth_mult=1.0)`.
            Arch::EfficientNetB0 => Family::EfficientNet {
                stem: 32,
                widths: [16, 24, 40, 80, 112, 192, 320],
                depths: [1, 2, 2, 3, 3, 4, 1],
            },
        }
    }

    /// Width of the pooled feature vector that feeds the head.
    pub const fn feature_dim(self) -> usize {
        match self.family() {
            Family::ResNet { kind, .. } => 512 * kind.expansion(),
            Family::ConvNeXt { dims, .. } => dims[3],
            // torchvision's `lastconv_output_channels = 4 * lastconv_input_channels`.
            Family::EfficientNet { widths, .. } => 4 * widths[6],
        }
    }

    /// The network with this family and shape, if any (used to name what a weight file
    /// contains).
    pub fn from_family(family: Family) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.family() == family)
    }

    pub const fn name(self) -> &'static str {
        match self {
            Arch::ResNet18 => "resnet18",
            Arch::ResNet34 => "resnet34",
            Arch::ResNet50 => "resnet50",
            Arch::ResNet101 => "resnet101",
            Arch::ResNet152 => "resnet152",
            Arch::ConvNeXtTiny => "convnext_tiny",
            Arch::EfficientNetB0 => "efficientnet_b0",
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
    "unknown architecture '{0}' (expected resnet18, resnet34, resnet50, resnet101, resnet152, \
     convnext_tiny or efficientnet_b0)"
)]
pub struct ParseArchError(pub String);

impl FromStr for Arch {
    type Err = ParseArchError;

    /// Accepts `resnet101`, `ResNet101`, `resnet-101`, `101`, `convnext_tiny`,
    /// `ConvNeXt-Tiny`, `convnext-t`, and `efficientnet_b0`, `EfficientNet-B0`, `effnetb0`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm: String = s
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .collect::<String>()
            .to_ascii_lowercase();
        if matches!(norm.as_str(), "convnexttiny" | "convnextt") {
            return Ok(Arch::ConvNeXtTiny);
        }
        if matches!(norm.as_str(), "efficientnetb0" | "effnetb0") {
            return Ok(Arch::EfficientNetB0);
        }
        let depth = norm.strip_prefix("resnet").unwrap_or(&norm);
        Arch::ALL
            .into_iter()
            .find(|a| a.name().strip_prefix("resnet") == Some(depth))
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
        assert_eq!("convnext_tiny".parse(), Ok(Arch::ConvNeXtTiny));
        assert_eq!("ConvNeXt-T".parse(), Ok(Arch::ConvNeXtTiny));
        for name in [
            "efficientnet_b0",
            "efficientnet-b0",
            "EfficientNet-B0",
            "effnetb0",
        ] {
            assert_eq!(name.parse(), Ok(Arch::EfficientNetB0), "{name}");
        }
        assert_eq!(Arch::EfficientNetB0.feature_dim(), 1280);
        assert_eq!(Arch::EfficientNetB0.imagenet_resize(), 256);
        assert!("tiny".parse::<Arch>().is_err());
        assert!(
            "resnet19"
                .parse::<Arch>()
                .unwrap_err()
                .to_string()
                .contains("resnet19")
        );
    }

    #[test]
    fn family_identifies_the_network() {
        for a in Arch::ALL {
            assert_eq!(Arch::from_family(a.family()), Some(a));
            assert_eq!(a.name().parse(), Ok(a), "names round-trip");
        }
        let odd = Family::ResNet {
            kind: BlockKind::Basic,
            blocks: [3, 4, 23, 3],
        };
        assert_eq!(Arch::from_family(odd), None);
    }

    #[test]
    fn serde_names_are_the_cli_names() {
        for a in Arch::ALL {
            assert_eq!(serde_json::to_string(&a).unwrap(), format!("\"{a}\""));
        }
    }
}
