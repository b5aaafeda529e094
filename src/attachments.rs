//! What a call hands back besides its text, as MCP content: figures and image files as
//! `image` blocks (downscaled to fit), text files as embedded text resources, anything else
//! as a blob resource, within the limits in force; one line listing what was left out; and,
//! with `--output-dir`, every file and the full output saved on the host and linked.
//!
//! Everything here comes from inside the sandbox: images are decoded under allocation and
//! size limits, and a name touches the host only after it is reduced to safe characters, in
//! a folder this call created, with files that must not exist yet.

use std::io::Cursor;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use rmcp::model::{ContentBlock, Resource, ResourceContents};

use crate::sandbox::{FileKind, LeftOut, Returned, ReturnedFile};
use crate::settings::OutputConfig;

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
const RENDER_BUDGET: Duration = Duration::from_secs(20);
/// One decode at a time in the whole server, whatever the number of calls answered at once:
/// the memory images can take is then [`DECODE_MAX_BYTES`], not that times the callers.
static DECODER: Mutex<()> = Mutex::new(());
/// Longest "left out" line.
const LEFT_OUT_MAX: usize = 2 << 10;

/// The content blocks for what a call returned (in order), the "left out" line last; the
/// files and output are saved first when an output folder is set. Runs blocking work (image
/// decoding, disk): call it from `spawn_blocking`.
pub fn render(
    returned: Returned,
    output: (&str, &str),
    config: &OutputConfig,
) -> Vec<ContentBlock> {
    let Returned {
        files,
        mut left_out,
    } = returned;
    let mut content = Vec::new();
    let mut images = 0;
    let deadline = Instant::now() + RENDER_BUDGET;
    let mut text_budget = config.max_answer_bytes;
    for file in &files {
        let mime = mime_type(file);
        if let Some(format) = image_format(mime) {
            if images >= config.max_images && is_image(&file.bytes, format) {
                left_out.push(LeftOut {
                    name: file.name.clone(),
                    why: format!(
                        "over the limit of {} images (--max-images)",
                        config.max_images
                    ),
                });
                continue;
            }
            match fit_image(&file.bytes, format, config.max_image_bytes, deadline) {
                Ok((bytes, mime)) => {
                    images += 1;
                    content.push(named_image(&bytes, mime, &file.name));
                    continue;
                }
                // A file named like an image that is not one: returned as the bytes it is.
                Err(Unfit::NotAnImage(_)) if file.kind != FileKind::Figure => {}
                // An image that cannot be sent (too large to decode, truncated, out of
                // time) is named, not passed on as bytes nobody can look at.
                Err(Unfit::NotAnImage(why) | Unfit::LeftOut(why)) => {
                    left_out.push(LeftOut {
                        name: file.name.clone(),
                        why,
                    });
                    continue;
                }
            }
        }
        let uri = format!("file:///tmp/outputs/{}", percent_encode(&file.name));
        match std::str::from_utf8(&file.bytes) {
            Ok(text) if is_text(mime, text) && text.len() <= text_budget => {
                text_budget -= text.len();
                content.push(ContentBlock::resource(
                    ResourceContents::text(text, uri).with_mime_type(mime),
                ));
            }
            _ => content.push(ContentBlock::resource(
                ResourceContents::blob(encode(&file.bytes), uri).with_mime_type(mime),
            )),
        }
    }
    if let Some(line) = left_out_line(&left_out) {
        content.push(ContentBlock::text(line));
    }
    if let Some(dir) = &config.output_dir {
        match save(dir, &files, output, config.output_dir_max) {
            Ok(links) => content.extend(links),
            Err(error) => content.push(ContentBlock::text(format!(
                "note: the files could not be saved under {}: {error}",
                dir.display()
            ))),
        }
    }
    content
}

