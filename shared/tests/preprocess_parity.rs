//! Preprocessing parity with torchvision + Pillow, on the reference photos handed to Petal.
//!
//! References (`../shared/fixtures/preprocess/`) were made with torchvision 0.29 + Pillow 13:
//! `Image.open(p).convert("RGB")` → `CenterCrop(224)(Resize(R)(img))` → `ToTensor` →
//! `Normalize`. PNGs must match to the byte; JPEGs differ only through the JPEG decoder, which
//! the last test proves by feeding Pillow's own decoded pixels through our pipeline.

use image::RgbImage;
use petal_shared::Preprocessor;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::fixtures;

fn photos(ext: &str) -> Vec<PathBuf> {
    let dir = fixtures().join("photos");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no .{ext} photos in {}", dir.display());
    v
}

fn npy<T: npyz::Deserialize>(path: &Path) -> (Vec<u64>, Vec<T>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = npyz::NpyFile::new(&bytes[..]).unwrap();
    let shape = file.shape().to_vec();
    (shape, file.into_vec().unwrap())
}

fn reference(photo: &Path, resize: usize) -> (Vec<u8>, Vec<f32>) {
    let name = photo.file_name().unwrap().to_string_lossy();
    let dir = fixtures().join("preprocess");
    let (shape_u8, crop) = npy::<u8>(&dir.join(format!("{name}.r{resize}c224.u8.npy")));
    assert_eq!(shape_u8, [224, 224, 3]);
    let (shape_f32, tensor) = npy::<f32>(&dir.join(format!("{name}.r{resize}c224.npy")));
    assert_eq!(shape_f32, [3, 224, 224]);
    (crop, tensor)
}

fn ours(pre: &Preprocessor, img: &RgbImage) -> (Vec<u8>, Vec<f32>) {
    let crop = pre.resize_and_crop(img);
    let tensor = pre.normalize(&crop);
    (crop.into_raw(), tensor)
}

fn decode(path: &Path) -> RgbImage {
    Preprocessor::default()
        .decode(&std::fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn png_crops_and_tensors_are_bit_identical() {
    for photo in photos("png") {
        let img = decode(&photo);
        for resize in [256, 232] {
            let pre = Preprocessor::new(resize, 224).unwrap();
            let (crop, tensor) = ours(&pre, &img);
            let (ref_crop, ref_tensor) = reference(&photo, resize);
            let diff = crop.iter().zip(&ref_crop).filter(|(a, b)| a != b).count();
            assert_eq!(
                diff,
                0,
                "{} r{resize}: {diff} bytes differ",
                photo.display()
            );
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&tensor),
                bits(&ref_tensor),
                "{} r{resize}",
                photo.display()
            );
            // The one-call path gives the same tensor.
            let direct = pre
                .tensor_from_bytes(&std::fs::read(&photo).unwrap())
                .unwrap();
            assert_eq!(bits(&direct), bits(&tensor));
        }
    }
}

/// Largest and mean absolute difference between two u8 buffers.
fn u8_diff(a: &[u8], b: &[u8]) -> (u8, f64) {
    let max = a
        .iter()
        .zip(b)
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0);
    let sum: u64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    (max, sum as f64 / a.len() as f64)
}

/// The `image` crate's JPEG decoder is not libjpeg-turbo: its IDCT and chroma upsampling round
/// differently, by a few levels on some values (most on 4:2:0 files). Measured on the reference
/// photos after resize + crop: at most 4 levels, at most 0.23 on average (0.01 on 4:4:4 files).
/// We allow 6 and 0.5.
#[test]
fn jpeg_crops_differ_only_by_decoder_rounding() {
    for photo in photos("jpg") {
        let img = decode(&photo);
        for resize in [256, 232] {
            let pre = Preprocessor::new(resize, 224).unwrap();
            let (crop, tensor) = ours(&pre, &img);
            let (ref_crop, ref_tensor) = reference(&photo, resize);
            let (max, mean) = u8_diff(&crop, &ref_crop);
            let tmax = tensor
                .iter()
                .zip(&ref_tensor)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            println!(
                "{} r{resize}: max |Δ| {max}, mean |Δ| {mean:.3}, tensor max |Δ| {tmax:.4}",
                photo.display()
            );
            assert!(
                max <= 6 && mean <= 0.5,
                "{} r{resize}: max {max} mean {mean}",
                photo.display()
            );
        }
    }
}

/// Decodes `photo` with Pillow (libjpeg-turbo) into an HWC u8 `.npy`, via Debian's Python.
fn pillow_decode(photo: &Path, out: &Path) {
    let script = "import sys, numpy as np; from PIL import Image; \
                  np.save(sys.argv[2], np.asarray(Image.open(sys.argv[1]).convert('RGB')))";
    let python = std::env::var("PETAL_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into());
    let status = Command::new(&python)
        .args(["-c", script])
        .arg(photo)
        .arg(out)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {python} (install python3-pil python3-numpy): {e}"));
    assert!(status.success(), "Pillow failed on {}", photo.display());
}

/// With Pillow's decoded pixels as input, JPEGs match the references to the byte too: the only
/// difference on JPEGs is the decoder, not our resize, crop or normalisation.
#[test]
fn jpeg_with_pillow_pixels_is_bit_identical() {
    // Removed when dropped, even when an assertion below fails.
    let tmp = tempfile::tempdir().unwrap();
    for photo in photos("jpg") {
        let out = tmp.path().join("decoded.npy");
        pillow_decode(&photo, &out);
        let (shape, pixels) = npy::<u8>(&out);
        let img = RgbImage::from_raw(shape[1] as u32, shape[0] as u32, pixels).unwrap();
        for resize in [256, 232] {
            let pre = Preprocessor::new(resize, 224).unwrap();
            let (crop, tensor) = ours(&pre, &img);
            let (ref_crop, ref_tensor) = reference(&photo, resize);
            assert_eq!(
                u8_diff(&crop, &ref_crop).0,
                0,
                "{} r{resize}",
                photo.display()
            );
            assert!(
                tensor
                    .iter()
                    .zip(&ref_tensor)
                    .all(|(a, b)| a.to_bits() == b.to_bits())
            );
        }
    }
}
