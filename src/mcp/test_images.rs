//! Images the MCP layer's unit tests feed in: a real PNG and a JPEG's bare headers (the
//! shape of a decompression bomb). Compiled for tests only.

use std::io::Cursor;

/// A noisy RGB PNG of `width` x `height`.
pub fn png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x * y) % 256) as u8])
    });
    let mut bytes = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png)
        .unwrap();
    bytes
}

/// A JPEG's headers up to its first scan: SOF `sof` (0xC0 baseline, 0xC2 progressive)
/// of `width` x `height` with `components`, one quantisation table, one DC and one AC table, and the
/// first bytes of a scan that ends there, as a 134-byte bomb does.
pub fn jpeg_headers(sof: u8, width: u16, height: u16, components: u8) -> Vec<u8> {
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
