//! `petal eval` end to end: its confusion matrix, accuracy and per-class scores against counts
//! made here from `petal predict --json` on the same files; unreadable images; class checks.

use crate::reference::resnet18;
use crate::util::{TestCommand, petal, tempdir};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const CLASSES: [&str; 5] = ["daisy", "dandelion", "rose", "sunflower", "tulip"];

/// A 5-class bundle: the reference ResNet-18 with a fresh head, at 64 px so that a few dozen
/// images take well under a second. Imported once per test binary.
pub(crate) fn bundle() -> &'static Path {
    static B: OnceLock<PathBuf> = OnceLock::new();
    B.get_or_init(|| {
        let dir = tempdir().keep();
        std::fs::write(dir.join("labels.txt"), CLASSES.join("\n")).unwrap();
        petal(
            &dir,
            [
                "import".as_ref(),
                resnet18().file("resnet18.pth").as_os_str(),
                "--arch".as_ref(),
                "resnet18".as_ref(),
                "--labels".as_ref(),
                "labels.txt".as_ref(),
                "--new-head".as_ref(),
                "--image-size".as_ref(),
                "64".as_ref(),
                "--resize".as_ref(),
                "72".as_ref(),
                "-o".as_ref(),
                "bundle".as_ref(),
            ],
        )
        .success();
        dir.join("bundle")
    })
}

/// `n` small, different PNGs (colour blobs and stripes on gradients) in `dir`.
fn write_images(dir: &Path, n: usize) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    (0..n)
        .map(|i| {
            let k = i as u32;
            let (w, h) = (72 + 8 * (k % 4), 64 + 6 * (k % 3));
            let img = image::RgbImage::from_fn(w, h, |x, y| {
                let stripe = ((x * (1 + k % 5) + y * (k % 3)) / 6) % 2;
                let (cx, cy) = (w / 2 + k % 7, h / 2);
                let blob = (x.abs_diff(cx).pow(2) + y.abs_diff(cy).pow(2)) < (12 + k % 9).pow(2);
                let base = [
                    (x * 3 + k * 37) % 256,
                    (y * 3 + k * 71) % 256,
                    (k * 53) % 256,
                ];
                let px = if blob {
                    [(k * 97) % 256, 255 - (k * 29) % 256, (k * 13) % 256]
                } else if stripe == 1 {
                    base.map(|v| 255 - v)
                } else {
                    base
                };
                image::Rgb(px.map(|v| v as u8))
            });
            let path = dir.join(format!("img_{i:02}.png"));
            img.save(&path).unwrap();
            path
        })
        .collect()
}

/// `petal predict --json` on `files`: per file, the top-3 (label, prob), best first.
fn predict(dir: &Path, files: &[PathBuf]) -> Vec<Vec<(String, f64)>> {
    let stdout = TestCommand::new(dir)
        .args(["predict", "--model"])
        .arg(bundle())
        .args(["--json", "-k", "3"])
        .args(files)
        .success();
    let json: Value = serde_json::from_str(&stdout).unwrap();
    json.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r["top"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| {
                    (
                        t["label"].as_str().unwrap().to_string(),
                        t["prob"].as_f64().unwrap(),
                    )
                })
                .collect()
        })
        .collect()
}

fn class_index(name: &str) -> usize {
    CLASSES.iter().position(|c| *c == name).unwrap()
}

/// Images classified once by `predict`, then filed into class folders so that the expected
/// confusion matrix is known and has both hits and misses whatever the (random) head does:
/// image i < 5 goes to class i (every folder non-empty), then even images to their predicted
/// class and odd ones to the class after it.
struct Labelled {
    data: PathBuf,
    /// file (relative to `data`) → (true class, predict's top-3)
    truth: BTreeMap<String, (usize, Vec<(String, f64)>)>,
}

fn labelled_folder(dir: &Path, n: usize) -> Labelled {
    let staging = dir.join("staging");
    let files = write_images(&staging, n);
    let tops = predict(dir, &files);
    let data = dir.join("data");
    let mut truth = BTreeMap::new();
    for (i, (file, top)) in files.iter().zip(tops).enumerate() {
        let predicted = class_index(&top[0].0);
        let t = match i {
            0..5 => i,
            _ if i % 2 == 0 => predicted,
            _ => (predicted + 1) % CLASSES.len(),
        };
        let rel = format!(
            "{}/{}",
            CLASSES[t],
            file.file_name().unwrap().to_string_lossy()
        );
        std::fs::create_dir_all(data.join(CLASSES[t])).unwrap();
        std::fs::rename(file, data.join(&rel)).unwrap();
        truth.insert(rel, (t, top));
    }
    Labelled { data, truth }
}

