//! The EfficientNet family's entry in [`FAMILIES`](crate::model::FAMILIES).

use super::{EfficientNet, EfficientNetConfig};
use crate::model::family::{Detected, FamilyInfo, Generation, Published, named_activations};
use crate::model::{Arch, Family, KeyRule, ParamGroup};
use burn::prelude::*;

pub(crate) const FAMILY: FamilyInfo = FamilyInfo {
    name: "EfficientNet",
    archs: &[Arch::EfficientNetB0],
    init: |arch, num_classes, device| {
        EfficientNetConfig::new(arch, num_classes)
            .init(device)
            .into()
    },
    torchvision_keys,
    head: "classifier",
    detect,
    // torchvision evaluates its B0 weights at resize 256 / crop 224 with BICUBIC
    // interpolation; Petal's resampler is Pillow's bilinear, so Petal's crops of a photo differ
    // slightly from the ones those weights were evaluated on.
    imagenet_resize: |_| crate::imagenet::RESIZE_V1,
    // torchvision/models/efficientnet.py (`EfficientNet_B0_Weights.IMAGENET1K_V1`,
    // torchvision 0.14.1: Ross Wightman's training, hence the name).
    published: &[Published {
        arch: Arch::EfficientNetB0,
        generation: Generation::V1,
        file: "efficientnet_b0_rwightman-3dd342df.pth",
    }],
};

/// Our layers of an MBConv block, in torchvision's `block` order; the first stage's blocks
/// (expansion ratio 1) have no `expand`, so their indices start at `depthwise`.
const MBCONV_LAYERS: [&str; 4] = ["expand", "depthwise", "se", "project"];

/// A convolution + BatchNorm pair (torchvision's `Conv2dNormActivation`, a `Sequential` whose
/// indices 0 and 1 they are; its activation has no weights).
const CONV_BN: [(usize, &str); 2] = [(0, "conv"), (1, "bn")];

/// torchvision's keys are `nn.Sequential` indices (`features.2.1.block.3.1.weight`):
/// `features.0` is the stem, `features.{s}` stage `s`'s blocks (1 ≤ s ≤ 7), `features.8` the
/// last 1×1 convolution and `classifier.1` the linear layer (`classifier.0` is the dropout).
fn torchvision_keys() -> Vec<KeyRule> {
    let mut rules = vec![KeyRule::new("classifier.1", "classifier")];
    for (tv, ours) in [("features.0", "stem"), ("features.8", "last_conv")] {
        for (index, name) in CONV_BN {
            rules.push(KeyRule::new(
                format!("{tv}.{index}"),
                format!("{ours}.{name}"),
            ));
        }
    }
    for s in 1..=7 {
        let layers = if s == 1 {
            &MBCONV_LAYERS[1..]
        } else {
            &MBCONV_LAYERS[..]
        };
        for (index, layer) in layers.iter().enumerate() {
            let tv = format!("features.{s}.{{}}.block.{index}");
            let ours = format!("stage{s}.{{}}.{layer}");
            if *layer == "se" {
                rules.push(KeyRule::new(tv, ours));
                continue;
            }
            for (i, name) in CONV_BN {
                rules.push(KeyRule::new(format!("{tv}.{i}"), format!("{ours}.{name}")));
            }
        }
    }
    rules
}

/// Stage depths from `features.S.M.block.L.*` keys whose block layers are themselves
/// `Sequential`s or squeeze-excitations (`block.3.1.weight`, `block.2.fc1.weight`).
fn detect(keys: &[&str]) -> Option<Detected> {
    let mut depths = [0usize; 7];
    for key in keys {
        let parts: Vec<&str> = key.split('.').collect();
        if let ["features", stage, index, "block", _, layer, ..] = parts.as_slice()
            && (layer.parse::<usize>().is_ok() || matches!(*layer, "fc1" | "fc2"))
            && let (Ok(s), Ok(i)) = (stage.parse::<usize>(), index.parse::<usize>())
            && (1..=7).contains(&s)
        {
            depths[s - 1] = depths[s - 1].max(i + 1);
        }
    }
    if depths == [0; 7] {
        return None;
    }
    Some(FAMILY.detected(
        |f| matches!(f, Family::EfficientNet { depths: d, .. } if d == depths),
        || format!("EfficientNet with stage depths {depths:?}"),
    ))
}

impl EfficientNet {
    /// The network with only the groups `trains` names trainable: the stem is `features.0`,
    /// the body `features.1..=8` (the 1×1 convolution to 1280 channels included), the head
    /// the classifier.
    pub fn with_trainable(mut self, trains: impl Fn(ParamGroup) -> bool) -> Self {
        if !trains(ParamGroup::Stem) {
            self.stem = self.stem.freeze();
        }
        if !trains(ParamGroup::Body) {
            for stage in self.blocks_mut() {
                *stage = std::mem::take(stage).freeze();
            }
            self.last_conv = self.last_conv.freeze();
        }
        if !trains(ParamGroup::Head) {
            self.dropout = self.dropout.freeze();
            self.classifier = self.classifier.freeze();
        }
        self
    }

    /// Every block keeps its residual branch in training too; the dropout before the
    /// classifier stays (torchvision's `dropout`).
    pub fn without_stochastic_depth(mut self) -> Self {
        for block in self.blocks_mut().into_iter().flatten() {
            block.drop_prob = 0.0;
        }
        self
    }

    /// Every stage's output by the name torchvision's reference files use (`stage0` the stem,
    /// `stage1..7`, `stage8` the last convolution, `features`, `logits`).
    pub fn activations(&self, images: Tensor<4>) -> Vec<(String, TensorData)> {
        let s = self.stages(images);
        named_activations(
            ("stage0", s.stem),
            "stage",
            s.stages,
            [
                ("stage8", s.last.into_data()),
                ("features", s.features.into_data()),
                ("logits", s.logits.into_data()),
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depths_from_keys() {
        let keys = [
            "features.0.0.weight",
            "features.1.0.block.1.fc1.weight",
            "features.2.1.block.0.0.weight",
            "features.3.1.block.3.1.bias",
            "features.4.2.block.2.fc2.weight",
            "features.5.2.block.0.1.running_var",
            "features.6.3.block.1.0.weight",
            "features.7.0.block.3.0.weight",
            "features.8.0.weight",
            "classifier.1.weight",
        ];
        assert_eq!(detect(&keys), Some(Detected::Arch(Arch::EfficientNetB0)));
        assert_eq!(
            detect(&keys[..3]),
            Some(Detected::Other(
                "EfficientNet with stage depths [1, 2, 0, 0, 0, 0, 0]".into()
            ))
        );
        // ConvNeXt's block layers are plain layers.
        assert_eq!(detect(&["features.1.0.block.3.weight"]), None);
    }
}
