//! `petal demo`, `train` and `score` end to end on generated photos, and their bad-input errors.

use crate::util::{petal, tempdir};

#[test]
fn demo_trains_scores_and_exports() {
    let dir = tempdir();
    let out = petal(
        dir.path(),
        [
            "demo",
            "--out",
            "d",
            "--per-class",
            "24",
            "--epochs",
            "2",
            "--image-size",
            "48",
        ],
    )
    .success();
    let d = dir.path().join("d");
    // Training learnt something: a 5-class problem has 20% chance accuracy.
    let acc: f64 = out
        .split("validation accuracy ")
        .nth(1)
        .and_then(|s| s.split('%').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no accuracy in:\n{out}"));
    assert!(acc > 40.0, "validation accuracy {acc}%:\n{out}");

    let metrics = std::fs::read_to_string(d.join("run/metrics.csv")).unwrap();
    let lines: Vec<&str> = metrics.lines().collect();
    assert_eq!(lines[0], "epoch,lr,train_loss,val_loss,val_accuracy");
    assert_eq!(lines.len(), 3, "one row per epoch:\n{metrics}");
    assert!(
        lines[1].starts_with("1,0.001,") && lines[2].starts_with("2,0.001,"),
        "{metrics}"
    );

    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("run/bundle/petal.json")).unwrap()).unwrap();
    assert_eq!(
        meta["classes"],
        serde_json::json!(["daisy", "dandelion", "rose", "sunflower", "tulip"])
    );
    assert_eq!(
        (meta["image_size"].as_u64(), meta["resize"].as_u64()),
        (Some(48), Some(54))
    );

    // One row per test image, each a known class with a probability.
    let submission = std::fs::read_to_string(d.join("submission.csv")).unwrap();
    let rows: Vec<&str> = submission.lines().collect();
    assert_eq!(rows[0], "file,label,prob");
    assert_eq!(rows.len(), 1 + 50);
    for row in &rows[1..] {
        let cols: Vec<&str> = row.split(',').collect();
        assert!(
            cols[0].starts_with("img_") && cols[0].ends_with(".png"),
            "{row}"
        );
        assert!(
            ["daisy", "dandelion", "rose", "sunflower", "tulip"].contains(&cols[1]),
            "{row}"
        );
        let p: f64 = cols[2].parse().unwrap();
        assert!((0.2..=1.0).contains(&p), "{row}");
    }

    // split.json records the split for audit.
    let split: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("run/split.json")).unwrap()).unwrap();
    let n = |k: &str| split[k].as_array().unwrap().len();
    assert_eq!(n("train") + n("val") + n("test"), 5 * 24);

    // score with custom columns and all class probabilities, and a corrupt file in the folder.
    std::fs::write(d.join("test/broken.jpg"), b"\xff\xd8\xff garbage").unwrap();
    let run = petal(
        &d,
        [
            "score",
            "--model",
            "run/bundle",
            "--images",
            "test",
            "--out",
            "sub.csv",
            "--columns",
            "id,label",
            "--probs",
        ],
    );
    let stdout = run.success();
    assert!(
        stdout.contains("50 rows") && stdout.contains("1 unreadable"),
        "{stdout}"
    );
    assert!(run.stderr().contains("broken.jpg"), "{}", run.stderr());
    let sub = std::fs::read_to_string(d.join("sub.csv")).unwrap();
    assert!(
        sub.starts_with("id,label,prob,daisy,dandelion,rose,sunflower,tulip\n"),
        "{sub}"
    );
}

#[test]
fn train_rejects_bad_folders_before_training() {
    let dir = tempdir();
    let err = petal(dir.path(), ["train", "--data", "missing", "--out", "r"]).failure();
    assert!(
        err.contains("missing") && err.contains("does not exist"),
        "{err}"
    );

    std::fs::create_dir_all(dir.path().join("one/daisy")).unwrap();
    std::fs::write(dir.path().join("one/daisy/a.png"), b"x").unwrap();
    let err = petal(dir.path(), ["train", "--data", "one", "--out", "r"]).failure();
    assert!(err.contains("at least 2"), "{err}");

    std::fs::create_dir_all(dir.path().join("one/rose")).unwrap();
    let err = petal(dir.path(), ["train", "--data", "one", "--out", "r"]).failure();
    assert!(
        err.contains("rose") && err.contains("holds no images"),
        "{err}"
    );
    assert!(
        !dir.path().join("r").exists(),
        "nothing may be written before training starts"
    );
}
