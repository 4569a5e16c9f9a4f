//! `petal demo`, `train` and `score` end to end on generated photos, and their bad-input errors.

use crate::util::{logits, petal, petal_env, predict_one, tempdir};

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
            "40",
            "--epochs",
            "3",
            "--image-size",
            "48",
            "--batch-size",
            "8",
            "--json",
        ],
    )
    .success();
    let d = dir.path().join("d");
    let report: serde_json::Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}):\n{out}"));
    // Training learnt something: a 5-class problem has 20% chance accuracy.
    let acc = report["val_accuracy"].as_f64().unwrap();
    assert!(acc > 0.6, "validation accuracy {acc}: {report}");
    // And on the held-out folder (10 per class), scored through the exported bundle.
    let (right, total) = (
        report["test_correct"].as_u64().unwrap(),
        report["test_total"].as_u64().unwrap(),
    );
    assert_eq!(total, 50, "{report}");
    assert!(right * 10 >= total * 7, "test {right}/{total}: {report}");
    assert_eq!(
        std::path::PathBuf::from(report["bundle"].as_str().unwrap()),
        std::path::Path::new("d/run/bundle")
    );
    assert!(
        dir.path()
            .join(report["submission"].as_str().unwrap())
            .is_file()
    );

    let metrics = std::fs::read_to_string(d.join("run/metrics.csv")).unwrap();
    let lines: Vec<&str> = metrics.lines().collect();
    assert_eq!(lines[0], "epoch,lr,train_loss,val_loss,val_accuracy,stage");
    assert_eq!(lines.len(), 4, "one row per epoch:\n{metrics}");
    assert!(
        lines[1].starts_with("1,0.001,")
            && lines[2].starts_with("2,0.001,")
            && lines[3].starts_with("3,0.0005,"),
        "the recipe halves the rate every 2 epochs:\n{metrics}"
    );

    // The curves are drawn from those rows: the chart's size, and each of the three lines
    // (train loss, validation loss, validation accuracy) is there in its colour.
    let curves = image::open(d.join("run/curves.png")).unwrap().to_rgb8();
    assert_eq!(curves.dimensions(), petal_trainer::plot::CURVES_SIZE);
    for (name, c) in [
        ("train loss", petal_trainer::plot::TRAIN_COLOUR),
        ("val loss", petal_trainer::plot::VAL_COLOUR),
        ("val accuracy", petal_trainer::plot::ACC_COLOUR),
    ] {
        let drawn = curves.pixels().filter(|p| p.0 == [c.0, c.1, c.2]).count();
        assert!(drawn > 100, "{name}: {drawn} pixels in its colour");
    }

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
    assert_eq!(n("train") + n("val") + n("test"), 5 * 40);

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
    let stdout = run.skipped();
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
    let err = petal(
        dir.path(),
        [
            "train", "--data", "missing", "--out", "r", "--device", "cpu",
        ],
    )
    .failure();
    assert!(
        err.contains("missing") && err.contains("does not exist"),
        "{err}"
    );

    std::fs::create_dir_all(dir.path().join("one/daisy")).unwrap();
    std::fs::write(dir.path().join("one/daisy/a.png"), b"x").unwrap();
    let err = petal(
        dir.path(),
        ["train", "--data", "one", "--out", "r", "--device", "cpu"],
    )
    .failure();
    assert!(err.contains("at least 2"), "{err}");

    std::fs::create_dir_all(dir.path().join("one/rose")).unwrap();
    let err = petal(
        dir.path(),
        ["train", "--data", "one", "--out", "r", "--device", "cpu"],
    )
    .failure();
    assert!(
        err.contains("rose") && err.contains("holds no images"),
        "{err}"
    );
    assert!(
        !dir.path().join("r").exists(),
        "nothing may be written before training starts"
    );
}

/// Writes the generated 5-class photo set into `dir/d/data` (and `dir/d/test`).
pub(crate) fn generated_photos(dir: &std::path::Path, per_class: usize) {
    let n = per_class.to_string();
    petal(
        dir,
        ["demo", "--out", "d", "--per-class", &n, "--generate-only"],
    )
    .success();
}

