//! The `petal` binary end to end: preprocess, import, predict.

use crate::reference::{PHOTO, convnext_tiny, resnet18};
use crate::util::{
    Run, TestCommand, fixtures, logits, petal, petal_bin, photo, predict_one, read_npy, tempdir,
};
use std::path::Path;

fn write_labels(dir: &Path, n: usize) -> std::path::PathBuf {
    let path = dir.join("labels.txt");
    let text: String = (0..n).map(|i| format!("class{i}\n")).collect();
    std::fs::write(&path, text).unwrap();
    path
}

/// `petal import` of the reference ResNet-18 with `classes` generated labels into `out`.
fn import_resnet18(dir: &Path, classes: usize, out: &str, extra: &[&str]) -> Run {
    let labels = write_labels(dir, classes);
    TestCommand::new(dir)
        .arg("import")
        .arg(resnet18().file("resnet18.pth"))
        .args(["--arch", "resnet18", "--labels"])
        .arg(labels)
        .args(["-o", out])
        .args(extra)
        .run()
}

#[test]
fn preprocess_writes_the_torchvision_tensor() {
    let dir = tempdir();
    petal(
        dir.path(),
        [
            "preprocess".as_ref(),
            photo("crop_300x452.png").as_os_str(),
            "--resize".as_ref(),
            "232".as_ref(),
            "-o".as_ref(),
            "x.npy".as_ref(),
        ],
    )
    .success();
    let (shape, ours) = read_npy::<f32>(&dir.path().join("x.npy"));
    let (_, want) = read_npy::<f32>(&fixtures().join("preprocess/crop_300x452.png.r232c224.npy"));
    assert_eq!(shape, [3, 224, 224]);
    assert!(
        ours.iter()
            .zip(&want)
            .all(|(a, b)| a.to_bits() == b.to_bits())
    );
}

#[test]
fn preprocess_error_names_the_file() {
    let dir = tempdir();
    std::fs::write(dir.path().join("notes.jpg"), b"not a jpeg").unwrap();
    let err = petal(dir.path(), ["preprocess", "notes.jpg", "-o", "x.npy"]).failure();
    assert!(
        err.contains("notes.jpg") && err.contains("not a supported image"),
        "{err}"
    );
    assert!(!dir.path().join("x.npy").exists());
}

/// `import` a torchvision file, then `predict --json --logits` on the reference photo: the
/// logits equal torchvision's on the same pixels.
#[test]
fn import_then_predict_matches_torchvision() {
    let r = resnet18();
    let dir = tempdir();
    let out = import_resnet18(dir.path(), 1000, "bundle", &[]).success();
    assert!(
        out.contains("resnet18") && out.contains("1000 classes"),
        "{out}"
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("bundle/petal.json")).unwrap())
            .unwrap();
    assert_eq!(meta["arch"], "resnet18");
    assert_eq!(meta["classes"][7], "class7");
    assert_eq!(meta["resize"], 256);

    let json = petal(
        dir.path(),
        [
            "predict".as_ref(),
            "--model".as_ref(),
            "bundle".as_ref(),
            "--json".as_ref(),
            "--logits".as_ref(),
            photo(PHOTO).as_os_str(),
        ],
    )
    .success();
    let records: serde_json::Value = serde_json::from_str(&json).unwrap();
    let logits: Vec<f32> = records[0]["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let (_, want) = read_npy::<f32>(&r.file("resnet18.logits.npy"));
    let want = &want[1000..]; // row 1 of the reference batch is the photo
    let err = logits
        .iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(err < 1e-3, "logits differ by {err}");
    let best = petal_shared::classify::top_k_indices(want, 1)[0];
    assert_eq!(records[0]["top"][0]["label"], format!("class{best}"));
    assert_eq!(records[0]["top"].as_array().unwrap().len(), 5);
    let p: f64 = records[0]["top"][0]["prob"].as_f64().unwrap();
    assert!(p > 0.0 && p <= 1.0);
}

