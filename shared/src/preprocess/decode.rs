//! Bytes → 8-bit RGB, with the same results as `PIL.Image.open(..).convert("RGB")` for the
//! formats and modes users send (grayscale, palette, CMYK, 16-bit, alpha — alpha is dropped,
//! not composited), and without trusting the header of a hostile file.

use super::PreprocessError;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};
use std::io::Cursor;

/// Pillow's `MAX_IMAGE_PIXELS` (its decompression-bomb threshold): ~89.5 megapixels.
/// Pillow only warns there; we refuse, because a photo classifier never needs more.
pub const DEFAULT_MAX_PIXELS: u64 = 89_478_485;

/// Cap on any single allocation the decoder makes, independent of the pixel limit: a file that
/// lies about its content cannot make us reserve more than this.
const MAX_DECODER_ALLOC: u64 = 1 << 30;

fn format_name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::Png => "PNG",
        ImageFormat::WebP => "WebP",
        ImageFormat::Gif => "GIF",
        ImageFormat::Bmp => "BMP",
        _ => "unsupported",
    }
}

/// Decodes `bytes` to 8-bit RGB. The dimensions are read from the header and checked against
/// `max_pixels` before any pixel buffer is allocated. GIFs give their first frame.
pub fn decode_rgb8(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, PreprocessError> {
    if bytes.is_empty() {
        return Err(PreprocessError::Empty);
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|_| PreprocessError::UnknownFormat)?;
    let format = match reader.format() {
        Some(f @ (ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP))
        | Some(f @ (ImageFormat::Gif | ImageFormat::Bmp)) => f,
        _ => return Err(PreprocessError::UnknownFormat),
    };
    let decode_err = |source| PreprocessError::Decode {
        format: format_name(format),
        source,
    };
    let mut decoder = reader.into_decoder().map_err(decode_err)?;
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(PreprocessError::TooLarge {
            width,
            height,
            limit: max_pixels,
        });
    }
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_DECODER_ALLOC);
    decoder.set_limits(limits).map_err(decode_err)?;
    let image = DynamicImage::from_decoder(decoder).map_err(decode_err)?;
    if image.width() == 0 || image.height() == 0 {
        return Err(PreprocessError::Decode {
            format: format_name(format),
            source: image::ImageError::Limits(image::error::LimitError::from_kind(
                image::error::LimitErrorKind::DimensionError,
            )),
        });
    }
    Ok(match image {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.into_rgb8(),
    })
}