/// One line naming what was left out and why, cut to a bounded length.
fn left_out_line(left_out: &[LeftOut]) -> Option<String> {
    if left_out.is_empty() {
        return None;
    }
    let mut line = String::from("Left out: ");
    for (shown, item) in left_out.iter().enumerate() {
        let part = format!("{} ({})", item.name, item.why);
        if line.len() + part.len() > LEFT_OUT_MAX {
            line.push_str(&format!("and {} more", left_out.len() - shown));
            return Some(line);
        }
        line.push_str(&part);
        if shown + 1 < left_out.len() {
            line.push_str("; ");
        }
    }
    Some(line)
}

/// The MIME type a file is returned with, from its kind and name.
fn mime_type(file: &ReturnedFile) -> &'static str {
    if file.kind == FileKind::Figure {
        return "image/png";
    }
    let extension = file
        .name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match extension.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "csv" => "text/csv",
        "tsv" => "text/tab-separated-values",
        "json" => "application/json",
        "md" | "markdown" => "text/markdown",
        "html" | "htm" => "text/html",
        "xml" => "application/xml",
        "yaml" | "yml" => "application/yaml",
        "py" => "text/x-python",
        "txt" | "log" | "" => "text/plain",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        _ => "application/octet-stream",
    }
}

fn image_format(mime: &str) -> Option<image::ImageFormat> {
    match mime {
        "image/png" => Some(image::ImageFormat::Png),
        "image/jpeg" => Some(image::ImageFormat::Jpeg),
        "image/gif" => Some(image::ImageFormat::Gif),
        "image/webp" => Some(image::ImageFormat::WebP),
        _ => None,
    }
}

/// Text worth showing as text: a text type, or any UTF-8 without NUL.
fn is_text(mime: &str, text: &str) -> bool {
    let texty = mime.starts_with("text/")
        || matches!(
            mime,
            "application/json" | "application/xml" | "application/yaml" | "image/svg+xml"
        );
    (texty || mime == "application/octet-stream") && !text.contains('\0')
}

