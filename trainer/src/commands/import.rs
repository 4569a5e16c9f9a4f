//! `petal import`: torchvision `state_dict` → Petal bundle.

use crate::backend::DeviceArg;
use crate::exit::Finished;
use anyhow::{Context, Result, bail};
use petal_shared::import::{Head, load_torchvision};
use petal_shared::{Arch, Bundle, BundleMeta, Precision};
use std::path::{Path, PathBuf};

/// Turn torchvision weights (.pth or .safetensors; ResNet, ConvNeXt-T, EfficientNet-B0) into a
/// bundle.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// torchvision state_dict (e.g. resnet101-63fe2227.pth).
    weights: PathBuf,
    /// Architecture the weights belong to.
    #[arg(long, default_value = "resnet101")]
    arch: Arch,
    /// Class names, one per line, in output order.
    #[arg(long)]
    labels: PathBuf,
    /// Ignore the file's classification head and start a fresh one for the labels (to
    /// fine-tune on new classes).
    #[arg(long)]
    new_head: bool,
    /// Shorter side after resizing [default: torchvision's for the arch's IMAGENET1K_V1
    /// weights: 256 for a ResNet or EfficientNet-B0, 236 for ConvNeXt-T; use 232 for ResNet V2
    /// weights].
    #[arg(long)]
    resize: Option<usize>,
    /// Network input size (center crop).
    #[arg(long, default_value_t = petal_shared::imagenet::CROP_SIZE)]
    image_size: usize,
    /// Store weights in half precision (half the size; for the web page).
    #[arg(long)]
    f16: bool,
    /// Output bundle folder.
    #[arg(short, long)]
    output: PathBuf,
}

/// Class names from a text file: one per line, blank lines ignored, no duplicates.
pub fn read_labels(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read labels file {}", path.display()))?;
    let labels: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if labels.is_empty() {
        bail!("labels file {} has no class names", path.display());
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = labels.iter().find(|l| !seen.insert(l.as_str())) {
        bail!(
            "labels file {}: class '{dup}' appears twice",
            path.display()
        );
    }
    Ok(labels)
}

pub fn run(args: Args) -> Result<Finished> {
    let labels = read_labels(&args.labels)?;
    let device = DeviceArg::Cpu.resolve()?.device;
    let head = if args.new_head {
        Head::Replace
    } else {
        Head::Keep
    };
    let (model, report) = load_torchvision(&args.weights, args.arch, labels.len(), head, &device)?;
    log::info!(
        "imported {} tensors from {} (ignored: {})",
        report.applied,
        args.weights.display(),
        report.ignored.len()
    );
    let resize = args.resize.unwrap_or(args.arch.imagenet_resize());
    let mut meta = BundleMeta::new(args.arch, labels, args.image_size, resize);
    meta.precision = if args.f16 {
        Precision::F16
    } else {
        Precision::F32
    };
    meta.source = format!(
        "import {}",
        args.weights
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
    );
    let bundle = Bundle::new(meta, model)?;
    bundle.meta.preprocessor().validate()?;
    bundle
        .save(&args.output)
        .with_context(|| format!("cannot write bundle {}", args.output.display()))?;
    println!(
        "wrote {} bundle with {} classes to {}",
        args.arch,
        bundle.meta.classes.len(),
        args.output.display()
    );
    Ok(Finished::Complete)
}
