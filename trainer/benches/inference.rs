//! CPU inference and preprocessing throughput, next to torchvision on the same machine.
//!
//! `cargo bench -p petal-trainer --bench inference` runs every configuration, each in a child
//! process so that its peak memory (VmHWM) is its own, then runs `benches/torchvision_bench.py`
//! for the same configurations and prints one table. Arguments:
//!   `--quick`            fewer iterations
//!   `--only ARCH:BATCH`  one configuration in this process (what the children run)
//!   `--backend NAME`     flex (default) or ndarray (needs `--features ndarray`)
//!   `--unfolded`         burn's layer-by-layer network instead of the folded CPU network
//!                        (the table shows both)
//!   `--preprocess`       only the preprocessing figures (a 640×427 and a 4032×3024 JPEG)
//! Figures only: nothing here passes or fails on timing.

use burn::prelude::*;
use petal_shared::runtime::{Images, Runtime, RuntimeOptions};
use petal_shared::{Arch, NetworkConfig, Preprocessor};
use std::process::Command;
use std::time::{Duration, Instant};

const CONFIGS: [(Arch, usize); 10] = [
    (Arch::ResNet18, 1),
    (Arch::ResNet18, 8),
    (Arch::ResNet50, 1),
    (Arch::ResNet50, 8),
    (Arch::ResNet101, 1),
    (Arch::ResNet101, 8),
    // No folded form: petal runs burn's network, so both petal columns are that.
    (Arch::ConvNeXtTiny, 1),
    (Arch::ConvNeXtTiny, 8),
    (Arch::EfficientNetB0, 1),
    (Arch::EfficientNetB0, 8),
];

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn device(backend: &str) -> Device {
    match backend {
        #[cfg(feature = "ndarray")]
        #[allow(deprecated)]
        "ndarray" => Device::ndarray(),
        "flex" => Device::flex(),
        other => panic!("backend {other} is not in this build"),
    }
}