/// `petal train` flags for a quick CPU run on the generated photos.
pub(crate) fn quick(out: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "train",
        "--data",
        "d/data",
        "--out",
        out,
        "--arch",
        "resnet18",
        "--image-size",
        "32",
        "--resize",
        "36",
        "--batch-size",
        "8",
        "--device",
        "cpu",
        "--seed",
        "5",
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Starts `petal train` (the quick flags, run folder `out`, `extra`) in `dir` and returns it
/// once its first checkpoint is on disk, output piped.
pub(crate) fn spawn_until_checkpoint(
    dir: &std::path::Path,
    out: &str,
    extra: &[&str],
) -> std::process::Child {
    let child = std::process::Command::new(crate::util::petal_bin())
        .current_dir(dir)
        .args(quick(out, extra))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let state = dir.join(out).join("checkpoints/state.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while !state.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint after 300 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child
}

/// Sends SIGINT (Ctrl-C) to a running `petal train` and waits for it: it must stop with exit
/// status 130. Returns its stderr.
pub(crate) fn interrupt(child: std::process::Child) -> String {
    let kill = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(130), "stderr:\n{stderr}");
    stderr
}

#[test]
fn ctrl_c_then_resume_gives_the_uninterrupted_result() {
    let dir = tempdir();
    generated_photos(dir.path(), 12);
    // Two fine-tuning epochs and one polish epoch: the resume may cross a stage boundary.
    let epochs = ["--epochs", "2", "--stage-epochs", "polish=1"];
    let straight = petal(dir.path(), quick("a", &epochs));
    straight.success();

    // The same run, interrupted with SIGINT once the first checkpoint is on disk.
    let stderr = interrupt(spawn_until_checkpoint(dir.path(), "b", &epochs));
    assert!(stderr.contains("petal train --resume b"), "{stderr}");
    assert!(
        !dir.path().join("b/bundle").exists(),
        "an interrupted run exports nothing"
    );
    let metrics = std::fs::read_to_string(dir.path().join("b/metrics.csv")).unwrap();
    assert!(
        metrics.lines().count() < 4,
        "the run should have stopped early:\n{metrics}"
    );

    // The run keeps the number format it started in: another --precision is refused.
    let err = petal(
        dir.path(),
        [
            "train",
            "--resume",
            "b",
            "--device",
            "cpu",
            "--precision",
            "f16",
        ],
    )
    .failure();
    assert!(
        err.contains("trains in f32") && err.contains("without --precision f16"),
        "{err}"
    );

    let resumed = petal(dir.path(), ["train", "--resume", "b", "--device", "cpu"]);
    resumed.success();
    let resumed = resumed.stderr();
    assert!(resumed.contains("resuming after epoch"), "{resumed}");

    // Shuffling and augmentation are functions of (seed, epoch, step) and the optimiser state
    // is restored: the resumed run retraces the uninterrupted one.
    let read = |p: &str| std::fs::read_to_string(dir.path().join(p)).unwrap();
    let (a, b) = (read("a/metrics.csv"), read("b/metrics.csv"));
    assert_eq!(a.lines().count(), 4, "{a}");
    assert_eq!(a, b, "metrics differ after resuming");
    // The same network: identical logits (the files themselves differ in parameter ids).
    let photo = crate::util::photo("chelsea.png");
    let logits = |p: &str| {
        predict_one(dir.path(), &format!("{p}/bundle"), &photo, &["--logits"])["logits"].clone()
    };
    assert_eq!(logits("a"), logits("b"), "bundles differ after resuming");
}

#[test]
fn staged_recipe_runs_head_finetune_and_polish_from_pretrained_weights() {
    let dir = tempdir();
    generated_photos(dir.path(), 6);
    let pth = crate::reference::resnet18().file("resnet18.pth");
    let pth = pth.to_str().unwrap();
    let out = petal(
        dir.path(),
        quick(
            "r",
            &[
                "--pretrained",
                pth,
                "--stage-epochs",
                "head=2",
                "--epochs",
                "1",
                "--stage-epochs",
                "polish=1",
            ],
        ),
    )
    .success();
    assert!(out.contains("from pretrained weights"), "{out}");
    assert!(
        out.contains("stages: head 2, finetune 1, polish 1"),
        "{out}"
    );
    let metrics = std::fs::read_to_string(dir.path().join("r/metrics.csv")).unwrap();
    let rows: Vec<Vec<&str>> = metrics.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(
        rows[0],
        [
            "epoch",
            "lr",
            "train_loss",
            "val_loss",
            "val_accuracy",
            "stage"
        ]
    );
    // (epoch, lr, stage): Adam halves every 2 epochs, and fine-tuning continues that schedule;
    // the polish is momentum SGD at 1e-8.
    let plan: Vec<(&str, f64, &str)> = rows[1..]
        .iter()
        .map(|r| (r[0], r[1].parse().unwrap(), r[5]))
        .collect();
    assert_eq!(
        plan,
        [
            ("1", 0.001, "head"),
            ("2", 0.001, "head"),
            ("3", 0.0005, "finetune"),
            ("4", 1e-8, "polish")
        ]
    );
    let recipe = std::fs::read_to_string(dir.path().join("r/recipe.toml")).unwrap();
    assert!(recipe.contains("trainable = \"head\""), "{recipe}");

    // The bundle classifies with the user's classes.
    let photo = crate::util::photo("chelsea.png");
    let v = predict_one(dir.path(), "r/bundle", &photo, &["--top-k", "5"]);
    let labels: std::collections::BTreeSet<&str> = v["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["label"].as_str().unwrap())
        .collect();
    assert_eq!(
        labels,
        ["daisy", "dandelion", "rose", "sunflower", "tulip"].into()
    );

    // On the CPU, inference folds BatchNorm into the convolutions; a trained-then-exported
    // bundle gives the same logits as burn's layer-by-layer network (PETAL_NO_FOLD).
    let folded = logits(&predict_one(dir.path(), "r/bundle", &photo, &["--logits"]));
    let unfolded = petal_env(
        dir.path(),
        &[("PETAL_NO_FOLD", "1")],
        [
            "predict".as_ref(),
            "--model".as_ref(),
            "r/bundle".as_ref(),
            "--json".as_ref(),
            "--logits".as_ref(),
            photo.as_os_str(),
        ],
    )
    .success();
    let unfolded: serde_json::Value = serde_json::from_str(&unfolded).unwrap();
    let unfolded = logits(&unfolded[0]);
    assert_eq!(folded.len(), 5);
    for (a, b) in folded.iter().zip(&unfolded) {
        assert!(
            (a - b).abs() <= 1e-4 * b.abs().max(1.0),
            "{folded:?} vs {unfolded:?}"
        );
    }

    // `export`: the best epoch in half precision (about half the file, the same top class),
    // and the last checkpoint, named as such.
    petal(dir.path(), ["export", "r", "--f16", "-o", "half"]).success();
    let size = |p: &str| {
        std::fs::metadata(dir.path().join(p).join("model.bpk"))
            .unwrap()
            .len()
    };
    assert!(
        size("half") * 10 < size("r/bundle") * 6,
        "{} vs {}",
        size("half"),
        size("r/bundle")
    );
    let meta = |p: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.path().join(p).join("petal.json")).unwrap())
            .unwrap()
    };
    assert_eq!(meta("half")["precision"], "f16");
    assert_eq!(meta("half")["classes"], meta("r/bundle")["classes"]);
    assert_eq!(meta("half")["image_size"], 32);
    let top1 = |model: &str| predict_one(dir.path(), model, &photo, &[])["top"][0]["label"].clone();
    assert_eq!(top1("half"), top1("r/bundle"));
    petal(
        dir.path(),
        ["export", "r", "--checkpoint", "last", "-o", "last"],
    )
    .success();
    let source = meta("last")["source"].as_str().unwrap().to_string();
    assert!(source.contains("(epoch 4)"), "{source}");
    let err = petal(dir.path(), ["export", "nowhere", "-o", "x"]).failure();
    assert!(
        err.contains("nowhere") && err.contains("not a run folder"),
        "{err}"
    );
}

