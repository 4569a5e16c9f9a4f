//! `petal eval`: a bundle on a labelled folder — accuracy, per-class precision / recall / F1,
//! the confusion matrix (printed, CSV, PNG) and every misclassified file with its top 3.

use crate::backend::Compute;
use crate::data::ImageFolder;
use crate::exit::Finished;
use crate::inference::{self, FileLogits};
use crate::metrics::{ClassScores, ConfusionMatrix};
use anyhow::{Context, Result, bail};
use petal_shared::classify::{Prediction, top_k};
use petal_shared::files::relative;
use petal_shared::runtime::Classifier;
use serde::Serialize;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// How many ranked classes each misclassified file lists.
const TOP: usize = 3;

/// Evaluate a bundle on a labelled folder (one sub-folder per class, every image evaluated).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Bundle folder (as written by `petal import`, `petal export` or `petal train`).
    #[arg(short, long)]
    pub model: PathBuf,
    /// Labelled folder: `DIR/<class>/<images>`; its class names must be the bundle's.
    #[arg(long)]
    pub data: PathBuf,
    /// Print one JSON object instead of the text report.
    #[arg(long)]
    pub json: bool,
    /// Also write `confusion_matrix.csv`, `confusion_matrix.png` and `eval.json` into this
    /// folder (created if needed). Without it nothing is written to disk.
    #[arg(short, long, alias = "out")]
    pub output: Option<PathBuf>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Classify JPEGs cut off before their end (the missing part reads as grey) instead of
    /// refusing them with "image file is truncated"; each such file gets a warning.
    #[arg(long)]
    pub allow_truncated: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Misclassified {
    /// Path relative to the data folder.
    pub file: String,
    #[serde(rename = "true")]
    pub truth: String,
    /// Most probable classes first; the first is the (wrong) prediction.
    pub top: Vec<Prediction>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Failed {
    pub file: String,
    pub error: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PerClass {
    pub class: String,
    #[serde(flatten)]
    pub scores: ClassScores,
}

/// What `eval` found; serialised as-is for `--json` and `eval.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub model: String,
    pub data: String,
    /// Correct / evaluated images.
    pub accuracy: f64,
    /// Images evaluated (in the confusion matrix); unreadable ones are in `failed` instead.
    pub images: u64,
    pub correct: u64,
    pub failed: Vec<Failed>,
    pub classes: Vec<String>,
    pub per_class: Vec<PerClass>,
    pub macro_avg: ClassScores,
    pub weighted_avg: ClassScores,
    /// Rows are true classes, columns predictions, both in `classes` order.
    pub confusion: Vec<Vec<u64>>,
    pub misclassified: Vec<Misclassified>,
    #[serde(skip)]
    pub matrix: ConfusionMatrix,
}

/// Fails, naming both lists, unless the folder holds exactly the bundle's classes (in any
/// order: the folder's are sorted names, a bundle imported from a labels file need not be).
fn check_classes(bundle: &[String], folder: &[String], data: &Path) -> Result<()> {
    let b: BTreeSet<&String> = bundle.iter().collect();
    let f: BTreeSet<&String> = folder.iter().collect();
    if b == f && bundle.len() == folder.len() {
        return Ok(());
    }
    let mut msg = format!(
        "the bundle's {} classes do not match the {} class folders of {}\n  bundle: {}\n  folder: {}",
        bundle.len(),
        folder.len(),
        data.display(),
        bundle.join(", "),
        folder.join(", ")
    );
    let only = |a: &BTreeSet<&String>, b: &BTreeSet<&String>| {
        a.difference(b)
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (in_bundle, in_folder) = (only(&b, &f), only(&f, &b));
    if !in_bundle.is_empty() {
        let _ = write!(msg, "\n  only in the bundle: {in_bundle}");
    }
    if !in_folder.is_empty() {
        let _ = write!(msg, "\n  only in the folder: {in_folder}");
    }
    bail!(msg)
}

/// Runs the evaluation: checks classes before any image is read, then classifies every image.
pub fn evaluate(args: &Args, compute: Compute) -> Result<Report> {
    // The folder first: listing is cheap and its errors (missing, empty class) are the
    // commonest mistake; loading a ResNet-101 takes seconds.
    let listed = ImageFolder::open(&args.data)?;
    let (backend, precision) = compute.resolve()?;
    let mut classifier = inference::load(&args.model, &backend.device, precision, false)?;
    classifier.preprocessor.allow_truncated = args.allow_truncated;
    let classes = classifier.classes().to_vec();
    check_classes(&classes, &listed.classes, &args.data)?;
    // Labels index the bundle's class order, which is what the network's outputs follow.
    let folder = ImageFolder::with_classes(&args.data, classes.clone())?;
    log::info!(
        "evaluating {} images of {} classes in {}",
        folder.samples.len(),
        classes.len(),
        args.data.display()
    );
    let outcomes = classify_with_progress(&classifier, &folder, args.batch_size)?;
    let tally = tally(&folder, outcomes, &classes, &args.data)?;
    Ok(report(args, classes, tally))
}

/// Every image's logits (or why it could not be read), with a progress bar.
fn classify_with_progress(
    classifier: &Classifier,
    folder: &ImageFolder,
    batch_size: usize,
) -> Result<Vec<FileLogits>> {
    let files: Vec<PathBuf> = folder.samples.iter().map(|s| s.path.clone()).collect();
    let bar = indicatif::ProgressBar::new(files.len() as u64);
    let outcomes =
        inference::classify_files(classifier, &files, batch_size, |n| bar.inc(n as u64))?;
    bar.finish_and_clear();
    Ok(outcomes)
}

/// What the images add up to, before any score is computed.
struct Tally {
    matrix: ConfusionMatrix,
    failed: Vec<Failed>,
    misclassified: Vec<Misclassified>,
}

/// Counts each readable image in the confusion matrix and keeps the wrong ones with their top
/// classes; an error if no image at all could be read.
fn tally(
    folder: &ImageFolder,
    outcomes: Vec<FileLogits>,
    classes: &[String],
    root: &Path,
) -> Result<Tally> {
    let mut t = Tally {
        matrix: ConfusionMatrix::new(classes.len()),
        failed: Vec::new(),
        misclassified: Vec::new(),
    };
    for (sample, outcome) in folder.samples.iter().zip(outcomes) {
        let file = relative(&sample.path, root);
        let logits = match outcome {
            Ok(logits) => logits,
            Err(error) => {
                t.failed.push(Failed { file, error });
                continue;
            }
        };
        let top = top_k(&logits, classes, TOP);
        let Some(predicted) = top.first().map(|p| p.index) else {
            bail!("the model returned no outputs for {file}");
        };
        t.matrix.add(sample.label, predicted);
        if predicted != sample.label {
            t.misclassified.push(Misclassified {
                file,
                truth: classes[sample.label].clone(),
                top,
            });
        }
    }
    if t.matrix.total() == 0 {
        let first = t
            .failed
            .first()
            .map(|f| format!(" (first: {}: {})", f.file, f.error))
            .unwrap_or_default();
        bail!(
            "none of the {} images under {} could be read{first}",
            t.failed.len(),
            root.display()
        );
    }
    Ok(t)
}

/// The scores the tally gives.
fn report(args: &Args, classes: Vec<String>, t: Tally) -> Report {
    let Tally {
        matrix,
        failed,
        misclassified,
    } = t;
    Report {
        model: args.model.display().to_string(),
        data: args.data.display().to_string(),
        accuracy: matrix.accuracy(),
        images: matrix.total(),
        correct: matrix.correct(),
        failed,
        per_class: classes
            .iter()
            .zip(matrix.per_class())
            .map(|(class, scores)| PerClass {
                class: class.clone(),
                scores,
            })
            .collect(),
        macro_avg: matrix.macro_avg(),
        weighted_avg: matrix.weighted_avg(),
        confusion: matrix.rows(),
        classes,
        misclassified,
        matrix,
    }
}

/// The human-readable report.
pub fn render_text(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "evaluated {} images of {} classes in {} ({} unreadable)",
        r.images,
        r.classes.len(),
        r.data,
        r.failed.len()
    );
    let _ = writeln!(
        s,
        "accuracy {:.2}% ({}/{})\n",
        r.accuracy * 100.0,
        r.correct,
        r.images
    );

    let name_w = r
        .classes
        .iter()
        .map(|c| c.chars().count())
        .chain([12])
        .max()
        .unwrap_or(12);
    let _ = writeln!(
        s,
        "{:<name_w$}  {:>9}  {:>6}  {:>6}  {:>7}",
        "class", "precision", "recall", "f1", "support"
    );
    let row = |s: &mut String, name: &str, sc: &ClassScores| {
        let _ = writeln!(
            s,
            "{name:<name_w$}  {:>9.3}  {:>6.3}  {:>6.3}  {:>7}",
            sc.precision, sc.recall, sc.f1, sc.support
        );
    };
    for pc in &r.per_class {
        row(&mut s, &pc.class, &pc.scores);
    }
    row(&mut s, "macro avg", &r.macro_avg);
    row(&mut s, "weighted avg", &r.weighted_avg);

    let _ = writeln!(
        s,
        "\nconfusion matrix (rows: true class, columns: predicted)"
    );
    let col_w: Vec<usize> = r
        .classes
        .iter()
        .enumerate()
        .map(|(p, c)| {
            let widest = (0..r.classes.len())
                .map(|t| r.matrix.count(t, p).to_string().len())
                .max()
                .unwrap_or(1);
            c.chars().count().max(widest)
        })
        .collect();
    let _ = write!(s, "{:<name_w$}", "");
    for (c, w) in r.classes.iter().zip(&col_w) {
        let _ = write!(s, "  {c:>w$}");
    }
    s.push('\n');
    for (name, counts) in r.classes.iter().zip(&r.confusion) {
        let _ = write!(s, "{name:<name_w$}");
        for (v, w) in counts.iter().zip(&col_w) {
            let _ = write!(s, "  {v:>w$}");
        }
        s.push('\n');
    }

    let _ = writeln!(s, "\nmisclassified: {}", r.misclassified.len());
    for m in &r.misclassified {
        let top: Vec<String> = m
            .top
            .iter()
            .map(|t| format!("{} {:.3}", t.label, t.prob))
            .collect();
        let _ = writeln!(s, "  {} (true {}): {}", m.file, m.truth, top.join(", "));
    }
    s
}

/// Writes the CSV, PNG and JSON into `dir`.
fn write_outputs(dir: &Path, r: &Report) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    r.matrix
        .write_csv(&dir.join("confusion_matrix.csv"), &r.classes)?;
    crate::plot::confusion_matrix_png(&dir.join("confusion_matrix.png"), &r.classes, &r.matrix)?;
    let mut json = serde_json::to_vec_pretty(r)?;
    json.push(b'\n');
    let path = dir.join("eval.json");
    petal_shared::fs::write_atomic(&path, &json)
        .with_context(|| format!("cannot write {}", path.display()))
}

