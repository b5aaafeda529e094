//! `DOCKER_HOST=ssh://[user@]host[:port]`, reached the way the Docker CLI reaches it: every
//! connection to the engine is `ssh … docker system dial-stdio` on the remote host, and the
//! engine's HTTP API travels over that process's stdin and stdout.
//!
//! Owns the URL's checks (no option can be smuggled into ssh's command line), the ssh command
//! (`BatchMode`, so an unknown host key or a missing key fails instead of prompting, and a
//! connect timeout), the connector hyper pools these connections with, and what ssh said when
//! a connection failed, so the error names the cause ("Permission denied (publickey)", "Host
//! key verification failed"). Keys, known hosts and every other ssh setting are the user's own
//! (`~/.ssh/config`, ssh-agent). An ssh process lives as long as its pooled connection, and
//! ends with it or when this process ends (its stdin closes).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bollard::{BollardRequest, Docker};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// How long ssh may take to reach the host.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request to the engine may take (as bollard's default).
const REQUEST_TIMEOUT: u64 = 120;

/// Where an `ssh://` URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

impl SshTarget {
    /// Parses `ssh://[user@]host[:port]`. Anything ssh could read as an option, and anything
    /// the Docker CLI would not accept (a path, a query), is refused with the reason.
    pub fn parse(url: &str) -> Result<SshTarget, String> {
        let rest = url
            .strip_prefix("ssh://")
            .ok_or_else(|| "not an ssh:// URL".to_string())?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            return Err("an ssh:// DOCKER_HOST takes no path or query".to_string());
        }
        let (user, hostport) = match rest.rsplit_once('@') {
            Some((user, hostport)) => (Some(user), hostport),
            None => (None, rest),
        };
        let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| "an IPv6 host needs its closing ]".to_string())?;
            (host, after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (hostport, None),
            }
        };
        let port = match port {
            Some(port) => Some(
                port.parse::<u16>()
                    .ok()
                    .filter(|port| *port > 0)
                    .ok_or_else(|| format!("{port:?} is not a port"))?,
            ),
            None => None,
        };
        let fine = |text: &str, extra: &[char]| {
            !text.is_empty()
                && !text.starts_with('-')
                && text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c) || extra.contains(&c))
        };
        if !fine(host, &[':']) {
            return Err(format!("{host:?} is not a host name or address"));
        }
        if let Some(user) = user
            && !fine(user, &[])
        {
            return Err(format!("{user:?} is not a user name"));
        }
        Ok(SshTarget {
            user: user.map(String::from),
            host: host.to_string(),
            port,
        })
    }

    /// ssh's arguments for one connection: options first, `--`, then the host and the remote
    /// command, so nothing after `--` is read as an option.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "-o".to_string(),
            "BatchMode=yes".to_string(),
            "-o".to_string(),
            format!("ConnectTimeout={}", CONNECT_TIMEOUT.as_secs()),
            "-T".to_string(),
        ];
        if let Some(user) = &self.user {
            args.extend(["-l".to_string(), user.clone()]);
        }
        if let Some(port) = self.port {
            args.extend(["-p".to_string(), port.to_string()]);
        }
        args.extend(["--", &self.host, "docker", "system", "dial-stdio"].map(String::from));
        args
    }
}

/// What ssh last said on stderr when a connection ended, shared with the error path.
#[derive(Clone, Default)]
pub struct SshLog(Arc<Mutex<Option<String>>>);

impl SshLog {
    /// ssh's last words, if a connection has ended with some; cleared by reading.
    pub fn take(&self) -> Option<String> {
        self.0.lock().unwrap().take()
    }
}

/// A client for the engine behind `target`, and where ssh's complaints go.
pub fn connect(target: SshTarget) -> Result<(Docker, SshLog), bollard::errors::Error> {
    let log = SshLog::default();
    let connector = SshConnector {
        target: Arc::new(target),
        log: log.clone(),
    };
    // The body type is bollard's own (crate-private), inferred from the requests below.
    let client = Client::builder(TokioExecutor::new()).build(connector);
    let docker = Docker::connect_with_custom_transport(
        move |request: BollardRequest| {
            let client = client.clone();
            async move {
                client
                    .request(request)
                    .await
                    .map_err(bollard::errors::Error::from)
            }
        },
        Some("http://docker-over-ssh"),
        REQUEST_TIMEOUT,
        bollard::API_DEFAULT_VERSION,
    )?;
    Ok((docker, log))
}

