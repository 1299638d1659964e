//! Request smuggling, table-driven, against the real binary: CL.TE, TE.CL,
//! TE.TE obfuscations, duplicate and malformed Content-Length, bare CR and
//! LF, obs-fold, NUL bytes, chunk-size tricks and pipelining after a
//! malformed request (payload classes from the HTTP Garden and AWS
//! http_desync_guardian). Each row goes to a recording raw backend over a
//! fresh client connection.
//!
//! The invariant, for every row: EITHER the client's last answer is a 400
//! (or it gets no answer but 400s) and the proxy closes the connection, and
//! no smuggled request (`/smuggled`, `/second` after a malformed one) reached
//! the backend; OR exactly one well-formed request, the legitimate one,
//! reached the backend, with nothing left over on any upstream connection.
//! Each row also pins its outcome, so a behaviour change is noticed.
//!
//! Two rows hold two requests by RFC 9112's own reading: a recipient MAY take
//! a bare LF as a line end (2.2), as nginx and hyper do, so `\n\n` ends a head.
//! There both requests must arrive, each well-formed, and nothing else: branchgate
//! re-frames each with CRLF, so its upstream cannot split them differently, and
//! a hop in front that does not end lines on LF must refuse (or blank) an LF
//! inside a field value (RFC 9110 5.5) rather than pass it on.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::ProxyProcess;
use support::proxy::route_toml;
use support::raw::{Exchange, RawBackend, RawConn, RawRequest};

/// Longest wait for one row's answers.
const WAIT: Duration = Duration::from_secs(5);
/// Once something came back: this much silence ends the row (a kept-alive
/// connection never closes on its own).
const QUIET: Duration = Duration::from_millis(300);
/// Lets the backend record what the proxy sent before the row is judged.
const SETTLE: Duration = Duration::from_millis(100);

const HOST: &str = "Host: s.foo.bar\r\n";
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: s.foo.bar\r\n\r\n";
const SECOND: &str = "GET /second HTTP/1.1\r\nHost: s.foo.bar\r\n\r\n";
const FIRST: &str = "GET /first HTTP/1.1\r\nHost: s.foo.bar\r\n\r\n";

/// What a row did, as pinned in the table.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    /// The client's last answer is a 400, the proxy closed the connection,
    /// and no complete request reached the backend.
    Reject,
    /// The first `n` pipelined requests (legitimate) reached the backend and
    /// were answered; then a 400, and the proxy closed the connection.
    RejectAfter(usize),
    /// Exactly one request, the legitimate one, reached the backend with
    /// this (decoded) body; `closed`: the proxy then closed the connection.
    Forwarded { body: String, closed: bool },
    /// The payload holds this many requests as RFC 9112 reads it (bare LF
    /// line ends); each reached the backend well-formed and was answered.
    Pipelined(usize),
    /// No answer at all; the proxy closed the connection.
    Dropped,
    /// Anything else (never pinned: always a failure).
    Other(String),
}

fn fwd(body: &str, closed: bool) -> Outcome {
    Outcome::Forwarded {
        body: body.to_owned(),
        closed,
    }
}

/// One payload.
struct Row {
    name: &'static str,
    bytes: Vec<u8>,
    /// The request targets allowed at the backend, in order.
    legit: &'static [&'static str],
    /// Text the client's answers must contain.
    client_sees: Option<&'static str>,
    expect: Outcome,
}

fn row(name: &'static str, bytes: impl Into<String>, expect: Outcome) -> Row {
    Row {
        name,
        bytes: bytes.into().into_bytes(),
        legit: &["/first"],
        client_sees: None,
        expect,
    }
}

/// `POST /first` with `Host`, the extra header lines (each ending in CRLF)
/// and the body.
fn post(headers: &str, body: &str) -> String {
    format!("POST /first HTTP/1.1\r\n{HOST}{headers}\r\n{body}")
}

/// `POST /first`, `Transfer-Encoding: chunked`, with this raw chunked body.
fn chunked(body: &str) -> String {
    post("Transfer-Encoding: chunked\r\n", body)
}

/// `POST /first` whose `Content-Length` value is `value`.
fn cl(value: &str, body: &str) -> String {
    post(&format!("Content-Length: {value}\r\n"), body)
}

