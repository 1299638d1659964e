//! HTTP/1.1 on the upstream leg, as bytes: the request head written from
//! the prepared request, the response head parsed (by httparse, with the
//! same settings hyper uses), and the response body's framing decoded. No
//! I/O here: [`super::exchange`] drives it, and the fuzz target
//! `h1_response` and the differential test against hyper's client
//! (`tests/h1_differential.rs`) run these same functions on the same bytes.
//!
//! The rules are RFC 9112's, read the way hyper's client reads them, never
//! more leniently: Transfer-Encoding over Content-Length (and then the
//! connection is not reused), every Content-Length value the same number,
//! chunk sizes of hex digits only, CRLF after every chunk, and no byte of a
//! connection read past the end of a response is ever taken as the start of
//! the next one: such a connection is closed.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};

use crate::tokens;

/// Most header fields in a response head (hyper's default too).
pub const MAX_HEADERS: usize = 100;
/// Most bytes of chunk extensions in one body (hyper's limit too).
const MAX_EXTENSIONS: u64 = 16 * 1024;
/// Most bytes of trailer fields in one body (hyper's limit too).
const MAX_TRAILERS: usize = 16 * 1024;

/// Why an upstream's response could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The head is not HTTP/1.x (httparse's reason).
    #[error("response head is malformed: {0}")]
    Head(httparse::Error),
    /// No complete head within the buffer's limit.
    #[error("response head is larger than {0} bytes")]
    TooLarge(usize),
    /// A header value is not a valid field value.
    #[error("response header {0} has an invalid value")]
    Value(String),
    /// Content-Length values that are not one number.
    #[error("response has an invalid Content-Length")]
    ContentLength,
    /// Transfer-Encoding in an HTTP/1.0 response.
    #[error("HTTP/1.0 response with Transfer-Encoding")]
    TransferEncoding10,
    /// The upstream closed the connection before the body's end.
    #[error("upstream closed the connection before the response body ended")]
    Cut,
    /// The chunked framing is broken.
    #[error("chunked framing is malformed: {0}")]
    Chunked(&'static str),
}

/// How a response body is delimited (RFC 9112 6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many bytes (0: no body).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the upstream closes the connection.
    Close,
}

/// A parsed response head.
#[derive(Debug)]
pub struct Head {
    /// Status code.
    pub status: StatusCode,
    /// Every header field, in order, but a `Connection` field that is just
    /// `keep-alive` or `close` (nearly every response has one): that says
    /// only what `keep_alive` says, and the proxy would take it out again
    /// (hop-by-hop) after building it into the map.
    pub headers: HeaderMap,
    /// How the body that follows is delimited.
    pub framing: Framing,
    /// Whether the connection may carry another request after this response.
    pub keep_alive: bool,
}

/// Parses a response head from the start of `buf` and removes it from
/// `buf`. `None`: incomplete, read more (up to `limit` bytes in all).
/// `request` is the method the response answers (HEAD has no body).
pub fn parse_head(
    buf: &mut BytesMut,
    request: &Method,
    limit: usize,
) -> Result<Option<Head>, ParseError> {
    // Uninitialised slots: httparse fills only what it uses (initialising
    // 100 of them cost more than parsing a small head).
    let mut fields =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        buf,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= limit => {
            return Err(ParseError::TooLarge(limit));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(ParseError::Head(e)),
    };
    if len > limit {
        return Err(ParseError::TooLarge(limit));
    }
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let code = parsed.code.unwrap_or_default();
    let status =
        StatusCode::from_u16(code).map_err(|_| ParseError::Head(httparse::Error::Status))?;
    // Where each name and value sits in the head (offsets fit in u32: the
    // head is at most `limit`), so the values can share its bytes once it
    // is split off the buffer.
    let base = buf.as_ptr() as usize;
    let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
    let count = parsed.headers.len();
    for (span, field) in spans.iter_mut().zip(parsed.headers.iter()) {
        let name = field.name.as_ptr() as usize - base;
        let value = field.value.as_ptr() as usize - base;
        *span = (
            name as u32,
            field.name.len() as u32,
            value as u32,
            field.value.len() as u32,
        );
    }
    let head = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(count);
    let mut seen = Seen::default();
    for &(name, name_len, value, value_len) in &spans[..count] {
        let (name, name_len, value, value_len) = (
            name as usize,
            name_len as usize,
            value as usize,
            value_len as usize,
        );
        let (name_bytes, value_bytes) = (
            &head[name..name + name_len],
            &head[value..value + value_len],
        );
        if seen.connection.bare(name_bytes, value_bytes) {
            continue;
        }
        let name = HeaderName::from_bytes(name_bytes)
            .map_err(|_| ParseError::Head(httparse::Error::HeaderName))?;
        let value = HeaderValue::from_maybe_shared(head.slice(value..value + value_len))
            .map_err(|_| ParseError::Value(name.to_string()))?;
        seen.note(&name, &value);
        headers.append(name, value);
    }
    let (framing, framing_clean) = framing(status, version, &seen, request)?;
    let keep_alive = framing_clean
        && framing != Framing::Close
        && match version {
            Version::HTTP_11 => !seen.connection.close,
            _ => seen.connection.keep_alive && !seen.connection.close,
        };
    Ok(Some(Head {
        status,
        headers,
        framing,
        keep_alive,
    }))
}

