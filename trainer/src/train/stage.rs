//! What a stage trains: which parameters get gradients, and which BatchNorm layers keep
//! updating their running statistics.

use super::recipe::{OptimizerKind, Stage, Trainable};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, ModuleOptimizer, SgdConfig};
use petal_shared::Network;

/// Sets `model` up for `trainable`. Freezing (rather than `no_grad`) also stops the frozen
/// BatchNorm layers' statistics from drifting: they keep the pretrained ImageNet statistics,
/// and evaluation sees the same network the head was trained on.
pub fn set_trainable(model: Network, trainable: Trainable) -> Network {
    model.with_trainable(trainable.groups())
}

/// A fresh optimiser for `stage`, with torch's defaults where burn's differ (Adam epsilon
/// 1e-8, SGD dampening 0).
pub fn optimizer(stage: &Stage) -> ModuleOptimizer {
    let decay =
        (stage.weight_decay > 0.0).then(|| WeightDecayConfig::new(stage.weight_decay as f32));
    match stage.optimizer {
        OptimizerKind::Adam => AdamConfig::new()
            .with_epsilon(1e-8)
            .with_weight_decay(decay)
            .init(),
        OptimizerKind::Sgd => SgdConfig::new()
            .with_momentum((stage.momentum > 0.0).then(|| {
                MomentumConfig::new()
                    .with_momentum(stage.momentum)
                    .with_dampening(0.0)
            }))
            .with_weight_decay(decay)
            .init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::recipe::Recipe;
    use crate::train::tensors;
    use burn::nn::loss::CrossEntropyLossConfig;
    use burn::optim::GradientsParams;
    use burn::prelude::*;
    use petal_shared::{Arch, BatchNormConfig, NetworkConfig};

    /// One Adam step of `arch` on random images with `trainable`; the names of the tensors it
    /// changed.
    fn changed_by_one_step(arch: Arch, trainable: Trainable) -> Vec<String> {
        let device = Device::flex().autodiff();
        device.seed(3);
        let model = NetworkConfig::new(arch, 3).init(&device);
        let model = set_trainable(model, trainable);
        let before = tensors(&model);
        let x = Tensor::<4>::random([4, 3, 32, 32], burn::tensor::Distribution::Default, &device);
        let y = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 1, 2, 1], [4]), &device);
        let loss = CrossEntropyLossConfig::new()
            .init(&device)
            .forward(model.forward(x), y);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let mut optim = optimizer(&Recipe::default().stages[0]);
        let model = optim.step(1e-3, model, grads);
        model.sync_running_stats();
        let after = tensors(&model);
        before
            .into_iter()
            .zip(after)
            .filter(|((_, a), (_, b))| a != b)
            .map(|((name, _), _)| name)
            .collect()
    }

    #[test]
    fn head_stage_trains_only_the_classifier() {
        let changed = changed_by_one_step(Arch::ResNet18, Trainable::Head);
        assert_eq!(changed, ["fc.weight", "fc.bias"]);
    }

    #[test]
    fn all_but_stem_keeps_conv1_and_bn1_as_they_are() {
        let changed = changed_by_one_step(Arch::ResNet18, Trainable::AllButStem);
        assert!(
            changed
                .iter()
                .all(|n| !n.starts_with("conv1") && !n.starts_with("bn1"))
        );
        // Weights and BatchNorm statistics of the rest move.
        for name in [
            "layer1.0.conv1.weight",
            "layer4.1.bn2.running_mean",
            "fc.weight",
        ] {
            assert!(
                changed.iter().any(|n| n == name),
                "{name} did not change: {changed:?}"
            );
        }
    }

    #[test]
    fn all_trains_the_stem_too() {
        let changed = changed_by_one_step(Arch::ResNet18, Trainable::All);
        for name in ["conv1.weight", "bn1.gamma", "bn1.running_var"] {
            assert!(
                changed.iter().any(|n| n == name),
                "{name} did not change: {changed:?}"
            );
        }
    }

    #[test]
    fn convnext_groups_are_its_stem_stages_and_classifier() {
        let head = changed_by_one_step(Arch::ConvNeXtTiny, Trainable::Head);
        assert_eq!(
            head,
            [
                "head_norm.gamma",
                "head_norm.beta",
                "head.weight",
                "head.bias"
            ]
        );
        let body = changed_by_one_step(Arch::ConvNeXtTiny, Trainable::AllButStem);
        assert!(body.iter().all(|n| !n.starts_with("stem")), "{body:?}");
        for name in [
            "stages.0.blocks.0.dwconv.weight",
            "stages.3.downsample.conv.weight",
            "stages.2.blocks.8.layer_scale",
            "head.weight",
        ] {
            assert!(body.iter().any(|n| n == name), "{name} did not change");
        }
        let all = changed_by_one_step(Arch::ConvNeXtTiny, Trainable::All);
        assert!(all.iter().any(|n| n == "stem.weight"));
    }

    // Petal's BatchNorm (petal_shared::BatchNorm): PyTorch's running statistics.

    /// One training step's running statistics against PyTorch's formula on a batch whose
    /// per-channel statistics are known exactly.
    #[test]
    fn running_variance_moves_towards_the_unbiased_batch_variance() {
        let device = Device::flex().autodiff();
        let bn = BatchNormConfig::new(2).init(&device);
        // Channel 0: 1, 2, 3, 4 (mean 2.5, unbiased variance 5/3); channel 1: all 7.
        let x = Tensor::<4>::from_data(
            TensorData::new(
                vec![1.0f32, 2.0, 7.0, 7.0, 3.0, 4.0, 7.0, 7.0],
                [2, 2, 2, 1],
            ),
            &device,
        );
        let _ = bn.forward(x);
        let read = |t: Tensor<1>| t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        let mean = read(bn.running_mean.value_sync());
        let var = read(bn.running_var.value_sync());
        let close = |a: f32, b: f32| (a - b).abs() < 1e-6;
        assert!(
            close(mean[0], 0.9 * 0.0 + 0.1 * 2.5) && close(mean[1], 0.7),
            "{mean:?}"
        );
        assert!(close(var[0], 0.9 + 0.1 * 5.0 / 3.0), "unbiased: {var:?}");
        assert!(close(var[1], 0.9), "{var:?}");
    }

    #[test]
    fn a_frozen_layer_keeps_its_statistics() {
        let device = Device::flex().autodiff();
        let bn = BatchNormConfig::new(1).init(&device).freeze();
        let x = Tensor::<4>::from_data(TensorData::new(vec![1.0f32, 5.0], [2, 1, 1, 1]), &device);
        let y = bn
            .forward(x)
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap();
        // Running mean 0, variance 1: the input comes back scaled by 1/sqrt(1 + eps).
        assert!((y[1] - 5.0 / (1.0f32 + 1e-5).sqrt()).abs() < 1e-5, "{y:?}");
        let var = bn.running_var.value_sync().into_data().convert::<f32>();
        assert_eq!(var.try_to_vec::<f32>().unwrap(), [1.0]);
    }
}