/// Runs `f` until `budget` has passed (at least `min_iters` times, after one warm-up call);
/// returns seconds per call (median).
fn time(mut f: impl FnMut(), min_iters: usize, budget: Duration) -> f64 {
    f();
    let mut samples = Vec::new();
    let start = Instant::now();
    while samples.len() < min_iters || start.elapsed() < budget {
        let t = Instant::now();
        f();
        samples.push(t.elapsed().as_secs_f64());
    }
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// One configuration: prints `arch batch images/s peak_MiB weights_MiB`.
fn run_one(arch: Arch, batch: usize, backend: &str, folded: bool, quick: bool) {
    let device = device(backend);
    let model = NetworkConfig::new(arch, 1000).init(&device);
    let weights_mib = model.num_params() as f64 * 4.0 / (1024.0 * 1024.0);
    let x = Tensor::<4>::random(
        [batch, 3, 224, 224],
        burn::tensor::Distribution::Default,
        &device,
    );
    let budget = Duration::from_secs(if quick { 3 } else { 10 });
    // The runtime `petal score` uses, folded or not: the time includes reading the logits back.
    let options = RuntimeOptions {
        fold: folded,
        ..RuntimeOptions::default()
    };
    let runtime = Runtime::new(model, &device, options).unwrap();
    let images = Images::new(
        x.into_data().try_into_vec::<f32>().unwrap(),
        batch,
        224,
        224,
    )
    .unwrap();
    let secs = time(
        || {
            // The runtime takes its batch by value; the copy is ~1 ms beside the pass.
            std::hint::black_box(runtime.logits(images.clone()).unwrap());
        },
        3,
        budget,
    );
    println!(
        "{arch} {batch} {:.2} {:.0} {:.0}",
        batch as f64 / secs,
        peak_rss_mib(),
        weights_mib
    );
}

fn preprocess_bench(path: &std::path::Path, quick: bool) -> f64 {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let pre = Preprocessor::default();
    let budget = Duration::from_secs(if quick { 2 } else { 5 });
    let secs = time(
        || {
            std::hint::black_box(pre.tensor_from_bytes(&bytes).unwrap());
        },
        10,
        budget,
    );
    1.0 / secs
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let backend = value("--backend").unwrap_or_else(|| "flex".into());
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it,
    // and a benchmark is not a test.
    if !args.iter().any(|a| a == "--bench" || a == "--only") {
        println!(
            "inference benchmark: run it with `cargo bench -p petal-trainer --bench inference`"
        );
        return;
    }
    if args.iter().any(|a| a == "--preprocess") {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../benches/torchvision_bench.py");
        let python = std::env::var("PETAL_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into());
        preprocess_figures(&python, &script, quick);
        return;
    }
    if let Some(only) = value("--only") {
        let (arch, batch) = only.split_once(':').expect("--only ARCH:BATCH");
        run_one(
            arch.parse().unwrap(),
            batch.parse().unwrap(),
            &backend,
            !args.iter().any(|a| a == "--unfolded"),
            quick,
        );
        return;
    }

    let exe = std::env::current_exe().unwrap();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/torchvision_bench.py");
    let python = std::env::var("PETAL_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("CPU inference at 224x224, {threads} threads, median of repeated forwards");
    println!(
        "{:<10} {:>5} | {:>14} {:>10} | {:>14} | {:>14} {:>10} | {:>7} | {:>8}",
        "model",
        "batch",
        "petal img/s",
        "peak MiB",
        "unfolded img/s",
        "torch img/s",
        "peak MiB",
        "ratio",
        "weights"
    );
    for (arch, batch) in CONFIGS {
        let child = |unfolded: bool| {
            let mut cmd = Command::new(&exe);
            cmd.args(["--only", &format!("{arch}:{batch}"), "--backend", &backend]);
            if quick {
                cmd.arg("--quick");
            }
            if unfolded {
                cmd.arg("--unfolded");
            }
            String::from_utf8(cmd.output().unwrap().stdout).unwrap()
        };
        let ours = child(false);
        let unfolded = child(true);
        let u: Vec<&str> = unfolded.split_whitespace().collect();
        let mut torch_cmd = Command::new(&python);
        torch_cmd
            .arg(&script)
            .args(["--arch", arch.name(), "--batch", &batch.to_string()]);
        if quick {
            torch_cmd.arg("--quick");
        }
        let theirs = torch_cmd
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let o: Vec<&str> = ours.split_whitespace().collect();
        let t: Vec<&str> = theirs.split_whitespace().collect();
        let ratio = match (
            o.get(2).and_then(|v| v.parse::<f64>().ok()),
            t.get(2).and_then(|v| v.parse::<f64>().ok()),
        ) {
            (Some(a), Some(b)) => format!("{:.2}x", a / b),
            _ => "n/a".into(),
        };
        println!(
            "{:<10} {:>5} | {:>14} {:>10} | {:>14} | {:>14} {:>10} | {:>7} | {:>6} MiB",
            arch.name(),
            batch,
            o.get(2).unwrap_or(&"?"),
            o.get(3).unwrap_or(&"?"),
            u.get(2).unwrap_or(&"?"),
            t.get(2).unwrap_or(&"?"),
            t.get(3).unwrap_or(&"?"),
            ratio,
            o.get(4).unwrap_or(&"?"),
        );
    }

    println!();
    preprocess_figures(&python, &script, quick);
}

/// Preprocessing (decode, resize 256, crop 224, normalise) of one photo at a time, petal and
/// Pillow + torchvision on the same files: the 640×427 fixture JPEG, and a 4032×3024 one (a
/// phone photo's size, where the resize's downscale reads 16 source pixels per output pixel).
fn preprocess_figures(python: &str, script: &std::path::Path, quick: bool) {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures/photos/sk_china.jpg");
    let dir = tempfile::tempdir().expect("a temporary folder");
    let phone = dir.path().join("4032x3024.jpg");
    let scene = image::RgbImage::from_fn(4032, 3024, |x, y| {
        // Smooth gradients with some texture, so that the JPEG is a photo's size (~2-4 MB).
        let v = ((x * 7 + y * 3) % 251) as u8;
        image::Rgb([(x / 16) as u8, (y / 12) as u8, v])
    });
    scene.save(&phone).expect("the generated photo is written");
    for (name, path) in [
        ("640x427", fixture.as_path()),
        ("4032x3024", phone.as_path()),
    ] {
        let ours = preprocess_bench(path, quick);
        let theirs = Command::new(python)
            .arg(script)
            .arg("--preprocess")
            .arg("--photo")
            .arg(path)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let ratio = theirs
            .parse::<f64>()
            .map_or("n/a".into(), |t| format!("{:.2}x", ours / t));
        println!(
            "preprocess {name} JPEG (decode, resize 256, crop 224, normalise): petal {ours:.1} img/s, Pillow+torchvision {theirs} img/s, ratio {ratio}"
        );
    }
}
