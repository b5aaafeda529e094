//! A tunnel's opening: before any byte of the client reaches the host, the first bytes must
//! be a TLS ClientHello for the host the tunnel was opened to (no domain fronting), or not
//! TLS at all; a host that speaks first (SMTP, SSH, databases) is no TLS server waiting for a
//! ClientHello, so its tunnel opens without one. And the idle timeout every tunnel and
//! forwarded connection keeps.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;

use super::ledger::clock;
use super::rules::Host;
use super::sni::{Hello, HelloReader};

/// How long a tunnel waits for the client's first bytes (its ClientHello), or the host's.
const FIRST_BYTES: Duration = Duration::from_secs(10);
/// A tunnel or forwarded connection with no byte either way for this long is closed.
pub const IDLE: Duration = Duration::from_secs(120);

/// The client's first bytes, checked, to send on to the host; or why the tunnel is refused
/// (`Some`), or that it ended before it said anything (`None`).
pub(super) async fn opening<C: AsyncRead + Unpin>(
    client: &mut C,
    upstream: &TcpStream,
    host: &Host,
) -> Result<Vec<u8>, Option<String>> {
    let mut seen = Vec::new();
    let mut reader = HelloReader::default();
    let decided = tokio::time::timeout(FIRST_BYTES, async {
        tokio::select! {
            hello = first_bytes(client, &mut seen, &mut reader) => hello.map(Some),
            ready = upstream.readable() => ready.map(|()| None),
        }
    })
    .await;
    let hello = match decided {
        Ok(Ok(Some(hello))) => hello,
        // The host speaks first, and the client has said nothing yet.
        Ok(Ok(None)) if seen.is_empty() => return Ok(seen),
        // Both spoke at once: what the client began is checked to its end.
        Ok(Ok(None)) => {
            match tokio::time::timeout(FIRST_BYTES, first_bytes(client, &mut seen, &mut reader))
                .await
            {
                Ok(Ok(hello)) => hello,
                _ => return Err(None),
            }
        }
        _ => return Err(None),
    };
    same_name(&hello, host).map_err(Some)?;
    Ok(seen)
}

/// Reads a tunnel's first bytes into `seen`, until they are a whole ClientHello or clearly
/// not TLS. Cancel-safe: what was read stays in `seen` and `reader`, so a later call goes on.
async fn first_bytes<C: AsyncRead + Unpin>(
    client: &mut C,
    seen: &mut Vec<u8>,
    reader: &mut HelloReader,
) -> std::io::Result<Hello> {
    let mut buffer = [0u8; 4096];
    loop {
        let read = client.read(&mut buffer).await?;
        if read == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        seen.extend_from_slice(&buffer[..read]);
        if seen[0] != 0x16 {
            // Not a TLS handshake record: a plain protocol inside the tunnel.
            return Ok(Hello::Tls(None));
        }
        match reader.feed(&buffer[..read]) {
            Hello::Incomplete => continue,
            said => return Ok(said),
        }
    }
}

/// A ClientHello's name must be the host the tunnel was opened to.
fn same_name(hello: &Hello, host: &Host) -> Result<(), String> {
    match hello {
        Hello::Tls(None) => Ok(()),
        Hello::Tls(Some(name)) if Host::parse(name).ok().as_ref() == Some(host) => Ok(()),
        Hello::Tls(Some(name)) => Err(format!("the TLS ClientHello asks for {name}, not {host}")),
        Hello::Refused(why) => Err(format!(
            "the tunnel did not start with a readable ClientHello ({why})"
        )),
        Hello::Incomplete => Err("the ClientHello did not arrive".to_string()),
    }
}

/// Returns once nothing has moved on a connection (its `touched` stamp) for [`IDLE`].
pub(super) async fn idle(touched: &AtomicU64) {
    loop {
        tokio::time::sleep(IDLE / 4).await;
        let since = clock().saturating_sub(touched.load(Ordering::Relaxed));
        if since >= IDLE.as_secs() {
            return;
        }
    }
}
