//! A seeded, stratified train/val/test split, written into the run folder for audit.

use crate::data::{ImageFolder, Sample};
use anyhow::{Context, Result};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use std::path::Path;

#[derive(Debug, Clone, Default)]
pub struct Split {
    pub train: Vec<Sample>,
    pub val: Vec<Sample>,
    pub test: Vec<Sample>,
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
                if n >= 3 {
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

    /// Writes `{"classes": [...], "train": [...], "val": [...], "test": [...]}` with paths
    /// relative to the data folder.
    pub fn write(&self, path: &Path, data: &ImageFolder) -> Result<()> {
        let rel = |v: &[Sample]| -> Vec<String> {
            v.iter()
                .map(|s| {
                    s.path
                        .strip_prefix(&data.root)
                        .unwrap_or(&s.path)
                        .display()
                        .to_string()
                })
                .collect()
        };
        let json = serde_json::json!({
            "classes": data.classes,
            "train": rel(&self.train),
            "val": rel(&self.val),
            "test": rel(&self.test),
        });
        petal_shared::bundle::write_atomic(path, serde_json::to_string_pretty(&json)?.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))
    }
}
