//! Import failures: each names the file and what is wrong with it.

use crate::parity::{compare, input, values};
use crate::reference::{convnext_tiny, edit_safetensors, efficientnet_b0, resnet18};
use crate::util::tempdir;
use burn::prelude::*;
use petal_shared::import::{Head, ImportError, load_torchvision};
use petal_shared::{Arch, Network};

fn import(
    path: &std::path::Path,
    arch: Arch,
    classes: usize,
    head: Head,
) -> Result<(), ImportError> {
    load_torchvision(path, arch, classes, head, &Device::flex()).map(|_| ())
}

#[test]
fn wrong_depth_names_what_the_file_holds() {
    let r = resnet18();
    let err = import(&r.file("resnet18.pth"), Arch::ResNet34, 1000, Head::Keep).unwrap_err();
    assert!(matches!(err, ImportError::ArchMismatch { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("resnet18.pth")
            && msg.contains("holds a resnet18")
            && msg.contains("resnet34"),
        "{msg}"
    );
    let err = import(&r.file("resnet18.pth"), Arch::ResNet50, 1000, Head::Keep).unwrap_err();
    assert!(err.to_string().contains("holds a resnet18"), "{err}");
}

#[test]
fn missing_key_is_named() {
    let dir = tempdir();
    let edited = dir.path().join("partial.safetensors");
    edit_safetensors(&resnet18().file("resnet18.safetensors"), &edited, |h| {
        // Rename rather than remove: the data section must stay contiguous.
        let entry = h.remove("layer2.1.bn2.running_var").unwrap();
        h.insert("layer2.1.bn2.running_variance".into(), entry);
    });
    let err = import(&edited, Arch::ResNet18, 1000, Head::Keep).unwrap_err();
    match &err {
        ImportError::MissingKeys { keys, .. } => assert_eq!(keys, &["layer2.1.bn2.running_var"]),
        other => panic!("expected MissingKeys, got {other}"),
    }
    assert!(err.to_string().contains("partial.safetensors"));
}

#[test]
fn shape_mismatch_is_named_in_torch_order() {
    let dir = tempdir();
    let edited = dir.path().join("reshaped.safetensors");
    edit_safetensors(&resnet18().file("resnet18.safetensors"), &edited, |h| {
        // Same number of elements, wrong layout: [64, 64, 3, 3] → [64, 64, 9, 1].
        h["layer1.0.conv1.weight"]["shape"] = serde_json::json!([64, 64, 9, 1]);
    });
    let err = import(&edited, Arch::ResNet18, 1000, Head::Keep).unwrap_err();
    match &err {
        ImportError::ShapeMismatch {
            key,
            expected,
            found,
            ..
        } => {
            assert_eq!(key, "layer1.0.conv1.weight");
            assert_eq!(expected, &[64, 64, 3, 3]);
            assert_eq!(found, &[64, 64, 9, 1]);
        }
        other => panic!("expected ShapeMismatch, got {other}"),
    }
}

#[test]
fn garbage_file_is_a_read_error() {
    let dir = tempdir();
    let garbage = dir.path().join("garbage.pth");
    std::fs::write(&garbage, b"these are not the weights you are looking for").unwrap();
    let err = import(&garbage, Arch::ResNet18, 1000, Head::Keep).unwrap_err();
    assert!(matches!(err, ImportError::Read { .. }), "{err}");
    assert!(err.to_string().contains("garbage.pth"), "{err}");
    let err = import(
        &dir.path().join("absent.pth"),
        Arch::ResNet18,
        1000,
        Head::Keep,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("absent.pth") && err.to_string().contains("no such file"),
        "{err}"
    );
}

#[test]
fn class_count_mismatch_needs_a_new_head() {
    let r = resnet18();
    let err = import(&r.file("resnet18.pth"), Arch::ResNet18, 5, Head::Keep).unwrap_err();
    match &err {
        ImportError::ShapeMismatch {
            key,
            expected,
            found,
            ..
        } => {
            assert!(key.starts_with("fc."), "{key}");
            if key == "fc.weight" {
                assert_eq!(
                    (expected.as_slice(), found.as_slice()),
                    (&[5, 512][..], &[1000, 512][..])
                );
            }
        }
        other => panic!("expected ShapeMismatch, got {other}"),
    }
    assert!(err.to_string().contains("replace the head"), "{err}");

    // With a new head, the backbone comes from the file and the head is fresh.
    let device = Device::flex();
    let (fresh, report) = load_torchvision(
        &r.file("resnet18.pth"),
        Arch::ResNet18,
        5,
        Head::Replace,
        &device,
    )
    .unwrap();
    let (full, _) = load_torchvision(
        &r.file("resnet18.pth"),
        Arch::ResNet18,
        1000,
        Head::Keep,
        &device,
    )
    .unwrap();
    assert_eq!(fresh.num_classes(), 5);
    assert!(
        report.ignored.iter().any(|k| k == "fc.weight"),
        "{:?}",
        report.ignored
    );
    // The whole body came from the file: both give the same features.
    let x = Tensor::<4>::random([1, 3, 32, 32], burn::tensor::Distribution::Default, &device);
    let features = |net: &Network| net.features(x.clone()).into_data();
    assert_eq!(features(&fresh), features(&full));
}

#[test]
fn the_other_family_is_named() {
    let err = import(
        &resnet18().file("resnet18.pth"),
        Arch::ConvNeXtTiny,
        1000,
        Head::Keep,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("holds a resnet18") && err.to_string().contains("convnext_tiny"),
        "{err}"
    );
    let err = import(
        &convnext_tiny().file("convnext_tiny.pth"),
        Arch::ResNet50,
        1000,
        Head::Keep,
    )
    .unwrap_err();
    assert!(
        matches!(err, ImportError::ArchMismatch { .. })
            && err.to_string().contains("holds a convnext_tiny"),
        "{err}"
    );
}

/// ConvNeXt's errors use torchvision's key names and PyTorch's `[out, in]` order, as for a
/// ResNet; a new head replaces only `classifier.2` (its LayerNorm comes from the file).
#[test]
fn convnext_errors_and_new_head_speak_torchvision() {
    let r = convnext_tiny();
    let dir = tempdir();
    let edited = dir.path().join("partial.safetensors");
    edit_safetensors(&r.file("convnext_tiny.safetensors"), &edited, |h| {
        let entry = h.remove("features.5.3.block.3.weight").unwrap();
        h.insert("features.5.3.block.3.weights".into(), entry);
    });
    match import(&edited, Arch::ConvNeXtTiny, 1000, Head::Keep).unwrap_err() {
        ImportError::MissingKeys { keys, .. } => assert_eq!(keys, ["features.5.3.block.3.weight"]),
        other => panic!("expected MissingKeys, got {other}"),
    }

    let err = import(
        &r.file("convnext_tiny.pth"),
        Arch::ConvNeXtTiny,
        5,
        Head::Keep,
    )
    .unwrap_err();
    match &err {
        ImportError::ShapeMismatch {
            key,
            expected,
            found,
            ..
        } => {
            // Whichever of the head's tensors burn reports first, in torch's order.
            let want: (&[usize], &[usize]) = match key.as_str() {
                "classifier.2.weight" => (&[5, 768], &[1000, 768]),
                "classifier.2.bias" => (&[5], &[1000]),
                other => panic!("the mismatch is the head's, not {other}"),
            };
            assert_eq!((expected.as_slice(), found.as_slice()), want);
        }
        other => panic!("expected ShapeMismatch, got {other}"),
    }
    assert!(err.to_string().contains("replace the head"), "{err}");

    let (fresh, report) = load_torchvision(
        &r.file("convnext_tiny.pth"),
        Arch::ConvNeXtTiny,
        5,
        Head::Replace,
        &Device::flex(),
    )
    .unwrap();
    assert_eq!(fresh.num_classes(), 5);
    let mut ignored = report.ignored.clone();
    ignored.sort();
    assert_eq!(ignored, ["classifier.2.bias", "classifier.2.weight"]);
}

/// EfficientNet-B0 and the other families' files: each is refused as the other with the
/// error naming what the file holds.
#[test]
fn efficientnet_and_the_other_families_are_refused_by_name() {
    let refused = |file: std::path::PathBuf, arch: Arch| -> String {
        match import(&file, arch, 1000, Head::Keep) {
            Err(e @ ImportError::ArchMismatch { .. }) => e.to_string(),
            Err(other) => panic!("{} as {arch}: wrong error {other}", file.display()),
            Ok(()) => panic!("{} imported as {arch}", file.display()),
        }
    };
    for (file, holds) in [
        (
            convnext_tiny().file("convnext_tiny.safetensors"),
            "convnext_tiny",
        ),
        (resnet18().file("resnet18.pth"), "resnet18"),
    ] {
        let message = refused(file, Arch::EfficientNetB0);
        assert!(
            message.contains(&format!("holds a {holds} but efficientnet_b0")),
            "{message}"
        );
    }
    for arch in [Arch::ConvNeXtTiny, Arch::ResNet18] {
        let message = refused(efficientnet_b0().file("efficientnet_b0.pth"), arch);
        assert!(
            message.contains(&format!("holds a efficientnet_b0 but {arch}")),
            "{message}"
        );
    }
}

/// Fine-tuning EfficientNet-B0 on new classes: the file's classifier is dropped for a fresh
/// one and the rest loads; keeping a head of the wrong size is refused with the key as
/// torchvision names it.
#[test]
fn efficientnet_head_is_replaced_or_refused_for_another_class_count() {
    let r = efficientnet_b0();
    let device = Device::flex();
    let file = r.file("efficientnet_b0.safetensors");
    let (model, report) =
        load_torchvision(&file, Arch::EfficientNetB0, 5, Head::Replace, &device).unwrap();
    assert_eq!(model.num_classes(), 5);
    assert_eq!(report.applied, 311 - 2);
    let (x, _, _) = input(r);
    compare(
        r,
        Arch::EfficientNetB0,
        "features",
        &values(model.features(x)),
    );

    match import(&file, Arch::EfficientNetB0, 5, Head::Keep).unwrap_err() {
        ImportError::ShapeMismatch {
            key,
            expected,
            found,
            ..
        } => {
            // Whichever of the head's tensors burn reports first, in torch's order.
            let want: (&[usize], &[usize]) = match key.as_str() {
                "classifier.1.weight" => (&[5, 1280], &[1000, 1280]),
                "classifier.1.bias" => (&[5], &[1000]),
                other => panic!("the mismatch is the head's, not {other}"),
            };
            assert_eq!((expected.as_slice(), found.as_slice()), want);
        }
        other => panic!("wrong error: {other}"),
    }
}
