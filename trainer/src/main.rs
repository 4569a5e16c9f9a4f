//! `petal`: fine-tune torchvision ImageNet classifiers on photo folders and classify photos.

use clap::Parser;
use petal_trainer::cli::{self, Cli};
use petal_trainer::exit;
use petal_trainer::train::Interrupted;
use std::process::ExitCode;

fn main() -> ExitCode {
    // clap's own exit status for a usage error is 2, which here means "some inputs skipped":
    // a mistyped flag is an error like any other, so it exits 1.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return ExitCode::from(if err.use_stderr() {
                exit::ERROR
            } else {
                exit::OK
            });
        }
    };
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    // A GPU runtime that cannot start (CUDA without a driver) panics on its device thread, and
    // that thread's channel logs the panic as a warning, one line listing every library name
    // it looked for: the device check turns the same panic into one error line instead.
    let filter = format!("{level},cubecl_common::device::handle::channel=error");
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(filter))
        .format_timestamp(None)
        .init();
    let compute = petal_trainer::backend::Compute {
        device: cli.device,
        precision: cli.precision,
    };
    match cli::run(cli.command, compute) {
        Ok(finished) => ExitCode::from(finished.code()),
        // Not a failure: the message says where the run stopped and how to continue it.
        Err(err) if err.is::<Interrupted>() => {
            eprintln!("{err}");
            ExitCode::from(exit::INTERRUPTED)
        }
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(exit::ERROR)
        }
    }
}
