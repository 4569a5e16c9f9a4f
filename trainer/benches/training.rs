//! Training and GPU-inference throughput: the data loader (decode + augment on all cores), the
//! training step (forward, backward, Adam) and the `score` path's forward, in images per second.
//!
//! `cargo bench -p petal-trainer --bench training -- --bench` runs the defaults:
//!   loader: batches of 32 at 224 from the fixture photos beside the checkout (`--photos DIR`)
//!   step:   ResNet-18 and ResNet-101, batch 8, at 224 (`--arch`, `--batch`, `--size`) on
//!           `--device cpu` (or wgpu in a build with the feature), in `--precision` f32/f16
//!   infer:  the same networks in eval mode, batch `--infer-batch` (64), as `petal score` runs
//!   latency (only when asked for): one photo at a time, its logits read back each time, as
//!           `petal predict` and the page run — on a GPU, the native proxy for the page there
//! `--only loader|train|infer|latency` picks one; `--json` prints one JSON object per
//! measurement (what `scripts/bench-gpu` reads to put petal and PyTorch in one table).
//!
//! Steady state is measured after warm-up, with the device synchronised once at the end (as a
//! training loop that does not read values back); the first step, which compiles and tunes
//! kernels, is reported on its own. Figures only: nothing here passes or fails on timing.

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::AdamConfig;
use burn::prelude::*;
use clap::Parser;
use petal_shared::{Arch, NetworkConfig, Precision, Preprocessor};
use petal_trainer::backend::{Backend, DeviceArg, PrecisionChoice};
use petal_trainer::data::Sample;
use petal_trainer::data::augment::Augment;
use petal_trainer::data::batches::{Augmented, for_each_batch};
use petal_trainer::data::folder::list_images;
use petal_trainer::train::scaler::LossScaler;
use petal_trainer::train::step::{Alone, Optimization, Shard, train_step};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser, Debug)]
struct Args {
    /// Passed by `cargo bench`; without it (e.g. under `cargo test`) nothing runs.
    #[arg(long)]
    bench: bool,
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/photos"))]
    photos: PathBuf,
    #[arg(long, value_delimiter = ',', default_value = "resnet18,resnet101")]
    arch: Vec<Arch>,
    #[arg(long, default_value_t = 8)]
    batch: usize,
    #[arg(long, default_value_t = 64)]
    infer_batch: usize,
    #[arg(long, default_value_t = 224)]
    size: usize,
    /// Timed steps after the warm-up.
    #[arg(long, default_value_t = 4)]
    steps: usize,
    /// Untimed steps after the first one.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceArg,
    #[arg(long, value_enum, value_delimiter = ',', default_value = "f32")]
    precision: Vec<PrecisionChoice>,
    /// Only the data loader, the training step, inference, or one-photo latency.
    #[arg(long)]
    only: Option<String>,
    /// Loader rounds of one batch each.
    #[arg(long, default_value_t = 5)]
    loader_rounds: usize,
    /// One JSON object per line instead of sentences.
    #[arg(long)]
    json: bool,
}

/// One measurement.
#[derive(serde::Serialize)]
struct Figure {
    tool: &'static str,
    what: String,
    arch: String,
    precision: String,
    batch: usize,
    images_per_s: f64,
    /// Seconds of the first step (compiling and tuning kernels on a GPU).
    first_step_s: Option<f64>,
    /// Bytes the device's allocator held at the end (its peak: pools are not returned).
    device_bytes: Option<u64>,
    device: String,
    /// burn's backend: flex, wgpu or cuda.
    backend: &'static str,
}

impl Figure {
    /// petal's figure for `steps` timed steps of `batch` images on `backend` that took
    /// `elapsed` seconds, after a first step of `first` seconds.
    #[allow(clippy::too_many_arguments)]
    fn steps(
        what: &str,
        backend: &Backend,
        arch: Arch,
        precision: Precision,
        batch: usize,
        steps: usize,
        first: f64,
        elapsed: f64,
    ) -> Self {
        Figure {
            tool: "petal",
            what: what.into(),
            arch: arch.to_string(),
            precision: precision.to_string(),
            batch,
            images_per_s: (steps * batch) as f64 / elapsed,
            first_step_s: Some(first),
            device_bytes: backend.device.memory_pool_usage().map(|u| u.bytes_reserved),
            device: backend.name.clone(),
            backend: backend.kind,
        }
    }

