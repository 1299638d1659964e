//! The one place that renders every answer branchgate makes itself: errors,
//! branch pages, CORS preflights (and later redirects and logins), as HTML
//! for browsers or JSON when the request prefers it. Pure: an [`Answer`] in,
//! a [`Reply`] out, no sockets.

use bytes::Bytes;
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_MAX_AGE, CACHE_CONTROL, CONNECTION, CONTENT_TYPE,
    LOCATION, VARY, WWW_AUTHENTICATE,
};
use http::{HeaderMap, HeaderValue, Response, StatusCode};

use super::error::ProxyError;
use super::pages;
use crate::acme::challenge::Http01;
use crate::routes::{BranchIndex, Role};

/// Something branchgate answers itself instead of forwarding.
#[derive(Debug)]
pub enum Answer<'a> {
    /// A failure, with the status its kind calls for.
    Error(ProxyError),
    /// The branch domain itself: every environment.
    Matrix {
        /// The branch index of the snapshot in force.
        index: &'a BranchIndex,
        /// The port the request named, kept in links.
        port: Option<&'a str>,
    },
    /// A branch host whose branch of `role` is not deployed.
    MissingBranch {
        /// The branch index of the snapshot in force.
        index: &'a BranchIndex,
        /// The role the path asked for.
        role: Role,
        /// The slug asked for.
        slug: Box<str>,
        /// The port the request named, kept in links.
        port: Option<&'a str>,
    },
    /// A CORS preflight on a `cors` route (boxed: rare, and four headers long).
    Preflight(Box<Preflight>),
    /// Plain HTTP for a host served over HTTPS (`HTTPS_METHOD=redirect`).
    Redirect(Redirect),
    /// A request for an HTTP-01 challenge token.
    Acme(Http01),
    /// Credentials missing or wrong: 401 with this `WWW-Authenticate`.
    Unauthorized(HeaderValue),
    /// A browser at the branch gate: 302 to the login form at this `Location`.
    Login(HeaderValue),
}

/// An HTTP→HTTPS redirect.
#[derive(Debug)]
pub struct Redirect {
    /// 301 for GET and HEAD, else `--non-get-redirect`.
    pub status: StatusCode,
    /// `https://host[:port]/path?query`.
    pub location: HeaderValue,
}

impl From<ProxyError> for Answer<'_> {
    fn from(e: ProxyError) -> Self {
        Self::Error(e)
    }
}

/// A preflight request, as the policy phase read it.
#[derive(Debug)]
pub struct Preflight {
    /// Its `Origin`.
    pub origin: HeaderValue,
    /// Whether that origin is allowed.
    pub allowed: bool,
    /// `Access-Control-Request-Method`.
    pub method: HeaderValue,
    /// `Access-Control-Request-Headers`, if any.
    pub headers: Option<HeaderValue>,
}

/// A rendered answer: status, headers and a small body.
#[derive(Debug)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// Headers, `Content-Type` included when there is a body.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Reply {
    /// The response, with `body` wrapping the bytes for the connection.
    pub fn into_response<B>(self, body: impl FnOnce(Bytes) -> B) -> Response<B> {
        let mut resp = Response::new(body(self.body));
        *resp.status_mut() = self.status;
        *resp.headers_mut() = self.headers;
        resp
    }
}

/// True when `Accept` asks for JSON over HTML.
pub fn wants_json(accept: Option<&HeaderValue>) -> bool {
    accept
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("application/json") && !a.contains("text/html"))
}

/// Renders `answer`, as JSON when `json`.
pub fn respond(answer: Answer<'_>, json: bool) -> Reply {
    let mut headers = HeaderMap::new();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let (status, body) = match answer {
        Answer::Error(err) => {
            if err.closes() {
                headers.insert(CONNECTION, HeaderValue::from_static("close"));
            }
            let status = err.status();
            (status, status_page(status, &err.to_string(), json))
        }
        Answer::Matrix { index, port } => (StatusCode::OK, pages::matrix(index, port, json)),
        Answer::MissingBranch {
            index,
            role,
            slug,
            port,
        } => (
            StatusCode::NOT_FOUND,
            pages::missing(index, role, &slug, port, json),
        ),
        Answer::Preflight(p) => (preflight(*p, &mut headers), String::new()),
        Answer::Redirect(r) => {
            let body = status_page(r.status, r.location.to_str().unwrap_or_default(), json);
            headers.insert(LOCATION, r.location);
            (r.status, body)
        }
        Answer::Acme(Http01::Answer(key_authorization)) => {
            // The key authorization as the body, nothing else (RFC 8555 8.3).
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            return Reply {
                status: StatusCode::OK,
                headers,
                body: key_authorization.into(),
            };
        }
        Answer::Unauthorized(challenge) => {
            let status = StatusCode::UNAUTHORIZED;
            headers.insert(WWW_AUTHENTICATE, challenge);
            (status, status_page(status, "authorization required", json))
        }
        Answer::Login(location) => {
            let status = StatusCode::FOUND;
            let body = status_page(status, location.to_str().unwrap_or_default(), json);
            headers.insert(LOCATION, location);
            (status, body)
        }
        Answer::Acme(Http01::Unknown) => {
            let status = StatusCode::NOT_FOUND;
            (status, status_page(status, "no such ACME challenge", json))
        }
        Answer::Acme(Http01::Malformed) => {
            let status = StatusCode::BAD_REQUEST;
            (
                status,
                status_page(status, "not a base64url ACME token", json),
            )
        }
    };
    if !body.is_empty() {
        let kind = if json {
            "application/json"
        } else {
            "text/html; charset=utf-8"
        };
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    }
    Reply {
        status,
        headers,
        body: body.into(),
    }
}

/// nginx's small status page, or `{"status", "error", "detail"}`.
fn status_page(status: StatusCode, detail: &str, json: bool) -> String {
    let reason = match status {
        // nginx's wording, which nginx-proxy users know.
        StatusCode::UNAUTHORIZED => "Authorization Required",
        _ => status.canonical_reason().unwrap_or("Error"),
    };
    let code = status.as_u16();
    if json {
        return serde_json::json!({ "status": code, "error": reason, "detail": detail })
            .to_string();
    }
    format!(
        "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n<center><h1>{code} {reason}</h1></center>\r\n<hr><center>branchgate</center>\r\n</body>\r\n</html>\r\n"
    )
}

/// 204 with the CORS grant for an allowed origin, 403 without any CORS
/// header for another. Credentials are allowed, so the origin is echoed,
/// never `*`.
fn preflight(p: Preflight, headers: &mut HeaderMap) -> StatusCode {
    headers.insert(VARY, HeaderValue::from_static("Origin"));
    if !p.allowed {
        return StatusCode::FORBIDDEN;
    }
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, p.origin);
    headers.insert(
        ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    headers.insert(ACCESS_CONTROL_ALLOW_METHODS, p.method);
    if let Some(h) = p.headers {
        headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, h);
    }
    headers.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    StatusCode::NO_CONTENT
}

#[cfg(test)]
mod tests;
