//! Class activation maps (CAM, Zhou et al. 2016): where in a photo the evidence for a class is.
//!
//! A ResNet ends in global average pooling and one linear layer, so a class's logit is the
//! mean over the last stage's positions of `w_k · f(y, x) + b_k`. Evaluating that sum at each
//! position instead of after the mean gives the class's map on the last stage's grid (7×7 for
//! a 224 input): no gradients, no second network, and the map's mean *is* the logit. A
//! ConvNeXt normalises the pooled vector before its linear layer; with the pooled vector's
//! statistics that normalisation is affine too, so the same holds
//! ([`ConvNeXt::class_maps`](crate::model::ConvNeXt::class_maps)).
//!
//! Grad-CAM (Selvaraju et al. 2017) weighs each channel of the last stage by the mean over the
//! grid of the class logit's gradient with respect to it, sums, and keeps the positive part. It
//! needs only the head's gradient, which both families' heads give in closed form (see
//! [`Maps`](crate::model::Maps)): so it runs wherever CAM does, the page and the CPU's folded
//! network included, with no autodiff. For a ResNet it is the positive part of the class map
//! without the class's bias, over the grid's size; ConvNeXt's LayerNorm makes them differ.
//!
//! The grid covers the network's input — the center crop of the resized photo — so
//! [`CropGeometry`] maps it back through the exact `Resize`/`CenterCrop` of [`Preprocessor`]
//! ([`resized_dims`], [`crop_offset`]) onto the original photo; what lies outside the crop was
//! never seen by the network and has no value (`NaN`).
//!
//! Used by `petal explain` and by the web page (heat map over each photo) through the runtime
//! ([`Runtime::evidence`](crate::runtime::Runtime::evidence)), on the CPU's folded network and on
//! burn's ([`Network::maps`](crate::model::Network::maps)). A ResNet whose evidence is known in
//! advance checks the maps end to end (`model/resnet/class_maps_tests.rs`).

use crate::preprocess::{Preprocessor, crop_offset, resized_dims};
use image::{Rgb, RgbImage, Rgba, RgbaImage};

#[derive(Debug, thiserror::Error)]
pub enum CamError {
    #[error("class {class} is out of range: the network has {classes} classes")]
    NoSuchClass { class: usize, classes: usize },
    #[error("image {image} is out of range: the batch has {n} images")]
    NoSuchImage { image: usize, n: usize },
    #[error("cannot read the class maps back: {0}")]
    Read(String),
    #[error("cannot encode the heat map as PNG: {0}")]
    Encode(#[from] image::ImageError),
}

/// The head evaluated at every position of the last stage, for every class:
/// `[n, height, width, classes]`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassMaps {
    pub n: usize,
    pub height: usize,
    pub width: usize,
    pub classes: usize,
    pub values: Vec<f32>,
}

impl ClassMaps {
    /// # Panics
    /// If `values` is not `n · height · width · classes` long.
    pub fn new(n: usize, height: usize, width: usize, classes: usize, values: Vec<f32>) -> Self {
        assert_eq!(
            values.len(),
            n * height * width * classes,
            "class maps [{n}, {height}, {width}, {classes}]"
        );
        Self {
            n,
            height,
            width,
            classes,
            values,
        }
    }

    /// One image's map for one class.
    pub fn map(&self, image: usize, class: usize) -> Result<ClassMap, CamError> {
        if class >= self.classes {
            return Err(CamError::NoSuchClass {
                class,
                classes: self.classes,
            });
        }
        if image >= self.n {
            return Err(CamError::NoSuchImage { image, n: self.n });
        }
        let plane = self.height * self.width;
        let values = self.values[image * plane * self.classes..][..plane * self.classes]
            .chunks_exact(self.classes)
            .map(|position| position[class])
            .collect();
        Ok(ClassMap {
            height: self.height,
            width: self.width,
            values,
        })
    }
}

impl ClassMaps {
    /// Grad-CAM from the class maps of a head that is average pooling then one linear layer
    /// (a ResNet's): the logit's gradient at every position is the class's weights over the
    /// grid's size, so Grad-CAM is the positive part of the class map without the class's
    /// `bias`, over the grid's size.
    pub fn grad_cam_of_linear_head(&self, bias: &[f32]) -> ClassMaps {
        let positions = (self.height * self.width) as f32;
        let values = self
            .values
            .chunks_exact(self.classes)
            .flat_map(|row| {
                row.iter()
                    .zip(bias)
                    .map(|(&v, &b)| (v - b).max(0.0) / positions)
            })
            .collect();
        ClassMaps::new(self.n, self.height, self.width, self.classes, values)
    }
}

