//! A corpus of hostile image files and what must become of each: classified, or refused with a
//! reason. The CLI's tests (`robust.rs`) run it through every command; the page's tests drop
//! the same files on the page (`trainer/examples/hostile-corpus.rs` writes them for
//! `scripts/test-web`).

#[path = "../../shared/tests/common/png.rs"]
mod png;

use image::{DynamicImage, ImageFormat, Rgb, RgbImage};
use png::png_claiming;
use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;
use std::process::{Command, Stdio};

/// A strip whose every pixel differs from its neighbours, so that any misplaced tap shows.
pub fn strip(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let i = x + y;
        Rgb([
            (i * 7 % 251) as u8,
            (i * 13 % 241) as u8,
            ((i / 97) * 31 % 256) as u8,
        ])
    })
}

pub fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut buf = Cursor::new(Vec::new());
    img.write_to(&mut buf, format).unwrap();
    buf.into_inner()
}

/// What must happen to a corpus file: classified, or refused with a reason containing this.
pub type Expect = Option<&'static str>;

/// A small real JPEG whose frame header (SOF0) is rewritten to claim `side × side`.
fn jpeg_claiming(side: u16) -> Vec<u8> {
    let mut jpeg = encode(&DynamicImage::ImageRgb8(strip(16, 16)), ImageFormat::Jpeg);
    let sof = jpeg
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("baseline JPEG has SOF0");
    // FF C0, length (2), precision (1), height (2), width (2).
    jpeg[sof + 5..sof + 7].copy_from_slice(&side.to_be_bytes());
    jpeg[sof + 7..sof + 9].copy_from_slice(&side.to_be_bytes());
    jpeg
}

/// A minimal little-endian TIFF: header and one 1×1 8-bit grey strip.
fn tiff() -> Vec<u8> {
    let mut t = b"II*\0".to_vec();
    t.extend(8u32.to_le_bytes());
    let entries: [(u16, u16, u32, u32); 6] = [
        (256, 3, 1, 1),  // width
        (257, 3, 1, 1),  // height
        (258, 3, 1, 8),  // bits per sample
        (262, 3, 1, 1),  // photometric: black is zero
        (273, 4, 1, 86), // strip offset
        (279, 4, 1, 1),  // strip byte count
    ];
    t.extend((entries.len() as u16).to_le_bytes());
    for (tag, kind, count, value) in entries {
        t.extend(tag.to_le_bytes());
        t.extend(kind.to_le_bytes());
        t.extend(count.to_le_bytes());
        t.extend(value.to_le_bytes());
    }
    t.extend(0u32.to_le_bytes());
    t.push(200);
    t
}

/// A GIF with a screen descriptor and no image at all.
fn gif_without_frames() -> Vec<u8> {
    let mut g = b"GIF89a".to_vec();
    g.extend(10u16.to_le_bytes());
    g.extend(10u16.to_le_bytes());
    g.extend([0, 0, 0]); // no global colour table
    g.push(0x3B); // trailer
    g
}

fn animated_gif() -> Vec<u8> {
    let mut buf = Vec::new();
    {
        let mut enc = image::codecs::gif::GifEncoder::new(&mut buf);
        for shade in [40u8, 200] {
            let frame = image::RgbaImage::from_pixel(12, 9, image::Rgba([shade, 90, 10, 255]));
            enc.encode_frame(image::Frame::new(frame)).unwrap();
        }
    }
    buf
}

