//! `petal`: fine-tune torchvision ResNets on photo folders and classify photos.

use clap::{Parser, Subcommand};
use petal_trainer::commands;
use std::process::ExitCode;

/// Fine-tune ImageNet ResNets on your photos and classify with them.
#[derive(Parser, Debug)]
#[command(name = "petal", version, about, long_about = None)]
struct Cli {
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    Preprocess(commands::preprocess::Args),
    Import(commands::import::Args),
    Predict(commands::predict::Args),
    Train(commands::train::Args),
    Score(commands::score::Args),
    Demo(commands::demo::Args),
    Eval(commands::eval::Args),
    Download(commands::download::Args),
    Export(commands::export::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp(None)
        .init();
    let result = match cli.command {
        Command::Preprocess(args) => commands::preprocess::run(args),
        Command::Import(args) => commands::import::run(args),
        Command::Predict(args) => commands::predict::run(args),
        Command::Train(args) => commands::train::run(args),
        Command::Score(args) => commands::score::run(args),
        Command::Demo(args) => commands::demo::run(args),
        Command::Eval(args) => commands::eval::run(args),
        Command::Download(args) => commands::download::run(args),
        Command::Export(args) => commands::export::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(2)
        }
    }
}
