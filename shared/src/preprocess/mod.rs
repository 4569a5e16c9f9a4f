//! Image preprocessing: file bytes → the exact tensor the network sees.
//!
//! The eval pipeline is torchvision's `Resize(R)` → `CenterCrop(C)` → `ToTensor` →
//! `Normalize(mean, std)` on `PIL.Image.convert("RGB")`, reproduced bit for bit on the same
//! decoded pixels (see `resample` for why the resize is our own). Decoding uses the `image`
//! crate on every target, so the same bytes give the same tensor natively and in the browser.

mod decode;
mod resample;

pub use decode::{DEFAULT_MAX_PIXELS, decode_rgb8, jpeg_is_truncated};
pub use resample::{Window, resize_bilinear, resize_bilinear_window};

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
    #[error("{0} images are not supported (expected JPEG, PNG, WebP, GIF or BMP)")]
    UnsupportedFormat(String),
    /// Pillow's words for a file that ends before the image does.
    #[error("image file is truncated")]
    Truncated,
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
    /// Side of the square center crop (torchvision `CenterCrop(image_size)`): the network's
    /// input size. Called `image_size` everywhere — recipe, bundle, CLI and here.
    pub image_size: usize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Decoded images with more pixels are rejected before their pixels are allocated.
    pub max_pixels: u64,
    /// Accept a JPEG cut off before its end (its missing part decodes as grey) instead of
    /// refusing it with [`PreprocessError::Truncated`].
    pub allow_truncated: bool,
}

impl Default for Preprocessor {
    /// ImageNet V1 evaluation: resize 256, crop 224.
    fn default() -> Self {
        Self {
            resize: imagenet::RESIZE_V1,
            image_size: imagenet::CROP_SIZE,
            mean: imagenet::MEAN,
            std: imagenet::STD,
            max_pixels: DEFAULT_MAX_PIXELS,
            allow_truncated: false,
        }
    }
}

impl Preprocessor {
    /// ImageNet normalisation with the given resize and crop sizes.
    pub fn new(resize: usize, image_size: usize) -> Result<Self, PreprocessError> {
        let p = Self {
            resize,
            image_size,
            ..Self::default()
        };
        p.validate()?;
        Ok(p)
    }

    /// Checks the sizes: the crop must fit inside the resized image.
    pub fn validate(&self) -> Result<(), PreprocessError> {
        if self.image_size == 0 || self.resize < self.image_size {
            return Err(PreprocessError::InvalidSettings(format!(
                "image size {} must be between 1 and the resize size {}",
                self.image_size, self.resize
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
        decode_rgb8(bytes, self.max_pixels, self.allow_truncated)
    }

    /// `Resize(resize)` then `CenterCrop(crop)`: the `crop × crop` 8-bit image the network sees.
    ///
    /// Only the crop window of the resized image is computed (the same bytes as resizing it
    /// all, see [`resize_bilinear_window`]): memory stays at a few crops whatever the aspect
    /// ratio, where the full resize of a 1×65535 image would take 12.9 GB.
    pub fn resize_and_crop(&self, img: &RgbImage) -> RgbImage {
        let (w, h) = resized_dims(img.width(), img.height(), self.resize);
        let crop = self.image_size as u32;
        let window = Window {
            x: crop_offset(w, u64::from(crop)),
            y: crop_offset(h, u64::from(crop)),
            width: crop,
            height: crop,
        };
        resize_bilinear_window(img, w, h, window)
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
    ///
    /// Peak memory, whatever the image's size or aspect ratio: the decoded image (the decoder's
    /// own buffer, up to 8 bytes a pixel for 16-bit RGBA, plus its 8-bit RGB copy, 3 bytes a
    /// pixel; at most [`Preprocessor::max_pixels`] pixels) plus the horizontal-pass buffer of
    /// [`resize_bilinear_window`] (no larger than the RGB image, and `(crop + 3) × crop × 3`
    /// bytes when the vertical pass enlarges) plus the `crop × crop` RGB crop and its `f32`
    /// tensor (15 bytes a crop pixel).
    pub fn tensor_from_bytes(&self, bytes: &[u8]) -> Result<Vec<f32>, PreprocessError> {
        Ok(self.tensor_from_image(&self.decode(bytes)?))
    }
}

/// torchvision's `Resize(size)` output for a `width × height` image: the shorter side becomes
/// `size`, the longer `int(size * long / short)` (float division, truncated).
///
/// In `u64`: the long side of an extreme aspect ratio outgrows `u32` (and `usize` on wasm32),
/// e.g. 256 × 89 million for a 1-pixel-high strip at the pixel limit.
pub fn resized_dims(width: u32, height: u32, size: usize) -> (u64, u64) {
    let (short, long) = if width <= height {
        (width, height)
    } else {
        (height, width)
    };
    let size = size as u64;
    // Python multiplies exact integers, then divides in double precision.
    let new_long = ((size * u64::from(long)) as f64 / f64::from(short)) as u64;
    if width <= height {
        (size, new_long)
    } else {
        (new_long, size)
    }
}

/// torchvision's center-crop offset: `int(round((dim - crop) / 2.0))`, rounding half to even.
pub fn crop_offset(dim: u64, crop: u64) -> u64 {
    ((dim - crop) as f64 / 2.0).round_ties_even() as u64
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