/// One class's evidence on the last stage's grid (`height × width`, row-major). A class
/// activation map is in logit units (its mean is the class's logit); a Grad-CAM map is
/// non-negative.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClassMap {
    pub height: usize,
    pub width: usize,
    pub values: Vec<f32>,
}

impl ClassMap {
    /// The mean over the grid: the class's logit, up to float rounding.
    pub fn mean(&self) -> f32 {
        let sum: f64 = self.values.iter().map(|&v| f64::from(v)).sum();
        (sum / self.values.len() as f64) as f32
    }

    /// Bilinear sample at grid coordinates (`0.0` is the centre of the first cell), clamped at
    /// the edges — the `align_corners=False` upsampling CAM implementations use.
    fn sample(&self, gy: f64, gx: f64) -> f32 {
        let axis = |g: f64, n: usize| -> (usize, usize, f64) {
            let g = g.clamp(0.0, (n - 1) as f64);
            let lo = g.floor() as usize;
            let hi = (lo + 1).min(n - 1);
            (lo, hi, g - lo as f64)
        };
        let (y0, y1, fy) = axis(gy, self.height);
        let (x0, x1, fx) = axis(gx, self.width);
        let at = |y: usize, x: usize| f64::from(self.values[y * self.width + x]);
        let top = at(y0, x0) * (1.0 - fx) + at(y0, x1) * fx;
        let bottom = at(y1, x0) * (1.0 - fx) + at(y1, x1) * fx;
        (top * (1.0 - fy) + bottom * fy) as f32
    }
}

/// Reads a map tensor of [`Maps`](crate::model::Maps) (`[n, h', w', classes]`) into [`ClassMaps`].
pub fn class_maps_from_data(data: burn::tensor::TensorData) -> Result<ClassMaps, CamError> {
    let [n, h, w, classes] = <[usize; 4]>::try_from(data.shape().to_vec())
        .map_err(|shape| CamError::Read(format!("expected 4 dimensions, got {shape:?}")))?;
    let values = data
        .try_into_vec::<f32>()
        .map_err(|e| CamError::Read(format!("{e:?}")))?;
    Ok(ClassMaps::new(n, h, w, classes, values))
}

/// Where the network's input came from in the original photo: torchvision's `Resize(resize)`
/// then `CenterCrop(image_size)`, with the exact sizes and offsets [`Preprocessor`] uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CropGeometry {
    /// The original photo.
    pub width: u32,
    pub height: u32,
    /// After `Resize`.
    pub resized_width: u64,
    pub resized_height: u64,
    /// Top-left corner of the crop in the resized image.
    pub crop_x: u64,
    pub crop_y: u64,
    /// Side of the square crop (the network's input size).
    pub crop: u64,
}

impl CropGeometry {
    /// The geometry `pre` applies to a `width × height` photo.
    pub fn new(width: u32, height: u32, pre: &Preprocessor) -> Self {
        let (resized_width, resized_height) = resized_dims(width, height, pre.resize);
        let crop = pre.image_size as u64;
        Self {
            width,
            height,
            resized_width,
            resized_height,
            crop_x: crop_offset(resized_width, crop),
            crop_y: crop_offset(resized_height, crop),
            crop,
        }
    }

    /// The crop as a rectangle of the original photo, `[left, top, right, bottom]` in
    /// continuous pixel coordinates (pixel `i` spans `i .. i + 1`). The resize maps resized
    /// coordinate `u` to original `u · width / resized_width`, as Pillow's filter centres do.
    pub fn crop_in_original(&self) -> [f64; 4] {
        let sx = f64::from(self.width) / self.resized_width as f64;
        let sy = f64::from(self.height) / self.resized_height as f64;
        [
            self.crop_x as f64 * sx,
            self.crop_y as f64 * sy,
            (self.crop_x + self.crop) as f64 * sx,
            (self.crop_y + self.crop) as f64 * sy,
        ]
    }

