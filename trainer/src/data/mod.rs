//! Photo folders: the class-per-sub-folder layout, splits, augmentation and batches.

pub mod augment;
pub mod folder;
pub mod synth;

pub use folder::{ImageFolder, Sample};
