//! Training step for step the same as PyTorch: the staged recipe (head-only Adam, all-but-stem
//! Adam continuing the halving schedule, SGD with momentum) from seeded torchvision weights on
//! fixed batches (`augment = false`, `shuffle = false`, `keep_head = true`), against
//! `tests/reference/train_ref.py` on the same tensors. Every step's loss, every weight and
//! every BatchNorm running statistic at the end must agree; a reference with a wrong Adam
//! epsilon, SGD dampening or BatchNorm momentum must not.

use crate::util::{petal, photo, python, repo, tempdir, torchvision_reference};
use burn::prelude::*;
use burn::store::{ModuleSnapshot, bridge};
use petal_shared::Bundle;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// Four classes of two photos each: one batch of 8 is one step per epoch, so each epoch's
/// training loss in `metrics.csv` is that step's loss.
const CLASSES: [(&str, [&str; 2]); 4] = [
    ("astronaut", ["astronaut_q90.jpg", "crop_300x452.png"]),
    ("cat", ["chelsea.png", "chelsea_q90.jpg"]),
    ("coffee", ["coffee_q90.jpg", "coffee_q90_444.jpg"]),
    ("scene", ["sk_china.jpg", "sk_flower.jpg"]),
];

/// The recipe after `arch = "..."`.
const RECIPE: &str = r#"
batch_size = 8
seed = 3
image_size = 64
resize = 73
val_fraction = 0.1
test_fraction = 0.1
log_every = 0
precision = "f32"
augment = false
shuffle = false
keep_head = true
stochastic_depth = false

[[stages]]
name = "head"
trainable = "head"
optimizer = "adam"
epochs = 2
lr = 1e-4
lr_step_epochs = 1
lr_gamma = 0.5

[[stages]]
name = "finetune"
trainable = "all-but-stem"
optimizer = "adam"
epochs = 2

[[stages]]
name = "polish"
trainable = "all-but-stem"
optimizer = "sgd"
epochs = 3
lr = SGD_LR
momentum = 0.8
"#;

/// The recipe's stages as `train_ref.py` reads them.
const PLAN: &str = r#"[
  {"trainable": "head", "optimizer": "adam", "epochs": 2, "lr": 1e-4, "lr_step_epochs": 1, "lr_gamma": 0.5},
  {"trainable": "all-but-stem", "optimizer": "adam", "epochs": 2, "lr": null},
  {"trainable": "all-but-stem", "optimizer": "sgd", "epochs": 3, "lr": SGD_LR, "momentum": 0.8}
]"#;

/// Every tensor of a bundle's network (weights and BatchNorm statistics) by name.
fn tensors(bundle: &Path) -> BTreeMap<String, Vec<f32>> {
    let bundle = Bundle::load(bundle, &Device::flex()).unwrap();
    bundle
        .model
        .collect(None, None, true)
        .into_iter()
        .map(|t| {
            let data = bridge::to_data(&t).unwrap().convert::<f32>();
            (t.name.clone(), data.try_to_vec::<f32>().unwrap())
        })
        .collect()
}

/// How far apart two trained networks are, tensor by tensor, measured against how far training
/// moved the tensor: `|a - b| / |b - b0|` (Euclidean norms; `b0` the starting weights). Adam
/// moves a weight whose gradient is close to zero by up to the learning rate in either
/// direction, so single weights may differ by about a step where the float32 sums of two
/// libraries round such a gradient differently; the update as a whole may not. Returns the
/// worst ratio and its tensor.
fn update_gap(
    a: &BTreeMap<String, Vec<f32>>,
    b: &BTreeMap<String, Vec<f32>>,
    start: &BTreeMap<String, Vec<f32>>,
) -> (f64, String) {
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "the two networks hold different tensors"
    );
    let norm = |x: &[f32], y: &[f32]| {
        x.iter()
            .zip(y)
            .map(|(p, q)| (f64::from(*p) - f64::from(*q)).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    let mut worst = (0.0f64, String::new());
    for (name, x) in a {
        let (y, y0) = (&b[name], &start[name]);
        assert_eq!(x.len(), y.len(), "{name}");
        let moved = norm(y, y0);
        let size = y0.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
        // A tensor training left alone (the frozen stem) must be left alone by both.
        let gap = norm(x, y) / moved.max(1e-6 * size).max(1e-12);
        if gap > worst.0 {
            worst = (gap, name.clone());
        }
    }
    worst
}

/// The largest relative difference between two loss sequences.
fn loss_gap(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "steps: {a:?} vs {b:?}");
    a.iter()
        .zip(b)
        .map(|(p, q)| (p - q).abs() / q.abs().max(0.1))
        .fold(0.0, f64::max)
}

