//! Bundles round-trip exactly, shrink in f16, and reject what they cannot load.

use burn::prelude::*;
use burn::store::{BurnpackStore, ModuleSnapshot, ModuleStore};
use burn::tensor::Bytes;
use petal_shared::bundle::{FORMAT_VERSION, META_FILE};
use petal_shared::{Arch, Bundle, BundleError, BundleMeta, NetworkConfig, Precision};

fn bundle(arch: Arch, precision: Precision) -> Bundle {
    let device = Device::flex();
    let classes = vec!["daisy".into(), "dandelion".into(), "rose".into()];
    let mut meta = BundleMeta::new(arch, classes, 64, 72);
    meta.precision = precision;
    Bundle::new(meta, NetworkConfig::new(arch, 3).init(&device)).unwrap()
}

#[test]
fn f32_round_trip_is_bit_exact() {
    let original = bundle(Arch::ResNet18, Precision::F32);
    let dir = tempfile::tempdir().unwrap();
    original.save(dir.path()).unwrap();
    let loaded = Bundle::load(dir.path(), &Device::flex()).unwrap();
    assert_eq!(loaded.meta, original.meta);
    // Every parameter and statistic comes back bit for bit.
    let tensors = |b: &Bundle| {
        b.model
            .collect(None, None, false)
            .iter()
            .map(|t| {
                (
                    t.name.clone(),
                    burn::store::bridge::to_data(t).unwrap().as_bytes().to_vec(),
                )
            })
            .collect::<Vec<_>>()
    };
    let (want, got) = (tensors(&original), tensors(&loaded));
    assert_eq!(want.len(), 102, "ResNet-18: 20 convs/BNs ... tensor count");
    for ((n1, a), (n2, b)) in want.iter().zip(&got) {
        assert_eq!(n1, n2);
        assert!(
            a == b,
            "tensor {n1} changed in the round trip ({} vs {} bytes)",
            a.len(),
            b.len()
        );
    }
    let x = Tensor::<4>::ones([1, 3, 64, 64], &Device::flex());
    let a: Vec<f32> = original
        .model
        .forward(x.clone())
        .into_data()
        .try_to_vec()
        .unwrap();
    let b: Vec<f32> = loaded.model.forward(x).into_data().try_to_vec().unwrap();
    assert_eq!(
        a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        b.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    // Loading through the petal.json path works too.
    Bundle::load(&dir.path().join(META_FILE), &Device::flex()).unwrap();
}

#[test]
fn f16_halves_the_file_and_stays_close() {
    let b32 = bundle(Arch::ResNet18, Precision::F32);
    let mut b16 = bundle(Arch::ResNet18, Precision::F16);
    b16.model = b32.model.clone();
    let (n32, n16) = (
        b32.weights_bytes().unwrap().len(),
        b16.weights_bytes().unwrap().len(),
    );
    assert!((n16 as f64) < 0.52 * n32 as f64, "f16 {n16} vs f32 {n32}");
    let loaded = Bundle::from_bytes(
        b16.meta.to_json().as_bytes(),
        b16.weights_bytes().unwrap(),
        &Device::flex(),
    )
    .unwrap();
    let x = Tensor::<4>::ones([1, 3, 64, 64], &Device::flex());
    let a: Vec<f32> = b32
        .model
        .forward(x.clone())
        .into_data()
        .try_to_vec()
        .unwrap();
    let b: Vec<f32> = loaded.model.forward(x).into_data().try_to_vec().unwrap();
    let err = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (p, q)| m.max((p - q).abs()));
    let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(
        err <= 1e-2 * scale.max(1.0),
        "f16 error {err} at scale {scale}"
    );
}

#[test]
fn newer_format_version_is_refused() {
    let b = bundle(Arch::ResNet18, Precision::F32);
    let mut meta: serde_json::Value = serde_json::from_str(&b.meta.to_json()).unwrap();
    meta["format_version"] = (FORMAT_VERSION + 1).into();
    meta["arch"] = "resnet999-future".into();
    let err = BundleMeta::from_json(meta.to_string().as_bytes()).unwrap_err();
    assert!(matches!(err, BundleError::NewerVersion { .. }), "{err}");
    assert!(err.to_string().contains("upgrade Petal"));
}

