//! The ConvNeXt family's entry in [`FAMILIES`](crate::model::FAMILIES).

use super::{ConvNeXt, ConvNeXtConfig};
use crate::model::family::{Detected, FamilyInfo, Generation, Published, named_activations};
use crate::model::{Arch, Family, KeyRule, ParamGroup, Precision};
use burn::prelude::*;

pub(crate) const FAMILY: FamilyInfo = FamilyInfo {
    name: "ConvNeXt",
    archs: &[Arch::ConvNeXtTiny],
    init: |arch, num_classes, device| ConvNeXtConfig::new(arch, num_classes).init(device).into(),
    torchvision_keys,
    head: "head",
    detect,
    // torchvision evaluates `ConvNeXt_Tiny_Weights.IMAGENET1K_V1` at resize 236.
    imagenet_resize: |_| 236,
    // torchvision/models/convnext.py (`ConvNeXt_Tiny_Weights`, torchvision 0.14.1).
    published: &[Published {
        arch: Arch::ConvNeXtTiny,
        generation: Generation::V1,
        file: "convnext_tiny-983f1562.pth",
    }],
};

/// Our name of each layer in torchvision's `CNBlock.block` (`Sequential` index → field);
/// indices 1, 4 and 6 are the permutes and the GELU, which have no weights.
const BLOCK_LAYERS: [(usize, &str); 4] =
    [(0, "dwconv"), (2, "norm"), (3, "pwconv1"), (5, "pwconv2")];

/// torchvision's keys are `nn.Sequential` indices (`features.5.3.block.3.weight`): `features.0`
/// is the stem, `features.{2s+1}` stage `s`'s blocks and `features.{2s}` its downsampling
/// (s ≥ 1); `classifier.0` the head's LayerNorm and `classifier.2` its linear layer.
fn torchvision_keys() -> Vec<KeyRule> {
    let mut rules = vec![
        KeyRule::new("features.0.0", "stem"),
        KeyRule::new("features.0.1", "stem_norm"),
        KeyRule::new("classifier.0", "head_norm"),
        KeyRule::new("classifier.2", "head"),
    ];
    for s in 0..4 {
        let blocks = 2 * s + 1;
        rules.push(KeyRule::new(
            format!("features.{blocks}.{{}}.layer_scale"),
            format!("stages.{s}.blocks.{{}}.layer_scale"),
        ));
        for (index, name) in BLOCK_LAYERS {
            rules.push(KeyRule::new(
                format!("features.{blocks}.{{}}.block.{index}"),
                format!("stages.{s}.blocks.{{}}.{name}"),
            ));
        }
        if s > 0 {
            for (index, name) in [(0, "norm"), (1, "conv")] {
                rules.push(KeyRule::new(
                    format!("features.{}.{index}", 2 * s),
                    format!("stages.{s}.downsample.{name}"),
                ));
            }
        }
    }
    rules
}

/// Stage depths from `features.{2s+1}.M.block.L.*` keys, whose block layers are plain layers
/// (`block.3.weight`; EfficientNet's are `Sequential`s: `block.3.0.weight`).
fn detect(keys: &[&str]) -> Option<Detected> {
    let mut depths = [0usize; 4];
    for key in keys {
        let parts: Vec<&str> = key.split('.').collect();
        if let ["features", stage, index, "block", layer, param] = parts.as_slice()
            && layer.parse::<usize>().is_ok()
            && param.parse::<usize>().is_err()
            && let (Ok(k), Ok(i)) = (stage.parse::<usize>(), index.parse::<usize>())
            && k % 2 == 1
            && k <= 7
        {
            depths[k / 2] = depths[k / 2].max(i + 1);
        }
    }
    if depths == [0; 4] {
        return None;
    }
    Some(FAMILY.detected(
        |f| matches!(f, Family::ConvNeXt { depths: d, .. } if d == depths),
        || format!("ConvNeXt with stage depths {depths:?}"),
    ))
}

impl ConvNeXt {
    /// The network with only the groups `trains` names trainable: the stem is the patchify
    /// convolution and its LayerNorm, the body every stage, the head LayerNorm + linear layer.
    pub fn with_trainable(mut self, trains: impl Fn(ParamGroup) -> bool) -> Self {
        if !trains(ParamGroup::Stem) {
            self.stem = self.stem.freeze();
            self.stem_norm = self.stem_norm.freeze();
        }
        if !trains(ParamGroup::Body) {
            self.stages = self.stages.freeze();
        }
        if !trains(ParamGroup::Head) {
            self.head_norm = self.head_norm.freeze();
            self.head = self.head.freeze();
        }
        self
    }

    /// The same network computing in `precision`; the weights stay f32.
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// ConvNeXt has no BatchNorm, so no pending running statistics.
    pub fn sync_running_stats(&self) {}

    /// Every block keeps its residual branch in training too.
    pub fn without_stochastic_depth(mut self) -> Self {
        for block in self.stages.iter_mut().flat_map(|s| s.blocks.iter_mut()) {
            block.drop_prob = 0.0;
        }
        self
    }

    /// Every stage's output by the name torchvision's reference files use (`stem`,
    /// `stage1..4`, `features`, `logits`).
    pub fn activations(&self, images: Tensor<4>) -> Vec<(String, TensorData)> {
        let s = self.stages(images);
        named_activations(
            ("stem", s.stem),
            "stage",
            s.stages,
            [
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
            "features.1.2.block.0.weight",
            "features.3.2.block.3.weight",
            "features.5.8.block.5.bias",
            "features.7.2.layer_scale",
            "features.7.2.block.2.weight",
        ];
        assert_eq!(detect(&keys), Some(Detected::Arch(Arch::ConvNeXtTiny)));
        assert_eq!(
            detect(&keys[..3]),
            Some(Detected::Other(
                "ConvNeXt with stage depths [3, 3, 0, 0]".into()
            ))
        );
        // EfficientNet's block layers are Sequentials, ResNet has no `features`.
        assert_eq!(detect(&["features.1.0.block.0.0.weight"]), None);
        assert_eq!(detect(&["layer1.0.conv1.weight"]), None);
    }
}
