//! Raw sockets on both sides of the proxy: a backend that records the exact
//! bytes each connection brings and parses them strictly (CRLF only, one
//! Content-Length or chunked), and a client that sends bytes and reads what
//! comes back until the proxy closes.
//!
//! Backend answers by path:
//! - `/stall-body`: `Content-Length: 100`, 10 bytes, then silence
//! - `/te-cl`: a 58-byte chunked body framed by both `Transfer-Encoding` and `Content-Length: 2`
//! - `/switch`: `101 Switching Protocols` nobody asked for
//! - `/zero-length`: echoes the request's `Content-Length` line, as received
//! - `/early`: answers as soon as the head is in, and parses nothing after it
//!   (the body and whatever follows stay as leftover)
//! - `/no-read`: once the head is in, reads nothing more and never answers
//! - `/head-6k`: `200` with 60 header fields (a 6 KiB head), body `whol`
//! - anything else: `200`, body `ok <target>`

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// One request the backend parsed completely.
#[derive(Clone, Debug)]
pub struct RawRequest {
    /// The request line.
    pub line: String,
    /// Header lines as received, `name: value`.
    pub headers: Vec<String>,
    /// The decoded body.
    pub body: Vec<u8>,
}

impl RawRequest {
    /// The request target.
    pub fn target(&self) -> &str {
        self.line.split(' ').nth(1).unwrap_or("")
    }

    /// Values of the header `name` (case-insensitive), as received.
    pub fn header(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter_map(|h| {
                let (n, v) = h.split_once(':')?;
                n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
            .collect()
    }
}

/// What one upstream connection carried.
#[derive(Clone, Debug, Default)]
pub struct RawConn {
    /// Every byte received, in order.
    pub bytes: Vec<u8>,
    /// The requests parsed from them.
    pub requests: Vec<RawRequest>,
    /// Bytes after the last complete request (a partial or malformed one).
    pub leftover: Vec<u8>,
    /// The proxy closed the connection.
    pub closed: bool,
}

/// A backend that records bytes per connection; stops when dropped.
pub struct RawBackend {
    /// Where it listens.
    pub addr: SocketAddr,
    conns: Arc<Mutex<Vec<Arc<Mutex<RawConn>>>>>,
    stop: CancellationToken,
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl RawBackend {
    /// Starts listening on 127.0.0.1:0.
    pub async fn spawn() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns: Arc<Mutex<Vec<Arc<Mutex<RawConn>>>>> = Arc::default();
        let stop = CancellationToken::new();
        let (all, s) = (conns.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    () = s.cancelled() => return,
                    a = listener.accept() => a.unwrap(),
                };
                let conn = Arc::new(Mutex::new(RawConn::default()));
                all.lock().unwrap().push(conn.clone());
                tokio::spawn(serve(stream, conn, s.clone()));
            }
        });
        Self { addr, conns, stop }
    }

    /// A snapshot of every connection so far.
    pub fn conns(&self) -> Vec<RawConn> {
        self.conns
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.lock().unwrap().clone())
            .collect()
    }

    /// Every complete request, over all connections.
    pub fn requests(&self) -> Vec<RawRequest> {
        self.conns().into_iter().flat_map(|c| c.requests).collect()
    }
}

async fn serve(mut stream: TcpStream, conn: Arc<Mutex<RawConn>>, stop: CancellationToken) {
    let mut pending = Vec::new();
    let mut buf = vec![0; 16 * 1024];
    // After `/early`, nothing more is parsed.
    let mut early = false;
    loop {
        let n = tokio::select! {
            () = stop.cancelled() => return,
            n = stream.read(&mut buf) => n.unwrap_or(0),
        };
        if n == 0 {
            conn.lock().unwrap().closed = true;
            return;
        }
        pending.extend_from_slice(&buf[..n]);
        conn.lock().unwrap().bytes.extend_from_slice(&buf[..n]);
        if pending.starts_with(b"POST /no-read ") && find(&pending, b"\r\n\r\n").is_some() {
            // An upstream that stops reading: the proxy's writes back up.
            stop.cancelled().await;
            return;
        }
        while let Some((req, used)) = parse(&pending, early) {
            pending.drain(..used);
            early |= req.target() == "/early";
            let answer = answer(&req);
            // These answers end by closing the connection (without saying so).
            let close = matches!(req.target(), "/close-after" | "/until-close");
            conn.lock().unwrap().requests.push(req);
            if stream.write_all(&answer).await.is_err() || close {
                return;
            }
        }
        conn.lock().unwrap().leftover = pending.clone();
    }
}