/// Opens each pooled connection as a new ssh process.
#[derive(Clone)]
struct SshConnector {
    target: Arc<SshTarget>,
    log: SshLog,
}

impl tower_service::Service<hyper::Uri> for SshConnector {
    type Response = TokioIo<SshStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: hyper::Uri) -> Self::Future {
        let target = self.target.clone();
        let log = self.log.clone();
        Box::pin(async move {
            let mut child = Command::new("ssh")
                .args(target.args())
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|error| {
                    std::io::Error::new(error.kind(), format!("cannot run ssh: {error}"))
                })?;
            let stdin = child.stdin.take().expect("piped");
            let stdout = child.stdout.take().expect("piped");
            let stderr = child.stderr.take().expect("piped");
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut said = Vec::new();
                let _ = stderr.take(64 << 10).read_to_end(&mut said).await;
                let said = String::from_utf8_lossy(&said);
                let last: Vec<&str> = said.lines().filter(|l| !l.trim().is_empty()).collect();
                if let Some(line) = last.last() {
                    tracing::debug!(ssh = %said.trim(), "ssh connection ended");
                    *log.0.lock().unwrap() = Some(line.trim().to_string());
                }
            });
            Ok(TokioIo::new(SshStream {
                _child: child,
                stdin,
                stdout,
            }))
        })
    }
}

/// One ssh process's stdout (what the engine says) and stdin (what we say). Dropping it kills
/// the process.
struct SshStream {
    _child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
}

impl Connection for SshStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for SshStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdout).poll_read(cx, buf)
    }
}

impl AsyncWrite for SshStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stdin).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdin).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdin).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_as_the_docker_cli_writes_them_are_understood() {
        assert_eq!(
            SshTarget::parse("ssh://root@127.0.0.1:2222").unwrap(),
            SshTarget {
                user: Some("root".into()),
                host: "127.0.0.1".into(),
                port: Some(2222)
            }
        );
        assert_eq!(
            SshTarget::parse("ssh://sandbox-host").unwrap(),
            SshTarget {
                user: None,
                host: "sandbox-host".into(),
                port: None
            }
        );
        let v6 = SshTarget::parse("ssh://me@[::1]:22/").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", Some(22)));
    }

    /// Whatever the URL says, nothing reaches ssh as an option: a host or user that starts
    /// with `-`, spaces, quotes, shell characters, paths and bad ports are refused.
    #[test]
    fn urls_that_would_smuggle_options_or_commands_into_ssh_are_refused() {
        for hostile in [
            "ssh://-oProxyCommand=touch%20/tmp/pwned",
            "ssh://-oProxyCommand=sh",
            "ssh://-lroot@host",
            "ssh://me@-host",
            "ssh://me@host;reboot",
            "ssh://me@host docker",
            "ssh://me@host/extra/path",
            "ssh://me@host?x=1",
            "ssh://me@host:0",
            "ssh://me@host:99999",
            "ssh://me@host:22x",
            "ssh://a'b@host",
            "ssh://",
            "ssh://me@",
            "ssh://[::1",
        ] {
            assert!(SshTarget::parse(hostile).is_err(), "{hostile} was accepted");
        }
    }

    #[test]
    fn the_host_comes_after_the_end_of_options_and_prompts_are_off() {
        let args = SshTarget::parse("ssh://me@h:2200").unwrap().args();
        let end = args.iter().position(|a| a == "--").unwrap();
        assert_eq!(args[end + 1..], ["h", "docker", "system", "dial-stdio"]);
        assert!(args.windows(2).any(|w| w == ["-o", "BatchMode=yes"]));
        assert!(args.windows(2).any(|w| w == ["-l", "me"]));
        assert!(args.windows(2).any(|w| w == ["-p", "2200"]));
    }
}
