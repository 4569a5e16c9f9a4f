//! `petal preprocess`: the exact input tensor the network sees, as `.npy`.

use crate::exit::Finished;
use anyhow::{Context, Result};
use petal_shared::Preprocessor;
use std::path::PathBuf;

/// Write the normalised input tensor ([3, image-size, image-size] float32) of an image as .npy.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Image file (JPEG, PNG, WebP, GIF, BMP).
    image: PathBuf,
    /// Shorter side after resizing (256 for torchvision V1 weights, 232 for V2).
    #[arg(long, default_value_t = petal_shared::imagenet::RESIZE_V1)]
    resize: usize,
    /// Network input size: the side of the center crop.
    #[arg(long, alias = "crop", default_value_t = petal_shared::imagenet::CROP_SIZE)]
    image_size: usize,
    /// Output .npy file.
    #[arg(short, long)]
    output: PathBuf,
}

pub fn run(args: Args) -> Result<Finished> {
    let pre = Preprocessor::new(args.resize, args.image_size)?;
    let bytes = std::fs::read(&args.image)
        .with_context(|| format!("cannot read {}", args.image.display()))?;
    let tensor = pre
        .tensor_from_bytes(&bytes)
        .with_context(|| format!("{}", args.image.display()))?;
    let side = args.image_size as u64;
    crate::npy::write_f32(&args.output, &tensor, &[3, side, side])?;
    Ok(Finished::Complete)
}