fn answer(req: &RawRequest) -> Vec<u8> {
    match req.target() {
        "/stall-body" => {
            let mut a = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n".to_vec();
            a.extend_from_slice(&[b'x'; 10]);
            a
        }
        "/te-cl" => {
            let body = [b'y'; 58];
            let mut a =
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n3a\r\n"
                    .to_vec();
            a.extend_from_slice(&body);
            a.extend_from_slice(b"\r\n0\r\n\r\n");
            a
        }
        "/big-head" => format!(
            "HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 2\r\n\r\nok",
            "b".repeat(80 * 1024)
        )
        .into_bytes(),
        // A head of 6 KiB (60 fields): more than one of the proxy's head reads.
        "/head-6k" => {
            let mut a = b"HTTP/1.1 200 OK\r\n".to_vec();
            for i in 0..60 {
                a.extend_from_slice(format!("X-Field-{i:02}: {}\r\n", "v".repeat(88)).as_bytes());
            }
            a.extend_from_slice(b"Content-Length: 4\r\n\r\nwhol");
            a
        }
        "/64k" => {
            let mut a = b"HTTP/1.1 200 OK\r\nContent-Length: 65536\r\n\r\n".to_vec();
            a.extend_from_slice(&[b'z'; 65536]);
            a
        }
        "/switch" => {
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: foo\r\n\r\n"
                .to_vec()
        }
        "/continue" => b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nafter 100 ok."
            .to_vec(),
        // A complete response and then bytes that look like the next one.
        "/extra" => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged"
            .to_vec(),
        "/trailer" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwith\r\n8\r\n trailer\r\n0\r\nX-Trailer: 1\r\n\r\n"
            .to_vec(),
        "/until-close" => b"HTTP/1.0 200 OK\r\n\r\nread until the upstream closes".to_vec(),
        "/zero-length" => {
            let body = format!("{:?}", req.header("content-length"));
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        }
        target => {
            let body = format!("ok {target}");
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses one complete request from the front of `buf`, strictly: CRLF line
/// ends, one `Content-Length` or `Transfer-Encoding: chunked`, nothing else.
/// `None` while incomplete or when malformed (the bytes stay as leftover).
fn parse(buf: &[u8], early: bool) -> Option<(RawRequest, usize)> {
    if early {
        return None;
    }
    let end = find(buf, b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    if head.contains('\n') && head.split("\r\n").any(|l| l.contains('\n')) {
        return None;
    }
    let mut lines = head.split("\r\n");
    let line = lines.next()?.to_owned();
    let headers: Vec<String> = lines.map(str::to_owned).collect();
    let mut req = RawRequest {
        line,
        headers,
        body: Vec::new(),
    };
    let mut at = end + 4;
    if req.target() == "/early" {
        return Some((req, at));
    }
    let te = req.header("transfer-encoding");
    let cl = req.header("content-length");
    if !te.is_empty() {
        if te != ["chunked"] || !cl.is_empty() {
            return None;
        }
        loop {
            let eol = find(&buf[at..], b"\r\n")?;
            let size_text = std::str::from_utf8(&buf[at..at + eol]).ok()?;
            let size = usize::from_str_radix(size_text, 16).ok()?;
            at += eol + 2;
            if size == 0 {
                // No trailers from a proxy: the empty line ends the body.
                if buf.get(at..at + 2)? != b"\r\n" {
                    return None;
                }
                at += 2;
                break;
            }
            req.body.extend_from_slice(buf.get(at..at + size)?);
            at += size;
            if buf.get(at..at + 2)? != b"\r\n" {
                return None;
            }
            at += 2;
        }
    } else if let [len] = cl.as_slice() {
        let len: usize = len.parse().ok()?;
        req.body.extend_from_slice(buf.get(at..at + len)?);
        at += len;
    } else if cl.len() > 1 {
        return None;
    }
    Some((req, at))
}

/// What the proxy sent back on one raw client connection.
#[derive(Debug)]
pub struct Exchange {
    /// Every byte received.
    pub text: String,
    /// The proxy closed the connection (read returned EOF) within the wait.
    pub closed: bool,
}

impl Exchange {
    /// Status codes of the responses, in order.
    pub fn statuses(&self) -> Vec<u16> {
        self.text
            .split("HTTP/1.1 ")
            .skip(1)
            .filter_map(|s| s.get(..3)?.parse().ok())
            .collect()
    }
}

/// Sends `bytes` on a new connection and reads until the proxy closes it,
/// or `wait` passes.
pub async fn exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> Exchange {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    read_until_closed(&mut s, wait).await
}

/// Reads from `s` until EOF (or a reset) or `wait` passes.
pub async fn read_until_closed(s: &mut TcpStream, wait: Duration) -> Exchange {
    let mut out = Vec::new();
    let closed = tokio::time::timeout(wait, async {
        let mut buf = vec![0; 16 * 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    Exchange {
        text: String::from_utf8_lossy(&out).into_owned(),
        closed,
    }
}
