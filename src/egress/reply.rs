//! The proxy's own answers to the program: the body type every answer has, and a short text
//! answer (a refusal, a failure) that ends the connection it is sent on.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::{Response, StatusCode};

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

/// An empty body (a tunnel's `200`).
pub(super) fn empty() -> Body {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}
