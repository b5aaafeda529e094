//! Images fitted for a model: an image's header read first (its size and the memory decoding
//! it takes, before anything is allocated for it), decoded strictly within those limits, one
//! decode at a time in the whole server and within the call's time budget, then downscaled
//! and re-encoded until it fits.
//!
//! The bytes come from inside the sandbox: a 134-byte file can declare 16384 x 16384 pixels.

use std::io::Cursor;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest side of an image sent to a model; larger ones are downscaled.
pub const MAX_IMAGE_SIDE: u32 = 1568;
/// Most pixels an image may declare and still be decoded (its header is read first, before
/// anything is allocated for it): a 134-byte file can declare 16384 x 16384.
const DECODE_MAX_PIXELS: u64 = 40_000_000;
/// Most memory one decode may need, counted as its whole working set (a progressive JPEG
/// keeps every coefficient besides its pixels; an animated GIF or WebP a canvas besides the
/// frame), not just the pixels it hands back.
const DECODE_MAX_BYTES: u64 = 192 << 20;
/// Longest a call's images may take to decode, waiting for the decoder included; the images
/// still waiting after it are left out.
pub const RENDER_BUDGET: Duration = Duration::from_secs(20);
/// One decode at a time in the whole server, whatever the number of calls answered at once:
/// the memory images can take is then [`DECODE_MAX_BYTES`], not that times the callers.
static DECODER: Mutex<()> = Mutex::new(());

/// Why an image is not sent as one.
#[derive(Debug)]
pub enum Unfit {
    /// Its header does not read as the format its name says.
    NotAnImage(String),
    /// It is an image, but one that cannot be decoded within the limits, or whole.
    LeftOut(String),
}

/// What an image's header says, read without decoding anything.
struct Header {
    width: u32,
    height: u32,
    /// Most bytes the decoder takes for it, everything it holds at once counted.
    working_set: u64,
}

impl Header {
    fn pixels(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }
}

/// The image's dimensions and the memory decoding it takes, from its header alone.
fn header(bytes: &[u8], format: image::ImageFormat) -> Result<Header, String> {
    use image::ImageDecoder;
    if format == image::ImageFormat::Jpeg {
        let mut decoder = jpeg_decoder(bytes);
        decoder.decode_headers().map_err(|e| e.to_string())?;
        let info = decoder.info().ok_or("no JPEG header")?;
        let (width, height) = (u32::from(info.width), u32::from(info.height));
        let pixels = u64::from(width) * u64::from(height);
        let out = pixels * jpeg_output(&decoder).num_components() as u64;
        // A progressive JPEG holds every coefficient (two bytes a sample, each component at
        // full size, its blocks padded to a whole MCU) until its last scan, then the pixels.
        let coefficients = if info.sof.is_progressive() {
            u64::from(width.div_ceil(16) * 16)
                * u64::from(height.div_ceil(16) * 16)
                * u64::from(info.components)
                * 2
        } else {
            0
        };
        return Ok(Header {
            width,
            height,
            working_set: out + coefficients,
        });
    }
    let decoder = image::ImageReader::with_format(Cursor::new(bytes), format)
        .into_decoder()
        .map_err(|e| e.to_string())?;
    let (width, height) = decoder.dimensions();
    let out = decoder.total_bytes();
    // GIF and WebP compose frames onto a canvas of their own, besides the pixels returned.
    let canvas = match format {
        image::ImageFormat::Gif | image::ImageFormat::WebP => {
            u64::from(width) * u64::from(height) * 4
        }
        _ => 0,
    };
    Ok(Header {
        width,
        height,
        working_set: out.saturating_add(canvas),
    })
}

/// A JPEG decoder that refuses to make up what is not in the file: a truncated or corrupt
/// scan is an error, not an image padded with grey.
fn jpeg_decoder(bytes: &[u8]) -> zune_jpeg::JpegDecoder<zune_core::bytestream::ZCursor<&[u8]>> {
    let options = zune_core::options::DecoderOptions::default()
        .set_strict_mode(true)
        .set_max_width(u16::MAX.into())
        .set_max_height(u16::MAX.into());
    zune_jpeg::JpegDecoder::new_with_options(zune_core::bytestream::ZCursor::new(bytes), options)
}

/// The colour space a JPEG is decoded to: grey stays grey, everything else becomes RGB.
fn jpeg_output<T: zune_core::bytestream::ZByteReaderTrait>(
    decoder: &zune_jpeg::JpegDecoder<T>,
) -> zune_core::colorspace::ColorSpace {
    use zune_core::colorspace::ColorSpace;
    match decoder.input_colorspace() {
        Some(ColorSpace::Luma) => ColorSpace::Luma,
        _ => ColorSpace::RGB,
    }
}

