//! The name a TLS client says it is connecting to (the ClientHello's SNI), read from the first
//! bytes of a `CONNECT` tunnel without taking part in the handshake, so that the proxy can
//! refuse a tunnel opened to one allowed host that then asks for another (domain fronting).
//! rustls's `Acceptor` does the parsing; this module bounds what it is fed and says what the
//! bytes were.

use rustls::server::Acceptor;

/// The most bytes read before a ClientHello must be complete: a real one, post-quantum key
/// shares included, is a few KiB.
pub const MAX_HELLO: usize = 64 << 10;

/// What the bytes of a tunnel's start turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// Not a complete ClientHello yet: feed more.
    Incomplete,
    /// A ClientHello; the name it asks for (`None`: no SNI, e.g. to an address).
    Tls(Option<String>),
    /// Not TLS, or a ClientHello the parser refuses, or too long: why.
    Refused(String),
}

/// Reads a ClientHello from bytes fed in pieces, as they arrive.
pub struct HelloReader {
    acceptor: Option<Acceptor>,
    fed: usize,
}

impl Default for HelloReader {
    fn default() -> Self {
        Self {
            acceptor: Some(Acceptor::default()),
            fed: 0,
        }
    }
}

impl HelloReader {
    /// Feeds the next bytes; says what they make so far. Once it has said `Tls` or
    /// `Refused`, it says the same again.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Hello {
        let Some(acceptor) = self.acceptor.as_mut() else {
            return Hello::Refused("the ClientHello was already read".to_string());
        };
        self.fed += bytes.len();
        if self.fed > MAX_HELLO {
            self.acceptor = None;
            return Hello::Refused(format!("no complete ClientHello in {MAX_HELLO} bytes"));
        }
        while !bytes.is_empty() {
            if let Err(error) = acceptor.read_tls(&mut bytes) {
                self.acceptor = None;
                return Hello::Refused(format!("not TLS: {error}"));
            }
        }
        match acceptor.accept() {
            Ok(None) => Hello::Incomplete,
            Ok(Some(accepted)) => {
                self.acceptor = None;
                Hello::Tls(accepted.client_hello().server_name().map(str::to_owned))
            }
            Err((error, _alert)) => {
                self.acceptor = None;
                Hello::Refused(format!("not a TLS ClientHello: {error}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// The first flight of a real rustls client connecting to `name`.
    fn client_hello(name: &str) -> Vec<u8> {
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut hello = Vec::new();
        client.write_tls(&mut hello).unwrap();
        hello
    }

    #[test]
    fn the_name_of_a_real_client_hello_is_read() {
        let hello = client_hello("api.example.com");
        assert_eq!(
            HelloReader::default().feed(&hello),
            Hello::Tls(Some("api.example.com".to_string()))
        );
    }

    #[test]
    fn a_hello_arriving_a_byte_at_a_time_is_read_when_complete() {
        let hello = client_hello("raw.githubusercontent.com");
        let mut reader = HelloReader::default();
        for byte in &hello[..hello.len() - 1] {
            assert_eq!(reader.feed(std::slice::from_ref(byte)), Hello::Incomplete);
        }
        assert_eq!(
            reader.feed(&hello[hello.len() - 1..]),
            Hello::Tls(Some("raw.githubusercontent.com".to_string()))
        );
    }

    #[test]
    fn a_hello_to_an_address_has_no_name() {
        assert_eq!(
            HelloReader::default().feed(&client_hello("10.251.0.2")),
            Hello::Tls(None)
        );
    }

    #[test]
    fn plain_text_garbage_and_endless_records_are_refused() {
        for bytes in [
            &b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"[..],
            &b"\x16\x03\x01\xff\xff"[..],
            &[0u8; 64][..],
        ] {
            let said = HelloReader::default().feed(bytes);
            assert!(
                matches!(said, Hello::Refused(_) | Hello::Incomplete),
                "{bytes:?}: {said:?}"
            );
        }
        assert!(matches!(
            HelloReader::default().feed(b"GET / HTTP/1.1\r\n\r\n"),
            Hello::Refused(_)
        ));
        // A record header that promises more than a hello may hold, then filler forever.
        let mut reader = HelloReader::default();
        let mut said = reader.feed(b"\x16\x03\x01\x40\x00");
        let filler = [0x01u8; 4096];
        let mut fed = 5;
        while said == Hello::Incomplete && fed <= MAX_HELLO + filler.len() {
            said = reader.feed(&filler);
            fed += filler.len();
        }
        assert!(
            matches!(said, Hello::Refused(_)),
            "{said:?} after {fed} bytes"
        );
    }

    #[test]
    fn a_hello_with_its_name_changed_in_flight_is_read_as_sent() {
        // The proxy judges what the server would see: a rewritten SNI is what it reads.
        let mut hello = client_hello("allowed.example");
        let at = hello
            .windows(15)
            .position(|w| w == b"allowed.example")
            .unwrap();
        hello[at..at + 7].copy_from_slice(b"evilxxx");
        assert_eq!(
            HelloReader::default().feed(&hello),
            Hello::Tls(Some("evilxxx.example".to_string()))
        );
    }
}
