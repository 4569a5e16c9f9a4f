//! Training throughput: the data loader (decode + augment on all cores) and the training step
//! (forward, backward, Adam) in images per second.
//!
//! `cargo bench -p petal-trainer --bench training -- --bench` runs the defaults:
//!   loader: batches of 32 at 224 from the fixture photos beside the checkout (`--photos DIR`)
//!   step:   ResNet-18 and ResNet-101, batch 8, at 224 (`--arch`, `--batch`, `--size`) on
//!           `--device cpu` (or wgpu in a build with the feature)
//! Figures only: nothing here passes or fails on timing. Compare the step with
//! `benches/torch_train_bench.py` on the same machine.

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use clap::Parser;
use petal_shared::{Arch, Preprocessor, ResNetConfig};
use petal_trainer::backend::DeviceArg;
use petal_trainer::data::Sample;
use petal_trainer::data::augment::Augment;
use petal_trainer::data::batches::{Augmented, load_batch};
use petal_trainer::data::folder::list_images;
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
    #[arg(long, default_value_t = 224)]
    size: usize,
    #[arg(long, default_value_t = 4)]
    steps: usize,
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceArg,
    /// Only the data loader, or only the training step.
    #[arg(long)]
    only: Option<String>,
}

fn loader(args: &Args) {
    let files = match list_images(&args.photos) {
        Ok(f) if !f.is_empty() => f,
        _ => {
            println!(
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
    for (name, aug) in [("train (augmented)", true), ("eval (resize+crop)", false)] {
        let run = |seed| {
            let a = aug.then_some(Augmented {
                augment: &augment,
                seed,
            });
            load_batch(&samples, &pre, a)
        };
        run(0);
        let start = Instant::now();
        let rounds = 5;
        for r in 0..rounds {
            assert!(run(r + 1).failed.is_empty());
        }
        let rate = (rounds as usize * samples.len()) as f64 / start.elapsed().as_secs_f64();
        println!(
            "loader {name}: {rate:.1} img/s on {} threads ({} photos, batch 32 at 224)",
            rayon::current_num_threads(),
            files.len()
        );
    }
}

fn step(args: &Args, arch: Arch) {
    let backend = args.device.resolve().expect("the device exists");
    let device = backend.device.autodiff();
    device.seed(0);
    let model = ResNetConfig::new(arch, 5).init(&device);
    let mut model = petal_trainer::train::stage_for_bench(model);
    let mut optim = AdamConfig::new().with_epsilon(1e-8).init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let x = Tensor::<4>::random(
        [args.batch, 3, args.size, args.size],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &device,
    );
    let labels: Vec<i64> = (0..args.batch as i64).map(|i| i % 5).collect();
    let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [args.batch]), &device);
    let mut one = |model: petal_shared::ResNet| {
        let loss = loss_fn.forward(model.forward(x.clone()), y.clone());
        // Reading the loss waits for the device, as the training loop does every step.
        let _ = loss.clone().into_scalar::<f32>();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        optim.step(1e-3, model, grads)
    };
    model = one(model);
    let start = Instant::now();
    for _ in 0..args.steps {
        model = one(model);
    }
    let rate = (args.steps * args.batch) as f64 / start.elapsed().as_secs_f64();
    println!(
        "train step {arch} on {}: {rate:.2} img/s (batch {} at {}, {} steps)",
        backend.name, args.batch, args.size, args.steps
    );
}

fn main() {
    let args = Args::parse();
    if !args.bench {
        return;
    }
    if args.only.as_deref() != Some("train") {
        loader(&args);
    }
    if args.only.as_deref() != Some("loader") {
        for &arch in &args.arch {
            step(&args, arch);
        }
    }
}
