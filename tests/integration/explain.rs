//! `petal explain`: class activation maps laid over the photos, checked against `petal predict`
//! and against the resize/crop geometry.

use crate::eval::bundle;
use crate::util::{TestCommand, logits, photo, predict_one, tempdir};
use serde_json::Value;
use std::path::Path;

fn explain(dir: &Path, extra: &[&str], images: &[&Path]) -> crate::util::Run {
    TestCommand::new(dir)
        .args(["explain", "--model"])
        .arg(bundle())
        .args(["-o", "out", "--json"])
        .args(extra)
        .args(images)
        .run()
}

fn records(stdout: &str) -> Vec<Value> {
    serde_json::from_str::<Value>(stdout)
        .unwrap_or_else(|e| panic!("{e}:\n{stdout}"))
        .as_array()
        .expect("a JSON array")
        .clone()
}

/// The values of an `explained` record's map.
fn map_values(explained: &Value) -> Vec<f64> {
    explained["map"]["values"]
        .as_array()
        .expect("the map's values")
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

#[test]
fn explain_overlays_the_crop_and_its_map_averages_to_the_logit() {
    let dir = tempdir();
    // A PNG (exact decoding) wider than high and a JPEG higher than wide: the crop sits in the
    // middle of the long side.
    let images = [photo("crop_452x300.png"), photo("crop_300x452.png")];
    let refs: Vec<&Path> = images.iter().map(|p| p.as_path()).collect();
    let out = explain(dir.path(), &[], &refs).success();
    let records = records(&out);
    assert_eq!(records.len(), 2);
    for (record, image) in records.iter().zip(&images) {
        let e = &record["explained"];
        // The explained class is `petal predict`'s top-1, and its map's mean is the logit.
        let predicted = predict_one(dir.path(), bundle().to_str().unwrap(), image, &["--logits"]);
        assert_eq!(
            e["label"],
            predicted["top"][0]["label"],
            "{}",
            image.display()
        );
        let logit = logits(&predicted)[e["class"].as_u64().unwrap() as usize];
        let values = map_values(e);
        // 64-pixel input: a 2×2 grid.
        assert_eq!(
            (e["map"]["height"].as_u64(), e["map"]["width"].as_u64()),
            (Some(2), Some(2))
        );
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        assert!(
            (mean - logit).abs() < 1e-4,
            "map mean {mean}, logit {logit}"
        );

        // The overlay: the photo's size; outside the crop the photo itself, inside the heat.
        let original = image::open(image).unwrap().to_rgb8();
        let overlay_path = dir.path().join(record["output"].as_str().unwrap());
        assert_eq!(
            overlay_path.file_name().unwrap(),
            format!("{}.cam.png", image.file_stem().unwrap().to_str().unwrap()).as_str()
        );
        let overlay = image::open(&overlay_path).unwrap().to_rgb8();
        assert_eq!(overlay.dimensions(), original.dimensions());
        let crop: Vec<f64> = e["crop"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let (mut outside_same, mut outside, mut inside_changed, mut inside) = (0, 0, 0, 0);
        for (x, y, px) in overlay.enumerate_pixels() {
            let (cx, cy) = (f64::from(x) + 0.5, f64::from(y) + 0.5);
            let inside_crop = (crop[0]..crop[2]).contains(&cx) && (crop[1]..crop[3]).contains(&cy);
            if inside_crop {
                inside += 1;
                inside_changed += usize::from(px != original.get_pixel(x, y));
            } else {
                outside += 1;
                outside_same += usize::from(px == original.get_pixel(x, y));
            }
        }
        assert!(
            outside > 0,
            "the crop leaves part of a non-square photo out"
        );
        assert_eq!(
            outside_same,
            outside,
            "{}: outside the crop is the photo",
            image.display()
        );
        assert!(
            inside_changed * 10 > inside * 9,
            "{}: {inside_changed} of {inside} crop pixels carry the heat map",
            image.display()
        );
    }
    // 452×300 at resize 72, crop 64: resized 108×72, crop from x = 22, y = 4.
    let crop = &records[0]["explained"]["crop"];
    let want = [
        22.0 * 452.0 / 108.0,
        4.0 * 300.0 / 72.0,
        86.0 * 452.0 / 108.0,
        68.0 * 300.0 / 72.0,
    ];
    for (got, want) in crop.as_array().unwrap().iter().zip(want) {
        assert!((got.as_f64().unwrap() - want).abs() < 1e-9, "crop {crop}");
    }
}

#[test]
fn explain_a_chosen_class_and_report_bad_inputs() {
    let dir = tempdir();
    std::fs::write(dir.path().join("broken.jpg"), b"not a jpeg").unwrap();
    let flower = photo("sk_flower.jpg");
    let broken = dir.path().join("broken.jpg");
    let run = explain(dir.path(), &["--class", "rose"], &[&flower, &broken]);
    // Exit 2: finished, one input skipped (named on stderr); the other overlay is written.
    let records = records(&run.skipped());
    assert!(run.stderr().contains("broken.jpg"), "{}", run.stderr());
    assert_eq!(records[0]["explained"]["label"], "rose");
    assert!(dir.path().join("out/sk_flower.cam.png").is_file());
    assert!(records[1]["error"].is_string() && records[1]["output"].is_null());

    let err = explain(dir.path(), &["--class", "orchid"], &[&flower]).failure();
    assert!(
        err.contains("no class 'orchid'") && err.contains("daisy"),
        "{err}"
    );

    // Two photos with the same name in different folders would overwrite each other's overlay.
    let other = dir.path().join("sk_flower.png");
    std::fs::copy(photo("chelsea.png"), &other).unwrap();
    let err = explain(dir.path(), &[], &[&flower, &other]).failure();
    assert!(err.contains("would both write"), "{err}");
}

/// `--method grad-cam` on a ResNet bundle (the CPU's folded network): the overlay is written
/// under its own name, and where Grad-CAM is positive, the class map minus Grad-CAM times the
/// grid's size is one constant (the class's bias), as a linear head implies.
#[test]
fn explain_grad_cam_is_the_class_map_without_its_bias() {
    let dir = tempdir();
    let image = photo("sk_flower.jpg");
    let map_of = |extra: &[&str]| {
        let records = records(&explain(dir.path(), extra, &[&image]).success());
        let e = &records[0]["explained"];
        let values = map_values(e);
        (
            e["method"].as_str().unwrap().to_string(),
            e["class"].clone(),
            values,
        )
    };
    let (cam_method, cam_class, cam) = map_of(&[]);
    let (grad_method, grad_class, grad) = map_of(&["--method", "grad-cam"]);
    assert_eq!(
        (cam_method.as_str(), grad_method.as_str()),
        ("cam", "grad-cam")
    );
    assert_eq!(cam_class, grad_class);
    assert!(dir.path().join("out/sk_flower.cam.png").is_file());
    assert!(dir.path().join("out/sk_flower.grad-cam.png").is_file());
    assert!(grad.iter().all(|&v| v >= 0.0), "{grad:?}");
    let cells = grad.len() as f64;
    let biases: Vec<f64> = cam
        .iter()
        .zip(&grad)
        .filter(|&(_, &g)| g > 0.0)
        .map(|(&c, &g)| c - g * cells)
        .collect();
    assert!(!biases.is_empty(), "Grad-CAM is zero everywhere: {grad:?}");
    for b in &biases {
        assert!((b - biases[0]).abs() < 1e-4, "{biases:?}");
    }
    // Where Grad-CAM is zero the class map is at most that bias.
    for (&c, &g) in cam.iter().zip(&grad) {
        if g == 0.0 {
            assert!(
                c <= biases[0] + 1e-4,
                "class map {c} above the bias {}",
                biases[0]
            );
        }
    }
}
