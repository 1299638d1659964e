//! HTTP/1.x on the client leg, as bytes: a request head parsed (by
//! httparse, with the settings hyper's server uses) and what it says about
//! its body and its connection. No I/O here. The body that follows is
//! decoded by [`crate::upstream::h1::Decoder`], the same framing code the
//! upstream leg reads responses with. The fuzz target `h1_request` and the
//! differential tests against hyper's server and client
//! (`tests/h1_differential.rs`) run these same functions on the same bytes.
//!
//! The rules are RFC 9112's, read the way hyper's server reads them, never
//! more leniently (the request smuggling rows in `tests/smuggling.rs` pin
//! what a client sees):
//! - a body is framed by `Transfer-Encoding` when there is one (its last
//!   coding must be `chunked`, else 400; never on HTTP/1.0), else by
//!   `Content-Length` (every field the same number of digits only, else
//!   400), else it is empty;
//! - with both, `Transfer-Encoding` frames the body, `Content-Length` is
//!   dropped, and the connection is closed after the response;
//! - `Connection: close` anywhere closes (a later `keep-alive` does not undo
//!   it); HTTP/1.0 keeps the connection only with `keep-alive`;
//! - a head larger than the limit, or with more than [`MAX_HEADERS`] fields,
//!   is 431; a target longer than [`MAX_TARGET`] is 414; anything else
//!   malformed is 400.
//!
//! Responses go out by [`write_response_head`]: the head written from the
//! status and header map the handler made, with the framing fields (and
//! `Connection`, `Date`) decided here, by RFC 9112 6.3 and 9110 6.4.1.
//!
//! Stricter than hyper on purpose: a `Content-Length` that is not a number
//! is 400 even after a `Transfer-Encoding` (hyper ignores it there), and a
//! `Connection` value with bytes beyond ASCII is read for `close` (hyper
//! reads such a value as no tokens at all).

use bytes::BytesMut;
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, EXPECT, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, Version};

use crate::tokens;
use crate::upstream::h1::{Framing, digits};

/// Most header fields in a request head (hyper's default too).
pub const MAX_HEADERS: usize = crate::upstream::h1::MAX_HEADERS;
/// Longest request target, in bytes (hyper's limit too).
pub const MAX_TARGET: usize = u16::MAX as usize - 1;

/// Why a request head was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The head is not HTTP/1.x (httparse's reason).
    #[error("request head is malformed: {0}")]
    Head(httparse::Error),
    /// The method is not a token.
    #[error("request method is invalid")]
    Method,
    /// The target is not a URI (origin, absolute, authority or `*` form).
    #[error("request target is invalid")]
    Target,
    /// The target is longer than [`MAX_TARGET`].
    #[error("request target is longer than {MAX_TARGET} bytes")]
    TargetTooLong,
    /// No complete head within the limit.
    #[error("request head is larger than {0} bytes")]
    TooLarge(usize),
    /// More than [`MAX_HEADERS`] fields.
    #[error("request head has more than {MAX_HEADERS} header fields")]
    TooManyFields,
    /// A field value a header value cannot hold.
    #[error("request header {0} has an invalid value")]
    Value(String),
    /// `Content-Length` values that are not one number.
    #[error("request has an invalid Content-Length")]
    ContentLength,
    /// `Transfer-Encoding` whose last coding is not `chunked`.
    #[error("request's Transfer-Encoding does not end in chunked")]
    TransferEncoding,
    /// `Transfer-Encoding` in an HTTP/1.0 request.
    #[error("HTTP/1.0 request with Transfer-Encoding")]
    TransferEncoding10,
}

