//! Decoding: every format and pixel mode users send, and hostile files that must fail cleanly.

use image::{DynamicImage, ImageBuffer, ImageFormat, Luma, LumaA, Rgb, Rgba};
use petal_shared::{PreprocessError, Preprocessor};
use std::io::Cursor;

mod common;
#[path = "common/png.rs"]
mod png;

use png::png_claiming;

fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut buf = Cursor::new(Vec::new());
    img.write_to(&mut buf, format).unwrap();
    buf.into_inner()
}

fn decode(bytes: &[u8]) -> Result<image::RgbImage, PreprocessError> {
    Preprocessor::default().decode(bytes)
}

fn gradient() -> image::RgbImage {
    ImageBuffer::from_fn(9, 5, |x, y| Rgb([(x * 28) as u8, (y * 50) as u8, 77]))
}

#[test]
fn lossless_formats_round_trip_exactly() {
    let rgb = DynamicImage::ImageRgb8(gradient());
    for format in [ImageFormat::Png, ImageFormat::Bmp, ImageFormat::WebP] {
        let back = decode(&encode(&rgb, format)).unwrap();
        assert_eq!(back, gradient(), "{format:?}");
    }
}

#[test]
fn gif_gives_its_first_frame() {
    // GIF is palette-based; a few flat colours survive quantisation exactly.
    let img = ImageBuffer::from_fn(4, 4, |x, _| {
        if x < 2 {
            Rgba([255, 0, 0, 255])
        } else {
            Rgba([0, 0, 255, 255])
        }
    });
    let back = decode(&encode(&DynamicImage::ImageRgba8(img), ImageFormat::Gif)).unwrap();
    assert_eq!(back.get_pixel(0, 0).0, [255, 0, 0]);
    assert_eq!(back.get_pixel(3, 3).0, [0, 0, 255]);
}

#[test]
fn modes_convert_like_pil_convert_rgb() {
    // Grayscale: R = G = B = L.
    let gray = ImageBuffer::from_fn(3, 2, |x, y| Luma([(x * 60 + y) as u8]));
    let back = decode(&encode(&DynamicImage::ImageLuma8(gray), ImageFormat::Png)).unwrap();
    assert_eq!(back.get_pixel(2, 1).0, [121, 121, 121]);
    // Alpha is dropped, not composited onto a background.
    let rgba = ImageBuffer::from_fn(2, 2, |_, _| Rgba([10, 20, 30, 0]));
    let back = decode(&encode(&DynamicImage::ImageRgba8(rgba), ImageFormat::Png)).unwrap();
    assert_eq!(back.get_pixel(1, 1).0, [10, 20, 30]);
    let la = ImageBuffer::from_fn(2, 2, |_, _| LumaA([99, 7]));
    let back = decode(&encode(&DynamicImage::ImageLumaA8(la), ImageFormat::Png)).unwrap();
    assert_eq!(back.get_pixel(0, 0).0, [99, 99, 99]);
    // 16-bit scales to 8-bit.
    let deep: ImageBuffer<Rgb<u16>, _> =
        ImageBuffer::from_fn(2, 1, |x, _| Rgb([x as u16 * 65535, 32896, 0]));
    let back = decode(&encode(&DynamicImage::ImageRgb16(deep), ImageFormat::Png)).unwrap();
    assert_eq!(back.get_pixel(0, 0).0, [0, 128, 0]);
    assert_eq!(back.get_pixel(1, 0).0, [255, 128, 0]);
}

#[test]
fn empty_file_is_named_as_such() {
    let err = decode(&[]).unwrap_err();
    assert!(matches!(err, PreprocessError::Empty));
    assert!(err.to_string().contains("empty"));
}

#[test]
fn non_image_is_rejected() {
    let err = decode(b"daisy,dandelion\nrose,tulip\n").unwrap_err();
    assert!(matches!(err, PreprocessError::UnknownFormat), "{err}");
    assert!(err.to_string().contains("not a supported image"));
}

#[test]
fn truncated_png_is_a_decode_error() {
    let png = encode(&DynamicImage::ImageRgb8(gradient()), ImageFormat::Png);
    let err = decode(&png[..png.len() / 2]).unwrap_err();
    assert!(
        matches!(err, PreprocessError::Decode { format: "PNG", .. }),
        "{err}"
    );
}

#[test]
fn truncated_jpeg_is_refused_like_pillow_unless_allowed() {
    let photos = common::fixtures().join("photos");
    let jpeg = std::fs::read(photos.join("coffee_q90.jpg")).unwrap();
    // From the first bytes that identify a JPEG (FF D8 FF) on.
    for cut in [3, 100, 5000, jpeg.len() / 3, jpeg.len() - 2] {
        // Refused by default, with Pillow's words, wherever the cut falls (even just before
        // the end marker): the decoder would fill the missing rows with grey.
        let err = decode(&jpeg[..cut]).unwrap_err();
        assert!(
            matches!(err, PreprocessError::Truncated),
            "cut at {cut}: {err}"
        );
        assert_eq!(err.to_string(), "image file is truncated");
    }
    // Opted in, a cut inside the scan decodes to the full size; one inside the headers still
    // cannot decode, and neither panics.
    let lenient = Preprocessor {
        allow_truncated: true,
        ..Preprocessor::default()
    };
    let whole = lenient.decode(&jpeg).unwrap();
    let partial = lenient.decode(&jpeg[..jpeg.len() / 3]).unwrap();
    assert_eq!(partial.dimensions(), whole.dimensions());
    assert!(lenient.decode(&jpeg[..100]).is_err());
}

#[test]
fn decompression_bomb_is_refused_before_allocating() {
    let err = decode(&png_claiming(30_000, 30_000)).unwrap_err();
    match &err {
        PreprocessError::TooLarge { width, height, .. } => {
            assert_eq!((*width, *height), (30_000, 30_000))
        }
        other => panic!("expected TooLarge, got {other}"),
    }
    assert!(err.to_string().contains("30000x30000"));
    // A header that claims a plausible size but has no pixel data fails as a decode error.
    assert!(matches!(
        decode(&png_claiming(64, 64)),
        Err(PreprocessError::Decode { .. })
    ));
}
