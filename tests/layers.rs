//! The shape of the crate, checked from its own source: no import circle between source files
//! (read from `crate::`, `super::` and `self::` paths, and a `mod.rs`'s paths into its own
//! children), few long files and no long functions outside the flat lists named here. Test
//! modules (`#[cfg(test)] mod tests`) are left out: they may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Production lines a file may have; at most [`LONG_FILES_ALLOWED`] files go over.
const MAX_FILE_LINES: usize = 400;
const LONG_FILES_ALLOWED: usize = 2;
/// Lines a function may have, unless it is a flat list named in [`FLAT_LISTS`].
const MAX_FN_LINES: usize = 60;
/// Functions that are one flat list (a line per item), long by nature.
const FLAT_LISTS: &[&str] = &[];

/// Every `.rs` file under `src/`, by its path relative to `src/`, without its test module.
fn sources() -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut folders = vec![root.clone()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                let production = match text.find("#[cfg(test)]\nmod tests") {
                    Some(at) => text[..at].to_string(),
                    None => text,
                };
                let name = path
                    .strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                files.insert(name, production);
            }
        }
    }
    files
}

/// The module path of a file: `sandbox/mod.rs` → `[sandbox]`, `lib.rs` → `[]`.
fn module_of(file: &str) -> Vec<String> {
    let mut parts: Vec<String> = file
        .trim_end_matches(".rs")
        .split('/')
        .map(String::from)
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The words of every path in `text` that starts with `crate`, `super` or `self`, or (in a
/// `mod.rs` or `lib.rs`) with one of its own children; a `{a, b::c}` group gives one path each.
fn paths(text: &str, children: &BTreeSet<String>) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let mut at = 0;
    while at < chars.len() {
        if !word(chars[at]) || (at > 0 && (word(chars[at - 1]) || chars[at - 1] == ':')) {
            at += 1;
            continue;
        }
        let mut end = at;
        while end < chars.len() && word(chars[end]) {
            end += 1;
        }
        let first: String = chars[at..end].iter().collect();
        let starts =
            matches!(first.as_str(), "crate" | "super" | "self") || children.contains(&first);
        if !starts || !text[byte(&chars, end)..].starts_with("::") {
            at = end;
            continue;
        }
        let mut segments = vec![first];
        let mut cursor = end;
        loop {
            let rest: String = chars[cursor..chars.len().min(cursor + 2)].iter().collect();
            if rest != "::" {
                break;
            }
            cursor += 2;
            if chars.get(cursor) == Some(&'{') {
                let close = chars[cursor..]
                    .iter()
                    .position(|&c| c == '}')
                    .map_or(chars.len(), |p| cursor + p);
                let group: String = chars[cursor + 1..close].iter().collect();
                for item in group.split(',') {
                    let item: Vec<String> = item
                        .trim()
                        .split("::")
                        .map(|s| s.trim().to_string())
                        .collect();
                    if !item[0].is_empty() {
                        found.push(segments.iter().cloned().chain(item).collect());
                    }
                }
                segments.clear();
                cursor = close;
                break;
            }
            let start = cursor;
            while cursor < chars.len() && word(chars[cursor]) {
                cursor += 1;
            }
            if start == cursor {
                break;
            }
            segments.push(chars[start..cursor].iter().collect());
        }
        if !segments.is_empty() {
            found.push(segments);
        }
        at = cursor.max(end);
    }
    found
}

fn byte(chars: &[char], index: usize) -> usize {
    chars[..index].iter().map(|c| c.len_utf8()).sum()
}

/// The file a path leads into: the deepest module file its words name.
fn target(
    from: &[String],
    path: &[String],
    modules: &BTreeMap<Vec<String>, String>,
) -> Option<String> {
    let (mut base, mut rest) = match path[0].as_str() {
        "crate" => (Vec::new(), &path[1..]),
        "self" => (from.to_vec(), &path[1..]),
        "super" => {
            let mut base = from.to_vec();
            let mut rest = path;
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest = &rest[1..];
            }
            (base, rest)
        }
        _ => (from.to_vec(), path),
    };
    let mut best = None;
    loop {
        if let Some(file) = modules.get(&base) {
            best = Some(file.clone());
        }
        let Some((next, tail)) = rest.split_first() else {
            break;
        };
        base.push(next.clone());
        rest = tail;
    }
    best
}

fn edges() -> BTreeMap<String, BTreeSet<String>> {
    let files = sources();
    let modules: BTreeMap<Vec<String>, String> =
        files.keys().map(|f| (module_of(f), f.clone())).collect();
    let mut edges = BTreeMap::new();
    for (file, text) in &files {
        if file == "main.rs" || file == "lib.rs" {
            continue;
        }
        let from = module_of(file);
        let is_parent = file.ends_with("mod.rs");
        let children: BTreeSet<String> = if is_parent {
            modules
                .keys()
                .filter(|m| m.len() == from.len() + 1 && m.starts_with(&from))
                .map(|m| m.last().unwrap().clone())
                .collect()
        } else {
            BTreeSet::new()
        };
        let mut to = BTreeSet::new();
        for path in paths(text, &children) {
            if let Some(found) = target(&from, &path, &modules)
                && &found != file
                && found != "lib.rs"
            {
                to.insert(found);
            }
        }
        edges.insert(file.clone(), to);
    }
    edges
}

