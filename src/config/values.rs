//! The value parsers the flags share: Docker-style sizes within each flag's range, CPU
//! counts and session lifetimes, each refusing with the range it takes; and the defaults of a
//! group of flags.

/// A session lifetime in seconds: `90`, `90s`, `10m` or `1h`, from 5 s to 24 h.
pub(super) fn session_idle(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().last() {
        Some((at, 's')) => (&text[..at], 1),
        Some((at, 'm')) => (&text[..at], 60),
        Some((at, 'h')) => (&text[..at], 3600),
        _ => (text, 1),
    };
    let seconds = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| format!("`{text}` is not a duration: give seconds, or e.g. 90s, 10m, 1h"))?;
    if !(5..=86_400).contains(&seconds) {
        return Err(format!("`{text}` is out of range: from 5s to 24h"));
    }
    Ok(seconds)
}

/// Parses a Docker-style size: a number with an optional binary unit `b`, `k`, `m` or `g`
/// (also accepted: `kb`/`kib` and so on, any case), as `docker run --memory` does.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let split = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (digits, unit) = lower.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a size; use a number with k, m or g, e.g. 512m"))?;
    let multiplier: u64 = match unit.trim() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit `{other}` in `{text}`; use k, m or g"
            ));
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("`{text}` is too large"))
}

pub(super) fn size_in(
    text: &str,
    min: u64,
    max: u64,
    min_text: &str,
    max_text: &str,
) -> Result<u64, String> {
    let size = parse_size(text)?;
    if size < min || size > max {
        return Err(format!(
            "`{text}` is out of range: use {min_text} to {max_text}"
        ));
    }
    Ok(size)
}

pub(super) fn memory_size(text: &str) -> Result<u64, String> {
    size_in(text, 16 << 20, 64 << 30, "16m", "64g")
}

pub(super) fn output_size(text: &str) -> Result<u64, String> {
    size_in(text, 1 << 10, 64 << 20, "1k", "64m")
}

pub(super) fn image_size(text: &str) -> Result<u64, String> {
    size_in(text, 64 << 10, 16 << 20, "64k", "16m")
}

pub(super) fn files_size(text: &str) -> Result<u64, String> {
    size_in(text, 0, 256 << 20, "0", "256m")
}

pub(super) fn input_size(text: &str) -> Result<u64, String> {
    // The stdio channel refuses lines over 16 MiB (`stdio::MAX_LINE`), and a request carries
    // JSON escaping on top of the code, so a larger limit could never be reached.
    size_in(text, 1 << 10, 12 << 20, "1k", "12m")
}

pub(super) fn queue_size(text: &str) -> Result<u64, String> {
    size_in(text, 1 << 20, 64 << 30, "1m", "64g")
}

pub(super) fn store_size(text: &str) -> Result<u64, String> {
    size_in(text, 1 << 20, 1 << 40, "1m", "1024g")
}

pub(super) fn tmp_size(text: &str) -> Result<u64, String> {
    size_in(text, 1 << 20, 4 << 30, "1m", "4g")
}

pub(super) fn cpus(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number of CPUs, e.g. 1 or 0.5"))?;
    if !(0.05..=64.0).contains(&value) {
        return Err(format!("`{text}` is out of range: use 0.05 to 64 CPUs"));
    }
    Ok(value)
}

/// A group of settings as if no flag was given (environment fallbacks still apply).
pub(super) fn defaults<T: clap::Args + clap::FromArgMatches>() -> T {
    let command = T::augment_args(clap::Command::new("mcp-python-executor"));
    T::from_arg_matches(&command.get_matches_from(["mcp-python-executor"]))
        .expect("the defaults of every setting are valid")
}