/// PyTorch's run of the plan with `flags` (wrong constants, for the negative checks): its step
/// losses and its final network as a Petal bundle.
fn torch_run(
    dir: &Path,
    arch: &str,
    name: &str,
    flags: &[&str],
) -> (Vec<f64>, BTreeMap<String, Vec<f32>>) {
    let out = dir.join(name);
    std::fs::create_dir_all(&out).unwrap();
    let script = repo().join("tests/reference/train_ref.py");
    let run = Command::new(python())
        .arg(&script)
        .args(["--arch", arch, "--weights", &format!("ref/{arch}.pth")])
        .args(["--batches", "batches.json", "--plan", "plan.json", "--out"])
        .arg(&out)
        .args(flags)
        .current_dir(dir)
        .output()
        .expect("cannot run the PyTorch reference");
    assert!(
        run.status.success(),
        "train_ref.py failed:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let losses: Vec<f64> =
        serde_json::from_slice(&std::fs::read(out.join("losses.json")).unwrap()).unwrap();
    (
        losses,
        imported(dir, arch, &out.join("final.pth"), &out.join("bundle")),
    )
}

/// `petal import` of `pth` (its head kept) into `bundle`: what it holds, by tensor name.
fn imported(dir: &Path, arch: &str, pth: &Path, bundle: &Path) -> BTreeMap<String, Vec<f32>> {
    petal(
        dir,
        [
            "import",
            pth.to_str().unwrap(),
            "--arch",
            arch,
            "--labels",
            "labels.txt",
            "--image-size",
            "64",
            "--resize",
            "73",
            "-o",
            bundle.to_str().unwrap(),
        ],
    )
    .success();
    tensors(bundle)
}

/// One network's parity check.
struct Case {
    arch: &'static str,
    /// The polish stage's SGD learning rate: large enough for its steps to matter beside
    /// Adam's, small enough not to diverge.
    sgd_lr: &'static str,
    /// Whether it has BatchNorm layers (whose momentum the test must then also notice).
    batch_norm: bool,
    /// Largest difference allowed between the step losses: relative, or absolute below a loss
    /// of 0.1 (float32 cross-entropy near zero keeps about 1e-7 absolute).
    loss_tol: f64,
    /// Largest difference allowed between the two networks' updates of any tensor, relative to
    /// the update (see [`update_gap`]).
    update_tol: f64,
}

/// Measured here: losses within 5.6e-6, updates within 2.5e-3. A wrong Adam epsilon gives
/// 4.3e-3 and 1.5e-2, SGD dampening 0.1 1.9e-4 on the losses, BatchNorm momentum 0.01 8.2 on
/// the updates, and burn's own BatchNorm (a biased running variance) 9.7e-2 on
/// `layer4.0.bn2.running_var`.
#[test]
fn resnet_trains_as_pytorch_does_step_for_step() {
    staged_training_equals_pytorch(Case {
        arch: "resnet18",
        sgd_lr: "5e-2",
        batch_norm: true,
        loss_tol: 5e-5,
        update_tol: 1e-2,
    });
}

/// Measured here: losses within 3.0e-6, updates within 1.2e-4. A wrong Adam epsilon gives
/// 8.5e-5 and 3.1e-3, SGD dampening 0.1 1.8e-2 and 0.16. The seeded ConvNeXt starts with large
/// logits (loss 10) and its SGD steps overshoot (loss 132 after the first) in both libraries
/// alike; at rates between that and a negligible one the trajectory is chaotic and the two part
/// by up to 4e-5.
#[test]
fn convnext_trains_as_pytorch_does_step_for_step() {
    staged_training_equals_pytorch(Case {
        arch: "convnext_tiny",
        sgd_lr: "5e-3",
        batch_norm: false,
        loss_tol: 2e-5,
        update_tol: 1e-3,
    });
}

fn staged_training_equals_pytorch(case: Case) {
    let Case {
        arch, batch_norm, ..
    } = case;
    let dir = tempdir();
    let d = dir.path();
    for split in ["train", "val"] {
        for (class, files) in CLASSES {
            let folder = d.join("data").join(split).join(class);
            std::fs::create_dir_all(&folder).unwrap();
            for f in files {
                std::fs::copy(photo(f), folder.join(f)).unwrap();
            }
        }
    }
    let labels: Vec<&str> = CLASSES.iter().map(|(c, _)| *c).collect();
    std::fs::write(d.join("labels.txt"), labels.join("\n") + "\n").unwrap();
    std::fs::create_dir_all(d.join("ref")).unwrap();
    torchvision_reference(&d.join("ref"), &["--size", "64", "--classes", "4", arch]);
    let recipe = format!("arch = \"{arch}\"\n{RECIPE}").replace("SGD_LR", case.sgd_lr);
    std::fs::write(d.join("recipe.toml"), recipe).unwrap();
    std::fs::write(d.join("plan.json"), PLAN.replace("SGD_LR", case.sgd_lr)).unwrap();

    petal(
        d,
        [
            "train",
            "--data",
            "data",
            "--pretrained",
            &format!("ref/{arch}.pth"),
            "--config",
            "recipe.toml",
            "--device",
            "cpu",
            "-o",
            "run",
        ],
    )
    .success();

    // The batches in the order Petal trained on them, through its own preprocessing.
    let split: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("run/split.json")).unwrap()).unwrap();
    let classes: Vec<&str> = split["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(classes, labels);
    let mut images = Vec::new();
    let mut targets = Vec::new();
    for (i, file) in split["train"].as_array().unwrap().iter().enumerate() {
        let file = file.as_str().unwrap();
        let npy = d.join(format!("pre/{i}.npy"));
        std::fs::create_dir_all(d.join("pre")).unwrap();
        let source = d.join("data").join(file);
        petal(
            d,
            [
                "preprocess",
                source.to_str().unwrap(),
                "--resize",
                "73",
                "--image-size",
                "64",
                "-o",
                npy.to_str().unwrap(),
            ],
        )
        .success();
        images.push(npy.to_str().unwrap().to_string());
        let class = Path::new(file).components().nth(1).unwrap();
        let class = class.as_os_str().to_str().unwrap();
        targets.push(classes.iter().position(|c| *c == class).unwrap());
    }
    let batches = serde_json::json!({"images": images, "labels": targets, "batch_size": 8});
    std::fs::write(d.join("batches.json"), batches.to_string()).unwrap();

    // Petal's step losses: one step per epoch, so each epoch's training loss is that step's.
    let metrics = std::fs::read_to_string(d.join("run/metrics.csv")).unwrap();
    let ours: Vec<f64> = metrics
        .lines()
        .skip(1)
        .map(|row| row.split(',').nth(2).unwrap().parse().unwrap())
        .collect();
    let export = d.join("petal-bundle");
    petal(
        d,
        [
            "export",
            "run",
            "--checkpoint",
            "last",
            "-o",
            export.to_str().unwrap(),
        ],
    )
    .success();
    let our_tensors = tensors(&export);

    let start = imported(
        d,
        arch,
        &d.join(format!("ref/{arch}.pth")),
        &d.join("start"),
    );
    let (losses, theirs) = torch_run(d, arch, "torch", &[]);
    let steps = loss_gap(&ours, &losses);
    let (weights, worst) = update_gap(&our_tensors, &theirs, &start);
    println!(
        "{arch}: petal vs PyTorch over {} steps: losses within {steps:.2e}, the updates of weights and \
         BatchNorm statistics within {weights:.2e} of their size (worst: {worst})\n  petal {ours:?}\n  torch \
         {losses:?}",
        ours.len()
    );
    assert!(steps <= case.loss_tol, "step losses differ by {steps:.2e}");
    assert!(
        weights <= case.update_tol,
        "{worst}: the updates differ by {weights:.2e} of their size"
    );

    // The test notices each constant PyTorch's recipe depends on: with one of them wrong, the
    // reference no longer matches.
    for (what, flags) in [
        (
            "Adam epsilon 1e-5 (burn's default)",
            &["--adam-eps", "1e-5"][..],
        ),
        (
            "SGD dampening 0.1 (burn's default)",
            &["--sgd-dampening", "0.1"],
        ),
        ("BatchNorm momentum 0.01", &["--bn-momentum", "0.01"]),
    ] {
        if what.starts_with("BatchNorm") && !batch_norm {
            continue;
        }
        let (losses, theirs) = torch_run(d, arch, &what.replace(' ', "_"), flags);
        let (weights, worst) = update_gap(&our_tensors, &theirs, &start);
        let steps = loss_gap(&ours, &losses);
        println!("  with {what}: losses {steps:.2e}, weights {weights:.2e} ({worst})");
        assert!(
            steps > case.loss_tol || weights > case.update_tol,
            "a reference with {what} still matches: the test cannot tell"
        );
    }
}