#[test]
fn run_folders_and_recipes_are_checked() {
    let dir = tempdir();
    generated_photos(dir.path(), 3);
    let err = petal(
        dir.path(),
        ["train", "--resume", "nowhere", "--device", "cpu"],
    )
    .failure();
    assert!(
        err.contains("nowhere") && err.contains("not a run folder"),
        "{err}"
    );

    std::fs::write(
        dir.path().join("bad.toml"),
        "arch = \"resnet18\"\nbatchsize = 3\n",
    )
    .unwrap();
    let err = petal(dir.path(), quick("r", &["--config", "bad.toml"])).failure();
    assert!(
        err.contains("bad.toml") && err.contains("batchsize"),
        "{err}"
    );

    let err = petal(dir.path(), quick("r", &["--stage-epochs", "warmup=1"])).failure();
    assert!(
        err.contains("no stage 'warmup'") && err.contains("finetune"),
        "{err}"
    );

    // The printed recipe is a valid --config.
    let recipe = petal(dir.path(), ["train", "--print-recipe"]).success();
    std::fs::write(dir.path().join("r.toml"), &recipe).unwrap();
    petal(
        dir.path(),
        quick(
            "r",
            &[
                "--config",
                "r.toml",
                "--epochs",
                "1",
                "--stage-epochs",
                "polish=0",
            ],
        ),
    )
    .success();
    let err = petal(dir.path(), quick("r", &["--epochs", "1"])).failure();
    assert!(
        err.contains("already holds a training run") && err.contains("--resume r"),
        "{err}"
    );
}

