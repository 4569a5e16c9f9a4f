//! Data-parallel training (`petal train --devices`) where there is no GPU: replicas on the CPU
//! run the same loop as GPUs do (one thread per replica, shards of every batch, gradients
//! summed before every replica's step, checkpoints from the leader), summing through host
//! memory instead of NCCL. That the sum gives the one-device step is checked in
//! `trainer/src/train/parallel.rs`.

use crate::train::{generated_photos, interrupt, quick, spawn_until_checkpoint};
use crate::util::{petal, tempdir};

#[test]
fn two_cpu_replicas_train_checkpoint_and_resume_where_they_stopped() {
    let dir = tempdir();
    let d = dir.path();
    generated_photos(d, 12);
    let epochs = ["--epochs", "2", "--stage-epochs", "polish=1"];
    let with = |extra: &[&'static str]| -> Vec<&'static str> { [&epochs[..], extra].concat() };
    let straight = petal(d, quick("a", &with(&["--devices", "cpu,cpu"]))).success();
    assert!(straight.contains("2 CPU replicas"), "{straight}");
    let read = |p: &str| std::fs::read_to_string(d.join(p)).unwrap();
    let metrics = read("a/metrics.csv");
    assert_eq!(metrics.lines().count(), 4, "{metrics}");
    for row in metrics.lines().skip(1) {
        let train_loss: f64 = row.split(',').nth(2).unwrap().parse().unwrap();
        assert!(train_loss.is_finite() && train_loss > 0.0, "{metrics}");
    }
    // One writer: one model and one optimiser file per checkpoint, whatever the replicas.
    let mut checkpoints: Vec<String> = std::fs::read_dir(d.join("a/checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".bpk") && n != "best.bpk")
        .collect();
    checkpoints.sort();
    assert_eq!(
        checkpoints,
        ["e0004-s00000.model.bpk", "e0004-s00000.optim.bpk"]
    );

    // Interrupted after its first checkpoint and resumed on two replicas again, the run
    // retraces the straight one: every replica restarts from the leader's checkpoint, and the
    // host sum adds the replicas up in the same order every time.
    interrupt(spawn_until_checkpoint(
        d,
        "b",
        &with(&["--devices", "cpu,cpu"]),
    ));
    let resumed = petal(d, ["train", "--resume", "b", "--devices", "cpu,cpu"]);
    assert!(resumed.success().contains("2 CPU replicas"));
    assert_eq!(read("a/metrics.csv"), read("b/metrics.csv"));

    // The bundle is an ordinary one.
    let photo = crate::util::photo("chelsea.png");
    let a = crate::util::predict_one(d, "a/bundle", &photo, &["--logits"]);
    let b = crate::util::predict_one(d, "b/bundle", &photo, &["--logits"]);
    assert_eq!(crate::util::logits(&a), crate::util::logits(&b));
}

#[test]
fn devices_that_cannot_share_a_batch_are_refused_before_training() {
    let dir = tempdir();
    let d = dir.path();
    generated_photos(d, 3);
    let err = petal(d, quick("r", &["--devices", "cpu,cpu,cpu,cpu,cpu"])).failure();
    assert!(
        err.contains("a batch of 8 cannot give each of 5 devices two images"),
        "{err}"
    );
    let err = petal(d, quick("r", &["--devices", "cpu,tpu"])).failure();
    assert!(err.contains("'tpu' is not a device"), "{err}");
    if !cfg!(feature = "cuda") {
        let err = petal(d, quick("r", &["--devices", "cuda:0,cuda:1"])).failure();
        assert!(err.contains("built without CUDA"), "{err}");
    } else if !crate::util::nvidia_driver() {
        let err = petal(d, quick("r", &["--devices", "cuda:0,cuda:1"])).failure();
        assert!(err.contains("no usable CUDA GPU 0"), "{err}");
    }
    assert!(!d.join("r").exists(), "nothing may be written");
}
