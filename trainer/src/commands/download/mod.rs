//! `petal download`: torchvision's ImageNet weights and TensorFlow's `flower_photos`, verified
//! by SHA-256, resumable after an interruption and put in place atomically.

mod fetch;
mod unpack;

use crate::exit::Finished;
use anyhow::{Context, Result, bail};
use fetch::{Expected, fetch, name_hash_prefix, parse_sha256};
use petal_shared::Arch;
use petal_shared::imagenet::{CROP_SIZE, RESIZE_V2};
use petal_shared::model::family::{self, Generation};
use std::path::{Path, PathBuf};

/// Replaces the scheme and host of the official URLs (paths stay the same); for mirrors and
/// tests. `--base-url` wins over it.
const BASE_URL_ENV: &str = "PETAL_DOWNLOAD_BASE_URL";

/// torchvision's weight files live here (each family lists its own:
/// `petal_shared::model::family::published`).
const TORCHVISION_HOST: &str = "https://download.pytorch.org";

/// TensorFlow's flower photos: 5 classes, 3,670 JPEGs, 218 MiB. Google publishes no checksum
/// for it and none could be computed here (no internet), so only `--sha256` can pin it; the
/// SHA-256 we compute is printed so that users can pin it for later runs.
const FLOWERS_HOST: &str = "https://storage.googleapis.com";
const FLOWERS_PATH: &str = "/download.tensorflow.org/example_images/flower_photos.tgz";
const FLOWERS_DIR: &str = "flower_photos";

/// Download pretrained weights or the flower photos (verified, resumable).
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand, Debug)]
enum What {
    /// torchvision ImageNet weights of any network Petal builds, checked against the SHA-256
    /// prefix in the file name (e.g. resnet101-63fe2227.pth).
    Weights(WeightsArgs),
    /// TensorFlow's flower_photos (5 classes, 3,670 photos, 218 MiB), unpacked into
    /// DIR/flower_photos/<class>/.
    Flowers(FlowersArgs),
    /// Any file (e.g. a mirror of torchvision's weights), with the same resume and checks.
    Url(UrlArgs),
}

/// torchvision's weights generations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Version {
    /// IMAGENET1K_V1: the original recipe; evaluate with resize 256 (ConvNeXt-T: 236).
    V1,
    /// IMAGENET1K_V2: the newer recipe, 4-5 points better top-1; evaluate with resize 232.
    /// ResNet-50/101/152 only.
    V2,
}

impl Version {
    fn generation(self) -> Generation {
        match self {
            Version::V1 => Generation::V1,
            Version::V2 => Generation::V2,
        }
    }

    /// The resize torchvision evaluates `arch`'s weights of this generation with.
    fn resize(self, arch: Arch) -> usize {
        match self {
            Version::V1 => arch.imagenet_resize(),
            Version::V2 => RESIZE_V2,
        }
    }
}

#[derive(clap::Args, Debug)]
struct Common {
    /// Folder to download into (created if missing).
    #[arg(short, long, default_value = ".")]
    output: PathBuf,
    /// Expected SHA-256 of the file (64 hex digits), checked on top of any built-in check.
    #[arg(long, value_parser = parse_sha256)]
    sha256: Option<String>,
    /// Fetch from this server instead of the official one (same paths), e.g. a mirror;
    /// default from PETAL_DOWNLOAD_BASE_URL.
    #[arg(long)]
    base_url: Option<String>,
}

#[derive(clap::Args, Debug)]
struct WeightsArgs {
    /// Architecture: resnet18, resnet34, resnet50, resnet101, resnet152, convnext_tiny or
    /// efficientnet_b0.
    #[arg(long, default_value = "resnet101")]
    arch: Arch,
    /// V1 by default: for a ResNet it matches the resize (256) every other command defaults
    /// to.
    #[arg(long, value_enum, default_value_t = Version::V1)]
    weights: Version,
    #[command(flatten)]
    common: Common,
}

#[derive(clap::Args, Debug)]
struct FlowersArgs {
    #[command(flatten)]
    common: Common,
}

#[derive(clap::Args, Debug)]
struct UrlArgs {
    /// http(s) URL; the file keeps its last path segment as name.
    url: String,
    /// Check the SHA-256 prefix in the file name, as torch.hub's `check_hash=True` does
    /// (NAME-<hex>.EXT).
    #[arg(long)]
    check_hash: bool,
    /// Folder to download into (created if missing).
    #[arg(short, long, default_value = ".")]
    output: PathBuf,
    /// Expected SHA-256 of the file (64 hex digits).
    #[arg(long, value_parser = parse_sha256)]
    sha256: Option<String>,
}

pub fn run(args: Args) -> Result<Finished> {
    match args.what {
        What::Weights(args) => weights(args),
        What::Flowers(args) => flowers(args),
        What::Url(args) => url(args),
    }
}