    /// `map` drawn over an `out_width × out_height` rendering of the original photo (the photo
    /// itself, or a thumbnail with its aspect ratio): each output pixel's centre is taken back
    /// through the resize and the crop onto the map's grid and sampled bilinearly. Pixels
    /// outside the crop are `NaN`. Row-major, `out_width · out_height` values.
    pub fn project(&self, map: &ClassMap, out_width: u32, out_height: u32) -> Vec<f32> {
        // Original → resized → crop → grid: each step is a scale and an offset per axis.
        let axis = |out: u32, original: u32, resized: u64, offset: u64, cells: usize| {
            let to_resized = resized as f64 / f64::from(original);
            let cell = self.crop as f64 / cells as f64;
            (0..out)
                .map(move |o| {
                    let x = (f64::from(o) + 0.5) * f64::from(original) / f64::from(out);
                    let in_crop = x * to_resized - offset as f64;
                    (0.0..self.crop as f64)
                        .contains(&in_crop)
                        .then(|| in_crop / cell - 0.5)
                })
                .collect::<Vec<_>>()
        };
        let xs = axis(
            out_width,
            self.width,
            self.resized_width,
            self.crop_x,
            map.width,
        );
        let ys = axis(
            out_height,
            self.height,
            self.resized_height,
            self.crop_y,
            map.height,
        );
        let mut out = Vec::with_capacity(xs.len() * ys.len());
        for gy in &ys {
            for gx in &xs {
                out.push(match (gy, gx) {
                    (Some(gy), Some(gx)) => map.sample(*gy, *gx),
                    _ => f32::NAN,
                });
            }
        }
        out
    }
}

/// Scales a projected map to `0..=1` over its defined values (`(v − min) / (max − min)`, the
/// usual CAM normalisation); `NaN` stays `NaN`, and a flat map is all `0`.
pub fn normalise(values: &[f32]) -> Vec<f32> {
    let defined = values.iter().copied().filter(|v| !v.is_nan());
    let (lo, hi) = defined.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let range = hi - lo;
    values
        .iter()
        .map(|&v| {
            if v.is_nan() {
                v
            } else if range > 0.0 {
                (v - lo) / range
            } else {
                0.0
            }
        })
        .collect()
}

/// The "jet" colour ramp of CAM figures: blue (0) → cyan → green → yellow → red (1).
pub fn heat_colour(t: f32) -> [u8; 3] {
    let t = t.clamp(0.0, 1.0);
    let channel = |centre: f32| (1.5 - (4.0 * t - centre).abs()).clamp(0.0, 1.0);
    let byte = |v: f32| (v * 255.0).round() as u8;
    [byte(channel(3.0)), byte(channel(2.0)), byte(channel(1.0))]
}

/// A normalised map (`0..=1`, `NaN` outside the crop) as an RGBA layer: jet colours, opaque
/// inside the crop and transparent outside, to be laid over the photo with any opacity.
pub fn heat_layer(normalised: &[f32], width: u32, height: u32) -> RgbaImage {
    assert_eq!(normalised.len(), width as usize * height as usize);
    let mut img = RgbaImage::new(width, height);
    for (px, &t) in img.pixels_mut().zip(normalised) {
        *px = if t.is_nan() {
            Rgba([0, 0, 0, 0])
        } else {
            let [r, g, b] = heat_colour(t);
            Rgba([r, g, b, 255])
        };
    }
    img
}

/// `photo` with `layer` blended over it at `opacity` (0: the photo, 1: the layer) where the
/// layer is opaque; pixels under a transparent part of the layer stay the photo's.
///
/// # Panics
/// If the two images differ in size.
pub fn overlay(photo: &RgbImage, layer: &RgbaImage, opacity: f32) -> RgbImage {
    assert_eq!(photo.dimensions(), layer.dimensions(), "overlay sizes");
    let mut out = photo.clone();
    for (p, l) in out.pixels_mut().zip(layer.pixels()) {
        let a = opacity.clamp(0.0, 1.0) * f32::from(l[3]) / 255.0;
        if a > 0.0 {
            let mix = |i: usize| (f32::from(p[i]) * (1.0 - a) + f32::from(l[i]) * a).round() as u8;
            *p = Rgb([mix(0), mix(1), mix(2)]);
        }
    }
    out
}

/// PNG bytes of an RGB or RGBA image.
pub fn png_bytes<P, C>(img: &image::ImageBuffer<P, C>) -> Result<Vec<u8>, CamError>
where
    P: image::PixelWithColorType,
    [P::Subpixel]: image::EncodableLayout,
    C: std::ops::Deref<Target = [P::Subpixel]>,
{
    let mut bytes = Vec::new();
    img.write_with_encoder(image::codecs::png::PngEncoder::new(&mut bytes))?;
    Ok(bytes)
}