/// CL.TE-shaped: `Content-Length` covers a body that, read as chunked, ends
/// early and leaves `GET /smuggled` behind; `te` is the (obfuscated)
/// `Transfer-Encoding` line or lines.
fn te_te(te: &str) -> String {
    let body = format!("0\r\n\r\n{SMUGGLED}");
    post(&format!("Content-Length: {}\r\n{te}", body.len()), &body)
}

/// `GET /first` with `Host` and these header lines (each ending in CRLF).
fn get(headers: &str) -> String {
    format!("GET /first HTTP/1.1\r\n{HOST}{headers}\r\n")
}

fn rows() -> Vec<Row> {
    use Outcome::{Reject, RejectAfter};
    let smuggled_len = SMUGGLED.len();
    let zero_then_smuggled = format!("0\r\n\r\n{SMUGGLED}");
    let mut rows = vec![
        // Baselines: the strict backend takes what the proxy sends.
        row("baseline GET", FIRST, fwd("", false)),
        row(
            "baseline chunked",
            chunked("5\r\nhello\r\n0\r\n\r\n"),
            fwd("hello", false),
        ),
        row(
            "baseline Content-Length",
            cl("5", "hello"),
            fwd("hello", false),
        ),
        // CL.TE and TE.CL: Transfer-Encoding wins, and the connection closes.
        row(
            "CL.TE: CL covers a smuggled request after 0-chunk",
            te_te("Transfer-Encoding: chunked\r\n"),
            fwd("", true),
        ),
        row(
            "CL.TE: CL 6, body `0\\r\\n\\r\\nG` then a pipelined request",
            format!(
                "{}{SECOND}",
                post(
                    "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n",
                    "0\r\n\r\nG"
                )
            ),
            fwd("", true),
        ),
        row(
            "TE.CL: CL 4, the chunk holds a request",
            post(
                "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
                &format!("{smuggled_len:x}\r\n{SMUGGLED}\r\n0\r\n\r\n"),
            ),
            fwd(SMUGGLED, true),
        ),
        row(
            "TE.CL: CL before TE, the chunk holds a request",
            post(
                "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
                &format!("{smuggled_len:x}\r\n{SMUGGLED}\r\n0\r\n\r\n"),
            ),
            fwd(SMUGGLED, true),
        ),
        // TE.TE: obfuscated Transfer-Encoding next to a Content-Length.
        row(
            "TE.TE: xchunked",
            te_te("Transfer-Encoding: xchunked\r\n"),
            Reject,
        ),
        row(
            "TE.TE: extra leading space in value",
            te_te("Transfer-Encoding:  chunked\r\n"),
            fwd("", true),
        ),
        row(
            "TE.TE: no space before value",
            te_te("Transfer-Encoding:chunked\r\n"),
            fwd("", true),
        ),
        row(
            "TE.TE: tab before value",
            te_te("Transfer-Encoding:\tchunked\r\n"),
            fwd("", true),
        ),
        row(
            "TE.TE: trailing space after value",
            te_te("Transfer-Encoding: chunked \r\n"),
            fwd("", true),
        ),
        row(
            "TE.TE: space before colon",
            te_te("Transfer-Encoding : chunked\r\n"),
            Reject,
        ),
        row(
            "TE.TE: chunked, identity",
            te_te("Transfer-Encoding: chunked, identity\r\n"),
            Reject,
        ),
        row(
            "TE.TE: identity, chunked",
            te_te("Transfer-Encoding: identity, chunked\r\n"),
            fwd("", true),
        ),
        row(
            "TE.TE: ChUnKeD",
            te_te("Transfer-Encoding: ChUnKeD\r\n"),
            fwd("", true),
        ),
        row(
            "TE.TE: mixed-case name",
            te_te("TrAnSfEr-EnCoDiNg: chunked\r\n"),
            fwd("", true),
        ),
        row(
            "TE.TE: quoted \"chunked\"",
            te_te("Transfer-Encoding: \"chunked\"\r\n"),
            Reject,
        ),
        row(
            "TE.TE: chunked with trailing comma",
            te_te("Transfer-Encoding: chunked,\r\n"),
            Reject,
        ),
        row(
            "TE.TE: duplicate TE, chunked then identity",
            te_te("Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n"),
            Reject,
        ),
        row(
            "TE.TE: duplicate TE, identity then chunked",
            te_te("Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n"),
            fwd("", true),
        ),
        row(
            "TE.TE: duplicate TE, chunked twice",
            te_te("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
            fwd("", true),
        ),
        row(
            "TE.TE: Transfer_Encoding (underscore) is not TE",
            te_te("Transfer_Encoding: chunked\r\n"),
            fwd(&zero_then_smuggled, false),
        ),
        row(
            "TE.TE: obs-folded TE value",
            te_te("Transfer-Encoding: identity\r\n chunked\r\n"),
            Reject,
        ),
        row(
            "TE.TE: NUL after chunked",
            te_te("Transfer-Encoding: chunked\0\r\n"),
            Reject,
        ),
        row(
            "TE on HTTP/1.0",
            format!(
                "POST /first HTTP/1.0\r\n{HOST}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            ),
            Reject,
        ),
        // Content-Length: duplicates and malformed values.
        row("CL: `5, 6`", cl("5, 6", "hello!"), Reject),
        row("CL: `5, 5`", cl("5, 5", "hello"), Reject),
        row("CL: `+5`", cl("+5", "hello"), Reject),
        row("CL: `-1`", cl("-1", "hello"), Reject),
        row("CL: `0x5`", cl("0x5", "hello"), Reject),
        row(
            "CL: ` 5` (leading space)",
            cl(" 5", "hello"),
            fwd("hello", false),
        ),
        row(
            "CL: `5 ` (trailing space)",
            cl("5 ", "hello"),
            fwd("hello", false),
        ),
        row("CL: `5,` (trailing comma)", cl("5,", "hello"), Reject),
        row("CL: `5.0`", cl("5.0", "hello"), Reject),
        row("CL: empty", cl("", "hello"), Reject),
        row(
            "CL: overflowing 99999999999999999999",
            cl("99999999999999999999", "hello"),
            Reject,
        ),
        row(
            "CL: two lines, equal",
            post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
            fwd("hello", false),
        ),
        row(
            "CL: two lines, different",
            post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"),
            Reject,
        ),
        row(
            "CL.CL: 0 then the length of a smuggled request",
            post(
                &format!("Content-Length: 0\r\nContent-Length: {smuggled_len}\r\n"),
                SMUGGLED,
            ),
            Reject,
        ),
        row(
            "CL.CL: the length of a smuggled request then 0",
            post(
                &format!("Content-Length: {smuggled_len}\r\nContent-Length: 0\r\n"),
                SMUGGLED,
            ),
            Reject,
        ),
        row(
            "CL.CL: `0, N` covering a smuggled request",
            cl(&format!("0, {smuggled_len}"), SMUGGLED),
            Reject,
        ),
        row(
            "CL: obs-folded value",
            post("Content-Length: 5\r\n 6\r\n", "hello!"),
            Reject,
        ),
        row("CL: NUL after the value", cl("5\0", "hello"), Reject),
        // Bare CR and bare LF in the request line and header lines.
        row(
            "bare CR ends the request line",
            format!("GET /first HTTP/1.1\r{HOST}\r\n"),
            Reject,
        ),
        row(
            "bare CR inside the request target",
            format!("GET /first\r/smuggled HTTP/1.1\r\n{HOST}\r\n"),
            Reject,
        ),
        row(
            "bare CR inside a header value",
            get("X-A: a\rb\r\n"),
            Reject,
        ),
        row(
            "bare CR ends a header line (hides CL)",
            post("X-A: a\rContent-Length: 5\r\n", "hello"),
            Reject,
        ),
        row(
            "bare LF ends the request line",
            format!("GET /first HTTP/1.1\n{HOST}\r\n"),
            fwd("", false),
        ),
        row(
            "bare LF ends a header line",
            get("X-A: a\n"),
            fwd("", false),
        ),
        row(
            "bare LF everywhere",
            "GET /first HTTP/1.1\nHost: s.foo.bar\n\n",
            fwd("", false),
        ),
        row(
            "bare LF ends a header line (reveals CL)",
            post("X-A: a\nContent-Length: 5\r\n", "hello"),
            fwd("hello", false),
        ),
        row(
            "bare LF inside the request target",
            format!("GET /first\n/smuggled HTTP/1.1\r\n{HOST}\r\n"),
            Reject,
        ),
        // A bare LF may end a line (RFC 9112 2.2), so these are two requests:
        // both arrive, each re-framed with CRLF (see the module comment).
        Row {
            legit: &["/first", "/second"],
            ..row(
                "bare LF LF ends the head, a request follows",
                format!("GET /first HTTP/1.1\r\n{HOST}X-A: a\n\n{SECOND}"),
                Outcome::Pipelined(2),
            )
        },
        Row {
            legit: &["/first", "/second"],
            ..row(
                "bare LF ends the head, a request follows",
                format!("GET /first HTTP/1.1\r\nHost: s.foo.bar\r\n\n{SECOND}"),
                Outcome::Pipelined(2),
            )
        },
        // obs-fold.
        row("obs-fold with space", get("X-A: a\r\n b\r\n"), Reject),
        row("obs-fold with tab", get("X-A: a\r\n\tb\r\n"), Reject),
        row(
            "leading space on the first header line",
            format!("GET /first HTTP/1.1\r\n {HOST}\r\n"),
            Reject,
        ),
        // NUL bytes.
        row("NUL in a header value", get("X-A: a\0b\r\n"), Reject),
        row("NUL in a header name", get("X-\0A: b\r\n"), Reject),
        row(
            "NUL in the request target",
            format!("GET /first\0/smuggled HTTP/1.1\r\n{HOST}\r\n"),
            Reject,
        ),
        // Other malformed header lines.
        row("header line without a colon", get("X-A b\r\n"), Reject),
        row("empty header name", get(": b\r\n"), Reject),
        row(
            "duplicate Host",
            format!("GET /first HTTP/1.1\r\n{HOST}{HOST}\r\n"),
            Reject,
        ),
        // Chunk-size tricks.
        row(
            "chunk size `0x5`",
            chunked("0x5\r\nhello\r\n0\r\n\r\n"),
            Reject,
        ),
        row(
            "chunk size `5 ;ext`",
            chunked("5 ;ext\r\nhello\r\n0\r\n\r\n"),
            fwd("hello", false),
        ),
        row(
            "chunk size `5;ext=v`",
            chunked("5;ext=v\r\nhello\r\n0\r\n\r\n"),
            fwd("hello", false),
        ),
        row(
            "chunk size `5 ` (trailing space)",
            chunked("5 \r\nhello\r\n0\r\n\r\n"),
            fwd("hello", false),
        ),
        row(
            "chunk size `0000000000000005`",
            chunked("0000000000000005\r\nhello\r\n0\r\n\r\n"),
            fwd("hello", false),
        ),
        row(
            "chunk size `-5`",
            chunked("-5\r\nhello\r\n0\r\n\r\n"),
            Reject,
        ),
        row(
            "chunk size `ffffffffffffffffff` (overflow)",
            chunked("ffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
            Reject,
        ),
        row(
            "chunk size empty",
            chunked("\r\nhello\r\n0\r\n\r\n"),
            Reject,
        ),
        row(
            "chunk extension holds a bare LF",
            chunked(&format!("5;a\nb\r\nhello\r\n0\r\n\r\n{SECOND}")),
            Reject,
        ),
        row(
            "chunk data without CRLF",
            chunked(&format!("5\r\nhello0\r\n\r\n{SECOND}")),
            Reject,
        ),
        row(
            "chunk data longer than its size",
            chunked(&format!("3\r\nhello\r\n0\r\n\r\n{SECOND}")),
            Reject,
        ),
        row(
            "bare LF after the chunk size",
            chunked(&format!("5\nhello\r\n0\r\n\r\n{SECOND}")),
            Reject,
        ),
        row(
            "bare LF after the chunk data",
            chunked(&format!("5\r\nhello\n0\r\n\r\n{SECOND}")),
            Reject,
        ),
        row(
            "last chunk `0\\n\\n`",
            chunked(&format!("5\r\nhello\r\n0\n\n{SECOND}")),
            Reject,
        ),
        row(
            "last chunk `0\\r\\n\\n`, a request follows",
            chunked(&format!("5\r\nhello\r\n0\r\n\n{SECOND}")),
            Reject,
        ),
        row(
            "trailer section (CRLF)",
            chunked("5\r\nhello\r\n0\r\nX: y\r\n\r\n"),
            Reject,
        ),
        row(
            "trailer ended by a bare LF, a request follows",
            chunked(&format!("0\r\nX: y\n\n{SECOND}")),
            Reject,
        ),
        // Pipelining: malformed then valid, valid then malformed.
        row(
            "pipelined: `CL: 5, 6` then /second",
            format!("{}{SECOND}", cl("5, 6", "hello!")),
            Reject,
        ),
        row(
            "pipelined: NUL in a header then /second",
            format!("{}{SECOND}", get("X-A: a\0b\r\n")),
            Reject,
        ),
        row(
            "pipelined: obs-fold then /second",
            format!("{}{SECOND}", get("X-A: a\r\n b\r\n")),
            Reject,
        ),
        row(
            "pipelined: bare CR then /second",
            format!("{}{SECOND}", get("X-A: a\rb\r\n")),
            Reject,
        ),
        row(
            "pipelined: xchunked then /second",
            format!(
                "{}{SECOND}",
                post("Transfer-Encoding: xchunked\r\n", "0\r\n\r\n")
            ),
            Reject,
        ),
        row(
            "pipelined: chunk size `-5` then /second",
            format!("{}{SECOND}", chunked("-5\r\nhello\r\n0\r\n\r\n")),
            Reject,
        ),
        row(
            "pipelined: duplicate Host then /second",
            format!("GET /first HTTP/1.1\r\n{HOST}{HOST}\r\n{SECOND}"),
            Reject,
        ),
        row(
            "pipelined: /first then /second with `CL: -1`",
            format!("{FIRST}GET /second HTTP/1.1\r\n{HOST}Content-Length: -1\r\n\r\n{SMUGGLED}"),
            RejectAfter(1),
        ),
        row(
            "pipelined: /first then /second with NUL in a header",
            format!("{FIRST}GET /second HTTP/1.1\r\n{HOST}X-A: a\0b\r\n\r\n{SMUGGLED}"),
            RejectAfter(1),
        ),
        row(
            "pipelined: /first then /second with xchunked",
            format!(
                "{FIRST}POST /second HTTP/1.1\r\n{HOST}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
            ),
            RejectAfter(1),
        ),
        row(
            "pipelined: /first then /second with duplicate Host",
            format!("{FIRST}GET /second HTTP/1.1\r\n{HOST}{HOST}\r\n{SMUGGLED}"),
            RejectAfter(1),
        ),
        row(
            "pipelined: /first then /second with a bad chunk size",
            format!(
                "{FIRST}POST /second HTTP/1.1\r\n{HOST}Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n{SMUGGLED}"
            ),
            RejectAfter(1),
        ),
    ];
    // Leading zeros are read leniently and forwarded canonically.
    rows.push(Row {
        name: "CL: `005` arrives as `5`",
        bytes: format!("POST /zero-length HTTP/1.1\r\n{HOST}Content-Length: 005\r\n\r\nhello")
            .into_bytes(),
        legit: &["/zero-length"],
        client_sees: Some("[\"5\"]"),
        expect: fwd("hello", false),
    });
    rows
}

/// Sends `bytes` on a new connection; reads until the proxy closes it, or
/// until [`WAIT`]; when no close is expected, also until [`QUIET`] passes
/// without more bytes after some came.
async fn send(addr: SocketAddr, bytes: &[u8], expect_close: bool) -> Exchange {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut out = Vec::new();
    let mut buf = vec![0; 16 * 1024];
    let mut closed = false;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let limit = if out.is_empty() || expect_close {
            left
        } else {
            left.min(QUIET)
        };
        match tokio::time::timeout(limit, s.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    Exchange {
        text: String::from_utf8_lossy(&out).into_owned(),
        closed,
    }
}

/// Per upstream connection: bytes and requests recorded so far.
fn marks(backend: &RawBackend) -> Vec<(usize, usize)> {
    backend
        .conns()
        .iter()
        .map(|c| (c.bytes.len(), c.requests.len()))
        .collect()
}

/// What the backend got since `before`: the new complete requests, and the
/// upstream connections that carried new bytes.
fn since(backend: &RawBackend, before: &[(usize, usize)]) -> (Vec<RawRequest>, Vec<RawConn>) {
    let mut requests = Vec::new();
    let mut touched = Vec::new();
    for (i, c) in backend.conns().into_iter().enumerate() {
        let (bytes, reqs) = before.get(i).copied().unwrap_or((0, 0));
        requests.extend(c.requests.iter().skip(reqs).cloned());
        if c.bytes.len() > bytes {
            touched.push(c);
        }
    }
    (requests, touched)
}

fn canonical_length(v: &str) -> bool {
    !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) && (v == "0" || !v.starts_with('0'))
}

/// Classifies what happened, and says why it is unsafe if it is.
fn judge(
    row: &Row,
    ex: &Exchange,
    requests: &[RawRequest],
    touched: &[RawConn],
) -> (Outcome, Option<String>) {
    let statuses = ex.statuses();
    let smuggled: Vec<&str> = requests
        .iter()
        .map(RawRequest::target)
        .filter(|t| !row.legit.contains(t))
        .collect();
    let rejected =
        ex.closed && (statuses.last() == Some(&400) || statuses.iter().all(|s| *s == 400));
    let outcome = if rejected && statuses.is_empty() && requests.is_empty() {
        Outcome::Dropped
    } else if rejected && requests.is_empty() {
        Outcome::Reject
    } else if rejected {
        Outcome::RejectAfter(requests.len())
    } else if let [req] = requests {
        Outcome::Forwarded {
            body: String::from_utf8_lossy(&req.body).into_owned(),
            closed: ex.closed,
        }
    } else if requests.len() > 1 && statuses.len() == requests.len() {
        Outcome::Pipelined(requests.len())
    } else {
        Outcome::Other(format!(
            "statuses {statuses:?}, closed {}, {} requests at the backend",
            ex.closed,
            requests.len()
        ))
    };
    let mut why = Vec::new();
    if !smuggled.is_empty() {
        why.push(format!(
            "smuggled targets reached the backend: {smuggled:?}"
        ));
    }
    if !rejected {
        let targets: Vec<&str> = requests.iter().map(RawRequest::target).collect();
        if targets != row.legit {
            why.push(format!(
                "not rejected, and {targets:?} reached the backend, not {:?}",
                row.legit
            ));
        }
        for c in touched {
            if !c.leftover.is_empty() {
                why.push(format!(
                    "left over on an upstream connection: {:?}",
                    String::from_utf8_lossy(&c.leftover)
                ));
            }
        }
        for req in requests {
            let lengths = req.header("content-length");
            if !lengths.iter().all(|v| canonical_length(v)) {
                why.push(format!("forwarded Content-Length {lengths:?}"));
            }
            // An upstream that reads `_` as `-` would frame by these.
            for name in ["transfer_encoding", "content_length"] {
                if !req.header(name).is_empty() {
                    why.push(format!("forwarded a {name} header"));
                }
            }
        }
    }
    let why = (!why.is_empty()).then(|| why.join("; "));
    (outcome, why)
}

#[tokio::test]
async fn smuggling_payloads_are_refused_or_forwarded_as_one_clean_request() {
    let started = Instant::now();
    let backend = RawBackend::spawn().await;
    let proxy = ProxyProcess::spawn(
        &route_toml("s.foo.bar", &[backend.addr], ""),
        &["--access-log", "off"],
    )
    .await;
    let rows = rows();
    let mut failures = Vec::new();
    for row in &rows {
        let before = marks(&backend);
        let expect_close = matches!(
            row.expect,
            Outcome::Reject
                | Outcome::RejectAfter(_)
                | Outcome::Dropped
                | Outcome::Forwarded { closed: true, .. }
        );
        let ex = send(proxy.addr, &row.bytes, expect_close).await;
        tokio::time::sleep(SETTLE).await;
        let (requests, touched) = since(&backend, &before);
        let (outcome, unsafe_why) = judge(row, &ex, &requests, &touched);
        let targets: Vec<&str> = requests.iter().map(RawRequest::target).collect();
        eprintln!(
            "{:<60} {outcome:?} (statuses {:?}, closed {}, backend {targets:?})",
            row.name,
            ex.statuses(),
            ex.closed
        );
        if let Some(why) = unsafe_why {
            failures.push(format!(
                "{}: UNSAFE: {why}\n  sent: {:?}\n  client got: {:?}",
                row.name,
                String::from_utf8_lossy(&row.bytes),
                ex.text
            ));
        } else if outcome != row.expect {
            failures.push(format!(
                "{}: expected {:?}, got {outcome:?}\n  client got: {:?}",
                row.name, row.expect, ex.text
            ));
        }
        if let Some(text) = row.client_sees
            && !ex.text.contains(text)
        {
            failures.push(format!(
                "{}: the client's answers lack {text:?}: {:?}",
                row.name, ex.text
            ));
        }
    }
    eprintln!("{} rows in {:?}", rows.len(), started.elapsed());
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}
