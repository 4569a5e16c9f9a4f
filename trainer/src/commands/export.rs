//! `petal export`: a training run's checkpoint → a bundle (f32, or f16 for the web).

use crate::exit::Finished;
use crate::train::{self, Snapshot};
use anyhow::Result;
use burn::tensor::Device;
use petal_shared::Bundle;
use petal_shared::Precision;
use std::path::PathBuf;

/// Export a run's network as a bundle (weights + petal.json).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Run folder written by `petal train` (complete or interrupted).
    run: PathBuf,
    /// Snapshot network: the best epoch by validation accuracy, or the last checkpoint.
    #[arg(long, value_enum, default_value_t = Snapshot::Best)]
    checkpoint: Snapshot,
    /// Store the weights in half precision (half the download for the web page).
    #[arg(long)]
    f16: bool,
    /// Bundle folder to write.
    #[arg(short, long, alias = "out")]
    output: PathBuf,
}

pub fn run(args: Args) -> Result<Finished> {
    let (mut meta, model) = train::exported(&args.run, args.checkpoint, &Device::flex())?;
    if args.f16 {
        meta.precision = Precision::F16;
    }
    let source = meta.source.clone();
    Bundle::new(meta, model)?.save(&args.output)?;
    println!("{}: bundle from {source}", args.output.display());
    Ok(Finished::Complete)
}
