//! The ImageFolder layout (`DIR/<class>/<image>`), as torchvision reads it: classes are the
//! sorted sub-folder names, images are found recursively inside each.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// File extensions `petal` looks at (lower case). TIFF is not decoded, but torchvision's
/// ImageFolder lists `.tif`/`.tiff`, so such files are listed too and reported as unsupported
/// by name rather than silently left out of a score or an evaluation.
pub const IMAGE_EXTENSIONS: [&str; 8] = ["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"];

pub fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Every image file under `dir`, recursively, sorted by path. Hidden entries are skipped.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries =
            std::fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))?;
        for entry in entries {
            let path = entry
                .with_context(|| format!("cannot list {}", d.display()))?
                .path();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if is_image(&path) {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// One labelled image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub path: PathBuf,
    pub label: usize,
}

/// A labelled photo folder.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    pub root: PathBuf,
    pub classes: Vec<String>,
    pub samples: Vec<Sample>,
}

impl ImageFolder {
    /// Reads `root/<class>/...`. Fails before any work starts if the folder is missing, has
    /// fewer than 2 classes, or a class folder holds no images.
    pub fn open(root: &Path) -> Result<Self> {
        if !root.is_dir() {
            bail!(
                "data folder {} does not exist or is not a folder",
                root.display()
            );
        }
        let mut classes: Vec<String> = std::fs::read_dir(root)
            .with_context(|| format!("cannot list {}", root.display()))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        classes.sort();
        Self::with_classes(root, classes)
    }

    /// Reads `root/<class>/...` for the given classes, in this order.
    pub fn with_classes(root: &Path, classes: Vec<String>) -> Result<Self> {
        if classes.len() < 2 {
            bail!(
                "{} has {} class folder(s); a classifier needs at least 2 (one sub-folder per class)",
                root.display(),
                classes.len()
            );
        }
        let mut samples = Vec::new();
        for (label, class) in classes.iter().enumerate() {
            let dir = root.join(class);
            let files = list_images(&dir)?;
            if files.is_empty() {
                bail!(
                    "class folder {} holds no images ({})",
                    dir.display(),
                    IMAGE_EXTENSIONS.join(", ")
                );
            }
            samples.extend(files.into_iter().map(|path| Sample { path, label }));
        }
        Ok(Self {
            root: root.to_path_buf(),
            classes,
            samples,
        })
    }
}