impl RequestError {
    /// The status a client is answered with (then the connection closes).
    pub fn status(&self) -> StatusCode {
        match self {
            Self::TooLarge(_) | Self::TooManyFields => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::TargetTooLong => StatusCode::URI_TOO_LONG,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// A parsed request head.
#[derive(Debug)]
pub struct RequestHead {
    /// The method.
    pub method: Method,
    /// The request target.
    pub uri: Uri,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// Every header field, in order (a `Content-Length` beside a
    /// `Transfer-Encoding`, or repeating the same number, is not kept, nor
    /// a `Connection` field that is just `keep-alive` or `close`: that says
    /// only what `keep_alive` says, and is never forwarded).
    pub headers: HeaderMap,
    /// How the body that follows is delimited: by length (0: none) or
    /// chunked, never by the connection's end.
    pub framing: Framing,
    /// Whether the connection may carry another request after this one.
    pub keep_alive: bool,
    /// `Expect: 100-continue`: the client waits for a 100 before its body.
    pub expect_continue: bool,
    /// The client asks to switch protocols (`Upgrade` on HTTP/1.1), or to
    /// tunnel (CONNECT).
    pub upgrade: bool,
}

/// Parses a request head from the start of `buf` and removes it from `buf`.
/// `None`: incomplete, read more (up to `limit` bytes in all). Empty lines
/// before the request line are skipped (RFC 9112 2.2).
pub fn parse_request(
    buf: &mut BytesMut,
    limit: usize,
) -> Result<Option<RequestHead>, RequestError> {
    // Uninitialised slots: httparse fills only what it uses.
    let mut fields =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    // Never past the limit: bytes beyond it are not read as part of a head,
    // however they arrived (at once, or the limit's worth first).
    let window = &buf[..buf.len().min(limit)];
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut parsed,
        window,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if window.len() >= limit => {
            return Err(RequestError::TooLarge(limit));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(RequestError::TooManyFields),
        // A bad token is the method's when there is none yet, else the target's.
        Err(httparse::Error::Token) if parsed.method.is_none() => {
            return Err(RequestError::Method);
        }
        Err(httparse::Error::Token) => return Err(RequestError::Target),
        Err(e) => return Err(RequestError::Head(e)),
    };
    // A complete request line has all three (httparse's contract).
    let (Some(method), Some(target), Some(minor)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Err(RequestError::Head(httparse::Error::Token));
    };
    if target.len() > MAX_TARGET {
        return Err(RequestError::TargetTooLong);
    }
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| RequestError::Method)?;
    let version = match minor {
        0 => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let target_at = target.as_ptr() as usize - buf.as_ptr() as usize;
    let target_len = target.len();
    // Where each name and value sits in the head (offsets fit in u32: the
    // head is at most `limit`), so the values can share its bytes once it
    // is split off the buffer. (The upstream reader keeps the same table
    // inline: through a shared iterator it cost ~60 instructions per head.)
    let base = buf.as_ptr() as usize;
    let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
    let count = parsed.headers.len();
    for (span, field) in spans.iter_mut().zip(parsed.headers.iter()) {
        let at = |p: *const u8| (p as usize - base) as u32;
        *span = (
            at(field.name.as_ptr()),
            field.name.len() as u32,
            at(field.value.as_ptr()),
            field.value.len() as u32,
        );
    }
    let head = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(target_at..target_at + target_len))
        .map_err(|_| RequestError::Target)?;

    // Room for two more: a map filled to its capacity grows on any insert,
    // even one that replaces (the forwarded `Host`).
    let mut headers = HeaderMap::with_capacity(count + 2);
    let mut seen = Seen::default();
    for &(name, name_len, value, value_len) in &spans[..count] {
        let (name, value) = (name as usize, value as usize);
        let name_bytes = &head[name..name + name_len as usize];
        if seen
            .connection
            .bare(name_bytes, &head[value..value + value_len as usize])
        {
            continue;
        }
        let name = HeaderName::from_bytes(name_bytes)
            .map_err(|_| RequestError::Head(httparse::Error::HeaderName))?;
        let value = HeaderValue::from_maybe_shared(head.slice(value..value + value_len as usize))
            .map_err(|_| RequestError::Value(name.to_string()))?;
        if seen.note(&name, &value, version)? {
            headers.append(name, value);
        }
    }

    let framing = match (&seen.transfer_encoding, seen.length) {
        (Some(te), _) if !last_is_chunked(te.as_bytes()) => {
            return Err(RequestError::TransferEncoding);
        }
        (Some(_), _) => Framing::Chunked,
        (None, Some(n)) => Framing::Length(n),
        (None, None) => Framing::Length(0),
    };
    // Both framings: the body is read by Transfer-Encoding, the length is
    // not passed on, and the connection is not trusted with another request.
    let both = seen.transfer_encoding.is_some() && seen.length.is_some();
    if both {
        headers.remove(CONTENT_LENGTH);
    }
    let keep_alive = !both
        && !seen.connection.close
        && match version {
            Version::HTTP_11 => true,
            _ => seen.connection.keep_alive,
        };
    let upgrade = method == Method::CONNECT || (seen.upgrade && version == Version::HTTP_11);
    Ok(Some(RequestHead {
        method,
        uri,
        version,
        headers,
        framing,
        keep_alive,
        expect_continue: seen.expect_continue,
        upgrade,
    }))
}

/// What the fields that frame a request and its connection said, noted as
/// the head is read (no lookups in the map afterwards).
#[derive(Default)]
struct Seen {
    /// The number every `Content-Length` field gave.
    length: Option<u64>,
    /// The last `Transfer-Encoding` field (whose last coding decides).
    transfer_encoding: Option<HeaderValue>,
    connection: tokens::ConnectionTokens,
    expect_continue: bool,
    upgrade: bool,
}

impl Seen {
    /// Notes one field; whether it goes into the map (a `Content-Length`
    /// that repeats the number already kept does not).
    fn note(
        &mut self,
        name: &HeaderName,
        value: &HeaderValue,
        version: Version,
    ) -> Result<bool, RequestError> {
        if name == CONTENT_LENGTH {
            // The whole value: a list (`5, 5`) is refused, as hyper's server does.
            let n = digits(value.as_bytes()).ok_or(RequestError::ContentLength)?;
            return match self.length.replace(n) {
                None => Ok(true),
                Some(m) if m == n => Ok(false),
                Some(_) => Err(RequestError::ContentLength),
            };
        }
        if name == TRANSFER_ENCODING {
            if version == Version::HTTP_10 {
                return Err(RequestError::TransferEncoding10);
            }
            self.transfer_encoding = Some(value.clone());
        } else if name == CONNECTION {
            let value = value.as_bytes();
            self.connection.close |= tokens::lists(value, "close");
            // A value with bytes beyond ASCII is not read as keep-alive
            // (hyper reads it as text, and such a value is not).
            self.connection.keep_alive |= value.is_ascii() && tokens::lists(value, "keep-alive");
        } else if name == EXPECT {
            // The last one decides, whole.
            self.expect_continue = value.as_bytes().eq_ignore_ascii_case(b"100-continue");
        } else if name == UPGRADE {
            self.upgrade = true;
        }
        Ok(true)
    }
}

/// Whether a `Transfer-Encoding` value's last coding is `chunked`. A value
/// with bytes beyond ASCII is not (hyper reads it as text, and it is not).
fn last_is_chunked(value: &[u8]) -> bool {
    value.is_ascii()
        && value
            .rsplit(|&b| b == b',')
            .next()
            .is_some_and(|last| tokens::trim_ows(last).eq_ignore_ascii_case(b"chunked"))
}

/// What a response's body is known to be when its head is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodySize {
    /// No body (a length of 0).
    Empty,
    /// Exactly this many bytes.
    Exact(u64),
    /// Streamed, length unknown.
    Unknown,
}

/// What the request a response answers asked for, as far as the response's
/// framing and the connection go.
#[derive(Clone, Copy, Debug)]
pub struct Asked<'a> {
    /// The request's method (HEAD and CONNECT frame responses differently).
    pub method: &'a Method,
    /// The request's version (HTTP/1.0 gets no chunked body).
    pub version: Version,
    /// Whether the request let the connection be kept.
    pub keep_alive: bool,
}