/// A family other than ResNet end to end through the CLI: fine-tune torchvision's `arch` from
/// its weights (head, then everything but the stem, then the polish), export, predict, score,
/// explain.
fn fine_tunes_exports_predicts_scores_and_explains(arch: &str, pth: &std::path::Path) {
    let dir = tempdir();
    generated_photos(dir.path(), 4);
    let mut args = quick(
        "c",
        &[
            "--pretrained",
            pth.to_str().unwrap(),
            "--stage-epochs",
            "head=1",
            "--epochs",
            "1",
            "--stage-epochs",
            "polish=1",
        ],
    );
    let at = args.iter().position(|a| a == "resnet18").unwrap();
    args[at] = arch.into();
    let out = petal(dir.path(), args).success();
    assert!(out.contains("from pretrained weights"), "{out}");
    let recipe = std::fs::read_to_string(dir.path().join("c/recipe.toml")).unwrap();
    assert!(recipe.contains(&format!("arch = \"{arch}\"")), "{recipe}");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("c/bundle/petal.json")).unwrap())
            .unwrap();
    assert_eq!(meta["arch"], arch);
    let metrics = std::fs::read_to_string(dir.path().join("c/metrics.csv")).unwrap();
    assert_eq!(metrics.lines().count(), 4, "{metrics}");
    for row in metrics.lines().skip(1) {
        let loss: f64 = row.split(',').nth(2).unwrap().parse().unwrap();
        assert!(loss.is_finite() && loss > 0.0, "{metrics}");
    }

    // The bundle predicts the user's classes; half precision keeps the top class.
    let photo = crate::util::photo("chelsea.png");
    let full = predict_one(dir.path(), "c/bundle", &photo, &["--logits"]);
    assert_eq!(logits(&full).len(), 5);
    petal(dir.path(), ["export", "c", "--f16", "-o", "half"]).success();
    let half = predict_one(dir.path(), "half", &photo, &[]);
    assert_eq!(half["top"][0]["label"], full["top"][0]["label"]);

    // `score` gives the same top class for the photo, in its CSV.
    let photos = dir.path().join("one");
    std::fs::create_dir_all(&photos).unwrap();
    std::fs::copy(&photo, photos.join("chelsea.png")).unwrap();
    petal(
        dir.path(),
        [
            "score",
            "--model",
            "c/bundle",
            "--images",
            "one",
            "-o",
            "scores.csv",
        ],
    )
    .success();
    let csv = std::fs::read_to_string(dir.path().join("scores.csv")).unwrap();
    let label = full["top"][0]["label"].as_str().unwrap();
    assert!(
        csv.lines().nth(1).is_some_and(|row| row.contains(label)),
        "{csv}"
    );

    // `explain` draws the network's map: 32-pixel input, a 1×1 grid whose value is the logit.
    let explained = petal(
        dir.path(),
        [
            "explain".as_ref(),
            "--model".as_ref(),
            "c/bundle".as_ref(),
            "-o".as_ref(),
            "cam".as_ref(),
            "--json".as_ref(),
            photo.as_os_str(),
        ],
    )
    .success();
    let explained: serde_json::Value = serde_json::from_str(&explained).unwrap();
    let e = &explained[0]["explained"];
    assert_eq!(e["label"], full["top"][0]["label"]);
    let logit = logits(&full)[e["class"].as_u64().unwrap() as usize];
    let value = e["map"]["values"][0].as_f64().unwrap();
    assert!((value - logit).abs() < 1e-4, "map {value}, logit {logit}");
    assert!(dir.path().join("cam/chelsea.cam.png").is_file());
}

#[test]
fn convnext_tiny_fine_tunes_exports_predicts_scores_and_explains() {
    let pth = crate::reference::convnext_tiny().file("convnext_tiny.pth");
    fine_tunes_exports_predicts_scores_and_explains("convnext_tiny", &pth);
}

#[test]
fn efficientnet_b0_fine_tunes_exports_predicts_scores_and_explains() {
    let pth = crate::reference::efficientnet_b0().file("efficientnet_b0.pth");
    fine_tunes_exports_predicts_scores_and_explains("efficientnet_b0", &pth);
}