/// One circle of files importing each other, if any.
fn circle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        file: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(file.to_string(), 1);
        stack.push(file.to_string());
        for next in edges.get(file).into_iter().flatten() {
            match state.get(next) {
                Some(1) => {
                    let from = stack.iter().position(|f| f == next).unwrap();
                    let mut found = stack[from..].to_vec();
                    found.push(next.clone());
                    return Some(found);
                }
                Some(_) => {}
                None => {
                    if let Some(found) = visit(next, edges, state, stack) {
                        return Some(found);
                    }
                }
            }
        }
        stack.pop();
        state.insert(file.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for file in edges.keys() {
        if !state.contains_key(file)
            && let Some(found) = visit(file, edges, &mut state, &mut Vec::new())
        {
            return Some(found);
        }
    }
    None
}

#[test]
fn no_source_file_imports_one_that_imports_it_back() {
    let edges = edges();
    assert!(
        edges
            .get("serving.rs")
            .is_some_and(|e| e.contains("sandbox/mod.rs")),
        "the reader sees imports: {edges:?}"
    );
    if let Some(found) = circle(&edges) {
        panic!("an import circle: {}", found.join(" → "));
    }
}

#[test]
fn the_checker_finds_a_circle_through_a_parent_and_its_child() {
    let children: BTreeSet<String> = ["pool".to_string()].into();
    let parent = paths(
        "use pool::Pool;\nuse crate::settings::{Limits, PoolConfig};",
        &children,
    );
    assert_eq!(parent[0], ["pool", "Pool"]);
    assert_eq!(parent[1], ["crate", "settings", "Limits"]);
    assert_eq!(parent[2], ["crate", "settings", "PoolConfig"]);
    let modules: BTreeMap<Vec<String>, String> = [
        (vec!["sandbox".to_string()], "sandbox/mod.rs".to_string()),
        (
            vec!["sandbox".to_string(), "pool".to_string()],
            "sandbox/pool.rs".to_string(),
        ),
    ]
    .into();
    let from = vec!["sandbox".to_string()];
    assert_eq!(
        target(&from, &parent[0], &modules).as_deref(),
        Some("sandbox/pool.rs")
    );
    let child = paths("use super::Sandbox;", &BTreeSet::new());
    let back = target(&["sandbox".into(), "pool".into()], &child[0], &modules);
    assert_eq!(back.as_deref(), Some("sandbox/mod.rs"));
    let edges: BTreeMap<String, BTreeSet<String>> = [
        (
            "sandbox/mod.rs".to_string(),
            ["sandbox/pool.rs".to_string()].into(),
        ),
        (
            "sandbox/pool.rs".to_string(),
            ["sandbox/mod.rs".to_string()].into(),
        ),
    ]
    .into();
    assert!(circle(&edges).is_some());
}

#[test]
fn few_long_files_and_no_long_functions() {
    let files = sources();
    let long: Vec<String> = files
        .iter()
        .filter(|(_, text)| text.lines().count() > MAX_FILE_LINES)
        .map(|(file, text)| format!("{file} ({} lines)", text.lines().count()))
        .collect();
    assert!(
        long.len() <= LONG_FILES_ALLOWED,
        "files over {MAX_FILE_LINES} production lines: {long:?}"
    );
    let mut long_fns = Vec::new();
    for (file, text) in &files {
        let lines: Vec<&str> = text.lines().collect();
        for (at, line) in lines.iter().enumerate() {
            let code = line.trim_start();
            let indent = line.len() - code.len();
            let signature = [
                "fn ",
                "pub fn ",
                "async fn ",
                "pub async fn ",
                "pub(crate) fn ",
                "pub(super) fn ",
                "pub(crate) async fn ",
                "pub(super) async fn ",
            ];
            let Some(rest) = signature.iter().find_map(|s| code.strip_prefix(s)) else {
                continue;
            };
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let close = " ".repeat(indent) + "}";
            let Some(length) = lines[at..].iter().position(|l| *l == close) else {
                continue;
            };
            if length + 1 > MAX_FN_LINES
                && !FLAT_LISTS.contains(&format!("{file}: {name}").as_str())
            {
                long_fns.push(format!("{file}: {name} ({} lines)", length + 1));
            }
        }
    }
    assert!(
        long_fns.is_empty(),
        "functions over {MAX_FN_LINES} lines: {long_fns:#?}"
    );
}
