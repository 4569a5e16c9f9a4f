//! Shared by the preprocessing test binaries.

use std::path::{Path, PathBuf};

/// `../shared/fixtures` beside the checkout (override with `PETAL_FIXTURES`).
pub fn fixtures() -> PathBuf {
    std::env::var_os("PETAL_FIXTURES").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"),
        PathBuf::from,
    )
}