/// What the fields that frame a response said, noted as the head is read
/// (no lookups in the map afterwards).
#[derive(Default)]
struct Seen {
    /// Some `Content-Length` field came; its value if every one is the same
    /// number of digits only, else an error.
    length: Option<Result<u64, ()>>,
    /// The last `Transfer-Encoding` field (whose last coding decides).
    transfer_encoding: Option<HeaderValue>,
    /// `Connection` lists `close` / `keep-alive`.
    connection: tokens::ConnectionTokens,
}

impl Seen {
    fn note(&mut self, name: &HeaderName, value: &HeaderValue) {
        if name == CONTENT_LENGTH {
            // Every comma-separated part (an empty one too) must be the same
            // number; a byte that is not a digit or blank anywhere fails it.
            let parsed = value.as_bytes().split(|&b| b == b',').try_fold(
                None,
                |agreed: Option<u64>, part| match (digits(tokens::trim_ows(part)), agreed) {
                    (Some(n), None) => Ok(Some(n)),
                    (Some(n), Some(a)) if n == a => Ok(Some(n)),
                    _ => Err(()),
                },
            );
            self.length = Some(match (self.length.take(), parsed) {
                (None | Some(Ok(_)), Ok(None)) | (_, Err(())) | (Some(Err(())), _) => Err(()),
                (None, Ok(Some(n))) => Ok(n),
                (Some(Ok(a)), Ok(Some(n))) if a == n => Ok(n),
                (Some(Ok(_)), Ok(Some(_))) => Err(()),
            });
        } else if name == TRANSFER_ENCODING {
            self.transfer_encoding = Some(value.clone());
        } else if name == CONNECTION {
            // A list (a field that is one bare token was noted by
            // `ConnectionTokens::bare` and never reaches here).
            for token in tokens::elements(value.as_bytes()) {
                self.connection.close |= token.eq_ignore_ascii_case(b"close");
                self.connection.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
}

/// The body's framing, and whether it was unambiguous (a response with both
/// Transfer-Encoding and Content-Length is read by the first, but its
/// connection is not trusted with another request).
fn framing(
    status: StatusCode,
    version: Version,
    seen: &Seen,
    request: &Method,
) -> Result<(Framing, bool), ParseError> {
    // A 2xx to CONNECT turns the connection into a tunnel: never reused.
    if request == Method::CONNECT && status.is_success() {
        return Ok((Framing::Length(0), false));
    }
    if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || request == Method::HEAD
    {
        return Ok((Framing::Length(0), true));
    }
    if let Some(te) = &seen.transfer_encoding {
        if version == Version::HTTP_10 {
            return Err(ParseError::TransferEncoding10);
        }
        let chunked = te
            .to_str()
            .ok()
            .and_then(|s| s.rsplit(',').next())
            .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        let framing = if chunked {
            Framing::Chunked
        } else {
            Framing::Close
        };
        return Ok((framing, seen.length.is_none()));
    }
    match seen.length {
        None => Ok((Framing::Close, true)),
        Some(Ok(n)) => Ok((Framing::Length(n), true)),
        Some(Err(())) => Err(ParseError::ContentLength),
    }
}

/// A decimal number of digits only (no sign, no space), below 2^64 - 2.
pub(crate) fn digits(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter()
        .try_fold(0u64, |n, &b| {
            let d = b.wrapping_sub(b'0');
            (d < 10).then_some(())?;
            n.checked_mul(10)?.checked_add(u64::from(d))
        })
        .filter(|&n| n < u64::MAX - 1)
}

/// What [`Decoder::decode`] found in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// Read more first.
    More,
    /// The body is complete.
    End,
}

/// Takes a response body's bytes out of the read buffer by its framing.
#[derive(Debug)]
pub struct Decoder {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Length(u64),
    Close,
    Chunked(Chunked),
    Done,
}

#[derive(Debug)]
struct Chunked {
    state: State,
    /// Bytes of the current chunk still to come, or the size being read.
    size: u64,
    extensions: u64,
    /// The trailer section as read, checked as header fields at its end
    /// (trailers themselves are not forwarded: `Trailer` is hop-by-hop).
    trailers: Vec<u8>,
    /// A trailer section is an error (request bodies: see [`Decoder::request`]).
    refuse_trailers: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Start,
    Size,
    SizeLws,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line or of the final CRLF.
    EndCr,
    Trailer,
    TrailerLf,
    EndLf,
    Done,
}

impl Decoder {
    /// A decoder for a request body of this framing: as [`Decoder::new`],
    /// but a chunked body with a trailer section is refused. Trailers never
    /// reach an upstream through branchgate (`Trailer` is hop-by-hop), and a
    /// client that sends them gets 400 rather than having them dropped
    /// unseen, as with hyper's server before (see SECURITY.md).
    pub fn request(framing: Framing) -> Self {
        let mut decoder = Self::new(framing);
        if let Kind::Chunked(c) = &mut decoder.kind {
            c.refuse_trailers = true;
        }
        decoder
    }

    /// A decoder for a body of this framing.
    pub fn new(framing: Framing) -> Self {
        let kind = match framing {
            Framing::Length(0) => Kind::Done,
            Framing::Length(n) => Kind::Length(n),
            Framing::Close => Kind::Close,
            Framing::Chunked => Kind::Chunked(Chunked {
                state: State::Start,
                size: 0,
                extensions: 0,
                trailers: Vec::new(),
                refuse_trailers: false,
            }),
        };
        Self { kind }
    }

    /// Whether the whole body has been decoded.
    pub fn is_done(&self) -> bool {
        matches!(self.kind, Kind::Done)
    }

    /// Bytes still to come of a body framed by its length (`None` for
    /// chunked and until-close bodies): the size hint it gives.
    pub fn length_left(&self) -> Option<u64> {
        match &self.kind {
            Kind::Length(n) => Some(*n),
            Kind::Done => Some(0),
            _ => None,
        }
    }

    /// Bytes of body still to come, when known.
    pub fn remaining(&self) -> Option<u64> {
        match &self.kind {
            Kind::Length(n) => Some(*n),
            Kind::Done => Some(0),
            Kind::Chunked(c) if c.state == State::Data => Some(c.size),
            _ => None,
        }
    }

    /// Takes what it can of the body from the front of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ParseError> {
        match &mut self.kind {
            Kind::Done => Ok(Decoded::End),
            Kind::Length(n) => {
                if buf.is_empty() {
                    return Ok(Decoded::More);
                }
                let take = (*n).min(buf.len() as u64) as usize;
                *n -= take as u64;
                if *n == 0 {
                    self.kind = Kind::Done;
                }
                Ok(Decoded::Data(buf.split_to(take).freeze()))
            }
            Kind::Close if buf.is_empty() => Ok(Decoded::More),
            Kind::Close => Ok(Decoded::Data(buf.split().freeze())),
            Kind::Chunked(c) => {
                let decoded = c.decode(buf)?;
                if decoded == Decoded::End {
                    self.kind = Kind::Done;
                }
                Ok(decoded)
            }
        }
    }

    /// The upstream closed the connection: the end of a body read until
    /// close, else a body cut short.
    pub fn eof(&mut self) -> Result<Decoded, ParseError> {
        match self.kind {
            Kind::Close | Kind::Done => {
                self.kind = Kind::Done;
                Ok(Decoded::End)
            }
            _ => Err(ParseError::Cut),
        }
    }
}

impl Chunked {
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ParseError> {
        loop {
            if self.state == State::Data {
                if buf.is_empty() {
                    return Ok(Decoded::More);
                }
                let take = self.size.min(buf.len() as u64) as usize;
                self.size -= take as u64;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                return Ok(Decoded::Data(buf.split_to(take).freeze()));
            }
            let Some(&byte) = buf.first() else {
                return Ok(Decoded::More);
            };
            buf.advance(1);
            self.state = self.step(byte)?;
            if self.state == State::Done {
                return Ok(Decoded::End);
            }
        }
    }