/// Why an image is not sent as one.
#[derive(Debug)]
enum Unfit {
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
fn is_image(bytes: &[u8], format: image::ImageFormat) -> bool {
    header(bytes, format).is_ok()
}

/// The image as sent: unchanged when it already fits, else decoded (within the limits, one
/// decode at a time, before `deadline`), downscaled to [`MAX_IMAGE_SIDE`] and re-encoded
/// (PNG, else JPEG, smaller until it fits).
fn fit_image(
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
    let mut side = MAX_IMAGE_SIDE.min(width.max(height));
    loop {
        // `thumbnail` averages into the smaller image directly; `resize` would first build
        // a float copy as tall as the original (hundreds of MiB for a large one).
        let scaled = if width.max(height) > side {
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

/// An image block carrying the file's name in `_meta.name` (image content has no name field).
fn named_image(bytes: &[u8], mime: &str, name: &str) -> ContentBlock {
    let mut meta = rmcp::model::MetaObject::new();
    meta.0.insert("name".to_string(), name.into());
    let mut image = rmcp::model::ImageContent::new(encode(bytes), mime);
    image.meta = Some(meta);
    ContentBlock::Image(image)
}

fn encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A path's characters outside the URI-safe set, percent-encoded (`/` kept).
fn percent_encode(name: &str) -> String {
    let mut encoded = String::new();
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// A name safe to create in a folder: its folders flattened into the name with `__`, every
/// character outside `[A-Za-z0-9._-]` replaced, no leading dot, bounded length.
pub fn safe_name(name: &str) -> String {
    let flat: Vec<String> = name
        .split('/')
        .filter(|part| !part.is_empty() && *part != "." && *part != "..")
        .map(|part| {
            part.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        })
        .collect();
    let joined = flat.join("__");
    let trimmed = joined.trim_start_matches('.');
    let mut safe: String = trimmed.chars().take(200).collect();
    if safe.is_empty() {
        safe = "file".to_string();
    }
    safe
}

/// Saves the call's files under `<dir>/<call>/files/` and its output as `stdout.txt` and
/// `stderr.txt` (`saved`: a new folder, private to this user, the whole folder within
/// `--output-dir-max`), and returns a link to each, with a note for what did not fit.
fn save(
    dir: &Path,
    files: &[ReturnedFile],
    (stdout, stderr): (&str, &str),
    max: u64,
) -> std::io::Result<Vec<ContentBlock>> {
    if files.is_empty() && stdout.is_empty() && stderr.is_empty() {
        return Ok(Vec::new());
    }
    let mut items = Vec::new();
    for (name, text) in [("stdout.txt", stdout), ("stderr.txt", stderr)] {
        if !text.is_empty() {
            items.push(crate::saved::Item {
                name: name.to_string(),
                bytes: text.as_bytes(),
                mime: "text/plain",
                shown: name.to_string(),
            });
        }
    }
    for file in files {
        items.push(crate::saved::Item {
            name: format!("files/{}", safe_name(&file.name)),
            bytes: &file.bytes,
            mime: mime_type(file),
            shown: file.name.clone(),
        });
    }
    let saved = crate::saved::save(dir, &items, max)?;
    let mut content: Vec<ContentBlock> = saved
        .paths
        .iter()
        .map(|(index, path)| {
            let item = &items[*index];
            link(path, &item.shown, item.mime, item.bytes.len())
        })
        .collect();
    if !saved.left_out.is_empty() {
        let names: Vec<&str> = saved
            .left_out
            .iter()
            .map(|&index| items[index].shown.as_str())
            .collect();
        content.push(ContentBlock::text(format!(
            "note: not saved under {}, larger than --output-dir-max ({} MiB) allows: {}",
            dir.display(),
            max >> 20,
            names.join(", ")
        )));
    }
    Ok(content)
}

fn link(path: &Path, name: &str, mime: &str, size: usize) -> ContentBlock {
    let mut resource = Resource::new(
        format!("file://{}", percent_encode(&path.display().to_string())),
        name,
    );
    resource.mime_type = Some(mime.to_string());
    resource.size = Some(size as u64);
    ContentBlock::resource_link(resource)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, bytes: &[u8]) -> ReturnedFile {
        ReturnedFile {
            kind: FileKind::File,
            name: name.to_string(),
            bytes: bytes.to_vec(),
        }
    }

    fn config() -> OutputConfig {
        OutputConfig {
            max_answer_bytes: 1000,
            max_images: 1,
            max_image_bytes: 1 << 20,
            max_files_bytes: 10 << 20,
            output_dir: None,
            output_dir_max: 1 << 30,
        }
    }

    fn png(width: u32, height: u32) -> Vec<u8> {
        let image = image::RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x * y) % 256) as u8])
        });
        let mut bytes = Vec::new();
        image
            .write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png)
            .unwrap();
        bytes
    }

    #[test]
    fn names_that_could_escape_are_flattened_and_cleaned() {
        assert_eq!(safe_name("../../etc/passwd"), "etc__passwd");
        assert_eq!(safe_name("/abs/olute"), "abs__olute");
        assert_eq!(safe_name(".hidden"), "hidden");
        assert_eq!(safe_name("a b\n;rm -rf.csv"), "a_b__rm_-rf.csv");
        assert_eq!(safe_name(".."), "file");
        assert_eq!(safe_name("é.txt"), "_.txt");
        assert_eq!(safe_name(&"x".repeat(500)).len(), 200);
    }

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

    /// A JPEG's headers up to its first scan: SOF `sof` (0xC0 baseline, 0xC2 progressive)
    /// of `width` x `height` with `components`, one quantisation table, one DC and one AC table, and the
    /// first bytes of a scan that ends there, as a 134-byte bomb does.
    fn jpeg_headers(sof: u8, width: u16, height: u16, components: u8) -> Vec<u8> {
        let mut jpeg = vec![0xFF, 0xD8];
        jpeg.extend([0xFF, 0xDB, 0x00, 0x43, 0x00]);
        jpeg.extend([1u8; 64]);
        let sof_length = 8 + 3 * u16::from(components);
        jpeg.extend([0xFF, sof]);
        jpeg.extend(sof_length.to_be_bytes());
        jpeg.push(8);
        jpeg.extend(height.to_be_bytes());
        jpeg.extend(width.to_be_bytes());
        jpeg.push(components);
        for id in 1..=components {
            jpeg.extend([id, 0x11, 0x00]);
        }
        jpeg.extend([0xFF, 0xC4, 0x00, 0x14, 0x00, 0x01]);
        jpeg.extend([0u8; 15]);
        jpeg.push(0x00);
        jpeg.extend([0xFF, 0xC4, 0x00, 0x14, 0x10, 0x01]);
        jpeg.extend([0u8; 15]);
        jpeg.push(0x00);
        let sos_length = 6 + 2 * u16::from(components);
        jpeg.extend([0xFF, 0xDA]);
        jpeg.extend(sos_length.to_be_bytes());
        jpeg.push(components);
        for id in 1..=components {
            jpeg.extend([id, 0x00]);
        }
        jpeg.extend([0x00, 0x00, 0x00]);
        jpeg.extend([0u8; 8]);
        jpeg
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

    #[test]
    fn an_image_file_that_cannot_be_sent_is_named_as_left_out_not_sent_as_bytes() {
        let returned = Returned {
            files: vec![file("bomb.jpg", &jpeg_headers(0xC2, 16384, 16384, 1))],
            left_out: vec![],
        };
        let content = render(returned, ("", ""), &config());
        let json = serde_json::to_value(&content).unwrap();
        assert_eq!(json.as_array().unwrap().len(), 1, "{json:#}");
        let line = json[0]["text"].as_str().unwrap();
        assert!(
            line.starts_with("Left out: bomb.jpg (16384x16384 pixels"),
            "{line}"
        );
    }

    #[test]
    fn files_become_images_text_and_blobs_within_the_limits() {
        let returned = Returned {
            files: vec![
                file("a.png", &png(4, 4)),
                file("fake.png", b"not a png"),
                file("b.png", &png(4, 4)),
                file("data.csv", b"x,y\n1,2\n"),
                file("blob.bin", &[0, 159, 146, 150]),
                file("big.txt", &vec![b'x'; 2000]),
            ],
            left_out: vec![LeftOut {
                name: "link".into(),
                why: "a symbolic link (not followed)".into(),
            }],
        };
        let content = render(returned, ("", ""), &config());
        let json = serde_json::to_value(&content).unwrap();
        let kinds: Vec<&str> = json
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "image", "resource", "resource", "resource", "resource", "text"
            ],
            "{json:#}"
        );
        assert!(
            json[1]["resource"]["blob"].is_string(),
            "not an image: bytes"
        );
        assert_eq!(json[0]["_meta"]["name"], "a.png");
        assert_eq!(json[2]["resource"]["text"], "x,y\n1,2\n");
        assert_eq!(json[2]["resource"]["mimeType"], "text/csv");
        assert_eq!(json[2]["resource"]["uri"], "file:///tmp/outputs/data.csv");
        assert!(json[3]["resource"]["blob"].is_string());
        // Over the text budget: sent as bytes, not as text for the model.
        assert!(json[4]["resource"]["blob"].is_string());
        let line = json[5]["text"].as_str().unwrap();
        assert!(
            line.starts_with("Left out: link (a symbolic link"),
            "{line}"
        );
        assert!(line.contains("b.png (over the limit of 1 images"), "{line}");
    }

    #[test]
    fn saved_files_stay_in_the_calls_own_folder() {
        let dir = std::env::temp_dir().join(format!("pyexec-out-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&dir).unwrap();
        let files = vec![
            file("../../escape.txt", b"1"),
            file("sub/x.csv", b"2"),
            file("sub__x.csv", b"3"),
        ];
        let links = save(&dir, &files, ("out", ""), 1 << 30).unwrap();
        assert_eq!(links.len(), 4);
        let calls: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(calls.len(), 1);
        let call = calls[0].as_ref().unwrap().path();
        let mut saved: Vec<String> = std::fs::read_dir(call.join("files"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        saved.sort();
        assert_eq!(saved, ["escape.txt", "sub__x-2.csv", "sub__x.csv"]);
        assert_eq!(std::fs::read(call.join("stdout.txt")).unwrap(), b"out");
        assert!(!call.join("stderr.txt").exists());
        assert!(!dir.join("escape.txt").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
