//! Training augmentation with torchvision's semantics: `RandomRotation(30)` (nearest, fill 0,
//! same size) → `RandomResizedCrop(S, scale=(0.08, 1), ratio=(3/4, 4/3))` (Pillow bilinear) →
//! `RandomHorizontalFlip()` → `ToTensor` + `Normalize`.
//!
//! Memory stays bounded whatever the image: the crop box is drawn first (it depends only on the
//! image's size, which rotation keeps), only that box of the rotated image is made, and it is
//! resized straight to `size × size`. Peak beyond the decoded image: the box (at most the
//! image's size) and the `size × size` output.

use image::RgbImage;
use petal_shared::Preprocessor;
use petal_shared::preprocess::resize_bilinear;
use rand::RngExt;

/// The original recipe's augmentation.
#[derive(Debug, Clone)]
pub struct Augment {
    pub rotation_degrees: f32,
    pub scale: (f32, f32),
    pub ratio: (f32, f32),
    pub flip_probability: f64,
    pub size: u32,
}

impl Augment {
    pub fn recipe(size: u32) -> Self {
        Self {
            rotation_degrees: 30.0,
            scale: (0.08, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
            flip_probability: 0.5,
            size,
        }
    }

    /// Augmented, normalised CHW tensor of one decoded image.
    pub fn apply(&self, img: &RgbImage, pre: &Preprocessor, rng: &mut impl RngExt) -> Vec<f32> {
        // Drawn in torchvision's order (angle, then box), so a seed gives the same batches.
        let angle = rng.random_range(-self.rotation_degrees..=self.rotation_degrees);
        let (x, y, w, h) =
            random_resized_crop_box(img.width(), img.height(), self.scale, self.ratio, rng);
        let crop = rotate_region(img, angle, x, y, w, h);
        let mut out = resize_bilinear(&crop, self.size, self.size);
        if rng.random_bool(self.flip_probability) {
            image::imageops::flip_horizontal_in_place(&mut out);
        }
        pre.normalize(&out)
    }
}

/// Rotates counter-clockwise by `degrees` about the centre, exactly as Pillow's
/// `Image.rotate(degrees, resample=NEAREST, fillcolor=0)` (what torchvision's `RandomRotation`
/// runs on a PIL image): same size, uncovered corners black.
pub fn rotate(img: &RgbImage, degrees: f32) -> RgbImage {
    rotate_region(img, degrees, 0, 0, img.width(), img.height())
}

/// The `width × height` box at `(x0, y0)` of [`rotate`]'s output, computing only that box:
/// each output pixel depends only on its own coordinates.
pub fn rotate_region(
    img: &RgbImage,
    degrees: f32,
    x0: u32,
    y0: u32,
    width: u32,
    height: u32,
) -> RgbImage {
    let (w, h) = (img.width(), img.height());
    let source = PillowRotation::new(w, h, degrees);
    RgbImage::from_fn(width, height, |x, y| {
        match source.pixel_for(x0 + x, y0 + y) {
            Some((sx, sy)) => *img.get_pixel(sx, sy),
            None => image::Rgb([0, 0, 0]),
        }
    })
}

/// Which source pixel Pillow's `rotate` copies into each output pixel. Pillow takes exact
/// transposes for 0°, 180° and (square images) 90°/270°; otherwise it rounds the inverse
/// rotation matrix to 15 decimals and walks the output in 16.16 fixed point (`affine_fixed` in
/// its `Geometry.c`), flooring to the source pixel. The fixed-point steps are reproduced here,
/// which is what makes the borders of the rotated picture land on the same pixels.
enum PillowRotation {
    Identity,
    Half { w: u32, h: u32 },
    Quarter { w: u32, h: u32, clockwise: bool },
    Fixed { a: [i64; 6], w: u32, h: u32 },
    Float { a: [f64; 6], w: u32, h: u32 },
}

impl PillowRotation {
    fn new(w: u32, h: u32, degrees: f32) -> Self {
        // Python's `angle % 360.0`.
        let angle = f64::from(degrees).rem_euclid(360.0);
        if angle == 0.0 {
            return Self::Identity;
        }
        if angle == 180.0 {
            return Self::Half { w, h };
        }
        if (angle == 90.0 || angle == 270.0) && w == h {
            return Self::Quarter {
                w,
                h,
                clockwise: angle == 270.0,
            };
        }
        // Python's `round(v, 15)`: |v| <= 1, so v * 1e15 is exact enough to round as an integer.
        let round15 = |v: f64| (v * 1e15).round_ties_even() / 1e15;
        let radians = -angle.to_radians();
        let (sin, cos) = radians.sin_cos();
        let mut a = [
            round15(cos),
            round15(sin),
            0.0,
            round15(-sin),
            round15(cos),
            0.0,
        ];
        let (cx, cy) = (f64::from(w) / 2.0, f64::from(h) / 2.0);
        a[2] = a[0] * -cx + a[1] * -cy + a[2] + cx;
        a[5] = a[3] * -cx + a[4] * -cy + a[5] + cy;
        let fits = |x: f64, y: f64| {
            (x * a[0] + y * a[1] + a[2]).abs() < 32768.0
                && (x * a[3] + y * a[4] + a[5]).abs() < 32768.0
        };
        let (fw, fh) = (f64::from(w), f64::from(h));
        if fits(0.0, 0.0) && fits(fw, fh) && fits(0.0, fh) && fits(fw, 0.0) {
            let fix = |v: f64| (v * 65536.0 + 0.5).floor() as i64;
            Self::Fixed {
                a: [
                    fix(a[0]),
                    fix(a[1]),
                    fix(a[2] + a[0] * 0.5 + a[1] * 0.5),
                    fix(a[3]),
                    fix(a[4]),
                    fix(a[5] + a[3] * 0.5 + a[4] * 0.5),
                ],
                w,
                h,
            }
        } else {
            // Pillow's floating-point walk, for images too large for 16.16 (over 32768 pixels
            // from the centre). It accumulates per step; the direct products here can differ
            // in the last bit on such images.
            Self::Float { a, w, h }
        }
    }

