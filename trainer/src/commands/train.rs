//! `petal train`: fine-tune (or train from scratch) on a photo folder.

use crate::backend::DeviceArg;
use crate::data::ImageFolder;
use crate::train::{TrainConfig, train};
use anyhow::Result;
use petal_shared::Arch;
use std::path::PathBuf;
use std::process::ExitCode;

/// Train a classifier on DIR/<class>/<images>.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Photo folder: one sub-folder per class.
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value = "resnet101")]
    pub arch: Arch,
    /// torchvision ImageNet weights (.pth/.safetensors) to start from; the head is replaced.
    #[arg(long)]
    pub pretrained: Option<PathBuf>,
    #[arg(long, default_value_t = 30)]
    pub epochs: usize,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Adam learning rate (halved every 2 epochs).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Network input size (crop).
    #[arg(long, default_value_t = 224)]
    pub image_size: usize,
    /// Shorter side before the center crop at evaluation.
    #[arg(long, default_value_t = 256)]
    pub resize: usize,
    /// Run folder (default: runs/<timestamp>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t)]
    pub device: DeviceArg,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let data = ImageFolder::open(&args.data)?;
    let out = args.out.clone().unwrap_or_else(|| {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        PathBuf::from(format!("runs/{stamp}"))
    });
    println!(
        "training {} on {} images in {} classes ({}), device {:?}",
        args.arch,
        data.samples.len(),
        data.classes.len(),
        data.classes.join(", "),
        args.device
    );
    let cfg = TrainConfig {
        arch: args.arch,
        pretrained: args.pretrained,
        epochs: args.epochs,
        batch_size: args.batch_size.max(2),
        lr: args.lr,
        lr_step_epochs: 2,
        seed: args.seed,
        image_size: args.image_size,
        resize: args.resize,
    };
    let summary = train(&cfg, &data, &out, &args.device.device())?;
    println!(
        "best validation accuracy {:.1}% (epoch {}); bundle: {}",
        summary.best_val_accuracy * 100.0,
        summary.best_epoch,
        summary.bundle.display()
    );
    if let Some(acc) = summary.test_accuracy {
        println!("test split accuracy {:.1}%", acc * 100.0);
    }
    if summary.skipped_files > 0 {
        println!(
            "skipped {} unreadable file(s) (see warnings)",
            summary.skipped_files
        );
    }
    Ok(ExitCode::SUCCESS)
}
