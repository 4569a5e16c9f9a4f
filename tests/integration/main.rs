//! Petal's cross-crate integration tests: one binary, one module per area.

mod cli;
mod eval;
mod download;
mod import_errors;
mod parity;
mod reference;
mod train;
mod util;
