//! The ResNet family's entry in [`FAMILIES`](crate::model::FAMILIES).

use super::{ResNet, ResNetConfig};
use crate::model::family::{Detected, FamilyInfo, Generation, Published, named_activations};
use crate::model::{Arch, BlockKind, Family, KeyRule, ParamGroup};
use burn::prelude::*;

pub(crate) const FAMILY: FamilyInfo = FamilyInfo {
    name: "ResNet",
    archs: &[
        Arch::ResNet18,
        Arch::ResNet34,
        Arch::ResNet50,
        Arch::ResNet101,
        Arch::ResNet152,
    ],
    init: |arch, num_classes, device| ResNetConfig::new(arch, num_classes).init(device).into(),
    torchvision_keys,
    head: "fc",
    detect,
    imagenet_resize: |_| crate::imagenet::RESIZE_V1,
    // torchvision/models/resnet.py (`ResNet*_Weights`, torchvision 0.14.1; the files have not
    // changed since the V2 weights came out).
    published: &[
        published(Arch::ResNet18, Generation::V1, "resnet18-f37072fd.pth"),
        published(Arch::ResNet34, Generation::V1, "resnet34-b627a593.pth"),
        published(Arch::ResNet50, Generation::V1, "resnet50-0676ba61.pth"),
        published(Arch::ResNet50, Generation::V2, "resnet50-11ad3fa6.pth"),
        published(Arch::ResNet101, Generation::V1, "resnet101-63fe2227.pth"),
        published(Arch::ResNet101, Generation::V2, "resnet101-cd907fc2.pth"),
        published(Arch::ResNet152, Generation::V1, "resnet152-394f9c45.pth"),
        published(Arch::ResNet152, Generation::V2, "resnet152-f82ba261.pth"),
    ],
};

const fn published(arch: Arch, generation: Generation, file: &'static str) -> Published {
    Published {
        arch,
        generation,
        file,
    }
}

/// torchvision's keys already match our field names, except the projection shortcut (an
/// `nn.Sequential`: `downsample.0` / `.1`). burn's enum variant (`Basic`/`Bottleneck`) is not
/// in the paths it matches.
fn torchvision_keys() -> Vec<KeyRule> {
    vec![
        KeyRule::new("layer{}.{}.downsample.0", "layer{}.{}.downsample.conv"),
        KeyRule::new("layer{}.{}.downsample.1", "layer{}.{}.downsample.bn"),
    ]
}

/// The depth `layerN.M.*` keys describe: the blocks per stage, bottlenecks if any block has a
/// `conv3`.
fn detect(keys: &[&str]) -> Option<Detected> {
    let mut blocks = [0usize; 4];
    let mut bottleneck = false;
    for key in keys {
        let mut parts = key.split('.');
        let (Some(layer), Some(index)) = (parts.next(), parts.next()) else {
            continue;
        };
        let (Some(n), Ok(i)) = (
            layer
                .strip_prefix("layer")
                .and_then(|n| n.parse::<usize>().ok()),
            index.parse::<usize>(),
        ) else {
            continue;
        };
        if (1..=4).contains(&n) {
            blocks[n - 1] = blocks[n - 1].max(i + 1);
            bottleneck |= key.split('.').any(|s| s == "conv3");
        }
    }
    if blocks == [0; 4] {
        return None;
    }
    let kind = if bottleneck {
        BlockKind::Bottleneck
    } else {
        BlockKind::Basic
    };
    let shape = Family::ResNet { kind, blocks };
    Some(FAMILY.detected(
        |f| f == shape,
        || format!("ResNet with {kind:?} blocks {blocks:?}"),
    ))
}

impl ResNet {
    /// The network with only the groups `trains` names trainable: the stem is `conv1` + `bn1`,
    /// the body `layer1..4`, the head `fc`.
    pub fn with_trainable(mut self, trains: impl Fn(ParamGroup) -> bool) -> Self {
        if !trains(ParamGroup::Stem) {
            self.conv1 = self.conv1.freeze();
            self.bn1 = self.bn1.freeze();
        }
        if !trains(ParamGroup::Body) {
            self.layer1 = self.layer1.freeze();
            self.layer2 = self.layer2.freeze();
            self.layer3 = self.layer3.freeze();
            self.layer4 = self.layer4.freeze();
        }
        if !trains(ParamGroup::Head) {
            self.fc = self.fc.freeze();
        }
        self
    }

    /// ResNets have no stochastic depth.
    pub fn without_stochastic_depth(self) -> Self {
        self
    }

    /// Every stage's output by the name torchvision's reference files use (`stem`,
    /// `layer1..4`, `pooled`, `logits`).
    pub fn activations(&self, images: Tensor<4>) -> Vec<(String, TensorData)> {
        let s = self.stages(images);
        named_activations(
            ("stem", s.stem),
            "layer",
            [s.layer1, s.layer2, s.layer3, s.layer4],
            [
                ("pooled", s.pooled.into_data()),
                ("logits", s.logits.into_data()),
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_from_keys() {
        let keys = [
            "layer1.0.conv1.weight",
            "layer3.5.conv3.weight",
            "fc.weight",
        ];
        assert_eq!(
            detect(&keys),
            Some(Detected::Other(
                "ResNet with Bottleneck blocks [1, 0, 6, 0]".into()
            ))
        );
        let resnet18: Vec<String> = (1..=4)
            .flat_map(|l| (0..2).map(move |b| format!("layer{l}.{b}.conv2.weight")))
            .collect();
        let keys: Vec<&str> = resnet18.iter().map(String::as_str).collect();
        assert_eq!(detect(&keys), Some(Detected::Arch(Arch::ResNet18)));
        assert_eq!(detect(&["features.0.0.weight"]), None);
    }
}
