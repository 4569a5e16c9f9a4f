//! `petal explain`: where in each photo the evidence for its class is (class activation maps,
//! or Grad-CAM).

use crate::backend::Compute;
use crate::exit::Finished;
use crate::inference;
use anyhow::{Context, Result, bail};
use petal_shared::cam::{self, ClassMap, CropGeometry};
use petal_shared::classify::softmax;
use petal_shared::fs::write_atomic;
use petal_shared::runtime::Classifier;
use petal_shared::{BundleMeta, Precision};
use serde::Serialize;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Write each photo with a heat map of the evidence for its top class (or --class) laid over
/// the region the network saw: DIR/NAME.cam.png (DIR/NAME.grad-cam.png with --method grad-cam).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Bundle folder (as written by `petal import`, `petal export` or `petal train`).
    #[arg(short, long)]
    model: PathBuf,
    /// Images to explain.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Folder for the overlays (created if needed).
    #[arg(short, long, alias = "out")]
    output: PathBuf,
    /// Explain this class instead of each photo's top class.
    #[arg(long)]
    class: Option<String>,
    /// How the map is made: `cam` evaluates the head at each position of the last stage (its
    /// mean is the class's logit); `grad-cam` weights the last stage's channels by the mean
    /// gradient of the class's logit and keeps the positive part.
    #[arg(long, value_enum, default_value_t = Method::Cam)]
    method: Method,
    /// Opacity of the heat map over the photo, 0 to 1.
    #[arg(long, default_value_t = 0.5)]
    opacity: f32,
    /// Print a JSON array (one object per image, with the map on the network's grid) instead
    /// of text.
    #[arg(long)]
    json: bool,
}

/// Which map `petal explain` draws.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Class activation map (see `petal_shared::cam`).
    Cam,
    /// Grad-CAM (see `petal_shared::model::Maps`).
    GradCam,
}

impl Method {
    /// The overlay's file suffix.
    fn suffix(self) -> &'static str {
        match self {
            Method::Cam => ".cam.png",
            Method::GradCam => ".grad-cam.png",
        }
    }
}

#[derive(Serialize)]
struct Record {
    file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    explained: Option<Explained>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// What the overlay shows, for scripts and the page's parity test.
#[derive(Serialize)]
struct Explained {
    /// Index and name of the explained class, its probability and logit.
    class: usize,
    label: String,
    prob: f32,
    logit: f32,
    /// How `map` was made.
    method: Method,
    /// The class's evidence on the last stage's grid: with `cam` its mean is `logit`; with
    /// `grad-cam` it is non-negative.
    map: ClassMap,
    /// The crop the network saw, in photo pixels: `[left, top, right, bottom]`.
    crop: [f64; 4],
}

pub fn run(args: Args, compute: Compute) -> Result<Finished> {
    if !(0.0..=1.0).contains(&args.opacity) {
        bail!("--opacity must be between 0 and 1, not {}", args.opacity);
    }
    let outputs = output_names(&args.images, &args.output, args.method.suffix())?;
    // Maps are computed in f32 whatever `--precision` says: they are compared across devices.
    let device = compute.device.resolve()?.device;
    let classifier = inference::load(&args.model, &device, Precision::F32, false)?;
    let forced = args
        .class
        .as_deref()
        .map(|name| class_index(&classifier.meta, name))
        .transpose()?;
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("cannot create {}", args.output.display()))?;

    let mut records = Vec::with_capacity(args.images.len());
    let mut failed = 0;
    for (path, out) in args.images.iter().zip(&outputs) {
        let drawing = Drawing {
            method: args.method,
            forced,
            opacity: args.opacity,
        };
        let record = match explain_one(&classifier, path, drawing) {
            Ok((explained, png)) => {
                write_atomic(out, &png)
                    .with_context(|| format!("cannot write {}", out.display()))?;
                Record {
                    file: path.display().to_string(),
                    output: Some(out.display().to_string()),
                    explained: Some(explained),
                    error: None,
                }
            }
            Err(e) => {
                eprintln!("error: {}: {e:#}", path.display());
                failed += 1;
                Record {
                    file: path.display().to_string(),
                    output: None,
                    explained: None,
                    error: Some(format!("{e:#}")),
                }
            }
        };
        records.push(record);
    }

    let stdout = std::io::stdout();
    let mut stdout = stdout.lock();
    if args.json {
        serde_json::to_writer_pretty(&mut stdout, &records)?;
        writeln!(stdout)?;
    } else {
        for r in &records {
            if let (Some(e), Some(out)) = (&r.explained, &r.output) {
                let pct = e.prob * 100.0;
                writeln!(stdout, "{}: {} ({pct:.1}%) → {out}", r.file, e.label)?;
            }
        }
    }
    Ok(Finished::skipping(failed))
}

/// What to draw for each photo.
#[derive(Clone, Copy)]
struct Drawing {
    method: Method,
    /// The class to explain (`--class`); each photo's top class without it.
    forced: Option<usize>,
    opacity: f32,
}

/// Explains one photo: the record and the overlay's PNG bytes.
fn explain_one(
    classifier: &Classifier,
    path: &Path,
    drawing: Drawing,
) -> Result<(Explained, Vec<u8>)> {
    let pre = &classifier.preprocessor;
    let bytes = std::fs::read(path).context("cannot read")?;
    let photo = pre.decode(&bytes)?;
    let images = classifier.images(&[pre.tensor_from_image(&photo)])?;
    let evidence = classifier.runtime.evidence(images)?;
    let logits = evidence.logits.row(0);
    let probs = softmax(logits);
    let class = drawing
        .forced
        .unwrap_or_else(|| evidence.logits.predicted(0));
    let maps = match drawing.method {
        Method::Cam => &evidence.cam,
        Method::GradCam => &evidence.grad_cam,
    };
    let map = maps.map(0, class)?;
    let geometry = CropGeometry::new(photo.width(), photo.height(), pre);
    let projected = geometry.project(&map, photo.width(), photo.height());
    let layer = cam::heat_layer(&cam::normalise(&projected), photo.width(), photo.height());
    let png = cam::png_bytes(&cam::overlay(&photo, &layer, drawing.opacity))?;
    Ok((
        Explained {
            class,
            label: classifier.classes()[class].clone(),
            prob: probs[class],
            logit: logits[class],
            method: drawing.method,
            map,
            crop: geometry.crop_in_original(),
        },
        png,
    ))
}

fn class_index(meta: &BundleMeta, name: &str) -> Result<usize> {
    meta.classes
        .iter()
        .position(|c| c == name)
        .with_context(|| {
            format!(
                "no class '{name}' in this bundle (classes: {})",
                meta.classes.join(", ")
            )
        })
}

/// `DIR/NAME{suffix}` for each image (NAME: its file name without the extension). Two images
/// that would write the same file are an error before any work is done.
fn output_names(images: &[PathBuf], dir: &Path, suffix: &str) -> Result<Vec<PathBuf>> {
    let mut seen: HashMap<PathBuf, &Path> = HashMap::new();
    images
        .iter()
        .map(|image| {
            let stem = image
                .file_stem()
                .with_context(|| format!("{} is not a file name", image.display()))?;
            let mut name = stem.to_os_string();
            name.push(suffix);
            let out = dir.join(name);
            if let Some(other) = seen.insert(out.clone(), image) {
                bail!(
                    "{} and {} would both write {}; explain them in separate runs",
                    other.display(),
                    image.display(),
                    out.display()
                );
            }
            Ok(out)
        })
        .collect()
}
