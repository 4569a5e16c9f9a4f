//! `petal demo`: the whole job offline on a generated dataset — train, score, check.

use crate::backend::DeviceArg;
use crate::commands::score;
use crate::data::synth;
use crate::exit::Finished;
use crate::train::{self, Recipe, RunSpec};
use anyhow::{Context, Result};
use petal_shared::{Arch, Precision};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Generate a small 5-class flower-like photo set, train a ResNet-18 on the CPU, score its
/// unlabelled test folder to CSV and export a bundle.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Run folder.
    #[arg(short, long, alias = "out", default_value = "runs/demo")]
    output: PathBuf,
    /// Images per class to train and validate on.
    #[arg(long, default_value_t = 80)]
    per_class: usize,
    #[arg(long, default_value_t = 6)]
    epochs: usize,
    #[arg(long, default_value_t = 64)]
    image_size: usize,
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Only write the photos (OUTPUT/data, OUTPUT/test), e.g. to try `petal train` on them.
    #[arg(long)]
    generate_only: bool,
    /// Print one JSON object with the results instead of the text report.
    #[arg(long)]
    json: bool,
}

/// What a demo run found; `--json` prints it.
#[derive(Debug, Serialize)]
pub struct DemoReport {
    /// Best validation accuracy (a fraction) and its epoch.
    pub val_accuracy: f64,
    pub best_epoch: usize,
    /// The held-out test folder, scored through the exported bundle and checked against the
    /// generator's answers.
    pub test_correct: usize,
    pub test_total: usize,
    pub submission: PathBuf,
    pub bundle: PathBuf,
}

pub fn run(args: Args) -> Result<Finished> {
    let data_dir = args.output.join("data");
    let test_dir = args.output.join("test");
    say(
        &args,
        format!(
            "generating {} images per class into {}",
            args.per_class,
            data_dir.display()
        ),
    );
    synth::write_dataset(&data_dir, &test_dir, args.per_class, 10, args.seed)?;
    if args.generate_only {
        return Ok(Finished::Complete);
    }
    say(
        &args,
        format!(
            "training resnet18 from scratch at {0}x{0} on the CPU for {1} epochs",
            args.image_size, args.epochs
        ),
    );
    let summary = train_from_scratch(&args, data_dir)?;
    let submission = args.output.join("submission.csv");
    let options = score::Options {
        batch_size: args.batch_size,
        ..score::Options::default()
    };
    let device = DeviceArg::Cpu.resolve()?.device;
    let scored = score::score(
        &summary.bundle,
        &test_dir,
        &submission,
        &options,
        device,
        Precision::F32,
    )?;
    // The generator knows the answers: check the submission against them.
    let (right, total) = check_submission(&submission, &args.output.join("test_labels.csv"))?;
    let found = DemoReport {
        val_accuracy: summary.best_val_accuracy,
        best_epoch: summary.best_epoch,
        test_correct: right,
        test_total: total,
        submission,
        bundle: summary.bundle,
    };
    if args.json {
        println!("{}", serde_json::to_string(&found)?);
    } else {
        println!(
            "validation accuracy {:.1}% (best epoch {}); held-out test folder: {right}/{total} correct ({:.1}%)",
            found.val_accuracy * 100.0,
            found.best_epoch,
            100.0 * right as f64 / total.max(1) as f64
        );
        println!(
            "submission: {} ({} rows); bundle: {}",
            found.submission.display(),
            scored.rows,
            found.bundle.display()
        );
    }
    Ok(Finished::Complete)
}

/// The demo's recipe: from scratch (no ImageNet weights offline), so every layer trains with
/// Adam for `--epochs` and there is no head or polish stage.
fn recipe(args: &Args) -> Recipe {
    let mut recipe = Recipe {
        arch: Arch::ResNet18,
        batch_size: args.batch_size,
        seed: args.seed,
        image_size: args.image_size,
        resize: args.image_size * 8 / 7,
        ..Recipe::default()
    }
    .from_scratch();
    for stage in &mut recipe.stages {
        stage.epochs = if stage.name == "finetune" {
            args.epochs
        } else {
            0
        };
    }
    recipe
}

/// Trains on the generated photos in OUTPUT/run, which is cleared first: a demo re-runs.
fn train_from_scratch(args: &Args, data: PathBuf) -> Result<train::TrainSummary> {
    let spec = RunSpec {
        data,
        pretrained: None,
    };
    let run_dir = args.output.join("run");
    if run_dir.exists() {
        std::fs::remove_dir_all(&run_dir)
            .with_context(|| format!("cannot clear {}", run_dir.display()))?;
    }
    train::start(
        &spec,
        &recipe(args),
        &run_dir,
        &train::Placement::one(DeviceArg::Cpu.resolve()?.device),
    )
}

/// How many rows of the submission name the generator's answer: (right, total).
fn check_submission(submission: &Path, answers: &Path) -> Result<(usize, usize)> {
    let answers: HashMap<String, String> = csv::Reader::from_path(answers)
        .with_context(|| format!("cannot read {}", answers.display()))?
        .records()
        .filter_map(|r| r.ok())
        .map(|r| (r[0].to_string(), r[1].to_string()))
        .collect();
    let mut reader = csv::Reader::from_path(submission)
        .with_context(|| format!("cannot read {}", submission.display()))?;
    let (mut right, mut total) = (0, 0);
    for row in reader.records() {
        let row = row?;
        total += 1;
        right += usize::from(answers.get(&row[0]).is_some_and(|a| *a == row[1]));
    }
    Ok((right, total))
}

/// A progress line: on stdout in the text report, on stderr with `--json` (whose stdout is
/// the one JSON object).
fn say(args: &Args, line: String) {
    if args.json {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}
