//! Image preprocessing: file bytes → the exact tensor the network sees.
//!
//! The eval pipeline is torchvision's `Resize(R)` → `CenterCrop(C)` → `ToTensor` →
//! `Normalize(mean, std)` on `PIL.Image.convert("RGB")`, reproduced bit for bit on the same
//! decoded pixels (see `resample` for why the resize is our own). Decoding uses the `image`
//! crate on every target, so the same bytes give the same tensor natively and in the browser.

mod decode;
mod resample;

pub use decode::{DEFAULT_MAX_PIXELS, decode_rgb8};
pub use resample::resize_bilinear;

use crate::imagenet;
use image::RgbImage;

/// What can go wrong turning bytes into a tensor. Messages name the problem; callers add the
/// file name.
#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    #[error("the file is empty (0 bytes)")]
    Empty,
    #[error("not a supported image (expected JPEG, PNG, WebP, GIF or BMP)")]
    UnknownFormat,
    #[error("image of {width}x{height} pixels exceeds the limit of {limit} pixels")]
    TooLarge { width: u32, height: u32, limit: u64 },
    #[error("cannot decode {format} image: {source}")]
    Decode {
        format: &'static str,
        #[source]
        source: image::ImageError,
    },
    #[error("invalid preprocessing settings: {0}")]
    InvalidSettings(String),
}

/// torchvision's eval transform with its sizes and normalisation.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocessor {
    /// Shorter side after resizing (torchvision `Resize(resize)`).
    pub resize: usize,
    /// Side of the square center crop (torchvision `CenterCrop(crop)`).
    pub crop: usize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Decoded images with more pixels are rejected before their pixels are allocated.
    pub max_pixels: u64,
}

impl Default for Preprocessor {
    /// ImageNet V1 evaluation: resize 256, crop 224.
    fn default() -> Self {
        Self {
            resize: imagenet::RESIZE_V1,
            crop: imagenet::CROP_SIZE,
            mean: imagenet::MEAN,
            std: imagenet::STD,
            max_pixels: DEFAULT_MAX_PIXELS,
        }
    }
}

impl Preprocessor {
    /// ImageNet normalisation with the given resize and crop sizes.
    pub fn new(resize: usize, crop: usize) -> Result<Self, PreprocessError> {
        let p = Self {
            resize,
            crop,
            ..Self::default()
        };
        p.validate()?;
        Ok(p)
    }

    /// Checks the sizes: the crop must fit inside the resized image.
    pub fn validate(&self) -> Result<(), PreprocessError> {
        if self.crop == 0 || self.resize < self.crop {
            return Err(PreprocessError::InvalidSettings(format!(
                "crop {} must be between 1 and the resize size {}",
                self.crop, self.resize
            )));
        }
        if self.resize > 16384 {
            return Err(PreprocessError::InvalidSettings(format!(
                "resize {} is larger than 16384",
                self.resize
            )));
        }
        if self.std.iter().any(|&s| s <= 0.0 || !s.is_finite()) {
            return Err(PreprocessError::InvalidSettings(format!(
                "std {:?} must be positive",
                self.std
            )));
        }
        Ok(())
    }

    /// Decodes an encoded image to 8-bit RGB, within this preprocessor's pixel limit.
    pub fn decode(&self, bytes: &[u8]) -> Result<RgbImage, PreprocessError> {
        decode_rgb8(bytes, self.max_pixels)
    }

    /// `Resize(resize)` then `CenterCrop(crop)`: the `crop × crop` 8-bit image the network sees.
    pub fn resize_and_crop(&self, img: &RgbImage) -> RgbImage {
        let (w, h) = resized_dims(img.width() as usize, img.height() as usize, self.resize);
        let resized = resize_bilinear(img, w as u32, h as u32);
        center_crop(&resized, self.crop)
    }

