//! Which images train, validate and test: the data folder's own `train/ val/ test/`
//! sub-folders when it has them, otherwise a seeded, stratified split that is written into the
//! run folder for audit (and checked again when the run resumes).

use crate::data::{ImageFolder, Sample};
use anyhow::{Context, Result, bail};
use petal_shared::files::relative;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Split {
    pub train: Vec<Sample>,
    pub val: Vec<Sample>,
    pub test: Vec<Sample>,
}

/// How a folder without `train/` sub-folders is split: the fractions held out for validation
/// and testing, and the seed of the per-class shuffle (a recipe's `val_fraction`,
/// `test_fraction` and `seed`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Holdout {
    pub val: f64,
    pub test: f64,
    pub seed: u64,
}

/// The class names and the split of the data folder `dir`.
pub fn open(dir: &Path, holdout: Holdout) -> Result<(Vec<String>, Split)> {
    let train_dir = dir.join("train");
    if train_dir.is_dir() {
        // Explicit sub-folders: the class list comes from train/, and val/ and test/ (each
        // optional) must use the same class names.
        let train = ImageFolder::open(&train_dir)?;
        let part = |name: &str| -> Result<Vec<Sample>> {
            let sub = dir.join(name);
            if !sub.is_dir() {
                return Ok(Vec::new());
            }
            Ok(ImageFolder::with_classes(&sub, train.classes.clone())?.samples)
        };
        let split = Split {
            val: part("val")?,
            test: part("test")?,
            train: train.samples,
        };
        return Ok((train.classes, split));
    }
    let data = ImageFolder::open(dir)?;
    let split = Split::stratified(&data, holdout.val, holdout.test, holdout.seed);
    if split.train.is_empty() {
        bail!("{} has too few images to train on", dir.display());
    }
    Ok((data.classes, split))
}

impl Split {
    /// Per class: shuffle with `seed`, then `val` and `test` fractions (at least one image each
    /// when the class has three or more), the rest for training.
    pub fn stratified(data: &ImageFolder, val: f64, test: f64, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut split = Split::default();
        for label in 0..data.classes.len() {
            let mut class: Vec<Sample> = data
                .samples
                .iter()
                .filter(|s| s.label == label)
                .cloned()
                .collect();
            class.shuffle(&mut rng);
            let n = class.len();
            let take = |f: f64| {
                if n >= 3 && f > 0.0 {
                    ((n as f64 * f).round() as usize).max(1)
                } else {
                    0
                }
            };
            let (n_val, n_test) = (take(val), take(test));
            split.test.extend(class.drain(..n_test));
            split.val.extend(class.drain(..n_val));
            split.train.extend(class);
        }
        split
    }

    /// The record of this split, with paths relative to the data folder `root`.
    pub fn file(&self, root: &Path, classes: &[String]) -> SplitFile {
        let rel =
            |v: &[Sample]| -> Vec<String> { v.iter().map(|s| relative(&s.path, root)).collect() };
        SplitFile {
            classes: classes.to_vec(),
            train: rel(&self.train),
            val: rel(&self.val),
            test: rel(&self.test),
        }
    }

    /// Writes the split to `path`; when resuming, checks instead that the data folder still
    /// splits the same way, so a resumed run never validates on images it trained on.
    pub fn write_or_check(
        &self,
        path: &Path,
        root: &Path,
        classes: &[String],
        resuming: bool,
    ) -> Result<()> {
        let file = self.file(root, classes);
        if resuming && path.exists() {
            if SplitFile::read(path)? != file {
                bail!(
                    "the images in {} changed since the run started (see {}); start a new run",
                    root.display(),
                    path.display()
                );
            }
            return Ok(());
        }
        let json = serde_json::to_string_pretty(&file)?;
        petal_shared::fs::write_atomic(path, json.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))
    }
}

/// `split.json` in a run folder: the class names in label order and which images (relative to
/// the data folder) train, validate and test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitFile {
    pub classes: Vec<String>,
    pub train: Vec<String>,
    pub val: Vec<String>,
    pub test: Vec<String>,
}

impl SplitFile {
    pub fn read(path: &Path) -> Result<Self> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("{} is damaged", path.display()))
    }
}
