//! Petal's cross-crate integration tests: one binary, one module per area.

mod augment;
mod cli;
#[cfg(feature = "cuda")]
mod cuda;
mod download;
mod eval;
mod explain;
mod hostile;
mod import_errors;
mod parallel;
mod parity;
mod reference;
mod robust;
mod serve;
mod shell;
mod train;
mod train_parity;
mod util;
#[cfg(feature = "wgpu")]
mod wgpu;