/// ConvNeXt-T through the CLI: `import` defaults to torchvision's resize for it (236),
/// `predict` (burn's network on the CPU: the folded form is ResNet-only) gives torchvision's
/// logits on the reference photo's pixels (resized at 256, as the reference was), and
/// `explain --method grad-cam` gives torch's Grad-CAM of the top class.
#[test]
fn convnext_import_then_predict_and_grad_cam_match_torchvision() {
    let r = convnext_tiny();
    let dir = tempdir();
    let labels = write_labels(dir.path(), 1000);
    let import = |out: &str, extra: &[&str]| {
        TestCommand::new(dir.path())
            .arg("import")
            .arg(r.file("convnext_tiny.safetensors"))
            .args(["--arch", "convnext_tiny", "--labels"])
            .arg(&labels)
            .args(["-o", out])
            .args(extra)
            .success()
    };
    import("default", &[]);
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("default/petal.json")).unwrap())
            .unwrap();
    assert_eq!(meta["arch"], "convnext_tiny");
    assert_eq!(meta["resize"], 236);

    import("r256", &["--resize", "256"]);
    let got: Vec<f32> = logits(&predict_one(
        dir.path(),
        "r256",
        &photo(PHOTO),
        &["--logits"],
    ))
    .into_iter()
    .map(|v| v as f32)
    .collect();
    let (_, want) = read_npy::<f32>(&r.file("convnext_tiny.logits.npy"));
    let want = &want[1000..]; // row 1 of the reference batch is the photo
    let err = got
        .iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(err < 1e-3, "logits differ by {err}");
    assert_eq!(
        petal_shared::classify::top_k_indices(&got, 5),
        petal_shared::classify::top_k_indices(want, 5)
    );

    let out = TestCommand::new(dir.path())
        .args([
            "explain", "--model", "r256", "--method", "grad-cam", "--json", "-o", "maps",
        ])
        .arg(photo(PHOTO))
        .success();
    let records: serde_json::Value = serde_json::from_str(&out).unwrap();
    let e = &records[0]["explained"];
    assert_eq!(e["method"], "grad-cam");
    let class = petal_shared::classify::top_k_indices(want, 1)[0];
    assert_eq!(e["class"].as_u64(), Some(class as u64), "{e}");
    let (shape, maps) = read_npy::<f32>(&r.file("convnext_tiny.gradcam.npy"));
    let plane = shape[1] * shape[2];
    let want_map = &maps[plane..2 * plane]; // row 1: the photo
    assert_eq!(
        (e["map"]["height"].as_u64(), e["map"]["width"].as_u64()),
        (Some(shape[1] as u64), Some(shape[2] as u64))
    );
    let got_map: Vec<f32> = e["map"]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let scale = want_map.iter().fold(0f32, |m, v| m.max(v.abs()));
    let err = got_map
        .iter()
        .zip(want_map)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        scale > 0.0 && err <= 1e-4 * scale.max(1.0),
        "Grad-CAM differs from torch's by {err} (max {scale})"
    );
    assert_eq!(
        image::image_dimensions(dir.path().join("maps/chelsea.grad-cam.png")).unwrap(),
        image::image_dimensions(photo(PHOTO)).unwrap()
    );
}

#[test]
fn import_refuses_class_count_mismatch_without_new_head() {
    let dir = tempdir();
    let err = import_resnet18(dir.path(), 5, "b", &[]).failure();
    assert!(
        err.contains("fc.") && err.contains("replace the head"),
        "{err}"
    );
    assert!(
        !dir.path().join("b").exists(),
        "nothing may be written on failure"
    );
    import_resnet18(dir.path(), 5, "b", &["--new-head", "--f16"]).success();
    let meta = std::fs::read_to_string(dir.path().join("b/petal.json")).unwrap();
    assert!(meta.contains("\"f16\""), "{meta}");
}

#[test]
fn predict_reports_bad_files_and_keeps_going() {
    let dir = tempdir();
    import_resnet18(dir.path(), 3, "b", &["--new-head"]).success();
    std::fs::write(dir.path().join("empty.png"), b"").unwrap();
    let run = petal(
        dir.path(),
        [
            "predict".as_ref(),
            "-m".as_ref(),
            "b".as_ref(),
            "--json".as_ref(),
            "empty.png".as_ref(),
            photo("small_200x150.png").as_os_str(),
        ],
    );
    run.skipped();
    let err = run.stderr();
    assert!(err.contains("empty.png") && err.contains("empty"), "{err}");
    let records: serde_json::Value = serde_json::from_str(&run.stdout()).unwrap();
    assert!(records[0]["error"].as_str().unwrap().contains("empty"));
    assert_eq!(records[1]["top"].as_array().unwrap().len(), 3);
}

#[test]
fn predict_without_bundle_names_the_path() {
    let dir = tempdir();
    let err = petal(dir.path(), ["predict", "--model", "nowhere", "x.jpg"]).failure();
    assert!(
        err.contains("nowhere") && err.contains("petal.json"),
        "{err}"
    );
}