pub fn run(args: Args, compute: Compute) -> Result<Finished> {
    let report = evaluate(&args, compute)?;
    // Unreadable images are part of the result, not a reason to stop: warn and go on.
    for f in &report.failed {
        eprintln!("warning: skipped {}: {}", f.file, f.error);
    }
    if let Some(dir) = &args.output {
        write_outputs(dir, &report)?;
        log::info!(
            "wrote confusion_matrix.csv/.png and eval.json to {}",
            dir.display()
        );
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        serde_json::to_writer(&mut out, &report)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", render_text(&report))?;
        if let Some(dir) = &args.output {
            writeln!(
                out,
                "\nwrote confusion_matrix.csv, confusion_matrix.png and eval.json to {}",
                dir.display()
            )?;
        }
    }
    Ok(Finished::skipping(report.failed.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn classes_match_in_any_order() {
        check_classes(&v(&["b", "a"]), &v(&["a", "b"]), Path::new("d")).unwrap();
    }

    #[test]
    fn class_mismatch_names_both_lists() {
        let e = check_classes(&v(&["a", "b", "c"]), &v(&["a", "b"]), Path::new("d"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("3 classes") && e.contains("2 class folders"),
            "{e}"
        );
        assert!(
            e.contains("bundle: a, b, c") && e.contains("folder: a, b"),
            "{e}"
        );
        assert!(e.contains("only in the bundle: c"), "{e}");
        let e = check_classes(&v(&["a", "x"]), &v(&["a", "y"]), Path::new("d"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("only in the bundle: x") && e.contains("only in the folder: y"),
            "{e}"
        );
    }
}
