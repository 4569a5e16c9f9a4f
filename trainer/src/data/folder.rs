//! The ImageFolder layout (`DIR/<class>/<image>`), as torchvision reads it: classes are the
//! sorted sub-folder names, images are found recursively inside each.

use anyhow::{Context, Result, bail};
pub use petal_shared::files::{IMAGE_EXTENSIONS, is_image};
use std::path::{Path, PathBuf};

/// Every image file under `dir`, recursively, sorted by path. Hidden entries are skipped.
///
/// Symbolic links to folders are followed (a photo library often links albums in), but a link
/// back to one of its own ancestors would repeat the same files forever: such a loop is skipped
/// with a warning naming it, and the rest of the folder is listed.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        bail!("{} does not exist or is not a folder", dir.display());
    }
    let mut out = Vec::new();
    let walk = walkdir::WalkDir::new(dir)
        .follow_links(true)
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
    for entry in walk {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) if e.loop_ancestor().is_some() => {
                let at = e
                    .path()
                    .map_or_else(String::new, |p| p.display().to_string());
                log::warn!("skipped {at}: a symbolic link back to one of its own parent folders");
                continue;
            }
            Err(e) => {
                let at = e.path().unwrap_or(dir).display().to_string();
                return Err(e).with_context(|| format!("cannot list {at}"));
            }
        };
        if entry.file_type().is_file() && is_image(entry.path()) {
            out.push(entry.into_path());
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
        Ok(Self { classes, samples })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"x").unwrap();
    }

    /// A folder that links back to its own ancestor is listed once, not forever; a linked
    /// folder elsewhere is followed; hidden entries and non-images are left out; the order is
    /// the path order.
    #[cfg(unix)]
    #[test]
    fn listing_survives_a_symlink_loop_and_follows_other_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("photos");
        touch(&root.join("b.jpg"));
        touch(&root.join("a/z.PNG"));
        touch(&root.join("a/notes.txt"));
        touch(&root.join(".hidden/x.jpg"));
        touch(&dir.path().join("elsewhere/e.jpg"));
        std::os::unix::fs::symlink(&root, root.join("a/loop")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), root.join("linked")).unwrap();
        let files = list_images(&root).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|p| petal_shared::files::relative(p, &root))
            .collect();
        assert_eq!(names, ["a/z.PNG", "b.jpg", "linked/e.jpg"]);
    }

    #[test]
    fn a_missing_folder_is_an_error_naming_it() {
        let err = list_images(Path::new("/no/such/petal/folder")).unwrap_err();
        assert!(err.to_string().contains("/no/such/petal/folder"), "{err}");
    }
}
