//! A plain-HTTP request's headers on their way to the host: its `Host` must be one and name
//! the host and port of its URL (else the host would serve another site than the one
//! checked); a request without one gets it from its URL; and the headers meant for the proxy
//! alone (hop-by-hop: `Connection` and what it lists, `Proxy-*`, `Keep-Alive`, `TE`,
//! `Trailer`, `Upgrade`) are not passed on.

use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{HeaderMap, Request};

use super::rules::Host;

/// Headers that end at the proxy, besides those `Connection` names.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "proxy-connection",
    "proxy-authorization",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
];

/// Makes the request's headers what the host may see, or says why it is refused. `implied`
/// is the port a `Host` without one means (80 for http, 443 inside a TLS tunnel).
pub(super) fn prepare<B>(
    request: &mut Request<B>,
    host: &Host,
    port: u16,
    implied: u16,
) -> Result<(), String> {
    let headers = request.headers_mut();
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => return Err("the request has more than one Host header".to_string()),
        (Some(value), None) if !names(value, host, port, implied) => {
            return Err("the Host header names another host".to_string());
        }
        (Some(_), None) => {}
        (None, _) => {
            let authority = if port == implied {
                host.to_string()
            } else {
                format!("{}:{port}", bracketed(host))
            };
            let value = HeaderValue::from_str(&authority).map_err(|e| e.to_string())?;
            headers.insert(header::HOST, value);
        }
    }
    strip_hop_by_hop(headers);
    Ok(())
}

fn names(value: &HeaderValue, host: &Host, port: u16, implied: u16) -> bool {
    value
        .to_str()
        .ok()
        .and_then(|h| h.parse::<hyper::http::uri::Authority>().ok())
        .is_some_and(|a| {
            Host::parse(a.host()).ok().as_ref() == Some(host)
                && a.port_u16().unwrap_or(implied) == port
        })
}

fn bracketed(host: &Host) -> String {
    match host {
        Host::Ip(std::net::IpAddr::V6(v6)) => format!("[{v6}]"),
        other => other.to_string(),
    }
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::get("http://allowed.test/x");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    fn host() -> Host {
        Host::parse("allowed.test").unwrap()
    }

    #[test]
    fn one_agreeing_host_passes_and_two_or_another_are_refused() {
        let mut fine = request(&[("host", "Allowed.Test")]);
        assert_eq!(prepare(&mut fine, &host(), 80, 80), Ok(()));
        let mut two = request(&[("host", "allowed.test"), ("host", "other.test")]);
        assert!(
            prepare(&mut two, &host(), 80, 80)
                .unwrap_err()
                .contains("more than one")
        );
        let mut other = request(&[("host", "other.test")]);
        assert!(prepare(&mut other, &host(), 80, 80).is_err());
        let mut port = request(&[("host", "allowed.test:8080")]);
        assert!(prepare(&mut port, &host(), 80, 80).is_err());
    }

    #[test]
    fn a_missing_host_is_set_and_hop_by_hop_headers_stay_here() {
        let mut bare = request(&[
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("proxy-authorization", "Basic eA=="),
            ("upgrade", "h2c"),
            ("accept", "*/*"),
        ]);
        prepare(&mut bare, &host(), 8080, 80).unwrap();
        let headers = bare.headers();
        assert_eq!(headers[header::HOST], "allowed.test:8080");
        for gone in ["connection", "x-secret", "proxy-authorization", "upgrade"] {
            assert!(!headers.contains_key(gone), "{gone} passed on");
        }
        assert_eq!(headers["accept"], "*/*");
    }
}
