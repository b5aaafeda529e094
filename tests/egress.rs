//! The egress proxy's core on real loopback sockets: an allowed host reached through a raw
//! `CONNECT` and by absolute-form HTTP; refusals (not listed, another port, a name that
//! resolves to loopback, a ClientHello for another name, a `Host` that disagrees, too many
//! connections, the byte budget), each in the ledger. The allowed hosts here are loopback
//! addresses named literally (the one way a private address is allowed).

use std::sync::Arc;
use std::time::Duration;

use mcp_python_executor::egress::{Allowlist, Policy, Proxy, Verdict};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn policy(patterns: &[&str]) -> Policy {
    Policy {
        allow: Allowlist::parse(patterns.iter().copied()).unwrap(),
        allow_private: false,
        max_bytes: 64 << 20,
        max_connections: 64,
        connect_timeout: Duration::from_secs(5),
        secrets: None,
    }
}

/// A proxy for `policy` on a loopback port.
async fn start(policy: Policy) -> (Proxy, u16) {
    let proxy = Proxy::new(Arc::new(policy));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let serving = proxy.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let proxy = serving.clone();
            tokio::spawn(async move { proxy.serve_connection(stream).await });
        }
    });
    (proxy, port)
}

/// An upstream that answers every request on a connection with `body` (HTTP/1.1).
async fn upstream(body: Arc<Vec<u8>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let body = body.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let header = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(header.as_bytes()).await;
                let _ = stream.write_all(&body).await;
            });
        }
    });
    port
}

