//! The wgpu backend, on whatever Vulkan adapter the machine has. CI has no GPU: there Mesa's
//! lavapipe (a Vulkan driver on the CPU, `mesa-vulkan-drivers`) runs the same code paths as a
//! GPU would, very slowly, so the test stays tiny.

use crate::util::{logits, petal, photo, predict_one, tempdir};

#[test]
fn wgpu_trains_and_predicts_like_the_cpu() {
    let dir = tempdir();
    let d = dir.path();
    petal(
        d,
        ["demo", "--out", "d", "--per-class", "3", "--generate-only"],
    )
    .success();
    let out = petal(
        d,
        [
            "train",
            "--data",
            "d/data",
            "--out",
            "r",
            "--arch",
            "resnet18",
            "--image-size",
            "32",
            "--resize",
            "36",
            "--batch-size",
            "4",
            "--epochs",
            "1",
            "--stage-epochs",
            "polish=0",
            "--device",
            "wgpu",
        ],
    )
    .success();
    // The run names the adapter it got (lavapipe on CI: "llvmpipe").
    assert!(
        out.contains("Vulkan") || out.contains("Metal") || out.contains("Dx12"),
        "{out}"
    );
    let metrics = std::fs::read_to_string(d.join("r/metrics.csv")).unwrap();
    let loss: f64 = metrics
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert!(loss.is_finite() && loss > 0.0, "{metrics}");

    // The trained bundle gives the same logits on the GPU path as on the CPU.
    let photo = photo("chelsea.png");
    let on = |device: &str| {
        logits(&predict_one(
            d,
            "r/bundle",
            &photo,
            &["--logits", "--device", device],
        ))
    };
    let (gpu, cpu) = (on("wgpu"), on("cpu"));
    assert_eq!(gpu.len(), 5);
    let worst = gpu
        .iter()
        .zip(&cpu)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(worst < 1e-3, "wgpu {gpu:?} vs cpu {cpu:?}");
}