    /// `ToTensor` + `Normalize`: HWC `u8` → CHW `f32`, computed in `f32` in torchvision's order.
    pub fn normalize(&self, img: &RgbImage) -> Vec<f32> {
        let plane = img.width() as usize * img.height() as usize;
        let mut out = vec![0f32; 3 * plane];
        let (r, rest) = out.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        let scale = |v: u8, c: usize| (f32::from(v) / 255.0 - self.mean[c]) / self.std[c];
        for (i, px) in img.as_raw().chunks_exact(3).enumerate() {
            r[i] = scale(px[0], 0);
            g[i] = scale(px[1], 1);
            b[i] = scale(px[2], 2);
        }
        out
    }

    /// The full eval pipeline on already-decoded pixels: CHW `f32` of shape `[3, crop, crop]`.
    pub fn tensor_from_image(&self, img: &RgbImage) -> Vec<f32> {
        self.normalize(&self.resize_and_crop(img))
    }

    /// The full eval pipeline on encoded bytes: CHW `f32` of shape `[3, crop, crop]`.
    pub fn tensor_from_bytes(&self, bytes: &[u8]) -> Result<Vec<f32>, PreprocessError> {
        Ok(self.tensor_from_image(&self.decode(bytes)?))
    }
}

/// torchvision's `Resize(size)` output for a `width × height` image: the shorter side becomes
/// `size`, the longer `int(size * long / short)` (float division, truncated).
pub fn resized_dims(width: usize, height: usize, size: usize) -> (usize, usize) {
    let (short, long) = if width <= height {
        (width, height)
    } else {
        (height, width)
    };
    let new_long = ((size * long) as f64 / short as f64) as usize;
    if width <= height {
        (size, new_long)
    } else {
        (new_long, size)
    }
}

/// torchvision's center-crop offset: `int(round((dim - crop) / 2.0))`, rounding half to even.
pub fn crop_offset(dim: usize, crop: usize) -> usize {
    ((dim - crop) as f64 / 2.0).round_ties_even() as usize
}

/// `CenterCrop(size)` of an image at least `size` pixels on each side.
pub fn center_crop(img: &RgbImage, size: usize) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    assert!(
        w >= size && h >= size,
        "center_crop: {w}x{h} is smaller than {size}"
    );
    let (x0, y0) = (crop_offset(w, size), crop_offset(h, size));
    let src = img.as_raw();
    let mut out = Vec::with_capacity(size * size * 3);
    for y in y0..y0 + size {
        out.extend_from_slice(&src[(y * w + x0) * 3..][..size * 3]);
    }
    RgbImage::from_raw(size as u32, size as u32, out).expect("crop buffer has size*size*3 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_keeps_aspect_with_truncation() {
        assert_eq!(resized_dims(640, 427, 256), (383, 256)); // 256*640/427 = 383.7
        assert_eq!(resized_dims(300, 452, 256), (256, 385));
        assert_eq!(resized_dims(200, 150, 232), (309, 232));
        assert_eq!(resized_dims(500, 500, 256), (256, 256));
    }

    #[test]
    fn crop_offset_rounds_half_to_even() {
        assert_eq!(crop_offset(385, 224), 80); // 80.5 → 80
        assert_eq!(crop_offset(387, 224), 82); // 81.5 → 82
        assert_eq!(crop_offset(256, 224), 16);
    }

    #[test]
    fn rejects_crop_larger_than_resize() {
        assert!(matches!(
            Preprocessor::new(200, 224),
            Err(PreprocessError::InvalidSettings(_))
        ));
    }

    #[test]
    fn normalize_is_chw_in_f32() {
        let p = Preprocessor::default();
        let img = RgbImage::from_fn(2, 1, |x, _| image::Rgb([x as u8 * 255, 0, 128]));
        let t = p.normalize(&img);
        assert_eq!(t.len(), 6);
        assert_eq!(t[0], (0.0 - 0.485f32) / 0.229);
        assert_eq!(t[1], (1.0 - 0.485f32) / 0.229);
        assert_eq!(t[4], (128.0f32 / 255.0 - 0.406) / 0.225);
    }
}
