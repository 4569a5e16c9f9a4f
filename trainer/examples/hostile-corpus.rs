//! Writes the hostile-input corpus of the CLI's tests into a folder, for the page's tests
//! (`scripts/test-web` drops it on the page and scores it with `petal score`):
//!
//! ```sh
//! cargo run --example hostile-corpus -- DIR PHOTO.jpg EXPECT.json
//! ```
//!
//! EXPECT.json maps each file name to the reason it must be refused with, or `null` where it
//! must be classified. Pillow (`PETAL_PYTHON`, default `/usr/bin/python3`) writes the few files
//! the `image` crate cannot.

#[path = "../../tests/integration/hostile.rs"]
mod hostile;

use anyhow::{Context, Result, bail};
use std::path::PathBuf;

fn main() -> Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [dir, photo, expect] = args.as_slice() else {
        bail!("usage: hostile-corpus DIR PHOTO.jpg EXPECT.json");
    };
    let python = std::env::var("PETAL_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into());
    let corpus = hostile::write_corpus(dir, photo, &python);
    let json = serde_json::to_string_pretty(&corpus)?;
    std::fs::write(expect, json).with_context(|| format!("cannot write {}", expect.display()))?;
    println!("{} files in {}", corpus.len(), dir.display());
    Ok(())
}