/// Sends `head` to the proxy and reads what comes back until the connection closes.
async fn exchange(proxy: u16, head: &str, then: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(("127.0.0.1", proxy)).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    if !then.is_empty() {
        let mut chunk = [0u8; 1024];
        // The CONNECT answer first.
        while !answer.ends_with(b"\r\n\r\n") {
            let read = stream.read(&mut chunk[..1]).await.unwrap();
            if read == 0 {
                return answer;
            }
            answer.extend_from_slice(&chunk[..read]);
        }
        if answer.starts_with(b"HTTP/1.1 200") {
            stream.write_all(then).await.unwrap();
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    answer
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn an_allowed_host_is_reached_by_connect_and_by_plain_http_and_reported() {
    let target = upstream(Arc::new(b"hello".to_vec())).await;
    let (proxy, port) = start(policy(&[&format!("127.0.0.1:{target}")])).await;
    let tunnel = exchange(
        port,
        &format!("CONNECT 127.0.0.1:{target} HTTP/1.1\r\nHost: 127.0.0.1:{target}\r\n\r\n"),
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    )
    .await;
    assert!(text(&tunnel).ends_with("hello"), "{}", text(&tunnel));
    let plain = exchange(
        port,
        &format!(
            "GET http://127.0.0.1:{target}/x HTTP/1.1\r\nHost: 127.0.0.1:{target}\r\nConnection: close\r\n\r\n"
        ),
        b"",
    )
    .await;
    assert!(text(&plain).starts_with("HTTP/1.1 200"), "{}", text(&plain));
    assert!(text(&plain).ends_with("hello"), "{}", text(&plain));
    let report = proxy.ledger().report();
    assert_eq!(report.len(), 1, "{report:?}");
    assert_eq!(report[0].verdict, Verdict::Allowed);
    assert_eq!(report[0].connections, 2);
    assert!(
        report[0].bytes_received > 10 && report[0].bytes_sent > 10,
        "{report:?}"
    );
}

#[tokio::test]
async fn unlisted_hosts_ports_and_names_resolving_to_loopback_get_a_reason() {
    let target = upstream(Arc::new(b"hello".to_vec())).await;
    let other = upstream(Arc::new(b"secret".to_vec())).await;
    let (proxy, port) = start(policy(&[&format!("127.0.0.1:{target}")])).await;
    // A name is not an address: naming localhost does not allow what it resolves to.
    let (named, named_port) = start(policy(&[&format!("localhost:{target}")])).await;
    for (port, asked, why) in [
        (port, format!("127.0.0.1:{other}"), "not in the allowlist"),
        (port, format!("127.0.0.2:{target}"), "not in the allowlist"),
        (port, format!("localhost:{target}"), "not in the allowlist"),
        (
            named_port,
            format!("localhost:{target}"),
            "resolves to 127.0.0.1, a loopback",
        ),
    ] {
        let answer = text(
            &exchange(
                port,
                &format!("CONNECT {asked} HTTP/1.1\r\nHost: {asked}\r\n\r\n"),
                b"x",
            )
            .await,
        );
        assert!(answer.starts_with("HTTP/1.1 403"), "{asked}: {answer}");
        assert!(
            answer.contains(why) && answer.contains("--allow-host"),
            "{asked}: {answer}"
        );
        assert!(!answer.contains("secret"));
    }
    let blocked = proxy
        .ledger()
        .report()
        .into_iter()
        .filter(|a| a.verdict == Verdict::Blocked)
        .count();
    assert_eq!(blocked, 3);
    assert_eq!(named.ledger().report()[0].verdict, Verdict::Blocked);
    // Allowing private networks behind names never opens the host's own loopback.
    let mut private = policy(&[&format!("localhost:{target}")]);
    private.allow_private = true;
    let (_private, private_port) = start(private).await;
    let reached = exchange(
        private_port,
        &format!("CONNECT localhost:{target} HTTP/1.1\r\nHost: x\r\n\r\n"),
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await;
    assert!(
        text(&reached).starts_with("HTTP/1.1 403"),
        "{}",
        text(&reached)
    );
    assert!(text(&reached).contains("loopback"), "{}", text(&reached));
}

#[tokio::test]
async fn a_client_hello_for_another_name_closes_the_tunnel_unanswered() {
    let target = upstream(Arc::new(b"hello".to_vec())).await;
    let (proxy, port) = start(policy(&[&format!("127.0.0.1:{target}")])).await;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("evil.example").unwrap();
    let mut client = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut hello = Vec::new();
    client.write_tls(&mut hello).unwrap();
    let answer = exchange(
        port,
        &format!("CONNECT 127.0.0.1:{target} HTTP/1.1\r\nHost: 127.0.0.1:{target}\r\n\r\n"),
        &hello,
    )
    .await;
    assert!(text(&answer).starts_with("HTTP/1.1 200"));
    assert!(!text(&answer).contains("hello"), "{}", text(&answer));
    let report = proxy.ledger().report();
    assert!(
        report.iter().any(|a| a.verdict == Verdict::Blocked
            && a.reason
                .as_deref()
                .is_some_and(|r| r.contains("evil.example"))),
        "{report:?}"
    );
}

#[tokio::test]
async fn a_host_header_that_disagrees_with_the_url_is_refused() {
    let target = upstream(Arc::new(b"hello".to_vec())).await;
    let (_proxy, port) = start(policy(&[&format!("127.0.0.1:{target}")])).await;
    let answer = text(&exchange(
        port,
        &format!("GET http://127.0.0.1:{target}/ HTTP/1.1\r\nHost: metadata.google.internal\r\nConnection: close\r\n\r\n"),
        b"",
    )
    .await);
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("Host header"), "{answer}");
}

#[tokio::test]
async fn a_download_past_the_byte_budget_is_cut() {
    let target = upstream(Arc::new(vec![b'x'; 8 << 20])).await;
    let mut limited = policy(&[&format!("127.0.0.1:{target}")]);
    limited.max_bytes = 1 << 20;
    let (proxy, port) = start(limited).await;
    let answer = exchange(
        port,
        &format!("CONNECT 127.0.0.1:{target} HTTP/1.1\r\nHost: 127.0.0.1:{target}\r\n\r\n"),
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    )
    .await;
    assert!(
        answer.len() < (1 << 20) + (256 << 10),
        "{} bytes came through",
        answer.len()
    );
    let received: u64 = proxy
        .ledger()
        .report()
        .iter()
        .map(|a| a.bytes_received)
        .sum();
    assert!(received <= (1 << 20) + (256 << 10), "{received}");
}

#[tokio::test]
async fn connections_past_the_cap_are_refused_and_the_rest_still_work() {
    let target = upstream(Arc::new(b"hello".to_vec())).await;
    let mut capped = policy(&[&format!("127.0.0.1:{target}")]);
    capped.max_connections = 4;
    let (_proxy, port) = start(capped).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        stream
            .write_all(format!("CONNECT 127.0.0.1:{target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
        held.push(stream);
    }
    let refused = text(
        &exchange(
            port,
            &format!("CONNECT 127.0.0.1:{target} HTTP/1.1\r\nHost: x\r\n\r\n"),
            b"x",
        )
        .await,
    );
    assert!(
        refused.starts_with("HTTP/1.1 403") && refused.contains("too many"),
        "{refused}"
    );
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let again = exchange(
        port,
        &format!("CONNECT 127.0.0.1:{target} HTTP/1.1\r\nHost: x\r\n\r\n"),
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    )
    .await;
    assert!(text(&again).ends_with("hello"), "{}", text(&again));
}

#[tokio::test]
async fn a_host_that_speaks_first_is_relayed_and_a_host_that_does_not_answer_is_listed() {
    // An SMTP-like host: it greets before the client says anything.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let greeter = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        stream.write_all(b"220 hello\r\n").await.unwrap();
        let mut line = [0u8; 6];
        stream.read_exact(&mut line).await.unwrap();
        stream.write_all(&line).await.unwrap();
    });
    // A port nobody listens on.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let nobody = closed.local_addr().unwrap().port();
    drop(closed);
    let (proxy, port) = start(policy(&[
        &format!("127.0.0.1:{greeter}"),
        &format!("127.0.0.1:{nobody}"),
    ]))
    .await;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream
        .write_all(format!("CONNECT 127.0.0.1:{greeter} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    // The CONNECT answer, then the greeting, with nothing sent by the client.
    while !answer.ends_with(b"220 hello\r\n") {
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte))
            .await
            .expect("the host's greeting arrives before the client speaks")
            .unwrap();
        assert_eq!(read, 1, "closed early: {}", text(&answer));
        answer.push(byte[0]);
    }
    stream.write_all(b"EHLO\r\n").await.unwrap();
    let mut echo = [0u8; 6];
    stream.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"EHLO\r\n");
    let failed = exchange(
        port,
        &format!("CONNECT 127.0.0.1:{nobody} HTTP/1.1\r\nHost: x\r\n\r\n"),
        b"x",
    )
    .await;
    assert!(
        text(&failed).starts_with("HTTP/1.1 502"),
        "{}",
        text(&failed)
    );
    let report = proxy.ledger().report();
    let unanswered = report
        .iter()
        .find(|a| a.port == nobody)
        .unwrap_or_else(|| panic!("{report:?}"));
    assert_eq!(unanswered.verdict, Verdict::Blocked);
    assert!(
        unanswered
            .reason
            .as_deref()
            .unwrap()
            .contains("no connection"),
        "{report:?}"
    );
}

#[tokio::test]
async fn a_broad_address_rule_opens_no_loopback_service() {
    let target = upstream(Arc::new(b"secret".to_vec())).await;
    let (proxy, port) = start(policy(&[&format!("0.0.0.0/0:{target}")])).await;
    let answer = exchange(
        port,
        &format!("CONNECT 127.0.0.1:{target} HTTP/1.1\r\nHost: x\r\n\r\n"),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert!(
        text(&answer).starts_with("HTTP/1.1 403"),
        "{}",
        text(&answer)
    );
    assert!(!text(&answer).contains("secret"));
    let report = proxy.ledger().report();
    assert!(
        report[0].reason.as_deref().unwrap().contains("loopback"),
        "{report:?}"
    );
}