    fn print(&self, json: bool) {
        if json {
            println!(
                "{}",
                serde_json::to_string(self).expect("a figure serialises")
            );
            return;
        }
        let mut line = format!(
            "{} {} {} batch {}: {:.1} img/s",
            self.what, self.arch, self.precision, self.batch, self.images_per_s
        );
        if let Some(s) = self.first_step_s {
            line += &format!(", first step {s:.2} s");
        }
        if let Some(b) = self.device_bytes {
            line += &format!(", device memory {:.2} GiB", b as f64 / (1u64 << 30) as f64);
        }
        println!("{line} on {}", self.device);
    }
}

fn loader(args: &Args) {
    let files = match list_images(&args.photos) {
        Ok(f) if !f.is_empty() => f,
        _ => {
            eprintln!(
                "loader: no photos in {} (--photos DIR)",
                args.photos.display()
            );
            return;
        }
    };
    let pre = Preprocessor::new(256, 224).expect("valid sizes");
    let augment = Augment::recipe(224);
    let samples: Vec<Sample> = (0..32)
        .map(|i| Sample {
            path: files[i % files.len()].clone(),
            label: 0,
        })
        .collect();
    // Where one core's time goes, per image: reading + decoding, then the augmentation
    // (rotation, random resized crop, flip, normalisation).
    let bytes: Vec<Vec<u8>> = files
        .iter()
        .take(32)
        .map(|f| std::fs::read(f).expect("a listed photo reads"))
        .collect();
    let start = Instant::now();
    let images: Vec<_> = bytes
        .iter()
        .map(|b| pre.decode(b).expect("a fixture photo decodes"))
        .collect();
    let decode_s = start.elapsed().as_secs_f64() / images.len() as f64;
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
    let start = Instant::now();
    for img in &images {
        std::hint::black_box(augment.apply(img, &pre, &mut rng));
    }
    let augment_s = start.elapsed().as_secs_f64() / images.len() as f64;
    for (what, seconds) in [
        ("loader decode, 1 core", decode_s),
        ("loader augment, 1 core", augment_s),
    ] {
        Figure {
            tool: "petal",
            what: what.into(),
            arch: "-".into(),
            precision: "-".into(),
            batch: 1,
            images_per_s: 1.0 / seconds,
            first_step_s: None,
            device_bytes: None,
            device: format!("{:.2} ms per image", seconds * 1e3),
            backend: "cpu",
        }
        .print(args.json);
    }
    for (name, aug) in [
        ("loader train (augmented)", true),
        ("loader eval (resize+crop)", false),
    ] {
        // As training reads them: `rounds` batches streamed by the producer thread.
        let run = |rounds: usize| {
            let batches = vec![samples.clone(); rounds];
            let augmented = |step: usize| {
                aug.then_some(Augmented {
                    augment: &augment,
                    seed: step as u64,
                })
            };
            for_each_batch(batches, 0, &pre, augmented, |_, batch| {
                assert!(batch.failed.is_empty());
                std::hint::black_box(batch);
                Ok(true)
            })
            .expect("the generated photos load");
        };
        run(1);
        let start = Instant::now();
        run(args.loader_rounds);
        let rate = (args.loader_rounds * samples.len()) as f64 / start.elapsed().as_secs_f64();
        Figure {
            tool: "petal",
            what: name.to_string(),
            arch: "-".into(),
            precision: "-".into(),
            batch: samples.len(),
            images_per_s: rate,
            first_step_s: None,
            device_bytes: None,
            device: format!(
                "{} threads, {} photos",
                rayon::current_num_threads(),
                files.len()
            ),
            backend: "cpu",
        }
        .print(args.json);
    }
}