/// The size of a rendering of a `width × height` photo whose longer side is at most
/// `max_side` (the photo's own size if it is smaller), aspect ratio kept.
pub fn fit_within(width: u32, height: u32, max_side: u32) -> (u32, u32) {
    let long = width.max(height);
    if long <= max_side || long == 0 {
        return (width, height);
    }
    let scale = f64::from(max_side) / f64::from(long);
    let side = |v: u32| ((f64::from(v) * scale).round() as u32).max(1);
    (side(width), side(height))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(height: usize, width: usize, values: Vec<f32>) -> ClassMap {
        ClassMap {
            height,
            width,
            values,
        }
    }

    #[test]
    fn geometry_follows_torchvision_resize_and_crop() {
        // 400×300 at resize 256: 341×256 (int(256·400/300) = 341), crop 224 from
        // x = round(58.5) = 58 (half to even), y = 16.
        let g = CropGeometry::new(400, 300, &Preprocessor::new(256, 224).unwrap());
        assert_eq!((g.resized_width, g.resized_height), (341, 256));
        assert_eq!((g.crop_x, g.crop_y, g.crop), (58, 16, 224));
        let [l, t, r, b] = g.crop_in_original();
        assert!((l - 58.0 * 400.0 / 341.0).abs() < 1e-12);
        assert!((t - 18.75).abs() < 1e-12 && (b - 281.25).abs() < 1e-12);
        assert!((r - 282.0 * 400.0 / 341.0).abs() < 1e-12);
    }

    #[test]
    fn projection_is_nan_outside_the_crop_and_follows_the_grid_inside() {
        // A 300×200 photo at resize 64, crop 64: resized 96×64, crop x from 16, so the crop is
        // x ∈ [50, 250) of the original and the full height.
        let g = CropGeometry::new(300, 200, &Preprocessor::new(64, 64).unwrap());
        assert_eq!((g.crop_x, g.crop_y), (16, 0));
        // 2×2 grid; each cell is 32 crop pixels, i.e. 100 original pixels.
        let map = grid(2, 2, vec![1.0, 2.0, 3.0, 4.0]);
        let p = g.project(&map, 300, 200);
        let at = |x: usize, y: usize| p[y * 300 + x];
        assert!(at(49, 100).is_nan() && at(250, 100).is_nan());
        assert!(!at(50, 100).is_nan() && !at(249, 100).is_nan());
        // Cell centres are at original x = 100 and 200, y = 50 and 150. Pixels 149 and 150 sit
        // symmetrically about the crop's middle (x = 150): their mean is the mean of the two
        // columns. Near the top edge the rows clamp to the first one.
        let close = |a: f32, b: f32| (a - b).abs() < 1e-5;
        assert!(close((at(149, 10) + at(150, 10)) / 2.0, 1.5));
        assert!(at(120, 10) < at(149, 10) && at(150, 10) < at(180, 10));
        assert!(close((at(149, 190) + at(150, 190)) / 2.0, 3.5));
        // Beyond the outer cell centres the values clamp to the edge cells.
        assert!(close(at(55, 10), 1.0) && close(at(245, 195), 4.0));
    }

    #[test]
    fn normalise_and_colours() {
        let n = normalise(&[2.0, f32::NAN, 4.0, 3.0]);
        assert_eq!(n[0], 0.0);
        assert!(n[1].is_nan());
        assert_eq!((n[2], n[3]), (1.0, 0.5));
        assert_eq!(normalise(&[5.0, 5.0]), vec![0.0, 0.0]);
        assert_eq!(heat_colour(0.0), [0, 0, 128]);
        assert_eq!(heat_colour(1.0), [128, 0, 0]);
        assert_eq!(heat_colour(0.5), [128, 255, 128]);
    }

    #[test]
    fn overlay_leaves_transparent_pixels_alone() {
        let photo = RgbImage::from_pixel(2, 1, Rgb([100, 100, 100]));
        let mut layer = RgbaImage::new(2, 1);
        layer.put_pixel(1, 0, Rgba([200, 0, 0, 255]));
        let out = overlay(&photo, &layer, 0.5);
        assert_eq!(out.get_pixel(0, 0), &Rgb([100, 100, 100]));
        assert_eq!(out.get_pixel(1, 0), &Rgb([150, 50, 50]));
        assert_eq!(fit_within(4000, 3000, 400), (400, 300));
        assert_eq!(fit_within(200, 100, 400), (200, 100));
    }
}
