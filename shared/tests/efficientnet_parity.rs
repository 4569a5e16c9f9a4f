//! EfficientNet-B0 against torchvision itself: seeded torchvision weights with measured
//! BatchNorm statistics, written as `.pth` and `.safetensors` by
//! `tests/reference/torchvision_ref.py` and imported through the public import path, must
//! reproduce torchvision's activations after every one of its `features[0..=8]`, its pooled
//! features, logits and Grad-CAM. Files of other families must be refused by name.
//!
//! The shared crate's own parity check (the workspace's integration suite has a twin in
//! `tests/integration/parity.rs`): it needs Debian's torch (`/usr/bin/python3`, or
//! `PETAL_PYTHON`) and the `import` feature.

#![cfg(feature = "import")]

mod common;

use burn::prelude::*;
use petal_shared::import::{Head, ImportError, load_torchvision};
use petal_shared::{Arch, Network};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// One torchvision reference run, shared by this binary's tests; removed with the process.
struct Reference {
    dir: tempfile::TempDir,
}

impl Reference {
    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn npy(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let path = self.file(name);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let file = npyz::NpyFile::new(&bytes[..]).unwrap();
        let shape = file.shape().iter().map(|&d| d as usize).collect();
        (shape, file.into_vec().unwrap())
    }

    /// The input batch: a random image and, where the fixtures are present, a real photo.
    fn input(&self) -> Tensor<4> {
        let (shape, values) = self.npy("input.npy");
        Tensor::from_data(TensorData::new(values, shape), &Device::flex())
    }
}

/// EfficientNet-B0 (the network under test), ConvNeXt-T (whose keys share EfficientNet's
/// `features.N.M.block.*` shape) and ResNet-18, from one run of torchvision's reference script.
fn reference() -> &'static Reference {
    static R: OnceLock<Reference> = OnceLock::new();
    R.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/reference/torchvision_ref.py");
        let python = std::env::var("PETAL_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into());
        let mut command = Command::new(&python);
        command.arg(&script).arg("--out").arg(dir.path());
        let photo = common::fixtures().join("preprocess/chelsea.png.r256c224.npy");
        if photo.is_file() {
            command.arg("--photo").arg(photo);
        }
        let output = command
            .args(["efficientnet_b0", "convnext_tiny", "resnet18"])
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run {python} (apt install python3-torchvision): {e}")
            });
        assert!(
            output.status.success(),
            "torchvision reference failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        print!("{}", String::from_utf8_lossy(&output.stdout));
        Reference { dir }
    })
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

/// The indices of the `k` largest values, largest first.
fn top_k(row: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
    order.truncate(k);
    order
}

/// Compares one activation with torchvision's `efficientnet_b0.NAME.npy`; returns the largest
/// error. f32 reassociation noise grows with depth; 2e-5 of the activation's range is still
/// far below any mapping mistake (a wrong or transposed tensor moves values by O(range)).
fn compare(r: &Reference, name: &str, got: &[f32]) -> f32 {
    let (_, want) = r.npy(&format!("efficientnet_b0.{name}.npy"));
    assert_eq!(got.len(), want.len(), "{name}: element count");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let err = max_abs_diff(got, &want);
    println!("efficientnet_b0 {name:>8}: max |Δ| {err:.2e} (max |ref| {scale:.1})");
    assert!(
        err <= 2e-5 * scale.max(1.0) + 1e-5,
        "{name}: max |Δ| {err} vs range {scale}"
    );
    err
}

/// Logits within 1e-3 of torchvision's, with the same top-5 for every image.
fn assert_logits(r: &Reference, got: &[f32]) {
    let (_, want) = r.npy("efficientnet_b0.logits.npy");
    let err = max_abs_diff(got, &want);
    assert!(err <= 1e-3, "logits: max |Δ| {err}");
    for (row_got, row_want) in got.chunks(1000).zip(want.chunks(1000)) {
        assert_eq!(top_k(row_got, 5), top_k(row_want, 5), "top-5");
    }
}

/// Imports `file` as ImageNet-shaped EfficientNet-B0; every tensor but the BatchNorm counters
/// must be used.
fn import(file: &Path) -> Network {
    let (model, report) = load_torchvision(
        file,
        Arch::EfficientNetB0,
        1000,
        Head::Keep,
        &Device::flex(),
    )
    .unwrap_or_else(|e| panic!("import failed: {e}"));
    // 360 keys, 49 of them BatchNorm's `num_batches_tracked`.
    assert_eq!(report.applied, 311);
    assert_eq!(report.ignored.len(), 49);
    assert!(
        report
            .ignored
            .iter()
            .all(|k| k.ends_with("num_batches_tracked")),
        "{:?}",
        report.ignored
    );
    assert_eq!(model.arch(), Arch::EfficientNetB0);
    model
}

