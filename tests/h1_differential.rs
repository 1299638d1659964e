//! Differential tests of branchgate's own HTTP/1 readers against hyper, the
//! strict parser branchgate used before, on the same bytes: thousands of
//! messages made by mutating valid and tricky ones (framing edges, smuggling
//! shapes) with the bytes that matter to HTTP/1 framing.
//!
//! - Responses (`upstream::h1`) against hyper's client: whenever branchgate
//!   accepts a response, hyper accepts it too, with the same status, the same
//!   header fields and the same body bytes; and a response hyper refuses,
//!   branchgate refuses.
//! - Requests (`proxy::h1`, then the body by `upstream::h1::Decoder`) against
//!   hyper's server, pipelined requests and all: every request branchgate
//!   reads off a connection, hyper's server reads too, in the same order,
//!   with the same method, target, version, header fields and body bytes;
//!   and where hyper stops reading (a refusal, a closed connection),
//!   branchgate reads no further.
//!
//! branchgate may refuse more (a bare LF in a trailer, a DEL in a field
//! value): those are counted and printed, never failed.

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;

use std::sync::{Arc, Mutex};

use http::{Uri, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;

use branchgate::proxy::h1::{Asked, BodySize, Written, parse_request, write_response_head};
use branchgate::upstream::h1::Framing;
use branchgate::upstream::h1::{Decoded, Decoder, parse_head};

#[derive(Debug, PartialEq)]
struct Parsed {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// branchgate's reading, as `Lease::send` does it: heads (1xx but 101
/// skipped), then the body by its framing until its end or the end of the
/// input.
fn ours(bytes: &[u8], method: &Method) -> Option<Parsed> {
    let mut buf = BytesMut::from(bytes);
    let head = loop {
        let head = parse_head(&mut buf, method, 64 * 1024).ok()??;
        if !head.status.is_informational() || head.status == StatusCode::SWITCHING_PROTOCOLS {
            break head;
        }
    };
    let mut decoder = Decoder::new(head.framing);
    let mut body = Vec::new();
    loop {
        match decoder.decode(&mut buf).ok()? {
            Decoded::Data(d) => body.extend_from_slice(&d),
            Decoded::End => break,
            Decoded::More => match decoder.eof().ok()? {
                Decoded::End => break,
                _ => return None,
            },
        }
    }
    Some(Parsed {
        status: head.status,
        headers: head.headers,
        body,
    })
}

/// hyper's client reading the same bytes (then end of stream), as the
/// answer to an HTTP/1.1 request of `method`.
async fn hyper(bytes: &[u8], method: &Method) -> Option<Parsed> {
    hyper_as(bytes, method, Version::HTTP_11).await
}

/// hyper's client reading `bytes` (then end of stream) as the answer to a
/// request of `method` and `version`.
async fn hyper_as(bytes: &[u8], method: &Method, version: Version) -> Option<Parsed> {
    let (ours, mut theirs) = tokio::io::duplex(256 * 1024);
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(ours))
            .await
            .ok()?;
    let driver = tokio::spawn(conn);
    let req = Request::builder()
        .method(method.clone())
        .version(version)
        .uri(if method == Method::CONNECT {
            "x.example:443"
        } else {
            "/"
        })
        .header("host", "x")
        .body(Empty::new())
        .ok()?;
    // The request goes first: hyper refuses bytes that come before it.
    let sent = sender.send_request(req);
    let answer = async {
        tokio::task::yield_now().await;
        theirs.write_all(bytes).await?;
        theirs.shutdown().await
    };
    let (resp, answered) = tokio::join!(sent, answer);
    answered.ok()?;
    let resp = resp.ok()?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.ok()?.to_bytes().to_vec();
    driver.abort();
    Some(Parsed {
        status: parts.status,
        headers: without_bare_connection(parts.headers),
        body,
    })
}

/// `headers` without a `Connection` field that is just `keep-alive` or
/// `close`: branchgate's readers (responses and requests) leave those out
/// of their maps (they say only whether the connection is reused; the proxy
/// never forwards them), and keep any other.
fn without_bare_connection(mut headers: HeaderMap) -> HeaderMap {
    let bare = |v: &http::HeaderValue| {
        let v = v.as_bytes();
        v.eq_ignore_ascii_case(b"keep-alive") || v.eq_ignore_ascii_case(b"close")
    };
    let kept: Vec<_> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter(|v| !bare(v))
        .cloned()
        .collect();
    headers.remove(http::header::CONNECTION);
    for value in kept {
        headers.append(http::header::CONNECTION, value);
    }
    headers
}

/// Valid and borderline responses the mutations start from.
const SEEDS: &[&str] = &[
    "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 5\r\nConnection: x-a, close\r\n\r\nhello",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;a=b\r\nabc\r\n2 \r\nde\r\n0\r\nX-T: 1\r\n\r\n",
    "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwxyz\r\n0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\nabc",
    "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "HTTP/1.0 200 OK\r\n\r\nuntil the end",
    "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nraw until close",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\nContent-Length: 2\r\n\r\nab",
    "HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n",
    "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
    "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nX-A: 1\r\nx-a: 2\r\nSet-Cookie: a=b; Path=/\r\nContent-Length: 0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\nffff\r\n",
    "HTTP/1.1 500 \r\nContent-Length: 1\r\n\r\nx",
    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nabHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
];

/// Bytes that change how HTTP/1 is framed.
const ALPHABET: &[u8] = b"\r\n \t:;,0123456789aAfFxX-+\x00\x7f\x80\xff\"=";

/// xorshift64*: deterministic, so a failure names its seed and repeats.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn mutate(rng: &mut Rng, input: &mut Vec<u8>) {
    let at = rng.below(input.len() + 1);
    match rng.below(6) {
        0 if at < input.len() => input[at] = ALPHABET[rng.below(ALPHABET.len())],
        1 => input.insert(at, ALPHABET[rng.below(ALPHABET.len())]),
        2 if at < input.len() => {
            input.remove(at);
        }
        3 => {
            // Repeat a line (duplicate headers, chunks).
            let start = input[..at]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |p| p + 1);
            let end = input[at..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(input.len(), |p| at + p + 1);
            let line = input[start..end].to_vec();
            input.splice(start..start, line);
        }
        4 => {
            // CRLF to bare LF, or the other way round.
            if let Some(p) = input[at..].windows(2).position(|w| w == b"\r\n") {
                input.remove(at + p);
            } else if let Some(p) = input[at..].iter().position(|&b| b == b'\n') {
                input.insert(at + p, b'\r');
            }
        }
        _ if !input.is_empty() => input.truncate(at.max(1)),
        _ => {}
    }
}

