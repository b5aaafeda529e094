//! What a call hands back besides its text, as MCP content: figures and image files as
//! `image` blocks (downscaled to fit), text files as embedded text resources, anything else
//! as a blob resource, within the limits in force; one line listing what was left out; and,
//! with `--output-dir`, every file and the full output saved on the host and linked.
//!
//! Everything here comes from inside the sandbox: images are decoded under allocation and
//! size limits, and a name touches the host only after it is reduced to safe characters, in
//! a folder this call created, with files that must not exist yet.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use base64::Engine;
use rmcp::model::{ContentBlock, Resource, ResourceContents};

use crate::config::OutputConfig;
use crate::sandbox::{FileKind, LeftOut, Returned, ReturnedFile};

/// Longest side of an image sent to a model; larger ones are downscaled.
pub const MAX_IMAGE_SIDE: u32 = 1568;
/// Largest image decoded at all (either side), and most memory a decode may take.
const DECODE_MAX_SIDE: u32 = 16_384;
const DECODE_MAX_ALLOC: u64 = 256 << 20;
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
            match fit_image(&file.bytes, format, config.max_image_bytes) {
                Ok((bytes, mime)) => {
                    images += 1;
                    content.push(named_image(&bytes, mime, &file.name));
                    continue;
                }
                Err(why) if file.kind == FileKind::Figure => {
                    left_out.push(LeftOut {
                        name: file.name.clone(),
                        why,
                    });
                    continue;
                }
                // A file named like an image that is not one: returned as the bytes it is.
                Err(_) => {}
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
        match save(dir, &files, output) {
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

/// A decoder for `bytes` that refuses images over [`DECODE_MAX_SIDE`] or
/// [`DECODE_MAX_ALLOC`] before it allocates for them.
fn limited_reader(bytes: &[u8], format: image::ImageFormat) -> image::ImageReader<Cursor<&[u8]>> {
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(DECODE_MAX_SIDE);
    limits.max_image_height = Some(DECODE_MAX_SIDE);
    limits.max_alloc = Some(DECODE_MAX_ALLOC);
    reader.limits(limits);
    reader
}

/// Whether the bytes start like an image of `format` (its header is read, nothing decoded).
fn is_image(bytes: &[u8], format: image::ImageFormat) -> bool {
    limited_reader(bytes, format).into_dimensions().is_ok()
}

/// The image as sent: unchanged when it already fits, else decoded (under limits),
/// downscaled to [`MAX_IMAGE_SIDE`] and re-encoded (PNG, else JPEG, smaller until it fits).
fn fit_image(
    bytes: &[u8],
    format: image::ImageFormat,
    max_bytes: usize,
) -> Result<(Vec<u8>, &'static str), String> {
    let (width, height) = limited_reader(bytes, format)
        .into_dimensions()
        .map_err(|e| format!("not a readable image: {e}"))?;
    if width <= MAX_IMAGE_SIDE && height <= MAX_IMAGE_SIDE && bytes.len() <= max_bytes {
        return Ok((bytes.to_vec(), format.to_mime_type()));
    }
    let decoded = limited_reader(bytes, format)
        .decode()
        .map_err(|e| format!("not a readable image: {e}"))?;
    let mut side = MAX_IMAGE_SIDE.min(width.max(height));
    loop {
        let scaled = if width.max(height) > side {
            decoded.resize(side, side, image::imageops::FilterType::Triangle)
        } else {
            decoded.clone()
        };
        let mut png = Vec::new();
        scaled
            .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
            .map_err(|e| format!("could not be re-encoded: {e}"))?;
        if png.len() <= max_bytes {
            return Ok((png, "image/png"));
        }
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85)
            .encode_image(&scaled.to_rgb8())
            .map_err(|e| format!("could not be re-encoded: {e}"))?;
        if jpeg.len() <= max_bytes {
            return Ok((jpeg, "image/jpeg"));
        }
        if side <= 64 {
            return Err("could not be made small enough".to_string());
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
/// `stderr.txt`, and returns a link to each. Nothing is written outside the call's new
/// folder, and nothing that exists is overwritten.
fn save(
    dir: &Path,
    files: &[ReturnedFile],
    (stdout, stderr): (&str, &str),
) -> std::io::Result<Vec<ContentBlock>> {
    if files.is_empty() && stdout.is_empty() && stderr.is_empty() {
        return Ok(Vec::new());
    }
    let call = dir.join(call_id());
    std::fs::create_dir(&call)?;
    let mut links = Vec::new();
    for (name, text) in [("stdout.txt", stdout), ("stderr.txt", stderr)] {
        if !text.is_empty() {
            let path = create_new(&call, name, text.as_bytes())?;
            links.push(link(&path, name, "text/plain", text.len()));
        }
    }
    if !files.is_empty() {
        let folder = call.join("files");
        std::fs::create_dir(&folder)?;
        for file in files {
            let path = create_new(&folder, &safe_name(&file.name), &file.bytes)?;
            links.push(link(&path, &file.name, mime_type(file), file.bytes.len()));
        }
    }
    Ok(links)
}

/// A folder name for one call: sortable by time, unique.
fn call_id() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("call-{secs}-{}", &random[..8])
}

/// Writes a new file in `folder` (never following a link, never replacing a file); a name
/// taken already gets a number.
fn create_new(folder: &Path, name: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    for attempt in 1..=100 {
        let candidate = if attempt == 1 {
            name.to_string()
        } else {
            match name.rsplit_once('.') {
                Some((stem, extension)) if !stem.is_empty() => {
                    format!("{stem}-{attempt}.{extension}")
                }
                _ => format!("{name}-{attempt}"),
            }
        };
        let path = folder.join(&candidate);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
        {
            Ok(mut created) => {
                created.write_all(bytes)?;
                return Ok(path);
            }
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(error),
        }
    }
    Err(std::io::Error::other(format!(
        "too many files named {name}"
    )))
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
        let (bytes, mime) = fit_image(&small, image::ImageFormat::Png, 1 << 20).unwrap();
        assert_eq!((bytes, mime), (small, "image/png"));
        let big = png(3000, 1000);
        let (bytes, _) = fit_image(&big, image::ImageFormat::Png, 1 << 20).unwrap();
        let (width, height) = image::load_from_memory(&bytes)
            .unwrap()
            .into_rgb8()
            .dimensions();
        assert_eq!((width, height), (MAX_IMAGE_SIDE, 523));
        assert!(bytes.len() <= 1 << 20);
        // A byte limit smaller than the PNG forces JPEG or a smaller size.
        let (bytes, _) = fit_image(&big, image::ImageFormat::Png, 100 << 10).unwrap();
        assert!(bytes.len() <= 100 << 10);
    }

    #[test]
    fn an_image_bomb_is_refused_before_it_is_decoded() {
        // A PNG header claiming 100000 x 100000 pixels.
        let mut bomb = png(1, 1);
        bomb[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        bomb[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        assert!(fit_image(&bomb, image::ImageFormat::Png, 1 << 20).is_err());
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
        let links = save(&dir, &files, ("out", "")).unwrap();
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