    fn step(&mut self, byte: u8) -> Result<State, ParseError> {
        use State::*;
        let hex = |b: u8| match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        };
        Ok(match (self.state, byte) {
            (Start | Size, b) if hex(b).is_some() => {
                self.size = self
                    .size
                    .checked_mul(16)
                    .and_then(|s| s.checked_add(u64::from(hex(b).unwrap_or(0))))
                    .ok_or(ParseError::Chunked("chunk size overflows"))?;
                Size
            }
            (Start, _) => return Err(ParseError::Chunked("missing chunk size")),
            (Size | SizeLws, b' ' | b'\t') => SizeLws,
            (Size | SizeLws, b';') => Extension,
            (Size | SizeLws | Extension, b'\r') => SizeLf,
            (Size, _) => return Err(ParseError::Chunked("invalid chunk size")),
            (SizeLws, _) => return Err(ParseError::Chunked("invalid space after chunk size")),
            (Extension, b'\n') => return Err(ParseError::Chunked("bare LF in a chunk extension")),
            (Extension, _) => {
                self.extensions += 1;
                if self.extensions >= MAX_EXTENSIONS {
                    return Err(ParseError::Chunked("chunk extensions over the limit"));
                }
                Extension
            }
            (SizeLf, b'\n') if self.size == 0 => EndCr,
            (SizeLf, b'\n') => Data,
            (SizeLf, _) => return Err(ParseError::Chunked("chunk size line not ended by CRLF")),
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => Start,
            (DataCr | DataLf, _) => {
                return Err(ParseError::Chunked("chunk data not followed by CRLF"));
            }
            (EndCr, b'\r') => EndLf,
            (EndLf, b'\n') => {
                if !self.trailers.is_empty() {
                    self.trailers.extend_from_slice(b"\r\n");
                    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    match httparse::parse_headers(&self.trailers, &mut fields) {
                        Ok(httparse::Status::Complete(_)) => {}
                        _ => return Err(ParseError::Chunked("trailer fields are malformed")),
                    }
                }
                State::Done
            }
            (EndLf, _) => return Err(ParseError::Chunked("body not ended by CRLF")),
            (EndCr | Trailer, b'\n') => return Err(ParseError::Chunked("bare LF in a trailer")),
            (EndCr, _) if self.refuse_trailers => {
                return Err(ParseError::Chunked("request trailers are refused"));
            }
            (EndCr | Trailer, _) => {
                self.trailers.push(byte);
                if self.trailers.len() > MAX_TRAILERS {
                    return Err(ParseError::Chunked("trailers over the limit"));
                }
                if byte == b'\r' { TrailerLf } else { Trailer }
            }
            (TrailerLf, b'\n') => {
                self.trailers.push(b'\n');
                EndCr
            }
            (TrailerLf, _) => return Err(ParseError::Chunked("trailer not ended by CRLF")),
            (Data | State::Done, _) => return Err(ParseError::Chunked("decoded past the end")),
        })
    }
}