/// How the response whose head [`write_response_head`] wrote goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    /// How its body must be sent: exactly this many bytes (0: nothing may
    /// follow the head), chunked, or until the connection closes.
    pub framing: Framing,
    /// Whether the connection may carry another request after it (false
    /// for an upgrade or a tunnel too: the connection is handed over).
    pub keep_alive: bool,
}

/// Writes a response head to `dst`: the status line (always HTTP/1.1, as
/// RFC 9110 2.5 asks of a server, to HTTP/1.0 clients too), every field of
/// `headers` but those framing the body and the connection, then those as
/// decided here:
/// - no body after 1xx, 204 and 304, nor after a HEAD's response or a 2xx
///   to CONNECT; a HEAD's response keeps the `Content-Length` the map has
///   (what a GET would have had);
/// - `Content-Length` from `body` when known, else chunked, else (HTTP/1.0)
///   until the connection closes;
/// - the connection is kept only if the request let it, the map's
///   `Connection` does not say `close`, and the body is not delimited by the
///   close; `Connection: close` is written when it is not kept (for HTTP/1.1),
///   `keep-alive` when it is (for HTTP/1.0). A 101 writes the map's
///   `Connection` as it is and hands the connection over.
/// - `Date` (`date`, the current one, cached by the caller) unless the map
///   has one.
pub fn write_response_head(
    dst: &mut Vec<u8>,
    asked: Asked<'_>,
    status: StatusCode,
    headers: &HeaderMap,
    body: BodySize,
    date: &[u8],
) -> Written {
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    let tunnel = asked.method == Method::CONNECT && status.is_success();
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || tunnel;
    let head_request = asked.method == Method::HEAD;

    let fields: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    // The status line, then what is written here: date, length or chunked,
    // connection.
    dst.reserve(48 + fields + 96);
    dst.extend_from_slice(b"HTTP/1.1 ");
    dst.extend_from_slice(status.as_str().as_bytes());
    dst.push(b' ');
    dst.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    dst.extend_from_slice(b"\r\n");

    let mut close_asked = false;
    let mut dated = false;
    for (name, value) in headers {
        if name == CONTENT_LENGTH {
            // A HEAD's response says what the GET's body would have been.
            if !head_request || bodiless {
                continue;
            }
        } else if name == TRANSFER_ENCODING {
            continue;
        } else if name == CONNECTION {
            close_asked |= tokens::lists(value.as_bytes(), "close");
            if !switching {
                continue;
            }
        } else if name == DATE {
            dated = true;
        }
        field(dst, name.as_str().as_bytes(), value.as_bytes());
    }
    if !dated {
        field(dst, b"date", date);
    }

    let framing = match body {
        _ if bodiless || head_request => Framing::Length(0),
        BodySize::Empty => Framing::Length(0),
        BodySize::Exact(n) => Framing::Length(n),
        BodySize::Unknown if asked.version == Version::HTTP_11 => Framing::Chunked,
        BodySize::Unknown => Framing::Close,
    };
    match framing {
        // Nothing says the length of what is not sent (a HEAD's is the map's).
        _ if bodiless || head_request => {}
        Framing::Length(n) => {
            let mut digits = [0u8; 20];
            field(dst, b"content-length", decimal(n, &mut digits));
        }
        Framing::Chunked => field(dst, b"transfer-encoding", b"chunked"),
        Framing::Close => {}
    }
    let handed_over = switching || tunnel;
    let keep_alive = asked.keep_alive && !close_asked && !handed_over && framing != Framing::Close;
    if !handed_over {
        match (keep_alive, asked.version) {
            (false, Version::HTTP_11) => field(dst, b"connection", b"close"),
            (true, Version::HTTP_10) => field(dst, b"connection", b"keep-alive"),
            _ => {}
        }
    }
    dst.extend_from_slice(b"\r\n");
    Written {
        framing,
        keep_alive,
    }
}

/// `n` in decimal, in the end of `buf`.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

fn field(dst: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    dst.extend_from_slice(name);
    dst.extend_from_slice(b": ");
    dst.extend_from_slice(value);
    dst.extend_from_slice(b"\r\n");
}

pub mod serve;

#[cfg(test)]
mod tests;