fn random_batch(n: usize, size: usize, device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
    let x = Tensor::<4>::random(
        [n, 3, size, size],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        device,
    );
    let labels: Vec<i64> = (0..n as i64).map(|i| i % 5).collect();
    let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [n]), device);
    (x, y)
}

/// Runs `one` once (timed alone), `warmup` times, then `steps` times with one sync at the end.
fn time_steps(device: &Device, warmup: usize, steps: usize, mut one: impl FnMut()) -> (f64, f64) {
    let first = Instant::now();
    one();
    device.sync().expect("the device finishes its work");
    let first = first.elapsed().as_secs_f64();
    for _ in 0..warmup {
        one();
    }
    device.sync().expect("the device finishes its work");
    let start = Instant::now();
    for _ in 0..steps {
        one();
    }
    device.sync().expect("the device finishes its work");
    (first, start.elapsed().as_secs_f64())
}

/// Training steps of the loop's own `train_step` (forward, loss, backward, f16 unscaling,
/// Adam) on one fixed batch, set up as the recipe's fine-tuning stage.
fn train_steps(args: &Args, backend: &Backend, arch: Arch, precision: Precision) -> Figure {
    let device = backend.device.clone().autodiff();
    device.seed(0);
    let model = NetworkConfig::new(arch, 5)
        .init(&device)
        .with_precision(precision);
    let mut parked = Some(petal_trainer::train::stage_for_bench(model));
    let mut optimization = Optimization {
        optimizer: AdamConfig::new().with_epsilon(1e-8).init(),
        scaler: (precision == Precision::F16).then(LossScaler::default),
    };
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let (x, y) = random_batch(args.batch, args.size, &device);
    let (first, elapsed) = time_steps(&device, args.warmup, args.steps, || {
        let model = parked
            .take()
            .expect("the model is put back after each step");
        let shard = Shard {
            images: x.clone(),
            labels: y.clone(),
            share: 1.0,
        };
        let (model, _loss) = train_step(model, shard, 1e-3, &loss_fn, &mut optimization, &Alone);
        parked = Some(model);
    });
    Figure::steps(
        "train", backend, arch, precision, args.batch, args.steps, first, elapsed,
    )
}

/// Eval-mode forward passes of `batch` images, logits read back after each: `what` is
/// "infer" (batch `--infer-batch`) or "latency" (batch 1).
fn infer(
    args: &Args,
    backend: &Backend,
    arch: Arch,
    precision: Precision,
    (what, batch): (&str, usize),
) -> Figure {
    let device = backend.device.clone();
    device.seed(0);
    let model = NetworkConfig::new(arch, 5)
        .init(&device)
        .with_precision(precision);
    let (x, _) = random_batch(batch, args.size, &device);
    let (first, elapsed) = time_steps(&device, args.warmup, args.steps, || {
        // `score` reads the logits of every batch back; so does this.
        let _ = model.forward(x.clone()).into_data();
    });
    Figure::steps(
        what, backend, arch, precision, batch, args.steps, first, elapsed,
    )
}

fn main() {
    let args = Args::parse();
    if !args.bench {
        return;
    }
    let only = args.only.as_deref();
    if only.is_none() || only == Some("loader") {
        loader(&args);
    }
    if only == Some("loader") {
        return;
    }
    let backend = match args.device.resolve() {
        Ok(backend) => backend,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    for &arch in &args.arch {
        for &p in &args.precision {
            let precision = match backend.precision(p) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("{arch} {p:?}: {e}");
                    continue;
                }
            };
            if only.is_none() || only == Some("train") {
                train_steps(&args, &backend, arch, precision).print(args.json);
            }
            if only.is_none() || only == Some("infer") {
                infer(
                    &args,
                    &backend,
                    arch,
                    precision,
                    ("infer", args.infer_batch),
                )
                .print(args.json);
            }
            if only == Some("latency") {
                infer(&args, &backend, arch, precision, ("latency", 1)).print(args.json);
            }
        }
    }
}
