//! Training augmentation against the library whose behaviour it claims: `rotate` against
//! Pillow's `Image.rotate(angle, resample=NEAREST, fillcolor=0)`, which is what torchvision's
//! `RandomRotation` calls on a PIL image.

use crate::util::{python, tempdir};
use image::{Rgb, RgbImage};
use petal_trainer::data::augment::rotate;
use std::process::Command;

/// A picture with no symmetry and a different colour in every pixel, so that any misplaced
/// sample shows.
fn picture(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        Rgb([
            (x * 7 + y * 3) as u8,
            (x * x + 5 * y) as u8,
            ((x * 13) ^ (y * 29)) as u8,
        ])
    })
}

#[test]
fn rotate_equals_pillow_nearest_with_black_fill() {
    let dir = tempdir();
    // Exactly representable angles (f32 here, Python floats there), odd and even sizes.
    let angles = [
        0.0f32, 30.0, -17.5, 90.0, 45.0, 12.25, -3.125, 180.0, 7.0, -23.5, 29.875, 359.0, -90.0,
        270.0,
    ];
    let sizes = [(37u32, 23u32), (40, 40), (64, 17)];
    let mut script = String::from("import sys\nfrom PIL import Image\n");
    let mut cases = Vec::new();
    for &(w, h) in &sizes {
        let src = dir.path().join(format!("src-{w}x{h}.png"));
        picture(w, h).save(&src).unwrap();
        for &angle in &angles {
            let out = dir.path().join(format!("pil-{w}x{h}-{angle}.png"));
            script.push_str(&format!(
                "Image.open({src:?}).convert('RGB').rotate({angle:?}, resample=Image.NEAREST, fillcolor=0).save({out:?})\n",
                src = src.to_str().unwrap(),
                out = out.to_str().unwrap(),
            ));
            cases.push((w, h, angle, out));
        }
    }
    let status = Command::new(python())
        .args(["-c", &script])
        .status()
        .unwrap_or_else(|e| panic!("cannot run {} (with Pillow): {e}", python()));
    assert!(status.success(), "Pillow failed");
    let mut report = Vec::new();
    for (w, h, angle, pil) in cases {
        let want = image::open(&pil).unwrap().to_rgb8();
        let ours = rotate(&picture(w, h), angle);
        assert_eq!(ours.dimensions(), want.dimensions());
        let differing = ours
            .pixels()
            .zip(want.pixels())
            .filter(|(a, b)| a != b)
            .count();
        if differing > 0 {
            report.push(format!(
                "{w}x{h} at {angle}°: {differing} of {} pixels differ",
                w * h
            ));
        }
    }
    assert!(
        report.is_empty(),
        "rotate differs from Pillow:\n{}",
        report.join("\n")
    );
}
