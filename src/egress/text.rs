//! Byte-string work for the secrets: finding and replacing a placeholder or a value, and the
//! encodings a value may be echoed in (percent-encoded, JSON-escaped). Pure.

use zeroize::Zeroizing;

/// `value` with every byte but RFC 3986's unreserved ones percent-encoded.
pub(super) fn percent_encoded(value: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(value.len() * 3));
    for &b in value {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
    out
}

/// `value` as a JSON string holds it; `slash`: with `/` escaped too, as some encoders do.
pub(super) fn json_escaped(value: &[u8], slash: bool) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(value.len() * 2));
    for &b in value {
        if matches!(b, b'"' | b'\\') || slash && b == b'/' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

/// Where `needle` first occurs in `haystack` at or after `from`.
pub(super) fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    (from..=haystack.len() - needle.len()).find(|&i| &haystack[i..i + needle.len()] == needle)
}

/// `text` with every `from` replaced by `to`, or `None` when there is none.
pub(super) fn replace(text: &[u8], from: &[u8], to: &[u8]) -> Option<Vec<u8>> {
    let mut at = find(text, from, 0)?;
    let mut out = Vec::with_capacity(text.len() + to.len());
    let mut done = 0;
    loop {
        out.extend_from_slice(&text[done..at]);
        out.extend_from_slice(to);
        done = at + from.len();
        match find(text, from, done) {
            Some(next) => at = next,
            None => break,
        }
    }
    out.extend_from_slice(&text[done..]);
    Some(out)
}