#[tokio::test]
async fn branchgate_never_reads_a_response_more_leniently_than_hyper() {
    let runs: usize = std::env::var("H1_DIFF_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut agreed, mut both_refused, mut stricter) = (0, 0, 0);
    let mut stricter_examples = Vec::new();
    for run in 0..runs {
        let mut input = SEEDS[run % SEEDS.len()].as_bytes().to_vec();
        if run >= SEEDS.len() {
            for _ in 0..=rng.below(4) {
                mutate(&mut rng, &mut input);
            }
        }
        let method = if run % 7 == 3 {
            Method::HEAD
        } else {
            Method::GET
        };
        let theirs =
            tokio::time::timeout(std::time::Duration::from_secs(2), hyper(&input, &method))
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "run {run}: hyper hung on {:?}",
                        String::from_utf8_lossy(&input)
                    )
                });
        let mine = ours(&input, &method);
        let shown = String::from_utf8_lossy(&input);
        match (mine, theirs) {
            (Some(m), Some(t)) => {
                assert_eq!(m, t, "run {run}: both read {shown:?} but differently");
                agreed += 1;
            }
            (Some(m), None) => {
                // hyper's client refuses a 101 to a request that asked for
                // no upgrade; branchgate reads the head and answers 502.
                if m.status != StatusCode::SWITCHING_PROTOCOLS {
                    panic!("run {run}: branchgate read {shown:?} as {m:?}; hyper refused it");
                }
                both_refused += 1;
            }
            (None, Some(_)) => {
                stricter += 1;
                if stricter_examples.len() < 8 {
                    stricter_examples.push(shown.into_owned());
                }
            }
            (None, None) => both_refused += 1,
        }
    }
    eprintln!(
        "h1 differential: {runs} responses: {agreed} read alike, {both_refused} refused by both, \
         {stricter} refused by branchgate only, e.g. {stricter_examples:#?}"
    );
    assert!(
        agreed > runs / 10,
        "the mutations left too few valid responses"
    );
}

