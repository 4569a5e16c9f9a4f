//! The CPU inference network (BatchNorm folded, channels-last kernels) against burn's own
//! computation of the same ResNet on its CPU backend, on real photos.

mod common;

use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::*;
use petal_shared::model::Block;
use petal_shared::model::FoldedResNet;
use petal_shared::model::{ResNet, ResNetConfig};
use petal_shared::{Arch, Preprocessor};

/// Gives every BatchNorm non-trivial statistics and affine parameters, so that folding has
/// something to fold (a fresh BatchNorm is nearly the identity).
#[derive(Default)]
struct RandomBatchNorms {
    in_batch_norm: bool,
    /// Which of gamma, beta, running mean, running variance comes next.
    field: usize,
}

impl ModuleMapper for RandomBatchNorms {
    fn enter_module(&mut self, _name: &str, container_type: &str) {
        if container_type == "Struct:BatchNorm" {
            self.in_batch_norm = true;
            self.field = 0;
        }
    }

    fn exit_module(&mut self, _name: &str, container_type: &str) {
        if container_type == "Struct:BatchNorm" {
            self.in_batch_norm = false;
        }
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if !self.in_batch_norm {
            return param;
        }
        // gamma and variance around 1, beta and mean around 0.
        let (low, high) = [(0.5, 1.5), (-0.3, 0.3), (-0.3, 0.3), (0.5, 2.0)][self.field % 4];
        self.field += 1;
        param.map(|t| {
            let shape = t.shape();
            Tensor::random(
                shape,
                burn::tensor::Distribution::Uniform(low, high),
                &t.device(),
            )
        })
    }
}

/// A freshly initialised deep ResNet's activations grow block after block (ResNet-101's logits
/// reach ~1e7); a trained one's residual branches add small corrections. Scaling each block's
/// last BatchNorm keeps the logits in a trained network's range, where a tolerance means
/// something.
fn like_trained(mut model: ResNet) -> ResNet {
    for layer in [
        &mut model.layer1,
        &mut model.layer2,
        &mut model.layer3,
        &mut model.layer4,
    ] {
        for block in layer.iter_mut() {
            let last = match block {
                Block::Basic(b) => &mut b.bn2,
                Block::Bottleneck(b) => &mut b.bn3,
            };
            last.gamma = Param::from_tensor(last.gamma.val().mul_scalar(0.2));
        }
    }
    model
}

fn photos(side: usize) -> (Vec<f32>, usize) {
    let pre = Preprocessor::default();
    assert_eq!(pre.image_size, side);
    let names = ["sk_flower.jpg", "chelsea.png", "crop_300x452.png"];
    let mut flat = Vec::new();
    for name in names {
        let path = common::fixtures().join("photos").join(name);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        flat.extend(pre.tensor_from_bytes(&bytes).unwrap());
    }
    (flat, names.len())
}

fn check(arch: Arch) {
    let device = Device::flex();
    device.seed(7);
    let model = like_trained(
        ResNetConfig::new(arch, 10)
            .init(&device)
            .map(&mut RandomBatchNorms::default()),
    );
    let (images, n) = photos(224);

    let x = Tensor::<4>::from_data(TensorData::new(images.clone(), [n, 3, 224, 224]), &device);
    let want = model.forward(x).into_data().try_to_vec::<f32>().unwrap();
    let folded = FoldedResNet::new(model).unwrap();
    assert_eq!(folded.num_classes(), 10);
    let got = folded.forward(&images, n, 224, 224);

    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let err = got
        .iter()
        .zip(&want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    println!("{arch}: max |Δ| {err:.2e}, max |logit| {scale:.2}");
    assert!(
        scale > 0.1,
        "{arch}: logits too small to mean anything ({scale})"
    );
    assert!(
        err <= 1e-4 * scale.max(1.0),
        "{arch}: max |Δ| {err} (max |logit| {scale})"
    );
    // Rows stay in input order: each image's logits differ from the others'.
    assert!(got[..10] != got[10..20]);
}

#[test]
fn resnet18_folded_matches_burn() {
    check(Arch::ResNet18);
}

#[test]
fn resnet50_folded_matches_burn() {
    check(Arch::ResNet50);
}

#[test]
fn resnet101_folded_matches_burn() {
    check(Arch::ResNet101);
}

/// More images than one pass holds, and an odd count: batching inside the network must not
/// change any image's logits.
#[test]
fn batching_does_not_change_logits() {
    let device = Device::flex();
    device.seed(3);
    let model = ResNetConfig::new(Arch::ResNet18, 4)
        .init(&device)
        .map(&mut RandomBatchNorms::default());
    let folded = FoldedResNet::new(model).unwrap();
    let side = 64;
    let per = 3 * side * side;
    let images: Vec<f32> = (0..7 * per)
        .map(|i| ((i * 7919) % 255) as f32 / 128.0 - 1.0)
        .collect();
    let all = folded.forward(&images, 7, side, side);
    for i in 0..7 {
        let one = folded.forward(&images[i * per..(i + 1) * per], 1, side, side);
        for (a, b) in one.iter().zip(&all[i * 4..(i + 1) * 4]) {
            assert!(
                (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                "image {i}: {a} vs {b}"
            );
        }
    }
}
