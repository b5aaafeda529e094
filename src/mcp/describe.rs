//! The tools' descriptions, which state the limits in force: what a model reads before it
//! calls, so each limit it could run into is there.

use crate::settings::SandboxConfig;

/// The tool description: what is available and the limits in force.
pub fn execute_description(config: &SandboxConfig) -> String {
    let limits = &config.limits;
    let network = network(config);
    let outputs = &config.outputs;
    let returned = if outputs.max_files_bytes > 0 {
        format!(
            " Figures come back as images: matplotlib needs no setup; call plt.show() or leave \
             figures open. Files the program writes to /tmp/outputs/ come back too (images as \
             images, text as text): at most {images} images (larger ones are downscaled), \
             {files} MiB of files in all.",
            images = outputs.max_images,
            files = outputs.max_files_bytes as f64 / (1 << 20) as f64,
        )
    } else {
        String::new()
    };
    let workspace = if config.workspace.is_some() {
        " The user's data is readable (not writable) under /workspace."
    } else {
        ""
    };
    let sessions = if config.sessions.max > 0 {
        format!(
            " With `session_id` from create_session, the code runs in that session's \
             interpreter instead, with the variables, imports, functions and /tmp files of its \
             earlier calls (an exception ends the call, not the session; exit() ends the \
             session). Use a session for multi-step work on the same data (load once, then \
             ask several questions); leave it out for independent snippets. A session runs \
             one call at a time and closes {idle} without a call or {age} after creation.",
            idle = minutes(config.sessions.idle),
            age = minutes(config.sessions.max_age),
        )
    } else {
        String::new()
    };
    format!(
        "Run Python 3 code in a fresh, isolated container and return its stdout, stderr and \
         exit code. Without session_id each call is a new interpreter: no variables, files or \
         imports are kept between calls.{sessions} `inputData` lines are the program's stdin. The standard library and \
         packages installed with install_packages are available. {network} Only /tmp is \
         writable ({tmp} MiB).{workspace}{returned} Limits per call: {timeout} s wall clock, \
         {memory} MiB memory, {cpus} CPU, {pids} processes. Output in the answer: {answer} KiB \
         of text in all; past that the start and the end of each stream are kept (so the \
         traceback is always there) and the middle is left out and marked. Print results you \
         want to see; print summaries rather than whole large tables.",
        tmp = limits.tmp_bytes >> 20,
        timeout = limits.timeout.as_secs(),
        memory = limits.memory_bytes >> 20,
        cpus = limits.nano_cpus as f64 / 1e9,
        pids = limits.pids,
        answer = outputs.max_answer_bytes >> 10,
    )
}

/// What the program can reach: nothing, the allowlist through the proxy, or a Docker network.
fn network(config: &SandboxConfig) -> String {
    if let Some(egress) = &config.egress {
        let hosts: Vec<&str> = egress.allow.patterns().collect();
        let secrets = egress
            .secrets
            .as_deref()
            .map(credentials)
            .unwrap_or_default();
        format!(
            "Network: only these hosts, through an HTTP proxy the environment already names \
             (HTTP_PROXY/HTTPS_PROXY; urllib, requests, httpx and curl use it): {}; without \
             a port, 80 and 443. Nothing else is reachable and there is no DNS; a refused \
             request gets HTTP 403 saying why. At most {} in and out per call.{secrets}",
            hosts.join(", "),
            size(egress.max_bytes),
        )
    } else if config.network == "none" {
        "There is no network access.".to_string()
    } else {
        format!("Network: Docker network `{}`.", config.network)
    }
}

/// The credentials a program may use (`--secret`), by name and host: never their values.
fn credentials(secrets: &crate::egress::Secrets) -> String {
    let each: Vec<String> = secrets
        .iter()
        .map(|s| {
            let hosts: Vec<String> = s.hosts().iter().map(|(h, p)| format!("{h}:{p}")).collect();
            format!("{} (for {})", s.name(), hosts.join(", "))
        })
        .collect();
    format!(
        " Credentials: the environment variables {} hold placeholders; use them as the real \
         key (a header such as Authorization, or the URL) in https requests to their hosts, \
         and the proxy puts the real value in. Printing one shows only the placeholder; sent \
         anywhere else it is refused.",
        each.join(", ")
    )
}

/// `create_session`'s description: when to use a session, and its limits.
pub fn create_session_description(config: &SandboxConfig) -> String {
    let limits = &config.limits;
    format!(
        "Open a session: a Python interpreter in its own isolated container that keeps its \
         state between execute_python calls given its session_id (variables, imports, \
         functions, files under /tmp). Use one for multi-step work on the same data, e.g. \
         load a large file once and then ask several questions about it; do not use one for \
         independent snippets (plain execute_python calls start clean). Limits: at most \
         {max} sessions open at once; a session closes {idle} without a call and {age} after \
         creation, or with close_session (close it when done); one call at a time, each \
         interrupted after {timeout} s; {memory} MiB memory, {tmp} MiB of /tmp and \
         {pids} processes for the whole session; no network unless the server allows it. \
         Packages installed later are seen only by sessions created after the install.",
        max = config.sessions.max,
        idle = minutes(config.sessions.idle),
        age = minutes(config.sessions.max_age),
        timeout = limits.timeout.as_secs(),
        memory = limits.memory_bytes >> 20,
        tmp = limits.tmp_bytes >> 20,
        pids = limits.pids,
    )
}

/// A size as a model reads it: "64 MiB", "1.5 GiB", "512 KiB".
fn size(bytes: u64) -> String {
    let (value, unit) = match bytes {
        b if b >= 1 << 30 => (b as f64 / (1u64 << 30) as f64, "GiB"),
        b if b >= 1 << 20 => (b as f64 / (1u64 << 20) as f64, "MiB"),
        b => (b as f64 / 1024.0, "KiB"),
    };
    let text = format!("{value:.1}");
    format!("{} {unit}", text.trim_end_matches(".0"))
}

/// A lifetime as a model reads it: "10 min", "1 h", "45 s".
pub fn minutes(duration: std::time::Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        s if s % 3600 == 0 => format!("{} h", s / 3600),
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SandboxArgs;

    #[test]
    fn the_description_names_the_allowed_hosts_and_the_byte_limit() {
        let mut args = SandboxArgs::default();
        assert!(
            execute_description(&args.resolve().unwrap()).contains("There is no network access.")
        );
        args.egress.allow_host = vec!["api.github.com, *.githubusercontent.com".to_string()];
        args.egress.egress_max_bytes = 512 << 10;
        let text = execute_description(&args.resolve().unwrap());
        assert!(
            text.contains(": api.github.com, *.githubusercontent.com; without a port, 80 and 443."),
            "{text}"
        );
        assert!(
            text.contains("At most 512 KiB in and out per call."),
            "{text}"
        );
        assert!(!text.contains("  "), "no broken line continuation: {text}");
    }
}