#[test]
fn score_tta_averages_an_image_with_its_mirror() {
    let dir = tempdir();
    import_resnet18(dir.path(), 4, "m", &["--new-head"]).success();
    // A square crop: resize and center crop are then symmetric, so the mirrored file's tensor
    // is exactly the mirrored tensor that TTA computes.
    let img = image::open(photo("chelsea.png"))
        .unwrap()
        .crop_imm(0, 0, 300, 300);
    std::fs::create_dir_all(dir.path().join("imgs")).unwrap();
    img.save(dir.path().join("imgs/a.png")).unwrap();
    img.fliph().save(dir.path().join("mirror.png")).unwrap();

    let probs = |file: &str| -> Vec<f64> {
        let logits = logits(&predict_one(
            dir.path(),
            "m",
            Path::new(file),
            &["--logits"],
        ));
        let max = logits.iter().cloned().fold(f64::MIN, f64::max);
        let exp: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
        let sum: f64 = exp.iter().sum();
        exp.iter().map(|e| e / sum).collect()
    };
    let (plain, mirrored) = (probs("imgs/a.png"), probs("mirror.png"));
    assert!(
        plain
            .iter()
            .zip(&mirrored)
            .any(|(a, b)| (a - b).abs() > 1e-3),
        "the mirror image must change the answer for this test to mean anything"
    );

    petal(
        dir.path(),
        [
            "score", "--model", "m", "--images", "imgs", "--out", "s.csv", "--probs", "--tta",
        ],
    )
    .success();
    let csv = std::fs::read_to_string(dir.path().join("s.csv")).unwrap();
    let row: Vec<&str> = csv.lines().nth(1).unwrap().split(',').collect();
    let scored: Vec<f64> = row[3..].iter().map(|p| p.parse().unwrap()).collect();
    assert_eq!(scored.len(), 4);
    for (i, s) in scored.iter().enumerate() {
        let expected = (plain[i] + mirrored[i]) / 2.0;
        assert!((s - expected).abs() < 2e-6, "class {i}: {s} vs {expected}");
    }
}

/// The README's exit-status rule, command by command: 0 when every input was handled, 2 when
/// `predict`/`score`/`eval` finished but skipped some, 1 for an error (a usage error included,
/// which clap alone would report as 2 — "skipped" to a script).
#[test]
fn exit_status_is_0_all_good_2_inputs_skipped_1_error() {
    let dir = tempdir();
    let model = crate::eval::bundle();
    let m = model.to_str().unwrap();
    let good = photo("small_200x150.png");
    let good = good.to_str().unwrap();
    std::fs::create_dir_all(dir.path().join("imgs")).unwrap();
    std::fs::copy(good, dir.path().join("imgs/good.png")).unwrap();

    petal(dir.path(), ["predict", "--model", m, good]).success();
    petal(
        dir.path(),
        ["score", "--model", m, "--images", "imgs", "-o", "a.csv"],
    )
    .success();

    std::fs::write(dir.path().join("imgs/bad.jpg"), b"not a jpeg").unwrap();
    let run = petal(dir.path(), ["predict", "--model", m, good, "imgs/bad.jpg"]);
    run.skipped();
    assert!(run.stderr().contains("bad.jpg"), "{}", run.stderr());
    let run = petal(
        dir.path(),
        [
            "score", "--model", m, "--images", "imgs", "--output", "b.csv",
        ],
    );
    run.skipped();
    assert!(run.stderr().contains("bad.jpg"), "{}", run.stderr());
    let csv = std::fs::read_to_string(dir.path().join("b.csv")).unwrap();
    assert_eq!(
        csv.lines().count(),
        2,
        "header + the readable image:\n{csv}"
    );

    petal(dir.path(), ["predict", "--model", "nowhere", good]).failure();
    petal(
        dir.path(),
        ["score", "--model", m, "--images", "none", "-o", "c.csv"],
    )
    .failure();
    let err = petal(dir.path(), ["predict", "--modle", m, good]).failure();
    assert!(err.contains("--modle"), "{err}");
    // --help and --version are answers, not errors.
    petal(dir.path(), ["predict", "--help"]).success();
}

/// `--device` is one option of `petal` itself: accepted before the command, after it, and from
/// PETAL_DEVICE; an unknown backend is an error that lists the choices.
#[test]
fn device_is_one_global_option() {
    let dir = tempdir();
    let m = crate::eval::bundle().to_str().unwrap().to_string();
    let good = photo("small_200x150.png");
    let good = good.to_str().unwrap();
    let before = petal(
        dir.path(),
        ["--device", "cpu", "predict", "--model", &m, good],
    )
    .success();
    let after = petal(
        dir.path(),
        ["predict", "--device", "cpu", "--model", &m, good],
    )
    .success();
    assert_eq!(before, after);
    let out = std::process::Command::new(petal_bin())
        .current_dir(dir.path())
        .env("PETAL_DEVICE", "nonsense")
        .args(["predict", "--model", &m, good])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nonsense") && err.contains("cpu"), "{err}");
}

/// The old spellings keep working: `--out` for the output and `--crop` for the image size.
#[test]
fn old_flag_spellings_are_aliases() {
    let dir = tempdir();
    let img = photo("crop_300x452.png");
    let img = img.to_str().unwrap();
    for (i, args) in [
        ["--image-size", "64", "-o", "a.npy"],
        ["--crop", "64", "--output", "b.npy"],
    ]
    .iter()
    .enumerate()
    {
        let mut argv = vec!["preprocess", img, "--resize", "72"];
        argv.extend(args);
        petal(dir.path(), argv).success();
        let name = ["a.npy", "b.npy"][i];
        let (shape, _) = read_npy::<f32>(&dir.path().join(name));
        assert_eq!(shape, [3, 64, 64], "{args:?}");
    }
    let a = std::fs::read(dir.path().join("a.npy")).unwrap();
    assert_eq!(a, std::fs::read(dir.path().join("b.npy")).unwrap());
}
