//! Network parity with torchvision: seeded weights with measured BatchNorm statistics, imported
//! through the public import path, must reproduce torchvision's activations stage by stage.

use crate::reference::{Reference, resnet18, resnet101};
use crate::util::read_npy;
use burn::prelude::*;
use petal_shared::Arch;
use petal_shared::classify::top_k_indices;
use petal_shared::import::{Head, load_torchvision};
use petal_shared::model::FoldedResNet;
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

/// Imports `weights` and compares every stage with torchvision's; returns the largest logit error.
fn check(reference: &Reference, arch: Arch, weights: &Path) -> f32 {
    let device = Device::flex();
    let (model, report) = load_torchvision(weights, arch, 1000, Head::Keep, &device)
        .unwrap_or_else(|e| panic!("import failed: {e}"));
    assert!(
        report
            .ignored
            .iter()
            .all(|k| k.ends_with("num_batches_tracked")),
        "{:?}",
        report.ignored
    );

    let (shape, input) = read_npy::<f32>(&reference.file("input.npy"));
    let folded = FoldedResNet::new(model.clone())
        .unwrap()
        .forward(&input, shape[0], shape[2], shape[3]);
    let x = Tensor::<4>::from_data(TensorData::new(input, shape.clone()), &device);
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
        let (_, want) = read_npy::<f32>(&reference.file(&format!("{arch}.{name}.npy")));
        assert_eq!(got.len(), want.len(), "{arch} {name}: element count");
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = max_abs_diff(got, &want);
        println!("{arch} {name:>6}: max |Δ| {err:.2e} (max |ref| {scale:.1})");
        // f32 reassociation noise grows with depth; 2e-5 of the stage's range is still ~100×
        // below any mapping mistake (a wrong or transposed tensor moves values by O(range)).
        assert!(
            err <= 2e-5 * scale.max(1.0) + 1e-5,
            "{arch} {name}: max |Δ| {err} vs range {scale}"
        );
        if *name == "logits" {
            // The CPU inference network (BatchNorm folded) against torchvision and against
            // burn's layer-by-layer computation.
            let folded_err = max_abs_diff(&folded, &want);
            let unfolded_err = max_abs_diff(&folded, got);
            println!(
                "{arch} folded: max |Δ| {folded_err:.2e} vs torchvision, {unfolded_err:.2e} vs unfolded"
            );
            assert!(
                folded_err <= 1e-3,
                "{arch} folded logits: max |Δ| {folded_err}"
            );
            assert!(
                unfolded_err <= 1e-4,
                "{arch} folded vs unfolded: {unfolded_err}"
            );
            for (row_folded, row_want) in folded.chunks(1000).zip(want.chunks(1000)) {
                assert_eq!(
                    top_k_indices(row_folded, 5),
                    top_k_indices(row_want, 5),
                    "{arch} folded top-5"
                );
            }
            logit_err = err;
            assert!(err <= 1e-3, "{arch} logits: max |Δ| {err}");
            for (row_got, row_want) in got.chunks(1000).zip(want.chunks(1000)) {
                assert_eq!(
                    top_k_indices(row_got, 5),
                    top_k_indices(row_want, 5),
                    "{arch} top-5"
                );
            }
        }
    }
    logit_err
}

#[test]
fn resnet18_legacy_pth_matches_torchvision() {
    let r = resnet18();
    check(r, Arch::ResNet18, &r.file("resnet18.pth"));
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
