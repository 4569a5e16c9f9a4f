//! The `petal` command line: its arguments and the dispatch to one module per subcommand.
//!
//! It lives in the library, not in `main.rs`, so that tests can parse the README's commands
//! with the very same [`Cli`] the binary uses, and so `petal completions` can describe it.

use crate::backend::{Compute, DeviceArg, PrecisionChoice};
use crate::commands;
use crate::exit::Finished;
use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand};
use std::sync::LazyLock;

/// Fine-tune torchvision classifiers (ResNet, ConvNeXt) on your photos and classify with them.
#[derive(Parser, Debug)]
#[command(name = "petal", version = version_text(), about, long_about = None)]
pub struct Cli {
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Compute backend of `train`, `eval`, `score`, `predict` and `explain` (default: the fastest this
    /// build has). One option for every command, so scripts can set it once (or through
    /// PETAL_DEVICE); `import`, `export` and `demo` always run on the CPU.
    #[arg(long, value_enum, default_value_t, env = "PETAL_DEVICE", global = true)]
    pub device: DeviceArg,
    /// Number format of `train`, `eval`, `score` and `predict`: `f16` is mixed precision
    /// (f16 convolutions on the GPU's tensor cores, f32 weights, BatchNorm and loss); `auto`
    /// takes it where the GPU computes in f16 and f32 elsewhere. A training recipe's
    /// `precision` applies when this is `auto`.
    #[arg(
        long,
        value_enum,
        default_value_t,
        env = "PETAL_PRECISION",
        global = true
    )]
    pub precision: PrecisionChoice,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    Preprocess(commands::preprocess::Args),
    Import(commands::import::Args),
    Predict(commands::predict::Args),
    Train(commands::train::Args),
    Score(commands::score::Args),
    Demo(commands::demo::Args),
    Eval(commands::eval::Args),
    Explain(commands::explain::Args),
    Download(commands::download::Args),
    Export(commands::export::Args),
    Serve(commands::serve::Args),
    Completions(Completions),
}

/// Print a shell completion script, e.g. `petal completions bash > ~/.local/share/bash-completion/completions/petal`.
#[derive(clap::Args, Debug)]
pub struct Completions {
    /// The shell to complete in.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// The compute backends compiled into this build, in the names `--device` takes. The CPU
/// backend (flex) is always there; the GPU ones are cargo features.
pub fn backends() -> Vec<&'static str> {
    let mut names = vec!["cpu"];
    if cfg!(feature = "wgpu") {
        names.push("wgpu");
    }
    if cfg!(feature = "cuda") {
        names.push("cuda");
    }
    names
}

/// What `petal --version` prints after the name: the version, the backends of this build and
/// the bundle format it writes — the two facts that decide whether a binary fits a machine
/// and a bundle.
pub fn version_text() -> &'static str {
    static TEXT: LazyLock<String> = LazyLock::new(|| {
        format!(
            "{} (backends: {}; bundle format {})",
            env!("CARGO_PKG_VERSION"),
            backends().join(", "),
            petal_shared::bundle::FORMAT_VERSION
        )
    });
    TEXT.as_str()
}

/// Runs a parsed command on the device and in the precision the global options name.
pub fn run(command: Command, compute: Compute) -> Result<Finished> {
    match command {
        Command::Preprocess(args) => commands::preprocess::run(args),
        Command::Import(args) => commands::import::run(args),
        Command::Predict(args) => commands::predict::run(args, compute),
        Command::Train(args) => commands::train::run(args, compute),
        Command::Score(args) => commands::score::run(args, compute),
        Command::Demo(args) => commands::demo::run(args),
        Command::Eval(args) => commands::eval::run(args, compute),
        Command::Explain(args) => commands::explain::run(args, compute),
        Command::Download(args) => commands::download::run(args),
        Command::Export(args) => commands::export::run(args),
        Command::Serve(args) => commands::serve::run(args),
        Command::Completions(args) => {
            let mut out = std::io::stdout().lock();
            clap_complete::generate(args.shell, &mut Cli::command(), "petal", &mut out);
            Ok(Finished::Complete)
        }
    }
}