fn weights(args: WeightsArgs) -> Result<Finished> {
    let Some(name) = family::published()
        .find(|p| p.arch == args.arch && p.generation == args.weights.generation())
        .map(|p| p.file)
    else {
        bail!(
            "torchvision publishes no IMAGENET1K_{:?} weights for {}; use --weights v1",
            args.weights,
            args.arch
        );
    };
    let url = format!(
        "{}/models/{name}",
        base_url(&args.common, TORCHVISION_HOST)?
    );
    let prefix = name_hash_prefix(name).context("weights table: file name without a hash")?;
    let expected = Expected {
        prefix: Some((prefix.into(), format!("the prefix in the name {name}"))),
        full: args.common.sha256.clone(),
    };
    let dest = output_dir(&args.common.output)?.join(name);
    let got = fetch(&url, &dest, &expected)?;
    report(&dest, &got);
    let resize = args.weights.resize(args.arch);
    println!(
        "torchvision IMAGENET1K_{:?} weights: preprocess with resize {resize}, crop {CROP_SIZE}, e.g.\n  \
         petal import {} --arch {} --resize {resize} --labels LABELS -o BUNDLE\n  \
         petal train --pretrained {} --arch {} --resize {resize} --data PHOTOS",
        args.weights,
        dest.display(),
        args.arch,
        dest.display(),
        args.arch,
    );
    Ok(Finished::Complete)
}

fn flowers(args: FlowersArgs) -> Result<Finished> {
    let out = output_dir(&args.common.output)?;
    let target = out.join(FLOWERS_DIR);
    if target.exists() {
        // The folder only appears by an atomic rename after a complete unpack.
        println!("{} is already there", target.display());
        return Ok(Finished::Complete);
    }
    let url = format!("{}{FLOWERS_PATH}", base_url(&args.common, FLOWERS_HOST)?);
    let expected = Expected {
        prefix: None,
        full: args.common.sha256.clone(),
    };
    let archive = out.join("flower_photos.tgz");
    let got = fetch(&url, &archive, &expected)?;
    report(&archive, &got);
    if let Err(err) = unpack::unpack_tgz(&archive, &out, FLOWERS_DIR) {
        // Without a published checksum, unpacking is what proves the archive; a bad one must
        // not be mistaken for a finished download next time.
        std::fs::remove_file(&archive).ok();
        return Err(err.context(format!(
            "deleted {}; run the command again to download it afresh",
            archive.display()
        )));
    }
    let (classes, files) = count_classes(&target)?;
    println!(
        "unpacked {classes} classes, {files} files into {}\n  petal train --data {} ...",
        target.display(),
        target.display()
    );
    Ok(Finished::Complete)
}

fn url(args: UrlArgs) -> Result<Finished> {
    if !(args.url.starts_with("http://") || args.url.starts_with("https://")) {
        bail!("{}: only http:// and https:// URLs are supported", args.url);
    }
    let name = file_name_of(&args.url)?;
    let prefix = if args.check_hash {
        let prefix = name_hash_prefix(name).with_context(|| {
            format!("--check-hash: the file name {name} carries no hash (NAME-<hex>.EXT)")
        })?;
        Some((prefix.to_owned(), format!("the prefix in the name {name}")))
    } else {
        None
    };
    let expected = Expected {
        prefix,
        full: args.sha256,
    };
    let dest = output_dir(&args.output)?.join(name);
    let got = fetch(&args.url, &dest, &expected)?;
    report(&dest, &got);
    Ok(Finished::Complete)
}

/// `--base-url`, else `PETAL_DOWNLOAD_BASE_URL`, else the official host; without a trailing
/// slash.
fn base_url(common: &Common, official: &str) -> Result<String> {
    let base = common
        .base_url
        .clone()
        .or_else(|| std::env::var(BASE_URL_ENV).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| official.to_owned());
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        bail!("base URL {base}: must start with http:// or https://");
    }
    Ok(base.trim_end_matches('/').to_owned())
}

/// The last path segment of a URL, refused when it could not be a plain file name.
fn file_name_of(url: &str) -> Result<&str> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let name = path.rsplit('/').next().unwrap_or("");
    if name.is_empty() || name == "." || name == ".." || name.contains('\\') {
        bail!("{url}: no file name at the end of the URL");
    }
    Ok(name)
}

fn output_dir(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir.to_path_buf())
}

fn report(dest: &Path, got: &fetch::Fetched) {
    let verb = if got.cached {
        "already there, verified"
    } else {
        "downloaded"
    };
    println!(
        "{} ({verb}, {:.1} MB)\n  sha256 {}",
        dest.display(),
        got.bytes as f64 / 1e6,
        got.sha256
    );
}

/// Class folders and the files in them.
fn count_classes(dir: &Path) -> Result<(usize, usize)> {
    let (mut classes, mut files) = (0, 0);
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        if entry.path().is_dir() {
            classes += 1;
            files += std::fs::read_dir(entry.path())
                .with_context(|| format!("cannot list {}", entry.path().display()))?
                .count();
        }
    }
    Ok((classes, files))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_weights_file_carries_an_8_digit_hash() {
        for p in family::published() {
            assert_eq!(name_hash_prefix(p.file).map(str::len), Some(8), "{p:?}");
        }
    }

    #[test]
    fn url_file_names() {
        assert_eq!(
            file_name_of("https://h/models/resnet18-f37072fd.pth?x=1").ok(),
            Some("resnet18-f37072fd.pth")
        );
        assert!(file_name_of("https://h/models/").is_err());
        assert!(file_name_of("https://h/..").is_err());
    }
}