/// The whole image, decoded strictly, under [`DECODE_MAX_BYTES`] as a last line.
fn decode(bytes: &[u8], format: image::ImageFormat) -> Result<image::DynamicImage, String> {
    if format == image::ImageFormat::Jpeg {
        let mut decoder = jpeg_decoder(bytes);
        decoder.decode_headers().map_err(|e| e.to_string())?;
        let colorspace = jpeg_output(&decoder);
        decoder.set_options(decoder.options().jpeg_set_out_colorspace(colorspace));
        let info = decoder.info().ok_or("no JPEG header")?;
        let (width, height) = (u32::from(info.width), u32::from(info.height));
        let pixels = decoder.decode().map_err(|e| e.to_string())?;
        let image = match colorspace {
            zune_core::colorspace::ColorSpace::Luma => {
                image::GrayImage::from_raw(width, height, pixels).map(image::DynamicImage::from)
            }
            _ => image::RgbImage::from_raw(width, height, pixels).map(image::DynamicImage::from),
        };
        return image.ok_or_else(|| "the decoder returned fewer pixels than declared".to_string());
    }
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(DECODE_MAX_BYTES);
    reader.limits(limits);
    reader.decode().map_err(|e| e.to_string())
}

/// Whether the bytes start like an image of `format` (its header is read, nothing decoded).
pub fn is_image(bytes: &[u8], format: image::ImageFormat) -> bool {
    header(bytes, format).is_ok()
}

/// The image as sent: unchanged when it already fits, else decoded (within the limits, one
/// decode at a time, before `deadline`), downscaled to [`MAX_IMAGE_SIDE`] and re-encoded
/// (PNG, else JPEG, smaller until it fits).
pub fn fit_image(
    bytes: &[u8],
    format: image::ImageFormat,
    max_bytes: usize,
    deadline: Instant,
) -> Result<(Vec<u8>, &'static str), Unfit> {
    let header = header(bytes, format)
        .map_err(|e| Unfit::NotAnImage(format!("not a readable image: {e}")))?;
    let (width, height) = (header.width, header.height);
    if width <= MAX_IMAGE_SIDE && height <= MAX_IMAGE_SIDE && bytes.len() <= max_bytes {
        return Ok((bytes.to_vec(), format.to_mime_type()));
    }
    if header.pixels() > DECODE_MAX_PIXELS {
        return Err(Unfit::LeftOut(format!(
            "{width}x{height} pixels, over the {} million an image may have to be decoded",
            DECODE_MAX_PIXELS / 1_000_000
        )));
    }
    if header.working_set > DECODE_MAX_BYTES {
        return Err(Unfit::LeftOut(format!(
            "{width}x{height} pixels would take {} MiB to decode, over the {} MiB allowed",
            header.working_set.div_ceil(1 << 20),
            DECODE_MAX_BYTES >> 20
        )));
    }
    let decoded = {
        let _turn = DECODER
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if Instant::now() >= deadline {
            return Err(Unfit::LeftOut(format!(
                "not decoded: the call's images took over {} s",
                RENDER_BUDGET.as_secs()
            )));
        }
        decode(bytes, format).map_err(|e| Unfit::LeftOut(format!("not decoded whole: {e}")))?
    };
    shrink(&decoded, width.max(height), max_bytes)
}