/// One request as read off a client connection.
#[derive(Debug, PartialEq)]
struct Read {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// branchgate's reading of a client connection that sent `bytes` and then
/// closed: heads and bodies in turn while the connection is kept, up to the
/// first refusal or incomplete message, and none after an upgrade.
fn ours_requests(bytes: &[u8]) -> Vec<Read> {
    let mut buf = BytesMut::from(bytes);
    let mut read = Vec::new();
    while let Ok(Some(head)) = parse_request(&mut buf, 64 * 1024) {
        let mut decoder = Decoder::request(head.framing);
        let mut body = Vec::new();
        let complete = loop {
            match decoder.decode(&mut buf) {
                Ok(Decoded::Data(d)) => body.extend_from_slice(&d),
                Ok(Decoded::End) => break true,
                // The connection has nothing more: a body cut short.
                Ok(Decoded::More) | Err(_) => break false,
            }
        };
        if !complete {
            break;
        }
        read.push(Read {
            method: head.method,
            uri: head.uri,
            version: head.version,
            headers: head.headers,
            body,
        });
        if !head.keep_alive || head.upgrade {
            break;
        }
    }
    read
}

/// hyper's server (with branchgate's buffer limit and upgrades) reading the
/// same bytes, then the client's end of stream: every request whose body
/// it delivered whole, answered 200 each.
async fn hyper_requests(bytes: &[u8]) -> Vec<Read> {
    let (ours, mut theirs) = tokio::io::duplex(256 * 1024);
    let read = Arc::new(Mutex::new(Vec::new()));
    let service = {
        let read = read.clone();
        service_fn(move |req: Request<Incoming>| {
            let read = read.clone();
            async move {
                let (parts, body) = req.into_parts();
                // A body that fails (cut short) is not a request read.
                if let Ok(body) = body.collect().await {
                    read.lock().unwrap().push(Read {
                        method: parts.method,
                        uri: parts.uri,
                        version: parts.version,
                        headers: without_bare_connection(parts.headers),
                        body: body.to_bytes().to_vec(),
                    });
                }
                Ok::<_, std::convert::Infallible>(hyper::Response::new(Empty::<Bytes>::new()))
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    // half_close: the client's end of stream must not cancel the requests
    // in flight (branchgate's server does, as a client gone away), or a
    // request would go unrecorded here.
    builder.max_buf_size(64 * 1024).half_close(true);
    let conn = builder
        .serve_connection(TokioIo::new(ours), service)
        .with_upgrades();
    let client = async {
        theirs.write_all(bytes).await.ok();
        theirs.shutdown().await.ok();
        // Take every answer, or hyper may wait to write.
        let mut answers = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut theirs, &mut answers)
            .await
            .ok();
    };
    let _ = tokio::join!(conn, client);
    std::mem::take(&mut *read.lock().unwrap())
}

/// Valid and borderline requests (smuggling shapes among them) the
/// mutations start from.
const REQUEST_SEEDS: &[&str] = &[
    "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwxyz\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
    "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabcGET /second HTTP/1.1\r\n\r\n",
    "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\nabc",
    "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n1\r\na\r\n0\r\n\r\n",
    "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n1\r\na\r\n0\r\n\r\n",
    "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n1\r\na\r\n0\r\n\r\n",
    "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n",
    "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /second HTTP/1.0\r\n\r\nGET /third HTTP/1.1\r\n\r\n",
    "GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET /second HTTP/1.1\r\n\r\n",
    "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: y\r\nConnection: keep-alive, close\r\n\r\nGET /c HTTP/1.1\r\n\r\n",
    "POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;a=b\r\nabc\r\n2 \r\nde\r\n0\r\nX-T: 1\r\n\r\nGET /next HTTP/1.1\r\n\r\n",
    "\r\nGET http://x.example/p?q HTTP/1.1\r\nX-A: 1\r\nx-a: 2\r\n\r\n",
    "OPTIONS * HTTP/1.1\r\n\r\n",
    "PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
    "GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nraw bytes",
    "CONNECT x.example:443 HTTP/1.1\r\nHost: x.example:443\r\n\r\ntunnel",
    "GET / HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n",
    "GET /\u{e9} HTTP/1.1\r\nX-A: caf\u{e9}\r\n\r\n",
    "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\nffff\r\n",
];

#[tokio::test]
async fn branchgate_never_reads_a_request_more_leniently_than_hyper() {
    let runs: usize = std::env::var("H1_DIFF_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let (mut alike, mut fewer, mut requests, mut served) = (0, 0, 0, 0);
    let mut fewer_examples = Vec::new();
    for run in 0..runs {
        let mut input = REQUEST_SEEDS[run % REQUEST_SEEDS.len()].as_bytes().to_vec();
        if run >= REQUEST_SEEDS.len() {
            for _ in 0..=rng.below(4) {
                mutate(&mut rng, &mut input);
            }
        }
        let shown = String::from_utf8_lossy(&input).into_owned();
        let theirs =
            tokio::time::timeout(std::time::Duration::from_secs(2), hyper_requests(&input))
                .await
                .unwrap_or_else(|_| panic!("run {run}: hyper's server hung on {shown:?}"));
        let mine = ours_requests(&input);
        // Every request branchgate read, hyper read alike, in order.
        assert!(
            mine.len() <= theirs.len(),
            "run {run}: branchgate read {} requests from {shown:?}, hyper {}: {mine:#?} vs {theirs:#?}",
            mine.len(),
            theirs.len()
        );
        for (i, (m, t)) in mine.iter().zip(&theirs).enumerate() {
            assert_eq!(m, t, "run {run}: request {i} of {shown:?} read differently");
        }
        requests += mine.len();
        served += usize::from(!mine.is_empty());
        if mine.len() == theirs.len() {
            alike += 1;
        } else {
            fewer += 1;
            if fewer_examples.len() < 8 {
                fewer_examples.push(shown);
            }
        }
    }
    eprintln!(
        "h1 request differential: {runs} connections, {served} with a request read, {requests} \
         requests: {alike} read alike, {fewer} where branchgate read fewer, e.g. {fewer_examples:#?}"
    );
    assert!(
        served > runs / 10,
        "the mutations left too few valid requests"
    );
}

/// Every response head branchgate writes, with its body sent as the head
/// says, is read by hyper's client as what the handler meant: the same
/// status, the handler's fields (framing, `Connection` and `Date` aside),
/// and the body, or none where the request or the status allows none.
#[tokio::test]
async fn hyper_reads_every_response_branchgate_writes_as_meant() {
    let methods = [Method::GET, Method::HEAD, Method::POST, Method::CONNECT];
    let versions = [Version::HTTP_10, Version::HTTP_11];
    let statuses = [200u16, 206, 204, 304, 404, 500, 599];
    let bodies = [BodySize::Empty, BodySize::Exact(11), BodySize::Unknown];
    let maps: [&[(&str, &str)]; 4] = [
        &[],
        &[("x-a", "1"), ("set-cookie", "a=b"), ("set-cookie", "c=d")],
        &[
            ("content-length", "3"),
            ("transfer-encoding", "chunked"),
            ("date", "then"),
        ],
        &[("connection", "close"), ("content-type", "text/plain")],
    ];
    let data = b"hello world";
    let mut checked = 0;
    for method in &methods {
        for version in versions {
            for status in statuses {
                for body in bodies {
                    for fields in maps {
                        for keep_alive in [true, false] {
                            let mut headers = HeaderMap::new();
                            for (n, v) in fields {
                                headers.append(*n, v.parse().unwrap());
                            }
                            let status = StatusCode::from_u16(status).unwrap();
                            let asked = Asked {
                                method,
                                version,
                                keep_alive,
                            };
                            let mut bytes = Vec::new();
                            let Written { framing, .. } = write_response_head(
                                &mut bytes,
                                asked,
                                status,
                                &headers,
                                body,
                                b"Tue, 01 Dec 2026 00:00:00 GMT",
                            );
                            let sent: &[u8] = match body {
                                BodySize::Empty => b"",
                                _ => data,
                            };
                            match framing {
                                Framing::Length(n) => bytes.extend_from_slice(&sent[..n as usize]),
                                Framing::Chunked => {
                                    if !sent.is_empty() {
                                        bytes.extend_from_slice(
                                            format!("{:X}\r\n", sent.len()).as_bytes(),
                                        );
                                        bytes.extend_from_slice(sent);
                                        bytes.extend_from_slice(b"\r\n");
                                    }
                                    bytes.extend_from_slice(b"0\r\n\r\n");
                                }
                                Framing::Close => bytes.extend_from_slice(sent),
                            }
                            let case = format!(
                                "{method} {version:?} {status} {body:?} {fields:?} keep {keep_alive}: {:?}",
                                String::from_utf8_lossy(&bytes)
                            );
                            // hyper's client takes no 1xx as a final answer.
                            if status.is_informational() {
                                continue;
                            }
                            let read = tokio::time::timeout(
                                std::time::Duration::from_secs(2),
                                hyper_as(&bytes, method, version),
                            )
                            .await
                            .unwrap_or_else(|_| panic!("hyper hung on {case}"))
                            .unwrap_or_else(|| panic!("hyper refused {case}"));
                            assert_eq!(read.status, status, "{case}");
                            let bodiless = *method == Method::HEAD
                                || status == StatusCode::NO_CONTENT
                                || status == StatusCode::NOT_MODIFIED
                                || (*method == Method::CONNECT && status.is_success());
                            let want: &[u8] = if bodiless { b"" } else { sent };
                            assert_eq!(read.body, want, "{case}");
                            for (name, value) in &headers {
                                if ["content-length", "transfer-encoding", "connection"]
                                    .contains(&name.as_str())
                                {
                                    continue;
                                }
                                assert!(
                                    read.headers.get_all(name).iter().any(|v| v == value),
                                    "{name} lost: {case}"
                                );
                            }
                            assert_eq!(read.headers.get_all("date").iter().count(), 1, "{case}");
                            checked += 1;
                        }
                    }
                }
            }
        }
    }
    assert!(checked > 1000, "{checked}");
}
