//! `petal demo`: the whole job offline on a generated dataset — train, score, check.

use crate::backend::DeviceArg;
use crate::commands::score;
use crate::data::synth;
use crate::train::{self, Recipe, RunSpec};
use anyhow::{Context, Result};
use petal_shared::Arch;
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

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

pub fn run(args: Args) -> Result<ExitCode> {
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
        return Ok(ExitCode::SUCCESS);
    }
    // From scratch (no ImageNet weights offline): every layer trains with Adam, no polish.
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
    say(
        &args,
        format!(
            "training resnet18 from scratch at {0}x{0} on the CPU for {1} epochs",
            args.image_size, args.epochs
        ),
    );
    let spec = RunSpec {
        data: data_dir,
        pretrained: None,
    };
    let run_dir = args.output.join("run");
    // A demo is re-runnable: it starts over in its own folder.
    if run_dir.exists() {
        std::fs::remove_dir_all(&run_dir)
            .with_context(|| format!("cannot clear {}", run_dir.display()))?;
    }
    let summary = train::start(&spec, &recipe, &run_dir, &DeviceArg::Cpu.resolve()?.device)?;

    let submission = args.output.join("submission.csv");
    let options = score::Options {
        batch_size: args.batch_size,
        ..score::Options::default()
    };
    let report = score::score(
        &summary.bundle,
        &test_dir,
        &submission,
        &options,
        DeviceArg::Cpu.resolve()?.device,
    )?;

    // The generator knows the answers: check the submission against them.
    let answers_path = args.output.join("test_labels.csv");
    let answers: HashMap<String, String> = csv::Reader::from_path(&answers_path)
        .with_context(|| format!("cannot read {}", answers_path.display()))?
        .records()
        .filter_map(|r| r.ok())
        .map(|r| (r[0].to_string(), r[1].to_string()))
        .collect();
    let mut reader = csv::Reader::from_path(&submission)?;
    let (mut right, mut total) = (0, 0);
    for row in reader.records() {
        let row = row?;
        total += 1;
        right += usize::from(answers.get(&row[0]).is_some_and(|a| *a == row[1]));
    }
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
            report.rows,
            found.bundle.display()
        );
    }
    Ok(ExitCode::SUCCESS)
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