/// The decoded image downscaled to [`MAX_IMAGE_SIDE`] (its longest side is `longest`) and
/// re-encoded as PNG, else JPEG, smaller until it fits in `max_bytes`.
fn shrink(
    decoded: &image::DynamicImage,
    longest: u32,
    max_bytes: usize,
) -> Result<(Vec<u8>, &'static str), Unfit> {
    let mut side = MAX_IMAGE_SIDE.min(longest);
    loop {
        // `thumbnail` averages into the smaller image directly; `resize` would first build
        // a float copy as tall as the original (hundreds of MiB for a large one).
        let scaled = if longest > side {
            decoded.thumbnail(side, side)
        } else {
            decoded.clone()
        };
        let mut png = Vec::new();
        scaled
            .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
            .map_err(|e| Unfit::LeftOut(format!("could not be re-encoded: {e}")))?;
        if png.len() <= max_bytes {
            return Ok((png, "image/png"));
        }
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85)
            .encode_image(&scaled.to_rgb8())
            .map_err(|e| Unfit::LeftOut(format!("could not be re-encoded: {e}")))?;
        if jpeg.len() <= max_bytes {
            return Ok((jpeg, "image/jpeg"));
        }
        if side <= 64 {
            return Err(Unfit::LeftOut("could not be made small enough".to_string()));
        }
        side = side * 7 / 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::test_images::{jpeg_headers, png};

    #[test]
    fn a_big_image_is_downscaled_and_a_small_one_kept_as_it_is() {
        let small = png(10, 10);
        let (bytes, mime) = fit_image(&small, image::ImageFormat::Png, 1 << 20, later()).unwrap();
        assert_eq!((bytes, mime), (small, "image/png"));
        let big = png(3000, 1000);
        let (bytes, _) = fit_image(&big, image::ImageFormat::Png, 1 << 20, later()).unwrap();
        let (width, height) = image::load_from_memory(&bytes)
            .unwrap()
            .into_rgb8()
            .dimensions();
        assert_eq!((width, height), (MAX_IMAGE_SIDE, 523));
        assert!(bytes.len() <= 1 << 20);
        // A byte limit smaller than the PNG forces JPEG or a smaller size.
        let (bytes, _) = fit_image(&big, image::ImageFormat::Png, 100 << 10, later()).unwrap();
        assert!(bytes.len() <= 100 << 10);
    }

    fn later() -> Instant {
        Instant::now() + RENDER_BUDGET
    }

    fn left_out(result: Result<(Vec<u8>, &'static str), Unfit>) -> String {
        match result {
            Err(Unfit::LeftOut(why)) => why,
            other => panic!(
                "expected the image left out, got {:?}",
                other.map(|(_, m)| m)
            ),
        }
    }

    fn encoded(format: image::ImageFormat, width: u32, height: u32) -> Vec<u8> {
        // Noise, so that no format can shrink it to nothing and a cut loses real data.
        let mut state = 0x2545_F491_u32;
        let image = image::RgbaImage::from_fn(width, height, |_, _| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            image::Rgba([state as u8, (state >> 8) as u8, (state >> 16) as u8, 255])
        });
        let mut bytes = Vec::new();
        let image = image::DynamicImage::from(image);
        let image = if format == image::ImageFormat::Jpeg {
            image::DynamicImage::from(image.to_rgb8())
        } else {
            image
        };
        image
            .write_to(&mut Cursor::new(&mut bytes), format)
            .unwrap();
        bytes
    }

    #[test]
    fn an_image_bomb_is_refused_from_its_header_before_anything_is_allocated() {
        // A PNG header claiming 100000 x 100000 pixels.
        let mut bomb = png(1, 1);
        bomb[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        bomb[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        assert!(fit_image(&bomb, image::ImageFormat::Png, 1 << 20, later()).is_err());
        // The JPEG of the report: grey, progressive, 16384 x 16384, 256 MiB of pixels
        // exactly (what the old limit let through) and 512 MiB of coefficients besides.
        let bomb = jpeg_headers(0xC2, 16384, 16384, 1);
        assert!(bomb.len() < 150, "{}", bomb.len());
        let why = left_out(fit_image(&bomb, image::ImageFormat::Jpeg, 1 << 20, later()));
        assert!(
            why.contains("16384x16384 pixels, over the 40 million"),
            "{why}"
        );
        // Under the pixel limit, but progressive: its coefficients count.
        let progressive = jpeg_headers(0xC2, 6000, 6000, 3);
        let why = left_out(fit_image(
            &progressive,
            image::ImageFormat::Jpeg,
            1 << 20,
            later(),
        ));
        assert!(why.contains("MiB to decode, over the 192 MiB"), "{why}");
        // The same size, baseline: within the limits, so decoded, and found truncated.
        let baseline = jpeg_headers(0xC0, 6000, 6000, 3);
        let why = left_out(fit_image(
            &baseline,
            image::ImageFormat::Jpeg,
            1 << 20,
            later(),
        ));
        assert!(why.starts_with("not decoded whole"), "{why}");
    }

    #[test]
    fn a_truncated_image_is_left_out_not_decoded_as_far_as_it_goes() {
        for format in [
            image::ImageFormat::Png,
            image::ImageFormat::Jpeg,
            image::ImageFormat::Gif,
            image::ImageFormat::WebP,
        ] {
            let whole = encoded(format, 1700, 300);
            let (sent, _) = fit_image(&whole, format, 1 << 20, later())
                .unwrap_or_else(|e| panic!("{format:?} whole: {e:?}"));
            assert!(sent.len() <= 1 << 20);
            let cut = &whole[..whole.len() * 6 / 10];
            let why = left_out(fit_image(cut, format, 1 << 20, later()));
            assert!(why.starts_with("not decoded whole"), "{format:?}: {why}");
        }
    }

    #[test]
    fn past_the_calls_rendering_budget_an_image_is_left_out_undecoded() {
        let big = png(3000, 1000);
        let why = left_out(fit_image(
            &big,
            image::ImageFormat::Png,
            1 << 20,
            Instant::now(),
        ));
        assert!(why.contains("took over 20 s"), "{why}");
        // One that needs no decoding is still sent.
        let small = png(10, 10);
        assert!(fit_image(&small, image::ImageFormat::Png, 1 << 20, Instant::now()).is_ok());
    }
}
