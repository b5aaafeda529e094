//! Each call's files and full output saved on the host under `--output-dir`, for the user to
//! open: a new folder per call (`call-<unix time>-<random>`), readable by this user only
//! (folders 0700, files 0600), nothing written outside it, nothing followed or replaced
//! ([`safe_name`] makes a name from inside the sandbox safe to create); and the folder as a
//! whole bounded by `--output-dir-max`: the oldest call folders are removed first to make
//! room, and what alone would not fit is left out and said so. Saving is a step of its own,
//! after a call's answer is rendered; the MCP layer links what was saved.
//!
//! What counts is disk, not content: each file and folder as whole 4 KiB blocks (so many tiny
//! files cannot fill the disk or its inodes under a limit of bytes). The total is counted
//! once (the call folders found at the first save) and then kept as calls are saved and
//! removed, so a save costs no walk of the whole folder. Only folders named as this module
//! names them are ever counted or removed: anything else the user keeps there is left alone.

use std::collections::VecDeque;
use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What `--output-dir` holds of ours: call folders, oldest first, with their sizes.
#[derive(Debug, Default)]
struct Ledger {
    /// The folder it was counted for (the first save's).
    dir: Option<PathBuf>,
    calls: VecDeque<(String, u64)>,
    total: u64,
}

/// What the limit counts for a file or folder: whole 4 KiB blocks, one at least, so that a
/// thousand one-byte files count as the disk (and inodes) they take, not as a kilobyte.
const BLOCK: u64 = 4096;

fn on_disk(len: u64) -> u64 {
    len.div_ceil(BLOCK).max(1) * BLOCK
}

/// One server's view of its `--output-dir`; saves are serialized through it.
static LEDGER: Mutex<Ledger> = Mutex::new(Ledger {
    dir: None,
    calls: VecDeque::new(),
    total: 0,
});

/// One item to save: a name (already safe) and its bytes.
pub struct Item<'a> {
    /// `stdout.txt`, `stderr.txt`, or `files/<safe name>`.
    pub name: String,
    pub bytes: &'a [u8],
    /// What the link says it is.
    pub mime: &'static str,
    /// The name the program gave it (for the link).
    pub shown: String,
}

/// What one save did.
#[derive(Debug)]
pub struct Saved {
    /// Each saved item's path, in order, with its index in the items given.
    pub paths: Vec<(usize, PathBuf)>,
    /// Items left out because they alone would not fit under the limit.
    pub left_out: Vec<usize>,
    /// Call folders removed (oldest first) to make room.
    pub removed: usize,
}

/// Saves `items` in a new call folder under `dir`, removing the oldest call folders first so
/// that the total stays within `max` bytes; an item that does not fit even then is left out.
pub fn save(dir: &Path, items: &[Item<'_>], max: u64) -> std::io::Result<Saved> {
    let mut ledger = LEDGER.lock().unwrap_or_else(|e| e.into_inner());
    if ledger.dir.as_deref() != Some(dir) {
        *ledger = count(dir)?;
    }
    let mut taken = Vec::new();
    // The call's folder and its files/ folder.
    let mut size = 2 * BLOCK;
    let mut left_out = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let bytes = on_disk(item.bytes.len() as u64);
        if size + bytes <= max {
            size += bytes;
            taken.push(index);
        } else {
            left_out.push(index);
        }
    }
    let removed = make_room(&mut ledger, dir, size, max);
    let call = call_id();
    let folder = dir.join(&call);
    let private = |path: &Path| DirBuilder::new().mode(0o700).create(path);
    private(&folder)?;
    let mut paths = Vec::new();
    let mut written = 2 * BLOCK;
    let saving = (|| {
        for &index in &taken {
            let item = &items[index];
            let (parent, name) = match item.name.split_once('/') {
                Some((sub, name)) => {
                    let sub = folder.join(sub);
                    if !sub.exists() {
                        private(&sub)?;
                    }
                    (sub, name)
                }
                None => (folder.clone(), item.name.as_str()),
            };
            paths.push((index, create_new(&parent, name, item.bytes)?));
            written += on_disk(item.bytes.len() as u64);
        }
        Ok::<(), std::io::Error>(())
    })();
    ledger.calls.push_back((call, written));
    ledger.total += written;
    saving?;
    Ok(Saved {
        paths,
        left_out,
        removed,
    })
}

/// Removes the oldest call folders until `size` more bytes fit within `max` (or none is
/// left); returns how many were removed.
fn make_room(ledger: &mut Ledger, dir: &Path, size: u64, max: u64) -> usize {
    let mut removed = 0;
    while ledger.total + size > max {
        let Some((name, bytes)) = ledger.calls.pop_front() else {
            break;
        };
        match std::fs::remove_dir_all(dir.join(&name)) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(folder = %name, %error, "could not remove an old call folder");
            }
        }
        ledger.total = ledger.total.saturating_sub(bytes);
        removed += 1;
    }
    removed
}

/// The call folders under `dir` and their sizes (files counted by their length, links and
/// anything else not followed), oldest first.
fn count(dir: &Path) -> std::io::Result<Ledger> {
    let mut calls = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        if !is_call_folder(&name) || !entry.file_type()?.is_dir() {
            continue;
        }
        calls.push((name, size_of(&entry.path(), 0)));
    }
    calls.sort();
    let total = calls.iter().map(|(_, bytes)| bytes).sum();
    Ok(Ledger {
        dir: Some(dir.to_path_buf()),
        calls: calls.into(),
        total,
    })
}

/// Whether `name` is a folder this module made: `call-<digits>-<8 hex digits>`.
fn is_call_folder(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("call-") else {
        return false;
    };
    let Some((secs, random)) = rest.split_once('-') else {
        return false;
    };
    !secs.is_empty()
        && secs.bytes().all(|b| b.is_ascii_digit())
        && random.len() == 8
        && random.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What the limit counts for the folder `path` and what is in it (two levels at most: files/
/// and what is in it): whole blocks per file and folder, links and the rest one block each.
fn size_of(path: &Path, depth: usize) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return BLOCK;
    };
    BLOCK
        + entries
            .flatten()
            .map(|entry| match entry.file_type() {
                Ok(kind) if kind.is_file() => on_disk(entry.metadata().map_or(0, |m| m.len())),
                Ok(kind) if kind.is_dir() && depth < 2 => size_of(&entry.path(), depth + 1),
                _ => BLOCK,
            })
            .sum::<u64>()
}

/// A folder name for one call: sortable by time, unique.
fn call_id() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("call-{secs:010}-{}", &random[..8])
}

/// Writes a new file in `folder`, readable by this user only (never following a link, never
/// replacing a file); a name taken already gets a number.
fn create_new(folder: &Path, name: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
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
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn tiny_files_count_as_the_blocks_they_take() {
        assert_eq!(on_disk(0), 4096);
        assert_eq!(on_disk(1), 4096);
        assert_eq!(on_disk(4096), 4096);
        assert_eq!(on_disk(4097), 8192);
    }

    #[test]
    fn only_folders_named_as_ours_are_ours() {
        assert!(is_call_folder("call-1733400000-0a1b2c3d"));
        for not_ours in [
            "call-1733400000-0a1b2c3",
            "call--0a1b2c3d",
            "call-17334x0000-0a1b2c3d",
            "photos",
            "call-1733400000-0a1b2c3d/../x",
        ] {
            assert!(!is_call_folder(not_ours), "{not_ours}");
        }
    }
}
