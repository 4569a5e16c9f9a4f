//! Network parity with torchvision: seeded weights with measured BatchNorm statistics (ResNet,
//! EfficientNet) or randomised LayerNorms and layer scales (ConvNeXt), imported through the
//! public import path, must reproduce torchvision's activations stage by stage.

use crate::reference::{Reference, convnext_tiny, efficientnet_b0, resnet18, resnet101};
use crate::util::read_npy;
use burn::prelude::*;
use burn::tensor::activation::relu;
use petal_shared::classify::top_k_indices;
use petal_shared::import::{Head, load_torchvision};
use petal_shared::{Arch, Network};
use std::path::Path;

const STAGES: [&str; 7] = [
    "stem", "layer1", "layer2", "layer3", "layer4", "pooled", "logits",
];

pub(crate) fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
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
pub(crate) fn input(reference: &Reference) -> (Tensor<4>, Vec<f32>, Vec<usize>) {
    let (shape, values) = read_npy::<f32>(&reference.file("input.npy"));
    let x = Tensor::<4>::from_data(
        TensorData::new(values.clone(), shape.clone()),
        &Device::flex(),
    );
    (x, values, shape)
}

/// Compares one stage with torchvision's; returns the largest error.
pub(crate) fn compare(reference: &Reference, arch: Arch, name: &str, got: &[f32]) -> f32 {
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

/// Compares every stage of `model` on the reference input with torchvision's
/// (`ARCH.NAME.npy`); the network must give exactly the stages `names`, in order. Returns the
/// logits.
fn compare_stages(reference: &Reference, arch: Arch, model: &Network, names: &[&str]) -> Vec<f32> {
    let (x, _, _) = input(reference);
    let activations = model.activations(x);
    let got: Vec<&str> = activations.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(got, names, "{arch}: its stages");
    let mut logits = Vec::new();
    for (name, data) in activations {
        let values = data.convert::<f32>().try_into_vec::<f32>().unwrap();
        compare(reference, arch, &name, &values);
        logits = values;
    }
    logits
}

/// Imports a ResNet and compares every stage with torchvision's, and the CPU's folded
/// network's logits; returns the largest logit error.
fn check(reference: &Reference, arch: Arch, weights: &Path) -> f32 {
    let model = import(arch, weights);
    let logits = compare_stages(reference, arch, &model, &STAGES);
    let logit_err = assert_logits(reference, arch, "burn", &logits);
    // The CPU inference network (BatchNorm folded) against torchvision and against burn's
    // layer-by-layer computation.
    let (_, input, shape) = input(reference);
    let folded = model
        .fold()
        .unwrap()
        .forward(&input, shape[0], shape[2], shape[3]);
    let folded_err = assert_logits(reference, arch, "folded", &folded);
    let unfolded_err = max_abs_diff(&folded, &logits);
    println!(
        "{arch} folded: max |Δ| {folded_err:.2e} vs torchvision, {unfolded_err:.2e} vs unfolded"
    );
    assert!(
        unfolded_err <= 1e-4,
        "{arch} folded vs unfolded: {unfolded_err}"
    );
    logit_err
}

#[test]
fn resnet18_legacy_pth_matches_torchvision() {
    let r = resnet18();
    check(r, Arch::ResNet18, &r.file("resnet18.pth"));
}

/// Grad-CAM by its definition, with burn's autodiff: the last stage's output tracked, the head
/// run on it, the chosen logits' sum backpropagated; each channel weighted by its gradient's
/// mean over the grid. Returns `[N, h·w]`.
fn autodiff_grad_cam(model: &Network, x: Tensor<4>, classes: &[usize]) -> Vec<f32> {
    // In evaluation: on a tracked input, a head's dropout (EfficientNet's) would otherwise
    // drop features as in training.
    let model = model.valid();
    let last = model.last_stage(x).without_autodiff();
    let tracked = last.clone().autodiff().require_grad();
    let logits = model.head(tracked.clone());
    let [n, num_classes] = logits.dims();
    let mut pick = vec![0f32; n * num_classes];
    for (i, &class) in classes.iter().enumerate() {
        pick[i * num_classes + class] = 1.0;
    }
    let pick = Tensor::<2>::from_data(TensorData::new(pick, [n, num_classes]), &Device::flex());
    let grads = (logits * pick).sum().backward();
    let grad = tracked.grad(&grads).expect("the last stage's gradient");
    let [n, c, h, w] = grad.dims();
    let weights = grad.reshape([n, c, h * w]).mean_dim(2);
    values(relu((last.reshape([n, c, h * w]) * weights).sum_dim(1)))
}

/// Each image's map of its class out of `[N, h, w, classes]` maps: `[N, h·w]`.
fn pick_maps(maps: &[f32], n: usize, positions: usize, classes: &[usize]) -> Vec<f32> {
    let num_classes = maps.len() / (n * positions);
    (0..n)
        .flat_map(|i| (0..positions).map(move |p| (i, p)))
        .map(|(i, p)| maps[(i * positions + p) * num_classes + classes[i]])
        .collect()
}

/// The network's Grad-CAM ([`Network::maps`], the head's gradient in closed form) of each
/// image's top-1 class against torch's autograd through torchvision's head
/// (`ARCH.gradcam.npy`) and against burn's autodiff; returns the maps (`[N, h·w]`) and the
/// classes.
fn check_grad_cam(reference: &Reference, arch: Arch, model: &Network) -> (Vec<f32>, Vec<usize>) {
    let (x, _, _) = input(reference);
    let maps = model.maps(x.clone());
    let logits = values(maps.logits);
    assert_logits(reference, arch, "maps pass", &logits);
    let classes: Vec<usize> = logits
        .chunks(1000)
        .map(|row| top_k_indices(row, 1)[0])
        .collect();
    let [n, h, w, _] = maps.grad_cam.dims();
    let grad_cam = pick_maps(&values(maps.grad_cam), n, h * w, &classes);
    compare(reference, arch, "gradcam", &grad_cam);
    assert!(
        grad_cam.iter().all(|&v| v >= 0.0),
        "Grad-CAM is clipped at zero"
    );
    let autodiff = autodiff_grad_cam(model, x, &classes);
    let err = max_abs_diff(&grad_cam, &autodiff);
    let scale = autodiff.iter().fold(0f32, |m, v| m.max(v.abs()));
    println!("{arch} Grad-CAM closed form vs burn's autodiff: max |Δ| {err:.2e} (max {scale:.2})");
    assert!(
        err <= 1e-5 * scale.max(1.0),
        "{arch}: closed form vs autodiff {err}"
    );
    (grad_cam, classes)
}

/// ResNet-18's Grad-CAM on burn's network and on the CPU's folded one (the class map without
/// the head's bias), against torch and burn's autodiff.
#[test]
fn resnet18_grad_cam_matches_torchvision_and_autodiff() {
    let r = resnet18();
    let model = import(Arch::ResNet18, &r.file("resnet18.pth"));
    let (grad_cam, classes) = check_grad_cam(r, Arch::ResNet18, &model);
    let (_, input, shape) = input(r);
    let folded = model.fold().unwrap();
    let (_, cam) = folded.forward_with_class_maps(&input, shape[0], shape[2], shape[3]);
    let folded_grad_cam = folded.grad_cam(&cam);
    let folded_grad_cam = pick_maps(
        &folded_grad_cam.values,
        cam.n,
        cam.height * cam.width,
        &classes,
    );
    let err = max_abs_diff(&folded_grad_cam, &grad_cam);
    println!("resnet18 Grad-CAM folded vs burn: max |Δ| {err:.2e}");
    assert!(err <= 1e-5, "folded Grad-CAM differs by {err}");
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

/// The class activation maps of `x` (shape `shape`): the network's logits alongside them are
/// `logits`, and each class's map averages to its logit.
fn assert_class_maps_average_to_logits(
    model: &Network,
    x: Tensor<4>,
    shape: &[usize],
    logits: &[f32],
) {
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

/// ConvNeXt-T from both file formats: every stage, the pooled and normalised features, the
/// logits, class maps whose means are the logits, and Grad-CAM as torch's autograd and burn's
/// autodiff give it.
#[test]
fn convnext_tiny_matches_torchvision() {
    let arch = Arch::ConvNeXtTiny;
    let r = convnext_tiny();
    for file in ["convnext_tiny.pth", "convnext_tiny.safetensors"] {
        println!("{file}");
        let model = import(arch, &r.file(file));
        let stages = [
            "stem", "stage1", "stage2", "stage3", "stage4", "features", "logits",
        ];
        let logits = compare_stages(r, arch, &model, &stages);
        assert_logits(r, arch, "burn", &logits);
        let (x, _, shape) = input(r);

        assert_class_maps_average_to_logits(&model, x, &shape, &logits);
    }
    // Grad-CAM sees the head's LayerNorm, so it is not the class map here: torch's autograd
    // is the reference.
    let model = import(arch, &r.file("convnext_tiny.pth"));
    check_grad_cam(r, arch, &model);
}

/// EfficientNet-B0 from both file formats: the output of each of torchvision's `features[0..=8]`
/// (stem, the seven MBConv stages, the 1×1 convolution to 1280), the pooled features, the
/// logits, class maps whose means are the logits, and Grad-CAM as torch's autograd and burn's
/// autodiff give it.
#[test]
fn efficientnet_b0_matches_torchvision() {
    let arch = Arch::EfficientNetB0;
    let r = efficientnet_b0();
    for file in ["efficientnet_b0.pth", "efficientnet_b0.safetensors"] {
        println!("{file}");
        let model = import(arch, &r.file(file));
        let stages = (0..=8)
            .map(|i| format!("stage{i}"))
            .chain(["features".into(), "logits".into()])
            .collect::<Vec<_>>();
        let stages: Vec<&str> = stages.iter().map(String::as_str).collect();
        let logits = compare_stages(r, arch, &model, &stages);
        assert_logits(r, arch, "burn", &logits);
        let (x, _, shape) = input(r);
        assert_class_maps_average_to_logits(&model, x, &shape, &logits);
    }
    // The head is pooling and a linear layer, so Grad-CAM is the class map without the bias
    // in closed form: torch's autograd and burn's autodiff check it.
    let model = import(arch, &r.file("efficientnet_b0.pth"));
    check_grad_cam(r, arch, &model);
}
