//! Mixed precision (`Precision::F16`): the network rounds its convolution and linear
//! operands to f16 and computes the rest in f32, forward and backward. burn's CPU backend runs
//! f16 convolutions natively, so the f16 path is checked here against f32 without a GPU.

use burn::prelude::*;
use burn::tensor::{Distribution, FloatDType};
use petal_shared::model::{ResNet, ResNetConfig};
use petal_shared::{Arch, Precision};

/// A small ResNet-18 and a batch of random images, both seeded.
fn network_and_images(device: &Device) -> (ResNet, Tensor<4>) {
    device.seed(7);
    let model = ResNetConfig::new(Arch::ResNet18, 5).init(device);
    let images = Tensor::<4>::random([2, 3, 64, 64], Distribution::Normal(0.0, 1.0), device);
    (model, images)
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// Largest |a - b| relative to the largest |b| (at least 1).
fn relative_gap(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1.0f32, |m, x| m.max(x.abs()));
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
        / scale
}

#[test]
fn f16_logits_stay_near_f32_and_come_back_as_f32() {
    let device = Device::flex();
    let (model, images) = network_and_images(&device);
    let full = model.forward(images.clone());
    let half = model.with_precision(Precision::F16).forward(images);
    // Everything after the last linear layer is f32 again: the loss and softmax see f32.
    assert_eq!(half.dtype(), FloatDType::F32.into());
    let (full, half) = (values(full), values(half));
    let gap = relative_gap(&half, &full);
    // f16 keeps 11 significant bits (relative rounding 4.9e-4) through 20 layers.
    assert!(gap < 2e-2, "f16 {half:?} vs f32 {full:?}: {gap}");
    assert!(
        gap > 0.0,
        "the f16 path gave exactly the f32 logits: it did not run"
    );
}

#[test]
fn f16_gradients_reach_the_f32_weights_near_the_f32_gradients() {
    let device = Device::flex().autodiff();
    let (model, images) = network_and_images(&device);
    let grads_of = |model: &ResNet| {
        let loss = model.forward(images.clone()).powi_scalar(2).mean();
        let grads = loss.backward();
        let conv = model.layer2[0].clone();
        let weight = match conv {
            petal_shared::model::Block::Basic(b) => b.conv1.weight.val(),
            petal_shared::model::Block::Bottleneck(b) => b.conv1.weight.val(),
        };
        weight.grad(&grads).expect("the conv weight has a gradient")
    };
    let full = grads_of(&model);
    let half_model = model.with_precision(Precision::F16);
    let half = grads_of(&half_model);
    // The master weights and their gradients stay f32.
    assert_eq!(half.dtype(), FloatDType::F32.into());
    let (full, half) = (values(full), values(half));
    assert!(half.iter().all(|g| g.is_finite()));
    let gap = relative_gap(&half, &full);
    assert!(gap < 5e-2, "f16 gradient vs f32: {gap}");
    assert!(gap > 0.0);
}
