//! The library behind the `petal` command line: photo folders, augmentation, the staged
//! training loop, inference on bundles, and one module per subcommand. The command line itself
//! is [`cli::Cli`] (tests parse the README's commands with it); the binary (`src/main.rs`)
//! only parses arguments and reports errors; benchmarks use the modules directly.

pub mod backend;
pub mod cli;
pub mod commands;
pub mod data;
pub mod exit;
pub mod inference;
pub mod metrics;
pub mod npy;
pub mod plot;
pub mod train;