    fn pixel_for(&self, x: u32, y: u32) -> Option<(u32, u32)> {
        let inside = |sx: i64, sy: i64, w: u32, h: u32| {
            (sx >= 0 && sy >= 0 && sx < i64::from(w) && sy < i64::from(h))
                .then_some((sx as u32, sy as u32))
        };
        match *self {
            Self::Identity => Some((x, y)),
            Self::Half { w, h } => Some((w - 1 - x, h - 1 - y)),
            Self::Quarter { w, h, clockwise } => Some(if clockwise {
                (y, h - 1 - x)
            } else {
                (w - 1 - y, x)
            }),
            Self::Fixed { a, w, h } => {
                let (x, y) = (i64::from(x), i64::from(y));
                let sx = (a[2] + y * a[1] + x * a[0]) >> 16;
                let sy = (a[5] + y * a[4] + x * a[3]) >> 16;
                inside(sx, sy, w, h)
            }
            Self::Float { a, w, h } => {
                let (x, y) = (f64::from(x), f64::from(y));
                let sx = a[2] + a[1] * 0.5 + a[0] * 0.5 + y * a[1] + x * a[0];
                let sy = a[5] + a[4] * 0.5 + a[3] * 0.5 + y * a[4] + x * a[3];
                // Pillow's COORD: anything below zero is outside.
                let coord = |v: f64| if v < 0.0 { -1 } else { v as i64 };
                inside(coord(sx), coord(sy), w, h)
            }
        }
    }
}

/// torchvision's `RandomResizedCrop.get_params`: `(x, y, width, height)` inside the image.
pub fn random_resized_crop_box(
    width: u32,
    height: u32,
    scale: (f32, f32),
    ratio: (f32, f32),
    rng: &mut impl RngExt,
) -> (u32, u32, u32, u32) {
    let area = f64::from(width) * f64::from(height);
    let (log_lo, log_hi) = (f64::from(ratio.0).ln(), f64::from(ratio.1).ln());
    for _ in 0..10 {
        let target = area * rng.random_range(f64::from(scale.0)..=f64::from(scale.1));
        let aspect = rng.random_range(log_lo..=log_hi).exp();
        let w = (target * aspect).sqrt().round() as u32;
        let h = (target / aspect).sqrt().round() as u32;
        if w > 0 && h > 0 && w <= width && h <= height {
            let x = rng.random_range(0..=width - w);
            let y = rng.random_range(0..=height - h);
            return (x, y, w, h);
        }
    }
    // Fallback: the whole image, clamped to the allowed aspect ratios, centred.
    let in_ratio = f64::from(width) / f64::from(height);
    let (w, h) = if in_ratio < f64::from(ratio.0) {
        (
            width,
            (f64::from(width) / f64::from(ratio.0)).round() as u32,
        )
    } else if in_ratio > f64::from(ratio.1) {
        (
            (f64::from(height) * f64::from(ratio.1)).round() as u32,
            height,
        )
    } else {
        (width, height)
    };
    ((width - w) / 2, (height - h) / 2, w, h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn numbered(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 7]))
    }

    #[test]
    fn rotation_by_90_degrees_turns_counter_clockwise() {
        let img = numbered(6, 6);
        let r = rotate(&img, 90.0);
        for y in 0..6 {
            for x in 0..6 {
                // Counter-clockwise: the source pixel of (x, y) is (5 - y, x).
                assert_eq!(r.get_pixel(x, y), img.get_pixel(5 - y, x), "at ({x}, {y})");
            }
        }
        assert_eq!(rotate(&img, 0.0), img);
    }

    #[test]
    fn rotated_region_is_that_part_of_the_rotated_image() {
        let img = RgbImage::from_fn(37, 23, |x, y| image::Rgb([x as u8, y as u8, (x ^ y) as u8]));
        for angle in [-30.0, -7.5, 0.0, 12.25, 30.0] {
            let full = rotate(&img, angle);
            for (x, y, w, h) in [
                (0, 0, 37, 23),
                (5, 3, 10, 17),
                (36, 22, 1, 1),
                (0, 11, 37, 1),
            ] {
                let part = image::imageops::crop_imm(&full, x, y, w, h).to_image();
                assert_eq!(
                    rotate_region(&img, angle, x, y, w, h),
                    part,
                    "{angle} {x},{y}"
                );
            }
        }
    }

    #[test]
    fn extreme_aspect_ratios_augment_without_blowing_up() {
        // A 1-pixel strip's box is tiny; the output is always size × size.
        let pre = Preprocessor::new(40, 32).unwrap();
        let aug = Augment::recipe(32);
        let mut rng = StdRng::seed_from_u64(9);
        for (w, h) in [(1, 60_000), (60_000, 1), (1, 1)] {
            let img = numbered(w, h);
            assert_eq!(aug.apply(&img, &pre, &mut rng).len(), 3 * 32 * 32);
        }
    }

    #[test]
    fn rotation_fills_corners_with_black() {
        let img = RgbImage::from_pixel(20, 10, image::Rgb([255, 255, 255]));
        let r = rotate(&img, 30.0);
        assert_eq!(r.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(r.get_pixel(10, 5).0, [255, 255, 255]);
    }

    #[test]
    fn resized_crop_box_stays_in_bounds_and_ratio() {
        let mut rng = StdRng::seed_from_u64(3);
        for (w, h) in [(320, 240), (240, 320), (50, 900), (224, 224)] {
            for _ in 0..2000 {
                let (x, y, cw, ch) =
                    random_resized_crop_box(w, h, (0.08, 1.0), (0.75, 4.0 / 3.0), &mut rng);
                assert!(
                    cw > 0 && ch > 0 && x + cw <= w && y + ch <= h,
                    "{w}x{h}: {x},{y} {cw}x{ch}"
                );
                let area = f64::from(cw * ch) / f64::from(w * h);
                let ratio = f64::from(cw) / f64::from(ch);
                // Rounding to whole pixels can nudge area and ratio slightly past the bounds.
                if (w, h) != (50, 900) {
                    assert!((0.07..=1.0).contains(&area), "area {area}");
                    assert!((0.70..=1.40).contains(&ratio), "ratio {ratio}");
                }
            }
        }
    }

    #[test]
    fn augment_output_has_the_crop_size_and_flip_flips() {
        let pre = Preprocessor::new(40, 32).unwrap();
        let img = numbered(64, 48);
        let no_change = Augment {
            rotation_degrees: 0.0,
            scale: (1.0, 1.0),
            ratio: (64.0 / 48.0, 64.0 / 48.0),
            flip_probability: 1.0,
            size: 64,
        };
        // Full-image crop at the same aspect, resized to 64x64, then always flipped.
        let t = no_change.apply(&img, &pre, &mut StdRng::seed_from_u64(1));
        assert_eq!(t.len(), 3 * 64 * 64);
        let unflipped = pre.normalize(&resize_bilinear(&img, 64, 64));
        // Red channel = x coordinate: row 0 reversed.
        let row: Vec<f32> = unflipped[..64].iter().rev().copied().collect();
        assert_eq!(&t[..64], &row[..]);
    }
}
