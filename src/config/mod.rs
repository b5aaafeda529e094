//! Every setting of the server in one place: its flag, its `PYEXEC_` environment fallback,
//! its default and its valid range. The top of the crate: it knows every subsystem's
//! settings type (`crate::settings`), and nothing below imports it.
//!
//! Each group of flags is a clap `Args` struct with a `resolve` that turns it into the
//! validated settings the rest of the program uses, so a value out of range is refused at
//! start with a message naming the flag and the variable, never discovered mid-call.

mod egress;
mod environment;
mod http;
mod image_build;
mod sandbox;
mod secrets;
mod values;

pub use crate::settings::{
    DEFAULT_ENV_TAG, DEFAULT_IMAGE, EnvironmentConfig, Limits, OutputConfig, PoolConfig,
    SandboxConfig, SessionConfig,
};
pub use egress::EgressArgs;
pub use environment::EnvironmentArgs;
pub use http::HttpArgs;
pub use image_build::ImageBuildArgs;
pub use sandbox::{SandboxArgs, workspace};
pub use values::parse_size;

#[cfg(test)]
mod tests {
    use super::values::*;
    use super::*;
    use std::time::Duration;

    #[test]
    fn session_lifetimes_take_seconds_or_a_unit_within_range() {
        assert_eq!(session_idle("600"), Ok(600));
        assert_eq!(session_idle("90s"), Ok(90));
        assert_eq!(session_idle("10m"), Ok(600));
        assert_eq!(session_idle(" 1h "), Ok(3600));
        for bad in [
            "",
            "m",
            "-5",
            "4s",
            "25h",
            "1d",
            "1.5h",
            "99999999999999999999h",
            "10 m",
        ] {
            assert!(session_idle(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn sizes_use_docker_binary_units() {
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("100"), Ok(100));
        assert_eq!(parse_size(" 2 mb "), Ok(2 << 20));
    }

    #[test]
    fn bad_sizes_are_refused_with_a_hint() {
        assert!(parse_size("").unwrap_err().contains("512m"));
        assert!(parse_size("12q").unwrap_err().contains("unit"));
        assert!(parse_size("-1m").is_err());
        assert!(
            parse_size("99999999999999g")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn out_of_range_values_name_the_range() {
        assert!(memory_size("1m").unwrap_err().contains("16m to 64g"));
        assert!(output_size("100g").is_err());
        assert!(cpus("0").unwrap_err().contains("0.05"));
        assert!(cpus("lots").is_err());
        assert_eq!(cpus("1.5"), Ok(1.5));
    }

    #[test]
    fn defaults_resolve_to_the_documented_limits() {
        let config = SandboxArgs::default().resolve().unwrap();
        assert_eq!(config.image, DEFAULT_IMAGE);
        assert_eq!(config.network, "none");
        assert_eq!(config.limits.timeout, Duration::from_secs(30));
        assert_eq!(config.limits.memory_bytes, 512 << 20);
        assert_eq!(config.limits.nano_cpus, 1_000_000_000);
        assert_eq!(config.limits.pids, 128);
        assert_eq!(config.limits.max_output_bytes, 1 << 20);
        assert!(config.concurrency >= 2);
        assert_eq!(config.outputs.max_answer_bytes, 64 << 10);
        assert_eq!(config.outputs.max_images, 8);
        assert_eq!(config.outputs.max_image_bytes, 1 << 20);
        assert_eq!(config.outputs.max_files_bytes, 10 << 20);
        assert_eq!(config.outputs.output_dir, None);
        assert_eq!(config.workspace, None);
    }

    #[test]
    fn http_needs_a_token_and_never_serves_other_machines_without_one() {
        let args = |argv: &[&str]| {
            #[derive(clap::Parser)]
            struct Cli {
                #[command(flatten)]
                http: HttpArgs,
            }
            let argv = std::iter::once("x").chain(argv.iter().copied());
            <Cli as clap::Parser>::try_parse_from(argv).unwrap().http
        };
        assert!(
            args(&[]).resolve(1 << 20).unwrap().is_none(),
            "stdio by default"
        );
        let error = args(&["--http"]).resolve(1 << 20).unwrap_err().to_string();
        assert!(error.contains("needs a token"), "{error}");
        let open = args(&["--http", "--http-insecure-no-auth"])
            .resolve(1 << 20)
            .unwrap()
            .unwrap();
        assert_eq!(open.addr.to_string(), crate::settings::DEFAULT_ADDR);
        assert!(open.tokens.is_none());
        let error = args(&["--http", "0.0.0.0:8808", "--http-insecure-no-auth"])
            .resolve(1 << 20)
            .unwrap_err()
            .to_string();
        assert!(error.contains("reachable from other machines"), "{error}");
        let served = args(&[
            "--http",
            "0.0.0.0:8808",
            "--http-token",
            "t-0123456789abcdef",
        ])
        .resolve(1 << 20)
        .unwrap()
        .unwrap();
        assert!(served.tokens.is_some());
        assert!(
            served
                .allowed_origins
                .iter()
                .all(|o| o.starts_with("http://"))
        );
        let error = args(&["--http", "--http-token", "short"])
            .resolve(1 << 20)
            .unwrap_err()
            .to_string();
        assert!(error.contains("at least 16"), "{error}");
        assert!(
            !error.contains("short"),
            "the token is never shown: {error}"
        );
    }

    #[test]
    fn a_workspace_that_would_expose_the_host_is_refused() {
        let root = std::env::temp_dir().join(format!("pyexec-ws-{}", std::process::id()));
        let home = root.join("home");
        let data = home.join("data");
        let run = root.join("run");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::create_dir_all(&run).unwrap();
        let socket = run.join("docker.sock");
        std::fs::write(&socket, b"").unwrap();
        // The second socket is the one that matters: every one listed is checked.
        let sockets = [root.join("elsewhere/docker.sock"), socket.clone()];
        let check = |dir: &std::path::Path| workspace(dir, &sockets, Some(&home));
        assert_eq!(check(&data).unwrap(), data.canonicalize().unwrap());
        let refused = |dir: &std::path::Path, why: &str| {
            let error = check(dir).unwrap_err().to_string();
            assert!(error.contains(why), "{dir:?}: {error}");
        };
        refused(std::path::Path::new("/"), "whole host");
        refused(&home, "home folder itself");
        refused(&run, "Docker socket");
        refused(&root, "Docker socket");
        // A path with .. that resolves to the home is the home.
        refused(&data.join(".."), "home folder itself");
        refused(&root.join("missing"), "existing folder");
        // A symlink to the socket's folder is that folder.
        let link = data.join("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&run, &link).unwrap();
        refused(&link, "Docker socket");
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// Suite and mirror reach debootstrap's command line: a value that would read as an option
    /// there (`--foreign`, `--keyring=…`) or is no mirror URL is refused at start.
    #[test]
    fn image_build_refuses_a_suite_or_mirror_that_debootstrap_would_read_as_an_option() {
        #[derive(clap::Parser)]
        struct Flags {
            #[command(flatten)]
            args: ImageBuildArgs,
        }
        let plan = |extra: &[&str]| {
            let argv = std::iter::once("x").chain(extra.iter().copied());
            <Flags as clap::Parser>::try_parse_from(argv)
                .unwrap()
                .args
                .resolve("img:1")
        };
        assert!(plan(&[]).is_ok());
        assert!(plan(&["--debian-mirror", "file:///srv/debian"]).is_ok());
        for hostile in [
            &["--debian-suite=--foreign"][..],
            &["--debian-suite=-x"],
            &["--debian-suite=../etc"],
            &["--debian-mirror=--keyring=/tmp/k"],
            &["--debian-mirror=ftp://x"],
            &["--debian-mirror=http://a b"],
        ] {
            assert!(plan(hostile).is_err(), "{hostile:?} was accepted");
        }
    }
}