/// How a request body is framed on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestFraming {
    /// Exactly this many bytes (0: none).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// Decides a request body's framing, adding the header that says so, the
/// way hyper's client did: a `Content-Length` already there stands, an
/// ended body has none, a known size becomes `Content-Length`, anything
/// else is chunked.
pub fn request_framing(headers: &mut HeaderMap, ended: bool, exact: Option<u64>) -> RequestFraming {
    if let Some(n) = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| digits(v.as_bytes()))
    {
        return RequestFraming::Length(n);
    }
    headers.remove(TRANSFER_ENCODING);
    if ended {
        return RequestFraming::Length(0);
    }
    match exact {
        Some(n) => {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(n));
            RequestFraming::Length(n)
        }
        None => {
            headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
            RequestFraming::Chunked
        }
    }
}

/// Writes a request head: request line, every field of `headers`, then
/// those of `extra`, the blank line.
pub fn write_head(
    out: &mut Vec<u8>,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    extra: &[(&HeaderName, &HeaderValue)],
) {
    let fields: usize = headers
        .iter()
        .chain(extra.iter().copied())
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    out.reserve(method.as_str().len() + target.len() + 13 + fields + 2);
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers.iter().chain(extra.iter().copied()) {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The size line that opens a chunk of `len` bytes.
pub fn chunk_size_line(len: usize) -> Bytes {
    let mut line = Vec::with_capacity(18);
    put_chunk_size_line(&mut line, len);
    Bytes::from(line)
}

/// Appends the size line that opens a chunk of `len` bytes (hex, CRLF).
pub fn put_chunk_size_line(out: &mut Vec<u8>, len: usize) {
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    let mut n = len;
    loop {
        i -= 1;
        digits[i] = b"0123456789ABCDEF"[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
}

/// What a chunked request body ends with (no trailers).
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests;