/// The rows of a run's `metrics.csv` (header left out).
fn metrics_rows(run: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    text.lines().skip(1).map(String::from).collect()
}

/// A learning rate far too high makes the loss NaN: the run stops at that step with one line
/// that says where and what to do, keeps the last good checkpoint and the best epoch's bundle,
/// writes only readable run files, and resumes once the recipe's lr is lowered.
#[test]
fn a_diverging_run_stops_keeps_its_best_epoch_and_resumes_with_a_lower_lr() {
    let dir = tempdir();
    generated_photos(dir.path(), 12);
    // The fine-tuning epoch is sound; the polish stage's SGD at lr 1e30 is not.
    let recipe = petal(dir.path(), ["train", "--print-recipe"]).success();
    assert!(recipe.contains("lr = 1e-8"), "{recipe}");
    std::fs::write(
        dir.path().join("diverge.toml"),
        recipe.replace("lr = 1e-8", "lr = 1e30"),
    )
    .unwrap();
    let args = [
        "--config",
        "diverge.toml",
        "--epochs",
        "1",
        "--stage-epochs",
        "polish=1",
    ];
    let err = petal(dir.path(), quick("r", &args)).failure();
    let line = err
        .lines()
        .find(|l| l.contains("training diverged"))
        .unwrap_or_else(|| panic!("no divergence line:\n{err}"));
    for want in [
        "epoch 2, step ",
        "stage 'polish'",
        "lr 1.000e30",
        "r/recipe.toml",
        "petal train --resume r",
        "checkpoint after epoch 1",
        "bundle is r/bundle",
    ] {
        assert!(line.contains(want), "{want:?} missing from: {line}");
    }
    assert!(
        line.contains("loss is NaN") || line.contains("loss is inf"),
        "{line}"
    );
    let run = dir.path().join("r");
    // Nothing of the diverged epoch was recorded, and the state file reads back.
    assert_eq!(metrics_rows(&run).len(), 1);
    let state = std::fs::read_to_string(run.join("checkpoints/state.json")).unwrap();
    assert!(!state.contains("null"), "{state}");
    // The best epoch's bundle classifies.
    let photo = crate::util::photo("chelsea.png");
    let top = predict_one(dir.path(), "r/bundle", &photo, &[]);
    assert!(top["top"][0]["prob"].as_f64().unwrap().is_finite(), "{top}");

    // The user lowers the polish lr in the run's own recipe and continues.
    let recipe_path = run.join("recipe.toml");
    let mut recipe: toml::Table = std::fs::read_to_string(&recipe_path)
        .unwrap()
        .parse()
        .unwrap();
    let stages = recipe["stages"].as_array_mut().unwrap();
    let polish = stages
        .iter_mut()
        .find(|s| s["name"].as_str() == Some("polish"))
        .unwrap();
    polish["lr"] = toml::Value::Float(1e-8);
    std::fs::write(&recipe_path, toml::to_string(&recipe).unwrap()).unwrap();
    let resumed = petal(dir.path(), ["train", "--resume", "r", "--device", "cpu"]);
    resumed.success();
    assert!(
        resumed.stderr().contains("resuming after epoch 1"),
        "{}",
        resumed.stderr()
    );
    let rows = metrics_rows(&run);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        rows[0].starts_with("1,") && rows[1].starts_with("2,"),
        "{rows:?}"
    );
    assert!(!rows[1].contains("NaN"), "{rows:?}");
}

/// Holds `RUN/train.lock` as another `petal train` would (an exclusive `flock`, this process's
/// id inside).
fn hold_lock(run: &std::path::Path) -> std::fs::File {
    std::fs::create_dir_all(run).unwrap();
    let file = std::fs::File::create(run.join("train.lock")).unwrap();
    file.try_lock().unwrap();
    std::fs::write(run.join("train.lock"), format!("{}\n", std::process::id())).unwrap();
    file
}