/// The decisive test: every number `eval` reports equals what we count ourselves from
/// `predict`'s top-1 on the same files, in the JSON, the CSV on disk and the text report.
#[test]
fn eval_numbers_match_an_independent_count_from_predict() {
    let dir = tempdir();
    let set = labelled_folder(dir.path(), 24);
    let n = CLASSES.len();
    let mut cm = vec![vec![0u64; n]; n];
    for (t, top) in set.truth.values() {
        cm[*t][class_index(&top[0].0)] += 1;
    }
    let correct: u64 = (0..n).map(|c| cm[c][c]).sum();
    // 9 even images past the first five are hits, 10 odd ones misses; the first five vary.
    assert!((9..=14).contains(&correct), "the set has hits and misses");

    let stdout = petal(
        dir.path(),
        [
            "eval".as_ref(),
            "--model".as_ref(),
            bundle().as_os_str(),
            "--data".as_ref(),
            set.data.as_os_str(),
            "--json".as_ref(),
            "--out".as_ref(),
            "report".as_ref(),
            "--batch-size".as_ref(),
            "5".as_ref(),
        ],
    )
    .success();
    let r: Value = serde_json::from_str(&stdout).expect("--json prints one JSON object");
    assert_eq!(r["classes"], serde_json::json!(CLASSES));
    assert_eq!(r["images"], 24);
    assert_eq!(r["failed"], serde_json::json!([]));
    assert_eq!(r["confusion"], serde_json::json!(cm));
    let acc = r["accuracy"].as_f64().unwrap();
    assert!((acc - correct as f64 / 24.0).abs() < 1e-12, "{acc}");

    for (c, pc) in r["per_class"].as_array().unwrap().iter().enumerate() {
        let tp = cm[c][c] as f64;
        let support: u64 = cm[c].iter().sum();
        let predicted: u64 = cm.iter().map(|row| row[c]).sum();
        let div = |a: f64, b: f64| if b == 0.0 { 0.0 } else { a / b };
        let (p, rec) = (div(tp, predicted as f64), div(tp, support as f64));
        let f1 = div(2.0 * p * rec, p + rec);
        assert_eq!(pc["class"], CLASSES[c]);
        assert_eq!(pc["support"], support);
        for (key, want) in [("precision", p), ("recall", rec), ("f1", f1)] {
            let got = pc[key].as_f64().unwrap();
            assert!(
                (got - want).abs() < 1e-12,
                "{} {key}: {got} vs {want}",
                CLASSES[c]
            );
        }
    }

    // Misclassified: exactly the files whose top-1 is not their folder, with predict's top-3.
    let missed = r["misclassified"].as_array().unwrap();
    let want_missed: Vec<&String> = set
        .truth
        .iter()
        .filter(|(_, (t, top))| class_index(&top[0].0) != *t)
        .map(|(f, _)| f)
        .collect();
    assert_eq!(missed.len(), want_missed.len());
    for (m, file) in missed.iter().zip(want_missed) {
        assert_eq!(m["file"], file.as_str());
        let (t, top) = &set.truth[file];
        assert_eq!(m["true"], CLASSES[*t]);
        let got = m["top"].as_array().unwrap();
        assert_eq!(got.len(), 3);
        for (g, (label, prob)) in got.iter().zip(top) {
            assert_eq!(g["label"], label.as_str(), "{file}");
            assert!((g["prob"].as_f64().unwrap() - prob).abs() < 1e-4, "{file}");
        }
    }

    // The files on disk say the same.
    let report = dir.path().join("report");
    let csv = std::fs::read_to_string(report.join("confusion_matrix.csv")).unwrap();
    let mut want_csv = format!("true\\pred,{}\n", CLASSES.join(","));
    for (name, row) in CLASSES.iter().zip(&cm) {
        let cells: Vec<String> = row.iter().map(u64::to_string).collect();
        want_csv += &format!("{name},{}\n", cells.join(","));
    }
    assert_eq!(csv, want_csv);
    let saved: Value =
        serde_json::from_slice(&std::fs::read(report.join("eval.json")).unwrap()).unwrap();
    assert_eq!(saved, r);
    let png = image::open(report.join("confusion_matrix.png"))
        .unwrap()
        .to_rgb8();
    assert!(png.width() >= 5 * 72 && png.height() >= 5 * 72);

    // The text report: accuracy, one table row per class, the matrix and the misses.
    let text = petal(
        dir.path(),
        [
            "eval".as_ref(),
            "-m".as_ref(),
            bundle().as_os_str(),
            "--data".as_ref(),
            set.data.as_os_str(),
        ],
    )
    .success();
    let want_acc = format!(
        "accuracy {:.2}% ({correct}/24)",
        correct as f64 * 100.0 / 24.0
    );
    assert!(text.contains(&want_acc), "{want_acc} not in:\n{text}");
    for (c, name) in CLASSES.iter().enumerate() {
        let row: Vec<String> = cm[c].iter().map(u64::to_string).collect();
        let line = text
            .lines()
            .filter(|l| l.split_whitespace().next() == Some(name))
            .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>())
            .find(|cells| cells.len() == n)
            .unwrap_or_else(|| panic!("no matrix row for {name}:\n{text}"));
        assert_eq!(line, row, "{name}");
    }
    assert!(
        text.contains(&format!("misclassified: {}", missed.len())),
        "{text}"
    );
}

