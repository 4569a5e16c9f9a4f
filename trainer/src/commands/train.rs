//! `petal train`: fine-tune (or train from scratch) on a photo folder with the staged recipe.

use crate::backend::{Backend, Compute, Placement, PrecisionChoice};
use crate::exit::Finished;
use crate::train::recipe::DEFAULT_RECIPE;
use crate::train::{self, Recipe, RunSpec, TrainSummary};
use anyhow::{Context, Result, bail};
use petal_shared::Arch;
use std::path::PathBuf;

/// Train a classifier on DIR/<class>/<images> (or DIR/{train,val,test}/<class>/<images>).
///
/// The recipe (stages, schedule, sizes) comes from `--config` or the built-in default
/// (`--print-recipe` shows it); the flags below override it.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Photo folder: one sub-folder per class, or train/ val/ test/ holding those.
    #[arg(long, required_unless_present_any = ["resume", "print_recipe"])]
    pub data: Option<PathBuf>,
    /// Continue the interrupted run in this folder from its last checkpoint.
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["data", "config", "pretrained", "output"])]
    pub resume: Option<PathBuf>,
    /// Recipe file (TOML); default: the built-in recipe.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print the built-in recipe (a starting point for --config) and exit.
    #[arg(long)]
    pub print_recipe: bool,
    #[arg(long)]
    pub arch: Option<Arch>,
    /// torchvision ImageNet weights (.pth/.safetensors) to start from; the head is replaced.
    /// Without them every layer trains from scratch and the frozen-backbone stage is skipped.
    #[arg(long)]
    pub pretrained: Option<PathBuf>,
    /// Epochs of the main stage (fine-tuning; from scratch, the whole Adam run).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Epochs of a named stage, e.g. `--stage-epochs head=2 --stage-epochs polish=0`.
    #[arg(long, value_name = "NAME=N", value_parser = parse_stage_epochs)]
    pub stage_epochs: Vec<(String, usize)>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Starting learning rate of the first stage (Adam; the schedule follows from it).
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Network input size (crop).
    #[arg(long)]
    pub image_size: Option<usize>,
    /// Shorter side before the center crop at evaluation (256 for V1 weights, 232 for V2).
    #[arg(long)]
    pub resize: Option<usize>,
    /// Run folder (default: runs/<timestamp>).
    #[arg(short, long, alias = "out")]
    pub output: Option<PathBuf>,
    /// Train on several devices at once, data parallel, instead of --device: `cuda:0,cuda:1,…`
    /// gives each GPU an equal shard of every batch (--batch-size is the whole batch) and sums
    /// their gradients through NCCL. `cpu,cpu` runs the same path on the CPU, no faster than
    /// one: a check where there is no GPU.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "DEVICE,...",
        conflicts_with = "print_recipe"
    )]
    pub devices: Vec<String>,
}

fn parse_stage_epochs(s: &str) -> Result<(String, usize), String> {
    let (name, n) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=N, got '{s}'"))?;
    let n = n
        .parse()
        .map_err(|_| format!("'{n}' is not a number of epochs"))?;
    Ok((name.to_string(), n))
}

impl Args {
    /// The recipe file (or the default) with the flags applied.
    fn recipe(&self) -> Result<Recipe> {
        let mut r = match &self.config {
            Some(path) => Recipe::load(path)?,
            None => Recipe::default(),
        };
        if let Some(v) = self.arch {
            r.arch = v;
        }
        if let Some(v) = self.batch_size {
            r.batch_size = v;
        }
        if let Some(v) = self.seed {
            r.seed = v;
        }
        if let Some(v) = self.image_size {
            r.image_size = v;
        }
        if let Some(v) = self.resize {
            r.resize = v;
        }
        if let Some(v) = self.lr {
            r.stages[0].lr = Some(v);
        }
        if self.pretrained.is_none() {
            r = r.from_scratch();
        }
        if let Some(n) = self.epochs {
            let main = r
                .main_stage()
                .context("the recipe has no stage that trains the backbone")?;
            r.stages[main].epochs = n;
        }
        for (name, n) in &self.stage_epochs {
            match r.stages.iter_mut().find(|s| &s.name == name) {
                Some(stage) => stage.epochs = *n,
                None => bail!(
                    "the recipe has no stage '{name}' (stages: {})",
                    r.stages
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        }
        r.validate()?;
        Ok(r)
    }
}

pub fn run(args: Args, compute: Compute) -> Result<Finished> {
    if args.print_recipe {
        print!("{DEFAULT_RECIPE}");
        return Ok(Finished::Complete);
    }
    let result = match &args.resume {
        Some(run_dir) => {
            let (placement, name) = placement(&args, compute)?;
            println!("resuming {} on {name}", run_dir.display());
            train::handle_ctrl_c()?;
            train::resume(run_dir, &placement, compute.precision)
        }
        None => {
            let mut recipe = args.recipe()?;
            let spec = RunSpec {
                data: args.data.clone().context("--data is required")?,
                pretrained: args.pretrained.clone(),
            };
            // Folder mistakes first: they need no GPU to be found.
            train::check_data(&spec, &recipe)?;
            let (placement, name) = placement(&args, compute)?;
            let replicas = placement.devices.len();
            if recipe.batch_size < 2 * replicas {
                bail!(
                    "a batch of {} cannot give each of {replicas} devices two images \
                     (BatchNorm needs two to train): raise --batch-size",
                    recipe.batch_size
                );
            }
            // The command line's choice, else the recipe's; the run folder records the answer.
            let asked = match compute.precision {
                PrecisionChoice::Auto => recipe.precision,
                explicit => explicit,
            };
            let precision = asked.on(&placement.devices[0])?;
            recipe.precision = precision.into();
            train::handle_ctrl_c()?;
            let out = args.output.clone().unwrap_or_else(|| {
                let stamp = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                PathBuf::from(format!("runs/{stamp}"))
            });
            let stages: Vec<String> = recipe
                .stages
                .iter()
                .filter(|s| s.epochs > 0)
                .map(|s| format!("{} {}", s.name, s.epochs))
                .collect();
            println!(
                "training {} {} on {} in {precision}; stages: {}; run folder {}",
                recipe.arch,
                if spec.pretrained.is_some() {
                    "from pretrained weights"
                } else {
                    "from scratch"
                },
                name,
                stages.join(", "),
                out.display()
            );
            train::start(&spec, &recipe, &out, &placement)
        }
    };
    // An interrupted run ends in `Err(Interrupted)`: `main` says where it stopped.
    report(&result?);
    Ok(Finished::Complete)
}

/// The devices the run trains on: `--devices`, else `--device`; and their description.
fn placement(args: &Args, compute: Compute) -> Result<(Placement, String)> {
    if args.devices.is_empty() {
        let Backend { device, name, .. } = compute.device.resolve()?;
        return Ok((Placement::one(device), name));
    }
    Placement::resolve(&args.devices)
}

pub fn report(summary: &TrainSummary) {
    println!(
        "validation accuracy {:.1}% (best epoch {} of {}); bundle: {}",
        summary.best_val_accuracy * 100.0,
        summary.best_epoch,
        summary.epochs,
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
}