/// One writer per run folder: while another process holds a run, `train --resume` and a new
/// `train` into its folder are refused at once naming the holder, and `export` / `predict`
/// still read it; once the holder is gone (even killed with SIGKILL) the run continues.
#[test]
fn one_run_folder_takes_one_writer_and_a_killed_writer_lets_go() {
    let dir = tempdir();
    generated_photos(dir.path(), 12);
    let pid = std::process::id().to_string();

    // A new run into a folder someone holds.
    let held = hold_lock(&dir.path().join("s"));
    let err = petal(dir.path(), quick("s", &["--epochs", "1"])).failure();
    assert!(
        err.contains("s is being trained by process ") && err.contains(&pid),
        "{err}"
    );
    assert!(
        !dir.path().join("s/run.json").exists(),
        "the refused run wrote into the folder"
    );
    drop(held);

    // A run killed with SIGKILL right after its first checkpoint.
    let epochs = ["--epochs", "3", "--stage-epochs", "polish=0"];
    let mut child = spawn_until_checkpoint(dir.path(), "r", &epochs);
    // While it trains, a second writer is refused naming it.
    let err = petal(dir.path(), ["train", "--resume", "r", "--device", "cpu"]).failure();
    assert!(
        err.contains(&format!("r is being trained by process {}", child.id())),
        "{err}"
    );
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the run finished before it was killed");

    // Readers need no lock: export the last checkpoint while another process holds the run.
    let held = hold_lock(&dir.path().join("r"));
    petal(
        dir.path(),
        ["export", "r", "--checkpoint", "last", "-o", "early"],
    )
    .success();
    let photo = crate::util::photo("chelsea.png");
    predict_one(dir.path(), "early", &photo, &[]);
    let err = petal(dir.path(), ["train", "--resume", "r", "--device", "cpu"]).failure();
    assert!(err.contains(&format!("process {pid}")), "{err}");
    drop(held);

    // The killed run's lock died with it: the resume completes, no epoch missing or doubled.
    petal(dir.path(), ["train", "--resume", "r", "--device", "cpu"]).success();
    let rows = metrics_rows(&dir.path().join("r"));
    let epochs: Vec<&str> = rows.iter().map(|r| r.split(',').next().unwrap()).collect();
    assert_eq!(epochs, ["1", "2", "3"], "{rows:?}");
    assert!(dir.path().join("r/bundle").is_dir());
}

/// A disk that fills up while a checkpoint is written: the run stops with an error naming the
/// file and the cause, the previous checkpoint stays whole, and once there is room again
/// `--resume` completes the run with every epoch once. The run folder is on a tmpfs of its own
/// (in a user and mount namespace, so no root is needed), shrunk after the first checkpoint to
/// what it holds plus a little: the second checkpoint cannot fit beside the first.
#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_during_a_checkpoint_keeps_the_last_one_and_resume_completes_the_run() {
    let dir = tempdir();
    generated_photos(dir.path(), 12);
    std::fs::create_dir(dir.path().join("disk")).unwrap();
    let script = r#"
set -u
mount -t tmpfs -o size=2g petal-disk disk || exit 90
"$PETAL" "$@" >train.out 2>train.err &
pid=$!
while [ ! -f disk/run/checkpoints/state.json ] && kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
used=$(du -sk disk | cut -f1)
mount -o remount,size=$((used + 512))k disk
status=0; wait "$pid" || status=$?; echo "$status" >train.status
mount -o remount,size=2g disk
status=0
"$PETAL" train --resume disk/run --device cpu >resume.out 2>resume.err || status=$?
echo "$status" >resume.status
cp disk/run/metrics.csv metrics.csv
ls disk/run/bundle >bundle.ls
"#;
    let out = std::process::Command::new("unshare")
        .current_dir(dir.path())
        .env("PETAL", crate::util::petal_bin())
        .args(["-Urm", "sh", "-c", script, "sh"])
        .args(quick(
            "disk/run",
            &["--epochs", "3", "--stage-epochs", "polish=1"],
        ))
        .output()
        .expect("cannot run unshare (util-linux)");
    let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap_or_default();
    assert!(
        out.status.success(),
        "the namespace script failed ({:?}): {}\ntrain: {}\nresume: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        read("train.err"),
        read("resume.err")
    );
    let err = read("train.err");
    assert_eq!(
        read("train.status").trim(),
        "1",
        "a full disk fails the run:\n{err}"
    );
    assert!(
        err.contains("No space left on device") && err.contains("checkpoints"),
        "the error names the checkpoint and the cause:\n{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    println!("the full disk's report:\n{err}");
    let resumed = read("resume.err");
    assert_eq!(read("resume.status").trim(), "0", "{resumed}");
    assert!(resumed.contains("resuming after epoch 1"), "{resumed}");
    let epochs: Vec<String> = read("metrics.csv")
        .lines()
        .skip(1)
        .map(|row| row.split(',').next().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        epochs,
        ["1", "2", "3", "4"],
        "every epoch once:\n{}",
        read("metrics.csv")
    );
    assert!(
        read("bundle.ls").contains("petal.json"),
        "the finished run exports its bundle"
    );
}
