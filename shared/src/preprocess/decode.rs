//! Bytes → 8-bit RGB, with the same results as `PIL.Image.open(..).convert("RGB")` for the
//! formats and modes users send (grayscale, palette, CMYK, 16-bit, alpha — alpha is dropped,
//! not composited). The header's dimensions are checked before any pixel buffer exists, and a
//! JPEG that stops before its end marker is refused, as Pillow refuses it.

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
///
/// A JPEG cut off before its end (an interrupted download or copy) is refused with
/// [`PreprocessError::Truncated`] unless `allow_truncated`: the decoder would otherwise fill the
/// missing part with grey and the image would be classified silently. Pillow (and so
/// torchvision) refuses such files too, with the same words.
pub fn decode_rgb8(
    bytes: &[u8],
    max_pixels: u64,
    allow_truncated: bool,
) -> Result<RgbImage, PreprocessError> {
    if bytes.is_empty() {
        return Err(PreprocessError::Empty);
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|_| PreprocessError::UnknownFormat)?;
    let format = match reader.format() {
        Some(f @ (ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP))
        | Some(f @ (ImageFormat::Gif | ImageFormat::Bmp)) => f,
        Some(other) => {
            return Err(PreprocessError::UnsupportedFormat(
                other
                    .extensions_str()
                    .first()
                    .map_or_else(|| format!("{other:?}"), |ext| ext.to_ascii_uppercase()),
            ));
        }
        None => return Err(PreprocessError::UnknownFormat),
    };
    if format == ImageFormat::Jpeg && !allow_truncated && jpeg_is_truncated(bytes) {
        return Err(PreprocessError::Truncated);
    }
    let decode_err = |source| PreprocessError::Decode {
        format: format_name(format),
        source,
    };
    let too_large = |(width, height): (u32, u32)| {
        (u64::from(width) * u64::from(height) > max_pixels).then_some(PreprocessError::TooLarge {
            width,
            height,
            limit: max_pixels,
        })
    };
    let mut decoder = match reader.into_decoder() {
        Ok(decoder) => decoder,
        // On a 32-bit target (the page's wasm) the PNG decoder already refuses, while reading
        // the header, an image whose pixels would not fit the address space. That is a bomb
        // like any other and is reported as one, as natively.
        Err(e @ image::ImageError::Limits(_)) => {
            return Err(png_dimensions(bytes)
                .and_then(too_large)
                .unwrap_or_else(|| decode_err(e)));
        }
        Err(e) => return Err(decode_err(e)),
    };
    if let Some(error) = too_large(decoder.dimensions()) {
        return Err(error);
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

/// Width and height from a PNG's header: the signature, then the IHDR chunk, which the format
/// requires first (length, type, then width and height as big-endian u32).
fn png_dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    let header = bytes.get(..24)?;
    if !header.starts_with(b"\x89PNG\r\n\x1a\n") || &header[12..16] != b"IHDR" {
        return None;
    }
    let be = |at: usize| {
        u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    Some((be(16), be(20)))
}

/// Whether `bytes` is a JPEG that ends before its end-of-image marker, i.e. a file cut off
/// mid-stream. Walks the marker segments (skipping each by its length, so an EXIF thumbnail's
/// own end marker does not count) and the entropy-coded data after each start-of-scan (where a
/// 0xFF byte is always followed by a stuffed 0x00 or a restart marker). Anything after the end
/// marker (some cameras append data) is ignored. Not a JPEG, or malformed in a way this walk
/// does not follow: `false`, and the decoder has the last word.
pub fn jpeg_is_truncated(bytes: &[u8]) -> bool {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return false;
    }
    let mut i = 2;
    loop {
        // A marker: 0xFF (possibly repeated as fill), then its code.
        if i >= bytes.len() {
            return true;
        }
        if bytes[i] != 0xFF {
            return false;
        }
        while i < bytes.len() && bytes[i] == 0xFF {
            i += 1;
        }
        let Some(&code) = bytes.get(i) else {
            return true;
        };
        i += 1;
        match code {
            0xD9 => return false,
            // Markers without a length: restart markers and TEM.
            0xD0..=0xD7 | 0x01 => continue,
            _ => {}
        }
        let Some(len) = bytes
            .get(i..i + 2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        else {
            return true;
        };
        if len < 2 {
            return false;
        }
        i += len;
        if i > bytes.len() {
            return true;
        }
        if code == 0xDA {
            // Entropy-coded data runs to the next marker that is not a stuffed byte or a
            // restart marker.
            loop {
                match bytes[i..].iter().position(|&b| b == 0xFF) {
                    None => return true,
                    Some(p) => i += p,
                }
                match bytes.get(i + 1) {
                    None => return true,
                    Some(0x00 | 0xD0..=0xD7) => i += 2,
                    Some(_) => break,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(code: u8, payload: &[u8]) -> Vec<u8> {
        let mut s = vec![0xFF, code];
        s.extend(((payload.len() + 2) as u16).to_be_bytes());
        s.extend(payload);
        s
    }

    #[test]
    fn jpeg_end_marker_walk() {
        // A thumbnail inside APP1 carries its own end marker; only the outer one counts.
        let mut jpeg = vec![0xFF, 0xD8];
        jpeg.extend(segment(0xE1, &[b'E', b'x', 0xFF, 0xD8, 0xFF, 0xD9]));
        jpeg.extend(segment(0xDA, &[1, 2, 3]));
        jpeg.extend([0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD3, 0x56]); // stuffed byte, restart
        let scan_end = jpeg.len();
        jpeg.extend([0xFF, 0xD9]);
        assert!(!jpeg_is_truncated(&jpeg));
        // Trailing data after the end is fine.
        let mut trailing = jpeg.clone();
        trailing.extend(b"camera maker notes");
        assert!(!jpeg_is_truncated(&trailing));
        // Every cut before the end marker is truncated, including inside the thumbnail.
        for cut in 2..jpeg.len() {
            assert!(jpeg_is_truncated(&jpeg[..cut]), "cut at {cut}");
        }
        assert!(jpeg_is_truncated(&jpeg[..scan_end]));
        // Not a JPEG: not ours to judge.
        assert!(!jpeg_is_truncated(b"\x89PNG"));
    }

    #[test]
    fn png_header_gives_the_dimensions_the_decoder_reads() {
        let mut png = Vec::new();
        RgbImage::new(7, 3)
            .write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
            .unwrap();
        assert_eq!(png_dimensions(&png), Some((7, 3)));
        let decoder = ImageReader::with_format(Cursor::new(&png), ImageFormat::Png)
            .into_decoder()
            .unwrap();
        assert_eq!(decoder.dimensions(), (7, 3));
        assert_eq!(png_dimensions(&png[..23]), None, "cut inside the header");
        assert_eq!(png_dimensions(b"GIF89a, then twenty bytes or so"), None);
    }
}