#[test]
fn mismatched_architecture_is_refused() {
    let b = bundle(Arch::ResNet18, Precision::F32);
    let mut meta = b.meta.clone();
    meta.arch = Arch::ResNet34;
    let err = Bundle::from_bytes(
        meta.to_json().as_bytes(),
        b.weights_bytes().unwrap(),
        &Device::flex(),
    )
    .unwrap_err();
    assert!(matches!(err, BundleError::Weights { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("resnet34") && msg.contains("missing tensor 'layer1.2"),
        "{msg}"
    );
    // And a wrong class count.
    let mut meta = b.meta.clone();
    meta.classes.push("tulip".into());
    let err = Bundle::from_bytes(
        meta.to_json().as_bytes(),
        b.weights_bytes().unwrap(),
        &Device::flex(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("fc.weight"), "{err}");
}

#[test]
fn bad_metadata_is_explained() {
    for (json, needle) in [
        (&b"{"[..], "EOF"),
        (br#"{"arch": "resnet18"}"#, "format_version"),
        (br#"{"format_version": 1, "arch": "resnet19"}"#, "resnet19"),
    ] {
        let err = BundleMeta::from_json(json).unwrap_err();
        assert!(err.to_string().contains(needle), "{err}");
    }
    let b = bundle(Arch::ResNet18, Precision::F32);
    let mut meta = b.meta.clone();
    meta.weights = "../../etc/passwd".into();
    let err = BundleMeta::from_json(meta.to_json().as_bytes()).unwrap_err();
    assert!(err.to_string().contains("plain file name"), "{err}");
    let err =
        Bundle::load(std::path::Path::new("/nonexistent-bundle"), &Device::flex()).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent-bundle/petal.json"),
        "{err}"
    );
}

/// The weights file names tensors as the family's module does (`conv1.weight`), not with the
/// network type's variant in front: bundles written before ConvNeXt existed still load, and
/// each family's files stay what they were.
#[test]
fn weight_files_name_tensors_without_the_family() {
    for (arch, first) in [
        (Arch::ResNet18, "conv1.weight"),
        (Arch::ConvNeXtTiny, "stem.weight"),
    ] {
        let b = bundle(arch, Precision::F16);
        let mut store =
            BurnpackStore::from_bytes(Some(Bytes::from_bytes_vec(b.weights_bytes().unwrap())));
        let keys = store.keys().unwrap();
        assert!(keys.iter().any(|k| k == first), "{arch}: {keys:?}");
        assert!(
            keys.iter()
                .all(|k| !k.starts_with("ResNet.") && !k.starts_with("ConvNeXt.")),
            "{arch}: {keys:?}"
        );
    }
}

#[test]
fn convnext_round_trips_and_is_told_apart_from_a_resnet() {
    let original = bundle(Arch::ConvNeXtTiny, Precision::F32);
    let dir = tempfile::tempdir().unwrap();
    original.save(dir.path()).unwrap();
    let loaded = Bundle::load(dir.path(), &Device::flex()).unwrap();
    assert_eq!(loaded.meta.arch, Arch::ConvNeXtTiny);
    assert_eq!(loaded.model.arch(), Arch::ConvNeXtTiny);
    let x = Tensor::<4>::ones([1, 3, 64, 64], &Device::flex());
    let logits = |b: &Bundle| -> Vec<u32> {
        b.model
            .forward(x.clone())
            .into_data()
            .iter::<f32>()
            .map(f32::to_bits)
            .collect()
    };
    assert_eq!(logits(&original), logits(&loaded));

    // ConvNeXt weights under a ResNet's metadata: every tensor is named.
    let mut meta = original.meta.clone();
    meta.arch = Arch::ResNet18;
    let err = Bundle::from_bytes(
        meta.to_json().as_bytes(),
        original.weights_bytes().unwrap(),
        &Device::flex(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("resnet18") && err.to_string().contains("missing tensor 'conv1"),
        "{err}"
    );
    // And a network that is not the one the metadata names is refused when paired.
    let err = Bundle::new(meta, original.model).unwrap_err();
    assert!(err.to_string().contains("convnext_tiny"), "{err}");
}
