//! The dashboard's files, embedded in the binary (no CDN: it works
//! offline and on an air-gapped server). Served with a strict content
//! security policy: only these files run.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use super::sse::{Body, full};

/// The dashboard page.
const INDEX: &str = include_str!("assets/index.html");
/// The login form; `{{message}}` and `{{next}}` are filled in per answer.
pub const LOGIN: &str = include_str!("assets/login.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// Only the dashboard's own files, no framing, no inline script.
const CSP: &str = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The dashboard.
pub fn page() -> Response<Body> {
    html(INDEX.to_owned())
}

/// An HTML page with the dashboard's security headers.
pub fn html(body: String) -> Response<Body> {
    respond(Bytes::from(body), "text/html; charset=utf-8")
}

/// `/assets/NAME`, or 404.
pub fn asset(path: &str) -> Response<Body> {
    let (body, kind) = match path {
        "/assets/app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "/assets/style.css" => (STYLE_CSS, "text/css; charset=utf-8"),
        _ => {
            let mut r = Response::new(full(Bytes::from_static(b"no such file\n")));
            *r.status_mut() = StatusCode::NOT_FOUND;
            return r;
        }
    };
    respond(Bytes::from_static(body.as_bytes()), kind)
}

fn respond(body: Bytes, kind: &'static str) -> Response<Body> {
    let mut r = Response::new(full(body));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}
