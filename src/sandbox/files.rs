//! The files a call hands back: the runner's bundle (figures the program drew, then what it
//! left in `/tmp/outputs`) checked and split into named files, plus what was left out.
//!
//! The bundle is read from inside the sandbox, so it is checked like any other input: the
//! manifest must be well formed, its sizes must add up to exactly the bytes that follow, and
//! names are kept as plain text (they are made safe again wherever they touch the host).

use serde::Deserialize;

use super::protocol::{Bundle, MANIFEST_MAX};

/// Longest name kept; longer ones are cut.
const NAME_MAX: usize = 255;

/// Where a returned file came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A matplotlib figure the program showed or left open.
    Figure,
    /// A file the program left in `/tmp/outputs`.
    File,
}

/// One file handed back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnedFile {
    pub kind: FileKind,
    /// Its name: for a file, the path under `/tmp/outputs` (`/` between folders).
    pub name: String,
    pub bytes: Vec<u8>,
}

/// Something that was not handed back, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftOut {
    pub name: String,
    pub why: String,
}

/// Everything a call hands back besides its output.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Returned {
    pub files: Vec<ReturnedFile>,
    pub left_out: Vec<LeftOut>,
}

#[derive(Deserialize)]
struct Item {
    kind: String,
    name: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    skipped: Option<String>,
}

impl Returned {
    /// Splits the runner's bundle; a malformed one gives no files and says so.
    pub fn from_bundle(bundle: Bundle, limit: usize) -> Self {
        match bundle {
            Bundle::None => Self::default(),
            Bundle::Refused(size) => Self::failed(format!(
                "the files were {size} bytes, over the {limit}-byte limit (--max-files)"
            )),
            Bundle::Whole(bytes) => {
                Self::parse(&bytes).unwrap_or_else(|why| Self::failed(why.to_string()))
            }
        }
    }

    fn failed(why: String) -> Self {
        Self {
            files: Vec::new(),
            left_out: vec![LeftOut {
                name: "all files".to_string(),
                why,
            }],
        }
    }

    fn parse(bytes: &[u8]) -> Result<Self, &'static str> {
        let end = bytes
            .iter()
            .take(MANIFEST_MAX)
            .position(|&b| b == b'\n')
            .ok_or("the list of files was malformed")?;
        let items: Vec<Item> =
            serde_json::from_slice(&bytes[..end]).map_err(|_| "the list of files was malformed")?;
        let mut rest = &bytes[end + 1..];
        let mut returned = Self::default();
        for item in items {
            let kind = match item.kind.as_str() {
                "figure" => FileKind::Figure,
                "file" => FileKind::File,
                _ => return Err("the list of files was malformed"),
            };
            let name = clean_name(&item.name);
            if let Some(why) = item.skipped {
                let why = match item.size {
                    Some(size) if why == "over the limit" => {
                        format!("{size} bytes: over the limit for files (--max-files)")
                    }
                    _ => clean_name(&why),
                };
                returned.left_out.push(LeftOut { name, why });
                continue;
            }
            let size = item.size.ok_or("the list of files was malformed")? as usize;
            if size > rest.len() {
                return Err("the files were shorter than their list said");
            }
            let (data, after) = rest.split_at(size);
            rest = after;
            returned.files.push(ReturnedFile {
                kind,
                name,
                bytes: data.to_vec(),
            });
        }
        if !rest.is_empty() {
            return Err("the files were longer than their list said");
        }
        Ok(returned)
    }
}

/// A name as plain, printable text of bounded length.
fn clean_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    match cleaned.char_indices().nth(NAME_MAX) {
        Some((at, _)) => format!("{}…", &cleaned[..at]),
        None => cleaned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(manifest: &str, data: &[u8]) -> Bundle {
        let mut bytes = manifest.as_bytes().to_vec();
        bytes.push(b'\n');
        bytes.extend_from_slice(data);
        Bundle::Whole(bytes)
    }

    #[test]
    fn files_and_left_outs_come_out_in_order() {
        let returned = Returned::from_bundle(
            bundle(
                r#"[{"kind":"figure","name":"figure-001.png","size":3},
                    {"kind":"file","name":"link","skipped":"a symbolic link (not followed)"},
                    {"kind":"file","name":"a/b.csv","size":4},
                    {"kind":"file","name":"big","skipped":"over the limit","size":99}]"#
                    .replace('\n', " ")
                    .as_str(),
                b"PNGa,b\n",
            ),
            10,
        );
        assert_eq!(returned.files.len(), 2);
        assert_eq!(returned.files[0].kind, FileKind::Figure);
        assert_eq!(returned.files[0].bytes, b"PNG");
        assert_eq!(returned.files[1].name, "a/b.csv");
        assert_eq!(returned.files[1].bytes, b"a,b\n");
        assert_eq!(returned.left_out.len(), 2);
        assert!(returned.left_out[0].why.contains("not followed"));
        assert!(returned.left_out[1].why.contains("99 bytes"));
    }

    #[test]
    fn a_bundle_that_does_not_add_up_gives_no_files() {
        for (manifest, data) in [
            (r#"[{"kind":"file","name":"a","size":5}]"#, &b"abc"[..]),
            (r#"[{"kind":"file","name":"a","size":1}]"#, &b"abc"[..]),
            (r#"[{"kind":"evil","name":"a","size":3}]"#, &b"abc"[..]),
            (r#"[{"kind":"file","name":"a"}]"#, &b"abc"[..]),
            ("not json", &b""[..]),
        ] {
            let returned = Returned::from_bundle(bundle(manifest, data), 100);
            assert!(returned.files.is_empty(), "{manifest}");
            assert_eq!(returned.left_out.len(), 1, "{manifest}");
        }
        let refused = Returned::from_bundle(Bundle::Refused(500), 100);
        assert!(refused.left_out[0].why.contains("--max-files"));
    }

    #[test]
    fn names_are_printable_and_bounded() {
        assert_eq!(clean_name("a\nb\u{1b}[31m"), "a?b?[31m");
        assert_eq!(clean_name(&"x".repeat(1000)).chars().count(), NAME_MAX + 1);
    }
}
