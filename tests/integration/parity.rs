//! Network parity with torchvision: seeded weights with measured BatchNorm statistics (ResNet)
//! or randomised LayerNorms and layer scales (ConvNeXt), imported through the public import
//! path, must reproduce torchvision's activations stage by stage.

use crate::reference::{Reference, convnext_tiny, resnet18, resnet101};
use crate::util::read_npy;
use burn::prelude::*;
use petal_shared::classify::top_k_indices;
use petal_shared::grad_cam::GradCam;
use petal_shared::import::{Head, load_torchvision};
use petal_shared::model::FoldedResNet;
use petal_shared::{Arch, Network};
use std::path::Path;

const STAGES: [&str; 7] = [
    "stem", "layer1", "layer2", "layer3", "layer4", "pooled", "logits",
];

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

/// Imports `weights` as torchvision's ImageNet-shaped `arch` (1000 classes); every tensor of
/// the file must be used.
fn import(arch: Arch, weights: &Path) -> Network {
    let (model, report) = load_torchvision(weights, arch, 1000, Head::Keep, &Device::flex())
        .unwrap_or_else(|e| panic!("import failed: {e}"));
    assert!(
        report
            .ignored
            .iter()
            .all(|k| k.ends_with("num_batches_tracked")),
        "{:?}",
        report.ignored
    );
    assert_eq!(model.arch(), arch);
    model
}

/// The reference input batch, as burn's tensor and as its raw values with their shape.
fn input(reference: &Reference) -> (Tensor<4>, Vec<f32>, Vec<usize>) {
    let (shape, values) = read_npy::<f32>(&reference.file("input.npy"));
    let x = Tensor::<4>::from_data(
        TensorData::new(values.clone(), shape.clone()),
        &Device::flex(),
    );
    (x, values, shape)
}

/// Compares one stage with torchvision's; returns the largest error.
fn compare(reference: &Reference, arch: Arch, name: &str, got: &[f32]) -> f32 {
    let (_, want) = read_npy::<f32>(&reference.file(&format!("{arch}.{name}.npy")));
    assert_eq!(got.len(), want.len(), "{arch} {name}: element count");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let err = max_abs_diff(got, &want);
    println!("{arch} {name:>8}: max |Δ| {err:.2e} (max |ref| {scale:.1})");
    // f32 reassociation noise grows with depth; 2e-5 of the stage's range is still ~100×
    // below any mapping mistake (a wrong or transposed tensor moves values by O(range)).
    assert!(
        err <= 2e-5 * scale.max(1.0) + 1e-5,
        "{arch} {name}: max |Δ| {err} vs range {scale}"
    );
    err
}

/// Logits close to torchvision's, with the same top-5 for every image.
fn assert_logits(reference: &Reference, arch: Arch, what: &str, got: &[f32]) -> f32 {
    let (_, want) = read_npy::<f32>(&reference.file(&format!("{arch}.logits.npy")));
    let err = max_abs_diff(got, &want);
    assert!(err <= 1e-3, "{arch} {what} logits: max |Δ| {err}");
    for (row_got, row_want) in got.chunks(1000).zip(want.chunks(1000)) {
        assert_eq!(
            top_k_indices(row_got, 5),
            top_k_indices(row_want, 5),
            "{arch} {what} top-5"
        );
    }
    err
}

/// Imports a ResNet and compares every stage with torchvision's, and the CPU's folded
/// network's logits; returns the largest logit error.
fn check(reference: &Reference, arch: Arch, weights: &Path) -> f32 {
    let Network::ResNet(model) = import(arch, weights) else {
        panic!("{arch} imported as another family");
    };
    let (x, input, shape) = input(reference);
    let folded = FoldedResNet::new(model.clone())
        .unwrap()
        .forward(&input, shape[0], shape[2], shape[3]);
    let s = model.stages(x);
    let ours = [
        values(s.stem),
        values(s.layer1),
        values(s.layer2),
        values(s.layer3),
        values(s.layer4),
        values(s.pooled),
        values(s.logits),
    ];
    let mut logit_err = 0.0;
    for (name, got) in STAGES.iter().zip(&ours) {
        let err = compare(reference, arch, name, got);
        if *name == "logits" {
            logit_err = assert_logits(reference, arch, "burn", got);
            // The CPU inference network (BatchNorm folded) against torchvision and against
            // burn's layer-by-layer computation.
            let folded_err = assert_logits(reference, arch, "folded", &folded);
            let unfolded_err = max_abs_diff(&folded, got);
            println!(
                "{arch} folded: max |Δ| {folded_err:.2e} vs torchvision, {unfolded_err:.2e} vs unfolded"
            );
            assert!(
                unfolded_err <= 1e-4,
                "{arch} folded vs unfolded: {unfolded_err}"
            );
            assert_eq!(err, logit_err);
        }
    }
    logit_err
}

#[test]
fn resnet18_legacy_pth_matches_torchvision() {
    let r = resnet18();
    check(r, Arch::ResNet18, &r.file("resnet18.pth"));
}

