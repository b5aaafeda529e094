//! The proxy's own answers to the program: the body type every answer has, a short text
//! answer (a refusal, a failure) that ends the connection it is sent on, and a refusal as
//! every path records it (the log, the call's ledger, a 403 with the next step).

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::{Response, StatusCode};

use super::ledger::{Ledger, Verdict};
use super::rules::Host;

/// The next step a refusal of the allowlist names.
pub(super) const ALLOW_HINT: &str =
    "the server's operator can allow a host with --allow-host (PYEXEC_ALLOW_HOSTS)";
/// The next step a refusal of a secret's placeholder names.
pub(super) const SECRET_HINT: &str = "the program may send a secret's placeholder only to the \
    hosts it is bound to (--secret NAME=HOST), over https, in a header's value or the URL's query";

/// The body of every answer the proxy gives: its own text, or a host's body passed on.
pub(super) type Body = BoxBody<Bytes, hyper::Error>;

/// A text answer; the client gets nothing more on this connection.
pub(super) fn answer(status: StatusCode, text: &str) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(text.to_string()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
    response
}

/// Logs a refusal of `host:port` (the reason names no value), notes it in the call's
/// `ledger` as blocked, and makes its 403, which says why and `hint`.
pub(super) fn refused(
    ledger: &Ledger,
    host: &Host,
    port: u16,
    why: &str,
    hint: &str,
) -> Response<Body> {
    tracing::info!(%host, port, reason = %why, "egress refused");
    ledger.note(host, port, Verdict::Blocked, Some(why));
    answer(
        StatusCode::FORBIDDEN,
        &format!("egress refused: {host}:{port}: {why}\n{hint}\n"),
    )
}

/// An empty body (a tunnel's `200`).
pub(super) fn empty() -> Body {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}