#[test]
fn every_stage_matches_torchvision_from_both_formats() {
    let r = reference();
    for file in ["efficientnet_b0.pth", "efficientnet_b0.safetensors"] {
        println!("{file}");
        let Network::EfficientNet(model) = import(&r.file(file)) else {
            panic!("imported as another family");
        };
        let s = model.stages(r.input());
        compare(r, "stage0", &values(s.stem));
        for (i, stage) in s.stages.into_iter().enumerate() {
            compare(r, &format!("stage{}", i + 1), &values(stage));
        }
        compare(r, "stage8", &values(s.last));
        compare(r, "features", &values(s.features));
        let logits = values(s.logits);
        compare(r, "logits", &logits);
        assert_logits(r, &logits);
    }
}

/// Class maps average to the logits, and the closed-form Grad-CAM equals torch's autograd
/// through torchvision's head.
#[test]
fn class_maps_and_grad_cam_match_torchvision() {
    let r = reference();
    let model = import(&r.file("efficientnet_b0.pth"));
    let x = r.input();
    let forward = values(model.forward(x.clone()));
    let maps = model.maps(x);
    let logits = values(maps.logits);
    assert_logits(r, &logits);
    assert!(max_abs_diff(&logits, &forward) <= 1e-5);

    let [n, h, w, classes] = maps.cam.dims();
    assert_eq!((h, w, classes), (7, 7, 1000));
    let positions = h * w;
    let cam = values(maps.cam);
    for image in 0..n {
        for class in [0, 17, 999] {
            let mean = (0..positions)
                .map(|p| f64::from(cam[(image * positions + p) * classes + class]))
                .sum::<f64>()
                / positions as f64;
            let logit = logits[image * classes + class];
            assert!(
                (mean as f32 - logit).abs() <= 1e-4 * logit.abs().max(1.0),
                "image {image} class {class}: map mean {mean} vs logit {logit}"
            );
        }
    }

    // Each image's map of its top-1 class, as the reference script stores it: `[N, h, w]`.
    let grad_cam = values(maps.grad_cam);
    let top: Vec<usize> = logits.chunks(classes).map(|row| top_k(row, 1)[0]).collect();
    let picked: Vec<f32> = (0..n)
        .flat_map(|i| (0..positions).map(move |p| (i, p)))
        .map(|(i, p)| grad_cam[(i * positions + p) * classes + top[i]])
        .collect();
    assert!(
        picked.iter().all(|&v| v >= 0.0),
        "Grad-CAM is clipped at zero"
    );
    compare(r, "gradcam", &picked);
}

/// A ConvNeXt or ResNet file is refused as EfficientNet-B0 (and the other way round) with the
/// error that names what the file holds.
#[test]
fn other_families_are_refused_by_name() {
    let r = reference();
    let device = Device::flex();
    let refused = |file: &str, arch: Arch| -> String {
        match load_torchvision(&r.file(file), arch, 1000, Head::Keep, &device) {
            Err(e @ ImportError::ArchMismatch { .. }) => e.to_string(),
            Err(other) => panic!("{file} as {arch}: wrong error {other}"),
            Ok(_) => panic!("{file} imported as {arch}"),
        }
    };
    for file in ["convnext_tiny.safetensors", "resnet18.pth"] {
        let message = refused(file, Arch::EfficientNetB0);
        let holds = file.split('.').next().unwrap_or_default();
        assert!(
            message.contains(&format!("holds a {holds} but efficientnet_b0")),
            "{message}"
        );
    }
    for arch in [Arch::ConvNeXtTiny, Arch::ResNet18] {
        let message = refused("efficientnet_b0.pth", arch);
        assert!(
            message.contains(&format!("holds a efficientnet_b0 but {arch}")),
            "{message}"
        );
    }
}

/// Fine-tuning on new classes: the file's classifier is dropped for a fresh one, the rest
/// loads; keeping a head of the wrong size is refused with the key as torchvision names it.
#[test]
fn the_head_is_replaced_or_refused_for_another_class_count() {
    let r = reference();
    let device = Device::flex();
    let file = r.file("efficientnet_b0.safetensors");
    let (model, report) =
        load_torchvision(&file, Arch::EfficientNetB0, 5, Head::Replace, &device).unwrap();
    assert_eq!(model.num_classes(), 5);
    assert_eq!(report.applied, 311 - 2);
    compare(r, "features", &values(model.features(r.input())));

    match load_torchvision(&file, Arch::EfficientNetB0, 5, Head::Keep, &device) {
        Err(ImportError::ShapeMismatch {
            key,
            expected,
            found,
            ..
        }) => {
            assert!(key.starts_with("classifier.1."), "{key}");
            if key == "classifier.1.weight" {
                assert_eq!((expected, found), (vec![5, 1280], vec![1000, 1280]));
            }
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("a 1000-class head loaded into 5 classes"),
    }
}
