//! What a call hands back besides its text, as MCP content: figures and image files as
//! `image` blocks (downscaled to fit, [`images`](super::images)), text files as embedded
//! text resources, anything else as a blob resource, within the limits in force; one line
//! listing what was left out; and, for what `--output-dir` saved ([`crate::saved`]), a link
//! to each file.
//!
//! Everything here comes from inside the sandbox: images are decoded under allocation and
//! size limits, and a name touches the host only after it is reduced to safe characters, in
//! a folder the call created, with files that must not exist yet.

use std::path::Path;
use std::time::Instant;

use base64::Engine;
use rmcp::model::{ContentBlock, Resource, ResourceContents};

use super::images::{RENDER_BUDGET, Unfit, fit_image, is_image};
use crate::sandbox::{FileKind, LeftOut, ReturnedFile};
use crate::saved::safe_name;
use crate::settings::OutputConfig;

/// Longest "left out" line.
const LEFT_OUT_MAX: usize = 2 << 10;

/// The content blocks for what a call returned (in order), the "left out" line last. Runs
/// blocking work (image decoding): call it from `spawn_blocking`.
pub fn render(
    files: &[ReturnedFile],
    mut left_out: Vec<LeftOut>,
    config: &OutputConfig,
) -> Vec<ContentBlock> {
    let mut content = Vec::new();
    let mut images = 0;
    let deadline = Instant::now() + RENDER_BUDGET;
    let mut text_budget = config.max_answer_bytes;
    for file in files {
        let mime = mime_type(file);
        if let Some(format) = image_format(mime) {
            match image_block(file, format, images, config, deadline) {
                Ok(image) => {
                    images += 1;
                    content.push(image);
                    continue;
                }
                Err(Some(why)) => {
                    left_out.push(LeftOut {
                        name: file.name.clone(),
                        why,
                    });
                    continue;
                }
                // A file named like an image that is not one: returned as the bytes it is.
                Err(None) => {}
            }
        }
        content.push(resource(file, mime, &mut text_budget));
    }
    if let Some(line) = left_out_line(&left_out) {
        content.push(ContentBlock::text(line));
    }
    content
}

/// A file named as an image, as an image block (`images` were sent before it); else why it
/// is left out, or `None` when it is not an image and goes back as the bytes it is.
fn image_block(
    file: &ReturnedFile,
    format: image::ImageFormat,
    images: usize,
    config: &OutputConfig,
    deadline: Instant,
) -> Result<ContentBlock, Option<String>> {
    if images >= config.max_images && is_image(&file.bytes, format) {
        return Err(Some(format!(
            "over the limit of {} images (--max-images)",
            config.max_images
        )));
    }
    match fit_image(&file.bytes, format, config.max_image_bytes, deadline) {
        Ok((bytes, mime)) => Ok(named_image(&bytes, mime, &file.name)),
        Err(Unfit::NotAnImage(_)) if file.kind != FileKind::Figure => Err(None),
        // An image that cannot be sent (too large to decode, truncated, out of time) is
        // named, not passed on as bytes nobody can look at.
        Err(Unfit::NotAnImage(why) | Unfit::LeftOut(why)) => Err(Some(why)),
    }
}

/// A file as an embedded resource: text while it is text and within `text_budget` (which it
/// uses up), else a blob.
fn resource(file: &ReturnedFile, mime: &str, text_budget: &mut usize) -> ContentBlock {
    let uri = format!("file:///tmp/outputs/{}", percent_encode(&file.name));
    match std::str::from_utf8(&file.bytes) {
        Ok(text) if is_text(mime, text) && text.len() <= *text_budget => {
            *text_budget -= text.len();
            ContentBlock::resource(ResourceContents::text(text, uri).with_mime_type(mime))
        }
        _ => ContentBlock::resource(
            ResourceContents::blob(encode(&file.bytes), uri).with_mime_type(mime),
        ),
    }
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

/// With `--output-dir`, the call's files and full output saved there (after the rendering,
/// a step of its own) and linked; a note when they could not be. Blocking (disk).
pub fn save_links(
    files: &[ReturnedFile],
    output: (&str, &str),
    config: &OutputConfig,
) -> Vec<ContentBlock> {
    let Some(dir) = &config.output_dir else {
        return Vec::new();
    };
    match save(dir, files, output, config.output_dir_max) {
        Ok(links) => links,
        Err(error) => vec![ContentBlock::text(format!(
            "note: the files could not be saved under {}: {error}",
            dir.display()
        ))],
    }
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
    use crate::mcp::test_images::{jpeg_headers, png};
    use crate::sandbox::Returned;

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

    #[test]
    fn an_image_file_that_cannot_be_sent_is_named_as_left_out_not_sent_as_bytes() {
        let returned = Returned {
            files: vec![file("bomb.jpg", &jpeg_headers(0xC2, 16384, 16384, 1))],
            left_out: vec![],
        };
        let content = render(&returned.files, returned.left_out, &config());
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
        let content = render(&returned.files, returned.left_out, &config());
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
