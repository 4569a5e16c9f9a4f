//! The data pipeline: photo folders (the class-per-sub-folder layout), the train/val/test
//! split, augmentation and decoded batches. The training loop in `train/` only trains.

pub mod augment;
pub mod batches;
pub mod folder;
pub mod split;
pub mod synth;

pub use folder::{ImageFolder, Sample};