/// A corrupt file and an empty one are reported with the reason and counted, and every other
/// image is still evaluated.
#[test]
fn eval_counts_unreadable_images_and_evaluates_the_rest() {
    let dir = tempdir();
    let set = labelled_folder(dir.path(), 10);
    std::fs::write(set.data.join("rose/broken.jpg"), b"\xff\xd8\xff garbage").unwrap();
    std::fs::write(set.data.join("daisy/empty.png"), b"").unwrap();
    let run = petal(
        dir.path(),
        [
            "eval".as_ref(),
            "--model".as_ref(),
            bundle().as_os_str(),
            "--data".as_ref(),
            set.data.as_os_str(),
            "--json".as_ref(),
        ],
    );
    // Finished, with inputs skipped: exit 2.
    let r: Value = serde_json::from_str(&run.skipped()).unwrap();
    assert_eq!(r["images"], 10);
    let total: u64 = r["confusion"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap())
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(total, 10);
    let failed = r["failed"].as_array().unwrap();
    let files: Vec<&str> = failed.iter().map(|f| f["file"].as_str().unwrap()).collect();
    assert_eq!(files, ["daisy/empty.png", "rose/broken.jpg"]);
    assert!(
        failed
            .iter()
            .all(|f| !f["error"].as_str().unwrap().is_empty())
    );
    let err = run.stderr();
    assert!(
        err.contains("broken.jpg") && err.contains("empty.png"),
        "{err}"
    );
}

/// The folder's classes must be the bundle's: otherwise a clear error naming both lists,
/// before any image is read and without writing anything.
#[test]
fn eval_rejects_a_folder_with_other_classes() {
    let dir = tempdir();
    for class in ["daisy", "rose"] {
        write_images(&dir.path().join("two").join(class), 1);
    }
    let eval = |data: &str| {
        petal(
            dir.path(),
            [
                "eval".as_ref(),
                "--model".as_ref(),
                bundle().as_os_str(),
                "--data".as_ref(),
                data.as_ref(),
                "--out".as_ref(),
                "out".as_ref(),
            ],
        )
        .failure()
    };
    let err = eval("two");
    assert!(
        err.contains("5 classes do not match the 2 class folders")
            && err.contains("bundle: daisy, dandelion, rose, sunflower, tulip")
            && err.contains("folder: daisy, rose"),
        "{err}"
    );

    // Same count, one different name.
    for class in ["daisy", "dandelion", "rose", "sunflower", "lily"] {
        write_images(&dir.path().join("renamed").join(class), 1);
    }
    let err = eval("renamed");
    assert!(
        err.contains("only in the bundle: tulip") && err.contains("only in the folder: lily"),
        "{err}"
    );
    assert!(!dir.path().join("out").exists(), "nothing written on error");

    let err = eval("missing");
    assert!(err.contains("does not exist"), "{err}");
}
