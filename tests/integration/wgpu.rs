//! The wgpu backend, on whatever Vulkan adapter the machine has. CI has no GPU: there Mesa's
//! lavapipe (a Vulkan driver on the CPU, `mesa-vulkan-drivers`) runs the same code paths as a
//! GPU would, very slowly, so the test stays tiny.

use crate::util::{TestCommand, logits, petal, photo, predict_one, tempdir, torchvision_reference};
use std::path::{Path, PathBuf};

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
            "--precision",
            "f32",
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
            &["--logits", "--device", device, "--precision", "f32"],
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

/// A ResNet-18 bundle with torchvision's random init for 5 classes at 64×64, imported by the CLI.
fn small_bundle(dir: &Path) -> PathBuf {
    let reference = dir.join("ref");
    std::fs::create_dir_all(&reference).unwrap();
    torchvision_reference(&reference, &["--size", "64", "--classes", "5", "resnet18"]);
    std::fs::write(dir.join("labels.txt"), "a\nb\nc\nd\ne\n").unwrap();
    let bundle = dir.join("bundle");
    TestCommand::new(dir)
        .arg("import")
        .arg(reference.join("resnet18.pth"))
        .args(["--arch", "resnet18", "--labels", "labels.txt"])
        .args(["--image-size", "64", "--resize", "73", "-o"])
        .arg(&bundle)
        .success();
    bundle
}

/// Mixed precision on the wgpu adapter: where it computes in f16, a bundle's f16 logits stay
/// near its f32 ones (and differ from them: the f16 path really ran); where it does not, asking
/// for f16 is an error that says so, and `auto` quietly computes in f32.
#[test]
fn wgpu_f16_predicts_near_f32_or_says_why_not() {
    let dir = tempdir();
    let d = dir.path();
    let bundle = small_bundle(d);
    let bundle = bundle.to_str().unwrap();
    let photo = photo("chelsea.png");
    let on = |precision: &str| {
        TestCommand::new(d)
            .args(["--device", "wgpu", "--precision", precision])
            .args(["predict", "--json", "--logits", "--model", bundle])
            .arg(&photo)
            .run()
    };
    let first_logits = |out: String| -> Vec<f64> {
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        logits(&v[0])
    };
    let f32_run = on("f32");
    let full = first_logits(f32_run.success());
    // stderr carries only what the user should read: no noise from probing other graphics APIs.
    let err = f32_run.stderr();
    assert!(!err.to_lowercase().contains("error"), "{err}");
    let f16 = on("f16");
    if f16.output.status.success() {
        let half = first_logits(f16.stdout());
        let scale = full.iter().fold(1.0f64, |m, x| m.max(x.abs()));
        let worst = half
            .iter()
            .zip(&full)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(worst < 0.05 * scale, "f16 {half:?} vs f32 {full:?}");
        assert!(
            worst > 0.0,
            "f16 gave exactly the f32 logits: the f16 path did not run"
        );
    } else {
        // An error (exit 1) whose one line says why and what to do instead.
        assert_eq!(
            f16.failure().trim(),
            "error: f16 precision needs a GPU that computes in f16, and this device does not \
             (use --precision f32)"
        );
        let auto = first_logits(on("auto").success());
        let gap = auto
            .iter()
            .zip(&full)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(gap < 1e-5, "auto computes in f32 on this adapter: {gap}");
    }
}

/// The kernel cache: the first GPU run on an empty cache says it tunes and fills the folder
/// `PETAL_GPU_CACHE` names; the next run says it reads the tuned kernels from there.
#[test]
fn gpu_kernel_choices_persist_between_runs() {
    let dir = tempdir();
    let d = dir.path();
    let bundle = small_bundle(d);
    let cache = d.join("gpu-cache");
    let photo = photo("chelsea.png");
    let run = || {
        let out = TestCommand::new(d)
            .env("PETAL_GPU_CACHE", &cache)
            .args(["-v", "--device", "wgpu", "predict", "--model"])
            .arg(&bundle)
            .arg(&photo)
            .run();
        out.success();
        out.stderr()
    };
    let first = run();
    assert!(first.contains("first run on this cache"), "{first}");
    let files: Vec<_> = std::fs::read_dir(&cache)
        .expect("the cache folder exists after a GPU run")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        files.iter().any(|f| f.to_string_lossy().ends_with(".db")),
        "{files:?}"
    );
    let second = run();
    assert!(
        second.contains(&format!("tuned kernels from {}", cache.display())),
        "{second}"
    );
}