/// Grad-CAM of each image's top-1 class against torch's autograd through torchvision's head
/// (`ARCH.gradcam.npy`); returns the maps (`[N, h, w]`) and the classes.
fn check_grad_cam(reference: &Reference, arch: Arch, model: &Network) -> (Vec<f32>, Vec<usize>) {
    let (x, _, _) = input(reference);
    let grad_cam = GradCam::new(model, x);
    let logits = values(grad_cam.logits());
    assert_logits(reference, arch, "grad-cam pass", &logits);
    let classes: Vec<usize> = logits
        .chunks(1000)
        .map(|row| top_k_indices(row, 1)[0])
        .collect();
    let maps = values(grad_cam.maps(&classes).unwrap());
    compare(reference, arch, "gradcam", &maps);
    assert!(
        maps.iter().all(|&v| v >= 0.0),
        "Grad-CAM is clipped at zero"
    );
    (maps, classes)
}

/// For a ResNet the head is linear at each position, so Grad-CAM is the positive part of the
/// class map without the class's bias, over the grid's size: two computations (gradients vs
/// the head evaluated per position) that must agree.
#[test]
fn resnet18_grad_cam_matches_torchvision_and_the_class_map() {
    let r = resnet18();
    let model = import(Arch::ResNet18, &r.file("resnet18.pth"));
    let (grad_cam, classes) = check_grad_cam(r, Arch::ResNet18, &model);
    let (x, _, _) = input(r);
    let (_, maps) = model.class_maps(x.clone());
    let [n, h, w, num_classes] = maps.dims();
    let maps = values(maps);
    // The head on an all-zero last stage is the bias alone.
    let [_, c, _, _] = model.last_stage(x.clone()).dims();
    let bias = values(model.head(Tensor::zeros([1, c, h, w], &Device::flex())));
    let mut largest = 0f32;
    for (image, &class) in classes.iter().enumerate() {
        for p in 0..h * w {
            let cam = maps[(image * h * w + p) * num_classes + class];
            let want = (cam - bias[class]).max(0.0) / (h * w) as f32;
            let got = grad_cam[image * h * w + p];
            largest = largest.max((got - want).abs());
            assert!(
                (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                "image {image} position {p}: Grad-CAM {got}, class map gives {want}"
            );
        }
    }
    println!("resnet18 Grad-CAM vs (class map - bias)⁺/hw: max |Δ| {largest:.2e} over {n} images");
}

#[test]
fn resnet18_safetensors_matches_torchvision() {
    let r = resnet18();
    check(r, Arch::ResNet18, &r.file("resnet18.safetensors"));
}

#[test]
fn resnet101_zip_pth_matches_torchvision() {
    let r = resnet101();
    check(r, Arch::ResNet101, &r.file("resnet101.pth"));
}

/// ConvNeXt-T from both file formats: every stage, the pooled and normalised features, the
/// logits, class maps whose means are the logits, and Grad-CAM as torch's autograd gives it.
#[test]
fn convnext_tiny_matches_torchvision() {
    let arch = Arch::ConvNeXtTiny;
    let r = convnext_tiny();
    for file in ["convnext_tiny.pth", "convnext_tiny.safetensors"] {
        println!("{file}");
        let model = import(arch, &r.file(file));
        let Network::ConvNeXt(convnext) = &model else {
            panic!("{arch} imported as another family");
        };
        let (x, _, shape) = input(r);
        let s = convnext.stages(x.clone());
        compare(r, arch, "stem", &values(s.stem));
        for (i, stage) in s.stages.into_iter().enumerate() {
            compare(r, arch, &format!("stage{}", i + 1), &values(stage));
        }
        compare(r, arch, "features", &values(s.features));
        let logits = values(s.logits);
        compare(r, arch, "logits", &logits);
        assert_logits(r, arch, "burn", &logits);

        // Class activation maps: each class's map averages to its logit.
        let (cam_logits, maps) = model.class_maps(x);
        assert_eq!(values(cam_logits), logits);
        let [n, h, w, classes] = maps.dims();
        assert_eq!(
            (n, h, w, classes),
            (shape[0], shape[2] / 32, shape[3] / 32, 1000)
        );
        let maps = values(maps);
        for image in 0..n {
            for class in [0, 17, 999] {
                let mean = (0..h * w)
                    .map(|p| f64::from(maps[(image * h * w + p) * classes + class]))
                    .sum::<f64>()
                    / (h * w) as f64;
                let logit = logits[image * classes + class];
                assert!(
                    (mean as f32 - logit).abs() <= 1e-4 * logit.abs().max(1.0),
                    "image {image} class {class}: map mean {mean} vs logit {logit}"
                );
            }
        }
    }
    // Grad-CAM sees the head's LayerNorm, so it is not the class map here: torch's autograd
    // is the reference.
    let model = import(arch, &r.file("convnext_tiny.pth"));
    check_grad_cam(r, arch, &model);
}