/// Pillow writes the files the `image` crate cannot: CMYK JPEG, palette PNG, a JPEG with an
/// EXIF orientation tag (6: rotate 90° clockwise to display) and one whose EXIF block fills its
/// segment (a 60 kB comment, as some cameras' maker notes do).
fn pillow_made(dir: &Path, python: &str) {
    let script = r#"
import sys
from PIL import Image
d = sys.argv[1]
base = Image.new("RGB", (40, 30))
base.putdata([((x * 6) % 256, (y * 8) % 256, 90) for y in range(30) for x in range(40)])
base.convert("CMYK").save(d + "/cmyk.jpg", quality=90)
base.convert("P").save(d + "/palette.png")
exif = Image.Exif()
exif[0x0112] = 6
base.save(d + "/exif_rotated.jpg", exif=exif)
huge = Image.Exif()
huge[0x010E] = "petal " * 10000
base.save(d + "/huge_exif.jpg", exif=huge)
"#;
    let out = Command::new(python)
        .args(["-c", script])
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .expect("cannot run Python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes the corpus into `dir`: file name → expected outcome. `photo` is a real JPEG (cut short
/// for the truncated case); `python` has Pillow.
pub fn write_corpus(dir: &Path, photo: &Path, python: &str) -> BTreeMap<String, Expect> {
    std::fs::create_dir_all(dir).unwrap();
    let rgb = DynamicImage::ImageRgb8(strip(48, 40));
    let png = encode(&rgb, ImageFormat::Png);
    let jpeg = encode(&rgb, ImageFormat::Jpeg);
    let photo_jpeg = std::fs::read(photo).unwrap();
    let mut noise = vec![0u8; 4096];
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    for b in &mut noise {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *b = (state >> 24) as u8;
    }
    noise[0] = 0; // no format's magic number starts with a zero byte
    let big = DynamicImage::ImageRgb8(RgbImage::from_fn(6000, 4000, |x, y| {
        Rgb([(x / 24) as u8, (y / 16) as u8, ((x + y) / 40) as u8])
    }));

    let not_image = Some("not a supported image");
    let files: Vec<(&str, Vec<u8>, Expect)> = vec![
        ("empty.jpg", Vec::new(), Some("empty")),
        (
            "half.png",
            png[..png.len() / 2].to_vec(),
            Some("cannot decode PNG"),
        ),
        (
            "cut.jpg",
            photo_jpeg[..5000].to_vec(),
            Some("image file is truncated"),
        ),
        ("notes.jpg", b"daisy: 12\nrose: 7\n".to_vec(), not_image),
        (
            "page.png",
            b"<!DOCTYPE html><html><body>404 Not Found</body></html>".to_vec(),
            not_image,
        ),
        ("noise.jpg", noise, not_image),
        (
            "bomb_30000.png",
            png_claiming(30_000, 30_000),
            Some("exceeds the limit"),
        ),
        (
            "bomb_65000.png",
            png_claiming(65_000, 65_000),
            Some("exceeds the limit"),
        ),
        (
            "bomb_30000.jpg",
            jpeg_claiming(30_000),
            Some("exceeds the limit"),
        ),
        (
            "bomb_65000.jpg",
            jpeg_claiming(65_000),
            Some("exceeds the limit"),
        ),
        (
            "no_frames.gif",
            gif_without_frames(),
            Some("cannot decode GIF"),
        ),
        ("scan.tiff", tiff(), Some("TIFF images are not supported")),
        (
            "gray.png",
            encode(&DynamicImage::ImageLuma8(rgb.to_luma8()), ImageFormat::Png),
            None,
        ),
        (
            "deep16.png",
            encode(&DynamicImage::ImageRgb16(rgb.to_rgb16()), ImageFormat::Png),
            None,
        ),
        (
            "la.png",
            encode(
                &DynamicImage::ImageLumaA8(rgb.to_luma_alpha8()),
                ImageFormat::Png,
            ),
            None,
        ),
        (
            "rgba.png",
            encode(&DynamicImage::ImageRgba8(rgb.to_rgba8()), ImageFormat::Png),
            None,
        ),
        ("animated.gif", animated_gif(), None),
        (
            "sliver_1x60000.png",
            encode(&DynamicImage::ImageRgb8(strip(1, 60_000)), ImageFormat::Png),
            None,
        ),
        (
            "sliver_60000x1.png",
            encode(&DynamicImage::ImageRgb8(strip(60_000, 1)), ImageFormat::Png),
            None,
        ),
        ("big_6000x4000.jpg", encode(&big, ImageFormat::Jpeg), None),
        ("my photo of a rose.png", png.clone(), None),
        ("fleur d'été ünïcödé 花.jpg", jpeg.clone(), None),
        ("SHOUTING.JPG", jpeg.clone(), None),
        ("Mixed.PnG", png.clone(), None),
        ("actually_a_jpeg.png", jpeg.clone(), None),
    ];
    let mut expect: BTreeMap<String, Expect> = BTreeMap::new();
    for (name, bytes, e) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
        expect.insert(name.to_string(), e);
    }
    pillow_made(dir, python);
    for name in [
        "cmyk.jpg",
        "palette.png",
        "exif_rotated.jpg",
        "huge_exif.jpg",
    ] {
        expect.insert(name.to_string(), None);
    }
    expect
}
