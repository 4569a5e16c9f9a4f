//! `.npy` output for tensors a user wants to inspect with NumPy.

use anyhow::{Context, Result};
use npyz::WriterBuilder;
use std::path::Path;

/// Writes a C-order float32 array atomically.
pub fn write_f32(path: &Path, data: &[f32], shape: &[u64]) -> Result<()> {
    let mut buf = Vec::new();
    let mut writer = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(&mut buf)
        .begin_nd()?;
    writer.extend(data.iter().copied())?;
    writer.finish()?;
    petal_shared::fs::write_atomic(path, &buf)
        .with_context(|| format!("cannot write {}", path.display()))
}
